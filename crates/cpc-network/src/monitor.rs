//! The monitor: merges observations, applies hysteresis, publishes status.
//!
//! Concurrency: all state sits behind one `std::sync::Mutex` held only for
//! bookkeeping (never across an `.await` or an observer call). Transitions are
//! published to the watch channel while the state lock is held, so the watch
//! sees them in order, and queued for observers; observers are then called by
//! whichever thread holds the delivery lock, which drains the queue in order.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{ConfigError, Error};
use crate::observation::{Observation, Signal, SourceName};
use crate::source::{ObservationSink, SourceHandle, StatusSource};
use crate::status::{FailureKind, NetworkStatus, StatusChange, TransitionReason};

mod state;

use self::state::*;

/// Most checks kept in the failure-ratio window, whatever its duration, so a
/// chatty source cannot grow memory without bound.
pub const MAX_WINDOW_SAMPLES: usize = 4096;

/// Hysteresis and jitter settings of a [`NetworkMonitor`].
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// Consecutive failures that take the monitor Offline. Default 3.
    pub offline_after: u32,
    /// Consecutive successes that take it Online. Default 2.
    pub online_after: u32,
    /// Least time between two transitions. A definite link loss ignores it;
    /// leaving an Offline caused by link loss needs the link to have stayed
    /// up this long. Default 2 s.
    pub min_dwell: Duration,
    /// Span of the failure-ratio window. Default 30 s.
    pub degraded_window: Duration,
    /// Failure share of the window at or above which the status is Degraded
    /// (when the failures are not total; entered when a check succeeds, so a
    /// plain outage goes Online → Offline without a Degraded stop). In
    /// `(0, 1]`. Default 0.5.
    pub degraded_ratio: f64,
    /// Fewest checks in the window before the ratio is trusted. Default 4.
    pub degraded_min_samples: u32,
    /// Upper bound of the jittered `resume_after` delay published when the
    /// monitor leaves Offline (drawn uniformly in `[0, resume_jitter_max]`).
    /// Default 2 s; zero disables it.
    pub resume_jitter_max: Duration,
    /// When Offline is based on failures alone (no link loss) and no
    /// observation arrives for this long, the monitor decays to Unknown so a
    /// worker that stopped sending gets to try again instead of being
    /// stranded. `None` disables the decay. Default 30 s.
    pub evidence_ttl: Option<Duration>,
    /// Seed of the RNG that draws `resume_after`; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            offline_after: 3,
            online_after: 2,
            min_dwell: Duration::from_secs(2),
            degraded_window: Duration::from_secs(30),
            degraded_ratio: 0.5,
            degraded_min_samples: 4,
            resume_jitter_max: Duration::from_secs(2),
            evidence_ttl: Some(Duration::from_secs(30)),
            seed: None,
        }
    }
}

impl MonitorConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.offline_after == 0 {
            return Err(ConfigError::ZeroCount {
                field: "offline_after",
            });
        }
        if self.online_after == 0 {
            return Err(ConfigError::ZeroCount {
                field: "online_after",
            });
        }
        if self.degraded_min_samples == 0 {
            return Err(ConfigError::ZeroCount {
                field: "degraded_min_samples",
            });
        }
        if self.degraded_window.is_zero() {
            return Err(ConfigError::ZeroDuration {
                field: "degraded_window",
            });
        }
        if self.evidence_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(ConfigError::ZeroDuration {
                field: "evidence_ttl",
            });
        }
        // `!(x > 0.0)` also refuses NaN.
        if !(self.degraded_ratio > 0.0 && self.degraded_ratio <= 1.0) {
            return Err(ConfigError::RatioOutOfRange {
                field: "degraded_ratio",
                value: self.degraded_ratio.to_string(),
            });
        }
        Ok(())
    }
}

/// Receives every status transition of a [`NetworkMonitor`].
///
/// Called outside the monitor's internal locks, in registration order, on
/// whichever thread caused the transition; keep it short and non-blocking.
/// A panic is caught and logged and does not stop the other observers.
/// Closures `Fn(&StatusChange) + Send + Sync` implement it.
pub trait NetworkObserver: Send + Sync {
    /// One transition happened.
    fn on_status_change(&self, change: &StatusChange);
}

