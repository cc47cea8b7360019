//! The [`BackoffStrategy`] trait, its inputs ([`RetryContext`]), the
//! composable limits ([`Limited`], [`BackoffExt`]) and the per-operation
//! [`BackoffState`].

use std::fmt;
use std::time::Duration;

use rand::RngCore;

/// Default cap on a server's `Retry-After` hint: one hour.
///
/// A hint is honoured as a floor, but a remote (or a proxy) that answers
/// "retry after a week" is not trusted blindly.
pub const DEFAULT_HINT_CAP: Duration = Duration::from_secs(3600);

/// Everything a strategy may look at to choose the next delay.
///
/// Only `attempt` is required; the rest default to "unknown".
///
/// **Attempt numbering.** `attempt` is the number of attempts already made,
/// all of which failed: after the first try fails, ask for `attempt = 1` (the
/// delay before the second try). `0` is treated as `1`. This is the count the
/// worker persists with each operation, so a restarted worker resumes the
/// same schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryContext {
    /// Attempts made so far, all failed (`>= 1`; `0` is treated as `1`).
    pub attempt: u32,
    /// The delay chosen before the failed attempt, if known. Only
    /// [`Jitter::Decorrelated`](crate::Jitter::Decorrelated) uses it.
    pub previous: Option<Duration>,
    /// A server hint (`Retry-After`, `RetryLater { after }`), honoured as a
    /// floor and clamped to the strategy's hint cap.
    pub hint: Option<Duration>,
    /// Time since the *first* attempt started; only
    /// [`max_elapsed`](Limited::with_max_elapsed) uses it. Passed in, never
    /// read from a clock, so strategies stay pure.
    pub elapsed: Duration,
}

impl RetryContext {
    /// A context for `attempt` with nothing else known.
    pub const fn new(attempt: u32) -> Self {
        RetryContext {
            attempt,
            previous: None,
            hint: None,
            elapsed: Duration::ZERO,
        }
    }

    /// Sets the previous delay (for decorrelated jitter).
    pub const fn with_previous(mut self, previous: Option<Duration>) -> Self {
        self.previous = previous;
        self
    }

    /// Sets the server hint.
    pub const fn with_hint(mut self, hint: Option<Duration>) -> Self {
        self.hint = hint;
        self
    }

    /// Sets the time elapsed since the first attempt started.
    pub const fn with_elapsed(mut self, elapsed: Duration) -> Self {
        self.elapsed = elapsed;
        self
    }
}

