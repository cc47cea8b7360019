//! The `QueueStorage` contract and the types it speaks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cpc_core::{
    Coalescer, ConflictRecord, EntityKey, HlcTimestamp, Operation, OperationId, OperationPriority,
    RemoteRecord, Resolution,
};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::journal::{AckedOp, Requeued};

mod completion;
pub use completion::Completion;

/// Milliseconds since the Unix epoch. Every instant the store persists is in
/// this unit, because it must mean the same thing after a restart; the worker
/// maps its (possibly paused, simulated) tokio clock onto it.
pub use cpc_core::EpochMillis;

/// When an operation's storage write counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Durability {
    /// fsync/fdatasync before returning: survives power loss once `Ok`.
    #[default]
    Immediate,
    /// Concurrent writers share one transaction and one sync, waiting at most
    /// `max_delay` for company; each still returns only after its data is
    /// durable.
    GroupCommit {
        /// Longest a writer waits for others to join its group.
        max_delay: Duration,
    },
    /// OS-buffered; synced on an interval and on drop. Survives a process
    /// crash, not a power loss. For tests and caches.
    Relaxed,
}

/// What the store does when the oldest pending operation of an entity is dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DeadHeadPolicy {
    /// The entity stays blocked until the application revives or drops the
    /// dead operation (safe default: later operations may depend on it).
    #[default]
    BlockEntity,
    /// The next operation of the entity proceeds.
    SkipEntityHead,
}

/// Options fixed when a store is opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOptions {
    /// Durability of writes (enqueue, claim, completion).
    pub durability: Durability,
    /// How long a claim holds an operation before it counts as abandoned.
    pub lease_timeout: Duration,
    /// An operation ready for longer than this is claimed as if one priority
    /// level higher (`None`: strict priority).
    pub aging_after: Option<Duration>,
    /// Dead-head behaviour, see [`DeadHeadPolicy`].
    pub dead_head: DeadHeadPolicy,
    /// Largest accepted payload in bytes.
    pub max_payload: usize,
    /// Conflict log bound by count (oldest entries are pruned first).
    pub conflict_log_max_entries: usize,
    /// Conflict log bound by age.
    pub conflict_log_max_age: Duration,
    /// Conflict log bound by the bytes of its stored entries (oldest pruned
    /// first; the newest entry is always kept). Default 64 MiB.
    pub conflict_log_max_bytes: u64,
    /// Open an existing queue directory that group or others can read or
    /// write (default `false`: refused with `StorageError::SharedDirectory`).
    pub allow_shared_directory: bool,
    /// SQLite: overwrite deleted content with zeros (`PRAGMA
    /// secure_delete`), so an acknowledged payload does not stay readable
    /// in free pages and the WAL (default `true`; its cost is in
    /// durability.md). sled ignores it.
    pub secure_delete: bool,
    /// Keep acknowledged operations whole in the acked journal, so that
    /// a restore of the remote loses none of them: they are re-queued
    /// with their ids ([`QueueStorage::requeue_acked`]). `None` (the
    /// default): the journal keeps ids and positions only (bounded by
    /// [`ACKED_IDS_KEPT`](crate::ACKED_IDS_KEPT)), enough to report what a
    /// restore lost.
    pub retain_acked: Option<crate::RetainAcked>,
}

/// Default of [`QueueOptions::conflict_log_max_bytes`]: 64 MiB.
pub const DEFAULT_CONFLICT_LOG_MAX_BYTES: u64 = 64 * 1024 * 1024;

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            durability: Durability::Immediate,
            lease_timeout: Duration::from_secs(60),
            aging_after: Some(Duration::from_secs(300)),
            dead_head: DeadHeadPolicy::BlockEntity,
            max_payload: cpc_core::DEFAULT_MAX_PAYLOAD,
            conflict_log_max_entries: 10_000,
            conflict_log_max_age: Duration::from_secs(30 * 24 * 3600),
            conflict_log_max_bytes: DEFAULT_CONFLICT_LOG_MAX_BYTES,
            allow_shared_directory: false,
            secure_delete: true,
            retain_acked: None,
        }
    }
}

