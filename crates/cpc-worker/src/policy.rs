//! How failures turn into delays: backoff strategy, retry budget, breaker.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpc_backoff::{
    BackoffExt, BackoffStrategy, BreakerPermit, BreakerState, CircuitBreaker, CircuitBreakerConfig,
    Exponential, RetryBudget, RetryBudgetConfig, RetryCause, RetryContext, RetryPermit,
};
use cpc_core::OperationId;
use cpc_storage::EpochMillis;
use rand::RngCore;
use tokio::time::Instant;

/// Default attempt limit of the default strategy (the first send included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 25;

/// The retry policy of a worker: how long to wait after a failure
/// ([`BackoffStrategy`], server hints as a floor), how many retries may run
/// ([`RetryBudget`], shared by every operation: a refused retry is delayed,
/// never dropped) and whether the remote is worth calling at all
/// ([`CircuitBreaker`]).
///
/// Cheap to clone; clones share the budget and the breaker.
#[derive(Clone)]
pub struct RetryPolicy {
    backoff: Arc<dyn BackoffStrategy>,
    budget: Option<Arc<RetryBudget>>,
    breaker: Option<Arc<CircuitBreaker>>,
    state: Arc<Mutex<BudgetState>>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("backoff", &self.backoff)
            .field("budget", &self.budget.as_ref().map(|b| b.available()))
            .field("breaker", &self.breaker.as_ref().map(|b| b.state()))
            .finish()
    }
}

/// Retry permits of operations whose next attempt was paid for, and the
/// pacing of retries the budget refused.
#[derive(Debug, Default)]
struct BudgetState {
    permits: HashMap<OperationId, RetryPermit>,
    /// Refused retries are spaced at the budget's refill rate from here, so
    /// a thousand refusals do not all fire at the same later instant.
    next_slot: EpochMillis,
}

impl Default for RetryPolicy {
    /// Exponential backoff (200 ms doubling to 60 s, full jitter, at most
    /// [`DEFAULT_MAX_ATTEMPTS`] attempts), the default retry budget and the
    /// default circuit breaker.
    fn default() -> Self {
        let budget = RetryBudget::new(RetryBudgetConfig::default())
            .ok()
            .map(Arc::new);
        let breaker = CircuitBreaker::new(CircuitBreakerConfig::default())
            .ok()
            .map(Arc::new);
        RetryPolicy {
            backoff: Arc::new(Exponential::default().with_max_attempts(DEFAULT_MAX_ATTEMPTS)),
            budget,
            breaker,
            state: Arc::default(),
        }
    }
}

impl RetryPolicy {
    /// A policy with `backoff` and neither budget nor breaker.
    pub fn new(backoff: Arc<dyn BackoffStrategy>) -> Self {
        RetryPolicy {
            backoff,
            budget: None,
            breaker: None,
            state: Arc::default(),
        }
    }

    /// Replaces the backoff strategy.
    pub fn with_backoff(mut self, backoff: Arc<dyn BackoffStrategy>) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets (or removes) the shared retry budget.
    pub fn with_budget(mut self, budget: Option<Arc<RetryBudget>>) -> Self {
        self.budget = budget;
        self
    }

    /// Sets (or removes) the circuit breaker.
    pub fn with_breaker(mut self, breaker: Option<Arc<CircuitBreaker>>) -> Self {
        self.breaker = breaker;
        self
    }

    /// The backoff strategy.
    pub fn backoff(&self) -> &Arc<dyn BackoffStrategy> {
        &self.backoff
    }

