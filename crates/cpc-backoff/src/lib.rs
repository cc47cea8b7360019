//! Backoff with jitter, a retry budget and a circuit breaker: what keeps
//! thousands of devices that reconnect at the same moment from knocking
//! their remote over.
//!
//! Strategies are pure: a delay is a function of the attempt number (and
//! optionally the previous delay, a server hint and the elapsed time) and of
//! the random numbers drawn from the `&mut dyn RngCore` passed in, so a
//! seeded RNG gives the same delays every run. They return a `Duration`,
//! never a sleep future; the caller decides how to wait. This crate does no
//! I/O, spawns nothing and depends on no other cpc crate.
//!
//! # Main types
//! - [`BackoffStrategy`]: object-safe trait;
//!   [`delay(attempt, rng)`](BackoffStrategy::delay) → `Option<Duration>`
//!   (`None` = give up), [`delay_with_hint`](BackoffStrategy::delay_with_hint)
//!   honours a `Retry-After` hint as a floor, clamped to a cap (1 h default).
//! - [`Exponential`] (`base × factor^(n-1)` capped at `max_delay`),
//!   [`Constant`], [`Linear`], each with a [`Jitter`].
//! - [`Limited`] via [`BackoffExt`]: `max_attempts` and `max_elapsed` on any
//!   strategy, and the hint cap.
//! - [`BackoffState`]: per-operation attempt count and previous delay, for
//!   in-memory retry loops.
//! - [`BackoffConfig`] and friends: serde configuration that builds a
//!   `Box<dyn BackoffStrategy>`.
//! - [`RetryBudget`]: a token bucket shared by all operations; retries spend,
//!   successes refill, first attempts are never refused.
//! - [`CircuitBreaker`]: closed / open / half-open, cool-down growing with
//!   each failed probe.
//! - [`herd`]: the thundering-herd simulation behind the choice of jitter.
//!
//! # Attempt numbering
//! `attempt` is the number of attempts already made, all failed: after the
//! first try fails, ask for `delay(1, ..)`. `0` is treated as `1`.
//! `max_attempts` counts every attempt, the first included (as the AWS SDKs
//! do).
//!
//! # Which jitter?
//! With `c` the un-jittered delay of the attempt (already capped):
//!
//! | jitter         | delay in                               | use it when                                                  |
//! |----------------|----------------------------------------|--------------------------------------------------------------|
//! | `None`         | `c`                                    | a single client, or tests; never for a fleet                 |
//! | `Full`         | `[0, c]`                               | the default for a fleet: spreads retries the most            |
//! | `Equal`        | `[c/2, c]`                             | a minimum wait matters (rate-limited APIs, a known cool-off) |
//! | `Decorrelated` | `[base, min(max_delay, 3 × previous)]` | long outages: delays keep spreading instead of piling at the cap |
//!
//! What it changes, from the [`herd`] simulation (1,000 clients fail at
//! `t = 0`; the remote serves 100 requests/s with 100 ms of queue; default
//! exponential 200 ms × 2 up to 60 s; seed `0x5EED_2015`):
//!
//! | jitter                              | calls  | until all succeeded |
//! |-------------------------------------|--------|---------------------|
//! | `None`                              | 51,500 | 5,562 s             |
//! | `Full`                              | 6,316  | 27.1 s              |
//! | `Equal`                             | 6,181  | 23.4 s              |
//! | `Decorrelated` (previous delay kept)| 5,699  | 18.2 s              |
//! | `Decorrelated` (attempt count only) | 5,604  | 43.6 s              |
//!
//! Without jitter every client that failed together retries together, and
//! each synchronised wave overruns the remote again: eight times the calls,
//! two hundred times the time. Between the jittered kinds the difference is
//! small; the AWS article finds the same shape.