/// The slot offset of operation `seq` in a re-spread of `spread_ms` with
/// `salt` ([`QueueStorage::respread_waiting`]): a hash of the two, so that
/// slots are spread evenly, reproducibly, and the same in every backend
/// (SQLite computes the same expression in SQL).
pub fn respread_offset(seq: u64, spread_ms: u64, salt: u32) -> u64 {
    ((seq % RESPREAD_PRIME) * 65_599 + u64::from(salt)) % spread_ms.saturating_add(1)
}

/// The modulus of [`respread_offset`]: keeps the products below 2^63.
const RESPREAD_PRIME: u64 = 4_294_967_291;

/// Largest [`QueueOptions::max_payload`]: 1 GiB (record sizes stay within
/// 32-bit lengths even for a conflict log entry holding three payloads).
pub const MAX_PAYLOAD_LIMIT: usize = 1 << 30;

impl QueueOptions {
    /// Checks every value against its range; the error names the field.
    /// The stores call it when they open, so no instant they compute from
    /// a configured duration can overflow.
    pub fn validate(&self) -> Result<()> {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let check = |ok: bool, field: &'static str, reason: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(crate::StorageError::InvalidOption { field, reason })
            }
        };
        if let Durability::GroupCommit { max_delay } = self.durability {
            check(
                max_delay <= Duration::from_secs(1),
                "durability",
                "GroupCommit max_delay must be at most 1 s",
            )?;
        }
        check(
            !self.lease_timeout.is_zero() && self.lease_timeout <= DAY * 30,
            "lease_timeout",
            "must be positive and at most 30 days",
        )?;
        check(
            self.aging_after
                .is_none_or(|a| !a.is_zero() && a <= DAY * 365),
            "aging_after",
            "must be positive and at most 365 days",
        )?;
        check(
            (1..=MAX_PAYLOAD_LIMIT).contains(&self.max_payload),
            "max_payload",
            "must be between 1 byte and 1 GiB",
        )?;
        check(
            (1..=10_000_000).contains(&self.conflict_log_max_entries),
            "conflict_log_max_entries",
            "must be between 1 and 10,000,000",
        )?;
        check(
            !self.conflict_log_max_age.is_zero() && self.conflict_log_max_age <= DAY * 3650,
            "conflict_log_max_age",
            "must be positive and at most 10 years",
        )?;
        check(
            self.conflict_log_max_bytes > 0,
            "conflict_log_max_bytes",
            "must be positive",
        )?;
        if let Some(r) = &self.retain_acked {
            check(
                (1..=crate::journal::MAX_RETAINED).contains(&r.max_count),
                "retain_acked",
                "max_count must be between 1 and 10,000,000",
            )?;
            check(
                !r.max_age.is_zero() && r.max_age <= DAY * 365,
                "retain_acked",
                "max_age must be positive and at most 365 days",
            )?;
        }
        Ok(())
    }
}

/// What became of one operation given to
/// [`QueueStorage::enqueue_coalesced`]. Each is as of the operation's own
/// turn: a later operation of the same call may still merge into, or
/// cancel, one reported `Stored` (the later one's entry says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enqueued {
    /// Stored as an operation of its own, at `seq`.
    Stored {
        /// Its submission sequence.
        seq: u64,
    },
    /// Merged with the entity's newest queued operation `into`, which
    /// keeps its id and its place (`seq`) and now holds the result: what
    /// will be sent is `into`.
    Merged {
        /// The queued operation that holds the result.
        into: OperationId,
        /// Its submission sequence.
        seq: u64,
    },
    /// It and the entity's newest queued operation `earlier` cancelled
    /// out (a create then a delete): neither will be sent, `earlier` is
    /// gone from the queue.
    Cancelled {
        /// The queued operation removed with it.
        earlier: OperationId,
    },
}

/// Where an operation stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpState {
    /// Claimable (if it is the head of its entity).
    Ready,
    /// Claimed by a worker until the lease ends.
    InFlight {
        /// When the lease ends.
        lease_until: EpochMillis,
    },
    /// Waiting for a retry.
    Waiting {
        /// Not claimable before this instant.
        until: EpochMillis,
    },
    /// Failed permanently; kept until revived or dropped.
    Dead {
        /// Why (no payload data).
        reason: String,
    },
    /// Parked after a conflict until the application settles it.
    Deferred,
}