impl<F> NetworkObserver for F
where
    F: Fn(&StatusChange) + Send + Sync,
{
    fn on_status_change(&self, change: &StatusChange) {
        self(change)
    }
}

/// Keeps an observer registered; dropping it unregisters the observer.
///
/// After the drop returns, the observer is not called for transitions whose
/// delivery starts later (a delivery already running on another thread may
/// still finish its call).
#[must_use = "dropping the handle unregisters the observer"]
pub struct ObserverHandle {
    inner: Weak<Inner>,
    id: u64,
}

impl fmt::Debug for ObserverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserverHandle")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for ObserverHandle {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            lock(&inner.observers).list.retain(|(id, _)| *id != self.id);
        }
    }
}

/// A snapshot of the monitor's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MonitorStats {
    /// Status when the snapshot was taken.
    pub status: NetworkStatus,
    /// Transitions so far.
    pub transitions: u64,
    /// Success observations received.
    pub successes: u64,
    /// Failure observations received.
    pub failures: u64,
    /// Link-down observations received.
    pub link_downs: u64,
    /// Observations of any kind received.
    pub observations: u64,
    /// When the current status began (or the monitor was created).
    pub since: Instant,
    time_in: [Duration; 4],
}

impl MonitorStats {
    /// Total time spent in `status`, including the current stretch up to
    /// the snapshot.
    pub fn time_in(&self, status: NetworkStatus) -> Duration {
        self.time_in[status.index()]
    }
}

/// Watches the network and says whether sending makes sense.
///
/// Cheap to clone (an `Arc` inside); every clone is the same monitor. Feed it
/// with [`attach`](Self::attach)ed [`StatusSource`]s, with
/// [`apply`](Self::apply), or with the worker's passive
/// [`report_success`](Self::report_success) /
/// [`report_failure`](Self::report_failure); read it with
/// [`status`](Self::status), [`subscribe`](Self::subscribe) or observers.
///
/// Time-based rules (a transition held back by the minimum dwell time, a link
/// that must stay up, the evidence lifetime) are applied by a small task the
/// monitor spawns on the current tokio runtime when it first needs one; all
/// waiting goes through tokio's clock, so a paused clock drives it. Without a
/// runtime they are applied on the next [`apply`](Self::apply) or
/// [`tick`](Self::tick).
#[derive(Clone)]
pub struct NetworkMonitor {
    inner: Arc<Inner>,
}

impl fmt::Debug for NetworkMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkMonitor")
            .field("status", &self.status())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Default for NetworkMonitor {
    fn default() -> Self {
        NetworkMonitor::from_valid(MonitorConfig::default())
    }
}

impl NetworkMonitor {
    /// A monitor with `config`, starting in [`NetworkStatus::Unknown`].
    pub fn new(config: MonitorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(NetworkMonitor::from_valid(config))
    }

