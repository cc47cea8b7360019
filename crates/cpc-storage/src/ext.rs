//! What every store gets on top of the contract: `QueueStorageExt`'s
//! one-operation shorthands, and `Arc<S>` / `Box<S>` as stores.

use std::sync::Arc;

use cpc_core::{
    ConflictRecord, EntityKey, HlcTimestamp, Operation, OperationId, RemoteRecord, Resolution,
};

use crate::api::{
    Claimed, Completion, ConflictFilter, DeferredConflict, EpochMillis, ListFilter, LoggedConflict,
    Page, QuarantineNotice, QuarantinedRecord, QueueStats, QueueStorage, Respread, StoredOperation,
};
use crate::error::Result;

/// Shorthands over [`QueueStorage`] for every store (implemented for all):
/// one-operation forms of [`QueueStorage::complete`], and the conflict log
/// without cursors. Not part of the contract a backend implements, so a
/// wrapper forwards only the core methods.
pub trait QueueStorageExt: QueueStorage {
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
            fn enqueue(&self, op: Operation, now: EpochMillis) -> Result<u64> {
                (**self).enqueue(op, now)
            }
            fn enqueue_batch(&self, ops: Vec<Operation>, now: EpochMillis) -> Result<Vec<u64>> {
                (**self).enqueue_batch(ops, now)
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
            fn revive(&self, id: OperationId, now: EpochMillis) -> Result<bool> {
                (**self).revive(id, now)
            }
            fn drop_op(&self, id: OperationId) -> Result<bool> {
                (**self).drop_op(id)
            }
            fn drop_entity(&self, entity: &EntityKey) -> Result<u64> {
                (**self).drop_entity(entity)
            }
            fn pending(&self) -> Result<u64> {
                (**self).pending()
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
            fn settle(&self, id: OperationId, resolution: Resolution, now: EpochMillis) -> Result<bool> {
                (**self).settle(id, resolution, now)
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
            fn repair(&self, fixed: Operation, now: EpochMillis) -> Result<bool> {
                (**self).repair(fixed, now)
            }
            fn purge_quarantined(&self) -> Result<u64> {
                (**self).purge_quarantined()
            }
            fn load_clock_mark(&self) -> Result<Option<HlcTimestamp>> {
                (**self).load_clock_mark()
            }
            fn store_clock_mark(&self, mark: HlcTimestamp) -> Result<()> {
                (**self).store_clock_mark(mark)
            }
            fn flush(&self) -> Result<()> {
                (**self).flush()
            }
        }
    )*};
}

forward_queue_storage!(Arc, Box);
