//! [`Exponential`] backoff.

use std::time::Duration;

use rand::{Rng, RngCore};

use crate::config::ExponentialConfig;
use crate::jitter::{jitter_ns, to_ns};
use crate::strategy::{honour_hint, BackoffStrategy, RetryContext, DEFAULT_HINT_CAP};
use crate::{ConfigError, Jitter};

/// Exponential backoff: the un-jittered delay after attempt `n` is
/// `c(n) = min(max_delay, base × factor^(n-1))`, then [`Jitter`] is applied.
///
/// - Saturates at `max_delay` for any attempt up to `u32::MAX`: no overflow,
///   no panic (the attempt from which `c(n) = max_delay` is computed once, at
///   construction).
/// - The factor is validated, not clamped: it must be finite and `>= 1`
///   ([`ConfigError::InvalidFactor`]); the base must be non-zero and at most
///   `max_delay`.
/// - **Decorrelated jitter** draws uniformly from
///   `[base, min(max_delay, 3 × previous)]`, as in the AWS article. The
///   previous delay comes from [`RetryContext::previous`] (kept by
///   [`BackoffState`](crate::BackoffState)); when it is unknown (the worker
///   persists only the attempt count) it is taken as `base` for attempt 1 and
///   as the un-jittered `c(n-1)` for attempt `n > 1`, so the delay for
///   attempt `n` lies in `[base, min(max_delay, 3 × c(n-1))]`.
/// - A server hint is a floor clamped to [`DEFAULT_HINT_CAP`]; wrap the
///   strategy in [`Limited`](crate::Limited) for another cap.
///
/// `Exponential::default()` is base 200 ms, factor 2, max 60 s, full jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct Exponential {
    base: Duration,
    factor: f64,
    max_delay: Duration,
    jitter: Jitter,
    base_ns: u64,
    max_ns: u64,
    /// The first attempt whose un-jittered delay reaches `max_delay`.
    saturate_at: u32,
}

impl Exponential {
    /// Default first delay: 200 ms.
    pub const DEFAULT_BASE: Duration = Duration::from_millis(200);
    /// Default growth factor: 2.
    pub const DEFAULT_FACTOR: f64 = 2.0;
    /// Default cap: 60 s.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(60);

    /// A validated exponential strategy.
    pub fn new(
        base: Duration,
        factor: f64,
        max_delay: Duration,
        jitter: Jitter,
    ) -> Result<Self, ConfigError> {
        if !factor.is_finite() || factor < 1.0 {
            return Err(ConfigError::InvalidFactor { factor });
        }
        if base.is_zero() {
            return Err(ConfigError::ZeroBase);
        }
        if base > max_delay {
            return Err(ConfigError::BaseExceedsMax { base, max_delay });
        }
        Ok(Self::from_valid(base, factor, max_delay, jitter))
    }

    /// A builder (the serialisable [`ExponentialConfig`]) starting from the
    /// defaults.
    pub fn builder() -> ExponentialConfig {
        ExponentialConfig::default()
    }

