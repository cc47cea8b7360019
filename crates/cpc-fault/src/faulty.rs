//! `FaultyTransport`: wraps any transport with a seeded [`FaultPlan`] and an
//! outage [`Schedule`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use cpc_core::{
    OpOutcome, Operation, OperationId, PullPage, PullQuery, PushAnswer, PushOutcome, PushQuery,
    Transport, TransportError,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::duration::{humane, humane_opt};
use crate::error::{Error, Result};
use crate::schedule::{LinkCondition, Probability, Schedule};
use cpc_core::SimClock;

/// How long a request takes, there and back.
///
/// Half of the sampled latency is spent before the inner transport is
/// called (the request travelling), the rest after (the answer travelling).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    /// No delay at all. Written `{ kind = "none" }`.
    #[default]
    None,
    /// Always `delay`. Written `{ kind = "fixed", delay = "50ms" }`.
    Fixed {
        /// The round-trip time.
        #[serde(with = "humane")]
        delay: Duration,
    },
    /// Uniform in `[min, max]`. Written `{ kind = "uniform", min = "10ms", max = "200ms" }`.
    Uniform {
        /// Shortest round trip.
        #[serde(with = "humane")]
        min: Duration,
        /// Longest round trip.
        #[serde(with = "humane")]
        max: Duration,
    },
    /// Log-normal with the given median and 99th percentile, capped at
    /// `max`: most requests are quick, a few are very slow. Written
    /// `{ kind = "long_tail", median = "50ms", p99 = "2s", max = "30s" }`.
    LongTail {
        /// Median round trip.
        #[serde(with = "humane")]
        median: Duration,
        /// 99th percentile round trip.
        #[serde(with = "humane")]
        p99: Duration,
        /// Hard cap.
        #[serde(with = "humane")]
        max: Duration,
    },
}

impl Latency {
    /// Draws one round-trip time.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed { delay } => delay,
            Latency::Uniform { min, max } => {
                if max <= min {
                    min
                } else {
                    let lo = u64::try_from(min.as_micros()).unwrap_or(u64::MAX);
                    let hi = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
                    Duration::from_micros(rng.gen_range(lo..=hi))
                }
            }
            Latency::LongTail { median, p99, max } => {
                // Box-Muller gives a standard normal z; the log-normal with
                // median m and 99th percentile q is m * exp(sigma * z) with
                // sigma = ln(q / m) / z_0.99.
                const Z99: f64 = 2.326_347_874;
                let m = median.as_secs_f64();
                let q = p99.as_secs_f64().max(m);
                let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
                let u2: f64 = rng.gen();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let sigma = if m > 0.0 { (q / m).ln() / Z99 } else { 0.0 };
                let secs = (m * (sigma * z).exp()).min(max.as_secs_f64());
                Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(max)
            }
        }
    }
}

