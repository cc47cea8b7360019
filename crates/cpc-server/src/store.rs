//! The store, on one of two backends. Shared by both: the per-operation
//! rules of a push (`store/rules.rs`), the pull page's decision and
//! assembly (`store/page.rs`), the change log's fingerprint
//! (`store/fp.rs`). The embedded backend: SQLite in a locked data
//! directory (`store/embedded.rs`), written by one thread with group commit
//! (`store/writer.rs`, `store/apply.rs`), read for pulls on read-only
//! connections (`store/read.rs`), schema and migrations in
//! `store/schema.rs`. The PostgreSQL backend, for several instances on one
//! database: `store/pg.rs` and `store/pg/`.

mod apply;
mod embedded;
mod page;
pub(crate) mod pg;
mod read;
mod room;
mod schema;
mod writer;

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use cpc_protocol::{Limits, OpId, OpOutcome, Position, PullRequest, WireOp};
use rusqlite::OpenFlags;
use tokio::sync::watch;

use self::embedded::Embedded;
pub use self::page::PullPage;
pub use self::pg::PostgresConfig;
use self::schema::from_sql;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error outside SQLite.
    #[error("i/o error while {0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    /// SQLite failed (disk full, I/O error, busy).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed, or could not be reached.
    #[error("postgres: {0}")]
    Postgres(String),
    /// The database's settings break a guarantee (say, asynchronous
    /// commit).
    #[error("refusing the database: {0}")]
    Unsafe(String),
    /// A row lock was not granted within the lock timeout (another
    /// instance holds it): the push is answered `retry_later`.
    #[error("busy: a lock was not granted in time")]
    Busy,
    /// Another server holds the data directory.
    #[error("the data directory {0} is in use by another server")]
    Locked(String),
    /// The data directory is a symbolic link, or belongs to another user.
    #[error("refusing the data directory {0}")]
    ForeignDir(String),
    /// The file was written by a newer server.
    #[error("schema version {0} is newer than this server's; refusing to open")]
    Schema(i64),
    /// The store's content breaks an invariant.
    #[error("corrupt store: {0}")]
    Corrupt(&'static str),
    /// An argument is not usable.
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// The client's `known` position is not in this store's history (a
    /// restore from a backup, another store): nothing was applied.
    #[error("the client's known position is not in this history (head {})", head.seq)]
    HistoryDiverged {
        /// This store's head.
        head: Position,
    },
    /// The store is closed (shutting down).
    #[error("the store is closed")]
    Closed,
    /// A failure already reported once, passed to each push of a group.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// No room to write: the disk is below its free-space floor, or the
    /// store at its size cap. Nothing was applied; the push is answered
    /// `503` with a long wait.
    #[error("no room to write: {0}")]
    NoRoom(String),
}

impl StoreError {
    /// The same failure for another waiting push (errors do not clone).
    fn unavailable_copy(&self) -> StoreError {
        StoreError::Unavailable(self.to_string())
    }
}

/// The server's store: the embedded SQLite store, or PostgreSQL shared by
/// several instances. Both answer exactly alike (the rules and the page
/// assembly are shared; one test suite runs on both).
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    /// The free-space floor and the size cap (see `room`).
    room: room::Room,
    /// The rules to break on purpose (see `crate::faults`).
    #[cfg(feature = "test-faults")]
    faults: crate::faults::Faults,
}

#[derive(Debug)]
enum Backend {
    Embedded(Embedded),
    Postgres(pg::PgStore),
}

/// Checks a store id given for a store created now.
fn check_new_id(new_id: Option<&str>) -> Result<(), StoreError> {
    if new_id.is_some_and(|id| id.is_empty() || id.len() > 64 || !id.is_ascii()) {
        return Err(StoreError::Invalid(
            "a store id is 1 to 64 ASCII characters",
        ));
    }
    Ok(())
}

impl Store {
    fn with_backend(backend: Backend) -> Store {
        Store {
            backend,
            room: room::Room::default(),
            #[cfg(feature = "test-faults")]
            faults: Default::default(),
        }
    }

    /// Refuses pushes (`NoRoom`, answered `503`) while the embedded store's
    /// file system has less than `min_free_bytes` free, or the store is
    /// `max_store_bytes` or more. `data_dir` is the embedded store's
    /// directory (`None` on PostgreSQL, whose disk is not the server's to
    /// read: only the size cap applies there).
    pub fn with_room(
        mut self,
        min_free_bytes: u64,
        max_store_bytes: Option<u64>,
        data_dir: Option<std::path::PathBuf>,
    ) -> Store {
        self.room = room::Room::new(min_free_bytes, max_store_bytes, data_dir);
        self
    }

    /// `NoRoom` when a push must not be written now (see `with_room`).
    async fn check_room(&self) -> Result<(), StoreError> {
        self.room.check_free()?;
        if self.room.max_store_bytes.is_none() {
            return Ok(());
        }
        let size = match &self.backend {
            Backend::Embedded(s) => s.size_bytes(),
            Backend::Postgres(s) => match self.room.cached_size() {
                Some(size) => size,
                None => {
                    let size = s.size_bytes().await?;
                    self.room.remember_size(size);
                    size
                }
            },
        };
        self.room.check_size(size)
    }

