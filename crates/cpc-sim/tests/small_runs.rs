//! Small full-engine runs of hand-written scenarios: the timeline of a run
//! matches its report, poison operations are dead-lettered and not lost,
//! durable stores survive crashes with blocking storage calls, and runs
//! that cannot mean anything are refused before they start.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use cpc_sim::{
    check, fd_budget, fds_needed, run, EngineConfig, Error, RunSettings, Spec, StorageKind,
};
use cpc_sync::conflict::{DeferAll, FnResolver};
use cpc_sync::core::{Operation, RemoteRecord, Resolution};
use cpc_sync::StorageCalls;

fn spec(text: &str) -> Spec {
    Spec::parse(text, "inline.toml").expect("the scenario parses")
}

fn memory(dir: &std::path::Path) -> RunSettings {
    let mut settings = RunSettings::new(dir);
    settings.storage = StorageKind::Memory;
    settings
}

/// Two devices edit the same three records with skewed clocks (conflicts),
/// through a degraded window.
const CONFLICTS: &str = r#"
name = "tiny-conflicts"
seed = 5
duration = "1m"
devices = 2
clock_skew = ["-10m", "+10m"]

[ops]
per_device = 12
entities = 3
shared_entities = true
base_versions = true
arrival = { process = "uniform", rate = 1.0 }

[faults]
latency = { kind = "uniform", min = "20ms", max = "200ms" }

[[schedule.windows]]
from = "20s"
to = "25s"
state = { degraded = 0.5 }
"#;

#[test]
fn the_timeline_of_a_run_holds_every_apply_and_conflict_of_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = memory(dir.path());
    settings.timeline = true;
    let result = run(&spec(CONFLICTS), &settings).expect("the run completes");
    let report = &result.report;
    assert_eq!(report.failure_count(), 0, "{report}");
    let conflicts: u64 = report
        .by_device
        .iter()
        .map(|d| {
            let c = d.conflicts;
            c.keep_local + c.keep_remote + c.merged + c.deferred
        })
        .sum();
    assert!(
        conflicts > 0,
        "shared records with base versions conflict: {report}"
    );

    let timeline = result.timeline.expect("asked for");
    assert_eq!(
        (timeline.scenario.as_str(), timeline.seed),
        ("tiny-conflicts", 5)
    );
    assert_eq!(timeline.devices.len(), 2);
    let applies: usize = timeline.devices.iter().map(|d| d.applies.len()).sum();
    assert_eq!(applies as u64, report.applies);
    let drawn: usize = timeline.devices.iter().map(|d| d.conflicts.len()).sum();
    assert_eq!(drawn as u64, conflicts);
    for line in &timeline.devices {
        // Each of its twelve operations entered the queue and got a final
        // answer: the depth goes back to zero.
        let stored = line.depth.iter().filter(|(_, d)| *d == 1).count();
        assert_eq!(stored, 12, "device {}", line.device);
        assert_eq!(line.depth.iter().map(|(_, d)| d).sum::<i64>(), 0);
    }

    let svg = timeline.to_svg();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let kinds: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("window"))
        .filter_map(|n| n.attribute("data-kind"))
        .collect();
    assert_eq!(kinds, ["degraded"]);
    assert_eq!(
        doc.descendants()
            .filter(|n| n.attribute("class") == Some("conflicts"))
            .count(),
        timeline
            .devices
            .iter()
            .filter(|d| !d.conflicts.is_empty())
            .count()
    );
}

/// Every conflict goes to the application's resolver: merged into a
/// resend, or parked for the application.
#[test]
fn merged_conflicts_count_as_merged_and_deferred_ones_stay_parked() {
    let dir = tempfile::tempdir().unwrap();
    let conflicts = |report: &cpc_fault::InvariantReport| {
        report.by_device.iter().fold([0u64; 4], |mut sum, d| {
            let c = d.conflicts;
            for (s, n) in sum
                .iter_mut()
                .zip([c.keep_local, c.keep_remote, c.merged, c.deferred])
            {
                *s += n;
            }
            sum
        })
    };

    let mut settings = memory(dir.path());
    settings.configure = Some(EngineConfig::new(|builder| {
        builder.resolver(FnResolver::new(
            |local: &Operation, remote: &RemoteRecord| {
                let mut both = remote.payload.clone().unwrap_or_default();
                both.extend_from_slice(&local.payload);
                Resolution::Merged(both)
            },
        ))
    }));
    let merged = run(&spec(CONFLICTS), &settings).unwrap().report;
    assert_eq!(merged.failure_count(), 0, "{merged}");
    let [keep_local, keep_remote, logged, deferred] = conflicts(&merged);
    assert_eq!((keep_local, keep_remote, deferred), (0, 0, 0), "{merged}");
    assert!(
        merged.fates.merged > 0 && logged >= merged.fates.merged,
        "{merged}"
    );

    settings.configure = Some(EngineConfig::new(|builder| builder.resolver(DeferAll)));
    let parked = run(&spec(CONFLICTS), &settings).unwrap().report;
    let [keep_local, keep_remote, merged_logged, logged] = conflicts(&parked);
    assert_eq!(
        (keep_local, keep_remote, merged_logged),
        (0, 0, 0),
        "{parked}"
    );
    // Each parked operation was logged once, and never resent.
    assert!(parked.fates.deferred > 0, "{parked}");
    assert_eq!(logged, parked.fates.deferred, "{parked}");
    assert_eq!(parked.lost.count, 0, "{parked}");
    assert_eq!(parked.fates.total(), parked.submitted);
    // A parked operation holds back the later ones of its record: they are
    // still queued at the end, which fails the run.
    assert!(parked.fates.pending > 0 && !parked.passed, "{parked}");
    assert!(
        parked
            .bound_failures
            .iter()
            .any(|f| f.contains("still queued when the run ended")),
        "{parked}"
    );
}