impl OpState {
    /// Short lowercase name.
    pub fn name(&self) -> &'static str {
        match self {
            OpState::Ready => "ready",
            OpState::InFlight { .. } => "in_flight",
            OpState::Waiting { .. } => "waiting",
            OpState::Dead { .. } => "dead",
            OpState::Deferred => "deferred",
        }
    }
}

/// An operation with the bookkeeping the store keeps beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOperation {
    /// The operation as submitted (payload possibly replaced by a merge).
    pub op: Operation,
    /// Store-assigned submission sequence: strictly increasing across all
    /// enqueues of this store; defines per-entity FIFO order.
    pub seq: u64,
    /// When it was enqueued.
    pub enqueued_at: EpochMillis,
    /// Send attempts so far (incremented and persisted at claim time).
    pub attempts: u32,
    /// Last transient or permanent error, if any (no payload data).
    pub last_error: Option<String>,
    /// Current state.
    pub state: OpState,
}

/// An operation handed to the worker by [`QueueStorage::claim_ready`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The operation to send.
    pub op: Operation,
    /// Its submission sequence.
    pub seq: u64,
    /// Attempts including this one (already persisted).
    pub attempt: u32,
    /// Priority it was claimed at (may be above `op.priority` by aging).
    pub effective_priority: OperationPriority,
    /// When it was enqueued.
    pub enqueued_at: EpochMillis,
}

/// Counts of operations by state and priority.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Operations not yet delivered (every state but dead and deferred).
    pub pending: u64,
    /// Of `pending`, those that cannot be sent until the application acts:
    /// they wait behind their entity's head, which is a dead letter (under
    /// [`DeadHeadPolicy::BlockEntity`]) or a deferred conflict. `pending -
    /// blocked` is what the worker can still send; `drained()` waits for
    /// that to reach zero.
    pub blocked: u64,
    /// Claimable or waiting for their entity's head.
    pub ready: u64,
    /// Claimed, lease not ended.
    pub in_flight: u64,
    /// Waiting for a retry.
    pub waiting: u64,
    /// Dead letters.
    pub dead: u64,
    /// Deferred conflicts.
    pub deferred: u64,
    /// Quarantined (undecodable) records.
    pub quarantined: u64,
    /// Pending operations per priority, indexed by `OperationPriority::rank()`.
    pub pending_by_priority: [u64; 4],
    /// Payload bytes of pending operations.
    pub pending_bytes: u64,
    /// Entries in the acked journal ([`QueueStorage::acked`]).
    pub acked_journal: u64,
}

/// Which operations [`QueueStorage::list`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this entity.
    pub entity: Option<EntityKey>,
    /// Only dead letters (`Some(true)`), only live ones (`Some(false)`).
    pub dead: Option<bool>,
    /// At most this many (`None`: all), in submission order.
    pub limit: Option<usize>,
    /// Only operations submitted after this one: pass the `seq` of the last
    /// item of the previous page to read a long listing page by page (with
    /// `limit`), instead of loading it whole.
    pub after_seq: Option<u64>,
}

/// One page of a listing that may be long ([`QueueStorage::list_deferred`],
/// [`QueueStorage::list_quarantined`]): at most `limit` items after the
/// cursor `after`, so a large queue is read in bounded memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Only items after this one: the cursor of the last item of the
    /// previous page (`DeferredConflict::seq`, `QuarantinedRecord::n`);
    /// `None` for the first page.
    pub after: Option<u64>,
    /// At most this many (`None`: all).
    pub limit: Option<usize>,
}

impl Page {
    /// Everything, in one listing (for queues known to be small).
    pub const ALL: Page = Page {
        after: None,
        limit: None,
    };

    /// The first `limit` items.
    pub fn first(limit: usize) -> Self {
        Page {
            after: None,
            limit: Some(limit),
        }
    }

    /// The `limit` items after the cursor `after`.
    pub fn after(after: u64, limit: usize) -> Self {
        Page {
            after: Some(after),
            limit: Some(limit),
        }
    }
}

