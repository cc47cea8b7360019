//! A submit whose store write failed leaves nothing half done: the error
//! is `Error::Storage` (retryable), nothing is queued, and the clock mark
//! that may not have been written is written by the next submit, so no
//! stored operation is ever stamped above the persisted mark.

use std::error::Error as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use cpc_fault::{FaultPlan, RemoteOptions};
use cpc_sync::core::{Coalescer, ConflictRecord, HlcTimestamp, Operation, OperationId};
use cpc_sync::core::{EpochMillis, OperationPriority};
use cpc_sync::storage::{
    AckedOp, Amend, Claimed, Completion, ConflictFilter, DeferredConflict, Enqueued, ListFilter,
    LoggedConflict, MemoryStorage, Page, QuarantineNotice, QuarantinedRecord, QueueOptions,
    QueueStats, QueueStorage, QueueStorageExt, Requeued, Respread, Result, StorageError,
    StoredOperation,
};
use cpc_sync::Error;

use crate::support::*;

/// `MemoryStorage` whose next `fail_marks` clock-mark writes fail.
#[derive(Debug)]
struct FailingMarks {
    inner: MemoryStorage,
    fail_marks: AtomicU32,
}

impl QueueStorage for FailingMarks {
    fn enqueue_batch(&self, ops: Vec<Operation>, now: EpochMillis) -> Result<Vec<u64>> {
        self.inner.enqueue_batch(ops, now)
    }
    fn enqueue_coalesced(
        &self,
        ops: Vec<Operation>,
        now: EpochMillis,
        coalescer: Arc<dyn Coalescer>,
    ) -> Result<Vec<Enqueued>> {
        self.inner.enqueue_coalesced(ops, now, coalescer)
    }
    fn claim_ready(&self, now: EpochMillis, limit: usize) -> Result<Vec<Claimed>> {
        self.inner.claim_ready(now, limit)
    }
    fn complete(&self, completions: &[Completion], now: EpochMillis) -> Result<()> {
        self.inner.complete(completions, now)
    }
    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }
    fn amend(&self, change: Amend) -> Result<u64> {
        self.inner.amend(change)
    }
    fn stats(&self) -> Result<QueueStats> {
        self.inner.stats()
    }
    fn list(&self, filter: &ListFilter) -> Result<Vec<StoredOperation>> {
        self.inner.list(filter)
    }
    fn get(&self, id: OperationId) -> Result<Option<StoredOperation>> {
        self.inner.get(id)
    }
    fn recover(&self, now: EpochMillis) -> Result<u64> {
        self.inner.recover(now)
    }
    fn respread_waiting(
        &self,
        base: EpochMillis,
        spread_ms: u64,
        salt: u32,
        page: &Page,
    ) -> Result<Respread> {
        self.inner.respread_waiting(base, spread_ms, salt, page)
    }
    fn next_wakeup(&self) -> Result<Option<EpochMillis>> {
        self.inner.next_wakeup()
    }
    fn list_deferred(&self, page: &Page) -> Result<Vec<DeferredConflict>> {
        self.inner.list_deferred(page)
    }
    fn log_conflict(&self, entry: &ConflictRecord) -> Result<u64> {
        self.inner.log_conflict(entry)
    }
    fn conflict_entries(&self, filter: &ConflictFilter) -> Result<Vec<LoggedConflict>> {
        self.inner.conflict_entries(filter)
    }
    fn list_quarantined(&self, page: &Page) -> Result<Vec<QuarantinedRecord>> {
        self.inner.list_quarantined(page)
    }
    fn take_quarantine_notices(&self) -> Vec<QuarantineNotice> {
        self.inner.take_quarantine_notices()
    }
    fn clock_mark(&self, raise_to: Option<HlcTimestamp>) -> Result<Option<HlcTimestamp>> {
        let fail = raise_to.is_some()
            && self
                .fail_marks
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            return Err(StorageError::Io {
                context: "clock mark",
                source: std::io::Error::other("disk went away"),
            });
        }
        self.inner.clock_mark(raise_to)
    }
    fn sync_state(&self, key: &str, set: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        self.inner.sync_state(key, set)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn requeue_acked(&self, head_seq: u64, now: EpochMillis, limit: usize) -> Result<Requeued> {
        self.inner.requeue_acked(head_seq, now, limit)
    }
    fn acked(&self, page: &Page) -> Result<Vec<AckedOp>> {
        self.inner.acked(page)
    }
}

#[tokio::test(start_paused = true)]
async fn a_clock_mark_that_failed_to_persist_is_written_by_the_next_submit() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 61);
    let store = Arc::new(FailingMarks {
        inner: MemoryStorage::new(QueueOptions::default()),
        fail_marks: AtomicU32::new(1),
    });
    let engine = builder(&w)
        .storage(Arc::clone(&store) as Arc<dyn QueueStorage>)
        .build()
        .unwrap();

    let e = engine
        .submit(op(&engine, "a", OperationPriority::Normal, b"1"))
        .await
        .unwrap_err();
    match &e {
        Error::Storage(StorageError::Io { context, .. }) => assert_eq!(*context, "clock mark"),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.to_string(), "storage failure");
    assert!(e
        .source()
        .is_some_and(|s| s.to_string().contains("clock mark")));
    assert!(e.is_retryable());
    assert!(!e.is_user_recoverable());
    assert_eq!(engine.pending().await.unwrap(), 0, "nothing was stored");
    assert_eq!(store.load_clock_mark().unwrap(), None);

    // The same millisecond, well inside the mark's headroom: the mark is
    // still written, because the failed one may never have been.
    let second = op(&engine, "a", OperationPriority::Normal, b"2");
    let stamped = second.timestamp;
    engine.submit(second).await.unwrap();
    let mark = store.load_clock_mark().unwrap().expect("a persisted mark");
    assert!(mark >= stamped, "mark {mark} below a stored {stamped}");
    assert_eq!(engine.pending().await.unwrap(), 1);
}
