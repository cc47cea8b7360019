//! The sync worker: claims batches, pushes them, applies the outcomes.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cpc_conflict::{resolve_and_record, ConflictResolver, LastWriterWins};
use cpc_core::{
    match_outcomes, ConflictRecord, HybridClock, Operation, OperationId, PushOutcome, Resolution,
    Transport, TransportError,
};
use cpc_network::{NetworkMonitor, NetworkStatus};
use cpc_storage::{Claimed, Completion, EpochMillis, Page, QueueStorage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::clock::TokioWallClock;
use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};
use crate::event::WorkerEvent;
use crate::net::NetworkGate;
use crate::policy::{settle_breaker, FailedAttempt, RetryPolicy};
use crate::split::{may_be_caused_by_an_operation, Suspects};
use crate::streaks::ConflictStreaks;
use crate::summary::ProcessingSummary;
use crate::unwind::{catch, CatchUnwind};
use cpc_backoff::RetryCause;
use cpc_core::error_chain;

/// Drains a [`QueueStorage`] to a remote through a [`Transport`].
///
/// Cheap to clone: clones share one worker. Build it with
/// [`SyncWorker::builder`]; then either drive it by hand with
/// [`process_once`](Self::process_once) or [`start`](Self::start) its loop
/// on the current tokio runtime and stop it with
/// [`shutdown`](Self::shutdown).
///
/// The loop never busy-waits: it sleeps until the network allows sending and
/// a submission arrives ([`notify`](Self::notify)), until the store's
/// earliest [`next_wakeup`](QueueStorage::next_wakeup) falls due, until the
/// circuit breaker half-opens, the network changes, or shutdown is asked.
/// After every failure the next wake-up comes from the store, so a queue
/// that still holds work always has a wake-up scheduled.
///
/// Dropping the last handle asks a running loop to stop, as `shutdown`
/// does, so it lets go of the store (and the queue directory's lock)
/// instead of running on unowned. Unlike `shutdown` it cannot wait: the
/// leases of batches the loop abandons are not handed back (the store's
/// recovery returns them once they expire) and the store is not flushed.
/// Call `shutdown` for a clean stop.
#[derive(Clone)]
pub struct SyncWorker {
    inner: Arc<Inner>,
    /// Shared by the handles only, never by the loop: dropped with the
    /// last handle.
    _stop_on_drop: Arc<StopOnDrop>,
}

/// Asks the loop to stop when the last [`SyncWorker`] handle goes.
struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.shutdown.send_replace(true);
    }
}