/// What one page of [`QueueStorage::respread_waiting`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Respread {
    /// Waiting operations moved to their slot.
    pub moved: u64,
    /// The cursor of the next page (the last seq looked at), or `None`
    /// when this page reached the end of the queue.
    pub next: Option<u64>,
}

/// How the reason of a deferred conflict starts when the remote's record
/// was over the store's payload limit: its body is not kept (`remote.payload`
/// reads `None`, which is then not a remote delete). See
/// [`DeferredConflict::remote_body_withheld`].
pub const REMOTE_BODY_WITHHELD: &str = "remote body withheld";

/// A conflict parked with [`Completion::Defer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferredConflict {
    /// The local operation.
    pub op: Operation,
    /// Its position in submission order: the cursor of the next [`Page`].
    pub seq: u64,
    /// The remote's record when the conflict happened.
    pub remote: RemoteRecord,
    /// Why it was parked (the resolver deferred it, the resolver panicked,
    /// too many conflicts in a row), if the store knows.
    pub reason: Option<String>,
}

impl DeferredConflict {
    /// True when the remote's record was too large to store: its body was
    /// left out (`remote.payload` is `None` without meaning a delete). The
    /// application settles from the timestamps or fetches the record.
    pub fn remote_body_withheld(&self) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|r| r.starts_with(REMOTE_BODY_WITHHELD))
    }
}

/// Which conflict log entries [`QueueStorage::conflict_entries`] (and [`QueueStorageExt::conflict_log`](crate::QueueStorageExt::conflict_log)) returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConflictFilter {
    /// Only this entity.
    pub entity: Option<EntityKey>,
    /// Only entries resolved at or after this instant.
    pub since: Option<EpochMillis>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
    /// Only entries older than this one: the [`LoggedConflict::cursor`] of
    /// the last entry of the previous page (`None` for the first page).
    pub before: Option<ConflictCursor>,
}

/// Where an entry sits in the conflict log, to read the log page by page
/// ([`ConflictFilter::before`]). Opaque: its meaning is the backend's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConflictCursor {
    pub(crate) at: EpochMillis,
    pub(crate) n: u64,
}

/// One conflict log entry and its place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedConflict {
    /// Pass it as [`ConflictFilter::before`] to read the entries older
    /// than this one.
    pub cursor: ConflictCursor,
    /// The entry.
    pub entry: ConflictRecord,
}

/// Something the store quarantined, reported once through
/// [`QueueStorage::take_quarantine_notices`] so the application hears of it
/// when it happens. A quarantined operation stays in the queue as a dead
/// letter (reason `quarantined: ...`) that blocks its entity under
/// [`DeadHeadPolicy::BlockEntity`], until the application repairs it
/// ([`QueueStorageExt::repair`](crate::QueueStorageExt::repair)) or drops it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineNotice {
    /// The operation, when its id could be read.
    pub id: Option<OperationId>,
    /// Its entity, when its key could be read.
    pub entity: Option<EntityKey>,
    /// Why (no payload data).
    pub reason: String,
}

/// A stored record that failed its checksum or could not be decoded. Its
/// raw bytes are kept so nothing is lost and a later release may recover it.
#[derive(Clone, PartialEq, Eq)]
pub struct QuarantinedRecord {
    /// Its place in the quarantine, in the order records arrived: the cursor
    /// of the next [`Page`].
    pub n: u64,
    /// The store's key of the record (backend specific; for display).
    pub key: String,
    /// Why it was quarantined.
    pub reason: String,
    /// The raw bytes as found on disk.
    pub raw: Vec<u8>,
    /// When it was quarantined.
    pub at: EpochMillis,
}

impl QuarantinedRecord {
    /// The id of the quarantined operation, when the record is one whose id
    /// was known (its key is `op/{seq}/{id}`): what to pass to
    /// [`QueueStorageExt::repair`](crate::QueueStorageExt::repair) or `drop_op`.
    pub fn operation_id(&self) -> Option<OperationId> {
        let rest = self.key.strip_prefix("op/")?;
        let (_, id) = rest.split_once('/')?;
        id.parse().ok()
    }
}

