//! Project automation for cpc-sync, run as `cargo xtask <command>`.
//!
//! - `simulate`: the main job; runs the full engine against simulated faults
//!   and checks the invariants (see `cargo xtask simulate --help`).
//! - `bench`: runs the criterion benches and writes `target/bench-report.md`.
//! - `crash`: the kill -9 loops of the storage and the engine.
//! - `e2e`, `netfault`: the guarantees over real sockets, processes and
//!   kernel-level faults.
//! - `load`: many clients pushing to cpc-server (ops/s, p50/p99).
//! - `ci`: everything `.ci/run` checks besides installing tools.
//! - `archcheck`: docs/ARCHITECTURE.md names every module and every cited
//!   file exists (a step of `ci`).
//! - `coverage`: the tests under cargo-llvm-cov; a table per crate and the
//!   error variants no test constructs.

mod archcheck;
mod bench;
mod ci;
mod coverage;
mod crash;
mod e2e;
mod netfault;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::time::Instant;

/// Errors of the xtask commands; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum XtaskError {
    /// Bad command line or scenario file (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A step (a child command) failed (exit 1).
    #[error("step failed: {0}")]
    StepFailed(String),
    /// An invariant was violated (exit 1).
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// An I/O error.
    #[error("i/o error while {0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
}

impl From<cpc_sim::Error> for XtaskError {
    fn from(e: cpc_sim::Error) -> Self {
        match e {
            cpc_sim::Error::Spec(text) => XtaskError::Usage(text),
            cpc_sim::Error::Run(text) => XtaskError::StepFailed(text),
            cpc_sim::Error::Io(what, source) => XtaskError::Io(what, source),
        }
    }
}

/// Project automation for cpc-sync.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job: the full engine against simulated faults, checked
    /// against the invariants.
    #[command(
        after_help = "Exit status: 0 if every invariant and bound holds, 1 if not, \
                            2 on bad usage or a bad scenario file."
    )]
    Simulate(Box<simulate::Options>),
    /// The criterion benches and figure programs; writes
    /// target/bench-report.md.
    Bench {
        /// Shorter criterion runs.
        #[arg(long)]
        quick: bool,
        /// Only rebuild the report from the last run's measurements.
        #[arg(long)]
        report_only: bool,
    },
    /// The kill -9 loops of the storage and the engine.
    Crash {
        /// Cycles per loop.
        #[arg(long, default_value_t = 1000)]
        cycles: u64,
    },
    /// Everything .ci/run checks besides installing tools.
    Ci {
        /// Seeds of the quick simulation sweep.
        #[arg(long, default_value_t = 200)]
        seeds: u32,
        /// Cycles of the kill -9 loops.
        #[arg(long, default_value_t = 20)]
        crash_cycles: u32,
    },
    /// docs/ARCHITECTURE.md names every module, and every file a doc cites
    /// exists.
    Archcheck,
    /// The workspace's tests under cargo-llvm-cov (PostgreSQL tests on when
    /// CPC_TEST_DATABASE_URL is set): line and function coverage per crate,
    /// and the `thiserror` variants no test constructs. Writes
    /// target/coverage/coverage.json and target/coverage/report.md.
    #[command(
        after_help = "Needs cargo-llvm-cov: `rustup component add llvm-tools-preview` and \
                      `cargo install cargo-llvm-cov --locked`. The whole suite is rebuilt \
                      instrumented (target/llvm-cov-target): tens of minutes."
    )]
    Coverage {
        /// Only rebuild the report from the last run's coverage.json.
        #[arg(long)]
        report_only: bool,
    },
    /// The guarantees over real sockets and processes: cpc-server and each
    /// device in a process of its own, through a fault proxy, with kill -9
    /// of the server and of a client; one line per run.
    #[command(
        after_help = "Exit status: 0 if nothing was lost, duplicated or reordered and the \
                      negative control was caught, 1 if not."
    )]
    E2e {
        /// CI sizes: 5 devices x 200 operations (default 5 x 2000).
        #[arg(long)]
        quick: bool,
        /// Only these runs (repeatable): proxy, server-kill, client-kill,
        /// control-no-dedupe, control-broken-sink, instances, restore,
        /// restore-embedded, netns.
        #[arg(long, value_name = "RUN")]
        only: Vec<String>,
        /// Break the server of the proxy, server-kill and client-kill runs
        /// (it applies resends again): the runs must then fail with exit 1
        /// and name the duplicated op ids. Proves the checker from outside.
        #[arg(long)]
        server_no_dedupe: bool,
    },
    /// Kernel-level faults on the real TCP stack: cpc-server in a network
    /// namespace, the devices in another, nftables dropping, resetting and
    /// black-holing between them (root; skips with a reason otherwise).
    #[command(
        after_help = "Exit status: 0 if nothing was lost, duplicated or reordered and the \
                      host's namespaces and rules are as they were, 1 if not."
    )]
    Netfault {
        /// CI sizes: 5 devices x 200 operations (default 5 x 2000).
        #[arg(long)]
        quick: bool,
    },
    /// Many clients pushing batches to cpc-server: ops/s and p50/p99 batch
    /// latency (runs benches/src/bin/server_load.rs in release).
    #[command(
        after_help = "Against --server URL (repeatable; the token must be bound to load-*), or an \
                      in-process server: embedded by default, PostgreSQL with --database URL \
                      (a scratch database is made there) and --instances N. Options: --clients, \
                      --ops, --batch, --payload, --token."
    )]
    Load {
        /// Passed to the load program.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// (internal) The server process of `e2e`.
    #[command(hide = true)]
    E2eServe {
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, env = "CPC_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        no_dedupe: bool,
    },
    /// (internal) A device process of `e2e`.
    #[command(hide = true)]
    E2eClient(e2e::ClientArgs),
}

fn main() -> ExitCode {
    // Bad flags and --help are clap's (exit 2 and 0).
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(options) => simulate::main(*options),
        Command::Bench { quick, report_only } => bench::main(quick, report_only),
        Command::Crash { cycles } => crash::main(cycles),
        Command::Ci {
            seeds,
            crash_cycles,
        } => ci::run(seeds, crash_cycles),
        Command::Archcheck => archcheck::run(),
        Command::Coverage { report_only } => coverage::main(report_only),
        Command::E2e {
            quick,
            only,
            server_no_dedupe,
        } => e2e::main(
            e2e::Sizes {
                devices: 5,
                ops: if quick { 200 } else { 2000 },
            },
            &only,
            server_no_dedupe,
        ),
        Command::Load { args } => run_step(
            "load",
            cargo()
                .args([
                    "run",
                    "--quiet",
                    "--release",
                    "-p",
                    "cpc-benches",
                    "--bin",
                    "server_load",
                    "--",
                ])
                .args(&args),
        ),
        Command::Netfault { quick } => netfault::main(e2e::Sizes {
            devices: 5,
            ops: if quick { 200 } else { 2000 },
        }),
        Command::E2eServe {
            data,
            database,
            listen,
            no_dedupe,
        } => e2e::serve(data, database, listen, no_dedupe),
        Command::E2eClient(args) => e2e::client(args),
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

/// A `cargo` command using the same toolchain that runs xtask.
pub fn cargo() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs one named step, streaming its output, and fails if it fails.
pub fn run_step(name: &str, cmd: &mut std::process::Command) -> Result<(), XtaskError> {
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
