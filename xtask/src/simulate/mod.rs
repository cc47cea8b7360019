//! `cargo xtask simulate`: the command line over `cpc-sim` (the full engine
//! against `cpc-fault`'s hostile world, checked against the invariants).
//! This module parses options, runs the jobs on a pool and prints the table;
//! the harness itself is the `cpc-sim` crate.
//!
//! Each scenario runs on its own current-thread tokio runtime with the clock
//! paused: one shared [`SimulatedRemote`](cpc_fault::SimulatedRemote), and per
//! device a `FaultyTransport` (seeded from the scenario seed and the device
//! index) behind a bearer-token wrapper, a `NetworkMonitor` fed by a
//! `ScriptedNetwork`, and a full `SyncEngine` on its own store (storage
//! calls inline on the runtime thread, or on the blocking pool behind the
//! replay gate of the `gate` module with `--storage-calls blocking`). A driver per
//! device submits the device's workload at its simulated times, crashes and
//! reopens the engine at the scenario's crash points, waits for the drain
//! after the last outage, and the checker compares what was submitted with
//! the remote's apply log. One table row per scenario; the seed comes first;
//! the same seed prints the same bytes (the wall column aside, or left out
//! with `--no-wall`).
//!
//! Built-in suites live in `crates/cpc-sim/scenarios/*.toml` (copy one to start your
//! own, run it with `--scenario FILE`).

mod pool;
mod table;

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cpc_fault::InvariantReport;
use cpc_sync::storage::Durability;
use cpc_sync::worker::StorageCalls;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use self::table::{human, Summary, Table};
use crate::XtaskError;
use cpc_sim::{RunResult, RunSettings, Secret, Spec, StorageKind, SUITES};

/// Runs estimated above this print their memory estimate first.
const LARGE_RUN_BYTES: u64 = 256 << 20;

/// The seed of `cargo xtask simulate` without `--seed`.
pub const DEFAULT_SEED: u64 = 42;

/// `cargo xtask simulate`: the full engine against simulated faults, checked
/// against the invariants. Exit status: 0 if every invariant and bound
/// holds, 1 if not, 2 on bad usage or a bad scenario file.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Built-in suite(s), comma-separated (default all): steady, flaky-30,
    /// lost-acks, hostile-answers, partition-heal, flapping, rate-limited,
    /// thundering-herd, poison, conflicts, priority-storm, crash-restart,
    /// huge-queue, two-way, initial-sync, server-restore, edit-storm
    #[arg(long = "suite", value_name = "NAME|all", value_delimiter = ',')]
    suites: Vec<String>,
    /// Run a scenario file instead (see crates/cpc-sim/scenarios/)
    #[arg(long, value_name = "FILE.toml", conflicts_with = "suites")]
    scenario: Option<PathBuf>,
    /// Seed of every scenario (default 42; a --scenario file keeps its own
    /// seed unless --seed is given)
    #[arg(long)]
    seed: Option<u64>,
    /// Run N seeds: seed, seed+1, ... (prints seeds/s)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// Operations per device
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// Number of devices
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    devices: Option<u32>,
    /// Storage backend: sqlite (default), sled or memory
    #[arg(long, value_name = "KIND", value_parser = StorageKind::parse)]
    storage: Option<StorageKind>,
    /// Durability: immediate (default), group or relaxed
    #[arg(long, value_name = "KIND", value_parser = parse_durability)]
    durability: Option<Durability>,
    /// Every suite at reduced size
    #[arg(long)]
    quick: bool,
    /// Write every report as JSON
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw each run: queue depth per device, outages shaded, applies and
    /// conflicts marked (one run: FILE; several: `FILE-<suite>-<seed>.svg`)
    #[arg(long, value_name = "FILE.svg")]
    timeline: Option<PathBuf>,
    /// Print every run's full text report after the table (fates and
    /// conflicts per device, latency per priority); failed runs always
    /// print theirs
    #[arg(long)]
    reports: bool,
    /// Leave out the wall-clock column (byte-stable output)
    #[arg(long = "no-wall", action = clap::ArgAction::SetFalse)]
    wall: bool,
    /// Prefix every payload with STR (log-leak test)
    #[arg(long, value_name = "STR")]
    payload_canary: Option<String>,
    /// Prefix every record id with STR (log-leak test: record ids may be
    /// logged at DEBUG, never above)
    #[arg(long, value_name = "STR")]
    entity_canary: Option<String>,
    /// The credential the simulated transport carries
    #[arg(long, value_name = "STR")]
    bearer_token: Option<String>,
    /// Where the per-device stores go (default: the system temp dir; with
    /// --quick /dev/shm if present, so the same durable code runs without
    /// paying for fsync)
    #[arg(long, value_name = "DIR")]
    tmpdir: Option<PathBuf>,
    /// Scenario runs at once (default: 3 per core, or 1 per core with
    /// --quick; each run is deterministic alone)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    /// inline (default): the engine calls its store on the simulation's one
    /// thread; blocking: on tokio's blocking pool as in production, made
    /// replayable by a gate
    #[arg(long, value_name = "MODE", default_value = "inline", value_parser = parse_storage_calls)]
    storage_calls: StorageCalls,
}

