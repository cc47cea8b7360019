//! `SyncEngineBuilder`: opens the store, restores the clock, wires the worker.

use cpc_storage::QueueStorageExt;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpc_backoff::{BackoffStrategy, CircuitBreaker, RetryBudget};
use cpc_conflict::{ConflictResolver, LastWriterWins};
use cpc_core::TokioWallClock;
use cpc_core::{HybridClock, NodeId, RemoteSink, Transport};
use cpc_network::NetworkMonitor;
use cpc_storage::{DeadHeadPolicy, Durability, QueueOptions, QueueStorage};
use cpc_worker::{PullConfig, Puller, RetryPolicy, StorageCalls, SyncWorker, WorkerConfig};
use rand::Rng;

use crate::coalesce::ByCollection;
use crate::engine::{EngineInner, SyncEngine};
use crate::error::{ConfigError, Error, Result};

/// Configures a [`SyncEngine`]; from [`SyncEngine::builder`].
///
/// Required: a transport, and either a directory ([`path`](Self::path): the
/// default durable backend, SQLite) or a store ([`storage`](Self::storage)).
/// Everything else has a default: [`LastWriterWins`], the default
/// [`RetryPolicy`] (exponential backoff, retry budget, circuit breaker), no
/// network monitor (always try), `Durability::Immediate`, batches of 64.
pub struct SyncEngineBuilder {
    path: Option<PathBuf>,
    storage: Option<Arc<dyn QueueStorage>>,
    transport: Option<Arc<dyn Transport>>,
    resolver: Arc<dyn ConflictResolver>,
    retry: RetryPolicy,
    network: Option<NetworkMonitor>,
    options: QueueOptions,
    worker: WorkerConfig,
    node: Option<NodeId>,
    start_ms: Option<u64>,
    wall: Option<Arc<dyn cpc_core::WallClock>>,
    clock: Option<TokioWallClock>,
    sink: Option<Arc<dyn RemoteSink>>,
    pull: PullConfig,
    coalescers: ByCollection,
}

impl fmt::Debug for SyncEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncEngineBuilder")
            .field("path", &self.path)
            .field("storage", &self.storage)
            .field("has_transport", &self.transport.is_some())
            .field("resolver", &self.resolver)
            .field("retry", &self.retry)
            .field("network", &self.network)
            .field("options", &self.options)
            .field("worker", &self.worker)
            .field("node", &self.node)
            .field("sink", &self.sink)
            .field("pull", &self.pull)
            .field("coalescers", &self.coalescers)
            .finish()
    }
}

impl Default for SyncEngineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncEngineBuilder {
    /// The defaults (see the type's docs).
    pub fn new() -> Self {
        SyncEngineBuilder {
            path: None,
            storage: None,
            transport: None,
            resolver: Arc::new(LastWriterWins),
            retry: RetryPolicy::default(),
            network: None,
            options: QueueOptions::default(),
            worker: WorkerConfig::default(),
            node: None,
            start_ms: None,
            wall: None,
            clock: None,
            sink: None,
            pull: PullConfig::default(),
            coalescers: ByCollection::default(),
        }
    }

