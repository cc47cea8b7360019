//! `cpc-server`: serve protocol v1, or print the committed change log.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cpc_server::{PostgresConfig, ServerConfig, Tokens};

/// The reference server of the cpc-sync HTTP protocol v1.
#[derive(Debug, Parser)]
#[command(name = "cpc-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve protocol v1 until SIGTERM or SIGINT (then finish in-flight
    /// pushes and close the store).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        store: StoreArgs,
        /// Connections to PostgreSQL per instance.
        #[arg(long, default_value_t = 16)]
        db_pool_size: usize,
        /// Accept a PostgreSQL database where synchronous_commit is off
        /// (answers would precede durable commits).
        #[arg(long)]
        allow_async_commit: bool,
        /// Tokens file (TOML: [[token]] secret = "..." clients = ["dev-*"]).
        #[arg(long)]
        tokens: PathBuf,
        /// Operations per push at most.
        #[arg(long, default_value_t = 1000)]
        max_batch_ops: u64,
        /// Request body bytes at most.
        #[arg(long, default_value_t = 8 << 20)]
        max_body_bytes: u64,
        /// Payload bytes of one operation at most.
        #[arg(long, default_value_t = 1 << 20)]
        max_payload_bytes: u64,
        /// Requests per second per token.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Burst of requests per token.
        #[arg(long, default_value_t = 40.0)]
        burst: f64,
        /// Pushes handled at once (more are answered 503).
        #[arg(long, default_value_t = 64)]
        max_concurrent_pushes: usize,
        /// Pulls handled at once, long polls included (more are answered 503).
        #[arg(long, default_value_t = 1024)]
        max_concurrent_pulls: usize,
        /// How long change-log rows keep their payload; an older pull cursor
        /// gets a snapshot (reset: compacted). Default 30 days.
        #[arg(long, default_value_t = 30 * 24 * 3600 * 1000)]
        change_retention_ms: u64,
        /// Seconds between compactions of the change log; 0: never.
        #[arg(long, default_value_t = 600)]
        compaction_interval_s: u64,
        /// The identity a store created now gets (default: random); an
        /// existing store keeps its own. For fixtures, drills and the
        /// worked examples of docs/protocol.md.
        #[arg(long, value_name = "ID")]
        store_id: Option<String>,
    },
    /// Print the committed change log as JSON lines, in seq order.
    ExportLog {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the store is: one of the two.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// Data directory of the embedded store (created 0700; one server at a
    /// time).
    #[arg(
        long,
        required_unless_present = "database",
        conflicts_with = "database"
    )]
    data: Option<PathBuf>,
    /// The store on PostgreSQL: postgres://user:password@host/db. Several
    /// instances may share one database. Prefer the environment variable:
    /// a command line is visible to `ps`.
    #[arg(long, env = "CPC_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpc-server: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::ExportLog {
            store: StoreArgs { data, database },
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout);
            match (data, database) {
                (Some(data), _) => {
                    cpc_server::export_log(&data, &mut out)?;
                }
                (None, Some(url)) => {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(cpc_server::export_log_postgres(&url, &mut out))?;
                }
                (None, None) => return Err("--data or --database is required".into()),
            }
            out.flush()?;
            Ok(())
        }
        Command::Serve {
            listen,
            store: StoreArgs { data, database },
            db_pool_size,
            allow_async_commit,
            tokens,
            max_batch_ops,
            max_body_bytes,
            max_payload_bytes,
            rate,
            burst,
            max_concurrent_pushes,
            max_concurrent_pulls,
            change_retention_ms,
            compaction_interval_s,
            store_id,
        } => {
            let tokens = Tokens::from_file(&tokens)?;
            let mut config = match (data, database) {
                (Some(data), _) => ServerConfig::new(data, tokens),
                (None, Some(url)) => {
                    let mut pg = PostgresConfig::new(url);
                    pg.pool_size = db_pool_size;
                    pg.allow_async_commit = allow_async_commit;
                    ServerConfig::with_postgres(pg, tokens)
                }
                (None, None) => return Err("--data or --database is required".into()),
            };
            config.listen = listen;
            config.limits.max_batch_ops = max_batch_ops;
            config.limits.max_body_bytes = max_body_bytes;
            config.limits.max_payload_bytes = max_payload_bytes;
            config.rate = cpc_server::RateLimit {
                per_second: rate,
                burst,
            };
            config.max_concurrent_pushes = max_concurrent_pushes;
            config.max_concurrent_pulls = max_concurrent_pulls;
            config.pull_limits.change_retention_ms = change_retention_ms;
            config.compaction_interval = (compaction_interval_s > 0)
                .then(|| std::time::Duration::from_secs(compaction_interval_s));
            config.store_id = store_id;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let server = cpc_server::start(config).await?;
                // The address goes to stdout, so a parent process can read
                // the port it got.
                println!("listening on {}", server.addr());
                wait_for_signal().await?;
                tracing::info!(target: "cpc_server", "shutting down");
                server.shutdown().await?;
                Ok::<(), Box<dyn std::error::Error>>(())
            })
        }
    }
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
