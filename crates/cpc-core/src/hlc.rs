//! Hybrid logical clock (Kulkarni et al.): wall time in ms plus a logical
//! counter, so timestamps follow causality even when wall clocks disagree.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::{SystemWallClock, WallClock};

/// Identifies a device (a clock). Breaks timestamp ties, so the order of
/// timestamps is total and the same on every device.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A hybrid logical clock timestamp. Ordered by wall time, then logical
/// counter, then node id: a total order.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct HlcTimestamp {
    /// Wall-clock component, ms since the Unix epoch.
    pub wall_ms: u64,
    /// Logical counter: orders events within one wall-clock ms.
    pub logical: u32,
    /// The node that issued the timestamp.
    pub node: NodeId,
}

impl HlcTimestamp {
    /// Builds a timestamp from its parts.
    pub const fn new(wall_ms: u64, logical: u32, node: NodeId) -> Self {
        HlcTimestamp {
            wall_ms,
            logical,
            node,
        }
    }
}

impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.logical, self.node)
    }
}

/// Default limit on how far a remote timestamp may be ahead of local time.
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_secs(3600);

/// A hybrid logical clock. `now()` never goes backwards, whatever the wall
/// clock does; `observe()` merges remote timestamps. Thread safe.
#[derive(Debug)]
pub struct HybridClock {
    node: NodeId,
    wall: Arc<dyn WallClock>,
    max_drift: Duration,
    last: Mutex<(u64, u32)>,
}

impl HybridClock {
    /// A clock for `node` reading the system wall clock.
    pub fn new(node: NodeId) -> Self {
        Self::with_wall_clock(node, Arc::new(SystemWallClock))
    }

    /// A clock for `node` reading the given wall clock.
    pub fn with_wall_clock(node: NodeId, wall: Arc<dyn WallClock>) -> Self {
        HybridClock {
            node,
            wall,
            max_drift: DEFAULT_MAX_DRIFT,
            last: Mutex::new((0, 0)),
        }
    }

    /// Sets the largest accepted lead of a remote timestamp over local time.
    pub fn with_max_drift(mut self, max_drift: Duration) -> Self {
        self.max_drift = max_drift;
        self
    }

    /// Restores a persisted high-water mark, so the clock never issues a
    /// timestamp at or below one issued before a restart.
    pub fn restore(&self, mark: HlcTimestamp) {
        let mut last = self.lock();
        if (mark.wall_ms, mark.logical) > *last {
            *last = (mark.wall_ms, mark.logical);
        }
    }

    /// The node id of this clock.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The configured drift limit.
    pub fn max_drift(&self) -> Duration {
        self.max_drift
    }

    /// The last timestamp issued or observed (the high-water mark to persist).
    pub fn last(&self) -> HlcTimestamp {
        let last = self.lock();
        HlcTimestamp::new(last.0, last.1, self.node)
    }

    fn lock(&self) -> MutexGuard<'_, (u64, u32)> {
        // The guarded value is two integers that are always consistent, so a
        // poisoned lock (a panic elsewhere while holding it) is safe to reuse.
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a new timestamp, strictly greater than every one issued or
    /// observed before.
    pub fn now(&self) -> Result<HlcTimestamp> {
        let physical = self.wall.now_ms();
        let mut last = self.lock();
        let next = advance(*last, physical, None)?;
        *last = next;
        Ok(HlcTimestamp::new(next.0, next.1, self.node))
    }

    /// Merges a timestamp received from elsewhere and returns a new local
    /// timestamp greater than both. A remote timestamp more than `max_drift`
    /// ahead of the local wall clock is refused and leaves the clock as it was.
    pub fn observe(&self, remote: HlcTimestamp) -> Result<HlcTimestamp> {
        let physical = self.wall.now_ms();
        let limit = physical.saturating_add(crate::millis(self.max_drift));
        if remote.wall_ms > limit {
            return Err(Error::ClockDrift {
                remote_ms: remote.wall_ms,
                ahead: Duration::from_millis(remote.wall_ms - physical),
                max_drift: self.max_drift,
            });
        }
        let mut last = self.lock();
        let next = advance(*last, physical, Some((remote.wall_ms, remote.logical)))?;
        *last = next;
        Ok(HlcTimestamp::new(next.0, next.1, self.node))
    }
}

