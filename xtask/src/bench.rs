//! `cargo xtask bench`: runs the criterion benches and the scale programs,
//! then writes one report (`target/bench-report.md`, also printed) with every
//! figure as a median and, where it has one, as a ratio to the baseline
//! measured in the same run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::{cargo, workspace_root, XtaskError};

/// A criterion measurement read back from `target/criterion`.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// `group/function[/parameter]`.
    pub id: String,
    /// Median time of one iteration, ns.
    pub median_ns: f64,
    /// Elements processed per iteration, when the bench declared a throughput.
    pub elements: Option<f64>,
}

impl Measurement {
    /// Operations per second implied by the median, when elements are known.
    pub fn rate(&self) -> Option<f64> {
        self.elements.map(|n| n * 1e9 / self.median_ns)
    }
}

/// A figure compared with its same-run baseline: `(figure, baseline, target
/// ratio, what the target means)`. The ids are matched exactly against the
/// criterion ids; a pair whose ids are missing is reported as missing. The
/// ratio is a rate ratio (baseline time per element over figure time per
/// element), so higher is better.
const RATIOS: &[(&str, &str, f64, &str)] = &[
    (
        "enqueue_immediate/sqlite",
        "baseline_raw_file/fdatasync_per_op",
        0.5,
        "SQLite Immediate enqueue vs raw per-op fdatasync",
    ),
    (
        "enqueue_immediate/sled",
        "baseline_raw_file/fdatasync_per_op",
        0.5,
        "sled Immediate enqueue vs raw per-op fdatasync",
    ),
    (
        "enqueue_immediate/sqlite",
        "baseline_sqlite_outbox/insert_per_op",
        1.0,
        "SQLite Immediate enqueue vs a plain SQLite outbox insert",
    ),
    (
        "enqueue_coalescing/sqlite_on_keep",
        "enqueue_coalescing/sqlite_off",
        0.8,
        "SQLite submit with coalescing on (nothing merges) vs off",
    ),
    (
        "enqueue_coalescing/sqlite_on_merge",
        "enqueue_coalescing/sqlite_off",
        0.8,
        "SQLite submit with coalescing on (every edit merges) vs off",
    ),
    (
        "enqueue_coalescing/memory_on_keep",
        "enqueue_coalescing/memory_off",
        0.5,
        "MemoryStorage submit with coalescing on (nothing merges) vs off",
    ),
    (
        "group_commit_64_writers/sqlite",
        "baseline_raw_file/fdatasync_per_64",
        0.5,
        "SQLite GroupCommit, 64 writers, vs raw fdatasync per 64",
    ),
    (
        "group_commit_64_writers/sled",
        "baseline_raw_file/fdatasync_per_64",
        0.5,
        "sled GroupCommit, 64 writers, vs raw fdatasync per 64",
    ),
    (
        "worker/drain_sqlite_group_commit_100k",
        "worker/store_loop_sqlite_group_commit_100k",
        0.5,
        "engine drain (SQLite, GroupCommit) vs the store's own claim+ack loop",
    ),
    (
        "worker/drain_sqlite_group_commit_durable_claims_100k",
        "worker/drain_sqlite_group_commit_100k",
        0.5,
        "engine drain with durable claims (coalescing on) vs without",
    ),
];

/// Absolute bounds from the issues: `(figure, bound, unit, what)`. `ops/s`
/// bounds are minimum rates; `ns` bounds are maximum times per element.
const BOUNDS: &[(&str, f64, &str, &str)] = &[
    (
        "drain_claim64_ack/sqlite",
        75_000.0,
        "ops/s",
        "drain by claim_ready(64)+ack, one durable commit per batch",
    ),
    (
        "worker/overhead_memory_100k",
        5_000.0,
        "ns",
        "worker cost per op, MemoryStorage, instant transport (Blocking calls)",
    ),
    (
        "worker/overhead_memory_inline_100k",
        5_000.0,
        "ns",
        "worker cost per op, MemoryStorage, instant transport (Inline calls)",
    ),
    (
        "backoff_delay/exponential/full",
        50.0,
        "ns",
        "Exponential::delay with full jitter",
    ),
    (
        "backoff_delay/exponential/decorrelated",
        50.0,
        "ns",
        "Exponential::delay with decorrelated jitter",
    ),
    (
        "fault/simulated_hour_20_outages_10k_ops",
        2e9,
        "ns",
        "a simulated hour, 20 outages, 10,000 ops",
    ),
];

