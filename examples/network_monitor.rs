//! Prints the status changes of a network probe against `host:port`.
//!
//! ```text
//! cargo run --example network_monitor -- HOST:PORT [--probes N] [--interval-ms MS]
//!     [--timeout-ms MS] [--http PATH] [--expect TOKEN] [--seed N]
//! ```
//!
//! With `--probes N` it probes N times and exits (CI runs it against a local
//! listener or a closed 127.0.0.1 port); without, it runs until Ctrl-C.
//! `--http PATH` makes it an HTTP/1.1 health check, and `--expect TOKEN`
//! requires TOKEN in the answer's body, so a captive portal's login page
//! counts as a failure. The exit status is 0 unless the arguments are wrong.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cpc_network::{
    next_wait, HttpCheck, MonitorConfig, NetworkMonitor, NetworkStatus, Observation, ProbeConfig,
    ProbeSource, Signal, StatusChange,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

struct Args {
    target: String,
    probes: Option<u32>,
    interval: Duration,
    timeout: Duration,
    http: Option<String>,
    expect: Option<String>,
    seed: u64,
}

const USAGE: &str = "usage: network_monitor HOST:PORT [--probes N] [--interval-ms MS] \
[--timeout-ms MS] [--http PATH] [--expect TOKEN] [--seed N]";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        target: String::new(),
        probes: None,
        interval: Duration::from_millis(1000),
        timeout: Duration::from_millis(2000),
        http: None,
        expect: None,
        seed: 1,
    };
    let number = |flag: &str, value: Option<String>| -> Result<u64, String> {
        value
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse()
            .map_err(|_| format!("{flag} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--probes" => {
                let n = number("--probes", args.next())?;
                parsed.probes = Some(u32::try_from(n).map_err(|_| "--probes is too large")?);
            }
            "--interval-ms" => {
                parsed.interval = Duration::from_millis(number("--interval-ms", args.next())?)
            }
            "--timeout-ms" => {
                parsed.timeout = Duration::from_millis(number("--timeout-ms", args.next())?)
            }
            "--seed" => parsed.seed = number("--seed", args.next())?,
            "--http" => parsed.http = Some(args.next().ok_or("--http needs a path")?),
            "--expect" => parsed.expect = Some(args.next().ok_or("--expect needs a token")?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            target if parsed.target.is_empty() && !target.starts_with('-') => {
                parsed.target = target.to_owned()
            }
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    if parsed.target.is_empty() {
        return Err(USAGE.to_owned());
    }
    Ok(parsed)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let check = match &args.http {
        Some(path) => {
            let mut check = HttpCheck::new(path.clone());
            check.expect_body = args.expect.clone();
            ProbeConfig::http(args.target.clone(), check)
        }
        None => ProbeConfig::tcp(args.target.clone()),
    };
    let config = ProbeConfig {
        interval: args.interval,
        jitter: args.interval / 5,
        timeout: args.timeout,
        seed: Some(args.seed),
        ..check
    };
    let probe = match ProbeSource::new(config) {
        Ok(probe) => probe,
        Err(err) => {
            eprintln!("invalid probe: {err}");
            return ExitCode::from(2);
        }
    };
    // A short dwell so a short run shows its transitions.
    let monitor = match NetworkMonitor::new(MonitorConfig {
        min_dwell: args.interval,
        seed: Some(args.seed),
        ..MonitorConfig::default()
    }) {
        Ok(monitor) => monitor,
        Err(err) => {
            eprintln!("invalid monitor settings: {err}");
            return ExitCode::from(2);
        }
    };
    let _printer = monitor.add_observer(Arc::new(|change: &StatusChange| {
        let resume = change
            .resume_after
            .map(|d| format!(", resume after {} ms", d.as_millis()))
            .unwrap_or_default();
        println!(
            "{} -> {}: {}{resume}",
            change.from, change.to, change.reason
        );
    }));
    println!("probing {} (status {})", args.target, monitor.status());

    match args.probes {
        Some(count) => {
            // Probe by hand so the run ends after `count` probes.
            let mut rng = StdRng::seed_from_u64(args.seed);
            for i in 1..=count {
                let signal = probe.probe_signal().await;
                let status = monitor.apply(Observation::new("probe", signal));
                let outcome = match signal {
                    Signal::Success => "ok".to_owned(),
                    Signal::Failure(kind) => format!("failed ({kind})"),
                    other => other.as_str().to_owned(),
                };
                println!("probe {i}/{count}: {outcome}; status {status}");
                if i < count {
                    tokio::time::sleep(next_wait(args.interval, args.interval / 5, &mut rng)).await;
                }
            }
        }
        None => {
            let _source = match monitor.attach(probe) {
                Ok(handle) => handle,
                Err(err) => {
                    eprintln!("cannot start the probe: {err}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(err) = tokio::signal::ctrl_c().await {
                eprintln!("cannot wait for Ctrl-C: {err}");
            }
        }
    }

    let stats = monitor.stats();
    println!(
        "final status {}; {} transitions, {} successes, {} failures",
        stats.status, stats.transitions, stats.successes, stats.failures
    );
    for status in NetworkStatus::ALL {
        println!("  {status:>8}: {} ms", stats.time_in(status).as_millis());
    }
    ExitCode::SUCCESS
}
