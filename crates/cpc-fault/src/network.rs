//! `ScriptedNetwork`: a `cpc-network` status source that follows the outage
//! schedule, as a platform's connectivity signal and health probes would.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cpc_network::{FailureKind, ObservationSink, Signal, SourceName, StatusSource};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::schedule::{LinkCondition, Schedule};
use cpc_core::SimClock;

/// A [`StatusSource`] driven by a [`Schedule`], so the monitor and the
/// [`FaultyTransport`](crate::FaultyTransport) agree about outages.
///
/// What it reports at time `T` describes the schedule at `T - lag` (real
/// monitors notice late): `LinkDown` when an `Offline` segment begins,
/// `LinkUp` when it ends. With [`with_probes`](Self::with_probes) it also
/// probes every `interval`: `Success` while online, and on a degraded link
/// `Failure(Timeout)` with the segment's probability (from its own seeded
/// RNG, so it does not disturb the transport's decisions), `Success`
/// otherwise. Without probes a degraded link is left for the worker's
/// passive reports to find, as in life.
///
/// ```
/// use std::time::Duration;
/// use cpc_fault::{Schedule, ScriptedNetwork, SimClock};
/// use cpc_network::{MonitorConfig, NetworkMonitor, NetworkStatus};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = SimClock::start_now();
/// let schedule = Schedule::builder()
///     .offline(Duration::from_secs(10), Duration::from_secs(20))
///     .build()?;
/// let monitor = NetworkMonitor::new(MonitorConfig::default())?;
/// monitor.attach(ScriptedNetwork::new(schedule, clock))?;
/// tokio::time::sleep(Duration::from_secs(15)).await;
/// assert_eq!(monitor.status(), NetworkStatus::Offline);
/// tokio::time::sleep(Duration::from_secs(15)).await;
/// assert!(monitor.status().allows_sending());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ScriptedNetwork {
    name: SourceName,
    schedule: Arc<Schedule>,
    clock: SimClock,
    lag: Duration,
    probes: Option<(Duration, u64)>,
}

impl fmt::Debug for ScriptedNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedNetwork")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("lag", &self.lag)
            .field("probes", &self.probes)
            .finish()
    }
}

impl ScriptedNetwork {
    /// A source named `"scripted"` following `schedule` on `clock`, without
    /// lag or probes.
    pub fn new(schedule: Schedule, clock: SimClock) -> Self {
        ScriptedNetwork {
            name: SourceName::new("scripted"),
            schedule: Arc::new(schedule),
            clock,
            lag: Duration::ZERO,
            probes: None,
        }
    }

    /// Reports under another name (two scripted sources need two names).
    pub fn named(mut self, name: impl Into<SourceName>) -> Self {
        self.name = name.into();
        self
    }

    /// Lags reality by `lag`.
    pub fn with_lag(mut self, lag: Duration) -> Self {
        self.lag = lag;
        self
    }

    /// Probes every `interval` (zero turns probing off), deciding degraded
    /// outcomes with an RNG seeded by `seed`.
    pub fn with_probes(mut self, interval: Duration, seed: u64) -> Self {
        self.probes = (!interval.is_zero()).then_some((interval, seed));
        self
    }

    /// The lag.
    pub fn lag(&self) -> Duration {
        self.lag
    }

    /// The condition this source believes in at simulated time `at`: the
    /// schedule's at `at - lag`.
    pub fn believed_condition_at(&self, at: Duration) -> LinkCondition {
        self.schedule.condition_at(at.saturating_sub(self.lag))
    }

    fn link_up_at(&self, at: Duration) -> bool {
        !matches!(self.believed_condition_at(at), LinkCondition::Offline)
    }
}

impl StatusSource for ScriptedNetwork {
    fn name(&self) -> SourceName {
        self.name.clone()
    }

