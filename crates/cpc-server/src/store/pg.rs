//! The PostgreSQL backend: several stateless `cpc-server` instances on one
//! database, with exactly the embedded store's answers.
//!
//! - A push is one transaction at READ COMMITTED. It first locks the
//!   counter row (`cpc_meta`, `FOR UPDATE`): `seq` is assigned under that
//!   lock, so commit order is `seq` order and a pulling client never skips
//!   a change committed late with a lower `seq` (a sequence would not
//!   guarantee it). Entity rows are read `FOR UPDATE` for the version
//!   check. The idempotency row is inserted `ON CONFLICT DO NOTHING`: a
//!   retry that reached another instance meanwhile waits for the counter,
//!   then reads the first one's row (`already_applied`).
//! - `lock_timeout` (default 2 s): a push that cannot get its locks in
//!   time (another instance stalled holding them) is answered
//!   `retry_later` rather than hanging. No statement runs longer than
//!   30 s, no connection takes longer than 10 s to open or to get from
//!   the pool.
//! - Pulls read in one REPEATABLE READ, read-only transaction per page.
//! - Long polls: every commit `NOTIFY`s the new head; each instance
//!   `LISTEN`s on a connection of its own (and reads the head every second,
//!   in case a notification is lost with its connection).
//! - Migrations run at start under an advisory lock; a database with
//!   `synchronous_commit = off` is refused unless allowed.
//!
//! Schema and migrations: `pg/schema.rs`; pushes: `pg/apply.rs`; pulls and
//! the exported log: `pg/read.rs`.

mod apply;
mod read;
mod schema;

use std::sync::Mutex;
use std::time::Duration;

use cpc_protocol::{Limits, OpId, OpOutcome, Position, PullRequest, WireOp};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use super::page::PullPage;
use super::StoreError;

pub(crate) use self::read::export_log;

/// How long connecting to the database may take (unless the URL says).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for a free connection of the pool.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long one statement may run: a database that stops answering fails
/// the request (it is sent again) instead of holding it and its locks.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the server reaches PostgreSQL.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` (or the key=value
    /// form). Plain TCP or a Unix socket: TLS to the database is not
    /// supported yet; keep the database on a private network or tunnel.
    pub url: String,
    /// Connections in the pool (default 16).
    pub pool_size: usize,
    /// How long a push waits for a row lock before it is answered
    /// `retry_later` (default 2 s).
    pub lock_timeout: Duration,
    /// Accept a database where `synchronous_commit` is `off` (answers
    /// would then precede durable commits; default false).
    pub allow_async_commit: bool,
}

impl std::fmt::Debug for PostgresConfig {
    // The URL may carry a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("lock_timeout", &self.lock_timeout)
            .field("allow_async_commit", &self.allow_async_commit)
            .finish()
    }
}

impl PostgresConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            pool_size: 16,
            lock_timeout: Duration::from_secs(2),
            allow_async_commit: false,
        }
    }

    fn parsed(&self) -> Result<tokio_postgres::Config, StoreError> {
        self.url
            .parse()
            .map_err(|_| StoreError::Invalid("the PostgreSQL URL does not parse"))
    }
}

/// A PostgreSQL error as a store error: lock timeouts, serialization
/// failures and deadlocks are `Busy` (try again); the rest says what the
/// server said (never the query's parameters).
pub(crate) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c)
            if *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            StoreError::Busy
        }
        _ => match e.as_db_error() {
            Some(db) => StoreError::Postgres(format!(
                "{} {}: {}",
                db.severity(),
                db.code().code(),
                db.message()
            )),
            None => StoreError::Postgres(e.to_string()),
        },
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        other => StoreError::Postgres(format!("connection pool: {other}")),
    }
}