impl fmt::Debug for SyncWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncWorker")
            .field("config", &self.inner.config)
            .field("paused", &self.inner.paused.load(Ordering::SeqCst))
            .field("in_flight", &self.inner.in_flight.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

/// Builds a [`SyncWorker`]; see [`SyncWorker::builder`].
pub struct SyncWorkerBuilder {
    storage: Arc<dyn QueueStorage>,
    transport: Arc<dyn Transport>,
    resolver: Arc<dyn ConflictResolver>,
    retry: RetryPolicy,
    network: Option<NetworkMonitor>,
    clock: Option<TokioWallClock>,
    hlc: Option<Arc<HybridClock>>,
    config: WorkerConfig,
}

impl fmt::Debug for SyncWorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncWorkerBuilder")
            .field("storage", &self.storage)
            .field("resolver", &self.resolver)
            .field("retry", &self.retry)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SyncWorkerBuilder {
    /// Sets the conflict resolver (default [`LastWriterWins`]).
    pub fn resolver(mut self, resolver: Arc<dyn ConflictResolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Sets the retry policy: backoff strategy, shared retry budget and
    /// circuit breaker (default [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the network monitor the worker consults and reports to.
    pub fn network(mut self, monitor: NetworkMonitor) -> Self {
        self.network = Some(monitor);
        self
    }

    /// Sets the clock (default: [`TokioWallClock::new`] at build time).
    pub fn clock(mut self, clock: TokioWallClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Lets the worker merge remote timestamps seen in conflicts into the
    /// engine's hybrid logical clock, so later local edits order after them.
    pub fn hybrid_clock(mut self, hlc: Arc<HybridClock>) -> Self {
        self.hlc = Some(hlc);
        self
    }

    /// Sets the options.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Builds the worker (not started).
    pub fn build(self) -> Result<SyncWorker> {
        self.config.validate()?;
        let (events, _) = broadcast::channel(self.config.event_capacity);
        let (shutdown, _) = watch::channel(false);
        let (progress, _) = watch::channel(0u64);
        let rng = match self.config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let network = NetworkGate::new(self.network);
        let inner = Arc::new(Inner {
            storage: self.storage,
            transport: self.transport,
            resolver: self.resolver,
            retry: self.retry,
            network,
            clock: self.clock.unwrap_or_default(),
            hlc: self.hlc,
            config: self.config,
            events,
            wake: Notify::new(),
            paused: AtomicBool::new(false),
            shutdown,
            progress,
            in_flight: AtomicUsize::new(0),
            rng: Mutex::new(rng),
            leases: Mutex::new(HashMap::new()),
            orphans: Mutex::new(Vec::new()),
            suspects: Mutex::new(Suspects::default()),
            streaks: Mutex::new(ConflictStreaks::default()),
            failure_streak: AtomicU32::new(0),
            batch_seq: AtomicU64::new(0),
            task: tokio::sync::Mutex::new(RunState::Idle),
        });
        Ok(SyncWorker {
            _stop_on_drop: Arc::new(StopOnDrop(Arc::clone(&inner))),
            inner,
        })
    }
}

enum RunState {
    Idle,
    Running(JoinHandle<()>),
    ShutDown,
}

struct Inner {
    storage: Arc<dyn QueueStorage>,
    transport: Arc<dyn Transport>,
    resolver: Arc<dyn ConflictResolver>,
    retry: RetryPolicy,
    network: NetworkGate,
    clock: TokioWallClock,
    hlc: Option<Arc<HybridClock>>,
    config: WorkerConfig,
    events: broadcast::Sender<WorkerEvent>,
    /// Submissions and `resume` wake the loop; a stored permit means a
    /// notification sent while the loop was busy is not lost.
    wake: Notify,
    /// Sending is paused until `resume` (credentials refused).
    paused: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Bumped after every batch is completed in storage (drained() waits on it).
    progress: watch::Sender<u64>,
    /// Operations claimed and not yet completed in storage.
    in_flight: AtomicUsize,
    rng: Mutex<StdRng>,
    /// Ids of every claimed batch not yet completed, so shutdown can give
    /// back the leases of batches it abandons.
    leases: Mutex<HashMap<u64, Vec<OperationId>>>,
    /// Claims of batches whose task ended without completing them (a
    /// panic past every guard, an abort): given back by the loop at once
    /// instead of waiting for their leases to expire.
    orphans: Mutex<Vec<OperationId>>,
    /// Operations of batches that failed in a way one of them may have
    /// caused; their batches are split (see `split`).
    suspects: Mutex<Suspects>,
    /// Conflicts in a row per operation (see `streaks`).
    streaks: Mutex<ConflictStreaks>,
    /// Pushes that failed as a whole in a row (reset by any answer): paces
    /// the retries of failures that say nothing about the operations.
    failure_streak: AtomicU32,
    batch_seq: AtomicU64,
    task: tokio::sync::Mutex<RunState>,
}

impl SyncWorker {
    /// Starts building a worker over `storage` and `transport`.
    pub fn builder(
        storage: Arc<dyn QueueStorage>,
        transport: Arc<dyn Transport>,
    ) -> SyncWorkerBuilder {
        SyncWorkerBuilder {
            storage,
            transport,
            resolver: Arc::new(LastWriterWins),
            retry: RetryPolicy::default(),
            network: None,
            clock: None,
            hlc: None,
            config: WorkerConfig::default(),
        }
    }

    /// The worker's options.
    pub fn config(&self) -> &WorkerConfig {
        &self.inner.config
    }

    /// The worker's clock (tokio time mapped onto epoch ms).
    pub fn clock(&self) -> TokioWallClock {
        self.inner.clock.clone()
    }

    /// The store the worker drains.
    pub fn storage(&self) -> &Arc<dyn QueueStorage> {
        &self.inner.storage
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.inner.events.subscribe()
    }

    /// Tells the loop something was submitted (cheap; call after every enqueue).
    pub fn notify(&self) {
        self.inner.wake.notify_one();
    }

    /// Tells the loop and [`drained`](Self::drained) waiters that the queue
    /// changed outside a batch (revive, settle, drop).
    pub fn notify_changed(&self) {
        self.inner.progress.send_modify(|p| *p += 1);
        self.inner.wake.notify_one();
    }

    /// True while sending is paused for credentials.
    pub fn is_paused(&self) -> bool {
        self.inner.paused.load(Ordering::SeqCst)
    }

    /// Resumes sending after [`WorkerEvent::AuthRequired`], once the
    /// application refreshed the transport's credentials.
    pub fn resume(&self) {
        if self.inner.paused.swap(false, Ordering::SeqCst) {
            tracing::info!(target: "cpc_worker", "sending resumed");
            self.inner.emit(WorkerEvent::Resumed);
        }
        self.inner.wake.notify_one();
    }

    /// Operations claimed and not yet completed in storage.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// True while the loop runs.
    pub async fn is_running(&self) -> bool {
        matches!(&*self.inner.task.lock().await, RunState::Running(h) if !h.is_finished())
    }

    /// Resolves when nothing is left that the worker could send and nothing
    /// is in flight: every pending operation is delivered, or waits behind
    /// its entity's dead (under `BlockEntity`) or deferred head for the
    /// application to act (`QueueStats::blocked`). Dead letters, deferred
    /// conflicts and the operations they hold back stay in the store;
    /// [`QueueStorage::stats`] reports them apart (`dead`, `deferred`,
    /// `blocked`). Operations waiting for a retry are sendable: `drained`
    /// waits for them. Needs the loop running (or someone calling
    /// `process_once`) to make progress.
    pub async fn drained(&self) -> Result<()> {
        let mut progress = self.inner.progress.subscribe();
        loop {
            progress.borrow_and_update();
            // The in-flight count is read after the store: a batch whose
            // acknowledgement the store already holds still counts until
            // its task has unregistered it (and bumped `progress`), so
            // `drained` never resolves with a batch between the two.
            if self.inner.sendable().await? == 0 && self.in_flight() == 0 {
                return Ok(());
            }
            if progress.changed().await.is_err() {
                return Err(WorkerError::ShutDown);
            }
        }
    }

    /// Claims one batch (if sending is not paused and the circuit breaker
    /// admits a push), pushes it and applies the outcomes. Does not consult
    /// the network status: the caller asked to try now. Returns an empty
    /// summary when nothing was claimable.
    pub async fn process_once(&self) -> Result<ProcessingSummary> {
        let inner = &self.inner;
        inner.release_orphans().await?;
        if inner.paused.load(Ordering::SeqCst) || inner.retry.may_claim(0).is_err() {
            return Ok(ProcessingSummary::default());
        }
        let claimed = inner.claim().await?;
        if claimed.is_empty() {
            return Ok(ProcessingSummary::default());
        }
        let batch = inner.register(&claimed);
        let summary = Inner::process_batch(inner, batch, claimed).await?;
        inner.after_batch(&summary).await;
        Ok(summary)
    }

    /// Starts the loop on the current tokio runtime. Recovers expired leases
    /// first. Errors if it is already running or was shut down.
    pub async fn start(&self) -> Result<()> {
        let mut task = self.inner.task.lock().await;
        match &*task {
            RunState::Running(h) if !h.is_finished() => return Err(WorkerError::AlreadyRunning),
            RunState::ShutDown => return Err(WorkerError::ShutDown),
            _ => {}
        }
        let now = self.inner.clock.now_ms();
        let recovered = self.inner.call("recover", move |s| s.recover(now)).await?;
        if recovered > 0 {
            tracing::info!(target: "cpc_worker", recovered, "expired leases returned to ready");
        }
        let inner = Arc::clone(&self.inner);
        *task = RunState::Running(tokio::spawn(run(inner)));
        Ok(())
    }

    /// Stops the loop: no new batch is claimed; in-flight batches get up to
    /// `shutdown_timeout` to finish, after which they are abandoned and
    /// their leases returned (the operations are sent again later: the
    /// remote dedupes by id). Flushes storage. Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        let mut task = self.inner.task.lock().await;
        let state = std::mem::replace(&mut *task, RunState::ShutDown);
        self.inner.shutdown.send_replace(true);
        if let RunState::Running(handle) = state {
            // The loop itself applies the timeout to its in-flight batches,
            // so joining it is bounded.
            if let Err(e) = handle.await {
                tracing::error!(target: "cpc_worker", error = %e, "worker task failed");
            }
        }
        let released = self.inner.release_abandoned().await;
        self.inner.call("flush", |s| s.flush()).await?;
        released
    }
}

/// Orphans its batch when dropped before the batch was completed.
struct BatchGuard<'a> {
    inner: &'a Inner,
    batch: u64,
}

impl Drop for BatchGuard<'_> {
    fn drop(&mut self) {
        self.inner.orphan(self.batch);
    }
}

