//! The pull side: brings the remote's changes down to the application's
//! [`RemoteSink`], page by page, beside the push worker.
//!
//! One page at a time: ask the transport (which checks the page against
//! the protocol's rules), complete this device's own operations the page
//! shows applied (their acknowledgement was lost: no re-push, no
//! self-conflict), tell the sink which local operations are still pending
//! on each entity (hold-back is per entity, never global), feed the
//! timestamps to the hybrid clock, hand the page to the sink, and only
//! after the sink returned `Ok` persist the cursor in the queue's store.
//! A crash anywhere before that persist delivers the page again; the sink
//! is idempotent by `(entity, version)`.

use std::sync::Arc;
use std::time::Duration;

use cpc_core::envelope::{self, RecordKind};
use cpc_core::{
    EntityKey, HybridClock, OperationId, PullCursor, PullPage, PullQuery, RemotePosition,
    RemoteSink, SinkChange, SinkError, SinkPage, TokioWallClock, Transport, TransportError,
};
use cpc_network::NetworkMonitor;
use cpc_storage::sync_state::{PullState, PENDING_REGRESSION_KEY, PULL_KEY};
use cpc_storage::{Completion, ListFilter, OpState, QueueStorage, StorageError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{broadcast, watch, Mutex, Notify};

use crate::config::StorageCalls;
use crate::event::WorkerEvent;
use crate::feed_acks::{FeedAck, FeedAcks};
use crate::known::KnownPosition;
use crate::page_check::check_page;
use crate::regress::{Regression, Regressions};

/// How the puller pulls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullConfig {
    /// Changes per page asked for (default 1000).
    pub limit: u32,
    /// Long-poll time once caught up (default 20 s; zero: no long poll,
    /// poll every `idle_interval`).
    pub long_poll: Duration,
    /// The least wait after an empty page, whatever the remote says
    /// (default 1 s): the loop breaker against a remote that answers long
    /// polls at once.
    pub idle_interval: Duration,
    /// The scope: only these collections; `None`: all. A change of scope
    /// starts a new feed (a snapshot).
    pub collections: Option<Vec<String>>,
    /// First wait after a failed pull (default 1 s), doubled per failure
    /// in a row, with full jitter.
    pub backoff_base: Duration,
    /// The longest wait after failures (default 60 s).
    pub backoff_max: Duration,
    /// Seeds the jitter (default: from the OS).
    pub seed: Option<u64>,
    /// While the remote has more (an initial sync, a catch-up), ask for
    /// the next page while the sink applies this one (default `true`):
    /// the server reads and encodes while the device decodes and writes.
    /// Pages are still applied one at a time, in order; an answer asked
    /// ahead from a cursor that is no longer current is dropped.
    pub prefetch: bool,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            limit: 1000,
            long_poll: Duration::from_secs(20),
            idle_interval: Duration::from_secs(1),
            collections: None,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            seed: None,
            prefetch: true,
        }
    }
}

/// Why a page was not applied. The cursor did not move; the page comes
/// again.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The transport failed, or the page broke the protocol's rules.
    #[error("pull failed: {0}")]
    Transport(#[from] TransportError),
    /// The sink refused the page.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The store failed (reading pending operations, persisting the
    /// cursor).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A storage task could not run.
    #[error("storage task failed: {0}")]
    Task(String),
    /// The page breaks the feed's rules whatever the transport said of it
    /// (its cursor does not advance while there is more, goes back, or a
    /// change or key is out of order or range): nothing of it was applied.
    #[error("pull page refused: {0}")]
    Refused(String),
}

/// What one page did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageApplied {
    /// Changes (or snapshot entities) in the page.
    pub changes: usize,
    /// Bytes on the wire.
    pub bytes: u64,
    /// The remote has more right now.
    pub has_more: bool,
    /// Own operations completed from the page (lost acknowledgements).
    pub acked: usize,
    /// The cursor persisted.
    pub cursor: PullCursor,
}