fn parse_durability(v: &str) -> Result<Durability, String> {
    match v {
        "immediate" => Ok(Durability::Immediate),
        "group" => Ok(Durability::GroupCommit {
            max_delay: Duration::from_millis(2),
        }),
        "relaxed" => Ok(Durability::Relaxed),
        other => Err(format!(
            "unknown value {other:?} (immediate, group or relaxed)"
        )),
    }
}

fn parse_storage_calls(v: &str) -> Result<StorageCalls, String> {
    match v {
        "inline" => Ok(StorageCalls::Inline),
        "blocking" => Ok(StorageCalls::Blocking),
        other => Err(format!("unknown value {other:?} (inline or blocking)")),
    }
}

/// `cargo xtask simulate ...`
pub fn main(options: Options) -> Result<(), XtaskError> {
    init_tracing();
    let specs = load_specs(&options)?;
    let base_seed = options
        .seed
        .or_else(|| {
            options
                .scenario
                .as_ref()
                .and(specs.first().map(|s| s.scenario.seed))
        })
        .unwrap_or(DEFAULT_SEED);
    let shm = PathBuf::from("/dev/shm");
    let tmp_root = match &options.tmpdir {
        Some(dir) => dir.clone(),
        None if options.quick && shm.is_dir() => shm,
        None => std::env::temp_dir(),
    };
    let settings_for = |spec: &Spec| RunSettings {
        storage: options
            .storage
            .or(spec.harness.storage)
            .unwrap_or(StorageKind::Sqlite),
        durability: options.durability.unwrap_or(Durability::Immediate),
        tmp_root: tmp_root.clone(),
        storage_calls: options.storage_calls,
        payload_canary: options
            .payload_canary
            .as_ref()
            .map(|c| c.as_bytes().to_vec()),
        entity_canary: options.entity_canary.clone(),
        timeline: options.timeline.is_some(),
        configure: None,
        bearer: Secret::new(
            options
                .bearer_token
                .clone()
                .unwrap_or_else(|| format!("sim-token-{base_seed}")),
        ),
    };

    // Every (scenario, seed) run is independent (its own runtime, gate and
    // stores), so they run on a pool; results are printed in order.
    let mut jobs: Vec<(Spec, RunSettings)> = Vec::new();
    for spec in &specs {
        for k in 0..options.seeds {
            let mut spec = spec.clone();
            spec.scenario.seed = base_seed.saturating_add(k);
            let settings = settings_for(&spec);
            jobs.push((spec, settings));
        }
    }
    // Refuse what cannot run before anything runs.
    for (spec, settings) in &jobs {
        cpc_sim::check(spec, settings)?;
    }

    // As many runs at once as asked, and as the file descriptors allow.
    let most_fds = jobs
        .iter()
        .map(|(spec, settings)| cpc_sim::fds_needed(spec, settings))
        .max()
        .unwrap_or(0);
    let threads = options
        .jobs
        .map_or_else(
            || default_jobs(options.quick),
            |j| usize::try_from(j).unwrap_or(usize::MAX),
        )
        .min(usize::try_from(cpc_sim::fd_budget() / most_fds.max(1)).unwrap_or(usize::MAX))
        .max(1);

    // The seed goes first, before anything else is printed.
    if options.seeds > 1 {
        println!(
            "seeds {}..={}",
            base_seed,
            base_seed.saturating_add(options.seeds - 1)
        );
    } else {
        println!("seed {base_seed}");
    }
    // A large run says what it will cost before it starts.
    let most_memory = jobs
        .iter()
        .map(|(spec, settings)| {
            spec.scenario
                .estimated_memory(settings.storage == StorageKind::Memory)
        })
        .max()
        .unwrap_or(0);
    if most_memory > LARGE_RUN_BYTES {
        println!(
            "memory: about {} MiB per run (budget {} MiB), {} runs at once",
            most_memory >> 20,
            cpc_sim::MEMORY_BUDGET >> 20,
            threads.min(jobs.len())
        );
    }
    let table = Table::new(
        specs.iter().map(|s| s.scenario.name.as_str()),
        options.seeds > 1,
        options.wall,
    );
    println!("{}", table.header());
    let mut priority_lines: Vec<String> = Vec::new();

    let total = specs.len() as u64 * options.seeds;
    let bar = progress_bar(total);
    let started = Instant::now();
    let mut failures: Vec<(String, InvariantReport)> = Vec::new();
    let mut reports: Vec<(String, InvariantReport)> = Vec::new();
    let mut json_reports: Vec<serde_json::Value> = Vec::new();

    let mut summary: Option<Summary> = None;
    let mut first_error: Option<XtaskError> = None;
    pool::run(
        &jobs,
        threads,
        |(spec, _)| cost(spec),
        |(spec, settings)| cpc_sim::run(spec, settings).map_err(XtaskError::from),
        |index, result| {
            let (spec, settings) = &jobs[index];
            let result = match result {
                Ok(r) => r,
                Err(e) => {
                    first_error = Some(e);
                    return false;
                }
            };
            bar.inc(1);
            bar.set_message(format!(
                "{} seed {}",
                spec.scenario.name, spec.scenario.seed
            ));
            if options.json.is_some() {
                json_reports.push(json_entry(spec, settings, &result, options.wall));
            }
            if let (Some(path), Some(picture)) = (&options.timeline, &result.timeline) {
                let path = timeline_path(path, spec, jobs.len() > 1);
                if let Err(e) = std::fs::write(&path, picture.to_svg()) {
                    first_error = Some(XtaskError::Io("writing --timeline", e));
                    return false;
                }
            }
            if options.seeds == 1 {
                let line = table.row(&spec.scenario.name, &result);
                bar.suspend(|| println!("{line}"));
                priority_lines.push(table.priorities(&spec.scenario.name, &result.report));
            } else {
                let sum = summary.get_or_insert_with(|| Summary::new(&spec.scenario.name));
                sum.add(&result);
                if sum.seeds == options.seeds {
                    let line = table.summary_row(sum);
                    bar.suspend(|| println!("{line}"));
                    priority_lines.push(table.summary_priorities(sum));
                    summary = None;
                }
            }
            if !result.report.passed {
                failures.push((reproduce(&options, spec), result.report));
            } else if options.reports {
                reports.push((reproduce(&options, spec), result.report));
            }
            true
        },
    );
    if let Some(e) = first_error {
        bar.finish_and_clear();
        return Err(e);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    println!();
    println!("{}", table.priorities_header());
    for line in &priority_lines {
        println!("{line}");
    }
    println!();

    if options.seeds > 1 {
        let runs = total as f64;
        let secs = elapsed.as_secs_f64().max(1e-9);
        if options.wall {
            println!(
                "{} seeds x {} scenarios in {:.1}s: {:.1} seeds/s ({:.1} runs/s)",
                options.seeds,
                specs.len(),
                secs,
                options.seeds as f64 / secs,
                runs / secs
            );
        } else {
            println!("{} seeds x {} scenarios", options.seeds, specs.len());
        }
    } else if options.wall {
        println!("{} scenarios in {}", specs.len(), human(elapsed));
    }

    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&serde_json::Value::Array(json_reports))
            .map_err(|e| XtaskError::Io("encoding the JSON reports", e.into()))?;
        std::fs::write(path, text + "\n").map_err(|e| XtaskError::Io("writing --json", e))?;
    }

    for (command, report) in &reports {
        println!();
        println!("report: {command}");
        print!("{}", report.to_text());
    }
    if failures.is_empty() {
        println!("all invariants hold");
        return Ok(());
    }
    for (command, report) in &failures {
        println!();
        println!("FAILED: {command}");
        print!("{}", report.to_text());
    }
    Err(XtaskError::Invariant(format!(
        "{} of {} scenario runs failed (reports above)",
        failures.len(),
        total
    )))
}