/// How one operation's attempt failed, for [`Inner::retry_or_bury`].
struct Failure {
    /// Server hint, a floor for the delay.
    hint: Option<Duration>,
    /// What the retry costs from the budget.
    cause: RetryCause,
    /// What went wrong (no payload data).
    error: String,
    /// Whether the failure is the operation's own: it counts towards the
    /// dead letter. Otherwise it is postponed, never given up on.
    counted: bool,
    /// Whole-batch failures in a row, pacing uncounted failures.
    streak: u32,
}

/// What the worker keeps of a claim beside the operation.
struct OpMeta {
    attempt: u32,
    priority: cpc_core::OperationPriority,
    enqueued_at: EpochMillis,
}

/// The result of one pushed batch.
struct BatchOutcome {
    completions: Vec<Completion>,
    conflicts: Vec<ConflictRecord>,
    events: Vec<WorkerEvent>,
    /// Whether anyone listens: without a subscriber the per-operation
    /// events are not built at all (they would be dropped by `emit`).
    observed: bool,
    /// Operations the remote answered for good (retry permits to refund).
    delivered: Vec<OperationId>,
    /// How many of `delivered` were refunded already.
    refunded: usize,
    summary: ProcessingSummary,
    pause: bool,
}

impl BatchOutcome {
    fn event(&mut self, event: impl FnOnce() -> WorkerEvent) {
        if self.observed {
            self.events.push(event());
        }
    }
}

impl Inner {
    fn emit(&self, event: WorkerEvent) {
        // No subscriber is fine: events are advisory.
        let _ = self.events.send(event);
    }

    fn rng(&self) -> MutexGuard<'_, StdRng> {
        // The RNG has no invariant a panic could break.
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease_map(&self) -> MutexGuard<'_, HashMap<u64, Vec<OperationId>>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a storage call as configured ([`StorageCalls`](crate::config::StorageCalls)): on the
    /// blocking pool (it may fsync) or inline on this task.
    async fn call<T, F>(&self, context: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn QueueStorage) -> cpc_storage::Result<T> + Send + 'static,
    {
        self.config
            .storage_calls
            .run(&self.storage, f)
            .await
            .map_err(|source| WorkerError::Task { context, source })?
            .map_err(WorkerError::storage(context))
    }

    /// Pending operations the worker could still send (not held behind a
    /// dead or deferred head).
    async fn sendable(&self) -> Result<u64> {
        let stats = self.call("stats", |s| s.stats()).await?;
        Ok(stats.pending.saturating_sub(stats.blocked))
    }

    /// Claims a batch, cut where a suspect's limit says (see `split`): the
    /// operations past the cut are given back at once, uncounted.
    async fn claim(&self) -> Result<Vec<Claimed>> {
        let now = self.clock.now_ms();
        let limit = self.config.batch_size;
        let claimed = self.call("claim", move |s| s.claim_ready(now, limit)).await;
        self.report_quarantines();
        let mut claimed = claimed?;
        let keep = {
            let ids: Vec<OperationId> = claimed.iter().map(|c| c.op.id).collect();
            self.suspects().allowed_prefix(&ids)
        };
        if keep < claimed.len() {
            let back: Vec<Completion> = claimed
                .drain(keep..)
                .map(|c| Completion::Release(c.op.id))
                .collect();
            tracing::debug!(target: "cpc_worker", kept = keep, released = back.len(), "batch cut to isolate a failing operation");
            self.call("release", move |s| s.complete(&back, now))
                .await?;
        }
        Ok(claimed)
    }

    /// Raises an event for each operation the store quarantined since the
    /// last look (an in-memory list: no I/O).
    fn report_quarantines(&self) {
        for notice in self.storage.take_quarantine_notices() {
            tracing::warn!(target: "cpc_worker", op_id = ?notice.id, reason = %notice.reason, "operation quarantined; its entity waits for the application");
            self.emit(WorkerEvent::OperationQuarantined {
                id: notice.id,
                entity: notice.entity,
                reason: notice.reason,
            });
        }
    }

    fn streaks(&self) -> MutexGuard<'_, ConflictStreaks> {
        // Plain bookkeeping: a poisoned lock leaves nothing inconsistent.
        self.streaks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn suspects(&self) -> MutexGuard<'_, Suspects> {
        // Plain bookkeeping: a poisoned lock leaves nothing inconsistent.
        self.suspects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn orphan_list(&self) -> MutexGuard<'_, Vec<OperationId>> {
        self.orphans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives back, uncounted, the claims of batches whose task ended
    /// without completing them (see [`BatchGuard`]).
    async fn release_orphans(&self) -> Result<()> {
        let ids = std::mem::take(&mut *self.orphan_list());
        if ids.is_empty() {
            return Ok(());
        }
        let count = ids.len();
        let completions: Vec<Completion> = ids.into_iter().map(Completion::Release).collect();
        let now = self.clock.now_ms();
        let written = self
            .call("release", move |s| s.complete(&completions, now))
            .await;
        if let Err(e) = &written {
            // Not lost: their leases expire and recovery returns them.
            tracing::error!(target: "cpc_worker", error = %e, released = count, "could not give back orphaned claims");
        } else {
            tracing::warn!(target: "cpc_worker", released = count, "claims of an unfinished batch given back");
        }
        self.progress.send_modify(|p| *p += 1);
        written
    }