/// Pulls the remote's changes into a [`RemoteSink`].
#[derive(Debug)]
pub struct Puller {
    storage: Arc<dyn QueueStorage>,
    transport: Arc<dyn Transport>,
    sink: Arc<dyn RemoteSink>,
    hlc: Option<Arc<HybridClock>>,
    clock: TokioWallClock,
    config: PullConfig,
    calls: StorageCalls,
    events: broadcast::Sender<WorkerEvent>,
    network: Option<NetworkMonitor>,
    /// The state as persisted (`None` until first read).
    state: Mutex<Option<PullState>>,
    /// The persisted feed position (outside snapshots), for
    /// [`pulled_through`](Self::pulled_through).
    through: watch::Sender<Option<RemotePosition>>,
    /// `pull_now` wakes the loop.
    wake: Notify,
    rng: std::sync::Mutex<StdRng>,
    /// Held from an answer's arrival until its page is applied and its
    /// cursor persisted: the sink gets one page at a time, in feed order,
    /// even when `pull_once` runs beside the loop's long poll.
    applying: Mutex<()>,
    /// The worker's, when this puller belongs to an engine: a regression
    /// is handed to it (re-queue, then the event).
    regressions: Option<Arc<Regressions>>,
    /// The next page, asked ahead ([`PullConfig::prefetch`]): the query
    /// and the task answering it.
    prefetched: std::sync::Mutex<Option<Prefetch>>,
    /// The worker's, when this puller belongs to an engine: own operations
    /// seen applied while their batch is out are left to it (see
    /// `feed_acks`).
    feed_acks: Option<Arc<FeedAcks>>,
    /// The position sent with every pull (§8 `known`): the worker's when
    /// this puller belongs to an engine, raised by every page's head.
    known: Arc<KnownPosition>,
}

/// A page asked ahead.
type Prefetch = (
    PullQuery,
    tokio::task::JoinHandle<Result<PullPage, TransportError>>,
);

impl Drop for Puller {
    fn drop(&mut self) {
        if let Some((_, task)) = self.prefetched.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

impl Puller {
    /// A puller over the queue's store (where the cursor is kept), the
    /// transport and the application's sink; storage calls on the
    /// blocking pool, its own event channel, no clock to feed, no network
    /// monitor (see the setters).
    pub fn new(
        storage: Arc<dyn QueueStorage>,
        transport: Arc<dyn Transport>,
        sink: Arc<dyn RemoteSink>,
        config: PullConfig,
    ) -> Puller {
        let seed = config.seed.unwrap_or_else(rand::random);
        Puller {
            storage,
            transport,
            sink,
            hlc: None,
            clock: TokioWallClock::new(),
            config,
            calls: StorageCalls::default(),
            events: broadcast::channel(1024).0,
            network: None,
            state: Mutex::new(None),
            through: watch::channel(None).0,
            wake: Notify::new(),
            rng: std::sync::Mutex::new(StdRng::seed_from_u64(seed)),
            applying: Mutex::new(()),
            regressions: None,
            prefetched: std::sync::Mutex::new(None),
            feed_acks: None,
            known: Arc::default(),
        }
    }

    /// Hands a `409 history_diverged` to the worker's
    /// [`SyncWorker::regressions`](crate::SyncWorker::regressions), which
    /// re-queues the retained acknowledged operations and reports
    /// [`WorkerEvent::RemoteRegressed`]. Without it the puller reports
    /// the event itself (nothing re-queued).
    /// It also shares the worker's [`KnownPosition`], so pushes and pulls
    /// send the same `known`.
    pub fn regressions(mut self, regressions: Arc<Regressions>) -> Puller {
        self.known = regressions.known();
        self.regressions = Some(regressions);
        self
    }

    /// Shares the worker's [`SyncWorker::feed_acks`](crate::SyncWorker::feed_acks):
    /// an own operation the feed shows applied while its batch is out is
    /// settled by that batch (reported once, never pushed again). Without
    /// it the puller completes such an operation itself.
    pub fn feed_acks(mut self, feed_acks: Arc<FeedAcks>) -> Puller {
        self.feed_acks = Some(feed_acks);
        self
    }

    /// Feeds pulled timestamps to `hlc` (`observe`).
    pub fn hlc(mut self, hlc: Arc<HybridClock>) -> Puller {
        self.hlc = Some(hlc);
        self
    }

    /// Reads time from `clock` (the worker's).
    pub fn clock(mut self, clock: TokioWallClock) -> Puller {
        self.clock = clock;
        self
    }

    /// Makes storage calls as `calls` says (the worker's setting).
    pub fn storage_calls(mut self, calls: StorageCalls) -> Puller {
        self.calls = calls;
        self
    }

    /// Sends events on `events` (the worker's channel,
    /// `SyncWorker::event_sender`, so observers see one stream).
    pub fn events(mut self, events: broadcast::Sender<WorkerEvent>) -> Puller {
        self.events = events;
        self
    }

    /// Pulls only while `network` says the remote is reachable.
    pub fn network(mut self, network: NetworkMonitor) -> Puller {
        self.network = Some(network);
        self
    }

    /// Subscribes to its events (the same channel as the worker's when
    /// built with [`events`](Self::events)).
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.events.subscribe()
    }

    /// Its configuration.
    pub fn config(&self) -> &PullConfig {
        &self.config
    }

    async fn call<T, F>(&self, f: F) -> Result<T, PullError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn QueueStorage) -> cpc_storage::Result<T> + Send + 'static,
    {
        self.calls
            .run(&self.storage, f)
            .await
            .map_err(|e| PullError::Task(e.to_string()))?
            .map_err(PullError::from)
    }