    /// Opens (creating or migrating) the embedded store in `dir` and starts
    /// its writer. Refuses a directory another server holds.
    pub fn open(dir: &Path, limits: Limits) -> Result<Store, StoreError> {
        Store::open_with_id(dir, limits, None)
    }

    /// [`Store::open`], giving a store created now the identity `new_id`
    /// (an existing store keeps its own): for a restore drill, a fixture
    /// or the documentation's examples. 1 to 64 ASCII characters.
    pub fn open_with_id(
        dir: &Path,
        limits: Limits,
        new_id: Option<&str>,
    ) -> Result<Store, StoreError> {
        check_new_id(new_id)?;
        Ok(Store::with_backend(Backend::Embedded(Embedded::open(
            dir, limits, new_id,
        )?)))
    }

    /// Connects to the PostgreSQL database `config` names, runs the
    /// migrations (under an advisory lock: instances starting together
    /// take turns) and checks that commits are durable
    /// (`synchronous_commit`). A store created now gets `new_id`.
    pub async fn connect(
        config: &PostgresConfig,
        limits: Limits,
        new_id: Option<&str>,
    ) -> Result<Store, StoreError> {
        check_new_id(new_id)?;
        Ok(Store::with_backend(Backend::Postgres(
            pg::PgStore::connect(config, limits, new_id).await?,
        )))
    }

    /// The store's identity.
    pub fn store_id(&self) -> &str {
        match &self.backend {
            Backend::Embedded(s) => s.store_id(),
            Backend::Postgres(s) => s.store_id(),
        }
    }

    /// The same store, breaking the rules `faults` names.
    #[cfg(feature = "test-faults")]
    pub(crate) fn with_faults(mut self, faults: crate::faults::Faults) -> Store {
        self.faults = faults;
        self
    }

    /// The rules this store breaks on purpose.
    #[cfg(feature = "test-faults")]
    pub(crate) fn faults(&self) -> crate::faults::Faults {
        self.faults
    }

    /// Applies one client's push (already validated) and answers after the
    /// commit is durable: the outcomes and the head. With `low_water`, the
    /// client's idempotency rows below it are pruned in the same commit
    /// (docs/protocol.md §6.7).
    pub async fn push(
        &self,
        client_id: String,
        ops: Vec<WireOp>,
        known: Option<Position>,
        low_water: Option<OpId>,
    ) -> Result<(Vec<OpOutcome>, Position), StoreError> {
        self.check_room().await?;
        match &self.backend {
            Backend::Embedded(s) => {
                s.push(
                    client_id,
                    ops,
                    known,
                    low_water,
                    #[cfg(feature = "test-faults")]
                    self.faults,
                )
                .await
            }
            Backend::Postgres(s) => {
                s.push(
                    client_id,
                    ops,
                    known,
                    low_water,
                    #[cfg(feature = "test-faults")]
                    self.faults,
                )
                .await
            }
        }
    }

    /// Reads the page a pull asks for (already validated; docs/protocol.md
    /// §7.3–7.5), without waiting: `HistoryDiverged` when its `known` is
    /// not in this history. The caller does the long poll, on
    /// [`Store::head`].
    pub async fn pull(&self, request: PullRequest) -> Result<PullPage, StoreError> {
        #[cfg(feature = "test-faults")]
        let skip_first = self.faults.pull_skip_change;
        #[cfg(not(feature = "test-faults"))]
        let skip_first = false;
        match &self.backend {
            Backend::Embedded(s) => s.pull(request, skip_first).await,
            Backend::Postgres(s) => s.pull(request, skip_first).await,
        }
    }

    /// The head's seq, told after every commit (on PostgreSQL, every
    /// instance's commits): what a long poll waits on.
    pub fn head(&self) -> watch::Receiver<u64> {
        match &self.backend {
            Backend::Embedded(s) => s.head(),
            Backend::Postgres(s) => s.head(),
        }
    }

    /// Compacts the change log (docs/protocol.md §7.5): every row committed
    /// before `before_ms` (ms since the Unix epoch), as a prefix, loses its
    /// payload; cursors below the new horizon get a snapshot. Runs in short
    /// steps between pushes. Answers the horizon.
    pub async fn compact(&self, before_ms: u64) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.compact(before_ms).await,
            Backend::Postgres(s) => s.compact(before_ms).await,
        }
    }

    /// The store's size: the embedded store's files, or the PostgreSQL
    /// store's tables and indexes.
    pub async fn size_bytes(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => Ok(s.size_bytes()),
            Backend::Postgres(s) => s.size_bytes().await,
        }
    }

    /// Stops the store: the embedded writer after the pushes already
    /// queued (waiting for it), the PostgreSQL pool and head listener.
    pub fn close(&self) {
        match &self.backend {
            Backend::Embedded(s) => s.close(),
            Backend::Postgres(s) => s.close(),
        }
    }
}