    /// Keeps the queue in `dir` with the default durable backend (SQLite).
    pub fn path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.path = Some(dir.into());
        self
    }

    /// Uses an already opened store (any backend). Its own options
    /// (durability, lease, aging, limits) were fixed when it was opened; the
    /// builder's queue options then only set the engine's payload limit.
    pub fn storage(mut self, storage: Arc<dyn QueueStorage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The transport to the remote (required).
    pub fn transport(mut self, transport: impl Transport + 'static) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// The transport to the remote, shared.
    pub fn transport_arc(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The conflict resolver (default [`LastWriterWins`]).
    pub fn resolver(mut self, resolver: impl ConflictResolver + 'static) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// The backoff strategy (default: exponential, full jitter, at most
    /// [`DEFAULT_MAX_ATTEMPTS`](cpc_worker::DEFAULT_MAX_ATTEMPTS) attempts).
    pub fn backoff(mut self, backoff: impl BackoffStrategy + 'static) -> Self {
        self.retry = self.retry.with_backoff(Arc::new(backoff));
        self
    }

    /// The shared retry budget (`None` disables it).
    pub fn retry_budget(mut self, budget: Option<RetryBudget>) -> Self {
        self.retry = self.retry.with_budget(budget.map(Arc::new));
        self
    }

    /// The circuit breaker (`None` disables it).
    pub fn circuit_breaker(mut self, breaker: Option<CircuitBreaker>) -> Self {
        self.retry = self.retry.with_breaker(breaker.map(Arc::new));
        self
    }

    /// Replaces the whole retry policy (backoff, budget, breaker).
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The network monitor the worker consults and reports to.
    pub fn network(mut self, monitor: NetworkMonitor) -> Self {
        self.network = Some(monitor);
        self
    }

    /// Durability of writes (default `Immediate`); for [`path`](Self::path).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.options.durability = durability;
        self
    }

    /// Largest accepted payload in bytes (default 1 MiB).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.options.max_payload = bytes;
        self
    }

    /// How long a claim holds an operation (default 60 s); for [`path`](Self::path).
    pub fn lease_timeout(mut self, lease: Duration) -> Self {
        self.options.lease_timeout = lease;
        self
    }

    /// Priority aging (default 5 min; `None`: strict priority); for [`path`](Self::path).
    pub fn aging_after(mut self, aging: Option<Duration>) -> Self {
        self.options.aging_after = aging;
        self
    }

    /// What a dead head does to its entity; for [`path`](Self::path).
    pub fn dead_head(mut self, policy: DeadHeadPolicy) -> Self {
        self.options.dead_head = policy;
        self
    }

    /// Keeps acknowledged operations whole for `retain` (count and age),
    /// so that a remote restored from a backup loses none of them: on its
    /// `409 history_diverged` they are pushed again with their ids
    /// (default `None`: only their ids are journaled, enough to report
    /// what was lost); for [`path`](Self::path). Size it to cover the
    /// remote's backup interval.
    pub fn retain_acked(mut self, retain: Option<cpc_storage::RetainAcked>) -> Self {
        self.options.retain_acked = retain;
        self
    }

    /// All queue options at once; for [`path`](Self::path).
    pub fn queue_options(mut self, options: QueueOptions) -> Self {
        self.options = options;
        self
    }

    /// Operations per batch (default 64).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.worker.batch_size = n;
        self
    }

    /// Batches in flight at once (default 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.worker.max_in_flight = n;
        self
    }

    /// Longest a push may take before it counts as a timeout (default 30 s).
    pub fn push_timeout(mut self, timeout: Duration) -> Self {
        self.worker.push_timeout = timeout;
        self
    }

    /// Longest `shutdown` waits for an in-flight batch (default 10 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.worker.shutdown_timeout = timeout;
        self
    }

    /// How the engine and its worker call the store (default
    /// [`StorageCalls::Blocking`]: on tokio's blocking pool, for stores that
    /// fsync). [`StorageCalls::Inline`] calls it on the async task: for
    /// `MemoryStorage`, and for deterministic simulations on a paused
    /// current-thread runtime (then [`start`](Self::start) also opens the
    /// store inline).
    pub fn storage_calls(mut self, calls: StorageCalls) -> Self {
        self.worker.storage_calls = calls;
        self
    }

    /// All worker options at once.
    pub fn worker_config(mut self, config: WorkerConfig) -> Self {
        self.worker = config;
        self
    }

    /// Brings the remote's changes down into `sink` (two-way sync): the
    /// engine pulls on start, page after page, then long-polls while
    /// online, and persists the feed's cursor in its store after each page
    /// the sink applied. Needs a transport that pulls (`HttpTransport`,
    /// the simulated remote). Without a sink the engine only pushes.
    pub fn remote_sink(mut self, sink: Arc<dyn RemoteSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// How the engine pulls (page size, long poll, scope, backoff); only
    /// with a [`remote_sink`](Self::remote_sink).
    pub fn pull_config(mut self, config: PullConfig) -> Self {
        self.pull = config;
        self
    }

    /// Coalesces the operations of `collection` (off by default): a
    /// submitted operation is first offered to `coalescer` with its
    /// entity's newest queued operation, if that one was never handed to
    /// the worker (so the remote cannot have seen it), in the same atomic
    /// write as the submit. Forty edits of a note made offline then go
    /// out as one. [`StandardCoalescer`](cpc_core::StandardCoalescer) has
    /// the typed rules (Update+Update, Create+Update, Create+Delete
    /// cancels, Update+Delete). `submit` then returns the id that will be
    /// sent, and [`WorkerEvent::Coalesced`](cpc_worker::WorkerEvent::Coalesced)
    /// or [`CoalescedAway`](cpc_worker::WorkerEvent::CoalescedAway) says
    /// what happened. Calling it again for a collection replaces its
    /// coalescer. The rules, and what is never coalesced: `docs/coalescing.md`.
    ///
    /// ```
    /// # use async_trait::async_trait;
    /// # use cpc_sync::core::{OpOutcome, PushAnswer, PushOutcome, PushQuery, Transport, TransportError};
    /// use cpc_sync::core::{EntityKey, OperationKind, StandardCoalescer};
    /// use cpc_sync::network::{ManualSource, NetworkMonitor};
    /// use cpc_sync::SyncEngine;
    /// # #[derive(Debug)]
    /// # struct Remote;
    /// # #[async_trait]
    /// # impl Transport for Remote {
    /// #     async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
    /// #         let outcomes: Vec<OpOutcome> = query.ops.iter()
    /// #             .map(|op| OpOutcome::new(op.id, PushOutcome::Applied { version: 1 }))
    /// #             .collect();
    /// #         Ok(outcomes.into())
    /// #     }
    /// # }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let monitor = NetworkMonitor::default();
    /// let link = ManualSource::new();
    /// link.connect(monitor.sink("manual"));
    /// link.set_offline(); // on a train
    /// let engine = SyncEngine::builder()
    ///     .path(dir.path().join("queue"))
    ///     .transport(Remote)
    ///     .network(monitor)
    ///     .coalesce("notes", StandardCoalescer::new())
    ///     .start()
    ///     .await?;
    /// let note = EntityKey::new("notes", "42");
    /// let first = engine.operation(note.clone(), OperationKind::Create).payload(b"g".to_vec()).submit().await?;
    /// for text in ["gr", "gro", "groceries"] {
    ///     let id = engine.operation(note.clone(), OperationKind::Update).payload(text.as_bytes().to_vec()).submit().await?;
    ///     assert_eq!(id, first); // merged into the queued create: the id that will be sent
    /// }
    /// assert_eq!(engine.pending().await?, 1); // one Create holding "groceries"
    /// link.set_online();
    /// engine.drained().await?;
    /// engine.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub fn coalesce(
        mut self,
        collection: impl Into<String>,
        coalescer: impl cpc_core::Coalescer + 'static,
    ) -> Self {
        self.coalescers
            .insert(collection.into(), Arc::new(coalescer));
        self
    }

    /// Seeds the worker's jitter (reproducible simulations).
    pub fn seed(mut self, seed: u64) -> Self {
        self.worker.seed = Some(seed);
        self
    }

    /// The device's node id (default: the one persisted with the clock
    /// mark, else random).
    pub fn node_id(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// Makes the engine's wall clock read `epoch_ms` at build time and
    /// follow tokio's clock from there (default: the system time), so a
    /// simulation on a paused clock is reproducible.
    pub fn start_time_ms(mut self, epoch_ms: u64) -> Self {
        self.start_ms = Some(epoch_ms);
        self
    }

    /// Makes the engine read its wall time from `wall` (re-read at every
    /// reading, never going backwards) instead of the system clock: the
    /// application's own time source. `start_time_ms` takes precedence.
    pub fn wall_clock(mut self, wall: Arc<dyn cpc_core::WallClock>) -> Self {
        self.wall = Some(wall);
        self
    }

    /// The engine's clock: simulated from `start_time_ms`, else following
    /// the given or the system wall clock.
    fn make_clock(&self) -> TokioWallClock {
        match (self.start_ms, &self.wall) {
            (Some(ms), _) => TokioWallClock::starting_at(ms),
            (None, Some(wall)) => TokioWallClock::with_wall_clock(Arc::clone(wall)),
            (None, None) => TokioWallClock::new(),
        }
    }

    /// Opens (or takes) the store, returns expired leases, restores the
    /// clock's high-water mark and builds the worker; does not start it.
    ///
    /// Opening a path blocks on disk I/O: from async code prefer
    /// [`start`](Self::start) or call this inside `spawn_blocking`.
    pub fn build(self) -> Result<SyncEngine> {
        let clock = match self.clock.clone() {
            Some(clock) => clock,
            None => self.make_clock(),
        };
        let transport = self
            .transport
            .ok_or(Error::Config(ConfigError::MissingTransport))?;
        let owned = self.path.is_some();
        let storage: Arc<dyn QueueStorage> = match (self.storage, self.path) {
            (Some(_), Some(_)) => return Err(Error::Config(ConfigError::PathAndStorage)),
            (Some(s), None) => s,
            (None, Some(path)) => {
                // An abandoned push must not outlive its lease, or the store
                // hands the batch out again while it may still be applied.
                if self.worker.push_timeout >= self.options.lease_timeout {
                    return Err(Error::Config(ConfigError::Invalid {
                        field: "push_timeout",
                        reason: "must be shorter than the queue's lease_timeout",
                    }));
                }
                Arc::new(cpc_storage::SqliteStorage::open_at(
                    &path,
                    self.options.clone(),
                    clock.now_ms(),
                )?)
            }
            (None, None) => return Err(Error::Config(ConfigError::MissingStorage)),
        };
        if self.options.max_payload == 0 {
            return Err(Error::Config(ConfigError::Invalid {
                field: "max_payload",
                reason: "must be positive",
            }));
        }
        let mark = storage.load_clock_mark()?;
        let node = self
            .node
            .or(mark.map(|m| m.node))
            .unwrap_or_else(|| NodeId(rand::thread_rng().gen()));
        let hlc = Arc::new(HybridClock::with_wall_clock(node, Arc::new(clock.clone())));
        if let Some(mark) = mark {
            hlc.restore(mark);
        }
        // A queue directory opened here is locked by this process: every
        // lease in it belonged to a process that is gone (a kill -9, a
        // crash), so its operations are sent again now rather than after
        // the lease would have run out. A store handed in may be shared:
        // only expired leases are returned.
        let recovered = if owned {
            // Any lease ends before this (leases last minutes), and the
            // value stays within every backend's signed 64-bit time.
            const YEARS_10_MS: u64 = 10 * 365 * 86_400_000;
            storage.recover(clock.now_ms().saturating_add(YEARS_10_MS))?
        } else {
            storage.recover(clock.now_ms())?
        };
        if recovered > 0 {
            tracing::info!(target: "cpc_sync", recovered, owned, "leases of a previous run returned at open");
        }
        let mut config = self.worker;
        // A claim lost to a power loss after the remote applied the
        // operation would let a later edit be merged into it.
        config.durable_claims |= !self.coalescers.is_empty();
        let mut worker = SyncWorker::builder(Arc::clone(&storage), Arc::clone(&transport))
            .resolver(self.resolver)
            .retry_policy(self.retry)
            .clock(clock.clone())
            .hybrid_clock(Arc::clone(&hlc))
            .config(config);
        if let Some(monitor) = &self.network {
            worker = worker.network(monitor.clone());
        }
        let worker = worker.build()?;
        let puller = self.sink.map(|sink| {
            let mut pull = self.pull.clone();
            if pull.seed.is_none() {
                pull.seed = worker.config().seed.map(|s| s ^ 0x70_75_6c_6c);
            }
            let mut puller = Puller::new(Arc::clone(&storage), Arc::clone(&transport), sink, pull)
                .hlc(Arc::clone(&hlc))
                .clock(clock.clone())
                .storage_calls(worker.config().storage_calls)
                .events(worker.event_sender())
                .regressions(worker.regressions())
                .feed_acks(worker.feed_acks());
            if let Some(monitor) = &self.network {
                puller = puller.network(monitor.clone());
            }
            Arc::new(puller)
        });
        tracing::info!(target: "cpc_sync", node = %node, restored_mark = mark.is_some(), "engine built");
        Ok(SyncEngine {
            inner: Arc::new(EngineInner {
                storage,
                transport,
                worker,
                clock,
                hlc,
                network: self.network,
                max_payload: self.options.max_payload,
                mark_ceiling: Mutex::new(mark.map_or(0, |m| m.wall_ms)),
                stripes: EngineInner::new_stripes(),
                shut: AtomicBool::new(false),
                puller,
                pull_task: Mutex::new(None),
                coalescers: (!self.coalescers.is_empty()).then(|| Arc::new(self.coalescers)),
            }),
        })
    }

    /// [`build`](Self::build) (on the blocking pool, or inline under
    /// [`StorageCalls::Inline`]) then [`SyncEngine::start`].
    pub async fn start(mut self) -> Result<SyncEngine> {
        // The clock is anchored here, on the runtime's (possibly paused)
        // clock, not on the blocking thread.
        self.clock = Some(self.make_clock());
        let engine = match self.worker.storage_calls {
            StorageCalls::Inline => self.build()?,
            StorageCalls::Blocking => tokio::task::spawn_blocking(move || self.build())
                .await
                .map_err(Error::Task)??,
        };
        engine.start().await?;
        Ok(engine)
    }
}
