//! `SyncEngine`: the handle applications hold.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cpc_core::TokioWallClock;
use cpc_core::{
    ConflictRecord, EntityKey, HlcTimestamp, HybridClock, Operation, OperationBuilder, OperationId,
    OperationKind, OperationPriority, Resolution, Transport,
};
use cpc_network::{NetworkMonitor, NetworkStatus};
use cpc_storage::{
    ConflictFilter, DeferredConflict, Enqueued, ListFilter, LoggedConflict, Page,
    QuarantinedRecord, QueueStats, QueueStorage, QueueStorageExt, StoredOperation,
};
use cpc_worker::{ProcessingSummary, SyncWorker, WorkerEvent};
use tokio::sync::broadcast;

use crate::builder::SyncEngineBuilder;
use crate::error::{invalid, Error, Result};

/// How far ahead of the last issued timestamp the persisted clock mark is
/// set. The mark is written at most once per this interval of submissions
/// (not on every submit), and a restart resumes the clock above it, so no
/// timestamp is ever issued twice or backwards; the price is that right
/// after a crash-restart within this window, timestamps may run up to this
/// far ahead of the wall clock.
pub const CLOCK_MARK_HEADROOM_MS: u64 = 1_000;

/// Number of entity lock stripes (direct sends and enqueues of one entity
/// are serialised through them).
const STRIPES: usize = 64;

/// The offline-first sync engine: a durable queue, a worker that drains it
/// to the remote, and the knobs in between.
///
/// Cheap to clone: clones share one engine. Build with
/// [`SyncEngine::builder`]. `submit` returns once the operation is stored
/// with the configured durability; the worker (after [`start`](Self::start))
/// sends it when the network allows.
///
/// Stop it with [`shutdown`](Self::shutdown). Dropping the last clone
/// without it still stops the worker, which then closes the queue (so the
/// same directory can be opened again), but cannot hand back the leases of
/// an in-flight batch: those operations are sent again once their lease
/// expires.
#[derive(Clone)]
pub struct SyncEngine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) storage: Arc<dyn QueueStorage>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) worker: SyncWorker,
    pub(crate) clock: TokioWallClock,
    pub(crate) hlc: Arc<HybridClock>,
    pub(crate) network: Option<NetworkMonitor>,
    pub(crate) max_payload: usize,
    /// Wall ms up to which a clock mark is already persisted.
    pub(crate) mark_ceiling: Mutex<u64>,
    pub(crate) stripes: Vec<tokio::sync::Mutex<()>>,
    pub(crate) shut: AtomicBool,
    /// The pull side, when the application gave a sink.
    pub(crate) puller: Option<Arc<cpc_worker::Puller>>,
    /// The running pull loop: its stop signal and task.
    pub(crate) pull_task: Mutex<Option<crate::pull::PullTask>>,
    /// The coalescers by collection, if any collection coalesces.
    pub(crate) coalescers: Option<Arc<crate::coalesce::ByCollection>>,
}