/// What can go wrong with a request, each with its probability. The
/// probabilities are of mutually exclusive faults per call and must sum to
/// at most 1; the rest of the calls pass.
///
/// In a scenario file this is the `[faults]` table:
/// ```toml
/// [faults]
/// latency = { kind = "uniform", min = "10ms", max = "200ms" }
/// timeout = "10s"
/// drop = 0.1          # request lost: nothing applied, Timeout after `timeout`
/// server_error = 0.05 # 5xx before apply
/// rate_limit = 0.05   # 429 with `retry_after`
/// retry_after = "2s"
/// lost_ack = 0.1      # applied, answer lost: Timeout after `timeout`
/// partial_batch = 0.05 # a prefix applied, the rest answered RetryLater
/// corrupt = 0.01      # applied, answer that does not match the batch
/// reorder = 0.05      # applied, outcomes answered in another order
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultPlan {
    /// Round-trip latency of every call that reaches the remote.
    pub latency: Latency,
    /// How long the client waits before `Timeout` (dropped requests, lost
    /// answers, degraded links, and answers slower than this).
    #[serde(with = "humane")]
    pub timeout: Duration,
    /// Request lost on the way: nothing applied, the client sees `Timeout`.
    pub drop: Probability,
    /// The server fails before applying anything: `Server { status }`.
    pub server_error: Probability,
    /// Status of the server errors (default 503).
    pub server_error_status: u16,
    /// The server sheds load: `RateLimited { retry_after }`.
    pub rate_limit: Probability,
    /// The `Retry-After` of the rate-limit answers (default 1s; `None` in
    /// code sends no hint).
    #[serde(with = "humane_opt", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Duration>,
    /// The batch is applied but the answer is lost: `Timeout`.
    pub lost_ack: Probability,
    /// Only a random prefix of the batch is sent on; the rest is answered
    /// `RetryLater { after: None }`.
    pub partial_batch: Probability,
    /// The batch is applied and the answer does not match it: one outcome
    /// missing, or one extra naming an operation that was never sent. The
    /// wrapper returns it as is: detecting it (see
    /// `cpc_core::match_outcomes`) is the caller's job.
    pub corrupt: Probability,
    /// The batch is applied and its outcomes come back in another order
    /// (reversed). An honest answer: a caller that matches outcomes by
    /// operation id, as it must, is unaffected; one that matches by position
    /// acknowledges the wrong operations.
    pub reorder: Probability,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            latency: Latency::None,
            timeout: Duration::from_secs(10),
            drop: Probability::NEVER,
            server_error: Probability::NEVER,
            server_error_status: 503,
            rate_limit: Probability::NEVER,
            retry_after: Some(Duration::from_secs(1)),
            lost_ack: Probability::NEVER,
            partial_batch: Probability::NEVER,
            corrupt: Probability::NEVER,
            reorder: Probability::NEVER,
        }
    }
}

impl FaultPlan {
    /// A plan without faults or latency.
    pub fn none() -> Self {
        FaultPlan::default()
    }

    /// Checks what serde cannot: the probabilities sum to at most 1, the
    /// timeout is not zero, the latency bounds are ordered and the status is
    /// a 5xx.
    pub fn validate(&self) -> Result<()> {
        let sum = self.drop.get()
            + self.server_error.get()
            + self.rate_limit.get()
            + self.lost_ack.get()
            + self.partial_batch.get()
            + self.corrupt.get()
            + self.reorder.get();
        if sum > 1.0 + 1e-9 {
            return Err(Error::invalid(
                "faults",
                format!("drop + server_error + rate_limit + lost_ack + partial_batch + corrupt + reorder = {sum}, more than 1"),
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid("faults.timeout", "must be longer than zero"));
        }
        match self.latency {
            Latency::Uniform { min, max } if max < min => {
                return Err(Error::invalid(
                    "faults.latency",
                    "`max` must not be below `min`",
                ))
            }
            Latency::LongTail { median, p99, max } if p99 < median || max < median => {
                return Err(Error::invalid(
                    "faults.latency",
                    "a long tail needs median <= p99 and median <= max",
                ))
            }
            _ => {}
        }
        if !(500..=599).contains(&self.server_error_status) {
            return Err(Error::invalid(
                "faults.server_error_status",
                format!("{} is not a 5xx status", self.server_error_status),
            ));
        }
        Ok(())
    }
}

/// What happened to each call, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounters {
    /// Every call to `push`.
    pub calls: u64,
    /// Operations in those calls (an operation sent three times counts 3).
    pub ops_sent: u64,
    /// Calls passed through untouched (whatever the inner transport said).
    pub passed: u64,
    /// Refused at once during a scheduled outage.
    pub offline: u64,
    /// Failed on a degraded link (timeout, nothing applied).
    pub degraded: u64,
    /// Dropped (timeout, nothing applied).
    pub dropped: u64,
    /// Answered 5xx before apply.
    pub server_errors: u64,
    /// Answered 429.
    pub rate_limited: u64,
    /// Applied, answer lost (timeout).
    pub lost_acks: u64,
    /// Answered slower than the timeout: applied, client saw `Timeout`.
    pub slow_timeouts: u64,
    /// Only a prefix applied.
    pub partial: u64,
    /// Applied, answer that does not match the batch.
    pub corrupt: u64,
    /// Applied, outcomes answered in another order.
    pub reordered: u64,
    /// Calls where the inner transport itself failed (counted within the
    /// categories above too, e.g. `passed`).
    pub inner_errors: u64,
}

