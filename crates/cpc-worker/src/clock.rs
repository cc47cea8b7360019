//! The worker's clock: tokio's (possibly paused) clock mapped onto epoch ms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cpc_core::WallClock;
use cpc_storage::EpochMillis;
use tokio::time::Instant;

/// Wall time as milliseconds since the Unix epoch, advanced by tokio's
/// clock: `epoch_at_start + (Instant::now() - start)`.
///
/// The store persists epoch milliseconds (they must mean the same thing
/// after a restart), while everything that waits uses tokio's clock so tests
/// can pause and advance it. This type is the single bridge between the two:
/// on a paused runtime every reading is deterministic, and a [`HybridClock`]
/// built on it (it implements [`WallClock`]) follows simulated time too.
///
/// Cheap to clone; clones read the same time.
///
/// [`HybridClock`]: cpc_core::HybridClock
#[derive(Clone, Copy, Debug)]
pub struct TokioWallClock {
    epoch_at_start: EpochMillis,
    start: Instant,
}

impl TokioWallClock {
    /// A clock that reads the system's wall time now and then follows tokio's clock.
    pub fn new() -> Self {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self::starting_at(epoch)
    }

    /// A clock that reads `epoch_ms` now (deterministic simulations).
    pub fn starting_at(epoch_ms: EpochMillis) -> Self {
        TokioWallClock {
            epoch_at_start: epoch_ms,
            start: Instant::now(),
        }
    }

    /// The current time in ms since the epoch.
    pub fn now_ms(&self) -> EpochMillis {
        self.at(Instant::now())
    }

    /// The epoch ms reading that corresponds to a tokio instant.
    pub fn at(&self, instant: Instant) -> EpochMillis {
        let elapsed = instant.saturating_duration_since(self.start);
        self.epoch_at_start
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    /// The tokio instant at which the clock will read `ms` (now, if `ms` is
    /// already past).
    pub fn instant_at(&self, ms: EpochMillis) -> Instant {
        let now = Instant::now();
        let now_ms = self.at(now);
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
        self.now_ms()
            .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
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
    async fn drives_a_hybrid_clock() {
        let wall = TokioWallClock::starting_at(50_000);
        let hlc =
            cpc_core::HybridClock::with_wall_clock(cpc_core::NodeId(1), std::sync::Arc::new(wall));
        assert_eq!(hlc.now().unwrap().wall_ms, 50_000);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(hlc.now().unwrap().wall_ms, 53_000);
    }
}
