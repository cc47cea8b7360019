//! The durable operation queue of cpc-sync.
//!
//! An application's `submit` returns once its operation is stored here with
//! the chosen [`Durability`]; the sync worker then claims operations in
//! order (across entities the highest effective priority first, then
//! submission order; within an entity strictly in submission order, only
//! its head claimable) and reports what the remote answered. This crate is
//! the queue and nothing else: it does not send, retry on a timer or
//! resolve conflicts, it stores the decisions of those who do.
//!
//! # The contract
//! [`QueueStorage`] (sync, `Send + Sync`, object safe; call it from
//! `spawn_blocking` in async code, it may fsync) with:
//! - ordering: across entities the highest effective priority first and
//!   FIFO by `seq` within a priority; an operation ready for longer than
//!   [`QueueOptions::aging_after`] is claimed one level higher; within an
//!   entity strictly by `seq`: only the entity's oldest undelivered
//!   operation (its *head*) is claimable, and while it is in flight,
//!   waiting, deferred or dead (see [`DeadHeadPolicy`]) the rest wait;
//! - leases: [`QueueStorage::claim_ready`] marks a batch in flight until
//!   `now + lease_timeout` and persists the incremented attempt count in the
//!   same write; an ended lease is claimable again ([`QueueStorage::recover`]
//!   runs at open);
//! - outcomes: [`QueueStorage::complete`] applies a batch of [`Completion`]s
//!   in one atomic, durable write (ack, retry, dead letter, defer, resend,
//!   release, drop);
//! - the deferred-conflict set, a conflict log bounded by count and age, the
//!   quarantine of records that fail their CRC32, the persisted hybrid
//!   logical clock high-water mark;
//! - errors: [`StorageError`] (`PayloadTooLarge`, `StorageFull`, `Corrupt`,
//!   `Poisoned` after a failed sync, `Locked` for a second open, `Format` for
//!   a directory that is not ours, ...). Nothing panics on bad data.
//!
//! Claiming costs O(batch · log n): every backend indexes entity heads by
//! (effective priority, seq) and by wake-up time, updated in the same
//! transaction as the record, so nothing on the claim path or at open scans
//! the queue.
//!
//! # Backends
//! - [`SqliteStorage`]: SQLite (bundled) in WAL mode with
//!   `synchronous=FULL`, checkpoints in a background thread; the expected
//!   default.
//! - `SledStorage` (feature `sled`): sled 0.34 with an fdatasync after each
//!   flush, because sled's own flush does not reach the disk.
//! - [`MemoryStorage`]: the same semantics without durability, for tests and
//!   simulations.
//!
//! Every durable backend lives in a directory of its own, created with mode
//! 0700, locked exclusively while open, and marked with its backend and
//! format version; `docs/durability.md` states the commit strategy, the
//! assumptions about the disk and what survives what.
//!
//! # Durability modes
//! - [`Durability::Immediate`]: a real fsync/fdatasync before each write
//!   returns; an `Ok` survives a power loss.
//! - [`Durability::GroupCommit`]: concurrent enqueues share one transaction
//!   and one sync (a writer waits at most `max_delay` for company); each
//!   still returns only once its data is durable.
//! - [`Durability::Relaxed`]: OS-buffered, synced every
//!   [`RELAXED_SYNC_INTERVAL`], on [`QueueStorage::flush`] and on drop;
//!   survives a process crash, not a power loss.
//!
//! After a failed sync or commit the handle is poisoned: every later call is
//! [`StorageError::Poisoned`] until the store is reopened.
//!
//! # Example
//! In memory:
//! ```
//! use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, OperationPriority};
//! use cpc_storage::{Completion, MemoryStorage, QueueOptions, QueueStorage};
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let mut rng = StdRng::seed_from_u64(1);
//! let mut op = |entity: &str, priority, ms| {
//!     Operation::builder(EntityKey::new("notes", entity), OperationKind::Update)
//!         .priority(priority)
//!         .build_at(HlcTimestamp::new(ms, 0, NodeId(1)), &mut rng)
//! };
//! let create = op("1", OperationPriority::Background, 1_000);
//! let urgent = op("1", OperationPriority::Critical, 1_001); // same entity: waits
//! let other = op("2", OperationPriority::High, 1_002);
//!
//! let store = MemoryStorage::new(QueueOptions::default());
//! store.enqueue_batch(vec![create.clone(), urgent.clone(), other.clone()], 1_000)?;
//!
//! let batch = store.claim_ready(1_010, 64)?;
//! let order: Vec<_> = batch.iter().map(|c| c.op.id).collect();
//! assert_eq!(order, vec![other.id, create.id]); // priority first, entity heads only
//!
//! store.complete(&[Completion::Ack(create.id), Completion::Ack(other.id)], 1_020)?;
//! assert_eq!(store.claim_ready(1_030, 64)?[0].op.id, urgent.id);
//! # Ok::<(), cpc_storage::StorageError>(())
//! ```
//!
//! Durable, in SQLite, surviving a reopen:
//! ```
//! use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind};
//! use cpc_storage::{Durability, QueueOptions, QueueStorage, QueueStorageExt, SqliteStorage};
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let dir = tempfile::tempdir()?;
//! let options = QueueOptions { durability: Durability::Immediate, ..QueueOptions::default() };
//! let op = Operation::builder(EntityKey::new("notes", "7"), OperationKind::Create)
//!     .payload(b"{}".to_vec())
//!     .build_at(HlcTimestamp::new(1_000, 0, NodeId(1)), &mut StdRng::seed_from_u64(2));
//!
//! let store = SqliteStorage::open(dir.path().join("queue"), options.clone())?;
//! store.enqueue(op.clone(), 1_000)?; // synced to disk before it returns
//! drop(store);
//!
//! let store = SqliteStorage::open(dir.path().join("queue"), options)?;
//! assert_eq!(store.get(op.id)?.map(|s| s.op), Some(op));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//! - `sled` (default): the sled backend.
//! - `conformance`: the `conformance` module, a suite (one
//!   function per behaviour and the `conformance_tests!` macro) for testing
//!   any `QueueStorage` implementation.
//!
//! # Supported Rust
//! The workspace `rust-version` (1.89: `File::try_lock`).
//!
//! # Map of the crate
//!
//! What each module holds and what holds across them (docs/ARCHITECTURE.md
//! keeps the short entry).
//!
//! The `QueueStorage` trait (sync; the worker calls
//! it through `spawn_blocking`, or inline with `StorageCalls::Inline` for
//! `MemoryStorage` and deterministic simulations) and its
//! backends: `SqliteStorage` (the default: WAL, `synchronous=FULL`, checkpoints
//! on a background thread), `SledStorage` (feature `sled`: sled 0.34 plus an
//! fdatasync of its files after every flush, because sled's own flush only
//! calls `sync_file_range`) and `MemoryStorage`. The ordering rules live once,
//! in `rules.rs` (the queue's rules, not an engine), over a small table interface that each backend implements
//! (`rules/read.rs` the listings, `rules/amend.rs` revive/drop/settle,
//! `rules/quarantine.rs` damaged records and repairs,
//! `rules/limits.rs` decoding limits and the conflict log's bounds,
//! `rules/counters.rs` the counters by state and priority,
//! `rules/journal.rs` the acked journal's rules: journaling an
//! acknowledgement in the write that removes the operation, pruning by
//! count and age, putting retained operations back in their entity's
//! order after a restore of the remote; `rules/coalesce.rs` the
//! coalescing enqueue: a new operation meets its entity's newest one, only
//! if that one was never claimed, in the enqueue's own transaction);
//! `sync_state.rs` the device's sync state, typed (`SyncState`: the
//! puller's `PullState` with its cursor and `known`, a pending
//! `Regression`, the handled ones) with its keys and stored forms, read by
//! the worker and by `cpc-sync status` alike;
//! `journal.rs` the journal's public types (`RetainAcked`, `AckedOp`,
//! `Requeued`) and its stored record;
//! `dir.rs` owns the queue directory (mode 0700, exclusive lock, format
//! marker) and the poison flag; `compact.rs` the format-3 operation body;
//! `notices.rs` the quarantine notices handed to the worker. The SQLite
//! backend is a folder, one concern a file: `sqlite.rs` the handle and its
//! `QueueStorage` impl, `sqlite/write.rs` the write path and group commit,
//! `sqlite/checkpoint.rs` the background checkpoint thread, `sqlite/open.rs`
//! the pragmas, schema and counters row, `sqlite/codec.rs` rows to
//! bookkeeping and the hot-path SQL, `sqlite/tx.rs` the engine's `Tx` over a
//! transaction, `sqlite/salvage.rs` parks rows whose bookkeeping no longer
//! converts, `sqlite/journal.rs` the `acked` table and the splice of a
//! re-queued operation into its entity's chain.
//! The other modules: `api.rs` (the `QueueStorage` trait and its types:
//! options, `Amend`, filters, pages, `Enqueued`: 22 required methods, one
//! per door: write (plain and coalescing), claim, complete, amend, read, list, clock mark, sync state (the pull cursor and server position, 64 KiB at most, CRC-checked), flush, the acked journal (list, requeue);
//! `api/completion.rs` the completions),
//! `ext.rs` (`QueueStorageExt`, the one-operation shorthands every store
//! gets: `enqueue`, `ack`, `revive`, `settle`, `repair`, `pending`…;
//! `Arc<S>` and `Box<S>` are stores too, so a wrapper forwards only the
//! core methods), `error.rs` (`StorageError`),
//! `memory.rs` (`MemoryStorage`), `sled_backend.rs` + `sled_backend/`
//! (`SledStorage`: keys, transaction, durability, `meta.rs` the bookkeeping
//! record and its formats), `conformance.rs`. `conformance` (feature) is the one suite every
//! backend runs. Why `RemoteRecord` and `Resolution` live in core: storage
//! persists deferred conflicts and the conflict log, and must not depend on
//! `cpc-conflict`.
//! **Invariant:** only an entity's head (its oldest undelivered operation) is
//! claimable; claim costs O(batch · log n) through indexes, never a scan.
//! **Invariant:** the attempt count is persisted in the same write that
//! leases the operation.
//! **Invariant:** an acknowledgement is journaled in the same write that
//! removes the operation; a re-queued operation keeps its id and its seq,
//! so it takes its old place ahead of its entity's later operations.
//! **Invariant:** every record is CRC-checked before decoding, with limits
//! derived from the store's `max_payload`; a bad one is quarantined with its
//! raw bytes and its operation parked as a dead letter in its place (its
//! entity waits, per the dead-head policy), never a panic, never blocking
//! the rest of the queue.
//! **Invariant:** after a failed sync or commit the handle is poisoned; nothing
//! is acknowledged after a failed sync.
//! **Invariant:** a queue directory is private: created 0700 (every level,
//! each parent fsynced), an existing one others can read or write refused,
//! files 0600, no symlink followed; every option is range-checked at open
//! (`QueueOptions::validate`).

