//! The table `cargo xtask simulate` prints: one row per run (or per suite
//! over many seeds) in which every operation's fate has a column, so the
//! columns from `applied` to `lost` add up to `ops`; then latency by
//! priority.

use std::fmt::Write as _;
use std::time::Duration;

use cpc_fault::{Fates, InvariantReport};
use cpc_sync::core::OperationPriority;

pub use cpc_sim::human;
use cpc_sim::RunResult;

/// Count columns: `ops`, then the fates that add up to it, then the
/// invariant violations.
const COUNTS: [&str; 11] = [
    "ops",
    "applied",
    "merged",
    "superseded",
    "dead",
    "pending",
    "unsent",
    "lost",
    "dup",
    "reord",
    "inv",
];
/// Width of a latency-by-priority cell (`12.40s/1m02s (1234)`).
const PRIORITY_WIDTH: usize = 24;
/// Figure columns (a ratio and three durations).
const FIGURES: [&str; 4] = ["retry-amp", "drain", "p50", "p99"];

/// The layout of one table.
#[derive(Debug, Clone)]
pub struct Table {
    suite_width: usize,
    many: bool,
    wall: bool,
}

impl Table {
    /// A table for suites named `names`; `many` when each row sums several
    /// seeds; `wall` to show wall-clock time.
    pub fn new<'a>(names: impl Iterator<Item = &'a str>, many: bool, wall: bool) -> Self {
        let longest = names.map(str::len).max().unwrap_or(0);
        Table {
            suite_width: longest.max("suite".len()) + 1,
            many,
            wall,
        }
    }

    fn count_width(name: &str) -> usize {
        name.len().max(6) + 1
    }

    fn figure_width(&self) -> usize {
        if self.many {
            // "median/worst": two short durations; fits "retry-amp med/worst".
            21
        } else {
            10
        }
    }

    /// The header line.
    pub fn header(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "{:<w$}", "suite", w = self.suite_width);
        let _ = write!(out, "{:<7}", if self.many { "seeds" } else { "seed" });
        for name in COUNTS {
            let _ = write!(out, "{name:<w$}", w = Self::count_width(name));
        }
        for name in FIGURES {
            let label = if self.many {
                format!("{name} med/worst")
            } else {
                name.to_owned()
            };
            let _ = write!(out, "{label:<w$}", w = self.figure_width());
        }
        out.push_str("verdict");
        if self.wall {
            out.push_str(if self.many {
                "   wall (total)"
            } else {
                "   wall"
            });
        }
        out
    }

    fn line(&self, name: &str, seed: String, counts: [u64; 11], figures: [String; 4]) -> String {
        let mut out = String::new();
        let _ = write!(out, "{name:<w$}", w = self.suite_width);
        let _ = write!(out, "{seed:<7}");
        for (value, column) in counts.iter().zip(COUNTS) {
            let _ = write!(out, "{value:<w$}", w = Self::count_width(column));
        }
        for value in figures {
            let _ = write!(out, "{value:<w$}", w = self.figure_width());
        }
        out
    }

    /// The row of one run.
    pub fn row(&self, name: &str, result: &RunResult) -> String {
        let r = &result.report;
        let mut out = self.line(
            name,
            r.seed.to_string(),
            counts(r.submitted, &r.fates, r),
            [
                ratio(r.retry_amplification),
                opt(r.drain_after_heal),
                opt(r.latency_p50),
                opt(r.latency_p99),
            ],
        );
        verdict(
            &mut out,
            u64::from(!r.passed),
            self.wall.then_some(result.wall),
        );
        out
    }

    /// The row of a suite over many seeds: counts summed, figures as the
    /// median and the worst seed.
    pub fn summary_row(&self, sum: &Summary) -> String {
        let mut out = self.line(
            &sum.name,
            sum.seeds.to_string(),
            [
                sum.submitted,
                sum.fates.applied,
                sum.fates.merged,
                sum.fates.superseded,
                sum.fates.dead(),
                sum.fates.pending,
                sum.fates.unsent(),
                sum.fates.lost,
                sum.duplicated,
                sum.reordered,
                sum.inversions,
            ],
            [
                pair_f(&sum.retry),
                pair_d(&sum.drain),
                pair_d(&sum.p50),
                pair_d(&sum.p99),
            ],
        );
        verdict(&mut out, sum.failed, self.wall.then_some(sum.wall));
        out
    }

    /// The latency-by-priority line of one run: `p50/p99` per priority.
    pub fn priorities(&self, name: &str, report: &InvariantReport) -> String {
        let mut out = format!("{name:<w$}", w = self.suite_width);
        for rank in (0..4u8).rev() {
            let cell = report
                .latency_by_priority
                .iter()
                .find(|l| l.priority.rank() == rank)
                .map_or_else(
                    || "-".to_owned(),
                    |l| format!("{}/{} ({})", opt(l.p50), opt(l.p99), l.applied),
                );
            let _ = write!(out, "{cell:<w$}", w = PRIORITY_WIDTH);
        }
        out.trim_end().to_owned()
    }

    /// The latency-by-priority line of a suite over many seeds: the median
    /// and worst p99 per priority.
    pub fn summary_priorities(&self, sum: &Summary) -> String {
        let mut out = format!("{:<w$}", sum.name, w = self.suite_width);
        for p99s in sum.p99_by_priority.iter().rev() {
            let _ = write!(out, "{:<w$}", pair_d(p99s), w = PRIORITY_WIDTH);
        }
        out.trim_end().to_owned()
    }

    /// The heading of the latency block: what the cells hold, then one
    /// column per priority.
    pub fn priorities_header(&self) -> String {
        let what = if self.many {
            "latency by priority, p99 median/worst over the seeds"
        } else {
            "latency by priority, p50/p99 (operations applied)"
        };
        let mut out = format!("{what}\n{:<w$}", "suite", w = self.suite_width);
        for rank in (0..4u8).rev() {
            let name = OperationPriority::from_rank(rank)
                .unwrap_or_default()
                .to_string();
            let _ = write!(out, "{name:<w$}", w = PRIORITY_WIDTH);
        }
        out.trim_end().to_owned()
    }
}

