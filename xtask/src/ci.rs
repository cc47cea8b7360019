//! `cargo xtask ci`: every check a submission must pass, in the order that
//! fails fastest. `.ci/run` calls this after installing what it needs.

use std::process::Command;
use std::time::Instant;

use crate::{cargo, run_step, XtaskError};

/// Examples that CI runs to completion, with their arguments.
const EXAMPLES: &[(&str, &[&str])] = &[
    ("sync_example", &[]),
    ("full_integration_example", &[]),
    ("http_sync", &[]),
    (
        "network_monitor",
        &["127.0.0.1:9", "--probes", "3", "--interval-ms", "100"],
    ),
];

/// Runs the CI pipeline. `quick_seeds` is how many seeds the quick
/// simulation sweep runs per suite.
pub fn run(quick_seeds: u32, crash_cycles: u32) -> Result<(), XtaskError> {
    let started = Instant::now();
    run_step("fmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    println!("==> archcheck");
    crate::archcheck::run()?;
    run_step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // The README's test command, exactly.
    run_step("test", cargo().args(["test", "--workspace"]))?;
    // The storage crate without its optional sled backend: what a user who
    // turns the feature off builds.
    // Real sockets and processes: the fault proxy, kill -9 of the server
    // and of a client, and the negative control. Run from this process
    // (its children are this binary): a `cargo run` of xtask here could
    // relink the binary under the steps that still spawn it.
    println!("==> e2e --quick");
    let e2e_started = Instant::now();
    crate::e2e::main(
        crate::e2e::Sizes {
            devices: 5,
            ops: 200,
        },
        &[],
        false,
    )?;
    println!(
        "<== e2e --quick: ok ({:.1}s)",
        e2e_started.elapsed().as_secs_f64()
    );
    run_step(
        "cpc-storage without default features",
        cargo().args([
            "clippy",
            "-p",
            "cpc-storage",
            "--no-default-features",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run_step(
        "test cpc-storage without default features",
        cargo().args(["test", "-p", "cpc-storage", "--no-default-features"]),
    )?;
    for (name, args) in EXAMPLES {
        let mut cmd = cargo();
        cmd.args(["run", "--quiet", "--example", name, "--"])
            .args(*args);
        run_step(&format!("example {name}"), &mut cmd)?;
    }
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run_step("doc", &mut doc)?;
    let exe = std::env::current_exe().map_err(|e| XtaskError::Io("locating xtask binary", e))?;
    let mut sim = Command::new(&exe);
    sim.args(["simulate", "--quick", "--no-wall"]);
    run_step("simulate --quick", &mut sim)?;
    let mut seeds = Command::new(&exe);
    seeds.args([
        "simulate",
        "--quick",
        "--no-wall",
        "--seeds",
        &quick_seeds.to_string(),
    ]);
    run_step(
        &format!("simulate --quick --seeds {quick_seeds}"),
        &mut seeds,
    )?;
    let mut crash = Command::new(&exe);
    crash.args(["crash", "--cycles", &crash_cycles.to_string()]);
    run_step(&format!("crash --cycles {crash_cycles}"), &mut crash)?;
    println!("ci: all steps passed in {:.0?}", started.elapsed());
    Ok(())
}