    /// Records a claimed batch as in flight; returns its number.
    fn register(&self, claimed: &[Claimed]) -> u64 {
        let batch = self.batch_seq.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(claimed.len(), Ordering::SeqCst);
        self.lease_map()
            .insert(batch, claimed.iter().map(|c| c.op.id).collect());
        batch
    }

    fn unregister(&self, batch: u64) {
        if let Some(ids) = self.lease_map().remove(&batch) {
            self.in_flight.fetch_sub(ids.len(), Ordering::SeqCst);
        }
    }

    /// A batch's task ended without completing it: its claims become
    /// orphans, given back by the loop (or the next `process_once`).
    fn orphan(&self, batch: u64) {
        let Some(ids) = self.lease_map().remove(&batch) else {
            return;
        };
        self.in_flight.fetch_sub(ids.len(), Ordering::SeqCst);
        let size = ids.len();
        self.orphan_list().extend(ids);
        if std::thread::panicking() {
            tracing::error!(target: "cpc_worker", batch, size, "batch task panicked; its claims are given back");
            self.emit(WorkerEvent::BatchFailed {
                size,
                error: TransportError::Panicked,
            });
        }
        self.progress.send_modify(|p| *p += 1);
        self.wake.notify_one();
    }

    /// Gives back the leases of batches abandoned at shutdown.
    async fn release_abandoned(&self) -> Result<()> {
        let mut ids: Vec<OperationId> = {
            let mut map = self.lease_map();
            map.drain().flat_map(|(_, ids)| ids).collect()
        };
        ids.append(&mut self.orphan_list());
        self.in_flight.store(0, Ordering::SeqCst);
        if ids.is_empty() {
            return Ok(());
        }
        let count = ids.len();
        let completions: Vec<Completion> = ids.into_iter().map(Completion::Release).collect();
        let now = self.clock.now_ms();
        self.call("release", move |s| s.complete(&completions, now))
            .await?;
        tracing::info!(target: "cpc_worker", released = count, "abandoned leases returned");
        self.progress.send_modify(|p| *p += 1);
        Ok(())
    }

    /// Pushes one claimed batch and applies the outcomes in one storage write.
    async fn process_batch(
        self: &Arc<Self>,
        batch: u64,
        claimed: Vec<Claimed>,
    ) -> Result<ProcessingSummary> {
        // Every path out of here unregisters the batch; should one not (a
        // panic in our own code, an abort), the guard orphans it.
        let _guard = BatchGuard { inner: self, batch };
        let started = Instant::now();
        let mut meta = Vec::with_capacity(claimed.len());
        let mut ops = Vec::with_capacity(claimed.len());
        for c in claimed {
            meta.push(OpMeta {
                attempt: c.attempt,
                priority: c.effective_priority,
                enqueued_at: c.enqueued_at,
            });
            ops.push(c.op);
        }

        let permit = match self.retry.admit_push() {
            Ok(permit) => permit,
            Err(retry_after) => {
                // The breaker opened between the claim and now: give the
                // claims back uncounted.
                tracing::debug!(target: "cpc_worker", batch, retry_after_ms = millis(retry_after), "breaker refused the push; claims released");
                return self.release_batch(batch, &ops).await;
            }
        };
        let push = CatchUnwind::new(self.transport.push(&ops));
        let pushed = match tokio::time::timeout(self.config.push_timeout, push).await {
            Err(_) => Err(TransportError::Timeout),
            Ok(Err(message)) => {
                tracing::error!(target: "cpc_worker", batch, size = ops.len(), "transport panicked; the batch failed");
                tracing::debug!(target: "cpc_worker", batch, message = %message, "transport panic message");
                Err(TransportError::Panicked)
            }
            Ok(Ok(answer)) => answer.and_then(|answer| match_outcomes(&ops, answer)),
        };
        // Text from the remote (or the transport) is logged and stored:
        // bounded first.
        let pushed = pushed.map_err(bounded_error);
        let remote_failed = matches!(&pushed, Err(e) if !matches!(e, TransportError::Unauthorized));
        settle_breaker(permit, remote_failed);

        let now = self.clock.now_ms();
        let mut outcome = self.plan(&ops, &meta, pushed, now);
        outcome.summary.elapsed = started.elapsed();

        let completions = std::mem::take(&mut outcome.completions);
        let conflicts = std::mem::take(&mut outcome.conflicts);
        // Conflict entries are written before the completions: a crash in
        // between then logs a conflict twice (the op is resent and conflicts
        // again) instead of dropping a losing payload unrecorded.
        let written = self
            .call("complete", move |s| {
                let mut pruned = 0;
                for entry in &conflicts {
                    pruned += s.log_conflict(entry)?;
                }
                s.complete(&completions, now)?;
                Ok(pruned)
            })
            .await;
        self.report_quarantines();
        // Whether or not the write succeeded the batch is no longer ours: on
        // failure its leases expire and the store hands the ops out again.
        self.unregister(batch);
        self.progress.send_modify(|p| *p += 1);
        let pruned = written?;
        if pruned > 0 {
            tracing::info!(target: "cpc_worker", pruned, "conflict log full: oldest entries dropped");
            self.emit(WorkerEvent::ConflictLogPruned { dropped: pruned });
        }

        if outcome.pause {
            self.paused.store(true, Ordering::SeqCst);
        }
        for event in outcome.events {
            self.emit(event);
        }
        let s = &outcome.summary;
        tracing::info!(
            target: "cpc_worker",
            batch,
            attempted = s.attempted,
            applied = s.applied,
            already_applied = s.already_applied,
            retried = s.retried,
            conflicts = s.conflicts.total(),
            dead_lettered = s.dead_lettered,
            released = s.released,
            critical = s.by_priority[3],
            high = s.by_priority[2],
            normal = s.by_priority[1],
            background = s.by_priority[0],
            batch_error = s.batch_error.as_ref().map(TransportError::name),
            elapsed_us = u64::try_from(s.elapsed.as_micros()).unwrap_or(u64::MAX),
            "batch processed"
        );
        Ok(outcome.summary)
    }

