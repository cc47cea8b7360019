//! Deterministic storage calls on a paused current-thread runtime.
//!
//! By default the harness asks the engine for inline storage calls
//! (`StorageCalls::Inline`): every call then runs on the runtime's one
//! thread and the gate has nothing to do. With `--storage-calls blocking`
//! the engine runs every storage call through `tokio::task::spawn_blocking`,
//! as it does in production.
//! On a paused clock that costs no simulated time (tokio inhibits auto-advance
//! while a blocking task is in flight), but the *moment* a finished call is
//! noticed by the runtime thread races with whatever else the runtime is
//! doing. With several devices sharing one remote, or a driver submitting
//! while the worker claims, that race changes which batch goes out first and
//! so the whole run.
//!
//! [`Gate`] removes the race without touching the engine:
//! - the runtime has one blocking thread, so blocking jobs run one at a time
//!   in the order the (deterministic) runtime spawned them;
//! - [`GatedStorage`] wraps the store, and after each call waits until the
//!   runtime thread is idle (parked, told by `on_thread_park`) with nothing in
//!   its global queue (the previous job's completion was consumed).
//!
//! So every completion reaches the runtime while it is idle, and the runtime
//! runs to idle again before the next one: the interleaving is a function of
//! the scenario alone. Calls made on the runtime thread itself are not gated.
//!
//! [`GatedStorage`] also simulates a crash: from a given simulated instant on,
//! every call fails with `StorageError::Poisoned` (the engine that owned it is
//! dead), and [`GatedStorage::take`] hands back the real store so it can be
//! closed and reopened by the next incarnation. Whether a call falls before or
//! after the crash instant depends only on simulated time, never on threads.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::ThreadId;
use std::time::Duration;

use cpc_sync::core::{ConflictRecord, HlcTimestamp, Operation, OperationId};
use cpc_sync::storage::{
    Amend, Claimed, Completion, ConflictFilter, DeferredConflict, EpochMillis, ListFilter,
    LoggedConflict, Page, QuarantinedRecord, QueueStats, QueueStorage, Respread, Result,
    StorageError, StoredOperation,
};
use tokio::time::Instant;

/// The idle signal of one runtime; see the module docs.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    runtime: OnceLock<(tokio::runtime::Handle, ThreadId)>,
}

#[derive(Debug, Default)]
struct GateState {
    /// The runtime thread is parked (nothing runnable).
    idle: bool,
    /// The runtime is gone: nobody waits any more.
    closed: bool,
}

/// How long a waiting job sleeps before it looks again, in case a wake-up
/// was missed (the queue depth is read outside the lock).
const RECHECK: Duration = Duration::from_millis(1);