/// `cargo xtask bench [--quick] [--report-only]`.
pub fn main(quick: bool, report_only: bool) -> Result<(), XtaskError> {
    let extra = if report_only {
        Vec::new()
    } else {
        run_benches(quick)?
    };
    let root = workspace_root();
    let measurements = read_criterion(&root.join("target").join("criterion"))?;
    let report = render(&measurements, &extra);
    let out = root.join("target").join("bench-report.md");
    std::fs::write(&out, &report).map_err(|e| XtaskError::Io("writing the bench report", e))?;
    println!("{report}");
    println!("report written to {}", out.display());
    Ok(())
}

/// Runs the criterion benches and the figure programs; returns the extra
/// report sections (printed latency percentiles, the programs' output).
fn run_benches(quick: bool) -> Result<Vec<(String, String)>, XtaskError> {
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "cpc-benches"]);
    if quick {
        cmd.args(["--", "--quick"]);
    }
    println!("==> cargo bench -p cpc-benches");
    let output = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| XtaskError::Io("running cargo bench", e))?;
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{printed}");
    if !output.status.success() {
        return Err(XtaskError::StepFailed("cargo bench -p cpc-benches".into()));
    }
    let mut extra = Vec::new();
    // Latency percentiles are printed by the benches themselves (criterion
    // records only the time per iteration).
    let latencies: String = printed
        .lines()
        .filter(|l| l.contains("p99"))
        .map(|l| format!("{l}\n"))
        .collect();
    if !latencies.is_empty() {
        extra.push((
            "latency percentiles printed by the benches".to_string(),
            latencies,
        ));
    }
    extra.extend(run_scale_programs()?);
    Ok(extra)
}

/// Runs the non-criterion figure programs of the benches package and returns
/// their printed output, verbatim, for the report.
fn run_scale_programs() -> Result<Vec<(String, String)>, XtaskError> {
    let mut out = Vec::new();
    let bins_dir = workspace_root().join("benches").join("src").join("bin");
    let Ok(entries) = std::fs::read_dir(&bins_dir) else {
        return Ok(out);
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let p = e.path();
            (p.extension().is_some_and(|x| x == "rs"))
                .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .flatten()
        })
        .collect();
    names.sort();
    for name in names {
        println!("==> figure program {name}");
        let output = cargo()
            .args([
                "run",
                "--quiet",
                "--release",
                "-p",
                "cpc-benches",
                "--bin",
                &name,
            ])
            .output()
            .map_err(|e| XtaskError::Io("running a figure program", e))?;
        if !output.status.success() {
            return Err(XtaskError::StepFailed(format!(
                "figure program {name}: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        out.push((name, String::from_utf8_lossy(&output.stdout).into_owned()));
    }
    Ok(out)
}

/// Reads every `new/estimates.json` below `dir`.
pub fn read_criterion(dir: &Path) -> Result<Vec<Measurement>, XtaskError> {
    let mut found = Vec::new();
    walk(dir, dir, &mut found)?;
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<Measurement>) -> Result<(), XtaskError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some(m) = read_one(root, &path)? {
                found.push(m);
            }
        } else if path
            .file_name()
            .is_some_and(|n| n != "report" && n != "base" && n != "change")
        {
            walk(root, &path, found)?;
        }
    }
    Ok(())
}