    /// Gives a claimed batch back without sending it or counting the attempt.
    async fn release_batch(&self, batch: u64, ops: &[Operation]) -> Result<ProcessingSummary> {
        let completions: Vec<Completion> =
            ops.iter().map(|op| Completion::Release(op.id)).collect();
        let now = self.clock.now_ms();
        let written = self
            .call("release", move |s| s.complete(&completions, now))
            .await;
        self.unregister(batch);
        self.progress.send_modify(|p| *p += 1);
        written?;
        Ok(ProcessingSummary {
            released: ops.len(),
            ..ProcessingSummary::default()
        })
    }

    /// Maps a push result onto completions, conflict log entries and events.
    fn plan(
        &self,
        ops: &[Operation],
        meta: &[OpMeta],
        pushed: std::result::Result<Vec<PushOutcome>, TransportError>,
        now: EpochMillis,
    ) -> BatchOutcome {
        let observed = self.events.receiver_count() > 0;
        let mut out = BatchOutcome {
            completions: Vec::with_capacity(ops.len()),
            conflicts: Vec::new(),
            events: if observed {
                Vec::with_capacity(ops.len())
            } else {
                Vec::new()
            },
            observed,
            delivered: Vec::with_capacity(ops.len()),
            refunded: 0,
            summary: ProcessingSummary {
                attempted: ops.len(),
                ..ProcessingSummary::default()
            },
            pause: false,
        };
        for m in meta {
            out.summary.by_priority[usize::from(m.priority.rank())] += 1;
        }
        match pushed {
            Ok(outcomes) => {
                self.network.report_success();
                self.failure_streak.store(0, Ordering::SeqCst);
                self.suspects().cleared(ops.iter().map(|op| op.id));
                for ((op, m), outcome) in ops.iter().zip(meta).zip(outcomes) {
                    if !matches!(outcome, PushOutcome::Conflict { .. }) {
                        self.streaks().ended(op.id);
                    }
                    match outcome {
                        PushOutcome::Applied { version }
                        | PushOutcome::AlreadyApplied { version } => {
                            let replay = matches!(outcome, PushOutcome::AlreadyApplied { .. });
                            if replay {
                                out.summary.already_applied += 1;
                            } else {
                                out.summary.applied += 1;
                            }
                            out.delivered.push(op.id);
                            out.completions.push(Completion::Ack(op.id));
                            out.event(|| WorkerEvent::Applied {
                                id: op.id,
                                entity: op.entity.clone(),
                                version,
                                replay,
                            });
                        }
                        PushOutcome::RetryLater { after } => {
                            // Refunds of the operations before this one come
                            // first, as if each were refunded on its own.
                            self.refund(&mut out);
                            self.retry_or_bury(
                                &mut out,
                                op,
                                m,
                                Failure {
                                    hint: after,
                                    cause: RetryCause::Error,
                                    error: "retry later".into(),
                                    counted: true,
                                    streak: 0,
                                },
                                now,
                            );
                        }
                        PushOutcome::Rejected { reason } => {
                            self.bury(&mut out, op, bounded(reason))
                        }
                        PushOutcome::Conflict { remote } => {
                            // The remote answered for good: the retry paid off.
                            out.delivered.push(op.id);
                            let max = self.storage.max_payload();
                            match remote.payload.as_ref().map(Vec::len) {
                                // Refused as it arrives, before any resolver
                                // or store sees it; the local op is kept.
                                Some(len) if len > max => self.bury(
                                    &mut out,
                                    op,
                                    format!(
                                        "remote record too large: {len} bytes, max_payload {max}"
                                    ),
                                ),
                                _ => self.resolve(&mut out, op, m, remote, now),
                            }
                        }
                    }
                }
                self.refund(&mut out);
            }
            Err(TransportError::Unauthorized) => {
                self.network.report_error(&TransportError::Unauthorized);
                // Credentials are an application matter: give every claim
                // back uncounted and wait for `resume`.
                tracing::warn!(target: "cpc_worker", size = ops.len(), "unauthorized: sending paused until resume()");
                out.summary.batch_error = Some(TransportError::Unauthorized);
                out.summary.released = ops.len();
                out.completions
                    .extend(ops.iter().map(|op| Completion::Release(op.id)));
                out.event(|| WorkerEvent::BatchFailed {
                    size: ops.len(),
                    error: TransportError::Unauthorized,
                });
                out.event(|| WorkerEvent::AuthRequired);
                out.pause = true;
            }
            Err(error) => {
                // Nothing in the batch is known to be applied: retry all.
                self.network.report_error(&error);
                let streak = self
                    .failure_streak
                    .fetch_add(1, Ordering::SeqCst)
                    .saturating_add(1);
                let hint = match &error {
                    TransportError::RateLimited { retry_after } => *retry_after,
                    _ => None,
                };
                let cause = match &error {
                    TransportError::Timeout => RetryCause::Timeout,
                    _ => RetryCause::Error,
                };
                // Only a failure one operation may have caused, of that
                // operation alone, counts towards its dead letter; a larger
                // batch failing so is split on its next tries instead.
                let suspect = may_be_caused_by_an_operation(&error);
                if suspect {
                    let ids: Vec<OperationId> = ops.iter().map(|op| op.id).collect();
                    self.suspects().failed(&ids);
                }
                let counted = suspect && ops.len() == 1;
                tracing::warn!(target: "cpc_worker", size = ops.len(), error = error.name(), counted, "batch failed");
                let text = error.to_string();
                for (op, m) in ops.iter().zip(meta) {
                    let failure = Failure {
                        hint,
                        cause,
                        error: text.clone(),
                        counted,
                        streak,
                    };
                    self.retry_or_bury(&mut out, op, m, failure, now);
                }
                out.event(|| WorkerEvent::BatchFailed {
                    size: ops.len(),
                    error: error.clone(),
                });
                out.summary.batch_error = Some(error);
            }
        }
        out
    }

