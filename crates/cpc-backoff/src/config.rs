//! Serialisable configuration: builders with defaults that validate into
//! strategies.
//!
//! Durations are written as strings with a unit (`"200ms"`, `"1.5s"`,
//! `"1h"`) or as integers of milliseconds. Unknown fields are refused, so a
//! typo in a config file is an error rather than a silently ignored limit.
//!
//! ```
//! use cpc_backoff::BackoffConfig;
//!
//! let config: BackoffConfig = toml::from_str(r#"
//!     max_attempts = 8
//!     max_elapsed = "10m"
//!     [strategy]
//!     kind = "exponential"
//!     base = "250ms"
//!     max_delay = "30s"
//!     jitter = "decorrelated"
//! "#)?;
//! let strategy = config.build()?;
//! # let _ = strategy;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::strategy::{BackoffStrategy, Limited, DEFAULT_HINT_CAP};
use crate::{duration_format, ConfigError, Constant, Exponential, Jitter, Linear};

/// Configuration (and builder) of an [`Exponential`] strategy.
///
/// Defaults: base 200 ms, factor 2, max 60 s, full jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExponentialConfig {
    /// The first delay (non-zero).
    #[serde(with = "duration_format")]
    pub base: Duration,
    /// The growth factor (finite, `>= 1`).
    pub factor: f64,
    /// The cap on the un-jittered delay (`>= base`).
    #[serde(with = "duration_format")]
    pub max_delay: Duration,
    /// The jitter.
    pub jitter: Jitter,
}

impl Default for ExponentialConfig {
    fn default() -> Self {
        ExponentialConfig {
            base: Exponential::DEFAULT_BASE,
            factor: Exponential::DEFAULT_FACTOR,
            max_delay: Exponential::DEFAULT_MAX_DELAY,
            jitter: Jitter::Full,
        }
    }
}

impl ExponentialConfig {
    /// Sets the first delay.
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets the growth factor.
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets the cap.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Sets the jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Validates and builds the strategy.
    pub fn build(&self) -> Result<Exponential, ConfigError> {
        Exponential::new(self.base, self.factor, self.max_delay, self.jitter)
    }
}

/// Configuration (and builder) of a [`Constant`] strategy.
///
/// Defaults: 1 s, full jitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConstantConfig {
    /// The delay.
    #[serde(with = "duration_format")]
    pub delay: Duration,
    /// The jitter (not decorrelated).
    pub jitter: Jitter,
}

impl Default for ConstantConfig {
    fn default() -> Self {
        ConstantConfig {
            delay: Duration::from_secs(1),
            jitter: Jitter::Full,
        }
    }
}

impl ConstantConfig {
    /// Sets the delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Validates and builds the strategy.
    pub fn build(&self) -> Result<Constant, ConfigError> {
        Constant::with_jitter(self.delay, self.jitter)
    }
}

/// Configuration (and builder) of a [`Linear`] strategy.
///
/// Defaults: initial 1 s, step 1 s, max 30 s, full jitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinearConfig {
    /// The first delay.
    #[serde(with = "duration_format")]
    pub initial: Duration,
    /// The increment per attempt.
    #[serde(with = "duration_format")]
    pub step: Duration,
    /// The cap on the un-jittered delay (`>= initial`).
    #[serde(with = "duration_format")]
    pub max_delay: Duration,
    /// The jitter (not decorrelated).
    pub jitter: Jitter,
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig {
            initial: Duration::from_secs(1),
            step: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            jitter: Jitter::Full,
        }
    }
}

impl LinearConfig {
    /// Sets the first delay.
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets the increment per attempt.
    pub fn step(mut self, step: Duration) -> Self {
        self.step = step;
        self
    }

    /// Sets the cap.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Sets the jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Validates and builds the strategy.
    pub fn build(&self) -> Result<Linear, ConfigError> {
        Linear::new(self.initial, self.step, self.max_delay, self.jitter)
    }
}

/// Which strategy, tagged by `kind` (`"exponential"`, `"constant"`,
/// `"linear"`). The default is the default exponential strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StrategyConfig {
    /// [`Exponential`].
    Exponential(ExponentialConfig),
    /// [`Constant`].
    Constant(ConstantConfig),
    /// [`Linear`].
    Linear(LinearConfig),
}

impl Default for StrategyConfig {
    fn default() -> Self {
        StrategyConfig::Exponential(ExponentialConfig::default())
    }
}

impl StrategyConfig {
    /// Validates and builds the strategy, without limits.
    pub fn build(&self) -> Result<Box<dyn BackoffStrategy>, ConfigError> {
        Ok(match self {
            StrategyConfig::Exponential(c) => Box::new(c.build()?),
            StrategyConfig::Constant(c) => Box::new(c.build()?),
            StrategyConfig::Linear(c) => Box::new(c.build()?),
        })
    }
}