    fn from_valid(config: MonitorConfig) -> Self {
        let now = Instant::now();
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let (tx, _rx) = watch::channel(NetworkStatus::Unknown);
        NetworkMonitor {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(now, rng)),
                config,
                tx,
                observers: Mutex::new(Observers::default()),
                delivery: Mutex::new(()),
                timer: Mutex::new(None),
                timer_notify: Arc::new(Notify::new()),
                sources: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &MonitorConfig {
        &self.inner.config
    }

    /// The current status.
    pub fn status(&self) -> NetworkStatus {
        *self.inner.tx.borrow()
    }

    /// A receiver that sees every status the monitor publishes.
    pub fn subscribe(&self) -> watch::Receiver<NetworkStatus> {
        self.inner.tx.subscribe()
    }

    /// Registers an observer, called after this one on every transition;
    /// it stays registered while the returned handle lives.
    pub fn add_observer(&self, observer: Arc<dyn NetworkObserver>) -> ObserverHandle {
        let mut observers = lock(&self.inner.observers);
        observers.next_id += 1;
        let id = observers.next_id;
        observers.list.push((id, observer));
        ObserverHandle {
            inner: Arc::downgrade(&self.inner),
            id,
        }
    }

    /// Passive signal from the worker: a push reached the remote.
    pub fn report_success(&self) {
        self.apply(Observation::new(SourceName::passive(), Signal::Success));
    }

    /// Passive signal from the worker: a push failed for a reason that says
    /// something about reachability.
    pub fn report_failure(&self, kind: FailureKind) {
        self.apply(Observation::new(
            SourceName::passive(),
            Signal::Failure(kind),
        ));
    }

    /// Feeds one observation, synchronously: the status, the watch channel
    /// and the observers are updated before this returns (unless called from
    /// inside an observer, in which case delivery to observers happens right
    /// after that observer returns). Returns the status after it.
    pub fn apply(&self, observation: Observation) -> NetworkStatus {
        self.inner.apply(Some(observation))
    }

    /// Applies the time-based rules now (dwell, link stability, evidence
    /// lifetime). The monitor does this by itself when a tokio runtime is
    /// available; call it to drive a monitor without one. Returns the status.
    pub fn tick(&self) -> NetworkStatus {
        self.inner.apply(None)
    }

    /// When a sender should start after the last transition out of Offline
    /// (the jittered `resume_after`), if that instant has not passed yet.
    pub fn resume_at(&self) -> Option<Instant> {
        let st = lock(&self.inner.state);
        st.resume_at.filter(|at| *at > Instant::now())
    }

    /// Waits until the status allows sending and any `resume_after` delay
    /// has passed.
    pub async fn wait_sendable(&self) {
        let mut rx = self.subscribe();
        loop {
            let status = *rx.borrow_and_update();
            if status.allows_sending() {
                match self.resume_at() {
                    None => return,
                    Some(at) => {
                        tokio::select! {
                            biased;
                            _ = tokio::time::sleep_until(at) => {}
                            _ = rx.changed() => {}
                        }
                        continue;
                    }
                }
            }
            // The sender lives in `self`, so `changed` cannot fail here.
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// A handle through which a source (in this crate or another) reports
    /// observations as `source`, synchronously. It does not keep the monitor
    /// alive.
    pub fn sink(&self, source: impl Into<SourceName>) -> ObservationSink {
        ObservationSink::new(Arc::downgrade(&self.inner), source.into(), self.subscribe())
    }

    /// Runs `source` on a task of the current tokio runtime. The task ends
    /// when the source returns, when [`SourceHandle::stop`] is called, or when
    /// the last clone of the monitor is dropped; dropping the handle leaves
    /// it running. When the task ends, a link loss the source reported is
    /// withdrawn: a source that no longer watches must not hold the monitor
    /// Offline.
    pub fn attach<S: StatusSource>(&self, source: S) -> Result<SourceHandle, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let name = source.name();
        let sink = self.sink(name.clone());
        let guard = WithdrawOnDrop(sink.clone());
        let task = runtime.spawn(async move {
            // Dropped when the run ends or the task is aborted.
            let _guard = guard;
            source.run(sink).await;
        });
        let abort = task.abort_handle();
        let mut sources = lock(&self.inner.sources);
        sources.retain(|a| !a.is_finished());
        sources.push(abort.clone());
        tracing::debug!(source = %name, "network source attached");
        Ok(SourceHandle::new(name, abort))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MonitorStats {
        let now = Instant::now();
        let st = lock(&self.inner.state);
        let mut time_in = st.stats.time_in;
        time_in[st.status.index()] += now.saturating_duration_since(st.stats.since);
        MonitorStats {
            status: st.status,
            transitions: st.stats.transitions,
            successes: st.stats.successes,
            failures: st.stats.failures,
            link_downs: st.stats.link_downs,
            observations: st.stats.observations,
            since: st.stats.since,
            time_in,
        }
    }
}

/// Withdraws a finished source's link-down report, if it has one.
struct WithdrawOnDrop(ObservationSink);

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        self.0.withdraw_link_down();
    }
}

pub(crate) struct Inner {
    config: MonitorConfig,
    state: Mutex<State>,
    tx: watch::Sender<NetworkStatus>,
    observers: Mutex<Observers>,
    /// Held while delivering to observers, so deliveries stay in order.
    delivery: Mutex<()>,
    timer: Mutex<Option<JoinHandle<()>>>,
    timer_notify: Arc<Notify>,
    sources: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wakes the timer task so it notices the monitor is gone.
        self.timer_notify.notify_one();
        for source in lock(&self.sources).drain(..) {
            source.abort();
        }
    }
}

