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

// `Serve` carries every server setting; the command line is parsed once,
// so the size of the enum costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
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
        /// Pushes one token may have handled at once (more are answered
        /// 503). Default: half of --max-concurrent-pushes.
        #[arg(long)]
        max_pushes_per_token: Option<usize>,
        /// Pulls one token may have handled at once, long polls included.
        /// Default: half of --max-concurrent-pulls.
        #[arg(long)]
        max_pulls_per_token: Option<usize>,
        /// Failed authentications per second per client address (IPv6: per
        /// /64) before its requests are answered 429.
        #[arg(long, default_value_t = 10.0)]
        auth_failure_rate: f64,
        /// Burst of failed authentications per client address.
        #[arg(long, default_value_t = 100.0)]
        auth_failure_burst: f64,
        /// Bearer token of GET /metrics (16 characters or more); without
        /// one, /metrics answers 404. Prefer the environment variable: a
        /// command line is visible to `ps`.
        #[arg(long, env = "CPC_METRICS_TOKEN", hide_env_values = true)]
        metrics_token: Option<String>,
        /// How long change-log rows keep their payload; an older pull cursor
        /// gets a snapshot (reset: compacted). Default 30 days.
        #[arg(long, default_value_t = 30 * 24 * 3600 * 1000)]
        change_retention_ms: u64,
        /// Seconds between compactions of the change log; 0: never.
        #[arg(long, default_value_t = 600)]
        compaction_interval_s: u64,
        /// Operations one token may push per hour (429 quota_exceeded past it).
        #[arg(long, default_value_t = 200_000)]
        quota_ops_per_hour: u64,
        /// Payload bytes one token may push per hour.
        #[arg(long, default_value_t = 1 << 30)]
        quota_bytes_per_hour: u64,
        /// Free bytes the data directory's file system keeps: below it pushes
        /// are answered 503 before the disk fills (embedded store).
        #[arg(long, default_value_t = 64 << 20)]
        min_free_bytes: u64,
        /// The store's largest size in bytes; at it pushes are answered 503.
        #[arg(long)]
        max_store_bytes: Option<u64>,
        /// The identity a store created now gets (default: random); an
        /// existing store keeps its own. For fixtures, drills and the
        /// worked examples of docs/protocol.md.
        #[arg(long, value_name = "ID")]
        store_id: Option<String>,
        #[command(flatten)]
        connections: ConnectionArgs,
    },
    /// Print the committed change log as JSON lines, in seq order.
    ExportLog {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Copy the embedded store to FILE: online (safe while the server
    /// serves) and consistent (one snapshot, the WAL's commits included).
    #[command(
        after_help = "Example: cpc-server backup --data /var/lib/cpc --to /backups/cpc-2026-12-07.sqlite3
                            Restore it with `cpc-server restore` (docs/deploy.md)."
    )]
    Backup {
        /// Data directory of the embedded store.
        #[arg(long)]
        data: PathBuf,
        /// The backup file to write (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup in place of a stopped server's embedded store; the
    /// files it replaces are moved to DATA/before-restore-<ms>/.
    #[command(
        after_help = "Stop the server first (it holds DATA/lock; restore refuses while it runs).
                            Example: cpc-server restore --data /var/lib/cpc --from /backups/cpc-2026-12-07.sqlite3"
    )]
    Restore {
        /// Data directory of the embedded store.
        #[arg(long)]
        data: PathBuf,
        /// The backup file (from `cpc-server backup`).
        #[arg(long)]
        from: PathBuf,
    },
}

/// Limits on connections (docs/deploy.md, "Connections").
#[derive(Debug, clap::Args)]
struct ConnectionArgs {
    /// Connections open at once; more are answered 503 and closed. Lowered
    /// at start to stay below the open files limit.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Seconds to receive a request's headers; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, default_value_t = 10)]
    header_read_timeout_s: u64,
    /// Seconds an answer may wait for the client to read any of it; then
    /// the connection is closed.
    #[arg(long, default_value_t = 30)]
    send_timeout_s: u64,
    /// Seconds a shutdown (SIGTERM) gives open connections to finish their
    /// request; then they are closed.
    #[arg(long, default_value_t = 10)]
    shutdown_deadline_s: u64,
    /// Bytes of pull pages built or being sent at once; beyond it pulls
    /// are answered 503.
    #[arg(long, default_value_t = 256 << 20)]
    max_pull_bytes_in_flight: u64,
}

impl ConnectionArgs {
    fn apply(self, config: &mut ServerConfig) {
        use std::time::Duration;
        config.max_connections = self.max_connections;
        config.header_read_timeout = Duration::from_secs(self.header_read_timeout_s);
        config.send_timeout = Duration::from_secs(self.send_timeout_s);
        config.shutdown_deadline = Duration::from_secs(self.shutdown_deadline_s);
        config.max_pull_bytes_in_flight = self.max_pull_bytes_in_flight;
    }
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
        Command::Backup { data, to } => {
            let r = cpc_server::backup(&data, &to)?;
            println!(
                "backup of store {} at seq {} written to {} ({} bytes)",
                r.store_id,
                r.head_seq,
                to.display(),
                r.bytes
            );
            Ok(())
        }
        Command::Restore { data, from } => {
            let r = cpc_server::restore(&data, &from)?;
            println!(
                "store {} restored at seq {} into {}; the files it replaced are in its before-restore-* directory",
                r.store_id,
                r.head_seq,
                data.display()
            );
            Ok(())
        }
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
            max_pushes_per_token,
            max_pulls_per_token,
            auth_failure_rate,
            auth_failure_burst,
            metrics_token,
            change_retention_ms,
            compaction_interval_s,
            quota_ops_per_hour,
            quota_bytes_per_hour,
            min_free_bytes,
            max_store_bytes,
            store_id,
            connections,
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
            config.max_pushes_per_token =
                max_pushes_per_token.unwrap_or_else(|| max_concurrent_pushes.div_ceil(2));
            config.max_pulls_per_token =
                max_pulls_per_token.unwrap_or_else(|| max_concurrent_pulls.div_ceil(2));
            config.auth_failure_rate = cpc_server::RateLimit {
                per_second: auth_failure_rate,
                burst: auth_failure_burst,
            };
            config.metrics_token = metrics_token
                .as_deref()
                .map(cpc_server::MetricsToken::new)
                .transpose()?;
            config.pull_limits.change_retention_ms = change_retention_ms;
            config.compaction_interval = (compaction_interval_s > 0)
                .then(|| std::time::Duration::from_secs(compaction_interval_s));
            config.store_id = store_id;
            connections.apply(&mut config);
            config.quota = cpc_server::Quota {
                ops: quota_ops_per_hour,
                bytes: quota_bytes_per_hour,
                window: std::time::Duration::from_secs(3600),
            };
            config.min_free_bytes = min_free_bytes;
            config.max_store_bytes = max_store_bytes;
            // Every connection costs a descriptor, and the common soft
            // limit of 1,024 is far below the connection cap.
            if let Err(e) = cpc_server::raise_fd_limit() {
                tracing::warn!(target: "cpc_server", error = %e, "the open files limit stays as it was");
            }
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
