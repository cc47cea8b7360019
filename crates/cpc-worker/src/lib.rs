//! The sync worker of cpc-sync: drains the durable queue to the remote.
//!
//! A [`SyncWorker`] claims batches of ready operations from a
//! [`QueueStorage`](cpc_storage::QueueStorage) (highest priority first, in
//! order per entity), pushes them through a [`Transport`](cpc_core::Transport)
//! and applies each outcome in one durable write per batch:
//!
//! - `Applied` / `AlreadyApplied`: acknowledged (removed from the queue);
//! - `RetryLater` or a failed push: retried after the [`RetryPolicy`]'s
//!   backoff (a server hint is a floor), paid from the shared retry budget
//!   (a refused retry is delayed, never dropped), behind a circuit breaker;
//! - `Rejected`, or attempts exhausted: dead letter;
//! - `Conflict`: the [`ConflictResolver`](cpc_conflict::ConflictResolver)
//!   decides (keep local → resend on the remote's version, merged → resend
//!   the merge, keep remote → drop, defer → parked); every decision goes to
//!   the conflict log first;
//! - `Unauthorized`: the batch is given back uncounted and sending pauses
//!   until [`SyncWorker::resume`].
//!
//! The worker waits on tokio's clock ([`TokioWallClock`](cpc_core::TokioWallClock) maps it onto the
//! epoch milliseconds the store persists), so on a paused runtime a whole
//! outage plays out deterministically in milliseconds. It reports to an
//! optional [`NetworkMonitor`](cpc_network::NetworkMonitor) and does not push
//! while the monitor says Offline; when the network comes back, waiting
//! retries are re-spread with jitter. Every batch yields a
//! [`ProcessingSummary`] (also one `tracing` event) and [`WorkerEvent`]s on a
//! broadcast channel.
//!
//! Storage calls are synchronous. By default the worker makes them on
//! tokio's blocking pool, since a durable store may block on fsync;
//! [`StorageCalls::Inline`] makes them on the worker's task instead, for
//! stores that never block (`MemoryStorage`) and for deterministic
//! simulations on a paused current-thread runtime.
//!
//! Most applications use the facade crate `cpc-sync` (`SyncEngine`), which
//! builds and starts the worker.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use cpc_core::{
//!     EntityKey, OpOutcome, Operation, OperationKind, PushAnswer, PushOutcome, PushQuery, Transport, TransportError,
//! };
//! use cpc_storage::{MemoryStorage, QueueOptions, QueueStorage, QueueStorageExt};
//! use cpc_core::TokioWallClock;
//! use cpc_worker::SyncWorker;
//!
//! #[derive(Debug)]
//! struct AcceptAll;
//! #[async_trait]
//! impl Transport for AcceptAll {
//!     async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
//!         let outcomes: Vec<OpOutcome> = query.ops.iter()
//!             .map(|op| OpOutcome::new(op.id, PushOutcome::Applied { version: 1 }))
//!             .collect();
//!         Ok(outcomes.into())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let storage: Arc<dyn QueueStorage> = Arc::new(MemoryStorage::new(QueueOptions::default()));
//! let clock = TokioWallClock::starting_at(1_700_000_000_000);
//! let hlc = cpc_core::HybridClock::with_wall_clock(cpc_core::NodeId(1), Arc::new(clock.clone()));
//! for i in 0..3 {
//!     let op = Operation::builder(EntityKey::new("notes", i.to_string()), OperationKind::Create)
//!         .build(&hlc)?;
//!     storage.enqueue(op, clock.now_ms())?;
//! }
//!
//! let worker = SyncWorker::builder(storage.clone(), Arc::new(AcceptAll)).clock(clock).build()?;
//! let summary = worker.process_once().await?;
//! assert_eq!(summary.applied, 3);
//! assert_eq!(storage.pending()?, 0);
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! None.
//!
//! # Map of the crate
//!
//! What each module holds and what holds across them (docs/ARCHITECTURE.md
//! keeps the short entry).
//!
//! `SyncWorker`: waits (no busy loop) for network,
//! work, the store's `next_wakeup`, or shutdown; claims a batch; pushes;
//! maps outcomes to `Completion`s applied in one durable write; backoff
//! through the retry budget and the circuit breaker; conflicts through the
//! resolver (resent after a backoff, deferred after `max_conflicts` in a
//! row: `streaks.rs`); `TokioWallClock` gives epoch ms: re-reading the
//! system's (or the application's) wall clock, never backwards, in
//! production; following tokio's clock from a fixed start in simulations
//! (`starting_at`, `SyncEngineBuilder::start_time_ms`).
//! Modules: `worker.rs` (the handle and builder, the shared state) with
//! `worker/judge.rs` (pure: what an answer means per operation and for the
//! batch, unit-tested without a runtime), `worker/batch.rs` (the batch
//! pipeline: push, verdicts applied through policy and state to
//! completions) and
//! `worker/run.rs` (the loop, the reconnect re-spread, and the handling
//! of a remote that went back in time), `regress.rs` (`Regressions`: where
//! a push or the puller reports a `409 history_diverged`; sending holds
//! until the loop, with nothing in flight, has re-queued the retained
//! acknowledged operations), `known.rs` (`KnownPosition`: the remote
//! position the engine has seen, §8 `known`, shared by the worker, the
//! puller and direct sends, sent in every query and raised by every
//! answer's head; transports hold no sync state),
//! `puller.rs` (`Puller`: the pull side beside the worker, on the same event
//! channel: one page at a time from the transport, own operations the page
//! shows applied completed (a lost acknowledgement), each change handed to
//! the sink with the operations still pending on its entity, timestamps fed
//! to the HLC, the cursor and the highest server position persisted with
//! `sync_state` only after the sink returned `Ok`; the loop: pages back to
//! back, then long polls, at least 1 s after an empty page, jittered
//! backoff after failures, nothing while offline; `409 history_diverged`
//! raises `RemoteRegressed`),
//! `config.rs` (`WorkerConfig`, `StorageCalls`), `policy.rs` (`RetryPolicy`:
//! backoff, budget, breaker), `net.rs` (what a failure says about the
//! network), `split.rs`, `streaks.rs`, `unwind.rs`, `event.rs`
//! (`WorkerEvent`), `summary.rs` (`ProcessingSummary`), `error.rs`,
//! `page_check.rs` (the engine's own check of every pulled page against its
//! query: a cursor that goes back or does not advance while `has_more`,
//! changes out of order or range, a snapshot that restarts in place are
//! refused, whatever the transport said) and `feed_acks.rs` (own
//! operations the feed showed applied while their batch was out: settled
//! once, by the batch, and acknowledged from the feed if its answer is
//! lost).
//! **Invariant:** time does not stop while the device sleeps (a reading
//! derived from a monotonic clock would); a remote timestamp too far ahead
//! is not merged into the HLC and raises `ClockSkew`.
//! `split.rs` isolates a poison operation by halving the batches that fail
//! with it; `unwind.rs` contains panics of transports and resolvers.
//! **Invariant:** only a failure of an operation sent alone (500 and other
//! 5xx but 502–504, 400, 413, malformed answer, panic) can count towards its
//! dead letter, and only while the same remote is accepting other
//! operations (some other push answered since this op's last failure, or
//! its last lone failure counted and no other push failed since). Offline,
//! timeouts, rate limits, `retry_later`, `502`/`503`/`504` and whole-batch
//! failures postpone it uncounted: a remote down for weeks buries nothing.
//! **Invariant:** work at reconnect is bounded: waiting retries are
//! re-spread page by page (`QueueStorage::respread_waiting`, 4096 live
//! operations a page, no payload read); the first page before any claim, the
//! rest beside the claims, so the first push does not wait for a long queue
//! (1M × 4 KiB: first push 33 ms, peak RSS 16 MiB; `reconnect` figure of
//! `cargo xtask bench`). Every listing that can grow takes a page and cursor.
//! **Invariant:** in-flight accounting is balanced on every path: a batch
//! whose task ends without completing (panic, abort) gives its claims back
//! at once (`BatchGuard`, orphans).
//! **Invariant:** after every batch the next wake-up comes from the store's
//! earliest `next_attempt_at`; a non-empty queue is never left unscheduled.
//! **Invariant:** a transport or protocol error acks nothing.
//! **Invariant:** a pull cursor is persisted only after its page was
//! applied by the sink; a refused page (transport, protocol, sink, store)
//! leaves the cursor where it was and comes again.

