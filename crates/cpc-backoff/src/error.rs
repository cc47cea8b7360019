//! The error types of `cpc-backoff`.

use std::time::Duration;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Refusals at run time: the retry budget or the circuit breaker said "not now".
///
/// Both are transient by construction: the caller should keep the operation
/// and try again later, never drop it.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The retry budget holds fewer tokens than this retry costs.
    #[error("retry budget exhausted: {available} tokens available, retry costs {cost}")]
    BudgetExhausted {
        /// Tokens in the bucket when the retry was refused.
        available: u32,
        /// What the refused retry would have cost.
        cost: u32,
    },
    /// The circuit breaker is open (or half-open with all probe slots taken).
    #[error("circuit breaker is {state}, retry after {retry_after:?}")]
    CircuitOpen {
        /// The breaker's state when the call was refused.
        state: crate::BreakerState,
        /// How long until the breaker may admit a call again (zero when it
        /// is half-open and waiting for its probes to finish).
        retry_after: Duration,
    },
    /// A configuration was refused by validation.
    #[error("invalid backoff configuration")]
    Config(
        #[from]
        #[source]
        ConfigError,
    ),
}

impl Error {
    /// Whether the refused call may succeed later without any change by the
    /// user (true for budget and breaker refusals, false for bad configuration).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::BudgetExhausted { .. } | Error::CircuitOpen { .. }
        )
    }
}

/// Why a configuration was refused.
///
/// Validation rejects rather than clamps: a factor of `NaN` or a base larger
/// than the cap is a mistake in a config file, and silently "fixing" it would
/// hide that mistake until the next outage.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The exponential factor is not a finite number `>= 1`.
    #[error("factor {factor} must be a finite number >= 1")]
    InvalidFactor {
        /// The refused factor.
        factor: f64,
    },
    /// The exponential base delay is zero (every delay would be zero).
    #[error("base delay must be greater than zero")]
    ZeroBase,
    /// The first delay is larger than the cap.
    #[error("base delay {base:?} exceeds max delay {max_delay:?}")]
    BaseExceedsMax {
        /// The first delay.
        base: Duration,
        /// The cap.
        max_delay: Duration,
    },
    /// Decorrelated jitter needs the previous delay of an exponential
    /// strategy; it is meaningless for constant and linear ones.
    #[error("decorrelated jitter is only supported by the exponential strategy")]
    DecorrelatedNeedsExponential,
    /// `max_attempts` is zero: not even the first attempt would be allowed.
    #[error("max_attempts must be at least 1")]
    ZeroMaxAttempts,
    /// A count that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The offending field.
        field: &'static str,
    },
    /// A failure-rate threshold is not in `(0, 1]`.
    #[error("failure rate threshold {threshold} must be in (0, 1]")]
    InvalidFailureRate {
        /// The refused threshold.
        threshold: f64,
    },
    /// The success refund or a cost exceeds the capacity of the budget.
    #[error("{field} ({value}) exceeds the budget capacity ({capacity})")]
    ExceedsCapacity {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u32,
        /// The capacity.
        capacity: u32,
    },
}