mod api;
mod compact;
#[cfg(feature = "conformance")]
pub mod conformance;
mod dir;
mod error;
mod ext;
mod journal;
mod memory;
mod notices;
mod rules;
#[cfg(feature = "sled")]
mod sled_backend;
mod sqlite;
pub mod sync_state;

pub use api::{
    respread_offset, Amend, Claimed, Completion, ConflictCursor, ConflictFilter, DeadHeadPolicy,
    DeferredConflict, Durability, Enqueued, EpochMillis, ListFilter, LoggedConflict, OpState, Page,
    QuarantineNotice, QuarantinedRecord, QueueOptions, QueueStats, QueueStorage, Respread,
    StoredOperation, DEFAULT_CONFLICT_LOG_MAX_BYTES, MAX_PAYLOAD_LIMIT,
};
pub use api::{MAX_SYNC_STATE_BYTES, REMOTE_BODY_WITHHELD};
#[doc(hidden)]
pub use dir::InjectedFault;
pub use error::{Result, StorageError};
pub use ext::QueueStorageExt;
pub use journal::{AckedOp, Requeued, RetainAcked, ACKED_IDS_AGE, ACKED_IDS_KEPT};
pub use memory::MemoryStorage;
#[cfg(feature = "sled")]
pub use sled_backend::{SledOptions, SledStorage, DEFAULT_SLED_CACHE_CAPACITY};
pub use sqlite::{
    InspectedOp, SqliteInspector, SqliteStorage, StoreFiles, Verified, RELAXED_SYNC_INTERVAL,
};
pub use sync_state::SyncState;

#[cfg(test)]
mod object_safety {
    fn _queue_storage_is_object_safe(_: &dyn super::QueueStorage) {}
    fn _assert_send_sync<T: Send + Sync>() {}
    fn _backends_are_send_sync() {
        _assert_send_sync::<super::MemoryStorage>();
        _assert_send_sync::<super::SqliteStorage>();
    }
}