/// The HLC update rule, shared by `now` (no remote) and `observe`.
fn advance(last: (u64, u32), physical: u64, remote: Option<(u64, u32)>) -> Result<(u64, u32)> {
    let remote = remote.unwrap_or((0, 0));
    let wall = last.0.max(remote.0).max(physical);
    let logical = if wall == last.0 && wall == remote.0 {
        last.1.max(remote.1).checked_add(1)
    } else if wall == last.0 {
        last.1.checked_add(1)
    } else if wall == remote.0 {
        remote.1.checked_add(1)
    } else {
        Some(0)
    };
    match logical {
        Some(l) => Ok((wall, l)),
        // Counter exhausted within one ms: borrow the next ms rather than
        // repeat a timestamp.
        None => wall
            .checked_add(1)
            .map(|w| (w, 0))
            .ok_or(Error::ClockExhausted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualWallClock;
    use proptest::prelude::*;

    fn clock(ms: u64) -> (ManualWallClock, HybridClock) {
        let wall = ManualWallClock::new(ms);
        let c = HybridClock::with_wall_clock(NodeId(7), Arc::new(wall.clone()));
        (wall, c)
    }

    #[test]
    fn follows_wall_clock_when_it_moves_forward() {
        let (wall, c) = clock(1_000);
        assert_eq!(c.now().unwrap(), HlcTimestamp::new(1_000, 0, NodeId(7)));
        assert_eq!(c.now().unwrap(), HlcTimestamp::new(1_000, 1, NodeId(7)));
        wall.set(2_000);
        assert_eq!(c.now().unwrap(), HlcTimestamp::new(2_000, 0, NodeId(7)));
    }

    #[test]
    fn wall_clock_jumping_back_an_hour_keeps_monotonic() {
        let (wall, c) = clock(10_000_000);
        let a = c.now().unwrap();
        wall.shift(-3_600_000);
        let b = c.now().unwrap();
        assert!(b > a);
        assert_eq!(b.wall_ms, a.wall_ms);
        wall.shift(7_200_000);
        let d = c.now().unwrap();
        assert!(d > b);
        assert_eq!(d.wall_ms, 13_600_000);
    }

    #[test]
    fn observe_merges_remote_ahead_within_drift() {
        let (_wall, c) = clock(1_000);
        let remote = HlcTimestamp::new(5_000, 3, NodeId(9));
        let t = c.observe(remote).unwrap();
        assert_eq!((t.wall_ms, t.logical), (5_000, 4));
        assert!(c.now().unwrap() > remote);
    }

    #[test]
    fn observe_refuses_remote_beyond_max_drift_and_keeps_state() {
        let (_wall, c) = clock(1_000);
        let c = c.with_max_drift(Duration::from_secs(1));
        let before = c.last();
        let err = c
            .observe(HlcTimestamp::new(2_001, 0, NodeId(9)))
            .unwrap_err();
        assert!(matches!(err, Error::ClockDrift { .. }));
        assert_eq!(c.last(), before);
        assert!(c.observe(HlcTimestamp::new(2_000, 0, NodeId(9))).is_ok());
    }

    #[test]
    fn restore_prevents_reissuing_after_restart() {
        let (_wall, c) = clock(1_000);
        c.restore(HlcTimestamp::new(50_000, 2, NodeId(7)));
        let t = c.now().unwrap();
        assert_eq!((t.wall_ms, t.logical), (50_000, 3));
    }

    #[test]
    fn observing_the_same_millisecond_goes_past_both_counters() {
        let (_wall, c) = clock(1_000);
        c.now().unwrap();
        assert_eq!(c.last(), HlcTimestamp::new(1_000, 0, NodeId(7)));
        // Remote counter ahead of the local one: one past the remote's.
        let t = c.observe(HlcTimestamp::new(1_000, 5, NodeId(9))).unwrap();
        assert_eq!(t, HlcTimestamp::new(1_000, 6, NodeId(7)));
        // Local counter ahead of the remote's: one past the local one.
        let t = c.observe(HlcTimestamp::new(1_000, 2, NodeId(9))).unwrap();
        assert_eq!(t, HlcTimestamp::new(1_000, 7, NodeId(7)));
        assert_eq!(c.node(), NodeId(7));
    }

    #[test]
    fn the_drift_limit_defaults_to_an_hour_and_can_be_set() {
        let (_wall, c) = clock(1_000);
        assert_eq!(c.max_drift(), DEFAULT_MAX_DRIFT);
        assert_eq!(DEFAULT_MAX_DRIFT, Duration::from_secs(3600));
        let c = c.with_max_drift(Duration::from_millis(10));
        assert_eq!(c.max_drift(), Duration::from_millis(10));
        assert_eq!(
            c.observe(HlcTimestamp::new(1_011, 0, NodeId(9))),
            Err(Error::ClockDrift {
                remote_ms: 1_011,
                ahead: Duration::from_millis(11),
                max_drift: Duration::from_millis(10),
            })
        );
    }

    #[test]
    fn timestamps_display_as_wall_logical_at_hex_node() {
        let t = HlcTimestamp::new(1_500, 3, NodeId(0xab));
        assert_eq!(t.to_string(), "1500.3@00000000000000ab");
        assert_eq!(NodeId(u64::MAX).to_string(), "ffffffffffffffff");
    }

    #[test]
    fn logical_overflow_borrows_next_millisecond() {
        assert_eq!(advance((5, u32::MAX), 5, None).unwrap(), (6, 0));
        assert!(advance((u64::MAX, u32::MAX), 0, None).is_err());
    }

    #[derive(Debug, Clone)]
    enum Step {
        Jump(i64),
        Now,
        Observe(u64, u32),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (-7_200_000i64..7_200_000).prop_map(Step::Jump),
            Just(Step::Now),
            (0u64..20_000_000, any::<u32>()).prop_map(|(w, l)| Step::Observe(w, l)),
        ]
    }

    proptest! {
        #[test]
        fn monotonic_under_random_jumps_and_merges(steps in prop::collection::vec(step(), 1..200)) {
            let (wall, c) = clock(10_000_000);
            let mut prev = c.now().unwrap();
            for s in steps {
                match s {
                    Step::Jump(d) => wall.shift(d),
                    Step::Now => {
                        let t = c.now().unwrap();
                        prop_assert!(t > prev);
                        prev = t;
                    }
                    Step::Observe(w, l) => {
                        let remote = HlcTimestamp::new(w, l, NodeId(3));
                        let lead_ok = w <= wall.now_ms() + 3_600_000;
                        match c.observe(remote) {
                            Ok(t) => {
                                prop_assert!(lead_ok);
                                prop_assert!(t > prev);
                                prop_assert!((t.wall_ms, t.logical) > (remote.wall_ms, remote.logical));
                                prev = t;
                            }
                            Err(Error::ClockDrift { .. }) => prop_assert!(!lead_ok),
                            Err(e) => prop_assert!(false, "unexpected error {e}"),
                        }
                    }
                }
            }
        }
    }
}
