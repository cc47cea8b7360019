//! Scheduled outages: windows of `Offline` or `Degraded(p)` link state on
//! the simulated time line, plus a flapping generator.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::humane;
use crate::error::{Error, Result};

/// A probability in `0.0..=1.0` (validated when read from a file, so the
/// error points at the offending line).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Probability(f64);

impl Probability {
    /// Never.
    pub const NEVER: Probability = Probability(0.0);
    /// Always.
    pub const ALWAYS: Probability = Probability(1.0);

    /// A probability; `None` if `p` is not a finite number in `0..=1`.
    pub fn new(p: f64) -> Option<Self> {
        (p.is_finite() && (0.0..=1.0).contains(&p)).then_some(Probability(p))
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Probability {
    type Error = String;

    fn try_from(p: f64) -> std::result::Result<Self, String> {
        Probability::new(p).ok_or_else(|| format!("probability {p} is outside 0.0..=1.0"))
    }
}

impl From<Probability> for f64 {
    fn from(p: Probability) -> f64 {
        p.0
    }
}

/// The state of the link during a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum LinkState {
    /// No network: requests fail at once with `TransportError::Offline`.
    /// Written `state = "offline"`.
    Offline,
    /// A bad link: each request fails (times out) with this probability.
    /// Written `state = { degraded = 0.3 }`.
    Degraded(Probability),
}

/// The link condition at one instant, as the schedule computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkCondition {
    /// No scheduled fault.
    Online,
    /// Scheduled outage.
    Offline,
    /// Scheduled degradation: requests fail with this probability.
    Degraded(f64),
}

impl LinkCondition {
    /// True unless `Online`.
    pub fn is_faulty(self) -> bool {
        !matches!(self, LinkCondition::Online)
    }

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            LinkCondition::Online => "online",
            LinkCondition::Offline => "offline",
            LinkCondition::Degraded(_) => "degraded",
        }
    }
}

/// Longest simulated run, and latest instant of anything in it (arrivals,
/// windows, crash points): 30 days. Defined with the schedule, the world's
/// time line, so that the world never reads the scenario's parsing.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most `[[schedule.windows]]` and `[[schedule.flapping]]` entries together.
pub const MAX_WINDOWS: usize = 10_000;
/// Most down-up cycles all flapping entries expand to, together.
pub const MAX_FLAPPING_CYCLES: u128 = 1_000_000;

/// One window `[from, to)` of a given link state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start (inclusive), since the start of the run.
    #[serde(with = "humane")]
    pub from: Duration,
    /// End (exclusive): the link heals at `to`.
    #[serde(with = "humane")]
    pub to: Duration,
    /// What the link does meanwhile.
    pub state: LinkState,
}

/// A flapping link: from `from` for `span`, every `period` the link goes
/// down for `duty × period`, then comes back for the rest of the period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flapping {
    /// When the flapping starts.
    #[serde(with = "humane")]
    pub from: Duration,
    /// Length of one down-up cycle.
    #[serde(with = "humane")]
    pub period: Duration,
    /// Fraction of each period the link is down.
    pub duty: Probability,
    /// How long the flapping lasts.
    #[serde(with = "humane")]
    pub span: Duration,
    /// The down state (default `offline`).
    #[serde(default = "default_down_state")]
    pub state: LinkState,
}

fn default_down_state() -> LinkState {
    LinkState::Offline
}

impl Flapping {
    fn windows(&self) -> impl Iterator<Item = Window> + '_ {
        let end = self.from.saturating_add(self.span);
        let down = self.period.mul_f64(self.duty.get());
        let period = self.period;
        let state = self.state;
        let mut start = self.from;
        std::iter::from_fn(move || {
            while start < end {
                let w_from = start;
                let w_to = start.saturating_add(down).min(end);
                start = start.saturating_add(period);
                if w_to > w_from {
                    return Some(Window {
                        from: w_from,
                        to: w_to,
                        state,
                    });
                }
            }
            None
        })
    }
}

/// One normalized piece of a schedule: `[from, to)` in a faulty condition.
/// Segments are sorted, never overlap, and adjacent segments differ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Start (inclusive).
    pub from: Duration,
    /// End (exclusive).
    pub to: Duration,
    /// The condition; never `Online`.
    pub condition: LinkCondition,
}

