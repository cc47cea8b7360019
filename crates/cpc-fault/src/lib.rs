//! The hostile world of cpc-sync's simulations, and the invariant checker
//! — for the engine's tests and for your own.
//!
//! `cpc-fault` holds two things. The world: a remote, a transport, a
//! network and an outage schedule that misbehave on tokio's paused clock,
//! every random choice drawn from a seed it is given. And the checker: it
//! compares, afterwards, what was submitted with what the remote applied,
//! and says whether anything was lost, applied twice, reordered within an
//! entity, or passed over by lower-priority work.
//!
//! - [`SimulatedRemote`]: an in-memory remote implementing
//!   [`cpc_core::Transport`], with versions, idempotency (dedupe by
//!   [`OperationId`](cpc_core::OperationId), switchable off), conflict
//!   detection, rejected collections, poison operations, request admission
//!   and per-operation rate limits, and a complete apply log
//!   ([`ApplyRecord`]).
//! - [`FaultyTransport`]: wraps any transport with a [`FaultPlan`] (latency,
//!   drops, 5xx, 429, lost acks, partial batches, corrupt answers) and a
//!   [`Schedule`] of outages and flapping, every decision drawn from one
//!   seeded RNG.
//! - [`ScriptedNetwork`]: a `cpc-network` status source driven by the same
//!   schedule, optionally lagging reality.
//! - `proxy::FaultProxy` (feature `proxy`): a seeded TCP proxy on
//!   loopback with Toxiproxy's toxics and the [`Schedule`]'s down windows,
//!   for tests over real sockets.
//! - [`invariants`], [`check_with`]: the checker, Jepsen total-queue
//!   semantics plus ordering, priority, drain time, retry amplification and
//!   latency, giving an [`InvariantReport`] with a stable text form (seed
//!   first) and JSON.
//!
//! Without the `proxy` feature it opens no socket: the world is in memory,
//! not a network emulator. It reads no scenario file and does not depend
//! on the engine: `cpc-sim` reads scenario files (TOML/JSON), generates
//! their workloads, and drives them through this world with a reference
//! client or the full engine.
//!
//! The in-memory world waits on tokio's clock. Run it on a current-thread
//! runtime with the clock paused (`#[tokio::test(start_paused = true)]`),
//! so an hour of simulated outages takes milliseconds and a seed
//! reproduces a run.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use cpc_core::{match_outcomes, EntityKey, HybridClock, ManualWallClock, NodeId, Operation,
//!                OperationKind, Transport, TransportError};
//! use cpc_fault::{check_with, FaultPlan, FaultyTransport, Probability, RemoteOptions,
//!                 Schedule, SimClock, SimulatedRemote, SubmitOutcome, SubmittedRecord};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = SimClock::start_now();
//! let remote = SimulatedRemote::new(RemoteOptions::default(), clock);
//! let plan = FaultPlan { lost_ack: Probability::new(0.5).unwrap(), ..FaultPlan::none() };
//! let schedule = Schedule::builder()
//!     .offline(Duration::from_secs(60), Duration::from_secs(120))
//!     .build()?;
//! let transport = FaultyTransport::new(remote.clone(), plan, 7)
//!     .with_schedule(schedule.clone())
//!     .with_clock(clock);
//!
//! let hlc = HybridClock::with_wall_clock(NodeId(1), std::sync::Arc::new(ManualWallClock::new(0)));
//! let op = Operation::builder(EntityKey::new("notes", "1"), OperationKind::Create).build(&hlc)?;
//! let submitted = vec![SubmittedRecord::new(&op, clock.elapsed(), SubmitOutcome::Acknowledged)];
//!
//! // A naive client: resend until the answer arrives. Lost acks make it
//! // resend an applied operation; dedupe answers AlreadyApplied.
//! loop {
//!     match transport.push(&cpc_core::PushQuery::new(std::slice::from_ref(&op))).await.map(|a| a.outcomes) {
//!         Ok(answer) => { match_outcomes(std::slice::from_ref(&op), answer)?; break; }
//!         Err(TransportError::Timeout | TransportError::Offline) => {
//!             tokio::time::sleep(Duration::from_secs(1)).await;
//!         }
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//!
//! let mut options = cpc_fault::CheckOptions { seed: 7, ..Default::default() };
//! options.last_outage_end = schedule.last_outage_end();
//! options.transport_calls = Some(transport.counters().calls);
//! let report = check_with(&remote.apply_log(), &submitted, &options);
//! assert!(report.passed, "{report}");
//! assert!(report.to_text().starts_with("seed 7\n"));
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//! - `proxy` (off by default): the `proxy` module, `FaultProxy`, which
//!   binds TCP sockets on loopback.
//!
//! # Supported Rust versions
//! The workspace's `rust-version` (1.89) and later.

pub mod duration;
mod error;
mod faulty;
pub mod invariants;
mod network;
#[cfg(feature = "proxy")]
pub mod proxy;
mod remote;
mod schedule;

/// The origin of a run's time line; defined with the other clocks in
/// `cpc_core::time`, re-exported here because every simulation needs it.
pub use cpc_core::SimClock;
pub use error::{Error, Result};
pub use faulty::{FaultCounters, FaultPlan, FaultyTransport, Latency};
pub use invariants::{
    check, check_with, Abandoned, CheckOptions, CoalescedState, ConflictCounts, Convergence,
    DeviceDiff, DeviceSummary, Duplicate, ExpectedBounds, Fates, InvariantReport, Inversion,
    Listed, PriorityLatency, QueueEnd, Reorder, SubmitOutcome, SubmittedRecord,
};
pub use network::ScriptedNetwork;
pub use remote::{
    apply_log_text, splitmix64, Admission, ApplyRecord, OpRate, PoisonKey, PoisonRule,
    RemoteOptions, RemoteStats, RestoreError, SimulatedRemote,
};
pub use schedule::{
    Flapping, LinkCondition, LinkState, Probability, Schedule, ScheduleBuilder, Segment, Window,
    MAX_DURATION, MAX_FLAPPING_CYCLES, MAX_WINDOWS,
};

#[cfg(test)]
mod compile_checks {
    use super::*;
    // Compile-time proofs: the public types cross threads, and the wrapped
    // transport stays usable as a trait object.
    fn _assert_send_sync<T: Send + Sync>() {}
    fn _types_are_send_sync() {
        _assert_send_sync::<SimulatedRemote>();
        _assert_send_sync::<FaultyTransport<SimulatedRemote>>();
        _assert_send_sync::<InvariantReport>();
        _assert_send_sync::<Error>();
    }
    fn _is_transport(t: FaultyTransport<SimulatedRemote>) -> Box<dyn cpc_core::Transport> {
        Box::new(t)
    }
}
