//! `SqliteStorage`: the queue in SQLite (WAL, `synchronous=FULL`), the
//! expected default backend.
//!
//! Layout (format 3, see `SqlTx`): one row per operation in `ops`, holding
//! the operation as a compact body (see `compact`: what the columns do not
//! hold, with a CRC32 over it and those columns, checked before decoding;
//! format-2 rows hold a `cpc_core::envelope` and still read) beside its
//! interned entity (`eid`, a small integer from the
//! `entities` table) and the link `nxt` to its entity's next operation;
//! each entity row holds the first and last `seq` of that chain, so the
//! strict per-entity FIFO needs no index over all operations. The mutable
//! bookkeeping (state, lease, attempts, head mark `hk`: 0 due, 1 timed,
//! 2 blocked) lives in the small `hot` table, which only heads and
//! operations that left the fresh ready state have; its partial indexes
//! `hot_due` / `hot_timed` / `hot_aging` are what a claim reads (their first
//! entries only). Counters live in a one-row table written in the same
//! transaction, so nothing at open or in `pending`/`stats` scans.
//!
//! Commits: every call is one `BEGIN IMMEDIATE` transaction. Under
//! `Immediate` each commit syncs the WAL (`synchronous=FULL`), except a
//! claim's, which is crash-safe but not synced (`synchronous=NORMAL` for
//! that transaction only, see `Shared::write_claim`); under
//! `GroupCommit` concurrent enqueues are gathered by a leader into one
//! transaction and one sync; under `Relaxed` commits are not synced
//! (`synchronous=NORMAL`) and a background thread fdatasyncs the WAL every
//! [`RELAXED_SYNC_INTERVAL`] and on drop. Automatic checkpoints are off; a
//! background thread with its own connection checkpoints (PASSIVE, plus a
//! short catch-up with the writer held off every 16 MiB of WAL so the WAL
//! restarts instead of growing; TRUNCATE and incremental vacuum once the
//! queue is empty or closed empty), so a commit never pays for copying the
//! WAL into the database.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpc_core::envelope::{self, RecordKind};
use cpc_core::{
    ConflictRecord, EntityKey, HlcTimestamp, Operation, OperationId, OperationPriority,
    RemoteRecord,
};
use rusqlite::types::Type;
use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior,
};

use crate::api::{
    Amend, Claimed, Completion, ConflictCursor, ConflictFilter, DeferredConflict, Durability,
    Enqueued, EpochMillis, ListFilter, LoggedConflict, OpState, Page, QuarantineNotice,
    QuarantinedRecord, QueueOptions, QueueStats, QueueStorage, Respread, StoredOperation,
};
use crate::compact;
use crate::dir::{self, FaultSlot, InjectedFault, Poison, QueueDir};
use crate::error::{Result, StorageError};
use crate::journal::{AckedOp, Requeued};
use crate::notices::Notices;
use crate::rules::{self, Counters, Head, JournalRow, Loaded, MetaFilter, OpMeta, Tx};

#[macro_use]
mod codec;
mod checkpoint;
mod inspect;
mod journal;
mod open;
mod salvage;
#[cfg(test)]
mod tests;
mod tx;
mod write;

use self::checkpoint::*;
use self::codec::*;
pub use self::inspect::{InspectedOp, SqliteInspector, StoreFiles, Verified};
use self::open::*;
use self::tx::*;
use self::write::*;

