//! Simulated time: tokio's clock measured from the start of a run.

use std::time::Duration;

use super::{Instant, MonotonicClock};

/// The origin of a simulation's time line.
///
/// Every time in a scenario, a schedule, the apply log and the report is a
/// `Duration` since this origin. It reads tokio's clock, so under
/// `tokio::time::pause()` (or `#[tokio::test(start_paused = true)]`) an hour
/// of simulated time passes in milliseconds of wall time. Share one
/// `SimClock` between the remote, the faulty transport and the scripted
/// network so they agree about "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimClock {
    start: Instant,
}

impl SimClock {
    /// A time line starting now.
    pub fn start_now() -> Self {
        SimClock {
            start: Instant::now(),
        }
    }

    /// A time line starting at `start`.
    pub fn starting_at(start: Instant) -> Self {
        SimClock { start }
    }

    /// The origin.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Simulated time elapsed since the origin.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    /// The instant `at` after the origin.
    pub fn instant_at(&self, at: Duration) -> Instant {
        self.start + at
    }

    /// Sleeps until `at` after the origin (returns at once if already past).
    pub async fn sleep_until(&self, at: Duration) {
        tokio::time::sleep_until(self.instant_at(at)).await;
    }
}

impl MonotonicClock for SimClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::start_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_time_line_measures_paused_tokio_time_from_its_origin() {
        let clock = SimClock::start_now();
        let origin = clock.start();
        assert_eq!(clock.elapsed(), Duration::ZERO);
        clock.sleep_until(Duration::from_secs(90)).await;
        assert_eq!(clock.elapsed(), Duration::from_secs(90));
        assert_eq!(
            MonotonicClock::now(&clock),
            origin + Duration::from_secs(90)
        );
        assert_eq!(
            clock.instant_at(Duration::from_secs(5)),
            origin + Duration::from_secs(5)
        );
        // Already past: returns at once, time does not move.
        clock.sleep_until(Duration::from_secs(10)).await;
        assert_eq!(clock.elapsed(), Duration::from_secs(90));
        // A line that starts later reads less; one that starts in the
        // future reads zero rather than underflowing.
        let later = SimClock::starting_at(origin + Duration::from_secs(30));
        assert_eq!(later.elapsed(), Duration::from_secs(60));
        let future = SimClock::starting_at(origin + Duration::from_secs(600));
        assert_eq!(future.elapsed(), Duration::ZERO);
        assert_eq!(SimClock::default().elapsed(), Duration::ZERO);
    }
}