    async fn run(self, sink: ObservationSink) {
        let mut rng = self.probes.map(|(_, seed)| StdRng::seed_from_u64(seed));
        let mut now = self.clock.elapsed();
        let mut link_up = self.link_up_at(now);
        let first = if link_up {
            Signal::LinkUp
        } else {
            Signal::LinkDown
        };
        if !sink.report(first) {
            return;
        }
        let mut next_probe = self.probes.map(|(interval, _)| now + interval);
        loop {
            // The next instant the believed link state may change: a
            // schedule boundary, seen `lag` later.
            let next_change = self
                .schedule
                .next_change_after(now.saturating_sub(self.lag))
                .map(|t| t + self.lag);
            let wake = match (next_change, next_probe) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            self.clock.sleep_until(wake).await;
            now = self.clock.elapsed();
            let up = self.link_up_at(now);
            if up != link_up {
                link_up = up;
                let signal = if up { Signal::LinkUp } else { Signal::LinkDown };
                tracing::debug!(source = %self.name, up, "scripted network link change");
                if !sink.report(signal) {
                    return;
                }
            }
            if let (Some(due), Some((interval, _)), Some(rng)) =
                (next_probe, self.probes, rng.as_mut())
            {
                if now >= due {
                    next_probe = Some(due + interval);
                    let signal = match self.believed_condition_at(now) {
                        LinkCondition::Online => Some(Signal::Success),
                        LinkCondition::Degraded(p) => Some(if rng.gen::<f64>() < p {
                            Signal::Failure(FailureKind::Timeout)
                        } else {
                            Signal::Success
                        }),
                        // The link is down and already reported so.
                        LinkCondition::Offline => None,
                    };
                    if let Some(signal) = signal {
                        if !sink.report(signal) {
                            return;
                        }
                    }
                }
            }
        }
        // Nothing more will change: stay attached until the monitor goes.
        sink.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_network::{MonitorConfig, NetworkMonitor, NetworkStatus, StatusChange};
    use std::sync::Mutex;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn schedule() -> Schedule {
        Schedule::builder()
            .offline(s(10), s(20))
            .offline(s(40), s(45))
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn monitor_follows_the_schedule() {
        let clock = SimClock::start_now();
        let monitor = NetworkMonitor::new(MonitorConfig::default()).unwrap();
        monitor
            .attach(ScriptedNetwork::new(schedule(), clock))
            .unwrap();
        let mut seen = Vec::new();
        for t in [5, 12, 19, 25, 41, 44, 50] {
            clock.sleep_until(s(t)).await;
            seen.push((t, monitor.status()));
        }
        for (t, status) in seen {
            let offline = (10..20).contains(&t) || (40..45).contains(&t);
            assert_eq!(
                status == NetworkStatus::Offline,
                offline,
                "at {t}s: {status}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lag_delays_every_transition() {
        let clock = SimClock::start_now();
        let monitor = NetworkMonitor::new(MonitorConfig::default()).unwrap();
        let changes: Arc<Mutex<Vec<(Duration, NetworkStatus)>>> = Arc::default();
        let log = Arc::clone(&changes);
        let _h = monitor.add_observer(Arc::new(move |c: &StatusChange| {
            log.lock()
                .unwrap()
                .push((c.at.duration_since(clock.start()), c.to));
        }));
        let net = ScriptedNetwork::new(schedule(), clock).with_lag(s(3));
        assert_eq!(net.believed_condition_at(s(12)), LinkCondition::Online);
        assert_eq!(net.believed_condition_at(s(13)), LinkCondition::Offline);
        monitor.attach(net).unwrap();
        clock.sleep_until(s(60)).await;
        let offline_at: Vec<Duration> = changes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, st)| *st == NetworkStatus::Offline)
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(offline_at, vec![s(13), s(43)]);
    }

    #[tokio::test(start_paused = true)]
    async fn probes_make_the_monitor_online_and_see_degradation() {
        let clock = SimClock::start_now();
        let sched = Schedule::builder()
            .degraded(s(100), s(400), crate::Probability::ALWAYS)
            .build()
            .unwrap();
        let monitor = NetworkMonitor::new(MonitorConfig::default()).unwrap();
        monitor
            .attach(ScriptedNetwork::new(sched, clock).with_probes(s(1), 9))
            .unwrap();
        clock.sleep_until(s(50)).await;
        assert_eq!(monitor.status(), NetworkStatus::Online);
        clock.sleep_until(s(200)).await;
        assert_ne!(monitor.status(), NetworkStatus::Online);
        clock.sleep_until(s(500)).await;
        assert_eq!(monitor.status(), NetworkStatus::Online);
    }
}