/// Name of the backend in the directory's format marker.
const BACKEND: &str = "sqlite";
/// Format version of the SQLite store (marker and `PRAGMA user_version`).
/// 3: operation bodies are `compact` bodies (format-2 envelopes still read).
/// 4: the `acked` table (the acked journal), created on upgrade.
/// 5: `hot.claimed` (coalescing); on upgrade every operation is marked
/// claimed (see `open::UPGRADE_CLAIMED`).
/// 6: a plain enqueue leaves the `counters` row as it was; the counters
/// are the row plus the operations past its `next_seq` (see
/// `open::load_counters`). Same tables: a format-5 store is one already
/// (its row is complete); a format-5 build must not open a format-6 one,
/// whose row may lag.
const FORMAT_VERSION: u32 = 6;
/// The oldest format this build opens (and upgrades in place: format 2 has
/// the same tables, only new bodies are written compact).
const OLDEST_READABLE: u32 = 2;
/// The database file inside the queue directory.
#[doc(hidden)]
pub const DB_FILE: &str = "queue.sqlite3";
/// Under [`Durability::Relaxed`], how often the background thread syncs.
pub const RELAXED_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often the background thread checkpoints while writes happen.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// Delay of the background thread's first pass after open: none, so that
/// a process killed soon after every start still gets the WAL the previous
/// one left copied back, beside its first writes rather than before them.
const FIRST_PASS_DELAY: Duration = Duration::ZERO;
/// A WAL left larger than this by the previous process is checkpointed
/// (and truncated) at open, before anything else. Smaller ones are copied
/// back by the first background pass, which does not hold up the open (a
/// checkpoint at open of a 6 MB WAL took 20 ms of a 25 ms open); this bound
/// is the backstop for processes killed before their first pass ends, so a
/// crash loop of short lives cannot grow the WAL without bound.
const OPEN_CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// Commits after which the background thread is woken early.
const CHECKPOINT_AFTER_COMMITS: u64 = 2048;
/// A WAL of this many frames (16 MiB of 4 KiB pages) is restarted by the
/// background thread (see `checkpoint_busy`).
const CATCH_UP_FRAMES: i64 = 4096;
/// The WAL file is cut back to this size when it restarts after having
/// grown past it (a very large batch), so its high-water mark stays bounded.
const WAL_SIZE_LIMIT: i64 = 32 * 1024 * 1024;
/// Pages returned per incremental vacuum step (one short write transaction).
const VACUUM_STEP_PAGES: i64 = 1024;
/// Page cache of the main connection (negative: KiB), sized so index pages
/// of a large queue stay cached without breaking the RSS budget.
const MAIN_CACHE_KIB: i64 = -8192;
/// Most requests one group commit takes.
const MAX_GROUP: usize = 1024;

/// The durable queue in SQLite; see the module docs for the commit strategy
/// and `docs/durability.md` for what survives what.
///
/// ```
/// use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind};
/// use cpc_storage::{Completion, QueueOptions, QueueStorage, QueueStorageExt, SqliteStorage};
/// use rand::{rngs::StdRng, SeedableRng};
///
/// let dir = tempfile::tempdir()?;
/// let op = Operation::builder(EntityKey::new("notes", "1"), OperationKind::Create)
///     .payload(b"hello".to_vec())
///     .build_at(HlcTimestamp::new(1_000, 0, NodeId(1)), &mut StdRng::seed_from_u64(7));
/// {
///     let store = SqliteStorage::open_at(dir.path().join("queue"), QueueOptions::default(), 1_000)?;
///     store.enqueue(op.clone(), 1_000)?; // fsynced before it returns
/// }
/// let store = SqliteStorage::open_at(dir.path().join("queue"), QueueOptions::default(), 2_000)?;
/// let batch = store.claim_ready(2_000, 64)?;
/// assert_eq!(batch[0].op, op);
/// store.complete(&[Completion::Ack(op.id)], 2_010)?;
/// assert_eq!(store.pending()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SqliteStorage {
    shared: Arc<Shared>,
    background: Option<JoinHandle<()>>,
}

impl SqliteStorage {
    /// Opens (creating if needed) the queue in directory `dir`, returning
    /// leases that ended before the system clock's now to ready.
    pub fn open(dir: impl AsRef<Path>, options: QueueOptions) -> Result<Self> {
        Self::open_at(dir, options, dir::system_now())
    }