    /// The same strategy with another jitter (every jitter is valid here).
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The growth factor.
    pub fn factor(&self) -> f64 {
        self.factor
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

    /// The configuration this strategy was built from.
    pub fn config(&self) -> ExponentialConfig {
        ExponentialConfig {
            base: self.base,
            factor: self.factor,
            max_delay: self.max_delay,
            jitter: self.jitter,
        }
    }

    /// Builds from inputs already validated by [`Exponential::new`].
    pub(crate) fn from_valid(
        base: Duration,
        factor: f64,
        max_delay: Duration,
        jitter: Jitter,
    ) -> Self {
        let base_ns = to_ns(base);
        let max_ns = to_ns(max_delay);
        let saturate_at = saturation_attempt(base_ns, factor, max_ns);
        Exponential {
            base,
            factor,
            max_delay,
            jitter,
            base_ns,
            max_ns,
            saturate_at,
        }
    }

    #[inline]
    fn ceiling_ns(&self, attempt: u32) -> u64 {
        let attempt = attempt.max(1);
        if attempt >= self.saturate_at {
            return self.max_ns;
        }
        raw_ceiling_ns(self.base_ns, self.factor, attempt).min(self.max_ns)
    }

    #[inline]
    fn delay_ns(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> u64 {
        match self.jitter {
            Jitter::Decorrelated => {
                let previous = match ctx.previous {
                    Some(previous) => to_ns(previous),
                    None if ctx.attempt <= 1 => self.base_ns,
                    None => self.ceiling_ns(ctx.attempt - 1),
                };
                let upper = previous
                    .saturating_mul(3)
                    .min(self.max_ns)
                    .max(self.base_ns);
                rng.gen_range(self.base_ns..=upper)
            }
            jitter => jitter_ns(jitter, self.ceiling_ns(ctx.attempt), rng),
        }
    }
}

impl Default for Exponential {
    fn default() -> Self {
        Exponential::from_valid(
            Self::DEFAULT_BASE,
            Self::DEFAULT_FACTOR,
            Self::DEFAULT_MAX_DELAY,
            Jitter::Full,
        )
    }
}

impl BackoffStrategy for Exponential {
    #[inline]
    fn next_delay(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration> {
        let delay = Duration::from_nanos(self.delay_ns(ctx, rng));
        Some(honour_hint(delay, ctx.hint, DEFAULT_HINT_CAP))
    }
}

/// `base × factor^(attempt-1)` in nanoseconds, saturating (float-to-int `as`
/// casts saturate and map NaN to 0; the factor is finite and `>= 1`, so the
/// product is never NaN).
#[inline]
fn raw_ceiling_ns(base_ns: u64, factor: f64, attempt: u32) -> u64 {
    let exponent = attempt.saturating_sub(1);
    let power = match i32::try_from(exponent) {
        Ok(e) => factor.powi(e),
        Err(_) => factor.powf(f64::from(exponent)),
    };
    (base_ns as f64 * power) as u64
}

/// The smallest attempt `n` with `raw_ceiling_ns(n) >= max_ns`, or
/// `u32::MAX` if none is reachable (factor 1 and base below the cap).
fn saturation_attempt(base_ns: u64, factor: f64, max_ns: u64) -> u32 {
    if base_ns >= max_ns {
        return 1;
    }
    if factor <= 1.0 {
        return u32::MAX;
    }
    // Closed form, then corrected by the same arithmetic `ceiling_ns` uses,
    // so the shortcut never changes a result.
    let estimate = 1.0 + ((max_ns as f64 / base_ns as f64).ln() / factor.ln()).ceil();
    let mut n = if estimate.is_finite() && estimate < f64::from(u32::MAX) {
        (estimate as u32).max(1)
    } else {
        u32::MAX
    };
    // A few steps at most: the estimate is off by rounding only.
    let mut steps = 0;
    while n > 1 && raw_ceiling_ns(base_ns, factor, n - 1) >= max_ns && steps < 64 {
        n -= 1;
        steps += 1;
    }
    while n < u32::MAX && raw_ceiling_ns(base_ns, factor, n) < max_ns && steps < 128 {
        n += 1;
        steps += 1;
    }
    if raw_ceiling_ns(base_ns, factor, n) < max_ns {
        // Did not converge (cannot happen for finite factors > 1, but a
        // wrong shortcut must never cap early): disable the shortcut.
        return u32::MAX;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn exp(base_ms: u64, factor: f64, max_ms: u64, jitter: Jitter) -> Exponential {
        Exponential::new(
            Duration::from_millis(base_ms),
            factor,
            Duration::from_millis(max_ms),
            jitter,
        )
        .unwrap()
    }

    #[test]
    fn default_is_200ms_factor_2_max_60s_full_jitter() {
        let e = Exponential::default();
        assert_eq!(e.base(), Duration::from_millis(200));
        assert_eq!(e.factor(), 2.0);
        assert_eq!(e.max_delay(), Duration::from_secs(60));
        assert_eq!(e.jitter(), Jitter::Full);
        assert_eq!(Exponential::builder().build().unwrap(), e);
    }

    #[test]
    fn ceilings_without_jitter_double_then_saturate() {
        let e = exp(200, 2.0, 60_000, Jitter::None);
        let mut rng = StdRng::seed_from_u64(1);
        let got: Vec<u64> = (1..=12)
            .map(|a| e.delay(a, &mut rng).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(
            got,
            [200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 51_200, 60_000, 60_000, 60_000]
        );
        // Attempt 0 is treated as attempt 1.
        assert_eq!(e.delay(0, &mut rng), Some(Duration::from_millis(200)));
    }

    #[test]
    fn saturation_shortcut_matches_direct_computation() {
        for (base, factor, max) in [
            (200u64, 2.0, 60_000u64),
            (1, 1.5, 1_000_000),
            (7, 3.3, 99_999),
            (1, 1.000_001, 10),
            (100, 10.0, 100),
            (3, 1.0, 3),
        ] {
            let e = exp(base, factor, max, Jitter::None);
            for a in 1..200u32 {
                let direct = raw_ceiling_ns(e.base_ns, e.factor, a).min(e.max_ns);
                assert_eq!(
                    e.ceiling_ns(a),
                    direct,
                    "base {base} factor {factor} attempt {a}"
                );
            }
        }
    }

    #[test]
    fn factor_one_never_grows_and_never_saturates_early() {
        let e = exp(500, 1.0, 60_000, Jitter::None);
        assert_eq!(e.saturate_at, u32::MAX);
        assert_eq!(e.ceiling(u32::MAX - 1), Duration::from_millis(500));
    }

    #[test]
    fn invalid_configurations_are_rejected() {
        let b = Duration::from_millis(1);
        let m = Duration::from_secs(1);
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -2.0, 0.0, 0.5] {
            assert!(matches!(
                Exponential::new(b, f, m, Jitter::Full),
                Err(ConfigError::InvalidFactor { .. })
            ));
        }
        assert_eq!(
            Exponential::new(Duration::ZERO, 2.0, m, Jitter::Full),
            Err(ConfigError::ZeroBase)
        );
        assert_eq!(
            Exponential::new(m * 2, 2.0, m, Jitter::Full),
            Err(ConfigError::BaseExceedsMax {
                base: m * 2,
                max_delay: m
            })
        );
    }

    #[test]
    fn huge_factor_saturates_immediately() {
        let e = exp(1, f64::MAX, 1_000, Jitter::None);
        assert_eq!(e.ceiling(1), Duration::from_millis(1));
        assert_eq!(e.ceiling(2), Duration::from_secs(1));
        assert_eq!(e.ceiling(u32::MAX), Duration::from_secs(1));
    }
}