    /// Refunds the retry permits of the operations delivered since the last
    /// refund (one lock for all of them).
    fn refund(&self, out: &mut BatchOutcome) {
        self.retry.on_delivered_all(&out.delivered[out.refunded..]);
        out.refunded = out.delivered.len();
    }

    /// Schedules a retry through the backoff and the retry budget, or parks
    /// the op in the dead letters when the strategy gives up.
    fn retry_or_bury(
        &self,
        out: &mut BatchOutcome,
        op: &Operation,
        meta: &OpMeta,
        failure: Failure,
        now: EpochMillis,
    ) {
        let Failure {
            hint,
            cause,
            error,
            counted,
            streak,
        } = failure;
        let attempt = meta.attempt;
        let elapsed = Duration::from_millis(now.saturating_sub(meta.enqueued_at));
        let at = {
            let mut rng = self.rng();
            self.retry.retry_at(
                &FailedAttempt {
                    id: op.id,
                    // An uncounted failure is paced by the failures in a
                    // row of the whole link, not by the operation's own.
                    attempt: if counted { attempt } else { streak.max(1) },
                    hint,
                    cause,
                    elapsed,
                    may_give_up: counted,
                },
                now,
                &mut *rng,
            )
        };
        match at {
            Some(at) => {
                out.summary.retried += 1;
                out.event(|| WorkerEvent::RetryScheduled {
                    id: op.id,
                    at,
                    attempt,
                    error: error.clone(),
                });
                out.completions.push(if counted {
                    Completion::Retry {
                        id: op.id,
                        at,
                        error,
                    }
                } else {
                    Completion::Postpone {
                        id: op.id,
                        at,
                        error,
                    }
                });
            }
            None => {
                self.suspects().cleared([op.id]);
                self.bury(
                    out,
                    op,
                    format!("gave up after {attempt} attempts: {error}"),
                );
            }
        }
    }

    /// Settles a conflict through the resolver. A keep-local or merged
    /// result is resent after a backoff (the retry policy's, paid from the
    /// budget), so two devices that both keep their own edit do not loop at
    /// full speed; at `max_conflicts` conflicts in a row the operation is
    /// deferred for the application instead. A resolver that panics defers
    /// the operation too.
    fn resolve(
        &self,
        out: &mut BatchOutcome,
        op: &Operation,
        meta: &OpMeta,
        remote: cpc_core::RemoteRecord,
        now: EpochMillis,
    ) {
        if let Some(hlc) = &self.hlc {
            // Later local edits must order after what the remote holds. A
            // timestamp beyond the drift limit is not merged (it would drag
            // every later edit into the future), but said: this device's
            // clock, or the remote writer's, is off.
            if let Err(cpc_core::Error::ClockDrift {
                ahead, max_drift, ..
            }) = hlc.observe(remote.timestamp)
            {
                let ahead_ms = millis(ahead);
                tracing::warn!(target: "cpc_worker", op_id = %op.id, ahead_ms, max_drift_ms = millis(max_drift), "remote timestamp too far ahead of this clock; not merged");
                out.event(|| WorkerEvent::ClockSkew {
                    id: op.id,
                    ahead_ms,
                    max_drift_ms: millis(max_drift),
                });
            }
        }
        let decided = catch(|| resolve_and_record(&*self.resolver, op, &remote, now));
        let (resolution, mut record) = match decided {
            Ok(decided) => decided,
            Err(message) => {
                tracing::error!(target: "cpc_worker", op_id = %op.id, "conflict resolver panicked; the operation is deferred");
                tracing::debug!(target: "cpc_worker", op_id = %op.id, message = %message, "resolver panic message");
                self.defer(out, op, remote, "the conflict resolver panicked".into());
                return;
            }
        };
        if let Resolution::Merged(merged) = &resolution {
            let max = self.storage.max_payload();
            if merged.len() > max {
                // That op only: the rest of the batch is acknowledged. Its
                // own payload is kept, so nothing is lost; not logged, as
                // the entry could not be stored.
                let reason = format!(
                    "merged payload too large: {} bytes, max_payload {max}",
                    merged.len()
                );
                self.bury(out, op, reason);
                return;
            }
        }
        let resend = matches!(resolution, Resolution::KeepLocal | Resolution::Merged(_));
        let in_a_row = if resend {
            self.streaks().conflicted(op.id)
        } else {
            self.streaks().ended(op.id);
            0
        };
        if resend && in_a_row >= self.config.max_conflicts {
            self.streaks().ended(op.id);
            // The log keeps the conflict as what happened to it: deferred,
            // nothing lost yet.
            record.resolution = Resolution::Defer;
            record.losing_payload = None;
            out.conflicts.push(record);
            let reason = format!(
                "{in_a_row} conflicts in a row (max_conflicts {}): deferred for the application",
                self.config.max_conflicts
            );
            self.defer(out, op, remote, reason);
            return;
        }
        out.conflicts.push(record);
        out.event(|| WorkerEvent::ConflictResolved {
            id: op.id,
            entity: op.entity.clone(),
            resolution: resolution.name(),
            remote_version: remote.version,
        });
        let payload = match resolution {
            Resolution::KeepLocal => {
                out.summary.conflicts.keep_local += 1;
                None
            }
            Resolution::Merged(payload) => {
                out.summary.conflicts.merged += 1;
                Some(payload)
            }
            Resolution::KeepRemote => {
                out.summary.conflicts.keep_remote += 1;
                out.completions.push(Completion::Drop(op.id));
                return;
            }
            Resolution::Defer => {
                let reason = format!("conflict with remote version {}", remote.version);
                self.defer_counted(out, op, remote, reason);
                return;
            }
        };
        out.completions.push(Completion::Resend {
            id: op.id,
            base_version: Some(remote.version),
            payload,
        });
        let at = {
            let mut rng = self.rng();
            self.retry.retry_at(
                &FailedAttempt {
                    id: op.id,
                    attempt: in_a_row,
                    hint: None,
                    cause: RetryCause::Error,
                    elapsed: Duration::from_millis(now.saturating_sub(meta.enqueued_at)),
                    may_give_up: false,
                },
                now,
                &mut *rng,
            )
        };
        if let Some(at) = at.filter(|at| *at > now) {
            out.completions.push(Completion::Retry {
                id: op.id,
                at,
                error: format!(
                    "conflict with remote version {}; resent after a backoff",
                    remote.version
                ),
            });
        }
    }