fn read_one(root: &Path, new_dir: &Path) -> Result<Option<Measurement>, XtaskError> {
    let estimates = new_dir.join("estimates.json");
    let Ok(text) = std::fs::read_to_string(&estimates) else {
        return Ok(None);
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| XtaskError::StepFailed(format!("{}: {e}", estimates.display())))?;
    let Some(median_ns) = json["median"]["point_estimate"].as_f64() else {
        return Ok(None);
    };
    let bench: Option<serde_json::Value> = std::fs::read_to_string(new_dir.join("benchmark.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let id = bench
        .as_ref()
        .and_then(|b| b["full_id"].as_str().map(str::to_string))
        .unwrap_or_else(|| relative_id(root, new_dir));
    let elements = bench.as_ref().and_then(|b| {
        b["throughput"]["Elements"]
            .as_f64()
            .or_else(|| b["throughput"]["Bytes"].as_f64().map(|_| 1.0))
    });
    Ok(Some(Measurement {
        id,
        median_ns,
        elements,
    }))
}

fn relative_id(root: &Path, new_dir: &Path) -> String {
    let parent: PathBuf = new_dir.parent().map(PathBuf::from).unwrap_or_default();
    parent
        .strip_prefix(root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| parent.to_string_lossy().into_owned())
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Renders the report from the measurements and the figure programs' output.
pub fn render(ms: &[Measurement], extra: &[(String, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# cpc-sync bench report\n");
    let _ = writeln!(
        s,
        "Produced by `cargo xtask bench`. Medians from criterion; ratios are against baselines \
         measured in the same run (this machine is shared and noisy: compare ratios, not absolutes).\n"
    );
    let _ = writeln!(s, "## Ratios to same-run baselines\n");
    let _ = writeln!(s, "| figure | baseline | ratio | target | verdict |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    let find = |id: &str| ms.iter().find(|m| m.id == id);
    for (fig, base, target, what) in RATIOS {
        match (find(fig), find(base)) {
            (Some(f), Some(b)) => {
                // Rate ratio: baseline time over figure time per element.
                let per_f = f.median_ns / f.elements.unwrap_or(1.0);
                let per_b = b.median_ns / b.elements.unwrap_or(1.0);
                let ratio = per_b / per_f;
                let verdict = if ratio >= *target { "met" } else { "NOT met" };
                let _ = writeln!(
                    s,
                    "| {what} (`{fig}`) | `{base}` | {ratio:.2}× | ≥ {target}× | {verdict} |"
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "| {what} (`{fig}`) | `{base}` | missing | ≥ {target}× | not measured |"
                );
            }
        }
    }
    let _ = writeln!(s, "\n## Absolute bounds from the issues\n");
    let _ = writeln!(s, "| figure | measured | bound | verdict |");
    let _ = writeln!(s, "|---|---|---|---|");
    for (id, bound, unit, what) in BOUNDS {
        match find(id) {
            Some(m) => {
                let per = m.median_ns / m.elements.unwrap_or(1.0);
                let (shown, ok) = if *unit == "ops/s" {
                    let rate = 1e9 / per;
                    (format!("{rate:.0} ops/s"), rate >= *bound)
                } else {
                    (human_ns(per), per <= *bound)
                };
                let limit = if *unit == "ops/s" {
                    format!("≥ {bound:.0} ops/s")
                } else {
                    format!("≤ {}", human_ns(*bound))
                };
                let verdict = if ok { "met" } else { "NOT met" };
                let _ = writeln!(s, "| {what} (`{id}`) | {shown} | {limit} | {verdict} |");
            }
            None => {
                let _ = writeln!(s, "| {what} (`{id}`) | missing | | not measured |");
            }
        }
    }
    let _ = writeln!(s, "\n## Every benchmark\n");
    let _ = writeln!(s, "| benchmark | median / iter | rate |");
    let _ = writeln!(s, "|---|---|---|");
    for m in ms {
        let rate = m
            .rate()
            .map(|r| format!("{r:.0} ops/s"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "| `{}` | {} | {} |", m.id, human_ns(m.median_ns), rate);
    }
    for (name, text) in extra {
        let _ = writeln!(s, "\n## {name}\n\n```text\n{}```", text);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_uses_per_element_time() {
        let ms = vec![
            Measurement {
                id: "enqueue_immediate/sqlite".into(),
                median_ns: 200_000.0,
                elements: Some(1.0),
            },
            Measurement {
                id: "baseline_raw_file/fdatasync_per_op".into(),
                median_ns: 100_000.0,
                elements: Some(1.0),
            },
        ];
        let r = render(&ms, &[]);
        assert!(r.contains("0.50×"), "{r}");
        assert!(r.contains("| met |"), "{r}");
    }
}
