//! `--timeline FILE.svg`: one picture of a run. Per device, the queue
//! depth over time; outage and flapping windows shaded across all
//! devices; applies and conflicts as marks; the scenario and seed in the
//! title. Plain SVG (no script), deterministic: same run, same bytes.

use std::fmt::Write as _;
use std::time::Duration;

use cpc_fault::{LinkCondition, Schedule, SubmitOutcome, SubmittedRecord};

use crate::auth::AnswerLog;
use crate::human;
use crate::scenario::Scenario;

/// Devices drawn; a larger run says how many were left out.
const MAX_LANES: usize = 24;
/// Width of the plot area, px.
const PLOT_WIDTH: f64 = 960.0;
/// Left margin (device labels), px.
const LEFT: f64 = 90.0;
/// Height of one device's lane, px.
const LANE: f64 = 56.0;
/// Space above the lanes (title, legend), px.
const TOP: f64 = 58.0;

/// What one device did over the run.
#[derive(Debug, Clone, Default)]
pub struct DeviceLine {
    /// The device.
    pub device: u32,
    /// Queue depth changes: +1 when an operation is stored, -1 when its
    /// final answer reaches the engine.
    pub depth: Vec<(Duration, i64)>,
    /// When its operations were applied by the remote.
    pub applies: Vec<Duration>,
    /// When its engine resolved a conflict.
    pub conflicts: Vec<Duration>,
}

/// A run, as the picture needs it.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The scenario's name.
    pub scenario: String,
    /// The run's seed.
    pub seed: u64,
    /// The outage schedule (windows and flapping, merged).
    pub schedule: Schedule,
    /// Per device, in device order.
    pub devices: Vec<DeviceLine>,
}

impl Timeline {
    /// The end of the time axis: the last event or window, at least 1 s.
    fn end(&self) -> Duration {
        let last_event = self
            .devices
            .iter()
            .flat_map(|d| {
                d.depth
                    .iter()
                    .map(|(t, _)| *t)
                    .chain(d.applies.iter().copied())
                    .chain(d.conflicts.iter().copied())
            })
            .max()
            .unwrap_or_default();
        let last_window = self
            .schedule
            .segments()
            .iter()
            .map(|s| s.to)
            .max()
            .unwrap_or_default();
        last_event.max(last_window).max(Duration::from_secs(1))
    }

    /// The picture.
    pub fn to_svg(&self) -> String {
        let end = self.end();
        let end_ms = end.as_millis().max(1) as f64;
        let x = |t: Duration| LEFT + t.as_millis() as f64 / end_ms * PLOT_WIDTH;
        let lanes = self.devices.len().min(MAX_LANES);
        let height = TOP + LANE * lanes as f64 + 48.0;
        let width = LEFT + PLOT_WIDTH + 20.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(
            svg,
            r##"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="#ffffff"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{} — seed {} — {} devices, {}</text>"#,
            escape(&self.scenario),
            self.seed,
            self.devices.len(),
            human(end)
        );
        legend(&mut svg);

        // Outage windows, across every lane.
        let lanes_bottom = TOP + LANE * lanes as f64;
        for seg in self.schedule.segments() {
            let (fill, kind) = match seg.condition {
                LinkCondition::Offline => ("#c8c8c8", "offline"),
                _ => ("#f3e3a0", "degraded"),
            };
            let (x0, x1) = (x(seg.from), x(seg.to));
            let _ = writeln!(
                svg,
                r#"<rect class="window" data-kind="{kind}" data-from-ms="{}" data-to-ms="{}" x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{fill}" opacity="0.7"/>"#,
                seg.from.as_millis(),
                seg.to.as_millis(),
                (x1 - x0).max(0.5),
                lanes_bottom - TOP
            );
        }

        for (lane, device) in self.devices.iter().take(MAX_LANES).enumerate() {
            let top = TOP + LANE * lane as f64;
            draw_lane(&mut svg, device, top, end_ms);
        }
        if self.devices.len() > MAX_LANES {
            let _ = writeln!(
                svg,
                r#"<text x="{LEFT}" y="{:.1}">… and {} more devices, not drawn</text>"#,
                lanes_bottom + 14.0,
                self.devices.len() - MAX_LANES
            );
        }
        axis(&mut svg, end, lanes_bottom + 20.0, &x);
        svg.push_str("</svg>\n");
        svg
    }
}