#[test]
fn poison_operations_are_dead_lettered_not_lost_and_skipped_past() {
    let text = r#"
name = "tiny-poison"
seed = 7
duration = "1m"
[ops]
per_device = 30
entities = 10
arrival = { process = "uniform", rate = 1.0 }
[remote]
poison = { fraction = 0.2, key = "operation" }
[harness]
dead_head = "skip"
"#;
    let dir = tempfile::tempdir().unwrap();
    let report = run(&spec(text), &memory(dir.path()))
        .expect("the run completes")
        .report;
    assert!(report.passed, "{report}");
    assert!(report.fates.rejected > 0, "{report}");
    assert_eq!(report.abandoned, report.fates.rejected);
    assert_eq!(report.lost.count, 0);
    assert_eq!(
        report.fates.applied + report.fates.rejected,
        report.submitted
    );
}

#[test]
fn sled_stores_survive_a_crash_mid_submit_with_blocking_calls_and_canaries() {
    // Arrivals every second from 0 s: the crash point falls within the
    // millisecond of the sixth submission.
    let text = r#"
name = "tiny-sled"
seed = 3
duration = "30s"
devices = 2
[ops]
per_device = 10
entities = 5
arrival = { process = "uniform", rate = 1.0 }
[crash]
at = ["5s"]
restart_after = "1s"
"#;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = RunSettings::new(dir.path());
    settings.storage = StorageKind::Sled;
    settings.storage_calls = StorageCalls::Blocking;
    settings.payload_canary = Some(b"CANARY".to_vec());
    settings.entity_canary = Some("canary-".to_owned());
    let spec = spec(text);
    assert_eq!(fds_needed(&spec, &settings), 16);
    let report = run(&spec, &settings).expect("the run completes").report;
    assert_eq!(report.failure_count(), 0, "{report}");
    assert_eq!(report.submitted, 20);
    // The submissions the crash hit have an unknown outcome.
    assert_eq!(report.unknown, 2, "{report}");
    // The store directories went with the run.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn runs_that_cannot_mean_anything_are_refused_before_they_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = memory(dir.path());
    let crashing = spec("name = \"crashy\"\n[crash]\nat = [\"10s\"]\n");
    assert_eq!(fds_needed(&crashing, &settings), 0);
    match check(&crashing, &settings) {
        Err(e @ Error::Spec(_)) => assert_eq!(
            e.to_string(),
            "crashy: memory storage cannot survive the scenario's crash points; use sqlite or sled"
        ),
        other => panic!("expected a Spec error, got {other:?}"),
    }
    // Within the budget with payloads on disk, beyond it with them in memory.
    let big = spec(
        "name = \"big\"\n[ops]\nper_device = 1000000\nentities = 100\npayload = { min = 4096, max = 4096 }\n",
    );
    match run(&big, &settings) {
        Err(Error::Spec(message)) => assert!(
            message.starts_with("big: about ")
                && message
                    .contains("MiB with every payload in memory, more than the budget of 4096 MiB"),
            "{message}"
        ),
        other => panic!("expected a Spec error, got {other:?}"),
    }
    let mut on_disk = RunSettings::new(dir.path());
    on_disk.storage = StorageKind::Sqlite;
    assert!(check(&big, &on_disk).is_ok());

    // More stores than any process may hold open (set past validation).
    let mut crowd = spec("name = \"crowd\"\n");
    crowd.scenario.devices = u32::MAX;
    let (need, budget) = (fds_needed(&crowd, &on_disk), fd_budget());
    assert_eq!(need, u64::from(u32::MAX) * 8);
    match check(&crowd, &on_disk) {
        Err(Error::Spec(message)) => assert_eq!(
            message,
            format!(
                "crowd: {} devices need about {need} file descriptors for their stores, more \
                 than the {budget} this process may open (ulimit -n); use fewer devices or \
                 memory storage",
                u32::MAX
            )
        ),
        other => panic!("expected a Spec error, got {other:?}"),
    }
    let config = EngineConfig::new(|b| b);
    assert_eq!(format!("{config:?}"), "EngineConfig(..)");
}

#[test]
fn the_descriptor_budget_raises_the_soft_limit_to_the_hard_one_first() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let hard = getrlimit(Resource::Nofile)
        .maximum
        .expect("a finite hard limit on this platform");
    // One below the hard limit: harmless to the tests running alongside.
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard - 1),
            maximum: Some(hard),
        },
    )
    .expect("lowering the soft limit is allowed");
    assert_eq!(fd_budget(), hard - 64);
    assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
}
