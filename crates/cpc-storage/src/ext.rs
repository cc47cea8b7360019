//! What every store gets on top of the contract: `QueueStorageExt`'s
//! one-operation shorthands, and `Arc<S>` / `Box<S>` as stores.

use std::sync::Arc;

use cpc_core::{
    ConflictRecord, EntityKey, HlcTimestamp, Operation, OperationId, RemoteRecord, Resolution,
};

use crate::api::{
    Amend, Claimed, Completion, ConflictFilter, DeferredConflict, EpochMillis, ListFilter,
    LoggedConflict, Page, QuarantineNotice, QuarantinedRecord, QueueStats, QueueStorage, Respread,
    StoredOperation,
};
use crate::error::{Result, StorageError};

/// Shorthands over [`QueueStorage`] for every store (implemented for all):
/// one-operation forms of [`QueueStorage::enqueue_batch`],
/// [`QueueStorage::complete`] and [`QueueStorage::amend`], and the conflict
/// log without cursors. Not part of the contract a backend implements, so a
/// wrapper forwards only the core methods.
pub trait QueueStorageExt: QueueStorage {
    /// Stores one operation durably (per the configured durability);
    /// returns its `seq`.
    fn enqueue(&self, op: Operation, now: EpochMillis) -> Result<u64> {
        let seqs = self.enqueue_batch(vec![op], now)?;
        seqs.first().copied().ok_or(StorageError::Io {
            context: "enqueue",
            source: std::io::Error::other("the store returned no sequence number"),
        })
    }
    /// Number of undelivered operations (ready, in flight, waiting): the
    /// `pending` of [`QueueStorage::stats`].
    fn pending(&self) -> Result<u64> {
        Ok(self.stats()?.pending)
    }
    /// Brings a dead (or deferred) operation back as ready, attempts
    /// reset; `false` if unknown ([`Amend::Revive`]).
    fn revive(&self, id: OperationId, now: EpochMillis) -> Result<bool> {
        Ok(self.amend(Amend::Revive { id, now })? > 0)
    }
    /// Removes an operation in any state; `false` if unknown
    /// ([`Amend::Drop`]).
    fn drop_op(&self, id: OperationId) -> Result<bool> {
        Ok(self.amend(Amend::Drop(id))? > 0)
    }
    /// Removes every operation of an entity; returns how many
    /// ([`Amend::DropEntity`]).
    fn drop_entity(&self, entity: &EntityKey) -> Result<u64> {
        self.amend(Amend::DropEntity(entity.clone()))
    }
    /// Settles a deferred conflict; `false` if not deferred
    /// ([`Amend::Settle`]).
    fn settle(&self, id: OperationId, resolution: Resolution, now: EpochMillis) -> Result<bool> {
        Ok(self.amend(Amend::Settle {
            id,
            resolution,
            now,
        })? > 0)
    }
    /// Replaces a dead operation with `fixed` and makes it ready again;
    /// `false` if no dead operation has its id ([`Amend::Repair`]).
    fn repair(&self, fixed: Operation, now: EpochMillis) -> Result<bool> {
        Ok(self.amend(Amend::Repair { fixed, now })? > 0)
    }
    /// The persisted HLC high-water mark (`clock_mark(None)`).
    fn load_clock_mark(&self) -> Result<Option<HlcTimestamp>> {
        self.clock_mark(None)
    }
    /// Raises the persisted HLC high-water mark to `mark` (never lowers
    /// it).
    fn store_clock_mark(&self, mark: HlcTimestamp) -> Result<()> {
        self.clock_mark(Some(mark)).map(drop)
    }
    /// Deletes the quarantined records; returns how many
    /// ([`Amend::PurgeQuarantined`]).
    fn purge_quarantined(&self) -> Result<u64> {
        self.amend(Amend::PurgeQuarantined)
    }
    /// Acknowledges one delivered operation (`complete(&[Ack(id)], now)`).
    fn ack(&self, id: OperationId, now: EpochMillis) -> Result<()> {
        self.complete(&[Completion::Ack(id)], now)
    }
    /// Makes an operation claimable again at `at`, recording the error.
    fn schedule_retry(
        &self,
        id: OperationId,
        at: EpochMillis,
        error: &str,
        now: EpochMillis,
    ) -> Result<()> {
        let retry = Completion::Retry {
            id,
            at,
            error: error.to_owned(),
        };
        self.complete(&[retry], now)
    }
    /// Moves an operation to the dead letters.
    fn dead_letter(&self, id: OperationId, reason: &str, now: EpochMillis) -> Result<()> {
        let dead = Completion::Dead {
            id,
            reason: reason.to_owned(),
        };
        self.complete(&[dead], now)
    }
    /// Parks an operation as a deferred conflict with `remote`.
    fn defer(&self, id: OperationId, remote: RemoteRecord, now: EpochMillis) -> Result<()> {
        let reason = format!("conflict with remote version {}", remote.version);
        self.complete(&[Completion::Defer { id, remote, reason }], now)
    }
    /// Conflict log entries, newest first, without their cursors.
    fn conflict_log(&self, filter: &ConflictFilter) -> Result<Vec<ConflictRecord>> {
        Ok(self
            .conflict_entries(filter)?
            .into_iter()
            .map(|e| e.entry)
            .collect())
    }
}

