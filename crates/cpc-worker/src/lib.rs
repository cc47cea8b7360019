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
