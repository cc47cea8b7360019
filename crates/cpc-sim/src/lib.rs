//! Scenarios and full-engine simulation of cpc-sync: read a fault
//! scenario, run it against real [`SyncEngine`](cpc_sync::SyncEngine)s in
//! `cpc-fault`'s hostile world, and check the invariants.
//!
//! A [`Scenario`] is a run written down: seed, length, devices, workload,
//! the remote's behaviour, faults, outages, clock skews, crash points and
//! expected bounds, read from TOML or JSON ([`Scenario::from_file`]) with
//! every refused value named with its field and line
//! ([`ScenarioError`]), or built in code ([`Scenario::builder`]). Its
//! [`workload`](Scenario::workload) is deterministic for a seed, and it
//! sets up the world: [`Scenario::remote`], [`Scenario::faulty`],
//! [`Scenario::check_options`]. [`run_reference`] drives one with a small
//! reference client instead of the engine (a template for a harness).
//!
//! Each run is one scenario with one seed on its own current-thread tokio
//! runtime with the clock paused, so an hour of outages plays out in
//! milliseconds and the same seed gives the same report. One shared
//! [`SimulatedRemote`](cpc_fault::SimulatedRemote); per device a seeded
//! `FaultyTransport` behind a bearer-token wrapper, a `NetworkMonitor` fed
//! by a `ScriptedNetwork`, and a full `SyncEngine` on its own store
//! (SQLite, sled or memory), with storage calls inline on the runtime thread
//! or on the blocking pool behind a replay gate. A driver per device submits
//! the workload at its simulated times, crashes and reopens the engine at
//! the scenario's crash points, waits for the drain after the last outage;
//! the `cpc-fault` checker then compares what was submitted with what the
//! remote applied.
//!
//! `cargo xtask simulate` is a command line over this crate. Use it from
//! your own tests to run the built-in suites ([`SUITES`]) or your own
//! scenario files against your engine configuration
//! ([`RunSettings::configure`]).
//!
//! ```
//! use cpc_sim::{run, RunSettings, Spec, StorageKind};
//!
//! let mut spec = Spec::builtin("steady")?;
//! spec.quick(); // the suite's small sizes
//! let dir = tempfile::tempdir()?;
//! let mut settings = RunSettings::new(dir.path());
//! settings.storage = StorageKind::Memory;
//! // Your engine configuration, applied after the harness's own.
//! settings.configure = Some(cpc_sim::EngineConfig::new(|b| b.batch_size(16)));
//! let result = run(&spec, &settings)?;
//! assert_eq!(result.report.failure_count(), 0, "{}", result.report);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Scenario files for [`run`]: a [`Scenario`] plus an optional `[harness]`
//! table ([`HarnessOptions`]), read by [`Spec`]; see `docs/simulation.md`.

mod auth;
mod converge;
mod error;
mod gate;
mod harness;
mod records;
mod reference;
mod scenario;
mod spec;
mod timeline;

pub use auth::Secret;
/// The longest simulated time a scenario may name; defined with the
/// schedule in `cpc-fault`, re-exported beside the scenario's other limits.
pub use cpc_fault::MAX_DURATION;
pub use error::Error;
pub use harness::{check, fd_budget, fds_needed, run, EngineConfig, RunResult, RunSettings};
pub use reference::{run_reference, ReferenceOptions, RunOutput};
pub use scenario::{
    Arrival, CompactionPlan, CrashPlan, KindWeights, OperationMix, PlannedOp, PriorityWeights,
    PullPlan, RestorePlan, Scenario, ScenarioBuilder, SinkKind, SizeRange, Workload,
    BYTES_PER_DEVICE, BYTES_PER_OP, DEFAULT_EPOCH_MS, MAX_CLOCK_SKEW_MS, MAX_COLLECTIONS,
    MAX_COLLECTION_NAME, MAX_CRASHES, MAX_DEVICES, MAX_ENTITIES, MAX_EPOCH_MS, MAX_INITIAL_RECORDS,
    MAX_OPS_PER_DEVICE, MAX_RATE, MAX_RECORD_BYTES, MAX_SCENARIO_BYTES, MEMORY_BUDGET,
};
pub use scenario::{ParseSource, ScenarioError, ScenarioFormat};
pub use spec::{DeadHead, HarnessOptions, QuickSizes, Spec, StorageKind, SUITES};
pub use timeline::{DeviceLine, Timeline};

use std::time::Duration;

/// A short duration for a table cell or a picture: `850ms`, `12.40s`,
/// `3m07s`, `1h02m`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1_000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Compile-time proof: scenarios and their errors cross threads.
    fn _assert_send_sync<T: Send + Sync>() {}
    fn _types_are_send_sync() {
        _assert_send_sync::<Scenario>();
        _assert_send_sync::<ScenarioError>();
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(12_400)), "12.40s");
        assert_eq!(human(Duration::from_secs(187)), "3m07s");
        assert_eq!(human(Duration::from_secs(3_720)), "1h02m");
    }
}
