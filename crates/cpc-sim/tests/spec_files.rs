//! Scenario files as the harness reads them: every refused `[harness]`
//! value is a `Spec` error naming the file, the field and its line; files
//! that cannot be read say so; `--quick` sizes replace what they name.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use cpc_sim::{Arrival, DeadHead, Error, Spec, StorageKind};

/// The text of the `Spec` error `text` is refused with.
fn refused(text: &str) -> String {
    match Spec::parse(text, "t.toml") {
        Err(Error::Spec(message)) => message,
        other => panic!("expected a Spec error, got {other:?}"),
    }
}

#[test]
fn storage_names_read_back_and_an_unknown_one_lists_the_choices() {
    for kind in [StorageKind::Sqlite, StorageKind::Sled, StorageKind::Memory] {
        assert_eq!(StorageKind::parse(kind.name()).unwrap(), kind);
    }
    match StorageKind::parse("floppy") {
        Err(e @ Error::Spec(_)) => assert_eq!(
            e.to_string(),
            "--storage: unknown backend \"floppy\" (sqlite, sled or memory)"
        ),
        other => panic!("expected a Spec error, got {other:?}"),
    }
}

#[test]
fn a_zero_submit_batch_is_refused_at_its_line() {
    assert_eq!(
        refused("name = \"x\"\n\n[harness]\nstorage = \"memory\"\nsubmit_batch = 0\n"),
        "t.toml: invalid scenario at line 5 (field `harness.submit_batch`): must be at least 1"
    );
}

#[test]
fn a_zero_engine_batch_size_is_refused_in_the_harness_or_its_quick_table() {
    assert_eq!(
        refused("name = \"x\"\n[harness]\nbatch_size = 0\n"),
        "t.toml: invalid scenario at line 3 (field `harness.batch_size`): must be at least 1"
    );
    let quick = refused("name = \"x\"\n[harness]\n[harness.quick]\nbatch_size = 0\n");
    assert!(
        quick.contains("(field `harness.batch_size`): must be at least 1"),
        "{quick}"
    );
}

#[test]
fn an_unknown_harness_key_is_named_with_its_line() {
    let message = refused("name = \"x\"\n\n[harness]\nbogus = 1\n");
    assert!(
        message.starts_with("t.toml: invalid harness table at line 4, column 1")
            && message.contains("(field `harness.bogus`)"),
        "{message}"
    );
}

/// A scenario value refused without a line of its own (a default the file
/// does not write) is placed at the table that holds it.
#[test]
fn a_refused_default_is_placed_at_its_table() {
    assert_eq!(
        refused("name = \"x\"\nseed = 3\n[pull]\ninitial_records = 10\n"),
        "t.toml: invalid scenario at line 3 (field `pull.enabled`): initial_records, restore \
         and compaction need enabled = true"
    );
}

#[test]
fn a_text_over_the_size_limit_names_the_file_as_the_field() {
    let limit = usize::try_from(cpc_sim::MAX_SCENARIO_BYTES).unwrap();
    let message = refused(&format!("name = \"x\"\n{}\n", "#".repeat(limit)));
    assert!(
        message.starts_with("t.toml: invalid scenario (field `(file)`): ")
            && message.contains("more than the limit"),
        "{message}"
    );
}

#[test]
fn files_are_read_as_toml_or_json_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    match Spec::from_file(&missing) {
        Err(Error::Spec(message)) => {
            assert!(
                message.starts_with(&format!("{}: cannot read scenario file", missing.display())),
                "{message}"
            );
        }
        other => panic!("expected a Spec error, got {other:?}"),
    }

    let json = dir.path().join("s.json");
    std::fs::write(&json, "{\"name\": \"j\", \"devices\": 3}").unwrap();
    let spec = Spec::from_file(&json).unwrap();
    assert_eq!(
        (spec.scenario.name.as_str(), spec.scenario.devices),
        ("j", 3)
    );
    assert_eq!(spec.harness, cpc_sim::HarnessOptions::default());

    std::fs::write(&json, "{\"name\": \"j\", \"devices\": 0}").unwrap();
    match Spec::from_file(&json) {
        Err(Error::Spec(message)) => assert!(
            message.starts_with(&format!("{}: invalid json scenario", json.display()))
                && message.contains("`devices`"),
            "{message}"
        ),
        other => panic!("expected a Spec error, got {other:?}"),
    }

    let toml = dir.path().join("s.toml");
    std::fs::write(
        &toml,
        "name = \"t\"\n[harness]\ndead_head = \"skip\"\nstorage = \"sled\"\n",
    )
    .unwrap();
    let spec = Spec::from_file(&toml).unwrap();
    assert_eq!(spec.harness.dead_head, DeadHead::Skip);
    assert_eq!(spec.harness.storage, Some(StorageKind::Sled));
}

#[test]
fn quick_sizes_replace_what_they_name_and_only_that() {
    let text =
        "name = \"q\"\ndevices = 3\nclock_skew = [\"-1m\", \"0s\", \"+1m\"]\nduration = \"10m\"\n\
                [ops]\narrival = { process = \"uniform\", rate = 20.0 }\n\
                [pull]\nenabled = true\n\
                [harness]\nsubmit_batch = 2\n\
                [harness.quick]\ndevices = 2\nduration = \"30s\"\nrate = 0.5\nbatch_size = 8\n\
                submit_batch = 4\ninitial_records = 50\n";
    let mut spec = Spec::parse(text, "q.toml").unwrap();
    spec.quick();
    let s = &spec.scenario;
    assert_eq!(s.devices, 2);
    assert_eq!(
        s.clock_skew,
        vec![-60_000, 0],
        "skews of dropped devices go"
    );
    assert_eq!(s.duration, Duration::from_secs(30));
    assert_eq!(
        s.ops.arrival,
        Arrival::Uniform {
            rate: 0.5,
            start: Duration::ZERO
        }
    );
    assert_eq!(s.pull.initial_records, 50);
    assert_eq!(
        (spec.harness.batch_size, spec.harness.submit_batch),
        (Some(8), 4)
    );
    // Untouched: what the quick table does not name.
    assert_eq!(s.ops.per_device, 1_000);

    // A burst has no rate to replace.
    let mut burst = Spec::parse(
        "name = \"b\"\n[harness.quick]\nrate = 3.0\nper_device = 5\n",
        "b.toml",
    )
    .unwrap();
    burst.quick();
    assert_eq!(
        burst.scenario.ops.arrival,
        Arrival::Burst { at: Duration::ZERO }
    );
    assert_eq!(burst.scenario.ops.per_device, 5);
}