impl fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncEngine")
            .field("storage", &self.inner.storage)
            .field("worker", &self.inner.worker)
            .field("node", &self.inner.hlc.node())
            .field("max_payload", &self.inner.max_payload)
            .field("shut", &self.inner.shut.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl EngineInner {
    pub(crate) fn new_stripes() -> Vec<tokio::sync::Mutex<()>> {
        (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect()
    }

    pub(crate) fn stripe(&self, entity: &EntityKey) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        entity.hash(&mut h);
        // The modulo keeps the value below STRIPES, so it fits a usize.
        (h.finish() % STRIPES as u64) as usize
    }

    /// The clock mark to persist before storing or sending something stamped
    /// `ts`, if the persisted one does not cover it yet.
    pub(crate) fn mark_needed(&self, ts: HlcTimestamp) -> Option<HlcTimestamp> {
        let last = self.hlc.last().max(ts);
        let mut ceiling = self.mark_ceiling.lock().unwrap_or_else(|e| e.into_inner());
        if last.wall_ms < *ceiling {
            return None;
        }
        let wall = last.wall_ms.saturating_add(CLOCK_MARK_HEADROOM_MS);
        *ceiling = wall;
        Some(HlcTimestamp::new(wall, 0, self.hlc.node()))
    }

    /// Runs a storage call as configured ([`StorageCalls`], the worker's
    /// setting): on the blocking pool (it may fsync) or inline on this task.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn QueueStorage) -> cpc_storage::Result<T> + Send + 'static,
    {
        self.worker
            .config()
            .storage_calls
            .run(&self.storage, f)
            .await
            .map_err(Error::Task)?
            .map_err(Error::from)
    }

    fn check_open(&self) -> Result<()> {
        if self.shut.load(Ordering::SeqCst) {
            return Err(Error::ShutDown);
        }
        Ok(())
    }

    /// Stores operations (one atomic write), persisting the clock mark first
    /// when needed; the caller holds the entity stripes. Returns, per
    /// operation, the id that will be sent and what the store did.
    pub(crate) async fn enqueue(
        &self,
        ops: Vec<Operation>,
    ) -> Result<Vec<(OperationId, Enqueued)>> {
        self.check_open()?;
        for op in &ops {
            op.validate(self.max_payload).map_err(invalid)?;
        }
        let Some(newest) = ops.iter().map(|op| op.timestamp).max() else {
            return Err(Error::EmptyBatch);
        };
        let mark = self.mark_needed(newest);
        let ids: Vec<OperationId> = ops.iter().map(|op| op.id).collect();
        let now = self.clock.now_ms();
        let count = ops.len();
        let bytes: usize = ops.iter().map(|op| op.payload.len()).sum();
        let coalescer = self
            .coalescers
            .as_ref()
            .filter(|c| c.wanted(&ops))
            .map(|c| Arc::clone(c) as Arc<dyn cpc_core::Coalescer>);
        let entities: Vec<EntityKey> = match coalescer {
            Some(_) => ops.iter().map(|op| op.entity.clone()).collect(),
            None => Vec::new(),
        };
        let stored = |seqs: Vec<u64>| {
            seqs.into_iter()
                .map(|seq| Enqueued::Stored { seq })
                .collect()
        };
        let done = self
            .blocking(move |s| {
                // The mark goes first: a stored op must never carry a
                // timestamp above the persisted mark, or a restart could
                // issue it again.
                if let Some(mark) = mark {
                    s.store_clock_mark(mark)?;
                }
                if let Some(coalescer) = coalescer {
                    return s.enqueue_coalesced(ops, now, coalescer);
                }
                match <[Operation; 1]>::try_from(ops) {
                    Ok([op]) => s.enqueue(op, now).map(|seq| stored(vec![seq])),
                    Err(ops) => s.enqueue_batch(ops, now).map(stored),
                }
            })
            .await
            .inspect_err(|_| {
                // The mark may not have been written: write it next time.
                if mark.is_some() {
                    *self.mark_ceiling.lock().unwrap_or_else(|e| e.into_inner()) = 0;
                }
            })?;
        // What coalescing did (no entities without it).
        for ((id, entity), done) in ids.iter().zip(&entities).zip(&done) {
            self.worker.announce_coalesced(entity, *id, done);
        }
        tracing::debug!(target: "cpc_sync", count, bytes, "submitted");
        self.worker.notify();
        Ok(ids
            .into_iter()
            .zip(done)
            .map(|(id, done)| (to_send(id, &done), done))
            .collect())
    }
}

impl EngineInner {
    /// Stores `op`, whose direct send was tried and may have been applied,
    /// as possibly sent ([`Amend::Import`](cpc_storage::Amend::Import)):
    /// never coalesced into. Its timestamp is covered by the clock mark
    /// already (persisted before the send). The caller holds its stripe.
    pub(crate) async fn enqueue_possibly_sent(&self, op: Operation) -> Result<()> {
        self.check_open()?;
        op.validate(self.max_payload).map_err(invalid)?;
        let now = self.clock.now_ms();
        self.blocking(move |s| s.amend(cpc_storage::Amend::Import { ops: vec![op], now }))
            .await?;
        self.worker.notify();
        Ok(())
    }
}

/// The id that will be sent for a submitted operation `id`: its own, or
/// the queued operation's it was merged into.
fn to_send(id: OperationId, done: &Enqueued) -> OperationId {
    match *done {
        Enqueued::Merged { into, .. } => into,
        _ => id,
    }
}

impl SyncEngine {
    /// Starts configuring an engine.
    pub fn builder() -> SyncEngineBuilder {
        SyncEngineBuilder::new()
    }

    /// Starts the sync worker on the current tokio runtime (recovering
    /// expired leases first). Errors if it runs already.
    pub async fn start(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.worker.start().await?;
        self.start_pulling();
        Ok(())
    }

    /// Builds an operation stamped by the engine's hybrid logical clock
    /// (which follows tokio's clock, so simulations are deterministic).
    pub fn operation(&self, entity: EntityKey, kind: OperationKind) -> EngineOperation<'_> {
        EngineOperation {
            engine: self,
            builder: Operation::builder(entity, kind),
        }
    }

    /// Validates and stores `op` durably, then wakes the worker. Returns the
    /// id that will be sent once the configured durability is reached: the
    /// operation's own, or, when its collection coalesces
    /// ([`SyncEngineBuilder::coalesce`](crate::SyncEngineBuilder::coalesce))
    /// and it was merged into a queued operation, that operation's. When
    /// it cancelled a queued one (a create then a delete, neither sent),
    /// nothing will be sent and its own id is returned; the events
    /// [`WorkerEvent::Coalesced`] and [`WorkerEvent::CoalescedAway`] say
    /// which happened. A payload above the limit gives
    /// [`Error::PayloadTooLarge`] and stores nothing.
    pub async fn submit(&self, op: Operation) -> Result<OperationId> {
        let stripe = self.inner.stripe(&op.entity);
        let _entity = self.inner.stripes[stripe].lock().await;
        let ids = self.inner.enqueue(vec![op]).await?;
        ids.into_iter()
            .next()
            .map(|(id, _)| id)
            .ok_or(Error::EmptyBatch)
    }

    /// Validates every operation, then stores them all in one atomic write
    /// (all or nothing) and wakes the worker; no operation at all is
    /// [`Error::EmptyBatch`]. Returns one id per operation,
    /// as [`submit`](Self::submit) does (a later operation of the batch may
    /// coalesce with an earlier one of the same batch).
    pub async fn submit_batch(&self, ops: Vec<Operation>) -> Result<Vec<OperationId>> {
        let done = self.submit_batch_with_outcomes(ops).await?;
        Ok(done.into_iter().map(|(id, _)| id).collect())
    }

    /// [`submit_batch`](Self::submit_batch), answering for each operation
    /// the id that will be sent and what the store did with it: stored as
    /// itself, merged into a queued operation, or cancelled out with one
    /// (coalescing; see [`SyncEngineBuilder::coalesce`](crate::SyncEngineBuilder::coalesce)).
    /// For an application that keeps its own record of what is pending.
    pub async fn submit_batch_with_outcomes(
        &self,
        ops: Vec<Operation>,
    ) -> Result<Vec<(OperationId, Enqueued)>> {
        let mut stripes: Vec<usize> = ops.iter().map(|op| self.inner.stripe(&op.entity)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        // Locked in ascending order, so two batches cannot deadlock.
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.inner.stripes[s].lock().await);
        }
        self.inner.enqueue(ops).await
    }

    /// Operations not yet delivered (ready, in flight, waiting).
    pub async fn pending(&self) -> Result<u64> {
        self.inner.blocking(|s| s.pending()).await
    }

    /// Counts by state and priority (for "3 changes waiting to sync").
    pub async fn stats(&self) -> Result<QueueStats> {
        self.inner.blocking(|s| s.stats()).await
    }

    /// Stored operations matching `filter`, in submission order (page with
    /// `filter.limit` and `filter.after_seq` for a long queue).
    pub async fn list(&self, filter: ListFilter) -> Result<Vec<StoredOperation>> {
        self.inner.blocking(move |s| s.list(&filter)).await
    }

    /// Pending (not dead) operations of one entity, in submission order.
    pub async fn pending_for(&self, entity: &EntityKey) -> Result<Vec<StoredOperation>> {
        let filter = ListFilter {
            entity: Some(entity.clone()),
            dead: Some(false),
            limit: None,
            after_seq: None,
        };
        self.inner.blocking(move |s| s.list(&filter)).await
    }

    /// The dead letters, in submission order (all of them: for a queue that
    /// may hold many, read them with [`dead_letters_page`](Self::dead_letters_page)).
    pub async fn dead_letters(&self) -> Result<Vec<StoredOperation>> {
        let filter = ListFilter {
            dead: Some(true),
            ..ListFilter::default()
        };
        self.inner.blocking(move |s| s.list(&filter)).await
    }

    /// At most `limit` dead letters submitted after `after_seq` (the `seq`
    /// of the last item of the previous page; `None` for the first page),
    /// in submission order: the listing in bounded memory.
    pub async fn dead_letters_page(
        &self,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredOperation>> {
        let filter = ListFilter {
            dead: Some(true),
            limit: Some(limit),
            after_seq,
            ..ListFilter::default()
        };
        self.inner.blocking(move |s| s.list(&filter)).await
    }

    /// Brings a dead (or deferred) operation back, attempts reset; `false`
    /// if unknown.
    pub async fn revive(&self, id: OperationId) -> Result<bool> {
        let now = self.inner.clock.now_ms();
        let revived = self.inner.blocking(move |s| s.revive(id, now)).await?;
        self.changed();
        Ok(revived)
    }

    /// Replaces a dead operation, typically a quarantined one whose stored
    /// bytes were damaged ([`QuarantinedRecord::operation_id`] names it),
    /// with `fixed` (same id and entity) and makes it ready again in its
    /// place in its entity's order; `false` if no dead operation has the id.
    pub async fn repair(&self, fixed: Operation) -> Result<bool> {
        let now = self.inner.clock.now_ms();
        let repaired = self.inner.blocking(move |s| s.repair(fixed, now)).await?;
        self.changed();
        Ok(repaired)
    }

    /// Removes one operation in any state; `false` if unknown.
    pub async fn drop_operation(&self, id: OperationId) -> Result<bool> {
        let dropped = self.inner.blocking(move |s| s.drop_op(id)).await?;
        self.changed();
        Ok(dropped)
    }

    /// Removes every operation of an entity (the way out of a dead head);
    /// returns how many.
    pub async fn drop_entity(&self, entity: &EntityKey) -> Result<u64> {
        let entity = entity.clone();
        let dropped = self.inner.blocking(move |s| s.drop_entity(&entity)).await?;
        self.changed();
        Ok(dropped)
    }

    /// Conflicts parked for the application, in submission order (all of
    /// them: for a queue that may hold many, read them with
    /// [`deferred_page`](Self::deferred_page)).
    pub async fn deferred(&self) -> Result<Vec<DeferredConflict>> {
        self.inner.blocking(|s| s.list_deferred(&Page::ALL)).await
    }

    /// One [`Page`] of deferred conflicts, in submission order; the cursor
    /// of the next page is the last item's `seq`.
    pub async fn deferred_page(&self, page: Page) -> Result<Vec<DeferredConflict>> {
        self.inner.blocking(move |s| s.list_deferred(&page)).await
    }

    /// Settles a deferred conflict: `KeepLocal` / `Merged` resend,
    /// `KeepRemote` drops, `Defer` leaves it parked; `false` if `id` is not
    /// deferred.
    pub async fn settle(&self, id: OperationId, resolution: Resolution) -> Result<bool> {
        let now = self.inner.clock.now_ms();
        let settled = self
            .inner
            .blocking(move |s| s.settle(id, resolution, now))
            .await?;
        self.changed();
        Ok(settled)
    }

    /// Conflict log entries (newest first), each with the losing payload.
    pub async fn conflict_log(&self, filter: ConflictFilter) -> Result<Vec<ConflictRecord>> {
        self.inner.blocking(move |s| s.conflict_log(&filter)).await
    }

    /// Conflict log entries (newest first) with their cursors: set
    /// `filter.limit`, then pass the last entry's cursor as `filter.before`
    /// to read the next page.
    pub async fn conflict_log_page(&self, filter: ConflictFilter) -> Result<Vec<LoggedConflict>> {
        self.inner
            .blocking(move |s| s.conflict_entries(&filter))
            .await
    }

    /// Records quarantined because they could not be decoded (all of them;
    /// see [`quarantined_page`](Self::quarantined_page)).
    pub async fn quarantined(&self) -> Result<Vec<QuarantinedRecord>> {
        self.inner
            .blocking(|s| s.list_quarantined(&Page::ALL))
            .await
    }

    /// One [`Page`] of quarantined records, oldest first; the cursor of the
    /// next page is the last record's `n`.
    pub async fn quarantined_page(&self, page: Page) -> Result<Vec<QuarantinedRecord>> {
        self.inner
            .blocking(move |s| s.list_quarantined(&page))
            .await
    }

    /// A receiver of every worker event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.inner.worker.subscribe()
    }

    /// Resolves when nothing is left to send and nothing is in flight. What
    /// waits for the application does not count: dead letters, deferred
    /// conflicts, and the operations of their entities held behind them
    /// (`stats()` reports them as `dead`, `deferred` and `blocked`). Needs
    /// the worker started. See `SyncWorker::drained`.
    pub async fn drained(&self) -> Result<()> {
        self.inner.worker.drained().await?;
        Ok(())
    }

    /// Processes one batch now, whatever the network status says (see
    /// [`SyncWorker::process_once`]).
    pub async fn process_once(&self) -> Result<ProcessingSummary> {
        Ok(self.inner.worker.process_once().await?)
    }

    /// Resumes sending after [`WorkerEvent::AuthRequired`], once the
    /// transport's credentials are refreshed.
    pub fn resume(&self) {
        self.inner.worker.resume();
    }

    /// The network status (`Unknown` without a monitor).
    pub fn network_status(&self) -> NetworkStatus {
        self.inner
            .network
            .as_ref()
            .map_or(NetworkStatus::Unknown, NetworkMonitor::status)
    }

    /// The network monitor, if one was configured.
    pub fn network(&self) -> Option<&NetworkMonitor> {
        self.inner.network.as_ref()
    }

    /// The sync worker.
    pub fn worker(&self) -> &SyncWorker {
        &self.inner.worker
    }

    /// The queue storage.
    pub fn storage(&self) -> &Arc<dyn QueueStorage> {
        &self.inner.storage
    }

    /// The engine's hybrid logical clock.
    pub fn clock(&self) -> &Arc<HybridClock> {
        &self.inner.hlc
    }

    /// The engine's wall clock (tokio's clock mapped onto epoch ms).
    pub fn wall_clock(&self) -> TokioWallClock {
        self.inner.clock.clone()
    }

    /// Stops the worker (bounded by its shutdown timeout, leases returned),
    /// persists the clock mark and flushes storage. Later submissions fail
    /// with [`Error::ShutDown`]. Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.shut.store(true, Ordering::SeqCst);
        self.stop_pulling().await;
        let stopped = self.inner.worker.shutdown().await;
        let mark = self.inner.hlc.last();
        self.inner
            .blocking(move |s| {
                s.store_clock_mark(mark)?;
                s.flush()
            })
            .await?;
        stopped?;
        tracing::info!(target: "cpc_sync", "engine shut down");
        Ok(())
    }

    /// Tells the worker and `drained()` waiters that the queue changed
    /// outside a batch.
    fn changed(&self) {
        self.inner.worker.notify_changed();
    }
}

/// An operation being built by [`SyncEngine::operation`].
#[derive(Debug)]
pub struct EngineOperation<'a> {
    engine: &'a SyncEngine,
    builder: OperationBuilder,
}

impl EngineOperation<'_> {
    /// Sets the payload (opaque to the engine, never logged).
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.builder = self.builder.payload(payload);
        self
    }

    /// Sets the priority (default `Normal`).
    pub fn priority(mut self, priority: OperationPriority) -> Self {
        self.builder = self.builder.priority(priority);
        self
    }

    /// Sets the remote version the change was made on.
    pub fn base_version(mut self, version: u64) -> Self {
        self.builder = self.builder.base_version(version);
        self
    }

    /// Stamps the operation with the engine's clock.
    pub fn build(self) -> Result<Operation> {
        self.builder
            .build(&self.engine.inner.hlc)
            .map_err(Error::Clock)
    }

    /// Stamps and submits it.
    pub async fn submit(self) -> Result<OperationId> {
        let engine = self.engine;
        let op = self.build()?;
        engine.submit(op).await
    }
}