/// Where one run's timeline goes: `path` itself for a single run, else
/// `path` with `-<suite>-<seed>` before its extension.
fn timeline_path(path: &std::path::Path, spec: &Spec, several: bool) -> PathBuf {
    if !several {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map_or_else(|| "timeline".into(), |s| s.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map_or_else(|| "svg".into(), |e| e.to_string_lossy().into_owned());
    path.with_file_name(format!(
        "{stem}-{}-{}.{ext}",
        spec.scenario.name, spec.scenario.seed
    ))
}

/// Runs at once: full-size runs mostly wait for fsync, so several per core
/// overlap their waits; quick runs on tmpfs are CPU-bound.
fn default_jobs(quick: bool) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if quick {
        cores
    } else {
        cores * 3
    }
}

/// A rough cost of a run, to start the longest ones first.
fn cost(spec: &Spec) -> u64 {
    let s = &spec.scenario;
    u64::from(s.devices).saturating_mul(s.ops.per_device)
}

/// Installs a `tracing` fmt layer on stderr honouring `RUST_LOG` (off
/// without it: a simulation logs thousands of expected failures).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The scenarios to run, with the command line's overrides applied.
fn load_specs(options: &Options) -> Result<Vec<Spec>, XtaskError> {
    let mut specs = match &options.scenario {
        Some(path) => vec![Spec::from_file(path)?],
        None => {
            let names: Vec<String> =
                if options.suites.is_empty() || options.suites.iter().any(|s| s == "all") {
                    SUITES.iter().map(|(n, _)| (*n).to_owned()).collect()
                } else {
                    options.suites.clone()
                };
            names
                .iter()
                .map(|n| Spec::builtin(n))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    for spec in &mut specs {
        if options.quick {
            spec.quick();
        }
        if let Some(n) = options.ops {
            spec.scenario.ops.per_device = n;
        }
        if let Some(n) = options.devices {
            spec.scenario.devices = n;
            spec.scenario.clock_skew.truncate(n as usize);
        }
        spec.scenario
            .validate()
            .map_err(|e| XtaskError::Usage(format!("{}: {e}", spec.scenario.name)))?;
    }
    Ok(specs)
}

/// A progress bar on stderr that shows up only once the run has taken a
/// second, and never when stdout is not a terminal.
fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    if std::io::stdout().is_terminal() {
        let shown = bar.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            if !shown.is_finished() {
                shown.set_draw_target(ProgressDrawTarget::stderr());
                shown.enable_steady_tick(Duration::from_millis(200));
            }
        });
    }
    bar
}