/// The outage schedule of a run: windows and flapping generators, as
/// written, normalized into non-overlapping segments for fast lookup.
///
/// Where windows overlap, `Offline` wins over `Degraded`, and the highest
/// failure probability wins among degradations.
///
/// In a scenario file:
/// ```toml
/// [[schedule.windows]]
/// from = "1m"
/// to = "11m"
/// state = "offline"
///
/// [[schedule.windows]]
/// from = "20m"
/// to = "25m"
/// state = { degraded = 0.5 }
///
/// [[schedule.flapping]]
/// from = "30m"
/// period = "2s"
/// duty = 0.5
/// span = "5m"
/// ```
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "ScheduleSpec", into = "ScheduleSpec")]
pub struct Schedule {
    spec: ScheduleSpec,
    segments: Vec<Segment>,
}

/// The serde form of a [`Schedule`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    windows: Vec<Window>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    flapping: Vec<Flapping>,
}

impl TryFrom<ScheduleSpec> for Schedule {
    type Error = Error;

    fn try_from(spec: ScheduleSpec) -> Result<Self> {
        Schedule::from_parts(spec.windows, spec.flapping)
    }
}

impl From<Schedule> for ScheduleSpec {
    fn from(s: Schedule) -> ScheduleSpec {
        s.spec
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("windows", &self.spec.windows.len())
            .field("flapping", &self.spec.flapping.len())
            .field("segments", &self.segments.len())
            .field("last_outage_end", &self.last_outage_end())
            .finish()
    }
}

impl Schedule {
    /// A schedule without faults: the link is always up.
    pub fn always_online() -> Self {
        Schedule::default()
    }

    /// Starts a builder.
    pub fn builder() -> ScheduleBuilder {
        ScheduleBuilder::default()
    }

    /// Builds a schedule from windows and flapping generators.
    ///
    /// Refuses empty or inverted windows and flapping with a zero period.
    pub fn from_parts(windows: Vec<Window>, flapping: Vec<Flapping>) -> Result<Self> {
        let entries = windows.len() + flapping.len();
        if entries > MAX_WINDOWS {
            return Err(Error::invalid(
                "schedule",
                format!("{entries} windows and flapping entries is more than the limit of {MAX_WINDOWS}"),
            ));
        }
        let latest = MAX_DURATION;
        for (i, w) in windows.iter().enumerate() {
            if w.to > latest {
                return Err(Error::invalid(
                    format!("schedule.windows[{i}]"),
                    format!(
                        "`to` ({}) is later than the limit of {}",
                        crate::duration::format(w.to),
                        crate::duration::format(latest)
                    ),
                ));
            }
            if w.to <= w.from {
                return Err(Error::invalid(
                    format!("schedule.windows[{i}]"),
                    format!(
                        "`to` ({}) must be after `from` ({})",
                        crate::duration::format(w.to),
                        crate::duration::format(w.from)
                    ),
                ));
            }
        }
        let mut cycles_total: u128 = 0;
        for (i, fl) in flapping.iter().enumerate() {
            if fl.from.saturating_add(fl.span) > latest {
                return Err(Error::invalid(
                    format!("schedule.flapping[{i}]"),
                    format!(
                        "it ends after the limit of {}",
                        crate::duration::format(latest)
                    ),
                ));
            }
            if fl.period.is_zero() {
                return Err(Error::invalid(
                    format!("schedule.flapping[{i}].period"),
                    "the period must be longer than zero",
                ));
            }
            // Bound the expansion: a flapping generator makes one window per
            // period, and a run should not hold millions of them.
            let cycles = fl.span.as_nanos() / fl.period.as_nanos().max(1);
            cycles_total += cycles;
            if cycles_total > MAX_FLAPPING_CYCLES {
                return Err(Error::invalid(
                    format!("schedule.flapping[{i}]"),
                    format!(
                        "{cycles_total} cycles (this entry and those before it) is more than the \
                         limit of {MAX_FLAPPING_CYCLES}; use a longer period or a shorter span"
                    ),
                ));
            }
        }
        let mut all: Vec<Window> = windows.clone();
        for fl in &flapping {
            all.extend(fl.windows());
        }
        let segments = normalize(&all);
        Ok(Schedule {
            spec: ScheduleSpec { windows, flapping },
            segments,
        })
    }

