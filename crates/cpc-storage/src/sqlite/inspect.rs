//! [`SqliteInspector`]: a read-only look at a SQLite queue directory that
//! an engine may be using right now (the `cpc-sync` command line).
//!
//! It takes no lock and writes no record: the database is opened
//! read-only (a WAL reader beside the engine's writer; each call reads one
//! consistent snapshot, kept short), the format marker is read, not
//! written. (SQLite may create the empty `-wal`/`-shm` files of a store
//! closed cleanly: a reader needs them.) Damaged
//! records are reported, never quarantined (that is a write). An older
//! format is read as far as it goes (a format-3 store has no journal).

use super::*;
use crate::api::{ListFilter, QueueStats};
use crate::journal::AckedOp;

/// One stored operation as the inspector sees it: its bookkeeping, and
/// the operation itself or why it does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectedOp {
    /// Its submission seq.
    pub seq: u64,
    /// Its id.
    pub id: OperationId,
    /// Its entity (`None` if the stored key does not decode).
    pub entity: Option<cpc_core::EntityKey>,
    /// Its priority.
    pub priority: cpc_core::OperationPriority,
    /// Its state.
    pub state: OpState,
    /// Send attempts so far.
    pub attempts: u32,
    /// The last error (no payload data).
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub enqueued_at: EpochMillis,
    /// When it may next be tried (a retry's time, a lease's end).
    pub wake_at: Option<EpochMillis>,
    /// Its payload's length.
    pub payload_len: u64,
    /// The operation, or why its record does not decode.
    pub op: std::result::Result<Operation, String>,
}

/// What [`SqliteInspector::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Operation records decoded.
    pub operations: u64,
    /// Acked journal entries decoded.
    pub journal: u64,
    /// Records that do not decode: (where, why).
    pub damaged: Vec<(String, String)>,
    /// Records the store quarantined earlier (kept raw).
    pub quarantined: u64,
}

/// The files of a store and their sizes in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreFiles {
    /// The database file.
    pub database: u64,
    /// Its write-ahead log.
    pub wal: u64,
}

/// A read-only view of a SQLite queue directory; see the module docs.
#[derive(Debug)]
pub struct SqliteInspector {
    conn: Connection,
    path: PathBuf,
    format: u32,
    body_limit: u32,
    options: QueueOptions,
}

/// Operations one verification page reads (whole bodies: bounded, so a
/// queue of large payloads is read in small snapshots).
const VERIFY_PAGE: usize = 64;

impl SqliteInspector {
    /// Opens `dir` read-only: no lock taken, nothing written. Refuses a
    /// directory without a marker ([`StorageError::NotAQueue`]), another
    /// backend's or a newer format's ([`StorageError::Format`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<SqliteInspector> {
        let path = dir.as_ref().to_path_buf();
        let format = dir::read_marker(&path, BACKEND, FORMAT_VERSION)?;
        let db = path.join(DB_FILE);
        if !db.exists() {
            return Err(StorageError::Format {
                path,
                reason: format!("{DB_FILE} is missing"),
            });
        }
        let conn = Connection::open_with_flags(
            &db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify(&path, "open read-only", e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| classify(&path, "open read-only", e))?;
        if !super::open::has_column(&conn, &path, "hot", "claimed")? {
            // An older format, read as it is: a view in the connection's
            // own temp schema (nothing written to the store) stands in for
            // `hot` with the column the queries read. Unqualified names
            // find the temp schema first.
            conn.execute_batch("CREATE TEMP VIEW hot AS SELECT *, 1 AS claimed FROM main.hot")
                .map_err(|e| classify(&path, "open read-only", e))?;
        }
        // Limits for decoding: the largest payload any store accepts, so a
        // store opened with a large `max_payload` is still readable.
        let options = QueueOptions {
            max_payload: crate::MAX_PAYLOAD_LIMIT,
            ..QueueOptions::default()
        };
        Ok(SqliteInspector {
            conn,
            format,
            body_limit: rules::body_limit(options.max_payload),
            options,
            path,
        })
    }

    /// The store's format version (its marker's).
    pub fn format_version(&self) -> u32 {
        self.format
    }

    /// The format version this build writes: opening an older store for
    /// writing upgrades it in place (an older app may then refuse it).
    pub const CURRENT_FORMAT: u32 = FORMAT_VERSION;

