//! [`RetryBudget`]: a token bucket that stops retry storms.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Error};
use cpc_core::time::{Instant, MonotonicClock, TokioClock};

/// Configuration of a [`RetryBudget`]. The defaults are the AWS SDKs'
/// standard retry quota plus a slow refill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Tokens the bucket holds when full (and at start). Default 500.
    pub capacity: u32,
    /// Tokens a retry after an error costs. Default 5.
    pub retry_cost: u32,
    /// Tokens a retry after a timeout costs (timeouts hint at an overloaded
    /// remote, so they cost more). Default 10.
    pub timeout_retry_cost: u32,
    /// Tokens deposited when a first attempt succeeds. Default 1. (A
    /// successful retry refunds what it cost instead.)
    pub success_refund: u32,
    /// Tokens added per second whatever happens; `0` disables the refill.
    /// Default 10, i.e. two retries per second once drained.
    ///
    /// Why a refill: the AWS quota only refills on successes, and an SDK can
    /// fail a refused request back to its caller. The sync worker cannot; if
    /// every pending operation is a retry and the bucket is empty, only the
    /// refill lets one of them through to find out that the remote is back.
    pub refill_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            capacity: 500,
            retry_cost: 5,
            timeout_retry_cost: 10,
            success_refund: 1,
            refill_per_second: 10,
        }
    }
}

impl RetryBudgetConfig {
    /// Checks that the bucket is non-empty and every amount fits in it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::Zero { field: "capacity" });
        }
        for (field, value) in [
            ("retry_cost", self.retry_cost),
            ("timeout_retry_cost", self.timeout_retry_cost),
            ("success_refund", self.success_refund),
        ] {
            if value > self.capacity {
                return Err(ConfigError::ExceedsCapacity {
                    field,
                    value,
                    capacity: self.capacity,
                });
            }
        }
        Ok(())
    }
}

/// Why a retry is made: decides what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryCause {
    /// The previous attempt failed with an error (5xx, connect, ...).
    Error,
    /// The previous attempt timed out.
    Timeout,
}

/// Proof that an attempt was admitted, and what it cost. Hand it back to
/// [`RetryBudget::record_success`] when the attempt succeeds; drop it when it
/// fails (the tokens stay spent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "pass the permit to `record_success` when the attempt succeeds"]
pub struct RetryPermit {
    cost: u32,
}

impl RetryPermit {
    /// The permit of a first attempt: free, never refused.
    pub const FIRST_ATTEMPT: RetryPermit = RetryPermit { cost: 0 };

    /// Tokens withdrawn for this attempt (0 for a first attempt).
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Whether the permit is for a retry.
    pub fn is_retry(&self) -> bool {
        self.cost > 0
    }
}