    /// The windows as written (without the flapping expansion).
    pub fn windows(&self) -> &[Window] {
        &self.spec.windows
    }

    /// The flapping generators as written.
    pub fn flapping(&self) -> &[Flapping] {
        &self.spec.flapping
    }

    /// The normalized, sorted, non-overlapping faulty segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// True if the link is never faulty.
    pub fn is_always_online(&self) -> bool {
        self.segments.is_empty()
    }

    /// The link condition at `at` (since the start of the run).
    pub fn condition_at(&self, at: Duration) -> LinkCondition {
        let idx = self.segments.partition_point(|s| s.from <= at);
        match idx.checked_sub(1).map(|i| &self.segments[i]) {
            Some(seg) if at < seg.to => seg.condition,
            _ => LinkCondition::Online,
        }
    }

    /// The first instant after `at` where the condition changes, if any.
    pub fn next_change_after(&self, at: Duration) -> Option<Duration> {
        let idx = self.segments.partition_point(|s| s.to <= at);
        let seg = self.segments.get(idx)?;
        Some(if seg.from > at { seg.from } else { seg.to })
    }

    /// When the last faulty segment ends (the final heal), if any.
    pub fn last_outage_end(&self) -> Option<Duration> {
        self.segments.last().map(|s| s.to)
    }

    /// Number of separate outage periods: maximal runs of adjacent faulty
    /// segments.
    pub fn outage_count(&self) -> usize {
        let mut count = 0;
        let mut prev_end: Option<Duration> = None;
        for s in &self.segments {
            if prev_end != Some(s.from) {
                count += 1;
            }
            prev_end = Some(s.to);
        }
        count
    }

    /// Total time spent offline or degraded.
    pub fn faulty_time(&self) -> Duration {
        self.segments.iter().map(|s| s.to - s.from).sum()
    }
}

/// Builds a [`Schedule`] in code.
#[derive(Debug, Clone, Default)]
pub struct ScheduleBuilder {
    windows: Vec<Window>,
    flapping: Vec<Flapping>,
}

impl ScheduleBuilder {
    /// The link is down in `[from, to)`.
    pub fn offline(mut self, from: Duration, to: Duration) -> Self {
        self.windows.push(Window {
            from,
            to,
            state: LinkState::Offline,
        });
        self
    }

    /// Requests fail with probability `p` in `[from, to)`.
    pub fn degraded(mut self, from: Duration, to: Duration, p: Probability) -> Self {
        self.windows.push(Window {
            from,
            to,
            state: LinkState::Degraded(p),
        });
        self
    }

    /// Adds a window.
    pub fn window(mut self, window: Window) -> Self {
        self.windows.push(window);
        self
    }

    /// Adds a flapping generator.
    pub fn flapping(mut self, flapping: Flapping) -> Self {
        self.flapping.push(flapping);
        self
    }

    /// `count` outages of length `length`, evenly spread over `span`
    /// starting at `from` (outage `i` starts at `from + i × span / count`).
    pub fn evenly_spread_outages(
        mut self,
        from: Duration,
        span: Duration,
        count: u32,
        length: Duration,
    ) -> Self {
        if count == 0 {
            return self;
        }
        let step = span / count;
        for i in 0..count {
            let start = from + step * i;
            self.windows.push(Window {
                from: start,
                to: start + length,
                state: LinkState::Offline,
            });
        }
        self
    }

    /// Validates and normalizes.
    pub fn build(self) -> Result<Schedule> {
        Schedule::from_parts(self.windows, self.flapping)
    }
}