impl fmt::Display for FaultCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "calls {} ops_sent {} passed {} offline {} degraded {} dropped {} server_errors {} rate_limited {} lost_acks {} slow_timeouts {} partial {} corrupt {} reordered {} inner_errors {}",
            self.calls,
            self.ops_sent,
            self.passed,
            self.offline,
            self.degraded,
            self.dropped,
            self.server_errors,
            self.rate_limited,
            self.lost_acks,
            self.slow_timeouts,
            self.partial,
            self.corrupt,
            self.reordered,
            self.inner_errors
        )
    }
}

/// The fault chosen for one call (drawn before anything is sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Pass,
    Offline,
    Degraded,
    Drop,
    ServerError,
    RateLimit,
    LostAck,
    Partial(usize),
    Corrupt { extra: bool },
    Reorder,
}

struct FaultState {
    rng: StdRng,
    /// Pulls draw from their own stream, so that turning pulls on does not
    /// change the faults pushes meet.
    pull_rng: StdRng,
    counters: FaultCounters,
    first_attempts: Option<HashMap<OperationId, Duration>>,
}

/// Wraps a transport and injects the faults of a [`FaultPlan`] and the
/// outages of a [`Schedule`].
///
/// Every decision is drawn from one `StdRng` seeded at construction, in
/// call order, in a fixed order within a call (link state, then latency,
/// then the fault, then its details), so a run on a current-thread runtime
/// with a paused clock is reproducible from its seed. All waiting uses
/// tokio's clock.
///
/// The handle is cheap to clone; clones share the RNG, the counters and the
/// inner transport.
pub struct FaultyTransport<T> {
    inner: Arc<T>,
    plan: Arc<FaultPlan>,
    schedule: Arc<Schedule>,
    clock: SimClock,
    state: Arc<Mutex<FaultState>>,
}

impl<T> Clone for FaultyTransport<T> {
    fn clone(&self) -> Self {
        FaultyTransport {
            inner: Arc::clone(&self.inner),
            plan: Arc::clone(&self.plan),
            schedule: Arc::clone(&self.schedule),
            clock: self.clock,
            state: Arc::clone(&self.state),
        }
    }
}

impl<T> fmt::Debug for FaultyTransport<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyTransport")
            .field("plan", &self.plan)
            .field("schedule", &self.schedule)
            .field("counters", &self.counters())
            .finish()
    }
}

impl<T: Transport> FaultyTransport<T> {
    /// Wraps `inner` with `plan`, seeding the decisions with `seed`. No
    /// scheduled outages; the time line starts now.
    pub fn new(inner: T, plan: FaultPlan, seed: u64) -> Self {
        FaultyTransport {
            inner: Arc::new(inner),
            plan: Arc::new(plan),
            schedule: Arc::new(Schedule::always_online()),
            clock: SimClock::start_now(),
            state: Arc::new(Mutex::new(FaultState {
                rng: StdRng::seed_from_u64(seed),
                pull_rng: StdRng::seed_from_u64(seed ^ 0x7075_6c6c_7075_6c6c),
                counters: FaultCounters::default(),
                first_attempts: Some(HashMap::new()),
            })),
        }
    }

