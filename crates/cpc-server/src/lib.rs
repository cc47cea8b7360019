//! `cpc-server`: the reference server of the cpc-sync HTTP protocol v1
//! (`docs/protocol.md`), good enough to run in production for small
//! deployments. Push, pull (change pages, long polls, snapshots), health,
//! info and metrics over axum; an embedded SQLite store in a locked data
//! directory, written by one thread with group commit, answering only
//! after the commit is durable, read for pulls on read-only connections,
//! its change log compacted after a retention time; or PostgreSQL, shared
//! by several instances, with exactly the same answers; bearer tokens bound to
//! client ids; a rate limit per token and caps on concurrent pushes and
//! pulls; every request size-limited before parsing; connections capped,
//! timed (headers, idle keep-alive, answers nobody reads) and closed at a
//! shutdown deadline by its own accept loop (`serve.rs`).
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
//!
//! # Map of the crate
//!
//! What each module holds and what holds across them (docs/ARCHITECTURE.md
//! keeps the short entry).
//!
//! The reference server of protocol v1 (library
//! and binary `cpc-server serve | export-log`). `http.rs` the routes and
//! the order of a request's checks (token, rate, concurrency cap and the
//! token's share of it, media type, size before parsing, schema, client
//! binding, store) and push,
//! `http/pull.rs` pull and its long poll (woken by the writer's head watch,
//! answered at once at shutdown), `http/reply.rs`
//! the answers and problem bodies, `http/guard.rs` the rate limit per
//! token, `http/share.rs` each token's share of the push and pull caps,
//! `http/peer.rs` the failed-authentication limit per client address
//! (`PeerAddr`, put on each request by the accept loop), `http/scrape.rs`
//! `/metrics` behind its own token with the store size cached,
//! `http/held.rs` a pull answer's body that holds its pull slot and its
//! bytes of the in-flight budget until sent; `serve.rs` the accept loop in
//! place of `axum::serve` (connection cap, hyper with a header/idle
//! timeout, a send timeout on each socket, shutdown with a deadline) and
//! `fd_limit.rs` the open files limit; `http/quota.rs` each token's quota
//! of operations and payload bytes per window; `backup.rs` `cpc-server
//! backup` (SQLite's online backup in one step: one snapshot, the WAL's
//! commits included) and `restore` (under the data directory's lock, the
//! replaced files moved aside); `store/room.rs` the free-space floor and
//! the size cap checked before a push reaches the store; `tokens.rs` the tokens file (constant-time comparison over
//! digests, each token bound to client ids); `store.rs` the store handle
//! over two backends and `export_log`. The push rules are `cpc-remote`'s
//! (below), run by both backends, so they cannot answer differently; shared
//! here: `store/page.rs` (which pull page a request gets, the reset
//! decision, the cursor, bytes measured exactly while filling). The
//! embedded backend:
//! `store/embedded.rs` (the handle), `store/schema.rs` (the locked 0700
//! data directory, WAL + `synchronous=FULL`, schema version),
//! `store/writer.rs` (one writer thread: group commit, a savepoint per push,
//! a group whose transaction SQLite dropped on a failed statement failed
//! whole and the head read back; compaction in short steps between
//! groups, the reclaimed changes' fingerprints kept in `history`), `store/apply.rs` (the rows
//! `cpc_remote::apply_batch` reads and writes, a `PushStore` over the
//! writer's connection), `store/read.rs` (pull pages on a pool of read-only
//! connections, each page in one read transaction). The PostgreSQL
//! backend, for several instances on one database: `store/pg.rs` (pool,
//! `LISTEN cpc_head` for long polls), `store/pg/schema.rs` (`cpc_` tables,
//! keys `COLLATE "C"`, migrations under an advisory lock, the
//! `synchronous_commit` check), `store/pg/apply.rs` (the same rules
//! with its own batched reads, one READ COMMITTED transaction per push, the counter row locked first, `FOR UPDATE` on
//! entities, `lock_timeout` → `retry_later`), `store/pg/read.rs` (a
//! REPEATABLE READ read-only transaction per page). `scratch.rs`
//! (`ScratchDatabase`: a throwaway PostgreSQL database for tests);
//! `metrics.rs` (`GET /metrics`); `main.rs` the command line
//! (`--data DIR` or `--database URL`). Feature `test-faults` (tests only,
//! never a deployment) adds `faults.rs`: `ServerConfig::faults`,
//! deliberately broken modes (`record_conflicts`, `record_retry_later`,
//! `no_cache_header`, `skip_seq`, `ignore_known`, `pull_skip_change`,
//! `no_dedupe`; the first two on the embedded backend only), each a few
//! `#[cfg]` lines where its rule is kept, so that `cpc-conformance` proves
//! it notices. The server's tests (`tests/server`) run again on PostgreSQL
//! (`tests/server_on_postgres`, the same files).
//! **Invariant:** nothing of a push runs outside its group's transaction:
//! after any failed statement the writer asks SQLite whether the group's
//! transaction still stands (a full disk or an I/O error drops it), and if
//! not every push of the group is answered `503`, none committed.
//! **Invariant:** an answer follows the durable commit of everything it
//! reports; `seq` comes from the one writer (on PostgreSQL, from the
//! counter row locked by every push), gapless in commit order; only
//! applied operations are recorded as such (never a conflict, a rejection
//! or a retry-later).
//! **Invariant:** a push whose `known` position is not
//! in this history (another store, above the head, another fingerprint at
//! its seq) is `409 history_diverged`, checked by the writer against the
//! head it would apply on (and by a pull against the head it reads).
//! **Invariant:** compaction only ever empties a prefix of the change log
//! (payloads go; `seq`, `fp` and origin stay), so change pages above the
//! horizon are gapless and every position stays checkable.
//! **Invariant:** depends on `cpc-protocol` and `cpc-remote` alone of the
//! cpc crates.

