//! What the worker tells its observers.

use cpc_core::{EntityKey, OperationId, TransportError};
use cpc_storage::EpochMillis;

use crate::summary::ProcessingSummary;

/// The network reachability as the worker sees it (mirrors the monitor's
/// status so observers need not depend on `cpc-network`).
pub use cpc_network::NetworkStatus;

/// Something the worker did or noticed, broadcast to every
/// [`subscribe`](crate::SyncWorker::subscribe)r.
///
/// Events carry ids, counts and error names, never payloads. A slow
/// subscriber that falls behind the channel's capacity misses events
/// (`RecvError::Lagged`); the queue itself is the source of truth.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// The remote applied an operation (or had already applied it).
    Applied {
        /// The operation.
        id: OperationId,
        /// Its entity.
        entity: EntityKey,
        /// The record's version at the remote.
        version: u64,
        /// True for an idempotent replay (`AlreadyApplied`).
        replay: bool,
    },
    /// An operation will be tried again.
    RetryScheduled {
        /// The operation.
        id: OperationId,
        /// Not before this instant (ms since the epoch).
        at: EpochMillis,
        /// The attempt that failed (1 for the first send).
        attempt: u32,
        /// What went wrong (no payload data).
        error: String,
    },
    /// An operation failed permanently and was parked in the dead letters.
    DeadLettered {
        /// The operation.
        id: OperationId,
        /// Its entity.
        entity: EntityKey,
        /// Why (remote's reason or "gave up after N attempts").
        reason: String,
    },
    /// A conflict was resolved (and logged to the conflict log).
    ConflictResolved {
        /// The operation.
        id: OperationId,
        /// Its entity.
        entity: EntityKey,
        /// `keep_local`, `keep_remote`, `merged` or `defer`.
        resolution: &'static str,
        /// The remote version the conflict was against.
        remote_version: u64,
    },
    /// A remote record's timestamp (seen in a conflict) was further ahead of
    /// this device's clock than the hybrid clock's `max_drift`, so it was
    /// not merged into the clock: this device's clock (or the remote
    /// writer's) is off by about `ahead_ms`.
    ClockSkew {
        /// The operation whose conflict carried the timestamp.
        id: OperationId,
        /// How far ahead of this clock the remote timestamp was, in ms.
        ahead_ms: u64,
        /// The hybrid clock's limit, in ms.
        max_drift_ms: u64,
    },
    /// The conflict log reached a bound (age, count or bytes) and dropped
    /// its oldest entries, with the losing values they kept: read the log
    /// before then if the application wants them.
    ConflictLogPruned {
        /// How many entries were dropped.
        dropped: u64,
    },
    /// A submitted operation was merged into its entity's newest queued
    /// operation `into` (coalescing, never sent yet): `from` will not be
    /// sent, `into` carries both changes. `submit` returned `into`.
    Coalesced {
        /// The submitted operation, merged away.
        from: OperationId,
        /// The queued operation that now holds the result.
        into: OperationId,
        /// Their entity.
        entity: EntityKey,
    },
    /// A submitted operation and its entity's newest queued one cancelled
    /// out (coalescing: a create then a delete, never sent): neither will
    /// be sent, so neither will be `Applied`.
    CoalescedAway {
        /// The submitted operation.
        later: OperationId,
        /// The queued operation removed with it.
        earlier: OperationId,
        /// Their entity.
        entity: EntityKey,
    },
    /// A conflict was parked for the application (see `settle`).
    Deferred {
        /// The operation.
        id: OperationId,
        /// Its entity.
        entity: EntityKey,
    },
    /// At start: the store holds records it could not decode (moved aside,
    /// not lost).
    Quarantined {
        /// How many records are quarantined in total.
        count: u64,
    },
    /// The store just quarantined an operation whose stored bytes are
    /// damaged. It stays in the queue as a dead letter, and later
    /// operations of its entity wait behind it (under the default
    /// `BlockEntity`) until the application repairs (`repair`) or drops it.
    OperationQuarantined {
        /// The operation, when its id could be read.
        id: Option<OperationId>,
        /// Its entity, when its key could be read.
        entity: Option<EntityKey>,
        /// Why (no payload data).
        reason: String,
    },
    /// The network status changed.
    NetworkChanged {
        /// Before.
        from: NetworkStatus,
        /// After.
        to: NetworkStatus,
    },
    /// The remote refused the credentials: sending is paused (nothing is
    /// dropped, no attempt is counted) until `resume()` is called.
    AuthRequired,
    /// The remote does not speak this client's protocol version
    /// (`TransportError::Incompatible`): sending is paused as for
    /// [`AuthRequired`](Self::AuthRequired), nothing dropped, until
    /// `resume()` (after the application is upgraded, or the server).
    UpgradeRequired,
    /// Sending resumed after [`AuthRequired`](Self::AuthRequired) or
    /// [`UpgradeRequired`](Self::UpgradeRequired).
    Resumed,
    /// A whole batch failed (transport error or malformed answer); every
    /// operation in it is retried.
    BatchFailed {
        /// Operations in the batch.
        size: usize,
        /// The error.
        error: TransportError,
    },
    /// The circuit breaker is open: no pushes until it half-opens.
    CircuitOpen {
        /// When a trial push will be allowed (ms since the epoch).
        until: EpochMillis,
    },
    /// A batch was processed (a UI refreshes its "3 changes waiting to
    /// sync" from `SyncEngine::pending` on this event).
    BatchCompleted {
        /// What the batch did.
        summary: ProcessingSummary,
    },
    /// Nothing is left to send or in flight (see `SyncWorker::drained`).
    Drained,
    /// A storage call failed; the worker waits and tries again.
    StorageFailed {
        /// The error, rendered (no payload data).
        error: String,
    },
    /// A page of the remote's changes was applied by the sink and its
    /// cursor persisted.
    PullProgress {
        /// Changes (or snapshot entities) in the page.
        changes: usize,
        /// Bytes of the page on the wire.
        bytes: u64,
        /// The remote has more right now.
        has_more: bool,
    },
    /// A pull failed (transport, a page breaking the protocol, the sink,
    /// the store): nothing of the page was applied, the cursor did not
    /// move, and the same page is asked for again after the wait.
    PullFailed {
        /// The error, rendered (no payload data).
        error: String,
        /// The wait before the next try, in ms.
        retry_in_ms: u64,
    },
    /// The remote's history no longer holds the position this device had
    /// seen (`409 history_diverged`): it was restored from a backup or
    /// replaced. Changes acknowledged after its head may be lost there:
    /// the operations the acked journal kept whole
    /// (`QueueOptions::retain_acked`) were put back in the queue with
    /// their ids (the remote answers `already_applied` for those it still
    /// has); the next pull replaces the synced scope with the remote's
    /// state (a snapshot).
    RemoteRegressed {
        /// The highest position this device had seen (`None` when a push
        /// saw the regression before any pull).
        known: Option<cpc_core::RemotePosition>,
        /// The remote's head now.
        head: cpc_core::RemotePosition,
        /// Acknowledged operations put back in the queue.
        requeued: u64,
        /// Acknowledged operations the remote certainly or possibly lost
        /// (applied above its head, or at an unknown position) that could
        /// not be put back: only their ids were kept. Turn on retention to
        /// make this 0.
        unrecoverable: u64,
    },
    /// The worker stopped (shutdown, or a poisoned store).
    Stopped {
        /// Why.
        reason: String,
    },
}