    /// The state, read from the store the first time. A stored state that
    /// no longer decodes (or belongs to another scope) starts the feed
    /// over with a snapshot: safe, since a snapshot replaces the scope.
    async fn load(&self) -> Result<PullState, PullError> {
        let mut cached = self.state.lock().await;
        if let Some(state) = cached.as_ref() {
            return Ok(state.clone());
        }
        let raw = self.call(|s| s.sync_state(PULL_KEY, None)).await?;
        let mut state = match raw {
            None => PullState::default(),
            Some(raw) => PullState::decode(&raw).unwrap_or_else(|| {
                tracing::warn!(
                    "the stored pull cursor does not decode; starting over with a snapshot"
                );
                PullState::default()
            }),
        };
        if state.scope != self.config.collections {
            state.cursor = None;
            state.scope = self.config.collections.clone();
        }
        if state.cursor.as_ref().is_some_and(|c| c.after.is_none()) {
            self.through
                .send_replace(state.cursor.as_ref().map(|c| c.position.clone()));
        }
        *cached = Some(state.clone());
        Ok(state)
    }

    /// The cursor persisted (none before the first page).
    pub async fn cursor(&self) -> Result<Option<PullCursor>, PullError> {
        Ok(self.load().await?.cursor)
    }

    /// The highest server position seen.
    pub async fn known(&self) -> Result<Option<RemotePosition>, PullError> {
        Ok(self.load().await?.known)
    }

    /// Pulls and applies one page, waiting up to `wait` for changes when
    /// caught up.
    ///
    /// Safe beside the loop: an answer that arrives after another page
    /// moved the cursor was asked from a stale cursor; it is dropped
    /// unapplied and the page asked again from the new cursor.
    pub async fn pull_page(&self, wait: Duration) -> Result<PageApplied, PullError> {
        loop {
            let state = self.load().await?;
            let query = PullQuery {
                cursor: state.cursor.clone(),
                known: state.known.clone(),
                wait,
                limit: self.config.limit.max(1),
                collections: self.config.collections.clone(),
            };
            let answer = match self.take_prefetched(&query) {
                Some(task) => match task.await {
                    Ok(Ok(page)) => Ok(page),
                    // A failure asked ahead may be old news (the network
                    // is back, the server restarted), and an aborted or
                    // panicked task has no answer: ask again, now.
                    Ok(Err(_)) | Err(_) => self.ask(&query).await,
                },
                None => self.ask(&query).await,
            };
            let _applying = self.applying.lock().await;
            let now = self.load().await?;
            if now.cursor != state.cursor || now.known != state.known {
                tracing::debug!("a page answered a stale cursor; asking again");
                continue;
            }
            let page = match answer {
                Ok(page) => page,
                Err(TransportError::HistoryDiverged { head }) => {
                    self.regressed(state, head.clone()).await?;
                    return Err(TransportError::HistoryDiverged { head }.into());
                }
                Err(e) => return Err(e.into()),
            };
            if let Err(reason) = check_page(&query, &page) {
                tracing::warn!(reason = %reason, "a pulled page breaks the feed's rules; refused");
                return Err(PullError::Refused(reason));
            }
            if page.has_more && self.config.prefetch {
                // Asked before the sink runs, from where the page leaves
                // the feed: if the page is not applied, the cursor does not
                // move and the answer is dropped unused.
                let next = PullQuery {
                    cursor: Some(page.cursor.clone()),
                    known: higher(state.known.clone(), page.head.clone()),
                    wait: Duration::ZERO,
                    ..query.clone()
                };
                self.prefetch(next);
            }
            return self.apply_page(state, page).await;
        }
    }