fn legend(svg: &mut String) {
    let y = 36.0;
    let items = [
        ("#c8c8c8", "offline"),
        ("#f3e3a0", "degraded"),
        ("#1f5fa8", "queue depth"),
        ("#2a9d4b", "applied"),
        ("#d62828", "conflict"),
    ];
    let mut x = LEFT;
    for (color, label) in items {
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            y - 9.0,
            x + 16.0,
            y
        );
        x += 110.0;
    }
}

/// One device's lane: a frame, the queue depth as a step line scaled to
/// the lane's maximum, applies as green ticks at the bottom and conflicts
/// as red ticks above them. Marks are binned per pixel column, so a run of
/// millions of operations draws at most a few thousand shapes.
fn draw_lane(svg: &mut String, device: &DeviceLine, top: f64, end_ms: f64) {
    let columns = PLOT_WIDTH as usize;
    let column = |t: Duration| {
        ((t.as_millis() as f64 / end_ms * PLOT_WIDTH) as usize).min(columns.saturating_sub(1))
    };
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top:.1}" width="{PLOT_WIDTH}" height="{LANE}" fill="none" stroke="#999999" stroke-width="0.5"/>"##
    );
    // Depth per pixel column: the highest value reached in it and the
    // value it ended at, so the line shows every peak however many
    // operations share a column.
    let mut deltas = device.depth.clone();
    deltas.sort();
    let mut cells: Vec<Option<(i64, i64)>> = vec![None; columns];
    let mut depth = 0i64;
    let mut max_depth = 0i64;
    for (t, d) in &deltas {
        depth += d;
        let cell = &mut cells[column(*t)];
        *cell = Some(cell.map_or((depth, depth), |(peak, _)| (peak.max(depth), depth)));
        max_depth = max_depth.max(depth);
    }
    let _ = writeln!(
        svg,
        r##"<text x="6" y="{:.1}">device {}</text><text x="6" y="{:.1}" fill="#555555">max {max_depth}</text>"##,
        top + 22.0,
        device.device,
        top + 36.0
    );
    let plot_top = top + 6.0;
    let plot_height = LANE - 18.0;
    let y =
        |v: i64| plot_top + plot_height - v.max(0) as f64 / max_depth.max(1) as f64 * plot_height;
    let mut points = format!("{LEFT:.1},{:.1}", y(0));
    let mut level = 0i64;
    for (c, cell) in cells.iter().enumerate() {
        if let Some((peak, end)) = cell {
            let px = LEFT + c as f64;
            let _ = write!(
                points,
                " {px:.1},{:.1} {px:.1},{:.1} {px:.1},{:.1}",
                y(level),
                y(*peak),
                y(*end)
            );
            level = *end;
        }
    }
    let _ = write!(points, " {:.1},{:.1}", LEFT + PLOT_WIDTH, y(level));
    let _ = writeln!(
        svg,
        r##"<polyline class="depth" points="{points}" fill="none" stroke="#1f5fa8" stroke-width="1.2"/>"##
    );
    let base = top + LANE - 2.0;
    for (times, color, y0, class) in [
        (&device.applies, "#2a9d4b", base - 8.0, "applies"),
        (&device.conflicts, "#d62828", base - 16.0, "conflicts"),
    ] {
        let mut seen = vec![false; columns];
        let mut path = String::new();
        for t in times {
            let c = column(*t);
            if !seen[c] {
                seen[c] = true;
                let _ = write!(path, "M{:.1} {y0:.1}v7", LEFT + c as f64 + 0.5);
            }
        }
        if !path.is_empty() {
            let _ = writeln!(
                svg,
                r#"<path class="{class}" d="{path}" stroke="{color}" stroke-width="1"/>"#
            );
        }
    }
}

