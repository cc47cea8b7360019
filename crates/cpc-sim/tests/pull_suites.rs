//! The two-way sync suites pass, and each fails when the feature it proves
//! is broken in the scenario: the convergence check can fail.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use cpc_sim::{run, RunSettings, SinkKind, Spec, StorageKind};

fn quick(name: &str, sink: SinkKind) -> cpc_fault::InvariantReport {
    let mut spec = Spec::builtin(name).expect("a built-in suite");
    spec.quick();
    spec.scenario.pull.sink = sink;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = RunSettings::new(dir.path());
    settings.storage = StorageKind::Memory;
    run(&spec, &settings).expect("the run completes").report
}

fn diverged(report: &cpc_fault::InvariantReport) -> u64 {
    report
        .convergence
        .as_ref()
        .expect("a pull suite reports convergence")
        .diverged
        .count
}

#[test]
fn two_way_converges_and_a_sink_that_skips_deletions_is_caught() {
    let good = quick("two-way", SinkKind::Replace);
    assert!(good.passed, "{}", good.to_text());
    let bad = quick("two-way", SinkKind::IgnoreDeletes);
    assert!(!bad.passed && diverged(&bad) > 0, "{}", bad.to_text());
}

#[test]
fn initial_sync_converges_and_a_sink_that_loses_pages_is_caught() {
    let good = quick("initial-sync", SinkKind::Replace);
    assert!(good.passed, "{}", good.to_text());
    let c = good.convergence.as_ref().unwrap();
    assert!(c.remote_records >= 10_000, "the preload is synced: {c:?}");
    let bad = quick("initial-sync", SinkKind::DropPages);
    assert!(!bad.passed && diverged(&bad) > 0, "{}", bad.to_text());
}

#[test]
fn server_restore_is_detected_and_a_sink_without_replace_semantics_is_caught() {
    let good = quick("server-restore", SinkKind::Replace);
    assert!(good.passed, "{}", good.to_text());
    let c = good.convergence.as_ref().unwrap();
    assert!(c.regressions > 0 && c.restore_lost > 0, "{c:?}");
    assert_eq!(good.lost.count, 0, "{}", good.to_text());
    let bad = quick("server-restore", SinkKind::IgnoreSnapshots);
    assert!(!bad.passed && diverged(&bad) > 0, "{}", bad.to_text());
}

#[test]
fn without_retention_a_server_restore_loses_what_it_took_away() {
    let mut spec = Spec::builtin("server-restore").expect("a built-in suite");
    spec.quick();
    spec.scenario.pull.retain_acked = false;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = RunSettings::new(dir.path());
    settings.storage = StorageKind::Memory;
    let bad = run(&spec, &settings).expect("the run completes").report;
    assert!(!bad.passed && bad.lost.count > 0, "{}", bad.to_text());
}
