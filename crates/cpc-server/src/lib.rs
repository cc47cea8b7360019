//! `cpc-server`: the reference server of the cpc-sync HTTP protocol v1
//! (`docs/protocol.md`), good enough to run in production for small
//! deployments. Push, pull (change pages, long polls, snapshots), health,
//! info and metrics over axum; an embedded SQLite store in a locked data
//! directory, written by one thread with group commit, answering only
//! after the commit is durable, read for pulls on read-only connections,
//! its change log compacted after a retention time; or PostgreSQL, shared
//! by several instances, with exactly the same answers; bearer tokens bound to
//! client ids; a rate limit per token and caps on concurrent pushes and
//! pulls; every request size-limited before parsing.
//!
//! It depends on `cpc-protocol` alone of the cpc crates: a server never
//! compiles client code.
//!
//! ```
//! use cpc_server::{ServerConfig, Tokens};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let config = ServerConfig::new(dir.path(), Tokens::single("secret-token", &["dev-*"]));
//! let server = cpc_server::start(config).await?; // 127.0.0.1, a free port
//! let base = format!("http://{}", server.addr());
//! let health = reqwest::get(format!("{base}/v1/health")).await?.text().await?;
//! assert_eq!(health, "cpc-sync ok\n");
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "test-faults")]
mod faults;
mod http;
mod metrics;
mod scratch;
mod store;
mod tokens;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cpc_protocol::{Limits, PullLimits};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

#[cfg(feature = "test-faults")]
pub use faults::Faults;
pub use http::RateLimit;
pub use metrics::Metrics;
pub use scratch::ScratchDatabase;
pub use store::{export_log, export_log_postgres, PostgresConfig, PullPage, Store, StoreError};
pub use tokens::{TokenId, Tokens, TokensError, MAX_TOKEN_BYTES};

/// How a server runs.
#[derive(Debug)]
pub struct ServerConfig {
    /// Where to listen (default `127.0.0.1:0`: a free loopback port).
    pub listen: SocketAddr,
    /// The data directory of the embedded store (created 0700, locked
    /// while the server runs). Not used with [`ServerConfig::postgres`].
    pub data_dir: PathBuf,
    /// Store on PostgreSQL instead (several instances may share it); see
    /// [`ServerConfig::with_postgres`].
    pub postgres: Option<PostgresConfig>,
    /// The accepted tokens.
    pub tokens: Tokens,
    /// The push limits enforced and advertised.
    pub limits: Limits,
    /// The pull limits enforced and advertised, `change_retention_ms`
    /// included.
    pub pull_limits: PullLimits,
    /// Each token's request rate.
    pub rate: RateLimit,
    /// Pushes handled at once; more are answered `503` (default 64).
    pub max_concurrent_pushes: usize,
    /// Pulls handled at once, long polls included; more are answered `503`
    /// (default 1024).
    pub max_concurrent_pulls: usize,
    /// How often the change log is compacted (default 10 minutes; `None`:
    /// never, for a store whose history must stay whole).
    pub compaction_interval: Option<Duration>,
    /// Time to receive a whole request body (default 30 s); slower is `408`.
    pub request_timeout: Duration,
    /// The identity a store created now gets (default: 32 random hex
    /// digits); an existing store keeps its own.
    pub store_id: Option<String>,
    /// Protocol rules to break on purpose, so that a conformance suite can
    /// prove it notices (feature `test-faults`; all off by default).
    #[cfg(feature = "test-faults")]
    pub faults: Faults,
}

impl ServerConfig {
    /// Defaults for everything but the data directory and the tokens.
    pub fn new(data_dir: impl Into<PathBuf>, tokens: Tokens) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            postgres: None,
            tokens,
            limits: Limits::default(),
            pull_limits: PullLimits::default(),
            rate: RateLimit::default(),
            max_concurrent_pushes: 64,
            max_concurrent_pulls: 1024,
            compaction_interval: Some(Duration::from_secs(600)),
            request_timeout: Duration::from_secs(30),
            store_id: None,
            #[cfg(feature = "test-faults")]
            faults: Faults::default(),
        }
    }
}

impl ServerConfig {
    /// Defaults for everything but the database and the tokens: a server
    /// storing on PostgreSQL.
    pub fn with_postgres(postgres: PostgresConfig, tokens: Tokens) -> ServerConfig {
        ServerConfig {
            postgres: Some(postgres),
            ..ServerConfig::new(PathBuf::new(), tokens)
        }
    }
}

/// Why a server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound, or serving failed.
    #[error("i/o error while {0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    /// A configuration value is not usable.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// Why; formatted when it names the values at fault, so an operator
        /// sees what to change without reading the source.
        reason: Cow<'static, str>,
    },
}

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    closing: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    compactor: Option<JoinHandle<()>>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store (to compact on demand, or read a pull page directly).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Graceful shutdown: stops accepting, answers waiting long polls at
    /// once, lets in-flight requests finish (their pushes are committed and
    /// answered), then closes the store.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.closing.send_replace(true);
        if let Some(compactor) = self.compactor.take() {
            compactor.abort();
            // An aborted task drops its future (and its `Arc<Store>`) only
            // when next polled: wait for it, so the store is not held on.
            let _ = compactor.await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = (&mut self.task)
            .await
            .map_err(|e| ServerError::Io("joining the server task", std::io::Error::other(e)))?;
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| ServerError::Io("closing the store", std::io::Error::other(e)))?;
        served.map_err(|e| ServerError::Io("serving", e))
    }
}