//! **Decorrelated jitter and persisted state.** It draws from the previous
//! delay. [`BackoffState`] (or [`RetryContext::previous`]) carries it in
//! memory; a caller that persists only the attempt count (the sync worker)
//! calls [`BackoffStrategy::delay`] and the strategy takes the un-jittered
//! delay of the previous attempt instead (see [`Exponential`]).
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use rand::{rngs::StdRng, SeedableRng};
//! use cpc_backoff::{
//!     BackoffExt, BackoffStrategy, CircuitBreaker, CircuitBreakerConfig, Exponential, Jitter,
//!     RetryBudget, RetryBudgetConfig, RetryCause,
//! };
//!
//! // 200 ms, 400 ms, 800 ms, ... capped at 60 s, full jitter, at most 5 attempts.
//! let policy = Exponential::default().with_max_attempts(5);
//! let mut rng = StdRng::seed_from_u64(42);
//! let first = policy.delay(1, &mut rng).unwrap();
//! assert!(first <= Duration::from_millis(200));
//! assert_eq!(policy.delay(5, &mut rng), None); // five attempts made: give up
//!
//! // A 429 with `Retry-After: 30` is a floor...
//! let hinted = policy.delay_with_hint(1, Some(Duration::from_secs(30)), &mut rng).unwrap();
//! assert!(hinted >= Duration::from_secs(30));
//! // ...but "retry in a week" is clamped to the cap (1 h by default).
//! let week = Duration::from_secs(7 * 24 * 3600);
//! assert_eq!(policy.delay_with_hint(1, Some(week), &mut rng), Some(Duration::from_secs(3600)));
//!
//! // Same seed, same delays.
//! let jittered = Exponential::builder().jitter(Jitter::Decorrelated).build()?;
//! let run = |seed| {
//!     let mut rng = StdRng::seed_from_u64(seed);
//!     (1..=5).map(|a| jittered.delay(a, &mut rng)).collect::<Vec<_>>()
//! };
//! assert_eq!(run(7), run(7));
//!
//! // A retry budget shared by every operation, and a breaker in front of the remote.
//! let budget = RetryBudget::new(RetryBudgetConfig::default())?;
//! let breaker = CircuitBreaker::new(CircuitBreakerConfig::default())?;
//! let permit = budget.try_acquire(1, RetryCause::Timeout)?; // a retry after a timeout
//! let call = breaker.try_acquire()?;
//! call.success();
//! budget.record_success(permit);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//! None. The budget and the breaker read a `cpc_core::MonotonicClock`
//! (tokio's `Instant` by default), so tests run on tokio's paused clock.

mod breaker;
mod budget;
mod config;
mod duration_format;
mod error;
mod exponential;
pub mod herd;
mod jitter;
mod simple;
mod strategy;

pub use breaker::{
    BreakerPermit, BreakerSnapshot, BreakerState, CircuitBreaker, CircuitBreakerConfig,
    FailureRateConfig,
};
pub use budget::{RetryBudget, RetryBudgetConfig, RetryCause, RetryPermit};
pub use config::{BackoffConfig, ConstantConfig, ExponentialConfig, LinearConfig, StrategyConfig};
pub use error::{ConfigError, Error, Result};
pub use exponential::Exponential;
pub use jitter::Jitter;
pub use simple::{Constant, Linear};
pub use strategy::{
    honour_hint, BackoffExt, BackoffState, BackoffStrategy, Limited, RetryContext, DEFAULT_HINT_CAP,
};

#[cfg(test)]
mod object_safety {
    use super::*;
    // Compile-time proofs: the strategy trait stays object safe, and the
    // shared types can cross threads.
    fn _strategy_is_object_safe(_: &dyn BackoffStrategy) {}
    fn _clock_is_object_safe(_: &dyn cpc_core::MonotonicClock) {}
    fn _assert_send_sync<T: Send + Sync>() {}
    fn _types_are_send_sync() {
        _assert_send_sync::<Box<dyn BackoffStrategy>>();
        _assert_send_sync::<Limited<Exponential>>();
        _assert_send_sync::<RetryBudget>();
        _assert_send_sync::<CircuitBreaker>();
        _assert_send_sync::<Error>();
    }
}