fn counts(submitted: u64, f: &Fates, r: &InvariantReport) -> [u64; 11] {
    [
        submitted,
        f.applied,
        f.merged,
        f.superseded,
        f.dead(),
        f.pending,
        f.unsent(),
        f.lost,
        r.duplicated.count,
        r.reordered.count,
        r.priority_inversions.count,
    ]
}

fn verdict(out: &mut String, failed: u64, wall: Option<Duration>) {
    let text = match failed {
        0 => "PASS".to_owned(),
        1 => "FAIL".to_owned(),
        n => format!("FAIL({n})"),
    };
    match wall {
        Some(w) => {
            let _ = write!(out, "{text:<10}{}", human(w));
        }
        None => out.push_str(&text),
    }
}

/// A suite's runs over many seeds.
#[derive(Debug)]
pub struct Summary {
    /// The suite.
    pub name: String,
    /// Seeds run so far.
    pub seeds: u64,
    submitted: u64,
    fates: Fates,
    duplicated: u64,
    reordered: u64,
    inversions: u64,
    retry: Vec<f64>,
    drain: Vec<Duration>,
    p50: Vec<Duration>,
    p99: Vec<Duration>,
    p99_by_priority: [Vec<Duration>; 4],
    failed: u64,
    wall: Duration,
}

impl Summary {
    /// An empty summary of `name`.
    pub fn new(name: &str) -> Self {
        Summary {
            name: name.to_owned(),
            seeds: 0,
            submitted: 0,
            fates: Fates::default(),
            duplicated: 0,
            reordered: 0,
            inversions: 0,
            retry: Vec::new(),
            drain: Vec::new(),
            p50: Vec::new(),
            p99: Vec::new(),
            p99_by_priority: Default::default(),
            failed: 0,
            wall: Duration::ZERO,
        }
    }

    /// Adds one seed's run.
    pub fn add(&mut self, result: &RunResult) {
        let r = &result.report;
        self.seeds += 1;
        self.submitted += r.submitted;
        self.fates += r.fates;
        self.duplicated += r.duplicated.count;
        self.reordered += r.reordered.count;
        self.inversions += r.priority_inversions.count;
        self.retry.extend(r.retry_amplification);
        self.drain.extend(r.drain_after_heal);
        self.p50.extend(r.latency_p50);
        self.p99.extend(r.latency_p99);
        for l in &r.latency_by_priority {
            if let Some(p99) = l.p99 {
                self.p99_by_priority[usize::from(l.priority.rank())].push(p99);
            }
        }
        self.failed += u64::from(!r.passed);
        self.wall += result.wall;
    }
}

/// The median (upper for an even count) and the largest.
fn median_worst<T: Copy + PartialOrd>(values: &[T]) -> Option<(T, T)> {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Some((*sorted.get(sorted.len() / 2)?, *sorted.last()?))
}

fn pair_d(values: &[Duration]) -> String {
    median_worst(values).map_or_else(
        || "-".to_owned(),
        |(m, w)| format!("{}/{}", human(m), human(w)),
    )
}

fn pair_f(values: &[f64]) -> String {
    median_worst(values).map_or_else(|| "-".to_owned(), |(m, w)| format!("{m:.3}/{w:.3}"))
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"))
}

fn opt(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), human)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_suite_names_widen_the_column_and_the_fates_add_up() {
        let table = Table::new(
            ["a-suite-name-longer-than-sixteen"].into_iter(),
            false,
            false,
        );
        let header = table.header();
        let mut report = cpc_fault::check(&[], &[]);
        report.submitted = 10;
        report.fates = Fates {
            applied: 6,
            superseded: 3,
            rejected: 1,
            ..Fates::default()
        };
        let result = RunResult {
            report,
            wall: Duration::ZERO,
            timeline: None,
        };
        let row = table.row("a-suite-name-longer-than-sixteen", &result);
        // Every column starts where its header does.
        let starts = |line: &str| -> Vec<usize> {
            let mut out = Vec::new();
            let bytes = line.as_bytes();
            for i in 0..bytes.len() {
                if bytes[i] != b' ' && (i == 0 || bytes[i - 1] == b' ') {
                    out.push(i);
                }
            }
            out
        };
        let (h, r) = (starts(&header), starts(&row));
        assert!(h.len() >= 17 && r.len() >= 17, "{header}\n{row}");
        // The fixed columns (suite .. p99) line up.
        assert_eq!(h[..17], r[..17], "{header}\n{row}");
        let cells: Vec<&str> = row.split_whitespace().collect();
        // ops applied merged superseded dead pending unsent lost
        assert_eq!(cells[2..10], ["10", "6", "0", "3", "1", "0", "0", "0"]);
    }
}