mod backup;
#[cfg(feature = "test-faults")]
mod faults;
mod fd_limit;
mod http;
mod metrics;
mod scratch;
mod serve;
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

pub use backup::{backup, restore, BackupReport};
#[cfg(feature = "test-faults")]
pub use faults::Faults;
pub use fd_limit::{raise_fd_limit, FdLimit};
pub use http::{Quota, RateLimit};
pub use metrics::Metrics;
pub use scratch::ScratchDatabase;
pub use store::{export_log, export_log_postgres, PostgresConfig, PullPage, Store, StoreError};
pub use tokens::{MetricsToken, TokenId, Tokens, TokensError, MAX_TOKEN_BYTES, MIN_SECRET_BYTES};

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
    /// Each token's quota of pushed operations and payload bytes per window
    /// (default 200,000 operations and 1 GiB an hour); over it, `429
    /// quota_exceeded`.
    pub quota: Quota,
    /// The free space the data directory's file system keeps (default 64
    /// MiB): below it pushes are answered `503` before SQLite meets a full
    /// disk (embedded store only).
    pub min_free_bytes: u64,
    /// The store's largest size (`None`, the default: no cap); at it pushes
    /// are answered `503` (the embedded store's files, or the PostgreSQL
    /// database's size).
    pub max_store_bytes: Option<u64>,
    /// Pushes handled at once; more are answered `503` (default 64).
    pub max_concurrent_pushes: usize,
    /// Pulls handled at once, long polls included; more are answered `503`
    /// (default 1024).
    pub max_concurrent_pulls: usize,
    /// Pushes one token may have handled at once (default 32, half of the
    /// default push cap): one token, however many requests it opens, leaves
    /// the rest of the cap to the others. More are answered `503`; above
    /// `max_concurrent_pushes` it is that cap.
    pub max_pushes_per_token: usize,
    /// Pulls one token may have handled at once, long polls included
    /// (default 512, half of the default pull cap).
    pub max_pulls_per_token: usize,
    /// Failed authentications per client address (IPv6: per /64) before
    /// its requests are answered `429`, whatever token they carry (default
    /// 10 per second, burst 100).
    pub auth_failure_rate: RateLimit,
    /// The bearer token `GET /metrics` asks for; `None` (the default):
    /// `/metrics` answers `404`.
    pub metrics_token: Option<MetricsToken>,
    /// How often the change log is compacted (default 10 minutes; `None`:
    /// never, for a store whose history must stay whole).
    pub compaction_interval: Option<Duration>,
    /// Time to receive a whole request body (default 30 s); slower is `408`.
    pub request_timeout: Duration,
    /// Connections open at once (default 4096; lowered at start, with a
    /// warning, to stay below the process's open files limit). More are
    /// answered `503` and closed at once.
    pub max_connections: usize,
    /// Time to receive a request's headers, counted from the connection's
    /// start or from the end of its previous answer, so it is also the
    /// idle timeout of a keep-alive connection (default 10 s); slower, the
    /// connection is closed.
    pub header_read_timeout: Duration,
    /// Time an answer may wait for the client to read any of it (default
    /// 30 s): then the connection is closed, and the answer's memory and
    /// permits are given back. A slow reader that keeps reading is not cut.
    pub send_timeout: Duration,
    /// Time graceful shutdown gives open connections to finish their
    /// request (default 10 s); then they are closed.
    pub shutdown_deadline: Duration,
    /// Bytes of pull pages built or being sent at once, server-wide
    /// (default 256 MiB): a page takes its request's `max_bytes` while it
    /// is built and its size until it is sent. Beyond it pulls are answered
    /// `503`. At least `pull_limits.max_pull_bytes`.
    pub max_pull_bytes_in_flight: u64,
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
            quota: Quota::default(),
            min_free_bytes: 64 << 20,
            max_store_bytes: None,
            max_concurrent_pushes: 64,
            max_concurrent_pulls: 1024,
            max_pushes_per_token: 32,
            max_pulls_per_token: 512,
            auth_failure_rate: RateLimit {
                per_second: 10.0,
                burst: 100.0,
            },
            metrics_token: None,
            compaction_interval: Some(Duration::from_secs(600)),
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(10),
            max_pull_bytes_in_flight: 256 << 20,
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
    /// answered) for up to [`ServerConfig::shutdown_deadline`], closes the
    /// connections still open then, and closes the store.
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
    if let Some(bad_connections) = check_connections(config) {
        return bad_connections;
    }
    let q = &config.quota;
    if q.window.is_zero() || q.ops < l.max_batch_ops || q.bytes < l.max_body_bytes {
        return bad(
            "quota",
            "the window must be above 0 and hold the largest push: ops at least \
             max_batch_ops, bytes at least max_body_bytes",
        );
    }
    if !(config.rate.per_second > 0.0 && config.rate.burst >= 1.0) {
        return bad("rate", "per_second must be above 0 and burst at least 1");
    }
    if config.max_pushes_per_token == 0 {
        return bad("max_pushes_per_token", "must be at least 1");
    }
    if config.max_pulls_per_token == 0 {
        return bad("max_pulls_per_token", "must be at least 1");
    }
    let failures = config.auth_failure_rate;
    if !(failures.per_second > 0.0 && failures.burst >= 1.0) {
        return bad(
            "auth_failure_rate",
            "per_second must be above 0 and burst at least 1",
        );
    }
    Ok(())
}

