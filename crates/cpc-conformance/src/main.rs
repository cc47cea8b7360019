//! `cpc-conformance`: checks a server of the cpc-sync HTTP protocol v1
//! and prints one line per check. Exit status 0 when no check failed, 1
//! when one did, 2 on bad usage.

use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::Parser;
use cpc_conformance::{run_selected, RestartHook, Target, CHECKS};

/// Checks a server against the cpc-sync HTTP protocol v1
/// (docs/protocol.md) from the outside, as a client would. Every check
/// uses fresh operation ids and entity keys: the suite can run again and
/// again against the same server.
#[derive(Debug, Parser)]
#[command(name = "cpc-conformance", version)]
struct Cli {
    /// Base URL of the server (http:// or https://), without /v1.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    server: String,
    /// A bearer token the server accepts for --client-id.
    #[arg(long, value_name = "TOKEN")]
    token: String,
    /// The client id to push as (1 to 64 of A-Z a-z 0-9 . _ -).
    #[arg(long, value_name = "ID", value_parser = parse_client_id)]
    client_id: String,
    /// A valid token NOT bound to --client-id (runs forbidden-client).
    #[arg(long, value_name = "TOKEN")]
    foreign_token: Option<String>,
    /// A shell command (run with sh -c) that restarts the server (runs
    /// durable-after-restart); the suite then waits for /v1/health.
    #[arg(long, value_name = "CMD")]
    restart_cmd: Option<String>,
    /// Other clients write to the server meanwhile: a seq gap between two
    /// requests is not a failure (the suite cannot tell it from theirs).
    #[arg(long)]
    shared: bool,
    /// Run only this check (repeatable).
    #[arg(long, value_name = "NAME", value_parser = PossibleValuesParser::new(CHECKS))]
    only: Vec<String>,
}

fn parse_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be http or https".into());
    }
    Ok(text.to_owned())
}

fn parse_client_id(text: &str) -> Result<String, String> {
    if cpc_protocol::valid_client_id(text) {
        Ok(text.to_owned())
    } else {
        Err("a client id is 1 to 64 characters of A-Z a-z 0-9 . _ -".into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut target = Target::new(cli.server, cli.token, cli.client_id);
    target.foreign_token = cli.foreign_token;
    target.restart = cli.restart_cmd.map(RestartHook::Command);
    target.exclusive = !cli.shared;
    let names: Vec<&str> = if cli.only.is_empty() {
        CHECKS.to_vec()
    } else {
        cli.only.iter().map(String::as_str).collect()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cpc-conformance: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let report = runtime.block_on(run_selected(&target, &names));
    println!("{report}");
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