/// The time axis: ticks at a round step, at most about ten.
fn axis(svg: &mut String, end: Duration, y: f64, x: &dyn Fn(Duration) -> f64) {
    const STEPS_S: [u64; 15] = [
        1, 2, 5, 10, 30, 60, 120, 300, 600, 1_800, 3_600, 7_200, 21_600, 43_200, 86_400,
    ];
    let step = STEPS_S
        .iter()
        .map(|s| Duration::from_secs(*s))
        .find(|s| end.as_secs_f64() / s.as_secs_f64() <= 10.0)
        .unwrap_or(Duration::from_secs(
            86_400 * ((end.as_secs() / 86_400 / 10) + 1),
        ));
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#333333"/>"##,
        LEFT + PLOT_WIDTH
    );
    let mut t = Duration::ZERO;
    while t <= end {
        let px = x(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{y:.1}" x2="{px:.1}" y2="{:.1}" stroke="#333333"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            y + 4.0,
            y + 16.0,
            human(t)
        );
        t += step;
    }
}

/// XML text escaping.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A device's line of the timeline: its queue depth (an operation counts
/// from when it was stored until its final answer reached the engine) and
/// its conflicts, on the run's time line. Applies are added from the
/// remote's log.
pub(crate) fn device_line(
    scenario: &Scenario,
    index: u32,
    records: &[SubmittedRecord],
    answers: &AnswerLog,
    resolved_at_ms: &[u64],
) -> DeviceLine {
    let mut depth = Vec::with_capacity(records.len() * 2);
    for rec in records {
        if rec.outcome == SubmitOutcome::Failed || rec.ready_at == Duration::MAX {
            continue;
        }
        depth.push((rec.submitted_at, 1));
        if let Some((at, _)) = answers.get(rec.op_id) {
            depth.push((at, -1));
        }
    }
    // Conflicts were logged on the device's (skewed) wall clock.
    let zero = scenario
        .epoch_ms
        .saturating_add_signed(scenario.skew_ms(index));
    let conflicts = resolved_at_ms
        .iter()
        .map(|ms| Duration::from_millis(ms.saturating_sub(zero)))
        .collect();
    DeviceLine {
        device: index,
        depth,
        applies: Vec::new(),
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(devices: u32) -> Timeline {
        let schedule = Schedule::builder()
            .offline(Duration::from_secs(60), Duration::from_secs(120))
            .build()
            .expect("a valid schedule");
        Timeline {
            scenario: "a <scenario> & more".into(),
            seed: 7,
            schedule,
            devices: (0..devices)
                .map(|device| DeviceLine {
                    device,
                    depth: vec![
                        (Duration::from_secs(1), 1),
                        (Duration::from_secs(2), 1),
                        (Duration::from_secs(130), -2),
                    ],
                    applies: vec![Duration::from_secs(130)],
                    conflicts: vec![Duration::from_secs(131)],
                })
                .collect(),
        }
    }

    #[test]
    fn the_picture_is_well_formed_and_shows_the_windows() {
        let svg = sample(2).to_svg();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let windows: Vec<(String, String)> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("window"))
            .map(|n| {
                (
                    n.attribute("data-from-ms").unwrap_or_default().to_owned(),
                    n.attribute("data-to-ms").unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(windows, vec![("60000".into(), "120000".into())]);
        let depth_lines = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("depth"))
            .count();
        assert_eq!(depth_lines, 2);
        assert!(svg.contains("a &lt;scenario&gt; &amp; more"), "{svg}");
        assert!(svg.contains("seed 7"));
        assert!(!svg.contains("<script"));
        // Deterministic.
        assert_eq!(svg, sample(2).to_svg());
    }

    #[test]
    fn many_devices_are_capped_with_a_note() {
        let svg = sample(30).to_svg();
        assert!(roxmltree::Document::parse(&svg).is_ok());
        assert!(svg.contains("and 6 more devices"), "{svg}");
    }
}