/// A complete backoff policy: a strategy and its limits.
///
/// Defaults: the default exponential strategy, no attempt or time limit,
/// hints capped at one hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// The strategy.
    pub strategy: StrategyConfig,
    /// Attempts in all, the first included (`>= 1`); `None` = unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Give up when the next attempt would start later than this after the
    /// first one; `None` = unlimited.
    #[serde(
        with = "duration_format::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_elapsed: Option<Duration>,
    /// The cap on server hints (`Retry-After`).
    #[serde(with = "duration_format")]
    pub hint_cap: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            strategy: StrategyConfig::default(),
            max_attempts: None,
            max_elapsed: None,
            hint_cap: DEFAULT_HINT_CAP,
        }
    }
}

impl BackoffConfig {
    /// Validates and builds the policy as a trait object.
    pub fn build(&self) -> Result<Box<dyn BackoffStrategy>, ConfigError> {
        Ok(Box::new(self.build_limited()?))
    }

    /// Validates and builds the policy, keeping the [`Limited`] wrapper
    /// visible (to read the limits back).
    pub fn build_limited(&self) -> Result<Limited<Box<dyn BackoffStrategy>>, ConfigError> {
        let mut limited = Limited::new(self.strategy.build()?).with_hint_cap(self.hint_cap);
        if let Some(max_attempts) = self.max_attempts {
            if max_attempts == 0 {
                return Err(ConfigError::ZeroMaxAttempts);
            }
            limited = limited.with_max_attempts(max_attempts);
        }
        if let Some(max_elapsed) = self.max_elapsed {
            limited = limited.with_max_elapsed(max_elapsed);
        }
        Ok(limited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn empty_config_is_the_default() {
        let c: BackoffConfig = toml::from_str("").unwrap();
        assert_eq!(c, BackoffConfig::default());
        let c: BackoffConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, BackoffConfig::default());
    }

    #[test]
    fn toml_round_trip_of_every_strategy() {
        for strategy in [
            StrategyConfig::Exponential(ExponentialConfig::default().jitter(Jitter::Equal)),
            StrategyConfig::Constant(ConstantConfig::default().delay(Duration::from_millis(1500))),
            StrategyConfig::Linear(LinearConfig::default().step(Duration::from_millis(250))),
        ] {
            let config = BackoffConfig {
                strategy,
                max_attempts: Some(5),
                max_elapsed: Some(Duration::from_secs(600)),
                hint_cap: Duration::from_secs(120),
            };
            let text = toml::to_string(&config).unwrap();
            assert_eq!(
                toml::from_str::<BackoffConfig>(&text).unwrap(),
                config,
                "{text}"
            );
            let json = serde_json::to_string(&config).unwrap();
            assert_eq!(
                serde_json::from_str::<BackoffConfig>(&json).unwrap(),
                config,
                "{json}"
            );
        }
    }

    #[test]
    fn durations_read_as_text_or_milliseconds() {
        let c: BackoffConfig = serde_json::from_str(
            r#"{"strategy":{"kind":"exponential","base":250,"max_delay":"1.5s"},"max_elapsed":"2m"}"#,
        )
        .unwrap();
        assert_eq!(
            c.strategy,
            StrategyConfig::Exponential(ExponentialConfig {
                base: Duration::from_millis(250),
                max_delay: Duration::from_millis(1500),
                ..ExponentialConfig::default()
            })
        );
        assert_eq!(c.max_elapsed, Some(Duration::from_secs(120)));
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        assert!(toml::from_str::<BackoffConfig>("max_attempt = 3").is_err());
        assert!(toml::from_str::<BackoffConfig>(
            "[strategy]\nkind = \"exponential\"\nbsae = \"1s\""
        )
        .is_err());
        assert!(toml::from_str::<BackoffConfig>("[strategy]\nkind = \"fibonacci\"").is_err());
        assert!(toml::from_str::<BackoffConfig>(
            "[strategy]\nkind = \"constant\"\njitter = \"sometimes\""
        )
        .is_err());
    }

    #[test]
    fn build_validates() {
        let mut c = BackoffConfig {
            max_attempts: Some(0),
            ..BackoffConfig::default()
        };
        assert_eq!(c.build().err(), Some(ConfigError::ZeroMaxAttempts));
        c.max_attempts = Some(3);
        c.strategy = StrategyConfig::Exponential(ExponentialConfig::default().factor(f64::NAN));
        assert!(matches!(
            c.build().err(),
            Some(ConfigError::InvalidFactor { .. })
        ));
        c.strategy = StrategyConfig::Linear(LinearConfig::default().jitter(Jitter::Decorrelated));
        assert_eq!(
            c.build().err(),
            Some(ConfigError::DecorrelatedNeedsExponential)
        );
    }

    #[test]
    fn built_policy_applies_its_limits() {
        let c = BackoffConfig {
            strategy: StrategyConfig::Constant(ConstantConfig::default().jitter(Jitter::None)),
            max_attempts: Some(3),
            max_elapsed: None,
            hint_cap: Duration::from_secs(10),
        };
        let policy = c.build().unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        assert_eq!(policy.delay(1, &mut rng), Some(Duration::from_secs(1)));
        assert_eq!(policy.delay(2, &mut rng), Some(Duration::from_secs(1)));
        assert_eq!(policy.delay(3, &mut rng), None);
        assert_eq!(
            policy.delay_with_hint(1, Some(Duration::from_secs(3600)), &mut rng),
            Some(Duration::from_secs(10))
        );
    }
}