impl Inner {
    pub(crate) fn apply(self: &Arc<Self>, observation: Option<Observation>) -> NetworkStatus {
        let status = self.process(observation);
        self.ensure_timer();
        status
    }

    /// Records, settles and delivers, without touching the timer (the timer
    /// task calls this; waking itself would make it spin).
    fn process(&self, observation: Option<Observation>) -> NetworkStatus {
        let now = Instant::now();
        let status = {
            let mut st = lock(&self.state);
            if let Some(obs) = observation {
                st.record(obs, now, &self.config);
            }
            st.settle(now, &self.config, &self.tx);
            st.status
        };
        self.deliver();
        status
    }

    /// Applies a `LinkUp` from `source` if it currently reports the link
    /// down (and nothing otherwise, so no phantom observation is counted).
    pub(crate) fn withdraw_link_down(self: &Arc<Self>, source: &SourceName) {
        let reported = lock(&self.state).links_down.contains(source);
        if reported {
            tracing::debug!(source = %source, "withdrawing the link loss of a stopped source");
            self.apply(Some(Observation::link_up(source.clone())));
        }
    }

    pub(crate) fn status(&self) -> NetworkStatus {
        *self.tx.borrow()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        lock(&self.state).next_deadline(now, &self.config)
    }

    /// Makes sure a timer task runs (when a runtime is available) and wakes
    /// it so it re-reads the next deadline.
    fn ensure_timer(self: &Arc<Self>) {
        let mut timer = lock(&self.timer);
        if timer.as_ref().is_some_and(|t| !t.is_finished()) {
            self.timer_notify.notify_one();
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(self);
            let notify = Arc::clone(&self.timer_notify);
            *timer = Some(runtime.spawn(timer_loop(weak, notify)));
        }
    }

    fn deliver(&self) {
        loop {
            let guard = match self.delivery.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                // Another delivery (maybe ours, re-entered from an observer)
                // is running; it drains the queue before it lets go.
                Err(TryLockError::WouldBlock) => return,
            };
            loop {
                let change = lock(&self.state).pending.pop_front();
                let Some(change) = change else { break };
                let observers: Vec<(u64, Arc<dyn NetworkObserver>)> =
                    lock(&self.observers).list.clone();
                for (id, observer) in observers {
                    let call =
                        catch_unwind(AssertUnwindSafe(|| observer.on_status_change(&change)));
                    if call.is_err() {
                        tracing::error!(
                            observer_id = id,
                            seq = change.seq,
                            "network observer panicked; continuing with the next one"
                        );
                    }
                }
            }
            drop(guard);
            // A change queued after our last look but while we still held the
            // lock would otherwise wait for the next transition.
            if lock(&self.state).pending.is_empty() {
                return;
            }
        }
    }
}

async fn timer_loop(weak: Weak<Inner>, notify: Arc<Notify>) {
    loop {
        let deadline = {
            let Some(inner) = weak.upgrade() else { return };
            inner.process(None);
            inner.next_deadline()
            // `inner` is dropped here: the task never keeps the monitor alive.
        };
        match deadline {
            Some(at) => {
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(at) => {}
                    _ = notify.notified() => {}
                }
            }
            None => notify.notified().await,
        }
    }
}

#[derive(Default)]
struct Observers {
    next_id: u64,
    list: Vec<(u64, Arc<dyn NetworkObserver>)>,
}

/// Locks a mutex, recovering from poisoning: the state is kept consistent by
/// code that does not panic, and observers run outside every lock.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
