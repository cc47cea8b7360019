//! The bridge from wall time to tokio's clock: epoch milliseconds that
//! follow the system's wall clock in production and tokio's (possibly
//! paused) clock in simulations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{millis, EpochMillis, Instant, SystemWallClock, WallClock};

/// Wall time as milliseconds since the Unix epoch, for what the store
/// persists (retry times, leases: they must mean the same after a restart),
/// and the bridge to tokio's clock for everything that waits.
///
/// Two modes:
/// - **Following a wall clock** ([`new`](Self::new): the system's;
///   [`with_wall_clock`](Self::with_wall_clock): yours). Every reading
///   re-reads the wall clock, so time does not stop while the device sleeps
///   (monotonic clocks stop during suspend on Linux, Android and Apple, and
///   a reading derived from one would lag the real time after a night
///   asleep). Readings never go backwards: after an NTP step back the clock
///   holds at its high-water mark until the wall clock catches up. Clones
///   share the mark.
/// - **Following tokio's clock** ([`starting_at`](Self::starting_at)):
///   `epoch_ms + (Instant::now() - start)`, for deterministic simulations
///   on a paused runtime.
///
/// Waiting for an epoch instant ([`instant_at`](Self::instant_at)) is
/// always relative to the current reading, so a jump of the wall clock
/// moves what is due with it.
#[derive(Clone)]
pub struct TokioWallClock {
    epoch_at_start: EpochMillis,
    start: Instant,
    /// `Some` when following a wall clock, with the high-water mark.
    wall: Option<(Arc<dyn WallClock>, Arc<AtomicU64>)>,
}

impl std::fmt::Debug for TokioWallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioWallClock")
            .field("follows_wall_clock", &self.wall.is_some())
            .field("now_ms", &self.now_ms())
            .finish()
    }
}

impl TokioWallClock {
    /// A clock that follows the system's wall clock (re-read at every
    /// reading, never going backwards).
    pub fn new() -> Self {
        Self::with_wall_clock(Arc::new(SystemWallClock))
    }

    /// A clock that follows `wall` (re-read at every reading, never going
    /// backwards): the application's own time source.
    pub fn with_wall_clock(wall: Arc<dyn WallClock>) -> Self {
        let now = wall.now_ms();
        TokioWallClock {
            epoch_at_start: now,
            start: Instant::now(),
            wall: Some((wall, Arc::new(AtomicU64::new(now)))),
        }
    }

    /// A clock that reads `epoch_ms` now and then follows tokio's clock
    /// (deterministic simulations).
    pub fn starting_at(epoch_ms: EpochMillis) -> Self {
        TokioWallClock {
            epoch_at_start: epoch_ms,
            start: Instant::now(),
            wall: None,
        }
    }

    /// The current time in ms since the epoch.
    pub fn now_ms(&self) -> EpochMillis {
        match &self.wall {
            Some((wall, mark)) => {
                let now = wall.now_ms();
                // fetch_max: the highest reading any clone has returned.
                mark.fetch_max(now, Ordering::AcqRel).max(now)
            }
            None => self.tokio_ms(Instant::now()),
        }
    }

    fn tokio_ms(&self, instant: Instant) -> EpochMillis {
        let elapsed = instant.saturating_duration_since(self.start);
        self.epoch_at_start.saturating_add(millis(elapsed))
    }

    /// The epoch ms reading that corresponds to a tokio instant (relative
    /// to now: the current reading plus the instant's distance from now).
    pub fn at(&self, instant: Instant) -> EpochMillis {
        if self.wall.is_none() {
            return self.tokio_ms(instant);
        }
        let now = Instant::now();
        let reading = self.now_ms();
        if instant >= now {
            reading.saturating_add(millis(instant.duration_since(now)))
        } else {
            reading.saturating_sub(millis(now.duration_since(instant)))
        }
    }