fn check(config: &ServerConfig) -> Result<(), ServerError> {
    let l = &config.limits;
    let bad = |field, reason: &'static str| {
        Err(ServerError::Config {
            field,
            reason: Cow::Borrowed(reason),
        })
    };
    if l.max_batch_ops == 0 {
        return bad("max_batch_ops", "must be at least 1");
    }
    if l.max_payload_bytes == 0 {
        return bad("max_payload_bytes", "must be above 0");
    }
    // docs/protocol.md §3 promises that max_body_bytes fits one operation
    // of the largest payload: below that, a client could queue an
    // operation that every push answers 413, forever.
    let min_body = l.min_body_bytes();
    if l.max_body_bytes < min_body {
        return Err(ServerError::Config {
            field: "max_body_bytes",
            reason: Cow::Owned(format!(
                "max_body_bytes {} cannot hold one operation of max_payload_bytes {}: \
                 it must be at least {min_body} (the payload's base64 plus {} bytes \
                 for the rest of the request)",
                l.max_body_bytes,
                l.max_payload_bytes,
                cpc_protocol::OP_ENVELOPE_BYTES
            )),
        });
    }
    if l.max_response_bytes < l.max_payload_bytes.saturating_mul(2) {
        return bad(
            "max_response_bytes",
            "must hold a conflict of the largest payload",
        );
    }
    if config.max_concurrent_pushes == 0 {
        return bad("max_concurrent_pushes", "must be at least 1");
    }
    if config.max_concurrent_pulls == 0 {
        return bad("max_concurrent_pulls", "must be at least 1");
    }
    let p = &config.pull_limits;
    if p.max_pull_limit == 0 {
        return bad("max_pull_limit", "must be at least 1");
    }
    if p.min_pull_bytes < l.max_payload_bytes.saturating_mul(2)
        || p.max_pull_bytes < p.min_pull_bytes
    {
        return bad(
            "min_pull_bytes",
            "must be at least twice max_payload_bytes, and at most max_pull_bytes",
        );
    }
    if p.max_pull_collections == 0 {
        return bad("max_pull_collections", "must be at least 1");
    }
    if config.compaction_interval.is_some_and(|d| d.is_zero()) {
        return bad("compaction_interval", "must be above 0 (or None)");
    }
    if !(config.rate.per_second > 0.0 && config.rate.burst >= 1.0) {
        return bad("rate", "per_second must be above 0 and burst at least 1");
    }
    Ok(())
}

/// Opens the store, binds the address and serves until
/// [`RunningServer::shutdown`].
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    check(&config)?;
    let data_dir = config.data_dir.clone();
    let limits = config.limits;
    let store_id = config.store_id.clone();
    let store = match &config.postgres {
        Some(pg) => Store::connect(pg, limits, store_id.as_deref()).await?,
        None => tokio::task::spawn_blocking(move || {
            Store::open_with_id(&data_dir, limits, store_id.as_deref())
        })
        .await
        .map_err(|e| ServerError::Io("opening the store", std::io::Error::other(e)))??,
    };
    #[cfg(feature = "test-faults")]
    let store = store.with_faults(config.faults);
    let store = Arc::new(store);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Io("binding the listen address", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Io("reading the listen address", e))?;
    let metrics = Arc::new(Metrics::default());
    let (closing, closing_rx) = watch::channel(false);
    let app = Arc::new(http::App {
        store: Arc::clone(&store),
        tokens: config.tokens,
        limits: config.limits,
        pull_limits: config.pull_limits,
        rate: config.rate,
        limiter: Default::default(),
        pushes: Arc::new(Semaphore::new(config.max_concurrent_pushes)),
        pulls: Arc::new(Semaphore::new(config.max_concurrent_pulls)),
        closing: closing_rx,
        request_timeout: config.request_timeout,
        metrics: Arc::clone(&metrics),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let router = http::router(app);
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let compactor = config.compaction_interval.map(|every| {
        tokio::spawn(compact_every(
            Arc::clone(&store),
            every,
            config.pull_limits.change_retention_ms,
        ))
    });
    tracing::info!(target: "cpc_server", %addr, store_id = store.store_id(), "serving protocol v1");
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        closing,
        task,
        compactor,
        store,
        metrics,
    })
}

/// Compacts the change log every `every`: rows older than `retention_ms`
/// lose their payload (docs/protocol.md §7.5).
async fn compact_every(store: Arc<Store>, every: Duration, retention_ms: u64) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if let Err(e) = store.compact(now.saturating_sub(retention_ms)).await {
            tracing::warn!(target: "cpc_server", error = %e, "compaction failed; trying again later");
        }
    }
}

/// The data directory's database file, for tools that read it.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cpc-server.sqlite3")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        ServerConfig::new("unused", Tokens::single("t", &["dev-*"]))
    }

    #[test]
    fn the_defaults_pass() {
        assert!(check(&config()).is_ok());
    }

    #[test]
    fn a_body_limit_below_one_largest_operation_is_refused_naming_both_and_the_minimum() {
        let mut c = config();
        c.limits.max_payload_bytes = 100_000;
        c.limits.max_body_bytes = 100_000;
        let e = check(&c).map_err(|e| e.to_string());
        let Err(e) = e else {
            panic!("accepted a body limit below one largest operation")
        };
        assert!(e.contains("max_body_bytes 100000"), "{e}");
        assert!(e.contains("max_payload_bytes 100000"), "{e}");
        assert!(
            e.contains(&format!("at least {}", c.limits.min_body_bytes())),
            "{e}"
        );
        // Exactly the minimum is enough.
        c.limits.max_body_bytes = c.limits.min_body_bytes();
        assert!(check(&c).is_ok());
        c.limits.max_body_bytes -= 1;
        assert!(check(&c).is_err());
    }
}