/// The connection limits and the pull byte budget.
fn check_connections(config: &ServerConfig) -> Option<Result<(), ServerError>> {
    let bad = |field, reason: &'static str| {
        Some(Err(ServerError::Config {
            field,
            reason: Cow::Borrowed(reason),
        }))
    };
    if config.max_connections == 0 {
        return bad("max_connections", "must be at least 1");
    }
    if config.header_read_timeout.is_zero() {
        return bad("header_read_timeout", "must be above 0");
    }
    if config.send_timeout.is_zero() {
        return bad("send_timeout", "must be above 0");
    }
    if config.max_pull_bytes_in_flight < config.pull_limits.max_pull_bytes {
        return Some(Err(ServerError::Config {
            field: "max_pull_bytes_in_flight",
            reason: Cow::Owned(format!(
                "max_pull_bytes_in_flight {} cannot hold one page of max_pull_bytes {}",
                config.max_pull_bytes_in_flight, config.pull_limits.max_pull_bytes
            )),
        }));
    }
    None
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
    let room_dir = config.postgres.is_none().then(|| config.data_dir.clone());
    let store = Arc::new(store.with_room(config.min_free_bytes, config.max_store_bytes, room_dir));
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
        push_shares: http::Shares::new(config.max_pushes_per_token),
        pull_shares: http::Shares::new(config.max_pulls_per_token),
        pull_bytes: http::ByteBudget::new(config.max_pull_bytes_in_flight),
        auth_failures: http::AuthFailures::new(config.auth_failure_rate),
        metrics_token: config.metrics_token,
        store_size: http::StoreSize::default(),
        quota: config.quota,
        quotas: Default::default(),
        closing: closing_rx,
        request_timeout: config.request_timeout,
        metrics: Arc::clone(&metrics),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let router = http::router(app);
    let connections = serve::ConnectionLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        send_timeout: config.send_timeout,
        shutdown_deadline: config.shutdown_deadline,
    };
    let task = tokio::spawn(serve::serve(
        listener,
        router,
        connections,
        Arc::clone(&metrics),
        stopped,
    ));
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
    fn connection_limits_that_cannot_work_are_refused() {
        let mut c = config();
        c.max_pull_bytes_in_flight = c.pull_limits.max_pull_bytes - 1;
        let e = check(&c).map_err(|e| e.to_string());
        assert!(
            matches!(&e, Err(e) if e.contains("max_pull_bytes_in_flight")
                && e.contains(&c.pull_limits.max_pull_bytes.to_string())),
            "{e:?}"
        );
        c.max_pull_bytes_in_flight = c.pull_limits.max_pull_bytes;
        assert!(check(&c).is_ok());
        type Break = fn(&mut ServerConfig);
        let breaks: [(&str, Break); 3] = [
            ("max_connections", |c| c.max_connections = 0),
            ("header_read_timeout", |c| {
                c.header_read_timeout = Duration::ZERO
            }),
            ("send_timeout", |c| c.send_timeout = Duration::ZERO),
        ];
        for (field, break_it) in breaks {
            let mut c = config();
            break_it(&mut c);
            assert!(
                matches!(check(&c), Err(ServerError::Config { field: f, .. }) if f == field),
                "{field}"
            );
        }
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
