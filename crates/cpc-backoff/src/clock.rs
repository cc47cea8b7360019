//! The time source of the stateful parts ([`RetryBudget`](crate::RetryBudget)
//! refills, [`CircuitBreaker`](crate::CircuitBreaker) cool-downs).

use std::fmt;

pub use tokio::time::Instant;

/// Where the budget and the breaker read the time.
///
/// The default, [`TokioClock`], follows tokio's clock, so tests drive it
/// with `#[tokio::test(start_paused = true)]` and `tokio::time::advance`.
pub trait Clock: fmt::Debug + Send + Sync {
    /// The current instant; must never go backwards.
    fn now(&self) -> Instant;
}

/// [`tokio::time::Instant::now`]: real time, or the paused test clock.
///
/// Outside a tokio runtime it reads the system's monotonic clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokioClock;

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}
