//! Project automation for cpc-sync, run as `cargo xtask <command>`.
//!
//! - `simulate`: the main job; runs the full engine against simulated faults
//!   and checks the invariants (see `cargo xtask simulate --help`).
//! - `bench`: runs the criterion benches and writes `target/bench-report.md`.
//! - `crash`: the kill -9 loops of the storage and the engine.
//! - `ci`: everything `.ci/run` checks besides installing tools.
//! - `archcheck`: docs/ARCHITECTURE.md names every module and every cited
//!   file exists (a step of `ci`).

mod archcheck;
mod bench;
mod ci;
mod crash;
mod simulate;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Errors of the xtask commands; each maps to an exit code.
#[derive(Debug)]
pub enum XtaskError {
    /// Bad command line or scenario file (exit 2).
    Usage(String),
    /// A step (a child command) failed (exit 1).
    StepFailed(String),
    /// An invariant was violated (exit 1).
    Invariant(String),
    /// An I/O error.
    Io(&'static str, std::io::Error),
}

impl std::fmt::Display for XtaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XtaskError::Usage(m) => write!(f, "{m}"),
            XtaskError::StepFailed(m) => write!(f, "step failed: {m}"),
            XtaskError::Invariant(m) => write!(f, "invariant violated: {m}"),
            XtaskError::Io(ctx, e) => write!(f, "i/o error while {ctx}: {e}"),
        }
    }
}

const USAGE: &str = "usage: cargo xtask <command> [options]

commands:
  simulate [--suite NAME|all] [--scenario FILE.toml] [--seed N] [--seeds N]
           [--ops N] [--devices N] [--storage sqlite|sled|memory] [--json FILE]
           [--quick] [--no-wall]
           [--jobs N] [--tmpdir DIR] [--durability immediate|group|relaxed]
           [--storage-calls inline|blocking] [--payload-canary STR] [--bearer-token STR]
  bench    [--quick] [--report-only]
  crash    [--cycles N]
  ci       [--seeds N] [--crash-cycles N]
  archcheck";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("simulate") => simulate::main(&args[1..]),
        Some("bench") => bench::main(&args[1..]),
        Some("crash") => crash::main(&args[1..]),
        Some("ci") => ci_main(&args[1..]),
        Some("archcheck") => archcheck::run(),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(XtaskError::Usage(USAGE.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ XtaskError::Usage(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ci_main(args: &[String]) -> Result<(), XtaskError> {
    let mut seeds = 200;
    let mut cycles = 20;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seeds" => seeds = parse_value(a, it.next())?,
            "--crash-cycles" => cycles = parse_value(a, it.next())?,
            other => {
                return Err(XtaskError::Usage(format!(
                    "ci: unknown option {other}\n{USAGE}"
                )))
            }
        }
    }
    ci::run(seeds, cycles)
}

/// Parses the value that follows a flag.
pub fn parse_value<T: std::str::FromStr>(
    flag: &str,
    value: Option<&String>,
) -> Result<T, XtaskError> {
    let v = value.ok_or_else(|| XtaskError::Usage(format!("{flag} needs a value")))?;
    v.parse()
        .map_err(|_| XtaskError::Usage(format!("{flag}: cannot parse {v:?}")))
}

/// A `cargo` command using the same toolchain that runs xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs one named step, streaming its output, and fails if it fails.
pub fn run_step(name: &str, cmd: &mut Command) -> Result<(), XtaskError> {
    println!("==> {name}");
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| XtaskError::Io("starting a step", e))?;
    if status.success() {
        println!("<== {name}: ok ({:.1?})", started.elapsed());
        Ok(())
    } else {
        Err(XtaskError::StepFailed(format!("{name} ({status})")))
    }
}