mod config;
mod error;
mod event;
mod feed_acks;
mod known;
mod net;
mod page_check;
mod policy;
mod puller;
mod regress;
mod split;
mod streaks;
mod summary;
mod unwind;
mod worker;

pub use config::{
    StorageCalls, WorkerConfig, DEFAULT_MAX_CONFLICTS, MAX_BATCH_SIZE, MAX_DURATION,
    MAX_EVENT_CAPACITY, MAX_IN_FLIGHT,
};
pub use error::{Result, WorkerError};
pub use event::{NetworkStatus, WorkerEvent};
pub use feed_acks::FeedAcks;
pub use known::KnownPosition;
pub use policy::{RetryPolicy, DEFAULT_MAX_ATTEMPTS};
pub use puller::{PageApplied, PullConfig, PullError, Puller};
pub use regress::{HandledRegression, Regression, Regressions, HISTORY_KEPT};
pub use summary::{ConflictCounts, ProcessingSummary};
pub use worker::{SyncWorker, SyncWorkerBuilder};

#[cfg(test)]
mod send_sync {
    use super::*;
    fn _assert_send_sync<T: Send + Sync>() {}
    fn _public_types_cross_threads() {
        _assert_send_sync::<SyncWorker>();
        _assert_send_sync::<WorkerEvent>();
        _assert_send_sync::<ProcessingSummary>();
        _assert_send_sync::<RetryPolicy>();
        _assert_send_sync::<StorageCalls>();
    }
}