    /// The retry budget, if any.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
    }

    /// The circuit breaker, if any.
    pub fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        // Plain bookkeeping: a poisoned lock leaves nothing inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a new batch may be claimed now: `Ok` when the breaker is
    /// closed (or absent) or half-open with nothing in flight; otherwise the
    /// instant to look again (`None`: when the in-flight probe completes).
    pub(crate) fn may_claim(&self, in_flight_batches: usize) -> Result<(), Option<Instant>> {
        let Some(breaker) = &self.breaker else {
            return Ok(());
        };
        let snap = breaker.snapshot();
        match snap.state {
            BreakerState::Closed => Ok(()),
            BreakerState::HalfOpen if in_flight_batches == 0 => Ok(()),
            BreakerState::HalfOpen => Err(None),
            BreakerState::Open => Err(Some(snap.open_until.unwrap_or_else(Instant::now))),
        }
    }

    /// Asks the breaker for one push; `Err(retry_after)` when refused.
    pub(crate) fn admit_push(&self) -> Result<Option<BreakerPermit<'_>>, Duration> {
        match &self.breaker {
            None => Ok(None),
            Some(b) => match b.try_acquire() {
                Ok(permit) => Ok(Some(permit)),
                Err(cpc_backoff::Error::CircuitOpen { retry_after, .. }) => Err(retry_after),
                Err(_) => Err(Duration::ZERO),
            },
        }
    }

    /// Operations were delivered (or answered for good): refund each one's
    /// retry permit, or deposit the first-attempt refund; one lock for all.
    pub(crate) fn on_delivered_all(&self, ids: &[OperationId]) {
        if ids.is_empty() {
            return;
        }
        let permits: Vec<RetryPermit> = {
            let mut state = self.state();
            if state.permits.is_empty() {
                Vec::new()
            } else {
                ids.iter()
                    .filter_map(|id| state.permits.remove(id))
                    .collect()
            }
        };
        if let Some(budget) = &self.budget {
            // Every delivery refunds: its retry permit, or the first-attempt
            // refund when it had none.
            let first = ids.len().saturating_sub(permits.len());
            for permit in permits {
                budget.record_success(permit);
            }
            for _ in 0..first {
                budget.record_success(RetryPermit::FIRST_ATTEMPT);
            }
        }
    }

    /// An operation left the queue without a success (dead, dropped,
    /// deferred): forget its permit (the tokens stay spent).
    pub(crate) fn forget(&self, id: OperationId) {
        self.state().permits.remove(&id);
    }

    /// When to try an operation again after `attempt` failed attempts, or
    /// `None` to give up (dead letter). The backoff delay (hint as floor) is
    /// paid from the retry budget; a refused retry is not dropped but moved
    /// to the next slot the budget's refill can pay for.
    pub(crate) fn retry_at(
        &self,
        failed: &FailedAttempt,
        now: EpochMillis,
        rng: &mut dyn RngCore,
    ) -> Option<EpochMillis> {
        let FailedAttempt {
            id,
            attempt,
            hint,
            cause,
            elapsed,
            may_give_up,
        } = *failed;
        let ctx = RetryContext::new(attempt)
            .with_hint(hint)
            .with_elapsed(elapsed);
        let delay = if may_give_up {
            self.backoff.next_delay(&ctx, rng)?
        } else {
            // Never given up on: paced as if no limit applied. A strategy
            // that still has no delay falls back to the hint or a minute.
            self.backoff
                .delay_without_limits(&ctx, rng)
                .unwrap_or_else(|| hint.unwrap_or(NEVER_GIVE_UP_FALLBACK))
        };
        let at = now.saturating_add(cpc_core::millis(delay));
        let Some(budget) = &self.budget else {
            return Some(at);
        };
        let mut state = self.state();
        match budget.try_acquire(attempt.max(1), cause) {
            Ok(permit) => {
                state.permits.insert(id, permit);
                Some(at)
            }
            Err(_) => {
                state.permits.remove(&id);
                let cfg = budget.config();
                let cost = match cause {
                    RetryCause::Error => cfg.retry_cost,
                    RetryCause::Timeout => cfg.timeout_retry_cost,
                };
                // The refill pays for one such retry every cost/rate seconds.
                let interval_ms = if cfg.refill_per_second == 0 {
                    1_000
                } else {
                    (u64::from(cost) * 1_000).div_ceil(u64::from(cfg.refill_per_second))
                };
                let slot = state.next_slot.saturating_add(interval_ms).max(at);
                state.next_slot = slot;
                Some(slot)
            }
        }
    }
}

/// One failed attempt of an operation, as the retry policy sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailedAttempt {
    /// The operation.
    pub(crate) id: OperationId,
    /// Attempts made so far (including the failed one).
    pub(crate) attempt: u32,
    /// Server hint, a floor for the delay.
    pub(crate) hint: Option<Duration>,
    /// What the retry costs from the budget.
    pub(crate) cause: RetryCause,
    /// Time since the operation was enqueued.
    pub(crate) elapsed: Duration,
    /// Whether the strategy's limits apply (`false`: a failure that says
    /// nothing about the operation, which is never given up on).
    pub(crate) may_give_up: bool,
}

/// Delay of a retry that is never given up on, when the strategy offers none.
const NEVER_GIVE_UP_FALLBACK: Duration = Duration::from_secs(60);

/// A push of the whole batch failed in a way that says the remote is
/// unwell; the breaker hears about it through the permit.
pub(crate) fn settle_breaker(permit: Option<BreakerPermit<'_>>, remote_failed: bool) {
    if let Some(p) = permit {
        if remote_failed {
            p.failure();
        } else {
            p.success();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_backoff::Jitter;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn fixed() -> Arc<dyn BackoffStrategy> {
        Arc::new(
            Exponential::new(
                Duration::from_secs(1),
                2.0,
                Duration::from_secs(8),
                Jitter::None,
            )
            .unwrap()
            .with_max_attempts(4),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn delays_follow_backoff_and_hint_floor_then_give_up() {
        let p = RetryPolicy::new(fixed());
        let mut rng = StdRng::seed_from_u64(1);
        let id = OperationId::from_u128(1);
        let at = |attempt, hint, rng: &mut StdRng| {
            let f = FailedAttempt {
                id,
                attempt,
                hint,
                cause: RetryCause::Error,
                elapsed: Duration::ZERO,
                may_give_up: true,
            };
            p.retry_at(&f, 1_000, rng)
        };
        assert_eq!(at(1, None, &mut rng), Some(2_000));
        assert_eq!(at(2, None, &mut rng), Some(3_000));
        assert_eq!(at(2, Some(Duration::from_secs(30)), &mut rng), Some(31_000));
        assert_eq!(at(4, None, &mut rng), None);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_retries_are_paced_not_dropped() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            capacity: 10,
            retry_cost: 5,
            timeout_retry_cost: 10,
            success_refund: 1,
            refill_per_second: 10,
        })
        .unwrap();
        let p = RetryPolicy::new(fixed()).with_budget(Some(Arc::new(budget)));
        let mut rng = StdRng::seed_from_u64(1);
        let ats: Vec<_> = (0..6u128)
            .map(|i| {
                p.retry_at(
                    &FailedAttempt {
                        id: OperationId::from_u128(i),
                        attempt: 1,
                        hint: None,
                        cause: RetryCause::Error,
                        elapsed: Duration::ZERO,
                        may_give_up: true,
                    },
                    0,
                    &mut rng,
                )
                .unwrap()
            })
            .collect();
        // Two paid from the bucket at the backoff delay, then one every
        // 500 ms (5 tokens at 10/s).
        assert_eq!(ats, vec![1_000, 1_000, 1_000, 1_500, 2_000, 2_500]);
        assert_eq!(p.state().permits.len(), 2);
        p.on_delivered_all(&[OperationId::from_u128(0)]);
        assert_eq!(p.state().permits.len(), 1);
    }
}