impl fmt::Debug for QuarantinedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuarantinedRecord")
            .field("n", &self.n)
            .field("key", &self.key)
            .field("reason", &self.reason)
            .field("raw_len", &self.raw.len())
            .field("at", &self.at)
            .finish()
    }
}

/// A change the application (or the worker, for deferred conflicts) makes
/// to operations already in the queue, applied in one durable write by
/// [`QueueStorage::amend`]. The one-call forms (`revive`, `drop_op`, …) are
/// in [`QueueStorageExt`](crate::QueueStorageExt).
#[derive(Debug, Clone, PartialEq)]
pub enum Amend {
    /// Brings a dead (or deferred) operation back as ready, attempts reset.
    /// Counts 1, or 0 if no dead or deferred operation has the id.
    Revive {
        /// The operation.
        id: OperationId,
        /// The time of the change.
        now: EpochMillis,
    },
    /// Removes an operation in any state. Counts 1, or 0 if unknown.
    Drop(OperationId),
    /// Removes every operation of an entity (dead-head "drop entity").
    /// Counts the operations removed.
    DropEntity(EntityKey),
    /// Settles a deferred conflict: KeepLocal/Merged resend (attempts
    /// reset), KeepRemote drops, Defer leaves it. Counts 1, or 0 if the
    /// operation is not deferred.
    Settle {
        /// The deferred operation.
        id: OperationId,
        /// What to do with it.
        resolution: Resolution,
        /// The time of the change.
        now: EpochMillis,
    },
    /// Replaces a dead operation (typically a quarantined one, whose
    /// stored bytes are damaged) with `fixed`, which must have the same id
    /// and entity, and makes it ready again with its attempts reset, in its
    /// place in its entity's order. Counts 1, or 0 if no dead operation has
    /// that id. Errors if `fixed` differs in id or entity, or is too large.
    Repair {
        /// The operation to store in place of the dead one.
        fixed: Operation,
        /// The time of the change.
        now: EpochMillis,
    },
    /// Deletes the quarantined records (the raw bytes kept for
    /// inspection). Counts them.
    PurgeQuarantined,
    /// Stores operations that may already have reached the remote (a
    /// re-import of what `export` wrote): like
    /// [`enqueue_batch`](QueueStorage::enqueue_batch), with the same
    /// refusals before any write, but each is marked as claimed, so a
    /// coalescing enqueue never merges a later edit into one the remote
    /// may answer `already_applied` for. Counts the operations stored.
    Import {
        /// The operations, in order.
        ops: Vec<Operation>,
        /// The time of the change.
        now: EpochMillis,
    },
}

impl Amend {
    /// What the change is called in errors and traces.
    pub fn name(&self) -> &'static str {
        match self {
            Amend::Revive { .. } => "revive",
            Amend::Drop(_) => "drop",
            Amend::DropEntity(_) => "drop entity",
            Amend::Settle { .. } => "settle",
            Amend::Repair { .. } => "repair",
            Amend::PurgeQuarantined => "purge quarantined",
            Amend::Import { .. } => "import",
        }
    }

    /// The time of the change, for the variants that carry one.
    pub fn now(&self) -> Option<EpochMillis> {
        match self {
            Amend::Revive { now, .. }
            | Amend::Settle { now, .. }
            | Amend::Repair { now, .. }
            | Amend::Import { now, .. } => Some(*now),
            Amend::Drop(_) | Amend::DropEntity(_) | Amend::PurgeQuarantined => None,
        }
    }
}