    /// The tokio instant at which the clock will read `ms` (now, if `ms` is
    /// already past).
    pub fn instant_at(&self, ms: EpochMillis) -> Instant {
        let now = Instant::now();
        let now_ms = self.now_ms();
        if ms <= now_ms {
            return now;
        }
        let ahead = Duration::from_millis(ms - now_ms);
        // A wake-up centuries away (a corrupt record) is clamped rather than
        // overflowing the instant arithmetic.
        now.checked_add(ahead)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
    }

    /// `ms` plus a duration, saturating.
    pub fn after(&self, delay: Duration) -> EpochMillis {
        self.now_ms().saturating_add(millis(delay))
    }
}

impl Default for TokioWallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl WallClock for TokioWallClock {
    fn now_ms(&self) -> u64 {
        TokioWallClock::now_ms(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let clock = TokioWallClock::starting_at(1_000_000);
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.now_ms(), 1_002_500);
        assert_eq!(WallClock::now_ms(&clock), 1_002_500);
        let at = clock.instant_at(1_003_000);
        assert_eq!(clock.at(at), 1_003_000);
        // A past reading maps to now.
        assert_eq!(clock.at(clock.instant_at(5)), 1_002_500);
        assert_eq!(clock.after(Duration::from_secs(1)), 1_003_500);
    }

    #[tokio::test(start_paused = true)]
    async fn follows_a_wall_clock_across_sleep_and_never_goes_back() {
        let wall = Arc::new(crate::ManualWallClock::new(1_000_000));
        let clock = TokioWallClock::with_wall_clock(wall.clone());
        let clone = clock.clone();
        assert_eq!(clock.now_ms(), 1_000_000);
        // The device sleeps 8 hours: tokio's (monotonic) clock does not
        // move, the wall clock does, and so does this clock.
        wall.set(1_000_000 + 8 * 3_600_000);
        assert_eq!(clock.now_ms(), 29_800_000);
        assert_eq!(clone.now_ms(), 29_800_000);
        // An NTP step back by a minute: held at the mark, not backwards.
        wall.set(29_740_000);
        assert_eq!(clock.now_ms(), 29_800_000);
        assert_eq!(clone.now_ms(), 29_800_000);
        // Catching up again.
        wall.set(29_800_500);
        assert_eq!(clock.now_ms(), 29_800_500);
        // Waiting is relative to the current reading.
        let at = clock.instant_at(29_801_500);
        assert_eq!(
            at - tokio::time::Instant::now(),
            Duration::from_millis(1_000)
        );
        assert_eq!(clock.at(at), 29_801_500);
    }

    #[tokio::test(start_paused = true)]
    async fn an_instant_in_the_past_maps_to_an_earlier_wall_reading() {
        let wall = Arc::new(crate::ManualWallClock::new(5_000_000));
        let clock = TokioWallClock::with_wall_clock(wall);
        let before = Instant::now();
        tokio::time::advance(Duration::from_millis(1_500)).await;
        // The wall clock did not move, tokio's did: 1.5 s before the
        // current reading.
        assert_eq!(clock.at(before), 5_000_000 - 1_500);
        let text = format!("{clock:?}");
        assert!(text.contains("follows_wall_clock: true"), "{text}");
        assert!(text.contains("now_ms: 5000000"), "{text}");
    }

    #[test]
    fn the_default_clock_follows_the_system_wall_clock() {
        let system = SystemWallClock.now_ms();
        let clock = TokioWallClock::default();
        let reading = clock.now_ms();
        assert!(reading >= system, "{reading} < {system}");
        // The same clock, a minute of slack for a slow machine.
        assert!(reading - system < 60_000, "{reading} vs {system}");
        assert!(format!("{:?}", TokioWallClock::new()).contains("follows_wall_clock: true"));
    }

    #[tokio::test(start_paused = true)]
    async fn drives_a_hybrid_clock() {
        let wall = TokioWallClock::starting_at(50_000);
        let hlc = crate::HybridClock::with_wall_clock(crate::NodeId(1), std::sync::Arc::new(wall));
        assert_eq!(hlc.now().unwrap().wall_ms, 50_000);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(hlc.now().unwrap().wall_ms, 53_000);
    }
}