impl<T: QueueStorage + ?Sized> QueueStorageExt for T {}

/// `Arc<S>` and `Box<S>` are stores too, as `Transport` and
/// `ConflictResolver` are: a handle shared with a test or a wrapper needs
/// no forwarding type of its own.
macro_rules! forward_queue_storage {
    ($($ptr:ident),*) => {$(
        impl<S: QueueStorage + ?Sized> QueueStorage for $ptr<S> {
            fn enqueue_batch(&self, ops: Vec<Operation>, now: EpochMillis) -> Result<Vec<u64>> {
                (**self).enqueue_batch(ops, now)
            }
            fn enqueue_coalesced(
                &self,
                ops: Vec<Operation>,
                now: EpochMillis,
                coalescer: Arc<dyn cpc_core::Coalescer>,
            ) -> Result<Vec<crate::api::Enqueued>> {
                (**self).enqueue_coalesced(ops, now, coalescer)
            }
            fn claim_ready(&self, now: EpochMillis, limit: usize) -> Result<Vec<Claimed>> {
                (**self).claim_ready(now, limit)
            }
            fn complete(&self, completions: &[Completion], now: EpochMillis) -> Result<()> {
                (**self).complete(completions, now)
            }
            fn max_payload(&self) -> usize {
                (**self).max_payload()
            }
            fn amend(&self, change: Amend) -> Result<u64> {
                (**self).amend(change)
            }
            fn stats(&self) -> Result<QueueStats> {
                (**self).stats()
            }
            fn list(&self, filter: &ListFilter) -> Result<Vec<StoredOperation>> {
                (**self).list(filter)
            }
            fn get(&self, id: OperationId) -> Result<Option<StoredOperation>> {
                (**self).get(id)
            }
            fn recover(&self, now: EpochMillis) -> Result<u64> {
                (**self).recover(now)
            }
            fn respread_waiting(
                &self,
                base: EpochMillis,
                spread_ms: u64,
                salt: u32,
                page: &Page,
            ) -> Result<Respread> {
                (**self).respread_waiting(base, spread_ms, salt, page)
            }
            fn next_wakeup(&self) -> Result<Option<EpochMillis>> {
                (**self).next_wakeup()
            }
            fn list_deferred(&self, page: &Page) -> Result<Vec<DeferredConflict>> {
                (**self).list_deferred(page)
            }
            fn log_conflict(&self, entry: &ConflictRecord) -> Result<u64> {
                (**self).log_conflict(entry)
            }
            fn conflict_entries(&self, filter: &ConflictFilter) -> Result<Vec<LoggedConflict>> {
                (**self).conflict_entries(filter)
            }
            fn list_quarantined(&self, page: &Page) -> Result<Vec<QuarantinedRecord>> {
                (**self).list_quarantined(page)
            }
            fn take_quarantine_notices(&self) -> Vec<QuarantineNotice> {
                (**self).take_quarantine_notices()
            }
            fn clock_mark(&self, raise_to: Option<HlcTimestamp>) -> Result<Option<HlcTimestamp>> {
                (**self).clock_mark(raise_to)
            }
            fn sync_state(&self, key: &str, set: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
                (**self).sync_state(key, set)
            }
            fn flush(&self) -> Result<()> {
                (**self).flush()
            }
            fn requeue_acked(
                &self,
                head_seq: u64,
                now: EpochMillis,
                limit: usize,
            ) -> Result<crate::Requeued> {
                (**self).requeue_acked(head_seq, now, limit)
            }
            fn acked(&self, page: &Page) -> Result<Vec<crate::AckedOp>> {
                (**self).acked(page)
            }
        }
    )*};
}

forward_queue_storage!(Arc, Box);