/// A durable queue of operations with the ordering rules of cpc-sync.
///
/// Ordering: across entities the highest (effective) priority first, FIFO by
/// `seq` within a priority; within an entity strictly by `seq`: only the
/// oldest undelivered operation of an entity (its *head*) is claimable, and
/// while it is in flight, waiting, deferred or dead (unless
/// [`DeadHeadPolicy::SkipEntityHead`]) the entity's later operations wait.
///
/// All methods are synchronous and may block on fsync: call them from
/// `spawn_blocking` in async code. After an I/O error on a sync or commit the
/// handle is poisoned and every later call returns `StorageError::Poisoned`.
pub trait QueueStorage: Send + Sync + fmt::Debug {
    /// Stores several operations in one atomic write; returns their `seq`s in order.
    fn enqueue_batch(&self, ops: Vec<Operation>, now: EpochMillis) -> Result<Vec<u64>>;
    /// Like [`enqueue_batch`](Self::enqueue_batch), one atomic write, but
    /// each operation is first offered to `coalescer` with the newest
    /// queued operation of its entity, if that one is ready and was never
    /// claimed, never attempted (so the remote cannot have seen it; an
    /// operation claimed once, even if the claim was given back, or put
    /// back from the acked journal, is never merged into). Its decision
    /// is applied in the same write: [`Coalesced::Keep`](cpc_core::Coalesced)
    /// stores the new operation, `Replace` rewrites the queued one in its
    /// place as [`cpc_core::combine`] says, `Cancel` removes the queued one
    /// and stores nothing. A replacement over the payload limit, a
    /// coalescer that panics, or a queued operation that does not decode
    /// keep both. Operations of one call are offered in order, so a later
    /// one may merge into an earlier one of the same call. The id of an
    /// operation merged or cancelled away is not kept: submitting it again
    /// is not refused as a duplicate. Refusals (a duplicate id, a payload
    /// too large) are checked for every operation before anything is
    /// written, as in `enqueue_batch`.
    fn enqueue_coalesced(
        &self,
        ops: Vec<Operation>,
        now: EpochMillis,
        coalescer: Arc<dyn Coalescer>,
    ) -> Result<Vec<Enqueued>>;
    /// Leases up to `limit` claimable heads (priority, aging, FIFO), persisting the incremented attempt count in the same write.
    fn claim_ready(&self, now: EpochMillis, limit: usize) -> Result<Vec<Claimed>>;
    /// Applies the outcomes of a batch in one atomic, durable write; unknown ids are skipped.
    fn complete(&self, completions: &[Completion], now: EpochMillis) -> Result<()>;
    /// The largest payload the store accepts and reads back, in bytes (its
    /// `QueueOptions::max_payload`): the one payload limit the worker
    /// checks remote records and merges against before they reach the store.
    fn max_payload(&self) -> usize;
    /// Applies one [`Amend`] in one durable write; returns how many
    /// operations (or quarantined records) it changed, 0 when nothing
    /// matched.
    fn amend(&self, change: Amend) -> Result<u64>;
    /// Counts by state and priority.
    fn stats(&self) -> Result<QueueStats>;
    /// Operations matching `filter`, in submission order.
    fn list(&self, filter: &ListFilter) -> Result<Vec<StoredOperation>>;
    /// One operation by id.
    fn get(&self, id: OperationId) -> Result<Option<StoredOperation>>;
    /// Returns expired leases to ready (called at open; idempotent); returns how many.
    fn recover(&self, now: EpochMillis) -> Result<u64>;
    /// Spreads the waiting retries over `[base, base + spread_ms]` (the
    /// network came back): each waiting operation due before its slot moves
    /// to its slot, `base + respread_offset(seq, spread_ms, salt)`; ones due
    /// later keep their time. Looks at one [`Page`] of live operations in
    /// seq order (at most `page.limit` of them, after `page.after`), so a
    /// queue of any length is re-spread in short write transactions that
    /// let claims through between them. Reads no payloads (SQLite: one
    /// `UPDATE` per page).
    fn respread_waiting(
        &self,
        base: EpochMillis,
        spread_ms: u64,
        salt: u32,
        page: &Page,
    ) -> Result<Respread>;
    /// Earliest instant at which something not claimable now becomes claimable (retry due, lease expiry), if any.
    fn next_wakeup(&self) -> Result<Option<EpochMillis>>;
    /// Deferred conflicts, in submission order, one [`Page`] at a time
    /// (cursor: [`DeferredConflict::seq`]).
    fn list_deferred(&self, page: &Page) -> Result<Vec<DeferredConflict>>;
    /// Appends to the bounded conflict log, pruning the oldest entries by
    /// age, count and bytes; returns how many older entries were pruned (so
    /// the caller can tell the application losing values were let go).
    /// Refuses ([`StorageError::PayloadTooLarge`](crate::StorageError)) an
    /// entry holding a payload over the store's `max_payload`.
    fn log_conflict(&self, entry: &ConflictRecord) -> Result<u64>;
    /// Conflict log entries, newest first, each with its cursor (page with
    /// [`ConflictFilter::before`] and `limit`).
    fn conflict_entries(&self, filter: &ConflictFilter) -> Result<Vec<LoggedConflict>>;
    /// Records that failed their checksum or decoding, in the order they
    /// arrived, one [`Page`] at a time (cursor: [`QuarantinedRecord::n`]).
    fn list_quarantined(&self, page: &Page) -> Result<Vec<QuarantinedRecord>>;
    /// What was quarantined since the last call (at most the latest 1024),
    /// oldest first. Cheap: no I/O.
    fn take_quarantine_notices(&self) -> Vec<QuarantineNotice>;
    /// The persisted HLC high-water mark, first raised to `raise_to` when
    /// that is higher (it is never lowered; `None` only reads). A stored
    /// mark that no longer decodes is an error when read, and replaced when
    /// raised (the clock restores from the new one, which is what it would
    /// write anyway).
    fn clock_mark(&self, raise_to: Option<HlcTimestamp>) -> Result<Option<HlcTimestamp>>;
    /// A small value the sync layer keeps beside the queue under `key` (the
    /// pull cursor, the highest server position seen): read when `set` is
    /// `None`, replaced durably (like a completion) when `Some`; answers
    /// the value stored. A key is 1 to 64 ASCII characters, a value at most
    /// [`MAX_SYNC_STATE_BYTES`]; stored values are checked on read (length,
    /// CRC), a damaged one is a `Corrupt` error.
    fn sync_state(&self, key: &str, set: Option<Vec<u8>>) -> Result<Option<Vec<u8>>>;
    /// Makes everything written so far durable, claims included: a claim
    /// is committed without a sync under every durability (it survives a
    /// process crash, not a power loss), so under `Immediate` this syncs
    /// when a claim was committed since the last synced write.
    fn flush(&self) -> Result<()>;
    /// The remote went back in time (`409 history_diverged`, its head now
    /// at `head_seq`): puts up to `limit` journaled operations (oldest
    /// first) back in the queue, ready, with their ids and in their old
    /// place in their entity's order (ahead of anything submitted after
    /// them); counts those that cannot be (only their id was kept, or
    /// their record is damaged) and were applied above `head_seq` or at
    /// an unknown position; and removes what it looked at from the
    /// journal, in one durable write. Call it again while
    /// [`Requeued::more`]. Call it while nothing is in flight (the worker
    /// stops claiming first): an operation put back ahead of an entity's
    /// in-flight head would be sent beside it.
    fn requeue_acked(&self, head_seq: u64, now: EpochMillis, limit: usize) -> Result<Requeued>;
    /// The acked journal, oldest first, one [`Page`] at a time (cursor:
    /// [`AckedOp::n`]). Bookkeeping only, never a payload.
    fn acked(&self, page: &Page) -> Result<Vec<AckedOp>>;
}

/// The largest value [`QueueStorage::sync_state`] keeps.
pub const MAX_SYNC_STATE_BYTES: usize = 64 * 1024;

/// Checks a [`QueueStorage::sync_state`] call's key and value.
pub(crate) fn check_sync_state(key: &str, set: Option<&Vec<u8>>) -> Result<()> {
    if key.is_empty() || key.len() > 64 || !key.is_ascii() {
        return Err(crate::StorageError::InvalidOption {
            field: "sync_state key",
            reason: "1 to 64 ASCII characters",
        });
    }
    if set.is_some_and(|v| v.len() > MAX_SYNC_STATE_BYTES) {
        return Err(crate::StorageError::InvalidOption {
            field: "sync_state value",
            reason: "at most MAX_SYNC_STATE_BYTES (64 KiB)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_completion_shows_payload_lengths_not_bytes() {
        let resend = Completion::Resend {
            id: OperationId::from_u128(1),
            base_version: Some(2),
            payload: Some(b"secret-canary".to_vec()),
        };
        let text = format!("{resend:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("payload_len: Some(13)"), "{text}");
    }
}