/// The store on PostgreSQL.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: Pool,
    store_id: String,
    limits: Limits,
    lock_timeout: Duration,
    head: watch::Receiver<u64>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl PgStore {
    pub(crate) async fn connect(
        config: &PostgresConfig,
        limits: Limits,
        new_id: Option<&str>,
    ) -> Result<PgStore, StoreError> {
        if config.pool_size == 0 {
            return Err(StoreError::Invalid("pool_size must be at least 1"));
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&config.lock_timeout) {
            return Err(StoreError::Invalid("lock_timeout must be 1 ms to 1 hour"));
        }
        let mut parsed = config.parsed()?;
        if parsed.get_connect_timeout().is_none() {
            // A database that does not answer is an error, not a hang.
            parsed.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            parsed.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            // Every connection busy for this long: the request fails
            // (503) rather than waiting without end.
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Postgres(format!("building the pool: {e}")))?;
        let mut client = pool.get().await.map_err(pool_err)?;
        schema::check_durable(&**client, config.allow_async_commit).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        schema::migrate(&mut client, now, new_id).await?;
        let (store_id, seq, _) = schema::read_head(&**client).await?;
        drop(client);
        let (head_tx, head) = watch::channel(seq);
        let listener = tokio::spawn(follow_head(parsed, head_tx));
        Ok(PgStore {
            pool,
            store_id,
            limits,
            lock_timeout: config.lock_timeout,
            head,
            listener: Mutex::new(Some(listener)),
        })
    }

    pub(crate) fn store_id(&self) -> &str {
        &self.store_id
    }

    pub(crate) async fn push(
        &self,
        client_id: String,
        ops: Vec<WireOp>,
        known: Option<Position>,
        low_water: Option<OpId>,
        #[cfg(feature = "test-faults")] faults: crate::faults::Faults,
    ) -> Result<(Vec<OpOutcome>, Position), StoreError> {
        #[allow(unused_mut)]
        let mut rules = cpc_remote::rules::Rules::new(self.limits);
        #[cfg(feature = "test-faults")]
        {
            rules.faults = faults;
        }
        #[cfg(feature = "test-faults")]
        let known = known.filter(|_| !faults.ignore_known);
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let push = apply::Push {
            store_id: &self.store_id,
            client_id: &client_id,
            ops: &ops,
            known: known.as_ref(),
            low_water,
            rules: &rules,
            lock_timeout: self.lock_timeout,
        };
        match push.run(&mut client).await {
            Err(StoreError::Busy) => {
                // Locks not granted in time: nothing applied, every
                // operation is sent again later.
                tracing::info!(target: "cpc_server", "push waited too long for a lock: retry_later");
                let (_, seq, fp) = schema::read_head(&**client).await?;
                let outcomes = ops
                    .iter()
                    .map(|op| OpOutcome {
                        op: op.id,
                        outcome: cpc_protocol::Outcome::RetryLater { after_ms: 500 },
                    })
                    .collect();
                let head = Position {
                    store_id: self.store_id.clone(),
                    seq,
                    fp: cpc_protocol::Hex64(fp),
                };
                Ok((outcomes, head))
            }
            other => other,
        }
    }

    pub(crate) async fn pull(
        &self,
        request: PullRequest,
        skip_first: bool,
    ) -> Result<PullPage, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        read::read_page(&mut client, &self.store_id, &request, skip_first).await
    }

    /// Bytes of the store's tables and their indexes.
    pub(crate) async fn size_bytes(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let bytes: i64 = client
            .query_one(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind = 'r' AND c.relname LIKE 'cpc\\_%'
                   AND n.nspname = current_schema()",
                &[],
            )
            .await
            .map_err(pg_err)?
            .try_get(0)
            .map_err(pg_err)?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    pub(crate) fn head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    pub(crate) async fn compact(&self, before_ms: u64) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        loop {
            let (horizon, more) = apply::compact_step(&mut client, before_ms).await?;
            if !more {
                return Ok(horizon);
            }
        }
    }

    pub(crate) fn close(&self) {
        if let Some(listener) = self.listener.lock().ok().and_then(|mut l| l.take()) {
            listener.abort();
        }
        self.pool.close();
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Keeps `head` at the database's head: `LISTEN cpc_head` on a connection
/// of its own, and a read every second (a notification lost with its
/// connection, a restore from a backup that moved the head back).
async fn follow_head(config: tokio_postgres::Config, head: watch::Sender<u64>) {
    use futures_util::StreamExt;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (notes, mut heard) = tokio::sync::mpsc::unbounded_channel::<u64>();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let tokio_postgres::AsyncMessage::Notification(n) = message {
                            if let Ok(seq) = n.payload().parse::<u64>() {
                                let _ = notes.send(seq);
                            }
                        }
                    }
                });
                if client.batch_execute("LISTEN cpc_head").await.is_ok() {
                    // An interval, not a sleep per turn: a stream of
                    // notifications must not put the read off for ever.
                    let mut every = tokio::time::interval(Duration::from_secs(1));
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            seq = heard.recv() => match seq {
                                // Notifications come in commit order: only
                                // forward.
                                Some(seq) => {
                                    head.send_if_modified(|h| {
                                        let newer = seq > *h;
                                        if newer {
                                            *h = seq;
                                        }
                                        newer
                                    });
                                }
                                None => break,
                            },
                            _ = every.tick() => {
                                match schema::read_head(&client).await {
                                    Ok((_, seq, _)) => {
                                        head.send_if_modified(|h| {
                                            let moved = seq != *h;
                                            *h = seq;
                                            moved
                                        });
                                    }
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => {
                tracing::warn!(target: "cpc_server", error = %pg_err(e), "cannot follow the head; long polls wait their full time until it is back");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