    /// Opens the queue in `dir` with `now` as the recovery instant (leases
    /// ending at or before `now` return to ready). For simulated clocks.
    pub fn open_at(dir: impl AsRef<Path>, options: QueueOptions, now: EpochMillis) -> Result<Self> {
        options.validate()?;
        let mut qdir = QueueDir::open(
            dir.as_ref(),
            BACKEND,
            FORMAT_VERSION,
            options.allow_shared_directory,
        )?;
        let path = qdir.path().to_path_buf();
        let db_path = path.join(DB_FILE);
        let wal_path = path.join(format!("{DB_FILE}-wal"));
        let created = !db_path
            .try_exists()
            .map_err(|e| dir::io_error("inspect database", e))?;
        make_files_private(&path, &db_path, created)?;
        let conn = open_connection(&path, &db_path, &options)?;
        conn.pragma_update(None, "cache_size", MAIN_CACHE_KIB)
            .map_err(|e| classify(&path, "configure", e))?;
        checkpoint_leftover_wal(&conn, &path, &wal_path)?;
        init_schema(&conn, &path)?;
        // After the database accepted the upgrade: a refused store keeps
        // its old marker.
        qdir.upgrade_marker(BACKEND, FORMAT_VERSION)?;
        if created {
            // The new files' directory entries must be durable too.
            qdir.sync()?;
        }
        let counters = load_counters(&conn, &path)?;
        let written = load_counters_row(&conn, &path)?;
        let shared = Arc::new(Shared {
            main: Mutex::new(Main {
                conn,
                counters,
                written,
            }),
            group: Group::default(),
            bg: Mutex::new(BgState::default()),
            bg_cv: Condvar::new(),
            poison: Poison::default(),
            faults: FaultSlot::default(),
            now_hint: AtomicU64::new(now),
            claims_unsynced: std::sync::atomic::AtomicBool::new(false),
            notices: Notices::default(),
            options,
            path,
            db_path,
            wal_path,
            _dir: qdir,
        });
        let recovered = shared.write("recover", |tx| rules::recover(tx, now, &shared.options))?;
        let bg_conn = open_connection(&shared.path, &shared.db_path, &shared.options)?;
        bg_conn
            .busy_timeout(Duration::from_millis(50))
            .map_err(|e| classify(&shared.path, "configure", e))?;
        let bg_shared = Arc::clone(&shared);
        let background = std::thread::Builder::new()
            .name("cpc-sqlite-checkpoint".into())
            .spawn(move || background(&bg_shared, bg_conn))
            .map_err(|e| dir::io_error("spawn checkpoint thread", e))?;
        tracing::debug!(
            pending = shared.lock_main().counters.pending(),
            recovered,
            "sqlite queue opened"
        );
        Ok(SqliteStorage {
            shared,
            background: Some(background),
        })
    }

    /// The queue directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The options the queue was opened with.
    pub fn options(&self) -> &QueueOptions {
        &self.shared.options
    }

    /// Test hook: makes the next durable commit fail as `fault` describes
    /// (a failed sync poisons the handle; a full disk does not).
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: InjectedFault) {
        self.shared.faults.arm(fault);
    }

    /// Stores `ops`, coalescing them when `coalescer` is given.
    fn enqueue_ops(
        &self,
        ops: Vec<Operation>,
        now: EpochMillis,
        coalescer: Option<Arc<dyn cpc_core::Coalescer>>,
    ) -> Result<Vec<Enqueued>> {
        let s = &self.shared;
        s.poison.check()?;
        let now = s.seen(now);
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        for op in &ops {
            rules::validate(op, s.options.max_payload)?;
        }
        match s.options.durability {
            Durability::GroupCommit { max_delay } => {
                s.group_enqueue(ops, now, coalescer, max_delay)
            }
            Durability::Immediate | Durability::Relaxed => {
                s.write(enqueue_context(coalescer.is_some()), |tx| {
                    rules::check_enqueue(tx, &ops, &s.options)?;
                    store(tx, &ops, now, coalescer.as_deref(), &s.options)
                })
            }
        }
    }
}

impl Drop for SqliteStorage {
    fn drop(&mut self) {
        {
            let mut bg = lock(&self.shared.bg);
            bg.stop = true;
        }
        self.shared.bg_cv.notify_all();
        if let Some(handle) = self.background.take() {
            if handle.join().is_err() {
                tracing::error!("sqlite checkpoint thread panicked");
            }
        }
        if self.shared.options.durability == Durability::Relaxed {
            if let Err(e) = self.shared.sync_wal() {
                tracing::error!(error = %e, "final sync of a relaxed sqlite queue failed");
            }
        }
    }
}

impl QueueStorage for SqliteStorage {
    fn max_payload(&self) -> usize {
        self.shared.options.max_payload
    }

    fn amend(&self, change: Amend) -> Result<u64> {
        let s = &self.shared;
        if let Some(now) = change.now() {
            s.seen(now);
        }
        s.write(change.name(), |tx| rules::amend(tx, &change, &s.options))
    }