/// A token bucket shared by all operations of a worker (the AWS SDK "retry
/// quota"): each retry withdraws tokens, each success deposits some back,
/// and when the bucket is empty retries are refused until it refills. First
/// attempts are never refused, so fresh work always flows and its successes
/// refill the bucket.
///
/// Thread-safe: every method takes `&self` and holds a short mutex (a few
/// integer operations).
#[derive(Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    clock: Arc<dyn MonotonicClock>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    /// Refill credit is counted from here; advanced by exactly the time the
    /// credited tokens took, so fractions of a token are never lost.
    last_refill: Instant,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl RetryBudget {
    /// A full budget on tokio's clock.
    pub fn new(config: RetryBudgetConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, Arc::new(TokioClock))
    }

    /// A full budget on the given clock.
    pub fn with_clock(
        config: RetryBudgetConfig,
        clock: Arc<dyn MonotonicClock>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let bucket = Bucket {
            tokens: config.capacity,
            last_refill: clock.now(),
        };
        Ok(RetryBudget {
            config,
            clock,
            bucket: Mutex::new(bucket),
        })
    }

    /// Admits an attempt of an operation that has already been tried
    /// `attempts_made` times. A first attempt (`0`) is always admitted for
    /// free; a retry withdraws its cost or is refused with
    /// [`Error::BudgetExhausted`].
    pub fn try_acquire(&self, attempts_made: u32, cause: RetryCause) -> Result<RetryPermit, Error> {
        if attempts_made == 0 {
            return Ok(RetryPermit::FIRST_ATTEMPT);
        }
        let cost = match cause {
            RetryCause::Error => self.config.retry_cost,
            RetryCause::Timeout => self.config.timeout_retry_cost,
        };
        let mut bucket = self.lock_refilled();
        if bucket.tokens < cost {
            let available = bucket.tokens;
            drop(bucket);
            tracing::debug!(available, cost, "retry refused by budget");
            return Err(Error::BudgetExhausted { available, cost });
        }
        bucket.tokens -= cost;
        Ok(RetryPermit { cost })
    }

    /// Records that an admitted attempt succeeded: a retry refunds its cost,
    /// a first attempt deposits `success_refund`. Never above capacity.
    pub fn record_success(&self, permit: RetryPermit) {
        let amount = if permit.is_retry() {
            permit.cost
        } else {
            self.config.success_refund
        };
        let mut bucket = self.lock_refilled();
        bucket.tokens = bucket
            .tokens
            .saturating_add(amount)
            .min(self.config.capacity);
    }

    /// Tokens available now (after any refill due).
    pub fn available(&self) -> u32 {
        self.lock_refilled().tokens
    }

    /// The configuration.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    fn lock_refilled(&self) -> MutexGuard<'_, Bucket> {
        // A panic while holding this lock cannot leave the two integers
        // inconsistent, so a poisoned lock is still usable.
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = self.clock.now();
        let rate = u128::from(self.config.refill_per_second);
        if rate == 0 || bucket.tokens >= self.config.capacity {
            // Nothing accrues while full (or without refill).
            bucket.last_refill = now;
            return bucket;
        }
        let elapsed = now.saturating_duration_since(bucket.last_refill).as_nanos();
        let whole = elapsed.saturating_mul(rate) / NANOS_PER_SEC;
        if whole > 0 {
            let room = u128::from(self.config.capacity - bucket.tokens);
            if whole >= room {
                bucket.tokens = self.config.capacity;
                bucket.last_refill = now;
            } else {
                // `whole < room <= u32::MAX`, so the casts cannot truncate.
                bucket.tokens += whole as u32;
                // Rounded down: at most a nanosecond of credit is re-used per
                // refill, never lost (rounding up would starve a bucket that is
                // probed often).
                let spent_ns = whole * NANOS_PER_SEC / rate;
                let spent = Duration::from_nanos(u64::try_from(spent_ns).unwrap_or(u64::MAX));
                bucket.last_refill = bucket
                    .last_refill
                    .checked_add(spent)
                    .unwrap_or(now)
                    .min(now);
            }
        }
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(refill_per_second: u32) -> RetryBudgetConfig {
        RetryBudgetConfig {
            capacity: 20,
            retry_cost: 5,
            timeout_retry_cost: 10,
            success_refund: 1,
            refill_per_second,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn drains_refuses_and_first_attempts_still_pass() {
        let budget = RetryBudget::new(config(0)).unwrap();
        assert_eq!(budget.try_acquire(1, RetryCause::Error).unwrap().cost(), 5);
        assert_eq!(
            budget.try_acquire(3, RetryCause::Timeout).unwrap().cost(),
            10
        );
        assert_eq!(budget.try_acquire(1, RetryCause::Error).unwrap().cost(), 5);
        assert_eq!(budget.available(), 0);
        assert_eq!(
            budget.try_acquire(1, RetryCause::Error),
            Err(Error::BudgetExhausted {
                available: 0,
                cost: 5
            })
        );
        // First attempts are never refused and cost nothing.
        for _ in 0..100 {
            assert_eq!(
                budget.try_acquire(0, RetryCause::Timeout),
                Ok(RetryPermit::FIRST_ATTEMPT)
            );
        }
        assert_eq!(budget.available(), 0);
        // Without refill, time alone does not help.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(budget.try_acquire(1, RetryCause::Error).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn recovers_after_successes() {
        let budget = RetryBudget::new(config(0)).unwrap();
        let permits: Vec<_> = (0..4)
            .map(|_| budget.try_acquire(1, RetryCause::Error).unwrap())
            .collect();
        assert!(budget.try_acquire(1, RetryCause::Error).is_err());
        // Five first-attempt successes deposit one token each: one retry.
        for _ in 0..5 {
            budget.record_success(RetryPermit::FIRST_ATTEMPT);
        }
        assert_eq!(budget.available(), 5);
        let p = budget.try_acquire(1, RetryCause::Error).unwrap();
        assert!(budget.try_acquire(1, RetryCause::Error).is_err());
        // A successful retry refunds its cost; never above capacity.
        budget.record_success(p);
        assert_eq!(budget.available(), 5);
        for p in permits {
            budget.record_success(p);
        }
        assert_eq!(budget.available(), 20);
        budget.record_success(RetryPermit::FIRST_ATTEMPT);
        assert_eq!(budget.available(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn refills_with_time_without_losing_fractions() {
        let budget = RetryBudget::new(config(3)).unwrap();
        for _ in 0..4 {
            let _ = budget.try_acquire(1, RetryCause::Error).unwrap();
        }
        assert_eq!(budget.available(), 0);
        // 3 tokens/s: after 1 s, 3 tokens; probing often must not lose the
        // fractional credit in between.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_millis(100)).await;
            let _ = budget.available();
        }
        assert_eq!(budget.available(), 3);
        tokio::time::advance(Duration::from_millis(700)).await;
        assert_eq!(budget.available(), 5);
        assert!(budget.try_acquire(1, RetryCause::Error).is_ok());
        // Refill stops at capacity, and credit does not accrue while full.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(budget.available(), 20);
        let _ = budget.try_acquire(1, RetryCause::Error).unwrap();
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(budget.available(), 15);
    }

    #[test]
    fn budget_is_shared_across_threads() {
        let budget = Arc::new(
            RetryBudget::new(RetryBudgetConfig {
                refill_per_second: 0,
                ..RetryBudgetConfig::default()
            })
            .unwrap(),
        );
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let budget = Arc::clone(&budget);
                    s.spawn(move || {
                        (0..100)
                            .filter(|_| budget.try_acquire(1, RetryCause::Error).is_ok())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        // 500 tokens at 5 each: exactly 100 retries, however they interleave.
        assert_eq!(admitted, 100);
        assert_eq!(budget.available(), 0);
    }

    #[test]
    fn invalid_configurations_are_rejected() {
        assert_eq!(
            RetryBudget::new(RetryBudgetConfig {
                capacity: 0,
                ..config(0)
            })
            .err(),
            Some(ConfigError::Zero { field: "capacity" })
        );
        assert_eq!(
            RetryBudget::new(RetryBudgetConfig {
                timeout_retry_cost: 21,
                ..config(0)
            })
            .err(),
            Some(ConfigError::ExceedsCapacity {
                field: "timeout_retry_cost",
                value: 21,
                capacity: 20
            })
        );
    }
}