/// One row of the change log as exported: the columns as stored.
pub(crate) struct LogRow {
    pub seq: i64,
    pub fp: i64,
    pub collection: String,
    pub id: String,
    pub version: i64,
    pub deleted: bool,
    pub kind: String,
    pub payload: Option<Vec<u8>>,
    pub wall_ms: i64,
    pub logical: i64,
    pub node: i64,
    pub origin_client: String,
    pub origin_op: String,
    pub committed_at_ms: i64,
}

impl LogRow {
    /// The exported line (docs/protocol.md, the server's `export-log`),
    /// the same for every backend; rows at or below `horizon` are marked
    /// compacted.
    pub(crate) fn to_json(&self, horizon: i64) -> Result<serde_json::Value, StoreError> {
        Ok(serde_json::json!({
            "seq": from_sql(self.seq)?,
            "fp": format!("{:016x}", self.fp as u64),
            "entity": {"collection": self.collection, "id": self.id},
            "version": from_sql(self.version)?,
            "deleted": self.deleted,
            "kind": self.kind,
            "payload": self.payload.as_ref().map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
            "timestamp": {
                "wall_ms": from_sql(self.wall_ms)?,
                "logical": from_sql(self.logical)?,
                "node": format!("{:016x}", self.node as u64),
            },
            "origin": {"client_id": self.origin_client, "op": self.origin_op},
            "committed_at_ms": from_sql(self.committed_at_ms)?,
            "compacted": self.seq <= horizon,
        }))
    }
}

/// Takes the embedded store's data directory lock (creating the
/// directory if needed): held for as long as the value lives.
pub(crate) fn lock_data_dir(dir: &Path) -> Result<impl Sized, StoreError> {
    schema::lock_dir(dir)
}

/// The head a store's database holds: `(store_id, seq, fp)`.
pub(crate) fn read_stored_head(
    conn: &rusqlite::Connection,
) -> Result<(String, u64, u64), StoreError> {
    schema::read_head(conn)
}

/// The exported line of a change compaction reclaimed: its position and
/// fingerprint are all that is kept of it.
pub(crate) fn compacted_line(seq: i64, fp: i64) -> Result<serde_json::Value, StoreError> {
    Ok(serde_json::json!({
        "seq": from_sql(seq)?,
        "fp": format!("{:016x}", fp as u64),
        "compacted": true,
    }))
}

/// Writes the committed change log of the store in `dir` as JSON lines, in
/// `seq` order: the ground truth of what the server applied. Reads a
/// snapshot; a running server may go on writing. Rows at or below the
/// compaction horizon say `"compacted": true` and hold only `seq` and `fp`
/// (a store of schema 2 keeps their other columns, without the payload).
pub fn export_log(dir: &Path, out: &mut dyn Write) -> Result<u64, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join(schema::DB_FILE),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // One read transaction: the horizon, the reclaimed rows and the live
    // ones of one snapshot.
    let tx = conn.unchecked_transaction()?;
    let horizon: i64 =
        tx.query_row("SELECT compacted_through FROM meta WHERE id = 1", [], |r| {
            r.get(0)
        })?;
    let mut n = 0u64;
    let io = |e| StoreError::Io("writing the log", e);
    let has_history: i64 = tx.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'history'",
        [],
        |r| r.get(0),
    )?;
    if has_history > 0 {
        // Compaction is a prefix: every reclaimed seq is below the rows left.
        let mut st = tx.prepare("SELECT seq, fp FROM history ORDER BY seq")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            writeln!(out, "{}", compacted_line(r.get(0)?, r.get(1)?)?).map_err(io)?;
            n += 1;
        }
    }
    let mut st = tx.prepare(
        "SELECT seq, fp, collection, id, version, deleted, kind, payload, wall_ms, logical, node,
                origin_client, origin_op, committed_at_ms FROM changes ORDER BY seq",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let line = LogRow {
            seq: r.get(0)?,
            fp: r.get(1)?,
            collection: r.get(2)?,
            id: r.get(3)?,
            version: r.get(4)?,
            deleted: r.get(5)?,
            kind: r.get(6)?,
            payload: r.get(7)?,
            wall_ms: r.get(8)?,
            logical: r.get(9)?,
            node: r.get(10)?,
            origin_client: r.get(11)?,
            origin_op: r.get(12)?,
            committed_at_ms: r.get(13)?,
        }
        .to_json(horizon)?;
        writeln!(out, "{line}").map_err(io)?;
        n += 1;
    }
    out.flush().map_err(io)?;
    Ok(n)
}

/// [`export_log`] for the PostgreSQL store `url` names: one snapshot, read
/// in chunks.
pub async fn export_log_postgres(
    url: &str,
    out: &mut (dyn Write + Send),
) -> Result<u64, StoreError> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|_| StoreError::Invalid("the PostgreSQL URL does not parse"))?;
    let (mut client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(pg::pg_err)?;
    let driver = tokio::spawn(connection);
    let written = pg::export_log(&mut client, out).await;
    drop(client);
    let _ = driver.await;
    written
}