    fn enqueue_batch(&self, ops: Vec<Operation>, now: EpochMillis) -> Result<Vec<u64>> {
        let stored = self.enqueue_ops(ops, now, None)?;
        // Without a coalescer every operation is stored.
        Ok(stored
            .into_iter()
            .filter_map(|e| match e {
                Enqueued::Stored { seq } => Some(seq),
                Enqueued::Merged { .. } | Enqueued::Cancelled { .. } => None,
            })
            .collect())
    }

    fn enqueue_coalesced(
        &self,
        ops: Vec<Operation>,
        now: EpochMillis,
        coalescer: Arc<dyn cpc_core::Coalescer>,
    ) -> Result<Vec<Enqueued>> {
        self.enqueue_ops(ops, now, Some(coalescer))
    }

    fn claim_ready(&self, now: EpochMillis, limit: usize) -> Result<Vec<Claimed>> {
        let s = &self.shared;
        let now = s.seen(now);
        s.write_claim(|tx| rules::claim(tx, now, limit, &s.options))
    }

    fn complete(&self, completions: &[Completion], now: EpochMillis) -> Result<()> {
        let s = &self.shared;
        s.seen(now);
        if completions.is_empty() {
            return s.poison.check();
        }
        rules::check_completions(completions, &s.options)?;
        s.write("complete", |tx| {
            rules::complete(tx, completions, now, &s.options)
        })
    }

