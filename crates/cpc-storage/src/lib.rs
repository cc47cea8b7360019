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