    /// The task answering `query` if it was asked ahead; a task for any
    /// other query is dropped (its answer would be for a stale cursor).
    fn take_prefetched(
        &self,
        query: &PullQuery,
    ) -> Option<tokio::task::JoinHandle<Result<PullPage, TransportError>>> {
        let (asked, task) = self
            .prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        if asked == *query {
            Some(task)
        } else {
            task.abort();
            None
        }
    }

    /// `query` as it is sent: with the engine's `known` (raised first to
    /// the query's own, the position persisted with the cursor).
    fn to_send(&self, query: &PullQuery) -> PullQuery {
        if let Some(known) = &query.known {
            self.known.raise(known);
        }
        PullQuery {
            known: self.known.get(),
            ..query.clone()
        }
    }

    /// Asks the transport for `query`'s page; an answer raises `known` to
    /// its head.
    async fn ask(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        let answer = self.transport.pull(&self.to_send(query)).await;
        if let Ok(page) = &answer {
            self.known.raise(&page.head);
        }
        answer
    }

    /// Asks `next` ahead, without waiting for the answer. The task is kept
    /// with the puller's own query (matched when the page is wanted), not
    /// the one sent, whose `known` may have risen meanwhile.
    fn prefetch(&self, next: PullQuery) {
        let transport = Arc::clone(&self.transport);
        let known = Arc::clone(&self.known);
        let sent = self.to_send(&next);
        let task = tokio::spawn(async move {
            let answer = transport.pull(&sent).await;
            if let Ok(page) = &answer {
                known.raise(&page.head);
            }
            answer
        });
        let old = self
            .prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace((next, task));
        if let Some((_, task)) = old {
            task.abort();
        }
    }

    /// Applies a page answered to `state`'s cursor (the caller holds
    /// `applying`): own writes completed, the sink, the cursor persisted.
    async fn apply_page(&self, state: PullState, page: PullPage) -> Result<PageApplied, PullError> {
        let acked = self.complete_own_writes(&page).await?;
        let changes = self.with_pending(&page).await?;
        if let Some(hlc) = &self.hlc {
            if let Some(newest) = page.changes.iter().map(|c| c.timestamp).max() {
                if let Err(e) = hlc.observe(newest) {
                    tracing::warn!(error = %e, "a pulled timestamp is too far ahead; the clock does not follow it");
                }
            }
        }
        let sink_page = SinkPage {
            changes,
            replace: page
                .snapshot
                .clone()
                .map(|range| (range, self.config.collections.clone())),
        };
        self.sink.apply(&sink_page).await?;
        let next = PullState {
            scope: self.config.collections.clone(),
            cursor: Some(page.cursor.clone()),
            known: higher(state.known, page.head.clone()),
        };
        self.persist(next).await?;
        if page.snapshot.as_ref().is_some_and(|s| s.reset.is_some()) {
            // A new feed starts: positions of the old one are void.
            self.through.send_replace(None);
        }
        if page.cursor.after.is_none() {
            self.through
                .send_replace(Some(page.cursor.position.clone()));
        }
        let applied = PageApplied {
            changes: page.changes.len(),
            bytes: page.bytes,
            has_more: page.has_more,
            acked,
            cursor: page.cursor,
        };
        let _ = self.events.send(WorkerEvent::PullProgress {
            changes: applied.changes,
            bytes: applied.bytes,
            has_more: applied.has_more,
        });
        Ok(applied)
    }