/// Chooses how long to wait before retrying a failed attempt.
///
/// Strategies are pure: the answer depends only on the [`RetryContext`] and
/// the random numbers drawn from `rng`, so the same seed gives the same
/// delays. They return a `Duration` (never a sleep future) and `None` when the
/// operation should give up.
///
/// The trait is object safe; the worker holds a `Box<dyn BackoffStrategy>`.
/// Implementors write [`next_delay`](Self::next_delay); the other methods are
/// shorthands for it.
pub trait BackoffStrategy: fmt::Debug + Send + Sync {
    /// The delay before the next attempt, or `None` to give up.
    ///
    /// Implementations must honour `ctx.hint` as a floor (see [`honour_hint`])
    /// and must not panic or overflow for any input.
    fn next_delay(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration>;

    /// The delay after `attempt` failed attempts, nothing else known.
    fn delay(&self, attempt: u32, rng: &mut dyn RngCore) -> Option<Duration> {
        self.next_delay(&RetryContext::new(attempt), rng)
    }

    /// Like [`delay`](Self::delay), with a server hint honoured as a floor:
    /// the result is at least `min(hint, hint cap)`.
    fn delay_with_hint(
        &self,
        attempt: u32,
        hint: Option<Duration>,
        rng: &mut dyn RngCore,
    ) -> Option<Duration> {
        self.next_delay(&RetryContext::new(attempt).with_hint(hint), rng)
    }

    /// Like [`delay`](Self::delay), given the previous delay (what
    /// decorrelated jitter builds on). With `previous = None` the strategy
    /// derives it from `attempt` alone.
    fn delay_after(
        &self,
        attempt: u32,
        previous: Option<Duration>,
        rng: &mut dyn RngCore,
    ) -> Option<Duration> {
        self.next_delay(&RetryContext::new(attempt).with_previous(previous), rng)
    }

    /// The delay [`next_delay`](Self::next_delay) would give if no limit on
    /// attempts or elapsed time applied: for failures that must never give
    /// up (being offline is not the operation's fault), paced like the
    /// others. Limit wrappers ([`Limited`]) override it; a strategy without
    /// limits need not.
    fn delay_without_limits(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration> {
        self.next_delay(ctx, rng)
    }
}

impl<S: BackoffStrategy + ?Sized> BackoffStrategy for Box<S> {
    fn next_delay(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration> {
        (**self).next_delay(ctx, rng)
    }

    fn delay_without_limits(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration> {
        (**self).delay_without_limits(ctx, rng)
    }
}

impl<S: BackoffStrategy + ?Sized> BackoffStrategy for std::sync::Arc<S> {
    fn next_delay(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration> {
        (**self).next_delay(ctx, rng)
    }

    fn delay_without_limits(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration> {
        (**self).delay_without_limits(ctx, rng)
    }
}

/// Applies a server hint to a computed delay: the result is the larger of
/// `delay` and `min(hint, cap)`.
///
/// A hint above `cap` is clamped to `cap` (and traced), never trusted blindly.
/// For implementors of [`BackoffStrategy`].
#[inline]
pub fn honour_hint(delay: Duration, hint: Option<Duration>, cap: Duration) -> Duration {
    match hint {
        None => delay,
        Some(hint) => {
            let floor = if hint > cap {
                tracing::debug!(
                    hint_ms = cpc_core::millis(hint),
                    cap_ms = cpc_core::millis(cap),
                    "retry-after hint above cap, clamped"
                );
                cap
            } else {
                hint
            };
            delay.max(floor)
        }
    }
}

/// Any strategy with limits: a maximum number of attempts, a maximum time
/// since the first attempt, and the cap applied to server hints.
///
/// Build it with the [`BackoffExt`] methods; calling them again on a
/// `Limited` replaces the limit instead of wrapping twice.
///
/// Semantics, in the order they apply:
/// 1. `max_attempts` counts every attempt including the first (as the AWS
///    SDKs do): with `max_attempts = 3`, delays are given after attempts 1
///    and 2, and `None` after attempt 3.
/// 2. The inner strategy chooses a delay; the hint is applied as a floor,
///    clamped to `hint_cap`.
/// 3. `max_elapsed`: if the next attempt would start later than
///    `max_elapsed` after the first one (`elapsed + delay > max_elapsed`),
///    give up now rather than sleep and then give up (the rule of the Go
///    `cenkalti/backoff` package).
#[derive(Debug, Clone, PartialEq)]
pub struct Limited<S> {
    inner: S,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    hint_cap: Duration,
}

impl<S> Limited<S> {
    /// Wraps `inner` with no limits and the default hint cap.
    pub fn new(inner: S) -> Self {
        Limited {
            inner,
            max_attempts: None,
            max_elapsed: None,
            hint_cap: DEFAULT_HINT_CAP,
        }
    }

    /// Replaces the attempt limit (counting the first attempt; `0` is treated
    /// as `1`: backoff never refuses the first attempt).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts.max(1));
        self
    }

    /// Replaces the limit on time since the first attempt.
    pub fn with_max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.max_elapsed = Some(max_elapsed);
        self
    }

    /// Replaces the cap on server hints (default [`DEFAULT_HINT_CAP`]).
    pub fn with_hint_cap(mut self, hint_cap: Duration) -> Self {
        self.hint_cap = hint_cap;
        self
    }

    /// The wrapped strategy.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The attempt limit, if any.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The elapsed-time limit, if any.
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// The cap on server hints.
    pub fn hint_cap(&self) -> Duration {
        self.hint_cap
    }
}

impl<S: BackoffStrategy> BackoffStrategy for Limited<S> {
    fn next_delay(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration> {
        if let Some(max) = self.max_attempts {
            if ctx.attempt.max(1) >= max {
                return None;
            }
        }
        // The inner strategy would clamp the hint to the default cap, so it
        // gets none; this wrapper applies it with its own cap.
        let inner_ctx = RetryContext { hint: None, ..*ctx };
        let delay = honour_hint(
            self.inner.next_delay(&inner_ctx, rng)?,
            ctx.hint,
            self.hint_cap,
        );
        if let Some(max_elapsed) = self.max_elapsed {
            match ctx.elapsed.checked_add(delay) {
                Some(next_start) if next_start <= max_elapsed => {}
                _ => return None,
            }
        }
        Some(delay)
    }

    fn delay_without_limits(&self, ctx: &RetryContext, rng: &mut dyn RngCore) -> Option<Duration> {
        let inner_ctx = RetryContext { hint: None, ..*ctx };
        Some(honour_hint(
            self.inner.delay_without_limits(&inner_ctx, rng)?,
            ctx.hint,
            self.hint_cap,
        ))
    }
}

/// Adds limits to any strategy: `Exponential::default().with_max_attempts(5)`.
pub trait BackoffExt: BackoffStrategy + Sized {
    /// Gives up after `max_attempts` attempts in all (the first included).
    fn with_max_attempts(self, max_attempts: u32) -> Limited<Self> {
        Limited::new(self).with_max_attempts(max_attempts)
    }

    /// Gives up when the next attempt would start more than `max_elapsed`
    /// after the first one.
    fn with_max_elapsed(self, max_elapsed: Duration) -> Limited<Self> {
        Limited::new(self).with_max_elapsed(max_elapsed)
    }

    /// Clamps server hints to `hint_cap` instead of [`DEFAULT_HINT_CAP`].
    fn with_hint_cap(self, hint_cap: Duration) -> Limited<Self> {
        Limited::new(self).with_hint_cap(hint_cap)
    }
}

impl<S: BackoffStrategy> BackoffExt for S {}

/// The retry state of one operation kept in memory: how many attempts
/// failed and the last delay chosen.
///
/// Decorrelated jitter draws the next delay from the previous one. A caller
/// that keeps this state (an in-memory retry loop) gets the exact AWS
/// algorithm; a caller that persists only the attempt count (the worker)
/// calls [`BackoffStrategy::delay`] and the strategy derives the previous
/// delay from the attempt number. Both are deterministic given the RNG.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackoffState {
    attempt: u32,
    previous: Option<Duration>,
}

impl BackoffState {
    /// A fresh state: no attempt has failed yet.
    pub const fn new() -> Self {
        BackoffState {
            attempt: 0,
            previous: None,
        }
    }

    /// Resumes from persisted values.
    pub const fn resume(attempt: u32, previous: Option<Duration>) -> Self {
        BackoffState { attempt, previous }
    }

    /// Failed attempts recorded so far.
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The last delay returned, if any.
    pub const fn previous(&self) -> Option<Duration> {
        self.previous
    }

    /// Records one more failed attempt and returns the delay before the next
    /// one (or `None` to give up). `elapsed` is the time since the first
    /// attempt started; `hint` a server hint.
    pub fn next_delay<S: BackoffStrategy + ?Sized>(
        &mut self,
        strategy: &S,
        elapsed: Duration,
        hint: Option<Duration>,
        rng: &mut dyn RngCore,
    ) -> Option<Duration> {
        self.attempt = self.attempt.saturating_add(1);
        let ctx = RetryContext {
            attempt: self.attempt,
            previous: self.previous,
            hint,
            elapsed,
        };
        let delay = strategy.next_delay(&ctx, rng)?;
        self.previous = Some(delay);
        Some(delay)
    }

    /// Forgets everything (after a success).
    pub fn reset(&mut self) {
        *self = BackoffState::new();
    }
}