impl Gate {
    /// A gate not yet attached to a runtime (calls pass through).
    pub fn new() -> Arc<Self> {
        Arc::new(Gate::default())
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // Two booleans: nothing a panic could leave half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches the runtime whose thread is `thread` (the one in `block_on`).
    pub fn attach(&self, handle: tokio::runtime::Handle, thread: ThreadId) {
        let _ = self.runtime.set((handle, thread));
    }

    /// `on_thread_park` hook: the runtime has nothing to run.
    pub fn on_park(&self) {
        self.lock().idle = true;
        self.changed.notify_all();
    }

    /// `on_thread_unpark` hook: the runtime is busy again.
    pub fn on_unpark(&self) {
        self.lock().idle = false;
    }

    /// Releases every waiter for good (before the runtime is dropped).
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Blocks the calling (blocking-pool) thread until the runtime is idle
    /// and has consumed every earlier completion.
    pub fn settle(&self) {
        let Some((handle, thread)) = self.runtime.get() else {
            return;
        };
        if std::thread::current().id() == *thread {
            return;
        }
        let metrics = handle.metrics();
        let mut state = self.lock();
        loop {
            if state.closed || (state.idle && metrics.global_queue_depth() == 0) {
                return;
            }
            state = match self.changed.wait_timeout(state, RECHECK) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// A store shared with the engine through the [`Gate`], with a crash fence.
pub struct GatedStorage {
    inner: RwLock<Option<Arc<dyn QueueStorage>>>,
    gate: Arc<Gate>,
    /// Calls at or after this instant fail as if the process had died.
    crash_at: Mutex<Option<Instant>>,
}

impl fmt::Debug for GatedStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedStorage")
            .field("open", &self.read().is_some())
            .finish_non_exhaustive()
    }
}

impl GatedStorage {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn QueueStorage>, gate: Arc<Gate>) -> Self {
        GatedStorage {
            inner: RwLock::new(Some(inner)),
            gate,
            crash_at: Mutex::new(None),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Arc<dyn QueueStorage>>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// From `at` on (simulated time), every call fails with `Poisoned`;
    /// `None` lifts the fence.
    pub fn set_fence(&self, at: Option<Instant>) {
        *self.crash_at.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Takes the real store out (every later call fails), so the caller can
    /// drop it and reopen the directory.
    pub fn take(&self) -> Option<Arc<dyn QueueStorage>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn call<T>(&self, f: impl FnOnce(&dyn QueueStorage) -> Result<T>) -> Result<T> {
        let crashed = self
            .crash_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| Instant::now() >= at);
        let out = if crashed {
            Err(StorageError::Poisoned)
        } else {
            match self.read().as_ref() {
                Some(store) => f(store.as_ref()),
                None => Err(StorageError::Poisoned),
            }
        };
        // The read lock is released: a crash on the runtime thread may take
        // the store while this thread waits for the runtime to go idle.
        self.gate.settle();
        out
    }
}

impl QueueStorage for GatedStorage {
    fn enqueue_batch(&self, ops: Vec<Operation>, now: EpochMillis) -> Result<Vec<u64>> {
        self.call(|s| s.enqueue_batch(ops, now))
    }
    fn enqueue_coalesced(
        &self,
        ops: Vec<Operation>,
        now: EpochMillis,
        coalescer: Arc<dyn cpc_sync::core::Coalescer>,
    ) -> Result<Vec<cpc_sync::storage::Enqueued>> {
        self.call(|s| s.enqueue_coalesced(ops, now, coalescer))
    }
    fn claim_ready(&self, now: EpochMillis, limit: usize) -> Result<Vec<Claimed>> {
        self.call(|s| s.claim_ready(now, limit))
    }
    fn complete(&self, completions: &[Completion], now: EpochMillis) -> Result<()> {
        self.call(|s| s.complete(completions, now))
    }
    fn max_payload(&self) -> usize {
        // A fixed option: nothing to gate or fence.
        self.read()
            .as_ref()
            .map_or(cpc_sync::core::DEFAULT_MAX_PAYLOAD, |s| s.max_payload())
    }
    fn amend(&self, change: Amend) -> Result<u64> {
        self.call(|s| s.amend(change))
    }
    fn stats(&self) -> Result<QueueStats> {
        self.call(|s| s.stats())
    }
    fn list(&self, filter: &ListFilter) -> Result<Vec<StoredOperation>> {
        self.call(|s| s.list(filter))
    }
    fn get(&self, id: OperationId) -> Result<Option<StoredOperation>> {
        self.call(|s| s.get(id))
    }
    fn recover(&self, now: EpochMillis) -> Result<u64> {
        self.call(|s| s.recover(now))
    }
    fn next_wakeup(&self) -> Result<Option<EpochMillis>> {
        self.call(|s| s.next_wakeup())
    }
    fn list_deferred(&self, page: &Page) -> Result<Vec<DeferredConflict>> {
        self.call(|s| s.list_deferred(page))
    }
    fn log_conflict(&self, entry: &ConflictRecord) -> Result<u64> {
        self.call(|s| s.log_conflict(entry))
    }
    fn conflict_entries(&self, filter: &ConflictFilter) -> Result<Vec<LoggedConflict>> {
        self.call(|s| s.conflict_entries(filter))
    }
    fn list_quarantined(&self, page: &Page) -> Result<Vec<QuarantinedRecord>> {
        self.call(|s| s.list_quarantined(page))
    }
    fn take_quarantine_notices(&self) -> Vec<cpc_sync::storage::QuarantineNotice> {
        // An in-memory list: nothing to gate or fence.
        self.read()
            .as_ref()
            .map_or_else(Vec::new, |s| s.take_quarantine_notices())
    }
    fn respread_waiting(
        &self,
        base: EpochMillis,
        spread_ms: u64,
        salt: u32,
        page: &Page,
    ) -> Result<Respread> {
        self.call(|s| s.respread_waiting(base, spread_ms, salt, page))
    }
    fn clock_mark(&self, raise_to: Option<HlcTimestamp>) -> Result<Option<HlcTimestamp>> {
        self.call(|s| s.clock_mark(raise_to))
    }
    fn sync_state(&self, key: &str, set: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        self.call(|s| s.sync_state(key, set))
    }
    fn flush(&self) -> Result<()> {
        self.call(|s| s.flush())
    }
    fn requeue_acked(
        &self,
        head_seq: u64,
        now: EpochMillis,
        limit: usize,
    ) -> Result<cpc_sync::storage::Requeued> {
        self.call(|s| s.requeue_acked(head_seq, now, limit))
    }
    fn acked(&self, page: &Page) -> Result<Vec<cpc_sync::storage::AckedOp>> {
        self.call(|s| s.acked(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_sync::core::{EntityKey, HybridClock, ManualWallClock, NodeId, OperationKind};
    use cpc_sync::storage::{MemoryStorage, QueueOptions};

    fn op(id: &str) -> Operation {
        let clock = HybridClock::with_wall_clock(NodeId(1), Arc::new(ManualWallClock::new(1_000)));
        Operation::builder(EntityKey::new("notes", id), OperationKind::Create)
            .payload(b"x".to_vec())
            .build(&clock)
            .expect("a valid operation")
    }

    fn poisoned<T: fmt::Debug>(r: Result<T>) -> bool {
        matches!(r, Err(StorageError::Poisoned))
    }

    #[tokio::test(start_paused = true)]
    async fn calls_reach_the_store_until_the_fence_and_none_after_a_take() {
        let inner: Arc<dyn QueueStorage> = Arc::new(MemoryStorage::new(QueueOptions::default()));
        let store = GatedStorage::new(Arc::clone(&inner), Gate::new());
        assert_eq!(format!("{store:?}"), "GatedStorage { open: true, .. }");
        let (a, b) = (op("a"), op("b"));
        store
            .enqueue_batch(vec![a.clone(), b.clone()], 1_000)
            .expect("stored");
        // Each call answers what the wrapped store answers.
        assert_eq!(store.amend(Amend::Drop(a.id)).expect("amended"), 1);
        assert!(inner.get(a.id).expect("read").is_none());
        assert!(store.list_deferred(&Page::ALL).expect("listed").is_empty());
        assert!(store
            .list_quarantined(&Page::ALL)
            .expect("listed")
            .is_empty());
        assert!(store.acked(&Page::ALL).expect("listed").is_empty());
        assert_eq!(store.max_payload(), inner.max_payload());

        // From the fence on, every call fails as if the process had died.
        store.set_fence(Some(Instant::now() + Duration::from_secs(1)));
        assert!(store.get(b.id).expect("before the fence").is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(poisoned(store.get(b.id)));
        assert!(poisoned(store.amend(Amend::Drop(b.id))));
        store.set_fence(None);
        assert!(store.get(b.id).expect("fence lifted").is_some());

        // Once the real store is taken, nothing reaches it.
        let taken = store.take().expect("the store");
        assert!(Arc::ptr_eq(&taken, &inner));
        assert!(poisoned(store.stats()));
        assert!(poisoned(store.list_deferred(&Page::ALL)));
        assert_eq!(format!("{store:?}"), "GatedStorage { open: false, .. }");
        assert_eq!(store.max_payload(), cpc_sync::core::DEFAULT_MAX_PAYLOAD);
        assert!(inner.get(b.id).expect("still there").is_some());
    }
}
