//! [`CircuitBreaker`]: stop hammering a remote that keeps failing.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::jitter::to_ns;
use crate::{
    duration_format, BackoffStrategy, ConfigError, Error, Exponential, ExponentialConfig, Jitter,
};
use cpc_core::time::{Instant, MonotonicClock, TokioClock};

/// Configuration of a [`CircuitBreaker`].
///
/// Defaults: open after 5 consecutive failures (no failure-rate rule), one
/// probe when half-open, cool-down 5 s doubling per consecutive opening up
/// to 5 min with equal jitter (so a fleet of devices does not probe in step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open a closed breaker (`>= 1`).
    pub failure_threshold: u32,
    /// Also open when the failure rate over a sliding window is too high.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRateConfig>,
    /// Probes admitted while half-open (`>= 1`); that many must succeed in
    /// a row to close.
    pub half_open_probes: u32,
    /// The cool-down after the `n`-th consecutive opening is this strategy's
    /// delay for attempt `n`: each failed probe re-opens for longer.
    pub cool_down: ExponentialConfig,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            failure_rate: None,
            half_open_probes: 1,
            cool_down: ExponentialConfig {
                base: Duration::from_secs(5),
                factor: 2.0,
                max_delay: Duration::from_secs(300),
                jitter: Jitter::Equal,
            },
        }
    }
}

impl CircuitBreakerConfig {
    /// Checks every field; see [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::Zero {
                field: "failure_threshold",
            });
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::Zero {
                field: "half_open_probes",
            });
        }
        if let Some(rate) = &self.failure_rate {
            rate.validate()?;
        }
        self.cool_down.build().map(|_| ())
    }
}

/// The failure-rate rule: open when, over the last `window`, at least
/// `min_calls` results were recorded and the share of failures is at least
/// `threshold`.
///
/// The window is kept as 10 buckets of `window / 10`: constant memory
/// whatever the call rate, with a granularity of a tenth of the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureRateConfig {
    /// Share of failures that opens the breaker, in `(0, 1]`. Default 0.5.
    pub threshold: f64,
    /// Length of the sliding window. Default 60 s.
    #[serde(with = "duration_format")]
    pub window: Duration,
    /// Fewer results than this never open the breaker. Default 20.
    pub min_calls: u32,
}

impl Default for FailureRateConfig {
    fn default() -> Self {
        FailureRateConfig {
            threshold: 0.5,
            window: Duration::from_secs(60),
            min_calls: 20,
        }
    }
}

impl FailureRateConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(ConfigError::InvalidFailureRate {
                threshold: self.threshold,
            });
        }
        if self.window < Duration::from_nanos(WINDOW_BUCKETS as u64) {
            return Err(ConfigError::Zero {
                field: "failure_rate.window",
            });
        }
        if self.min_calls == 0 {
            return Err(ConfigError::Zero {
                field: "failure_rate.min_calls",
            });
        }
        Ok(())
    }
}

/// The state of a breaker, as reported (the cool-down and counters are in
/// [`BreakerSnapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; failures are counted.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// A few probes are let through to test the remote.
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        })
    }
}

/// A consistent view of a breaker at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// The state.
    pub state: BreakerState,
    /// Consecutive failures counted while closed.
    pub consecutive_failures: u32,
    /// Consecutive openings without a close in between (drives the
    /// cool-down backoff).
    pub opens: u32,
    /// When an open breaker turns half-open.
    pub open_until: Option<Instant>,
}

/// A circuit breaker: closed → open after `failure_threshold` consecutive
/// failures (or a failure rate over a window), open → half-open after a
/// cool-down, half-open admits `half_open_probes` probes; when they all
/// succeed it closes, when one fails it re-opens with a longer cool-down.
///
/// Every admitted call holds a [`BreakerPermit`] and reports through it.
/// Results of calls admitted before the last transition are ignored (a slow
/// call started while closed cannot close a breaker that opened since), and
/// a permit dropped without a verdict (a cancelled call) frees its probe
/// slot, so a half-open breaker never waits forever.
///
/// Time comes from a [`MonotonicClock`] (tokio's by default), so tests run on a
/// paused clock. Thread-safe: `&self` methods behind a short mutex.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    cool_down: Exponential,
    clock: Arc<dyn MonotonicClock>,
    inner: Mutex<Inner>,
}

/// Permission to make one call through a [`CircuitBreaker`]; report its
/// outcome with [`success`](Self::success) or [`failure`](Self::failure).
/// Dropping it without a verdict counts as neither.
#[derive(Debug)]
#[must_use = "report the outcome with `success()` or `failure()`"]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    probe: bool,
    settled: bool,
}