    /// The remote went back in time (§8): `known` becomes its head, so the
    /// next pull is answered (its cursor from the lost history gets a
    /// snapshot that replaces the scope); the application is told.
    async fn regressed(&self, state: PullState, head: RemotePosition) -> Result<(), PullError> {
        tracing::warn!(
            known = state.known.as_ref().map(|k| k.seq),
            head = head.seq,
            "the remote's history no longer holds what this device has seen"
        );
        if state.known.as_ref() == Some(&head) {
            // Reported already (this answer left before the head was
            // adopted): the worker is on it.
            return Ok(());
        }
        let regression = Regression {
            known: state.known.clone(),
            head: head.clone(),
        };
        match &self.regressions {
            Some(regressions) => {
                // Durable before `known` moves: a crash in between must
                // still re-queue at the next start.
                let bytes = regression
                    .encode()
                    .ok_or_else(|| PullError::Task("encoding a regression".into()))?;
                self.call(move |s| s.sync_state(PENDING_REGRESSION_KEY, Some(bytes)))
                    .await?;
                if !regressions.report(regression) {
                    // Handled already (a push saw it first).
                    self.call(|s| s.sync_state(PENDING_REGRESSION_KEY, Some(Vec::new())))
                        .await?;
                }
            }
            None => {
                // No worker to re-queue anything: go on from the head.
                self.known.adopt(&head);
                let _ = self.events.send(WorkerEvent::RemoteRegressed {
                    known: regression.known,
                    head: regression.head,
                    requeued: 0,
                    unrecoverable: 0,
                });
            }
        }
        let next = PullState {
            known: Some(head),
            ..state.clone()
        };
        self.persist(next).await?;
        // Positions of the lost history say nothing about the new one
        // (seqs are reused): `pulled_through` waits for the new feed.
        self.through.send_replace(None);
        Ok(())
    }

    async fn persist(&self, next: PullState) -> Result<(), PullError> {
        let bytes = envelope::encode(RecordKind::Meta, &next)
            .map_err(|e| PullError::Storage(StorageError::Encode(e)))?;
        self.call(move |s| s.sync_state(PULL_KEY, Some(bytes)))
            .await?;
        *self.state.lock().await = Some(next);
        Ok(())
    }

    /// Completes this device's operations the page shows applied: their
    /// answer was lost (or has not come yet). A dead or parked operation is
    /// left alone: the remote cannot have applied it. One still in flight
    /// is left to its batch when the worker shares its notes
    /// ([`feed_acks`](Self::feed_acks)): noted first, then its state read, so
    /// that whichever of the two looks first settles it, once.
    async fn complete_own_writes(&self, page: &PullPage) -> Result<usize, PullError> {
        let own: Vec<(OperationId, EntityKey, u64, u64)> = page
            .changes
            .iter()
            .filter_map(|c| c.own_op.map(|id| (id, c.entity.clone(), c.version, c.seq)))
            .collect();
        if own.is_empty() {
            return Ok(0);
        }
        if let Some(notes) = &self.feed_acks {
            for (id, _, version, seq) in &own {
                notes.note(
                    *id,
                    FeedAck {
                        version: *version,
                        seq: *seq,
                    },
                );
            }
        }
        let ids: Vec<OperationId> = own.iter().map(|o| o.0).collect();
        let states = self
            .call(move |s| {
                let mut states = Vec::with_capacity(ids.len());
                for id in ids {
                    states.push(s.get(id)?.map(|stored| stored.state));
                }
                Ok(states)
            })
            .await?;
        let mut live = Vec::new();
        for ((id, ..), state) in own.iter().zip(states) {
            let in_flight = matches!(state, Some(OpState::InFlight { .. }));
            if in_flight && self.feed_acks.is_some() {
                // Its batch settles it (the note stays for it).
                continue;
            }
            let taken = self.feed_acks.as_ref().map(|n| n.take(*id));
            if taken == Some(None) {
                // The worker took the note meanwhile: settled there.
                continue;
            }
            if matches!(state, None | Some(OpState::Dead { .. } | OpState::Deferred)) {
                continue;
            }
            live.push(*id);
        }
        if live.is_empty() {
            return Ok(0);
        }
        let acks: Vec<Completion> = own
            .iter()
            .filter(|o| live.contains(&o.0))
            .map(|o| Completion::AckAt { id: o.0, seq: o.3 })
            .collect();
        let now = self.clock.now_ms();
        self.call(move |s| s.complete(&acks, now)).await?;
        for (id, entity, version, _) in own.into_iter().filter(|o| live.contains(&o.0)) {
            tracing::debug!(%id, "an own operation completed from a pull");
            let _ = self.events.send(WorkerEvent::Applied {
                id,
                entity,
                version,
                replay: true,
            });
        }
        Ok(live.len())
    }

