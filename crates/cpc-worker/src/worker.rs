//! The sync worker: claims batches, pushes them, applies the outcomes.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cpc_conflict::{resolve_and_record, ConflictResolver, LastWriterWins};
use cpc_core::{
    match_answer, ConflictRecord, EntityKey, HybridClock, Operation, OperationId, PushOutcome,
    PushQuery, Resolution, Transport, TransportError,
};
use cpc_network::{NetworkMonitor, NetworkStatus};
use cpc_storage::{
    Claimed, Completion, Enqueued, EpochMillis, Page, QueueStorage, REMOTE_BODY_WITHHELD,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};
use crate::event::WorkerEvent;
use crate::feed_acks::{FeedAck, FeedAcks};
use crate::net::NetworkGate;
use crate::policy::{settle_breaker, FailedAttempt, RetryPolicy};
use crate::split::{may_be_caused_by_an_operation, may_count, Suspects};
use crate::streaks::Streaks;
use crate::summary::ProcessingSummary;
use crate::unwind::{catch, CatchUnwind};
use cpc_backoff::RetryCause;
use cpc_core::TokioWallClock;
use cpc_core::{error_chain, millis};

mod batch;
mod judge;
mod run;

use crate::regress::{HandledRegression, Regression, Regressions};

use self::judge::{judge, BatchVerdict, Verdict};
use self::run::*;

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
            streaks: Mutex::new(Streaks::default()),
            laters: Mutex::new(Streaks::default()),
            failure_streak: AtomicU32::new(0),
            batch_seq: AtomicU64::new(0),
            task: tokio::sync::Mutex::new(RunState::Idle),
            regressions: Arc::new(Regressions::default()),
            feed_acks: Arc::new(FeedAcks::default()),
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
    streaks: Mutex<Streaks>,
    /// `retry_later` answers in a row per operation: paces their retries,
    /// which never count towards a dead letter.
    laters: Mutex<Streaks>,
    /// Pushes that failed as a whole in a row (reset by any answer): paces
    /// the retries of failures that say nothing about the operations.
    failure_streak: AtomicU32,
    batch_seq: AtomicU64,
    task: tokio::sync::Mutex<RunState>,
    /// Where a remote that went back in time is reported (by a batch, or
    /// the engine's puller).
    regressions: Arc<Regressions>,
    /// Own operations the puller saw applied while their batch was out.
    feed_acks: Arc<FeedAcks>,
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

    /// The sender of the worker's events, so that a companion (the
    /// [`Puller`](crate::Puller)) reports on the same stream.
    pub fn event_sender(&self) -> broadcast::Sender<WorkerEvent> {
        self.inner.events.clone()
    }

    /// Where a `409 history_diverged` is reported to this worker (the
    /// engine hands it to its puller): the worker then holds sending,
    /// re-queues the retained acknowledged operations and reports
    /// [`WorkerEvent::RemoteRegressed`].
    pub fn regressions(&self) -> Arc<Regressions> {
        Arc::clone(&self.inner.regressions)
    }

    /// Where the engine's puller notes own operations it saw applied in
    /// the feed while their batch was out, so that each is reported once
    /// and a lost answer costs no re-push ([`Puller::feed_acks`](crate::Puller::feed_acks)).
    pub fn feed_acks(&self) -> Arc<FeedAcks> {
        Arc::clone(&self.inner.feed_acks)
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.inner.events.subscribe()
    }

    /// Tells subscribers what a coalescing enqueue did with the submitted
    /// operation `from` of `entity` ([`WorkerEvent::Coalesced`] or
    /// [`WorkerEvent::CoalescedAway`]; nothing for one stored as itself).
    pub fn announce_coalesced(&self, entity: &EntityKey, from: OperationId, done: &Enqueued) {
        match *done {
            Enqueued::Stored { .. } => {}
            Enqueued::Merged { into, .. } => self.inner.emit(WorkerEvent::Coalesced {
                from,
                into,
                entity: entity.clone(),
            }),
            Enqueued::Cancelled { earlier } => self.inner.emit(WorkerEvent::CoalescedAway {
                later: from,
                earlier,
                entity: entity.clone(),
            }),
            // A kind this build does not know: nothing to announce.
            _ => {}
        }
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
        // Driven by hand, the worker handles a regression here (the loop
        // does it itself), once nothing of it is in flight.
        if let Some(regression) = inner.regressions.pending() {
            if inner.in_flight.load(Ordering::SeqCst) == 0 {
                inner.handle_regression(&regression).await?;
            }
        }
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
        let durable = self.config.durable_claims;
        let claimed = self
            .call("claim", move |s| {
                let claimed = s.claim_ready(now, limit)?;
                // The claimed mark must be on disk before anything is sent
                // (see `WorkerConfig::durable_claims`).
                if durable && !claimed.is_empty() {
                    s.flush()?;
                }
                Ok(claimed)
            })
            .await;
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

    fn streaks(&self) -> MutexGuard<'_, Streaks> {
        // Plain bookkeeping: a poisoned lock leaves nothing inconsistent.
        self.streaks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn laters(&self) -> MutexGuard<'_, Streaks> {
        // Plain bookkeeping: a poisoned lock leaves nothing inconsistent.
        self.laters.lock().unwrap_or_else(|e| e.into_inner())
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

    fn storage_failed(&self, e: &WorkerError) {
        tracing::error!(target: "cpc_worker", error = %e, "storage call failed");
        self.emit(WorkerEvent::StorageFailed {
            error: error_chain(e),
        });
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