/// The command that reproduces one run.
fn reproduce(options: &Options, spec: &Spec) -> String {
    let mut cmd = String::from("cargo xtask simulate");
    match &options.scenario {
        Some(path) => {
            let _ = write!(cmd, " --scenario {}", path.display());
        }
        None => {
            let _ = write!(cmd, " --suite {}", spec.scenario.name);
        }
    }
    let _ = write!(cmd, " --seed {}", spec.scenario.seed);
    if options.quick {
        cmd.push_str(" --quick");
    }
    if let Some(n) = options.ops {
        let _ = write!(cmd, " --ops {n}");
    }
    if let Some(n) = options.devices {
        let _ = write!(cmd, " --devices {n}");
    }
    if let Some(s) = options.storage {
        let _ = write!(cmd, " --storage {}", s.name());
    }
    cmd
}

fn json_entry(
    spec: &Spec,
    settings: &RunSettings,
    result: &RunResult,
    wall: bool,
) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "suite": spec.scenario.name,
        "seed": spec.scenario.seed,
        "devices": spec.scenario.devices,
        "ops_per_device": spec.scenario.ops.per_device,
        "storage": settings.storage.name(),
        "report": serde_json::to_value(&result.report).unwrap_or(serde_json::Value::Null),
    });
    if wall {
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(
                "wall_ms".into(),
                serde_json::Value::from(cpc_sync::core::millis(result.wall)),
            );
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn parse(v: &[&str]) -> Result<Options, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("simulate").chain(v.iter().copied())).map(|c| c.options)
    }

    #[test]
    fn options_refuse_nonsense() {
        assert!(parse(&["--seeds", "0"]).is_err());
        assert!(parse(&["--jobs", "0"]).is_err());
        assert!(parse(&["--devices", "0"]).is_err());
        assert!(parse(&["--storage", "floppy"]).is_err());
        assert!(parse(&["--durability", "maybe"]).is_err());
        assert!(parse(&["--suite", "steady", "--scenario", "x.toml"]).is_err());
        let o = parse(&["--suite", "steady,poison", "--quick", "--no-wall"]).unwrap();
        assert_eq!(o.suites, ["steady", "poison"]);
        assert!(o.quick && !o.wall);
        let o = parse(&[]).unwrap();
        assert!(o.wall && o.seeds == 1 && o.storage_calls == StorageCalls::Inline);
    }
}
