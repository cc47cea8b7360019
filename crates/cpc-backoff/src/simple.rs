//! [`Constant`] and [`Linear`] backoff.

use std::time::Duration;

use rand::RngCore;

use crate::config::{ConstantConfig, LinearConfig};
use crate::jitter::{jitter_ns, to_ns};
use crate::strategy::{honour_hint, BackoffStrategy, RetryContext, DEFAULT_HINT_CAP};
use crate::{ConfigError, Jitter};

/// The same delay after every attempt, optionally jittered (`None`, `Full`
/// or `Equal`; decorrelated jitter is refused, it needs a growing delay).
///
/// For polling and for tests; a fleet of clients should not use a constant
/// delay without jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constant {
    delay: Duration,
    jitter: Jitter,
    delay_ns: u64,
}

impl Constant {
    /// A constant delay without jitter.
    pub fn new(delay: Duration) -> Self {
        Constant {
            delay,
            jitter: Jitter::None,
            delay_ns: to_ns(delay),
        }
    }

    /// A constant delay with jitter; refuses [`Jitter::Decorrelated`].
    pub fn with_jitter(delay: Duration, jitter: Jitter) -> Result<Self, ConfigError> {
        if jitter == Jitter::Decorrelated {
            return Err(ConfigError::DecorrelatedNeedsExponential);
        }
        Ok(Constant {
            jitter,
            ..Constant::new(delay)
        })
    }

    /// A builder (the serialisable [`ConstantConfig`]).
    pub fn builder() -> ConstantConfig {
        ConstantConfig::default()
    }

    /// The delay.
    pub fn interval(&self) -> Duration {
        self.delay
    }

    /// The jitter.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }
}

impl BackoffStrategy for Constant {
    #[inline]
    fn next_delay(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration> {
        let delay = Duration::from_nanos(jitter_ns(self.jitter, self.delay_ns, rng));
        Some(honour_hint(delay, ctx.hint, DEFAULT_HINT_CAP))
    }
}

/// A delay growing by a fixed step: `c(n) = min(max_delay, initial + step ×
/// (n-1))`, then jitter (`None`, `Full` or `Equal`).
///
/// Saturating arithmetic: no overflow for any attempt up to `u32::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    initial: Duration,
    step: Duration,
    max_delay: Duration,
    jitter: Jitter,
    initial_ns: u64,
    step_ns: u64,
    max_ns: u64,
}

impl Linear {
    /// A validated linear strategy: `initial <= max_delay`, jitter not
    /// decorrelated.
    pub fn new(
        initial: Duration,
        step: Duration,
        max_delay: Duration,
        jitter: Jitter,
    ) -> Result<Self, ConfigError> {
        if initial > max_delay {
            return Err(ConfigError::BaseExceedsMax {
                base: initial,
                max_delay,
            });
        }
        if jitter == Jitter::Decorrelated {
            return Err(ConfigError::DecorrelatedNeedsExponential);
        }
        Ok(Linear {
            initial,
            step,
            max_delay,
            jitter,
            initial_ns: to_ns(initial),
            step_ns: to_ns(step),
            max_ns: to_ns(max_delay),
        })
    }

    /// A builder (the serialisable [`LinearConfig`]).
    pub fn builder() -> LinearConfig {
        LinearConfig::default()
    }

    /// The first delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The increment per attempt.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// The cap on the un-jittered delay.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The jitter.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The un-jittered delay `c(attempt)` (attempt `0` is treated as `1`).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        Duration::from_nanos(self.ceiling_ns(attempt))
    }

    #[inline]
    fn ceiling_ns(&self, attempt: u32) -> u64 {
        let steps = u64::from(attempt.max(1) - 1);
        self.initial_ns
            .saturating_add(self.step_ns.saturating_mul(steps))
            .min(self.max_ns)
    }
}

impl BackoffStrategy for Linear {
    #[inline]
    fn next_delay(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration> {
        let ceiling = self.ceiling_ns(ctx.attempt);
        let delay = Duration::from_nanos(jitter_ns(self.jitter, ceiling, rng));
        Some(honour_hint(delay, ctx.hint, DEFAULT_HINT_CAP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn constant_is_constant() {
        let c = Constant::new(Duration::from_millis(750));
        let mut rng = StdRng::seed_from_u64(3);
        for a in [0, 1, 2, 1000, u32::MAX] {
            assert_eq!(c.delay(a, &mut rng), Some(Duration::from_millis(750)));
        }
    }

    #[test]
    fn linear_grows_by_step_and_saturates() {
        let l = Linear::new(
            Duration::from_secs(1),
            Duration::from_millis(500),
            Duration::from_secs(3),
            Jitter::None,
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let got: Vec<u128> = (1..=6)
            .map(|a| l.delay(a, &mut rng).unwrap().as_millis())
            .collect();
        assert_eq!(got, [1000, 1500, 2000, 2500, 3000, 3000]);
        assert_eq!(l.delay(u32::MAX, &mut rng), Some(Duration::from_secs(3)));
    }

    #[test]
    fn linear_with_huge_step_saturates_without_overflow() {
        let l = Linear::new(Duration::ZERO, Duration::MAX, Duration::MAX, Jitter::None).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(l.delay(1, &mut rng), Some(Duration::ZERO));
        assert_eq!(
            l.delay(u32::MAX, &mut rng),
            Some(Duration::from_nanos(u64::MAX))
        );
    }

    #[test]
    fn decorrelated_is_refused_for_constant_and_linear() {
        assert_eq!(
            Constant::with_jitter(Duration::from_secs(1), Jitter::Decorrelated),
            Err(ConfigError::DecorrelatedNeedsExponential)
        );
        assert_eq!(
            Linear::new(
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                Jitter::Decorrelated
            ),
            Err(ConfigError::DecorrelatedNeedsExponential)
        );
    }
}