    /// Parks `op` in the dead letters for `reason`, with the event.
    fn bury(&self, out: &mut BatchOutcome, op: &Operation, reason: String) {
        self.retry.forget(op.id);
        out.summary.dead_lettered += 1;
        out.event(|| WorkerEvent::DeadLettered {
            id: op.id,
            entity: op.entity.clone(),
            reason: reason.clone(),
        });
        out.completions.push(Completion::Dead { id: op.id, reason });
    }

    /// Parks `op` as a deferred conflict, with the event.
    fn defer(
        &self,
        out: &mut BatchOutcome,
        op: &Operation,
        remote: cpc_core::RemoteRecord,
        reason: String,
    ) {
        out.event(|| WorkerEvent::ConflictResolved {
            id: op.id,
            entity: op.entity.clone(),
            resolution: Resolution::Defer.name(),
            remote_version: remote.version,
        });
        self.defer_counted(out, op, remote, reason);
    }

    fn defer_counted(
        &self,
        out: &mut BatchOutcome,
        op: &Operation,
        remote: cpc_core::RemoteRecord,
        reason: String,
    ) {
        out.summary.conflicts.deferred += 1;
        out.event(|| WorkerEvent::Deferred {
            id: op.id,
            entity: op.entity.clone(),
        });
        out.completions.push(Completion::Defer {
            id: op.id,
            remote,
            reason,
        });
    }

    /// After a batch: emits the summary, and `Drained` when the queue is empty.
    async fn after_batch(&self, summary: &ProcessingSummary) {
        self.emit(WorkerEvent::BatchCompleted {
            summary: summary.clone(),
        });
        // Counting pending work costs a query; only a batch that was not
        // full can have emptied the queue.
        if summary.attempted < self.config.batch_size && self.in_flight.load(Ordering::SeqCst) == 0
        {
            match self.sendable().await {
                Ok(0) if self.in_flight.load(Ordering::SeqCst) == 0 => {
                    self.emit(WorkerEvent::Drained)
                }
                Ok(_) => {}
                Err(e) => self.storage_failed(&e),
            }
        }
    }

    fn storage_failed(&self, e: &WorkerError) {
        tracing::error!(target: "cpc_worker", error = %e, "storage call failed");
        self.emit(WorkerEvent::StorageFailed {
            error: error_chain(e),
        });
    }

    /// On the Offline → Online transition: waiting retries are moved to
    /// `now + resume_after + U(0, reconnect_spread)` so they do not all fire
    /// at once. Returns the instant before which nothing is claimed, and the
    /// task re-spreading the rest of a queue longer than one page.
    async fn respread(self: &Arc<Self>) -> Result<(Instant, Option<JoinHandle<()>>)> {
        let now = self.clock.now_ms();
        let salt: u32 = self.rng().gen();
        let hold_until = self.network.resume_at().unwrap_or_else(Instant::now);
        let base = self.clock.at(hold_until).max(now);
        let spread = millis(self.config.reconnect_spread);
        // Page by page, each a short set-based update that reads no
        // payloads: a large offline queue costs neither memory nor a long
        // write lock at the moment the network returns. The first page is
        // done before anything is claimed (a queue that fits in it is
        // re-spread whole first); the rest goes on beside the claims, so
        // the first push does not wait for a million rows.
        let page = move |after: Option<u64>| {
            move |s: &dyn QueueStorage| {
                let page = Page {
                    after,
                    limit: Some(RESPREAD_PAGE),
                };
                s.respread_waiting(base, spread, salt, &page)
            }
        };
        let first = self.call("respread", page(None)).await?;
        let hold_ms = base - now;
        let Some(mut next) = first.next else {
            tracing::info!(target: "cpc_worker", rescheduled = first.moved, hold_ms, "network back: retries re-spread");
            return Ok((hold_until, None));
        };
        let me = Arc::clone(self);
        let rest = tokio::spawn(async move {
            let mut moved = first.moved;
            loop {
                // Let claims and completions take the store between pages.
                tokio::task::yield_now().await;
                match me.call("respread", page(Some(next))).await {
                    Ok(r) => {
                        moved += r.moved;
                        match r.next {
                            Some(n) => next = n,
                            None => break,
                        }
                    }
                    Err(e) => return me.storage_failed(&e),
                }
            }
            tracing::info!(target: "cpc_worker", rescheduled = moved, hold_ms, "network back: retries re-spread");
        });
        Ok((hold_until, Some(rest)))
    }
}

/// Live operations one re-spread transaction looks at: a few milliseconds
/// of SQLite work, so claims get through between the pages of a large
/// queue.
const RESPREAD_PAGE: usize = 4096;

