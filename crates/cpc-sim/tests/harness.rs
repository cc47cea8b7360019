//! The harness as a library: your engine configuration reaches every
//! device, and bad input is a typed error.

// Tests panic on broken fixtures by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cpc_sim::{run, EngineConfig, Error, RunSettings, Spec, StorageKind};

fn quick(name: &str) -> Spec {
    let mut spec = Spec::builtin(name).expect("a built-in suite");
    spec.quick();
    spec
}

#[test]
fn the_applications_engine_configuration_reaches_every_device_and_the_suite_still_passes() {
    let spec = quick("steady");
    let dir = tempfile::tempdir().expect("temp dir");
    let built = Arc::new(AtomicUsize::new(0));
    let mut settings = RunSettings::new(dir.path());
    settings.storage = StorageKind::Memory;
    let counter = Arc::clone(&built);
    settings.configure = Some(EngineConfig::new(move |builder| {
        counter.fetch_add(1, Ordering::SeqCst);
        // One operation per push: a configuration the suite does not use.
        builder.batch_size(1)
    }));
    let result = run(&spec, &settings).expect("the run completes");
    assert_eq!(result.report.failure_count(), 0, "{}", result.report);
    // One engine per device (steady has no crash points).
    assert_eq!(built.load(Ordering::SeqCst), spec.scenario.devices as usize);
}

#[test]
fn a_configuration_that_breaks_the_engine_is_reported_as_a_failed_run() {
    let spec = quick("steady");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = RunSettings::new(dir.path());
    settings.storage = StorageKind::Memory;
    // A batch size of zero is refused when the engine starts.
    settings.configure = Some(EngineConfig::new(|builder| builder.batch_size(0)));
    match run(&spec, &settings) {
        Err(Error::Run(text)) => assert!(text.contains("engine did not start"), "{text}"),
        other => panic!("expected a failed run, got {other:?}"),
    }
}

#[test]
fn an_unknown_suite_names_the_ones_there_are() {
    match Spec::builtin("no-such-suite") {
        Err(Error::Spec(text)) => {
            assert!(text.contains("no-such-suite"), "{text}");
            assert!(text.contains("steady"), "{text}");
        }
        other => panic!("expected a spec error, got {other:?}"),
    }
}

/// The classic hand-written dedupe: a later edit of a queued record is
/// folded into the queued one, but the queued payload is kept.
#[derive(Debug)]
struct KeepsTheOlderEdit;

impl cpc_sync::core::Coalescer for KeepsTheOlderEdit {
    fn coalesce(
        &self,
        earlier: &cpc_sync::core::Operation,
        later: &cpc_sync::core::Operation,
    ) -> cpc_sync::core::Coalesced {
        use cpc_sync::core::{Coalesced, OperationKind};
        match (&earlier.kind, &later.kind) {
            (OperationKind::Delete, _) | (_, OperationKind::Delete) => Coalesced::Keep,
            _ => Coalesced::Replace(earlier.clone()),
        }
    }
}

#[test]
fn edit_storm_coalesces_and_a_coalescer_that_drops_the_newer_edit_is_caught() {
    let spec = quick("edit-storm");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = RunSettings::new(dir.path());
    settings.storage = StorageKind::Memory;
    let result = run(&spec, &settings).expect("the run completes");
    let report = &result.report;
    assert_eq!(report.failure_count(), 0, "{report}");
    let state = report.coalesced_state.as_ref().expect("checked");
    assert!(state.records > 0, "{report}");
    // Device 0 coalesces, device 1 does not: far fewer operations sent.
    let applied: Vec<u64> = report.by_device.iter().map(|d| d.fates.applied).collect();
    assert!(applied[0] * 10 < applied[1], "{applied:?}");
    assert_eq!(
        report.fates.coalesced + report.fates.applied,
        report.submitted
    );

    settings.configure = Some(EngineConfig::new(|builder| {
        builder.coalesce("items", KeepsTheOlderEdit)
    }));
    let broken = run(&spec, &settings).expect("the run completes");
    let state = broken.report.coalesced_state.as_ref().expect("checked");
    assert!(state.wrong.count > 0, "{}", broken.report);
    assert!(!broken.report.passed);
}

#[test]
fn coalescing_holds_every_invariant_under_crashes_and_lost_answers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("scenarios")
        .join("edit-storm-crash.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = RunSettings::new(dir.path());
    for seed in [1, 2, 3] {
        let mut spec = Spec::from_file(&path).expect("the scenario reads");
        spec.scenario.seed = seed;
        let result = run(&spec, &settings).expect("the run completes");
        let report = &result.report;
        assert_eq!(report.failure_count(), 0, "seed {seed}: {report}");
        assert!(report.fates.coalesced > 0, "seed {seed}: {report}");
        assert!(report
            .coalesced_state
            .as_ref()
            .is_some_and(|c| c.records > 0));
    }
}