    /// Uses `schedule` for outages.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Arc::new(schedule);
        self
    }

    /// Uses `clock` as the time line (share it with the remote and the
    /// scripted network).
    pub fn with_clock(mut self, clock: SimClock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether to remember when each operation was first sent (on by
    /// default; the checker uses it to tell priority inversions from
    /// backoff). Costs one map entry per operation.
    pub fn track_first_attempts(self, on: bool) -> Self {
        self.lock().first_attempts = on.then(HashMap::new);
        self
    }
}

impl<T> FaultyTransport<T> {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        // Counters and the RNG stay consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// The outage schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The time line.
    pub fn clock(&self) -> SimClock {
        self.clock
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> FaultCounters {
        self.lock().counters.clone()
    }

    /// When `id` was first handed to this transport (any outcome), if it
    /// was and tracking is on.
    pub fn first_attempt(&self, id: OperationId) -> Option<Duration> {
        self.lock()
            .first_attempts
            .as_ref()
            .and_then(|m| m.get(&id).copied())
    }

    /// A copy of all first-attempt times (empty when tracking is off).
    pub fn first_attempts(&self) -> HashMap<OperationId, Duration> {
        self.lock().first_attempts.clone().unwrap_or_default()
    }

    /// Draws every decision for one call, in a fixed order.
    fn decide(&self, batch: &[Operation]) -> (Fault, Duration) {
        let now = self.clock.elapsed();
        let condition = self.schedule.condition_at(now);
        let mut guard = self.lock();
        let st = &mut *guard;
        st.counters.calls += 1;
        st.counters.ops_sent += batch.len() as u64;
        if let Some(map) = st.first_attempts.as_mut() {
            for op in batch {
                map.entry(op.id).or_insert(now);
            }
        }
        match condition {
            LinkCondition::Offline => {
                st.counters.offline += 1;
                return (Fault::Offline, Duration::ZERO);
            }
            LinkCondition::Degraded(p) => {
                if st.rng.gen::<f64>() < p {
                    st.counters.degraded += 1;
                    return (Fault::Degraded, Duration::ZERO);
                }
            }
            LinkCondition::Online => {}
        }
        let latency = self.plan.latency.sample(&mut st.rng);
        let u: f64 = st.rng.gen();
        let p = &self.plan;
        // One uniform draw picks at most one fault: the unit interval is cut
        // into consecutive regions, one per fault, the rest means "pass".
        let regions = [
            p.drop,
            p.server_error,
            p.rate_limit,
            p.lost_ack,
            p.partial_batch,
            p.corrupt,
            p.reorder,
        ];
        let mut edge = 0.0;
        let mut region = regions.len();
        for (i, prob) in regions.iter().enumerate() {
            edge += prob.get();
            if u < edge {
                region = i;
                break;
            }
        }
        let fault = match region {
            0 => {
                st.counters.dropped += 1;
                Fault::Drop
            }
            1 => {
                st.counters.server_errors += 1;
                Fault::ServerError
            }
            2 => {
                st.counters.rate_limited += 1;
                Fault::RateLimit
            }
            3 => {
                st.counters.lost_acks += 1;
                Fault::LostAck
            }
            // A batch of one has no proper prefix: it passes.
            4 if batch.len() > 1 => {
                st.counters.partial += 1;
                Fault::Partial(st.rng.gen_range(0..batch.len()))
            }
            5 => {
                st.counters.corrupt += 1;
                Fault::Corrupt {
                    extra: batch.is_empty() || st.rng.gen::<bool>(),
                }
            }
            // A batch of one has no other order: it passes.
            6 if batch.len() > 1 => {
                st.counters.reordered += 1;
                Fault::Reorder
            }
            _ => {
                st.counters.passed += 1;
                Fault::Pass
            }
        };
        (fault, latency)
    }

    fn count_inner_error(&self) {
        self.lock().counters.inner_errors += 1;
    }

    fn count_slow_timeout(&self) {
        self.lock().counters.slow_timeouts += 1;
    }
}

impl<T> FaultyTransport<T> {
    /// A pull's fate: offline in an outage, a timeout on a degraded link
    /// (drawn), else the latency to wait (drawn), all from the pull stream.
    fn decide_pull(&self) -> Result<Duration, TransportError> {
        let now = self.clock.elapsed();
        let condition = self.schedule.condition_at(now);
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        match condition {
            LinkCondition::Offline => return Err(TransportError::Offline),
            LinkCondition::Degraded(p) if st.pull_rng.gen::<f64>() < p => {
                return Err(TransportError::Timeout)
            }
            _ => {}
        }
        let latency = self.plan.latency.sample(&mut st.pull_rng);
        if latency >= self.plan.timeout {
            return Err(TransportError::Timeout);
        }
        Ok(latency)
    }
}

#[async_trait]
impl<T: Transport> Transport for FaultyTransport<T> {
    /// Pulls meet the scheduled outages (offline, degraded links) and the
    /// plan's latency; the per-request faults of pushes (drops, lost
    /// answers, corruption) are not drawn for pulls.
    async fn pull(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        let started = tokio::time::Instant::now();
        match self.decide_pull() {
            Ok(latency) => {
                tokio::time::sleep_until(started + latency).await;
                self.inner.pull(query).await
            }
            Err(TransportError::Timeout) => {
                tokio::time::sleep_until(started + self.plan.timeout).await;
                Err(TransportError::Timeout)
            }
            Err(e) => Err(e),
        }
    }

    async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
        let batch = query.ops;
        let started = tokio::time::Instant::now();
        let (fault, latency) = self.decide(batch);
        let timeout = self.plan.timeout;
        let wait_until = |d: Duration| tokio::time::sleep_until(started + d);
        tracing::trace!(
            ops = batch.len(),
            fault = ?fault,
            latency_us = latency.as_micros() as u64,
            "faulty transport call"
        );
        match fault {
            Fault::Offline => return Err(TransportError::Offline),
            Fault::Degraded | Fault::Drop => {
                wait_until(timeout).await;
                return Err(TransportError::Timeout);
            }
            Fault::ServerError => {
                wait_until(latency.min(timeout)).await;
                return Err(TransportError::Server {
                    status: self.plan.server_error_status,
                });
            }
            Fault::RateLimit => {
                wait_until(latency.min(timeout)).await;
                return Err(TransportError::RateLimited {
                    retry_after: self.plan.retry_after,
                });
            }
            _ => {}
        }
        // The request travels for half the latency. If even that exceeds
        // the timeout it never arrives in time to matter: a plain timeout.
        let there = latency / 2;
        if there >= timeout {
            self.count_slow_timeout();
            wait_until(timeout).await;
            return Err(TransportError::Timeout);
        }
        wait_until(there).await;
        let sent: &[Operation] = match fault {
            Fault::Partial(k) => &batch[..k],
            _ => batch,
        };
        let answer = self
            .inner
            .push(&PushQuery {
                ops: sent,
                known: query.known,
            })
            .await;
        if answer.is_err() {
            self.count_inner_error();
        }
        if fault == Fault::LostAck {
            wait_until(timeout).await;
            return Err(TransportError::Timeout);
        }
        // Measured from the call start, so an inner transport that itself
        // takes time still counts against the timeout.
        if started.elapsed() + (latency - there) > timeout {
            self.count_slow_timeout();
            wait_until(timeout).await;
            return Err(TransportError::Timeout);
        }
        tokio::time::sleep(latency - there).await;
        let mut answer = answer?;
        let outcomes = &mut answer.outcomes;
        match fault {
            Fault::Partial(k) => {
                outcomes.extend(
                    batch[k..]
                        .iter()
                        .map(|op| OpOutcome::new(op.id, PushOutcome::RetryLater { after: None })),
                );
            }
            Fault::Corrupt { extra } => {
                if extra {
                    // An operation that was never sent.
                    outcomes.push(OpOutcome::new(
                        OperationId::from_u128(u128::MAX),
                        PushOutcome::Applied { version: 0 },
                    ));
                } else {
                    outcomes.pop();
                }
            }
            Fault::Reorder => outcomes.reverse(),
            _ => {}
        }
        Ok(answer)
    }
}