    /// The store's files and their sizes.
    pub fn files(&self) -> StoreFiles {
        let size = |name: String| {
            std::fs::metadata(self.path.join(name))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        StoreFiles {
            database: size(DB_FILE.to_owned()),
            wal: size(format!("{DB_FILE}-wal")),
        }
    }

    /// Runs `f` on one consistent snapshot.
    fn snapshot<R>(&self, f: impl FnOnce(&mut SqlTx<'_>) -> Result<R>) -> Result<R> {
        let err = |e| classify(&self.path, "read snapshot", e);
        self.conn.execute_batch("BEGIN DEFERRED").map_err(err)?;
        let result = (|| {
            let mut counters = load_counters(&self.conn, &self.path)?;
            let mut tx = SqlTx::new(&self.conn, &self.path, &mut counters, self.body_limit);
            f(&mut tx)
        })();
        let _ = self.conn.execute_batch("COMMIT");
        result
    }

    fn has_journal(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'acked'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| classify(&self.path, "read schema", e))
    }

    /// Counts by state and priority, blocked operations, the journal's
    /// size and the quarantined records, as [`QueueStorage::stats`].
    pub fn stats(&self) -> Result<QueueStats> {
        let journal = self.has_journal()?;
        self.snapshot(|tx| {
            let quarantined: i64 = tx
                .conn
                .query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))
                .map_err(tx.err("stats"))?;
            let mut stats = tx.counters.stats(to_u64(quarantined));
            rules::count_blocked(tx, &mut stats, &self.options)?;
            if journal {
                stats.acked_journal = rules::journal_len(tx)?;
            }
            Ok(stats)
        })
    }

    /// The enqueue time of the oldest pending operation (ready, in flight
    /// or waiting), if any.
    pub fn oldest_pending(&self) -> Result<Option<EpochMillis>> {
        self.snapshot(|tx| {
            // States 0..=2 are the pending ones; an operation without a
            // `hot` row is fresh, hence ready.
            tx.conn
                .query_row(
                    "SELECT MIN(o.enqueued_at) FROM ops o LEFT JOIN hot h ON h.seq = o.seq \
                     WHERE h.seq IS NULL OR h.state <= 2",
                    [],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .map(|v| v.map(to_u64))
                .map_err(tx.err("oldest pending"))
        })
    }

    /// Operations matching `filter`, in submission order, each decoded or
    /// reported damaged (never quarantined).
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<InspectedOp>> {
        let entity = filter
            .entity
            .as_ref()
            .map(cpc_core::EntityKey::to_key_bytes);
        self.snapshot(|tx| {
            let metas = tx.list_metas(MetaFilter::listing(filter, entity.as_deref()))?;
            let mut out = Vec::with_capacity(metas.len());
            for meta in metas {
                let op = match tx.load_op(&meta)? {
                    Loaded::Ok(op) if op.id == meta.id => Ok(op),
                    Loaded::Ok(_) => Err("stored id differs from the index".to_owned()),
                    Loaded::Corrupt { error, .. } => Err(error.to_string()),
                };
                out.push(InspectedOp {
                    seq: meta.seq,
                    id: meta.id,
                    entity: cpc_core::EntityKey::from_key_bytes(&meta.entity),
                    priority: meta.priority,
                    wake_at: meta.wake_at(),
                    state: meta.state,
                    attempts: meta.attempts,
                    last_error: meta.last_error,
                    enqueued_at: meta.enqueued_at,
                    payload_len: meta.payload_len,
                    op,
                });
            }
            Ok(out)
        })
    }

    /// The acked journal, oldest first, one page at a time.
    pub fn acked(&self, page: &Page) -> Result<Vec<AckedOp>> {
        if !self.has_journal()? {
            return Ok(Vec::new());
        }
        self.snapshot(|tx| rules::list_acked(tx, page, &self.options))
    }

    /// A value the sync layer keeps beside the queue
    /// ([`QueueStorage::sync_state`]), if stored.
    pub fn sync_state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        crate::api::check_sync_state(key, None)?;
        let name = format!("sync/{key}");
        self.snapshot(|tx| tx.sync_state(&name))
    }

    /// The queue's whole sync state, typed ([`SyncState`](crate::SyncState)).
    pub fn sync_record(&self) -> Result<crate::SyncState> {
        crate::SyncState::read_with(|key| self.sync_state(key))
    }

    /// Decodes every operation record and acked journal entry, page by
    /// page; reports the ones that do not decode.
    pub fn verify(&self) -> Result<Verified> {
        let mut found = Verified::default();
        let mut after = None;
        loop {
            let page = self.list(&ListFilter {
                limit: Some(VERIFY_PAGE),
                after_seq: after,
                ..ListFilter::default()
            })?;
            for op in &page {
                found.operations += 1;
                if let Err(why) = &op.op {
                    found.damaged.push((
                        format!("operation seq {} id {}", op.seq, op.id),
                        why.clone(),
                    ));
                }
            }
            match page.last() {
                Some(last) if page.len() == VERIFY_PAGE => after = Some(last.seq),
                _ => break,
            }
        }
        if self.has_journal()? {
            let mut after = 0;
            loop {
                let rows = self.snapshot(|tx| tx.journal_rows(after, VERIFY_PAGE, true))?;
                for row in &rows {
                    found.journal += 1;
                    let decoded = envelope::decode::<crate::journal::JournalRecord>(
                        RecordKind::Acked,
                        &row.body,
                        self.body_limit,
                    );
                    if let Err(e) = decoded {
                        found
                            .damaged
                            .push((format!("acked journal entry {}", row.n), e.to_string()));
                    }
                }
                match rows.last() {
                    Some(last) if rows.len() == VERIFY_PAGE => after = last.n,
                    _ => break,
                }
            }
        }
        found.quarantined = self.stats()?.quarantined;
        Ok(found)
    }
}
