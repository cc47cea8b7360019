//! One bad value per validated field: each is refused with the error
//! variant that says where it is, naming the field and its line, and
//! saying why.

use std::time::Duration;

use cpc_sim::{Scenario, ScenarioError, ScenarioFormat, MAX_SCENARIO_BYTES};

/// `body` (after a `name` line, so it starts on line 2) is refused by
/// validation as `InvalidAt` for `field` at `line`, with `why` in the
/// reason.
fn refused_at(body: &str, field: &str, line: usize, why: &str) {
    let text = format!("name = \"x\"\n{body}");
    let err = Scenario::from_toml_str(&text).unwrap_err();
    match &err {
        ScenarioError::InvalidAt {
            format,
            field: f,
            line: l,
            reason,
            ..
        } => {
            assert_eq!(
                (*format, f.as_str(), *l),
                (ScenarioFormat::Toml, field, line),
                "{err}"
            );
            assert!(reason.contains(why), "{field}: {reason:?} lacks {why:?}");
        }
        other => panic!("{field}: expected InvalidAt, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("at line {line},")) && msg.contains(&format!("(field `{field}`)")),
        "{msg}"
    );
}

#[test]
fn top_level_values_out_of_range_name_their_key_and_line() {
    refused_at("duration = \"0s\"\n", "duration", 2, "longer than zero");
    refused_at(
        "epoch_ms = 40000000000000\n",
        "epoch_ms",
        2,
        "later than the limit",
    );
    // 9000 h is more than a year: the list element's own line.
    refused_at(
        "devices = 2\nclock_skew = [\n  \"0s\",\n  \"+9000h\",\n]\n",
        "clock_skew[1]",
        5,
        "32400000000 ms is more than the limit",
    );
}

#[test]
fn each_refused_ops_field_is_named_at_its_line() {
    refused_at("[ops]\nentities = 0\n", "ops.entities", 3, "at least one");
    refused_at(
        "[ops]\ncollections = []\n",
        "ops.collections",
        3,
        "non-empty",
    );
    let long_name = "c".repeat(300);
    refused_at(
        &format!("[ops]\ncollections = [\"{long_name}\"]\n"),
        "ops.collections",
        3,
        "at most 1000 names of at most 256 bytes",
    );
    refused_at(
        "[ops]\npriorities = { critical = 0, high = 0, normal = 0, background = 0 }\n",
        "ops.priorities",
        3,
        "all weights are zero",
    );
    refused_at(
        "[ops]\nkinds = { create = 0, update = 0, delete = 0 }\n",
        "ops.kinds",
        3,
        "all weights are zero",
    );
    refused_at(
        "[ops]\npayload = { min = 10, max = 5 }\n",
        "ops.payload",
        3,
        "`min` is above `max`",
    );
    refused_at(
        "[ops]\n\npayload = { min = 10, max = 100000000 }\n",
        "ops.payload.max",
        4,
        "default limit",
    );
    refused_at(
        "\n[crash]\nrandom = 20000\n",
        "crash",
        3,
        "20000 crash points is more than the limit of 10000",
    );
}

#[test]
fn each_refused_fault_remote_and_bound_is_named_at_its_line() {
    refused_at(
        "[faults]\ntimeout = \"0s\"\n",
        "faults.timeout",
        3,
        "longer than zero",
    );
    refused_at(
        "[faults]\nlatency = { kind = \"uniform\", min = \"2s\", max = \"1s\" }\n",
        "faults.latency",
        3,
        "`max` must not be below `min`",
    );
    refused_at(
        "[faults]\nlatency = { kind = \"long_tail\", median = \"1s\", p99 = \"10ms\", max = \"5s\" }\n",
        "faults.latency",
        3,
        "median <= p99",
    );
    refused_at(
        "[faults]\nserver_error_status = 404\n",
        "faults.server_error_status",
        3,
        "404 is not a 5xx status",
    );
    refused_at(
        "[remote]\nop_rate = { rate = 5.0, burst = 0, retry_after = \"1s\" }\n",
        "remote.op_rate",
        3,
        "a `burst` of at least 1",
    );
    refused_at(
        "[expect]\nmax_retry_amplification = -1.5\n",
        "expect.max_retry_amplification",
        3,
        "-1.5 is not a non-negative number",
    );
}

#[test]
fn each_refused_pull_field_is_named_at_its_line() {
    refused_at(
        "[pull]\nenabled = true\ninitial_records = 2000000\n",
        "pull.initial_records",
        4,
        "at most 1000000",
    );
    refused_at(
        "[pull]\nenabled = true\nrecord_bytes = 100000\n",
        "pull.record_bytes",
        4,
        "at most 65536",
    );
    refused_at(
        "[pull]\nenabled = true\npage = 0\n",
        "pull.page",
        4,
        "1 to 10000",
    );
    refused_at(
        "[pull]\nenabled = true\ncompaction = { every = \"0s\", retention = \"1m\" }\n",
        "pull.compaction.every",
        4,
        "must be above 0",
    );
    refused_at(
        "[pull]\nenabled = false\ninitial_records = 10\n",
        "pull.enabled",
        3,
        "need enabled = true",
    );
}

/// A field the file does not write cannot be given a line: the error is
/// the plain `Invalid`, still naming it.
#[test]
fn a_refused_default_is_named_without_a_line() {
    let err = Scenario::from_toml_str("name = \"x\"\n[pull]\ninitial_records = 10\n").unwrap_err();
    match &err {
        ScenarioError::Invalid { field, reason } => {
            assert_eq!(field, "pull.enabled");
            assert!(reason.contains("need enabled = true"), "{reason}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "invalid scenario field `pull.enabled`: initial_records, restore and compaction need \
         enabled = true"
    );
}

/// Schedule entries are checked while the file is read: a parse error
/// that names the entry and the line of its header.
#[test]
fn schedule_entries_past_the_limits_are_parse_errors_at_their_header() {
    let refused = |body: &str, field: &str, line: usize, why: &str| {
        let err = Scenario::from_toml_str(&format!("name = \"x\"\n{body}")).unwrap_err();
        match &err {
            ScenarioError::Parse {
                format,
                line: l,
                field: f,
                message,
                ..
            } => {
                assert_eq!(*format, ScenarioFormat::Toml);
                assert_eq!((f.as_deref(), *l), (Some(field), Some(line)), "{err}");
                assert!(message.contains(why), "{message}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    };
    refused(
        "\n[[schedule.windows]]\nfrom = \"1m\"\nto = \"800h\"\nstate = \"offline\"\n",
        "schedule.windows[0]",
        3,
        "`to` (800h) is later than the limit of 720h",
    );
    refused(
        "[[schedule.flapping]]\nfrom = \"1h\"\nperiod = \"1m\"\nduty = 0.5\nspan = \"720h\"\n",
        "schedule.flapping[0]",
        2,
        "it ends after the limit of 720h",
    );
    refused(
        "[[schedule.flapping]]\nfrom = \"0s\"\nperiod = \"1m\"\nduty = 0.5\nspan = \"1h\"\n\
         [[schedule.flapping]]\nfrom = \"0s\"\nperiod = \"1ms\"\nduty = 0.5\nspan = \"1h\"\n",
        "schedule.flapping[1]",
        7,
        "3600060 cycles (this entry and those before it) is more than the limit of 1000000",
    );
}

#[test]
fn json_validation_errors_name_the_field_and_its_line() {
    let text = "{\n  \"name\": \"x\",\n  \"faults\": {\n    \"server_error_status\": 404\n  }\n}";
    let err = Scenario::from_json_str(text).unwrap_err();
    match &err {
        ScenarioError::InvalidAt {
            format,
            field,
            line,
            ..
        } => {
            assert_eq!(
                (*format, field.as_str(), *line),
                (ScenarioFormat::Json, "faults.server_error_status", 4)
            );
        }
        other => panic!("expected InvalidAt, got {other:?}"),
    }
    assert!(err
        .to_string()
        .starts_with("invalid json scenario at line 4"));
}

#[test]
fn a_text_over_the_size_limit_is_refused_before_parsing() {
    let limit = usize::try_from(MAX_SCENARIO_BYTES).unwrap();
    // Not even valid TOML after the comment: the size is checked first.
    let text = format!("{}\n[[[", "#".repeat(limit));
    for err in [
        Scenario::from_toml_str(&text).unwrap_err(),
        Scenario::from_json_str(&text).unwrap_err(),
    ] {
        match &err {
            ScenarioError::Invalid { field, reason } => {
                assert_eq!(field, "(file)");
                assert_eq!(
                    reason,
                    &format!(
                        "{} bytes is more than the limit of {MAX_SCENARIO_BYTES}",
                        text.len()
                    )
                );
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = Scenario::from_file(&path).unwrap_err();
    match &err {
        ScenarioError::Io { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("cannot read scenario file {}", path.display())
    );
}

/// A `.json` file is read as JSON whatever its text looks like.
#[test]
fn a_json_file_is_read_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.JSON");
    std::fs::write(
        &path,
        "{\"name\": \"j\", \"seed\": 9, \"duration\": \"90s\"}",
    )
    .unwrap();
    let s = Scenario::from_file(&path).unwrap();
    assert_eq!((s.name.as_str(), s.seed), ("j", 9));
    assert_eq!(s.duration, Duration::from_secs(90));
    // The same text under a TOML name is not TOML.
    let toml_path = dir.path().join("s.toml");
    std::fs::copy(&path, &toml_path).unwrap();
    assert!(matches!(
        Scenario::from_file(&toml_path),
        Err(ScenarioError::Parse {
            format: ScenarioFormat::Toml,
            ..
        })
    ));
}

/// TOML integers are signed 64-bit: a seed above `i64::MAX` cannot be
/// written as TOML (a `Serialize` error), but JSON carries it.
#[test]
fn a_seed_beyond_tomls_integers_is_a_serialize_error_not_a_bad_file() {
    let mut s = Scenario::new("big-seed");
    s.seed = u64::MAX;
    match s.to_toml_string() {
        Err(ScenarioError::Serialize(reason)) => assert!(!reason.is_empty()),
        other => panic!("expected Serialize, got {other:?}"),
    }
    let json = s.to_json_string().unwrap();
    assert_eq!(Scenario::from_json_str(&json).unwrap().seed, u64::MAX);
}