/// Sweeps the windows into sorted, non-overlapping, merged segments.
fn normalize(windows: &[Window]) -> Vec<Segment> {
    // Events: at each boundary, windows start (+1) or end (-1). Offline is
    // counted; degradations keep a multiset of their probabilities (by bit
    // pattern, which orders like the value for non-negative floats).
    let mut events: Vec<(Duration, i8, LinkState)> = Vec::with_capacity(windows.len() * 2);
    for w in windows {
        events.push((w.from, 1, w.state));
        events.push((w.to, -1, w.state));
    }
    events.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut offline: i64 = 0;
    let mut degraded: BTreeMap<u64, i64> = BTreeMap::new();
    let mut out: Vec<Segment> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let t = events[i].0;
        while i < events.len() && events[i].0 == t {
            let (_, delta, state) = events[i];
            match state {
                LinkState::Offline => offline += i64::from(delta),
                LinkState::Degraded(p) => {
                    let entry = degraded.entry(p.get().to_bits()).or_insert(0);
                    *entry += i64::from(delta);
                    if *entry <= 0 {
                        degraded.remove(&p.get().to_bits());
                    }
                }
            }
            i += 1;
        }
        let Some(&(next, _, _)) = events.get(i) else {
            break;
        };
        let condition = if offline > 0 {
            LinkCondition::Offline
        } else if let Some((&bits, _)) = degraded.iter().next_back() {
            LinkCondition::Degraded(f64::from_bits(bits))
        } else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last.to == t && last.condition == condition => last.to = next,
            _ => out.push(Segment {
                from: t,
                to: next,
                condition,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn lookup_follows_windows_and_heals_at_to() {
        let sched = Schedule::builder()
            .offline(s(10), s(20))
            .degraded(s(30), s(40), Probability::new(0.25).unwrap())
            .build()
            .unwrap();
        assert_eq!(sched.condition_at(s(9)), LinkCondition::Online);
        assert_eq!(sched.condition_at(s(10)), LinkCondition::Offline);
        assert_eq!(sched.condition_at(s(19)), LinkCondition::Offline);
        assert_eq!(sched.condition_at(s(20)), LinkCondition::Online);
        assert_eq!(sched.condition_at(s(35)), LinkCondition::Degraded(0.25));
        assert_eq!(sched.last_outage_end(), Some(s(40)));
        assert_eq!(sched.outage_count(), 2);
        assert_eq!(sched.next_change_after(s(0)), Some(s(10)));
        assert_eq!(sched.next_change_after(s(12)), Some(s(20)));
        assert_eq!(sched.next_change_after(s(41)), None);
    }

    #[test]
    fn overlaps_merge_offline_over_degraded() {
        let sched = Schedule::builder()
            .degraded(s(0), s(100), Probability::new(0.1).unwrap())
            .degraded(s(50), s(60), Probability::new(0.9).unwrap())
            .offline(s(55), s(70))
            .build()
            .unwrap();
        assert_eq!(sched.condition_at(s(10)), LinkCondition::Degraded(0.1));
        assert_eq!(sched.condition_at(s(52)), LinkCondition::Degraded(0.9));
        assert_eq!(sched.condition_at(s(58)), LinkCondition::Offline);
        assert_eq!(sched.condition_at(s(65)), LinkCondition::Offline);
        assert_eq!(sched.condition_at(s(75)), LinkCondition::Degraded(0.1));
        assert_eq!(sched.outage_count(), 1);
        let segs = sched.segments();
        assert!(segs.windows(2).all(|w| w[0].to <= w[1].from));
    }

    #[test]
    fn flapping_expands_into_periodic_outages() {
        let sched = Schedule::builder()
            .flapping(Flapping {
                from: s(10),
                period: s(2),
                duty: Probability::new(0.5).unwrap(),
                span: s(10),
                state: LinkState::Offline,
            })
            .build()
            .unwrap();
        assert_eq!(sched.outage_count(), 5);
        assert_eq!(sched.condition_at(s(10)), LinkCondition::Offline);
        assert_eq!(sched.condition_at(s(11)), LinkCondition::Online);
        assert_eq!(sched.condition_at(s(12)), LinkCondition::Offline);
        assert_eq!(sched.last_outage_end(), Some(s(19)));
        assert_eq!(sched.faulty_time(), s(5));
    }

    #[test]
    fn refuses_inverted_window_and_zero_period() {
        let err = Schedule::builder().offline(s(5), s(5)).build().unwrap_err();
        assert!(err.to_string().contains("schedule.windows[0]"), "{err}");
        let err = Schedule::builder()
            .flapping(Flapping {
                from: s(0),
                period: Duration::ZERO,
                duty: Probability::new(0.5).unwrap(),
                span: s(1),
                state: LinkState::Offline,
            })
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("period"), "{err}");
    }

    #[test]
    fn evenly_spread_outages_are_separate() {
        let sched = Schedule::builder()
            .evenly_spread_outages(s(0), s(3600), 20, s(60))
            .build()
            .unwrap();
        assert_eq!(sched.outage_count(), 20);
        assert_eq!(sched.faulty_time(), s(1200));
    }
}