    fn respread_waiting(
        &self,
        base: EpochMillis,
        spread_ms: u64,
        salt: u32,
        page: &Page,
    ) -> Result<Respread> {
        let s = &self.shared;
        let after = page.after.map_or(-1, to_i64);
        let limit = page
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        // One statement over one page of the bookkeeping (a range of the
        // primary key): no operation row, no payload, is read, and the
        // write lock is held for one page only. The slot is
        // `respread_offset`, written in SQL.
        s.write("respread", |tx| {
            let (last, examined): (Option<i64>, i64) = tx
                .conn
                .prepare_cached(
                    "SELECT MAX(seq), COUNT(*) FROM \
                     (SELECT seq FROM hot WHERE seq > ?1 AND state != ?3 ORDER BY seq LIMIT ?2)",
                )
                .and_then(|mut st| {
                    st.query_row(params![after, limit, STATE_DEAD], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                })
                .map_err(tx.err("respread"))?;
            let Some(last) = last else {
                return Ok(Respread::default());
            };
            let moved = tx
                .conn
                .prepare_cached(
                    "UPDATE hot SET wake_at = ?1 + (((seq % 4294967291) * 65599 + ?3) % (?2 + 1)) \
                     WHERE seq > ?5 AND seq <= ?6 AND state = ?4 \
                       AND wake_at < ?1 + (((seq % 4294967291) * 65599 + ?3) % (?2 + 1))",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        to_i64(base.min(rules::MAX_INSTANT / 2)),
                        to_i64(spread_ms.min(rules::MAX_INSTANT / 2)),
                        i64::from(salt),
                        STATE_WAITING,
                        after,
                        last
                    ])
                })
                .map_err(tx.err("respread"))?;
            let full = page.limit.is_some_and(|l| examined as u64 >= l as u64);
            Ok(Respread {
                moved: moved as u64,
                next: full.then(|| to_u64(last)),
            })
        })
    }

    fn take_quarantine_notices(&self) -> Vec<QuarantineNotice> {
        self.shared.notices.take()
    }

    fn stats(&self) -> Result<QueueStats> {
        let s = &self.shared;
        s.poison.check()?;
        let main = s.lock_main();
        let quarantined: i64 = main
            .conn
            .prepare_cached("SELECT COUNT(*) FROM quarantine")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(|e| classify(&s.path, "stats", e))?;
        let mut stats = main.counters.stats(to_u64(quarantined));
        drop(main);
        s.read(|tx| {
            rules::count_blocked(tx, &mut stats, &s.options)?;
            stats.acked_journal = rules::journal_len(tx)?;
            Ok(())
        })?;
        Ok(stats)
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<StoredOperation>> {
        let s = &self.shared;
        let now = s.hint();
        s.write("list", |tx| rules::list(tx, filter, now, &s.options))
    }

    fn get(&self, id: OperationId) -> Result<Option<StoredOperation>> {
        let s = &self.shared;
        let now = s.hint();
        // A corrupt record is quarantined (committed) and then reported.
        let mut corrupt = None;
        let found = s.write("get", |tx| match rules::get(tx, id, now, &s.options) {
            Err(e @ StorageError::Corrupt { .. }) => {
                corrupt = Some(e);
                Ok(None)
            }
            other => other,
        })?;
        match corrupt {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    fn recover(&self, now: EpochMillis) -> Result<u64> {
        let s = &self.shared;
        s.seen(now);
        s.write("recover", |tx| rules::recover(tx, now, &s.options))
    }

    fn next_wakeup(&self) -> Result<Option<EpochMillis>> {
        self.shared.read(|tx| tx.min_timed())
    }

    fn list_deferred(&self, page: &Page) -> Result<Vec<DeferredConflict>> {
        let s = &self.shared;
        let now = s.hint();
        s.write("list deferred", |tx| {
            rules::list_deferred(tx, page, now, &s.options)
        })
    }

    fn log_conflict(&self, entry: &ConflictRecord) -> Result<u64> {
        let s = &self.shared;
        rules::check_conflict(entry, s.options.max_payload)?;
        let body = envelope::encode(RecordKind::Conflict, entry).map_err(StorageError::Encode)?;
        let cutoff = rules::conflict_cutoff(entry.resolved_at_ms, &s.options);
        let max = i64::try_from(s.options.conflict_log_max_entries).unwrap_or(i64::MAX);
        let max_bytes = i64::try_from(s.options.conflict_log_max_bytes).unwrap_or(i64::MAX);
        s.write("log conflict", |tx| {
            let c = tx.conn;
            let err = |e| classify(tx.path, "log conflict", e);
            c.prepare_cached(
                "INSERT INTO conflicts (resolved_at, entity, body) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    to_i64(entry.resolved_at_ms),
                    entry.entity.to_key_bytes(),
                    body
                ])
            })
            .map_err(err)?;
            let mut pruned = c
                .prepare_cached("DELETE FROM conflicts WHERE resolved_at < ?1")
                .and_then(|mut st| st.execute(params![to_i64(cutoff)]))
                .map_err(err)?;
            // The log is bounded by count, so this subquery is bounded too.
            pruned += c
                .prepare_cached(
                    "DELETE FROM conflicts WHERE n IN \
                     (SELECT n FROM conflicts ORDER BY n DESC LIMIT -1 OFFSET ?1)",
                )
                .and_then(|mut st| st.execute(params![max]))
                .map_err(err)?;
            // By bytes: keep the newest entries whose bodies add up to at
            // most the bound (the newest always). `length` of a blob reads
            // its size from the row header, not its pages.
            pruned += c
                .prepare_cached(
                    "DELETE FROM conflicts WHERE n <= (\
                       SELECT n FROM (SELECT n, SUM(length(body)) OVER (ORDER BY n DESC) AS total \
                                      FROM conflicts) \
                       WHERE total > ?1 ORDER BY n DESC LIMIT 1) \
                     AND n < (SELECT MAX(n) FROM conflicts)",
                )
                .and_then(|mut st| st.execute(params![max_bytes]))
                .map_err(err)?;
            Ok(pruned as u64)
        })
    }

    fn conflict_entries(&self, filter: &ConflictFilter) -> Result<Vec<LoggedConflict>> {
        let s = &self.shared;
        let entity = filter.entity.as_ref().map(EntityKey::to_key_bytes);
        let since = filter.since.map(to_i64);
        let limit = filter.limit.unwrap_or(usize::MAX);
        let now = s.hint();
        let body_limit = rules::conflict_body_limit(s.options.max_payload);
        s.write("conflict log", |tx| {
            let err = |e| classify(tx.path, "conflict log", e);
            let mut before = filter.before.map_or(i64::MAX, |c| to_i64(c.n));
            let mut out = Vec::new();
            // Corrupt entries are quarantined and skipped; the page is then
            // filled from older ones, so a short page means the log's end.
            while out.len() < limit {
                let want = limit - out.len();
                let rows: Vec<(i64, i64, Vec<u8>)> = tx
                    .conn
                    .prepare_cached(
                        "SELECT n, resolved_at, body FROM conflicts \
                         WHERE n < ?1 AND (?2 IS NULL OR entity = ?2) \
                           AND (?3 IS NULL OR resolved_at >= ?3) \
                         ORDER BY n DESC LIMIT ?4",
                    )
                    .and_then(|mut st| {
                        st.query_map(
                            params![before, entity, since, i64::try_from(want).unwrap_or(-1)],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )?
                        .collect()
                    })
                    .map_err(err)?;
                let exhausted = rows.len() < want;
                for (n, at, body) in rows {
                    before = n;
                    match envelope::decode(RecordKind::Conflict, &body, body_limit) {
                        Ok(entry) => out.push(LoggedConflict {
                            cursor: ConflictCursor {
                                at: to_u64(at),
                                n: to_u64(n),
                            },
                            entry,
                        }),
                        Err(error) => {
                            tracing::warn!(n, error = %error, "quarantining a corrupt conflict log entry");
                            tx.quarantine_row(
                                &format!("conflict/{n}"),
                                &format!("conflict log entry: {error}"),
                                &body,
                                now,
                            )?;
                            tx.conn
                                .prepare_cached("DELETE FROM conflicts WHERE n = ?1")
                                .and_then(|mut st| st.execute(params![n]))
                                .map_err(err)?;
                        }
                    }
                }
                if exhausted {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn list_quarantined(&self, page: &Page) -> Result<Vec<QuarantinedRecord>> {
        let after = page.after.map_or(0, to_i64);
        let limit = page
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        self.shared.read(|tx| {
            tx.conn
                .prepare_cached(
                    "SELECT n, key, reason, raw, at FROM quarantine WHERE n > ?1 \
                     ORDER BY n LIMIT ?2",
                )
                .and_then(|mut st| {
                    st.query_map(params![after, limit], |r| {
                        Ok(QuarantinedRecord {
                            n: to_u64(r.get(0)?),
                            key: r.get(1)?,
                            reason: r.get(2)?,
                            raw: r.get(3)?,
                            at: to_u64(r.get(4)?),
                        })
                    })?
                    .collect()
                })
                .map_err(|e| classify(tx.path, "list quarantined", e))
        })
    }

    fn clock_mark(&self, raise_to: Option<HlcTimestamp>) -> Result<Option<HlcTimestamp>> {
        let Some(mark) = raise_to else {
            return self.shared.read(|tx| tx.clock_mark());
        };
        let body = envelope::encode(RecordKind::Meta, &mark).map_err(StorageError::Encode)?;
        self.shared.write("store clock mark", |tx| {
            if let Some(current) = tx.clock_mark().ok().flatten().filter(|m| *m >= mark) {
                return Ok(Some(current));
            }
            tx.conn
                .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES ('clock_mark', ?1)")
                .and_then(|mut st| st.execute(params![body]))
                .map_err(|e| classify(tx.path, "store clock mark", e))?;
            Ok(Some(mark))
        })
    }

    fn sync_state(&self, key: &str, set: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        crate::api::check_sync_state(key, set.as_ref())?;
        let name = format!("sync/{key}");
        let Some(value) = set else {
            return self.shared.read(|tx| tx.sync_state(&name));
        };
        let body = envelope::encode(RecordKind::Meta, &value).map_err(StorageError::Encode)?;
        self.shared.write("store sync state", |tx| {
            tx.conn
                .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![name, body]))
                .map_err(|e| classify(tx.path, "store sync state", e))?;
            Ok(Some(value))
        })
    }

    fn flush(&self) -> Result<()> {
        let s = &self.shared;
        s.poison.check()?;
        match s.options.durability {
            Durability::Relaxed => {
                let _main = s.lock_main();
                s.sync_wal()
            }
            // Every commit but a claim's was synced before it returned.
            Durability::Immediate | Durability::GroupCommit { .. } => {
                if s.claims_unsynced.swap(false, Ordering::SeqCst) {
                    let _main = s.lock_main();
                    if let Err(e) = s.sync_wal() {
                        s.claims_unsynced.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                }
                Ok(())
            }
        }
    }

    fn requeue_acked(&self, head_seq: u64, now: EpochMillis, limit: usize) -> Result<Requeued> {
        let s = &self.shared;
        let now = s.seen(now);
        s.write("requeue acked", |tx| {
            rules::requeue_acked(tx, head_seq, now, limit, &s.options)
        })
    }

    fn acked(&self, page: &Page) -> Result<Vec<AckedOp>> {
        let s = &self.shared;
        s.read(|tx| rules::list_acked(tx, page, &s.options))
    }
}