/// The worker loop.
async fn run(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut net = inner.network.subscribe();
    let mut status = inner.network.status();
    let mut batches: JoinSet<(u64, Result<ProcessingSummary>)> = JoinSet::new();
    // No claim before this instant (storage trouble, reconnect hold).
    let mut hold_until: Option<Instant> = None;
    // The re-spread of a long queue's later pages, after a reconnect.
    let mut respreading: Option<JoinHandle<()>> = None;
    let mut reported_open = false;
    tracing::info!(target: "cpc_worker", network = ?status, "worker started");

    match inner.call("stats", |s| s.stats()).await {
        Ok(stats) if stats.quarantined > 0 => inner.emit(WorkerEvent::Quarantined {
            count: stats.quarantined,
        }),
        Ok(_) => {}
        Err(e) => inner.storage_failed(&e),
    }

    let stop_reason = loop {
        if *shutdown.borrow_and_update() {
            break "shutdown".to_string();
        }
        if !inner.orphan_list().is_empty() {
            if let Err(e) = inner.release_orphans().await {
                inner.storage_failed(&e);
            }
        }
        // Network transitions.
        if let Some(rx) = net.as_mut() {
            let now_status = *rx.borrow_and_update();
            if now_status != status {
                tracing::info!(target: "cpc_worker", from = ?status, to = ?now_status, "network changed");
                inner.emit(WorkerEvent::NetworkChanged {
                    from: status,
                    to: now_status,
                });
                let was_offline = status == NetworkStatus::Offline;
                status = now_status;
                if was_offline && NetworkGate::sendable(status) {
                    if let Some(old) = respreading.take() {
                        old.abort();
                    }
                    match inner.respread().await {
                        Ok((until, rest)) => {
                            hold_until = Some(until);
                            respreading = rest;
                        }
                        Err(e) => inner.storage_failed(&e),
                    }
                }
            }
        }

        let now_instant = Instant::now();
        if hold_until.is_some_and(|h| h <= now_instant) {
            hold_until = None;
        }
        let network_ok = !inner.config.respect_network || NetworkGate::sendable(status);
        let paused = inner.paused.load(Ordering::SeqCst);
        let may_send = network_ok && !paused && hold_until.is_none();
        let breaker = inner.retry.may_claim(batches.len());
        match breaker {
            Err(Some(until)) if may_send && !reported_open => {
                inner.emit(WorkerEvent::CircuitOpen {
                    until: inner.clock.at(until),
                });
                reported_open = true;
            }
            Ok(()) => reported_open = false,
            _ => {}
        }
        let room = batches.len() < inner.config.max_in_flight;

        // Claim while there is room for another batch.
        let mut wake_at: Option<Instant> = hold_until;
        if may_send && breaker.is_ok() && room {
            match inner.claim().await {
                Ok(claimed) if !claimed.is_empty() => {
                    let batch = inner.register(&claimed);
                    let task_inner = Arc::clone(&inner);
                    batches.spawn(async move {
                        let result = Inner::process_batch(&task_inner, batch, claimed).await;
                        if let Ok(summary) = &result {
                            task_inner.after_batch(summary).await;
                        }
                        (batch, result)
                    });
                    // Room for more: claim again at once (only heads of
                    // other entities can come out, so order is kept).
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    inner.storage_failed(&e);
                    if e.is_poisoned() {
                        break error_chain(&e);
                    }
                    hold_until = Some(after(now_instant, inner.config.storage_retry));
                    wake_at = hold_until;
                }
            }
        }

        // Work out when to wake if nothing else happens. With every batch
        // slot taken (or a half-open probe in flight) the next event is a
        // batch finishing, so the store need not be asked.
        if may_send && room {
            match breaker {
                Err(Some(until)) => wake_at = earliest(wake_at, Some(until)),
                Err(None) => {}
                Ok(()) => match inner.call("next_wakeup", |s| s.next_wakeup()).await {
                    Ok(Some(ms)) => {
                        let mut at = inner.clock.instant_at(ms);
                        let now = Instant::now();
                        if at <= now {
                            // Due, yet the claim just made found nothing:
                            // do not spin on it.
                            at = after(now, inner.config.min_wakeup_interval);
                        }
                        wake_at = earliest(wake_at, Some(at));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        inner.storage_failed(&e);
                        if e.is_poisoned() {
                            break error_chain(&e);
                        }
                        wake_at = earliest(
                            wake_at,
                            Some(after(Instant::now(), inner.config.storage_retry)),
                        );
                    }
                },
            }
        }

        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let net_changed = async {
            match net.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => {}
            Some(joined) = batches.join_next(), if !batches.is_empty() => {
                handle_joined(&inner, joined);
            }
            _ = net_changed => {}
            _ = inner.wake.notified() => {}
            _ = sleep => {}
        }
    };

    if let Some(rest) = respreading.take() {
        rest.abort();
    }
    // Shutdown: give in-flight batches a bounded time to finish.
    let deadline = after(Instant::now(), inner.config.shutdown_timeout);
    while !batches.is_empty() {
        match tokio::time::timeout_at(deadline, batches.join_next()).await {
            Ok(Some(joined)) => handle_joined(&inner, joined),
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(target: "cpc_worker", batches = batches.len(), "shutdown timeout: abandoning in-flight batches");
                batches.abort_all();
                while batches.join_next().await.is_some() {}
                break;
            }
        }
    }
    // Leases of abandoned batches are returned by `shutdown` (or, after a
    // poisoned store, expire and are recovered at the next open).
    tracing::info!(target: "cpc_worker", reason = %stop_reason, "worker stopped");
    inner.emit(WorkerEvent::Stopped {
        reason: stop_reason,
    });
}

fn handle_joined(
    inner: &Inner,
    joined: std::result::Result<(u64, Result<ProcessingSummary>), tokio::task::JoinError>,
) {
    match joined {
        Ok((_, Ok(_))) => {}
        Ok((batch, Err(e))) => {
            tracing::error!(target: "cpc_worker", batch, error = %e, "batch could not be completed; its leases will expire");
            inner.storage_failed(&e);
        }
        Err(e) => {
            tracing::error!(target: "cpc_worker", error = %e, "batch task failed");
        }
    }
}

/// Longest text from the remote that is logged or stored (a reason, an
/// error message), in characters; longer text is cut with a marker.
pub(crate) const MAX_REMOTE_TEXT: usize = 256;

/// `text` cut to [`MAX_REMOTE_TEXT`] characters.
fn bounded(text: String) -> String {
    match text.char_indices().nth(MAX_REMOTE_TEXT) {
        None => text,
        Some((cut, _)) => {
            let mut short = text;
            short.truncate(cut);
            short.push_str("…[truncated]");
            short
        }
    }
}

/// The error with any text it carries bounded.
fn bounded_error(error: TransportError) -> TransportError {
    match error {
        TransportError::Connect(text) => TransportError::Connect(bounded(text)),
        TransportError::Protocol(text) => TransportError::Protocol(bounded(text)),
        other => other,
    }
}

/// `base + d`, saturating far in the future instead of panicking (the
/// configuration bounds every `d`; this keeps the worker panic-free even
/// if a caller skipped `validate`).
fn after(base: Instant, d: Duration) -> Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(crate::config::MAX_DURATION))
        .unwrap_or(base)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
