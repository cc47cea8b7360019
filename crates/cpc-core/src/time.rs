//! Time, in one place: the two clock traits every crate reads and their
//! implementations.
//!
//! - [`WallClock`]: wall time as [`EpochMillis`], for what is persisted or
//!   compared across devices (retry times, leases, HLC timestamps). It may
//!   jump (NTP, the user); readers that need it never to go backwards use
//!   [`TokioWallClock`], which holds a high-water mark.
//! - [`MonotonicClock`]: a tokio [`Instant`], for what only waits or measures
//!   inside one process (budget refills, breaker cool-downs, simulated time).
//!
//! Implementations: the system's ([`SystemWallClock`], [`TokioClock`]), the
//! bridge between the two that follows tokio's paused clock in tests
//! ([`TokioWallClock`]), and the simulated ones ([`ManualWallClock`], set by
//! hand; [`SimClock`], a simulation's origin on tokio's clock).
//!
//! [`millis`] is the one conversion from a `Duration` to whole ms.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

mod sim;
mod tokio_wall;

pub use sim::SimClock;
pub use tokio_wall::TokioWallClock;

/// Wall time in milliseconds since the Unix epoch, as stored and sent.
pub type EpochMillis = u64;

/// A duration in whole milliseconds, saturating at `u64::MAX` (a
/// `Duration` can hold more): the one conversion every crate uses for
/// epoch-ms arithmetic, logs and reports.
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A source of wall-clock time in ms since the Unix epoch. Injected so tests
/// and simulations control time.
pub trait WallClock: Send + Sync + fmt::Debug {
    /// Current wall time in ms since the Unix epoch.
    fn now_ms(&self) -> EpochMillis;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now_ms(&self) -> EpochMillis {
        // A clock before 1970 reads as 0; the HLC still moves forward.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(crate::millis)
            .unwrap_or(0)
    }
}

/// A wall clock set by hand; cheap to clone (shared state).
#[derive(Debug, Default, Clone)]
pub struct ManualWallClock(Arc<AtomicU64>);

impl ManualWallClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        ManualWallClock(Arc::new(AtomicU64::new(ms)))
    }
    /// Sets the reading (may go backwards, like a real clock after NTP).
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    /// Moves the reading by a signed amount, saturating.
    pub fn shift(&self, delta_ms: i64) {
        let cur = self.0.load(Ordering::SeqCst);
        self.set(cur.saturating_add_signed(delta_ms));
    }
}

impl WallClock for ManualWallClock {
    fn now_ms(&self) -> EpochMillis {
        self.0.load(Ordering::SeqCst)
    }
}

/// A monotonic time source: never goes backwards, stops nowhere but in a
/// paused test runtime. Used for waiting and measuring inside one process.
///
/// The default, [`TokioClock`], follows tokio's clock, so tests drive it
/// with `#[tokio::test(start_paused = true)]` and `tokio::time::advance`.
pub trait MonotonicClock: fmt::Debug + Send + Sync {
    /// The current instant; must never go backwards.
    fn now(&self) -> Instant;
}

/// [`tokio::time::Instant::now`]: real time, or the paused test clock.
///
/// Outside a tokio runtime it reads the system's monotonic clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokioClock;

impl MonotonicClock for TokioClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

impl<C: MonotonicClock + ?Sized> MonotonicClock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

impl<C: WallClock + ?Sized> WallClock for Arc<C> {
    fn now_ms(&self) -> EpochMillis {
        (**self).now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn millis_saturates_instead_of_wrapping() {
        assert_eq!(millis(Duration::from_millis(1_500)), 1_500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn a_manual_wall_clock_moves_both_ways_and_saturates() {
        let clock = ManualWallClock::new(1_000);
        let shared: Arc<dyn WallClock> = Arc::new(clock.clone());
        clock.shift(-400);
        assert_eq!(shared.now_ms(), 600);
        clock.shift(-10_000);
        assert_eq!(shared.now_ms(), 0);
        clock.set(u64::MAX);
        clock.shift(1);
        assert_eq!(shared.now_ms(), u64::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_the_paused_runtime() {
        let clock: Arc<dyn MonotonicClock> = Arc::new(TokioClock);
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now() - before, Duration::from_secs(5));
    }
}