impl BreakerPermit<'_> {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The call succeeded.
    pub fn success(mut self) {
        self.settled = true;
        self.breaker
            .settle(self.generation, self.probe, Verdict::Success);
    }

    /// The call failed in a way that counts against the remote (timeouts,
    /// 5xx, connection errors; not a conflict or a rejected operation).
    pub fn failure(mut self) {
        self.settled = true;
        self.breaker
            .settle(self.generation, self.probe, Verdict::Failure);
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker
                .settle(self.generation, self.probe, Verdict::Abandoned);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    Abandoned,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped at every transition; permits of older generations are ignored.
    generation: u64,
    consecutive_failures: u32,
    opens: u32,
    window: Option<RateWindow>,
    rng: StdRng,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

impl CircuitBreaker {
    /// A closed breaker on tokio's clock; cool-down jitter seeded from the OS.
    pub fn new(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let cool_down = config.cool_down.build()?;
        let window = config.failure_rate.as_ref().map(RateWindow::new);
        let inner = Inner {
            phase: Phase::Closed,
            generation: 0,
            consecutive_failures: 0,
            opens: 0,
            window,
            rng: StdRng::from_entropy(),
        };
        Ok(CircuitBreaker {
            config,
            cool_down,
            clock: Arc::new(TokioClock),
            inner: Mutex::new(inner),
        })
    }

    /// Reads time from `clock` instead of tokio's clock.
    pub fn with_clock(mut self, clock: Arc<dyn MonotonicClock>) -> Self {
        self.clock = clock;
        self
    }

    /// Seeds the cool-down jitter, for reproducible runs.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.inner.get_mut().unwrap_or_else(|p| p.into_inner()).rng = StdRng::seed_from_u64(seed);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// Asks to make one call. Closed: admitted. Open: refused with the time
    /// left. Half-open: admitted as a probe while probe slots are free.
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_>, Error> {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        let generation = inner.generation;
        match &mut inner.phase {
            Phase::Closed => Ok(BreakerPermit {
                breaker: self,
                generation,
                probe: false,
                settled: false,
            }),
            Phase::Open { until } => Err(Error::CircuitOpen {
                state: BreakerState::Open,
                retry_after: until.saturating_duration_since(now),
            }),
            Phase::HalfOpen { admitted, .. } if *admitted < self.config.half_open_probes => {
                *admitted += 1;
                Ok(BreakerPermit {
                    breaker: self,
                    generation,
                    probe: true,
                    settled: false,
                })
            }
            Phase::HalfOpen { .. } => Err(Error::CircuitOpen {
                state: BreakerState::HalfOpen,
                retry_after: Duration::ZERO,
            }),
        }
    }

    /// The current state (an open breaker whose cool-down ended reports
    /// half-open).
    pub fn state(&self) -> BreakerState {
        self.snapshot().state
    }

    /// State and counters at this instant.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        let (state, open_until) = match inner.phase {
            Phase::Closed => (BreakerState::Closed, None),
            Phase::Open { until } => (BreakerState::Open, Some(until)),
            Phase::HalfOpen { .. } => (BreakerState::HalfOpen, None),
        };
        BreakerSnapshot {
            state,
            consecutive_failures: inner.consecutive_failures,
            opens: inner.opens,
            open_until,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every transition writes the whole phase at once, so state behind a
        // poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Open → half-open once the cool-down has passed.
    fn refresh(&self, inner: &mut Inner, now: Instant) {
        if let Phase::Open { until } = inner.phase {
            if now >= until {
                inner.phase = Phase::HalfOpen {
                    admitted: 0,
                    succeeded: 0,
                };
                inner.generation = inner.generation.wrapping_add(1);
                tracing::debug!(opens = inner.opens, "circuit breaker half-open");
            }
        }
    }

    fn settle(&self, generation: u64, probe: bool, verdict: Verdict) {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        if generation != inner.generation {
            return;
        }
        match (inner.phase, verdict) {
            (Phase::Closed, Verdict::Success) => {
                inner.consecutive_failures = 0;
                if let Some(window) = &mut inner.window {
                    window.record(now, false);
                }
            }
            (Phase::Closed, Verdict::Failure) => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                let rate_tripped = match (&mut inner.window, &self.config.failure_rate) {
                    (Some(window), Some(rule)) => {
                        window.record(now, true);
                        window.exceeds(now, rule)
                    }
                    _ => false,
                };
                if inner.consecutive_failures >= self.config.failure_threshold || rate_tripped {
                    self.open(&mut inner, now);
                }
            }
            (
                Phase::HalfOpen {
                    admitted,
                    succeeded,
                },
                Verdict::Success,
            ) if probe => {
                let succeeded = succeeded + 1;
                if succeeded >= self.config.half_open_probes {
                    self.close(&mut inner);
                } else {
                    inner.phase = Phase::HalfOpen {
                        admitted,
                        succeeded,
                    };
                }
            }
            (Phase::HalfOpen { .. }, Verdict::Failure) if probe => self.open(&mut inner, now),
            (
                Phase::HalfOpen {
                    admitted,
                    succeeded,
                },
                Verdict::Abandoned,
            ) if probe => {
                inner.phase = Phase::HalfOpen {
                    admitted: admitted.saturating_sub(1),
                    succeeded,
                };
            }
            _ => {}
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        inner.opens = inner.opens.saturating_add(1);
        // An exponential strategy without limits always answers.
        let cool_down = self
            .cool_down
            .delay(inner.opens, &mut inner.rng)
            .unwrap_or(self.cool_down.max_delay());
        // `checked_add` fails only centuries ahead; opening "until now" then
        // degrades to an immediate half-open probe rather than a panic.
        let until = now.checked_add(cool_down).unwrap_or(now);
        inner.phase = Phase::Open { until };
        inner.generation = inner.generation.wrapping_add(1);
        inner.consecutive_failures = 0;
        if let Some(window) = &mut inner.window {
            window.clear();
        }
        tracing::info!(
            opens = inner.opens,
            cool_down_ms = to_ns(cool_down) / 1_000_000,
            "circuit breaker opened"
        );
    }

    fn close(&self, inner: &mut Inner) {
        inner.phase = Phase::Closed;
        inner.generation = inner.generation.wrapping_add(1);
        inner.consecutive_failures = 0;
        inner.opens = 0;
        if let Some(window) = &mut inner.window {
            window.clear();
        }
        tracing::info!("circuit breaker closed");
    }
}

const WINDOW_BUCKETS: usize = 10;
const EMPTY: u64 = u64::MAX;

/// Counts of successes and failures over a sliding window, in fixed buckets.
#[derive(Debug, Clone)]
struct RateWindow {
    bucket_ns: u128,
    /// Bucket indices count from the first recorded result.
    epoch: Option<Instant>,
    buckets: [WindowBucket; WINDOW_BUCKETS],
}

#[derive(Debug, Clone, Copy)]
struct WindowBucket {
    index: u64,
    ok: u32,
    failed: u32,
}

impl RateWindow {
    fn new(rule: &FailureRateConfig) -> Self {
        let bucket_ns = (rule.window.as_nanos() / WINDOW_BUCKETS as u128).max(1);
        RateWindow {
            bucket_ns,
            epoch: None,
            buckets: [WindowBucket {
                index: EMPTY,
                ok: 0,
                failed: 0,
            }; WINDOW_BUCKETS],
        }
    }

    fn index(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        let index = now.saturating_duration_since(epoch).as_nanos() / self.bucket_ns;
        // `EMPTY` marks unused buckets; no window reaches it in practice.
        u64::try_from(index).unwrap_or(EMPTY - 1).min(EMPTY - 1)
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let index = self.index(now);
        let bucket = &mut self.buckets[(index % WINDOW_BUCKETS as u64) as usize];
        if bucket.index != index {
            *bucket = WindowBucket {
                index,
                ok: 0,
                failed: 0,
            };
        }
        if failed {
            bucket.failed = bucket.failed.saturating_add(1);
        } else {
            bucket.ok = bucket.ok.saturating_add(1);
        }
    }

    fn exceeds(&mut self, now: Instant, rule: &FailureRateConfig) -> bool {
        let index = self.index(now);
        let (mut ok, mut failed) = (0u64, 0u64);
        for bucket in &self.buckets {
            if bucket.index != EMPTY
                && bucket.index <= index
                && index - bucket.index < WINDOW_BUCKETS as u64
            {
                ok += u64::from(bucket.ok);
                failed += u64::from(bucket.failed);
            }
        }
        let total = ok + failed;
        total >= u64::from(rule.min_calls) && failed as f64 >= rule.threshold * total as f64
    }

    fn clear(&mut self) {
        for bucket in &mut self.buckets {
            bucket.index = EMPTY;
        }
    }
}
