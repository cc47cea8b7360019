//! The embedded store: SQLite in a locked data directory, written by one
//! thread with group commit (`store/writer.rs`), read for pulls on a pool
//! of read-only connections (`store/read.rs`), schema and migrations in
//! `store/schema.rs`, the per-operation rules in `store/apply.rs`, the
//! change log's fingerprint in `store/fp.rs`.

mod apply;
mod fp;
mod page;
mod read;
mod rules;
mod schema;
mod writer;

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::thread::JoinHandle;

use base64::Engine as _;
use std::sync::Arc;

use cpc_protocol::{Limits, OpOutcome, Position, PullRequest, WireOp};
use rusqlite::OpenFlags;
use tokio::sync::{mpsc, oneshot, watch};

pub use self::page::PullPage;
use self::read::Readers;
use self::rules::Head;
use self::schema::{from_sql, DirLock};
use self::writer::{CompactJob, Job, PushJob, Writer};

/// Rows one compaction step touches at most.
const COMPACT_STEP: u64 = 20_000;

/// Pushes queued for the writer at most; a push beyond waits for room.
const QUEUE: usize = 256;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error outside SQLite.
    #[error("i/o error while {0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    /// SQLite failed (disk full, I/O error, busy).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another server holds the data directory.
    #[error("the data directory {0} is in use by another server")]
    Locked(String),
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
}

impl StoreError {
    /// The same failure for another waiting push (errors do not clone).
    fn unavailable_copy(&self) -> StoreError {
        StoreError::Unavailable(self.to_string())
    }
}

/// The server's store: a handle on the writer thread.
#[derive(Debug)]
pub struct Store {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Readers>,
    head: watch::Receiver<u64>,
    store_id: String,
    _lock: DirLock,
    /// The rules to break on purpose (see `crate::faults`).
    #[cfg(feature = "test-faults")]
    faults: crate::faults::Faults,
}

impl Store {
    /// Opens (creating or migrating) the store in `dir` and starts its
    /// writer. Refuses a directory another server holds.
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
        if new_id.is_some_and(|id| id.is_empty() || id.len() > 64 || !id.is_ascii()) {
            return Err(StoreError::Invalid(
                "a store id is 1 to 64 ASCII characters",
            ));
        }
        let lock = schema::lock_dir(dir)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let conn = schema::open(dir, now, new_id)?;
        let (store_id, seq, fp) = schema::read_head(&conn)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (head_tx, head_rx) = watch::channel(seq);
        let writer = Writer {
            conn,
            head: Head { seq, fp },
            store_id: store_id.clone(),
            limits,
            head_tx,
        };
        let handle = std::thread::Builder::new()
            .name("cpc-server-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Io("starting the writer thread", e))?;
        Ok(Store {
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            readers: Arc::new(Readers::new(dir)),
            head: head_rx,
            store_id,
            _lock: lock,
            #[cfg(feature = "test-faults")]
            faults: Default::default(),
        })
    }

    /// The store's identity.
    pub fn store_id(&self) -> &str {
        &self.store_id
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

    fn sender(&self) -> Result<mpsc::Sender<Job>, StoreError> {
        self.jobs
            .lock()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// Applies one client's push (already validated) and answers after the
    /// commit is durable: the outcomes and the head.
    pub async fn push(
        &self,
        client_id: String,
        ops: Vec<WireOp>,
        known: Option<Position>,
    ) -> Result<(Vec<OpOutcome>, Position), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Job::Push(PushJob {
                client_id,
                ops,
                known,
                reply,
                #[cfg(feature = "test-faults")]
                faults: self.faults,
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Reads the page a pull asks for (already validated; docs/protocol.md
    /// §7.3–7.5), without waiting: `HistoryDiverged` when its `known` is
    /// not in this history. The caller does the long poll, on
    /// [`Store::head`].
    pub async fn pull(&self, request: PullRequest) -> Result<PullPage, StoreError> {
        let store_id = self.store_id.clone();
        #[cfg(feature = "test-faults")]
        let skip_first = self.faults.pull_skip_change;
        #[cfg(not(feature = "test-faults"))]
        let skip_first = false;
        self.readers
            .read(move |conn| read::read_page(conn, &store_id, &request, skip_first))
            .await
    }

    /// The head's seq, told after every commit: what a long poll waits on.
    pub fn head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    /// Compacts the change log (docs/protocol.md §7.5): every row committed
    /// before `before_ms` (ms since the Unix epoch), as a prefix, loses its
    /// payload; cursors below the new horizon get a snapshot. Runs in short
    /// steps between pushes. Answers the horizon.
    pub async fn compact(&self, before_ms: u64) -> Result<u64, StoreError> {
        loop {
            let (reply, answer) = oneshot::channel();
            self.sender()?
                .send(Job::Compact(CompactJob {
                    before_ms,
                    max_rows: COMPACT_STEP,
                    reply,
                }))
                .await
                .map_err(|_| StoreError::Closed)?;
            let (horizon, more) = answer.await.map_err(|_| StoreError::Closed)??;
            if !more {
                return Ok(horizon);
            }
        }
    }

    /// Stops the writer after the pushes already queued, and waits for it.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        self.readers.close();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Writes the committed change log of the store in `dir` as JSON lines, in
/// `seq` order: the ground truth of what the server applied. Reads a
/// snapshot; a running server may go on writing. Rows at or below the
/// compaction horizon say `"compacted": true` and have no payload.
pub fn export_log(dir: &Path, out: &mut dyn Write) -> Result<u64, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join(schema::DB_FILE),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let horizon: i64 =
        conn.query_row("SELECT compacted_through FROM meta WHERE id = 1", [], |r| {
            r.get(0)
        })?;
    let mut st = conn.prepare(
        "SELECT seq, fp, collection, id, version, deleted, kind, payload, wall_ms, logical, node,
                origin_client, origin_op, committed_at_ms FROM changes ORDER BY seq",
    )?;
    let mut rows = st.query([])?;
    let mut n = 0u64;
    let io = |e| StoreError::Io("writing the log", e);
    while let Some(r) = rows.next()? {
        let payload: Option<Vec<u8>> = r.get(7)?;
        let seq: i64 = r.get(0)?;
        let line = serde_json::json!({
            "seq": from_sql(r.get(0)?)?,
            "fp": format!("{:016x}", r.get::<_, i64>(1)? as u64),
            "entity": {"collection": r.get::<_, String>(2)?, "id": r.get::<_, String>(3)?},
            "version": from_sql(r.get(4)?)?,
            "deleted": r.get::<_, bool>(5)?,
            "kind": r.get::<_, String>(6)?,
            "payload": payload.map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
            "timestamp": {
                "wall_ms": from_sql(r.get(8)?)?,
                "logical": r.get::<_, u32>(9)?,
                "node": format!("{:016x}", r.get::<_, i64>(10)? as u64),
            },
            "origin": {"client_id": r.get::<_, String>(11)?, "op": r.get::<_, String>(12)?},
            "committed_at_ms": from_sql(r.get(13)?)?,
            "compacted": seq <= horizon,
        });
        writeln!(out, "{line}").map_err(io)?;
        n += 1;
    }
    out.flush().map_err(io)?;
    Ok(n)
}