    /// The page's changes with the local operations still pending on each
    /// entity. An empty queue (the usual case, and every initial sync)
    /// costs one count.
    async fn with_pending(&self, page: &PullPage) -> Result<Vec<SinkChange>, PullError> {
        let pending = self.call(|s| Ok(s.stats()?.pending)).await?;
        if pending == 0 {
            return Ok(page
                .changes
                .iter()
                .map(|c| SinkChange {
                    change: c.clone(),
                    pending: Vec::new(),
                })
                .collect());
        }
        let entities: Vec<EntityKey> = page.changes.iter().map(|c| c.entity.clone()).collect();
        let lists = self
            .call(move |s| {
                entities
                    .into_iter()
                    .map(|entity| {
                        let filter = ListFilter {
                            entity: Some(entity),
                            dead: Some(false),
                            limit: Some(64),
                            after_seq: None,
                        };
                        Ok(s.list(&filter)?.into_iter().map(|o| o.op.id).collect())
                    })
                    .collect::<cpc_storage::Result<Vec<Vec<OperationId>>>>()
            })
            .await?;
        // An own operation the page shows applied is not pending on that
        // entity any more, even while its batch is still out.
        let applied: Vec<OperationId> = page.changes.iter().filter_map(|c| c.own_op).collect();
        Ok(page
            .changes
            .iter()
            .zip(lists)
            .map(|(c, mut pending)| {
                pending.retain(|id| !applied.contains(id));
                SinkChange {
                    change: c.clone(),
                    pending,
                }
            })
            .collect())
    }

    /// Waits until the persisted feed position has reached `seq` (outside
    /// a snapshot): every change up to `seq` is in the sink.
    pub async fn pulled_through(&self, seq: u64) {
        let mut rx = self.through.subscribe();
        let _ = rx
            .wait_for(|p| p.as_ref().is_some_and(|p| p.seq >= seq))
            .await;
    }

    /// Wakes the loop: pull now, whatever it was waiting for.
    pub fn pull_now(&self) {
        self.wake.notify_one();
    }

    /// The wait after `failures` failed pulls in a row: full jitter over
    /// an exponential ceiling, never below the idle interval.
    fn backoff(&self, failures: u32) -> Duration {
        let ceiling = self
            .config
            .backoff_base
            .saturating_mul(1u32 << failures.min(16))
            .min(self.config.backoff_max);
        let ms = cpc_core::millis(ceiling);
        let jittered = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gen_range(0..=ms);
        Duration::from_millis(jittered).max(self.config.idle_interval)
    }

    /// Pulls until `stop` is set: pages back to back while the remote has
    /// more, then long polls; at least `idle_interval` after an empty page;
    /// backoff after a failure; nothing while the network monitor says
    /// offline. A batch of pushes that applied something, or
    /// [`pull_now`](Self::pull_now), cuts a wait short.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        let mut wait = Duration::ZERO;
        let mut events = self.events.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
            if let Some(network) = &self.network {
                tokio::select! {
                    _ = network.wait_sendable() => {}
                    _ = stop.changed() => return,
                }
            }
            let pulled = tokio::select! {
                pulled = self.pull_page(wait) => pulled,
                _ = stop.changed() => return,
            };
            let pause = match pulled {
                Ok(page) => {
                    failures = 0;
                    if page.has_more {
                        wait = Duration::ZERO;
                        continue;
                    }
                    wait = self.config.long_poll;
                    if page.changes > 0 && !wait.is_zero() {
                        // Caught up: the next pull long-polls at once.
                        continue;
                    }
                    self.config.idle_interval
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    wait = Duration::ZERO;
                    let pause = self.backoff(failures);
                    tracing::info!(error = %e, retry_in_ms = cpc_core::millis(pause), "pull failed");
                    let _ = self.events.send(WorkerEvent::PullFailed {
                        error: e.to_string(),
                        retry_in_ms: cpc_core::millis(pause),
                    });
                    pause
                }
            };
            let sleep = tokio::time::sleep(pause);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = self.wake.notified() => break,
                    _ = stop.changed() => return,
                    event = events.recv() => match event {
                        Ok(WorkerEvent::BatchCompleted { summary }) if summary.applied > 0 && failures == 0 => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                        _ => {}
                    },
                }
            }
        }
    }
}

/// The greater (by `seq`) of two positions of one store; a position of
/// another store replaces the old one (the remote was replaced).
fn higher(known: Option<RemotePosition>, head: RemotePosition) -> Option<RemotePosition> {
    match known {
        Some(k) if k.store_id == head.store_id && k.seq >= head.seq => Some(k),
        _ => Some(head),
    }
}
