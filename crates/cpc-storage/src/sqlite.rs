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
    RemoteRecord, Resolution,
};
use rusqlite::types::Type;
use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior,
};

use crate::api::{
    Claimed, Completion, ConflictCursor, ConflictFilter, DeferredConflict, Durability, EpochMillis,
    ListFilter, LoggedConflict, OpState, Page, QuarantineNotice, QuarantinedRecord, QueueOptions,
    QueueStats, QueueStorage, Respread, StoredOperation,
};
use crate::compact;
use crate::dir::{self, FaultSlot, InjectedFault, Poison, QueueDir};
use crate::engine::{self, Counters, Head, Loaded, MetaFilter, OpMeta, Tx};
use crate::error::{Result, StorageError};
use crate::notices::Notices;

/// Name of the backend in the directory's format marker.
const BACKEND: &str = "sqlite";
/// Format version of the SQLite store (marker and `PRAGMA user_version`).
/// 3: operation bodies are `compact` bodies (format-2 envelopes still read).
const FORMAT_VERSION: u32 = 3;
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
/// use cpc_storage::{Completion, QueueOptions, QueueStorage, SqliteStorage};
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
        let shared = Arc::new(Shared {
            main: Mutex::new(Main { conn, counters }),
            group: Group::default(),
            bg: Mutex::new(BgState::default()),
            bg_cv: Condvar::new(),
            poison: Poison::default(),
            faults: FaultSlot::default(),
            now_hint: AtomicU64::new(now),
            notices: Notices::default(),
            options,
            path,
            db_path,
            wal_path,
            _dir: qdir,
        });
        let recovered = shared.write("recover", |tx| engine::recover(tx, now, &shared.options))?;
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

    fn enqueue_ops(&self, ops: Vec<Operation>, now: EpochMillis) -> Result<Vec<u64>> {
        let s = &self.shared;
        s.poison.check()?;
        let now = s.seen(now);
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        for op in &ops {
            engine::validate(op, s.options.max_payload)?;
        }
        match s.options.durability {
            Durability::GroupCommit { max_delay } => s.group_enqueue(ops, now, max_delay),
            Durability::Immediate | Durability::Relaxed => s.write("enqueue", |tx| {
                engine::check_enqueue(tx, &ops, &s.options)?;
                engine::enqueue(tx, &ops, now, &s.options)
            }),
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

    fn last_now(&self) -> EpochMillis {
        self.shared.hint()
    }

    fn enqueue(&self, op: Operation, now: EpochMillis) -> Result<u64> {
        let seqs = self.enqueue_ops(vec![op], now)?;
        seqs.first().copied().ok_or(StorageError::Io {
            context: "enqueue",
            source: io::Error::other("no sequence number returned"),
        })
    }

    fn enqueue_batch(&self, ops: Vec<Operation>, now: EpochMillis) -> Result<Vec<u64>> {
        self.enqueue_ops(ops, now)
    }

    fn claim_ready(&self, now: EpochMillis, limit: usize) -> Result<Vec<Claimed>> {
        let s = &self.shared;
        let now = s.seen(now);
        s.write_claim(|tx| engine::claim(tx, now, limit, &s.options))
    }

    fn complete(&self, completions: &[Completion], now: EpochMillis) -> Result<()> {
        let s = &self.shared;
        s.seen(now);
        if completions.is_empty() {
            return s.poison.check();
        }
        engine::check_completions(completions, &s.options)?;
        s.write("complete", |tx| {
            engine::complete(tx, completions, now, &s.options)
        })
    }

    fn revive(&self, id: OperationId, now: EpochMillis) -> Result<bool> {
        let s = &self.shared;
        s.seen(now);
        s.write("revive", |tx| engine::revive(tx, id, now, &s.options))
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
                        to_i64(base.min(engine::MAX_INSTANT / 2)),
                        to_i64(spread_ms.min(engine::MAX_INSTANT / 2)),
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

    fn repair(&self, fixed: Operation, now: EpochMillis) -> Result<bool> {
        let s = &self.shared;
        s.seen(now);
        s.write("repair", |tx| engine::repair(tx, &fixed, now, &s.options))
    }

    fn take_quarantine_notices(&self) -> Vec<QuarantineNotice> {
        self.shared.notices.take()
    }

    fn drop_op(&self, id: OperationId) -> Result<bool> {
        let s = &self.shared;
        s.write("drop", |tx| engine::drop_op(tx, id, &s.options))
    }

    fn drop_entity(&self, entity: &EntityKey) -> Result<u64> {
        let key = entity.to_key_bytes();
        self.shared
            .write("drop entity", |tx| engine::drop_entity(tx, &key))
    }

    fn pending(&self) -> Result<u64> {
        self.shared.poison.check()?;
        Ok(self.shared.lock_main().counters.pending())
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
        s.read(|tx| engine::count_blocked(tx, &mut stats, &s.options))?;
        Ok(stats)
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<StoredOperation>> {
        let s = &self.shared;
        let now = s.hint();
        s.write("list", |tx| engine::list(tx, filter, now, &s.options))
    }

    fn get(&self, id: OperationId) -> Result<Option<StoredOperation>> {
        let s = &self.shared;
        let now = s.hint();
        // A corrupt record is quarantined (committed) and then reported.
        let mut corrupt = None;
        let found = s.write("get", |tx| match engine::get(tx, id, now, &s.options) {
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
        s.write("recover", |tx| engine::recover(tx, now, &s.options))
    }

    fn next_wakeup(&self) -> Result<Option<EpochMillis>> {
        self.shared.read(|tx| tx.min_timed())
    }

    fn list_deferred(&self, page: &Page) -> Result<Vec<DeferredConflict>> {
        let s = &self.shared;
        let now = s.hint();
        s.write("list deferred", |tx| {
            engine::list_deferred(tx, page, now, &s.options)
        })
    }

    fn settle(&self, id: OperationId, resolution: Resolution, now: EpochMillis) -> Result<bool> {
        let s = &self.shared;
        s.seen(now);
        s.write("settle", |tx| {
            engine::settle(tx, id, &resolution, now, &s.options)
        })
    }

    fn log_conflict(&self, entry: &ConflictRecord) -> Result<u64> {
        let s = &self.shared;
        engine::check_conflict(entry, s.options.max_payload)?;
        let body = envelope::encode(RecordKind::Conflict, entry).map_err(StorageError::Encode)?;
        let cutoff = engine::conflict_cutoff(entry.resolved_at_ms, &s.options);
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
        let body_limit = engine::conflict_body_limit(s.options.max_payload);
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

    fn purge_quarantined(&self) -> Result<u64> {
        self.shared.write("purge quarantined", |tx| {
            tx.conn
                .execute("DELETE FROM quarantine", [])
                .map(|n| n as u64)
                .map_err(|e| classify(tx.path, "purge quarantined", e))
        })
    }

    fn load_clock_mark(&self) -> Result<Option<HlcTimestamp>> {
        self.shared.read(|tx| tx.clock_mark())
    }

    fn store_clock_mark(&self, mark: HlcTimestamp) -> Result<()> {
        let body = envelope::encode(RecordKind::Meta, &mark).map_err(StorageError::Encode)?;
        self.shared.write("store clock mark", |tx| {
            // A mark that no longer decodes is replaced: the clock restores
            // from the new one, which is what it would write anyway.
            if tx.clock_mark().ok().flatten().is_some_and(|m| m >= mark) {
                return Ok(());
            }
            tx.conn
                .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES ('clock_mark', ?1)")
                .and_then(|mut st| st.execute(params![body]))
                .map_err(|e| classify(tx.path, "store clock mark", e))?;
            Ok(())
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
            // Every commit was synced before it returned.
            Durability::Immediate | Durability::GroupCommit { .. } => Ok(()),
        }
    }
}

/// What the handle and the background thread share.
#[derive(Debug)]
struct Shared {
    main: Mutex<Main>,
    group: Group,
    bg: Mutex<BgState>,
    bg_cv: Condvar,
    poison: Poison,
    faults: FaultSlot,
    now_hint: AtomicU64,
    /// What committed transactions quarantined, until the worker asks.
    notices: Notices,
    options: QueueOptions,
    path: PathBuf,
    db_path: PathBuf,
    wal_path: PathBuf,
    // Last field: the directory lock is released only after the
    // connections above are closed.
    _dir: QueueDir,
}

#[derive(Debug)]
struct Main {
    conn: Connection,
    /// Committed counters; a transaction works on a copy.
    counters: Counters,
}

#[derive(Debug, Default)]
struct BgState {
    commits: u64,
    empty: bool,
    dirty: bool,
    stop: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected state is consistent between statements (SQLite rolls
    // back a transaction dropped by a panic), so a poisoned mutex is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn lock_main(&self) -> MutexGuard<'_, Main> {
        lock(&self.main)
    }

    fn seen(&self, now: EpochMillis) -> EpochMillis {
        self.now_hint.fetch_max(now, Ordering::Relaxed);
        now
    }

    fn hint(&self) -> EpochMillis {
        self.now_hint.load(Ordering::Relaxed)
    }

    /// Runs `f` in one IMMEDIATE transaction and commits it.
    fn write<R>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut SqlTx<'_>) -> Result<R>,
    ) -> Result<R> {
        self.poison.check()?;
        let mut main = self.lock_main();
        self.poison.check()?;
        let r = self.run(&mut main, context, f);
        drop(main);
        r
    }

    /// Runs a claim transaction: under `Immediate` and `GroupCommit` its
    /// commit is crash-safe but not fsynced (`synchronous=NORMAL` for this
    /// one transaction, `FULL` restored afterwards, on every path).
    ///
    /// The lease and the incremented attempt count are what "a crash while
    /// sending never resets an operation's retry history" protects; they
    /// survive a process crash (`kill -9`) because the WAL frames are in the
    /// OS page cache. Only an OS crash or power loss before the next durable
    /// commit can lose them, and then the operation is merely sent again
    /// with one fewer counted attempt, which at-least-once delivery already
    /// covers. No submitted data is at risk: enqueues and completions stay
    /// fsynced, and since the WAL is sequential the next `FULL` commit's
    /// fsync also makes the earlier claim frames durable. Under `Relaxed`
    /// every commit is `NORMAL` already.
    fn write_claim<R>(&self, f: impl FnOnce(&mut SqlTx<'_>) -> Result<R>) -> Result<R> {
        const CONTEXT: &str = "claim";
        if self.options.durability == Durability::Relaxed {
            return self.write(CONTEXT, f);
        }
        self.poison.check()?;
        let mut main = self.lock_main();
        self.poison.check()?;
        let set = |main: &Main, level: &str| {
            let r = main
                .conn
                .pragma_update(None, "synchronous", level)
                .map_err(|e| classify(&self.path, "set synchronous", e));
            // A connection left at NORMAL would acknowledge unsynced
            // enqueues: a failure to restore FULL must stop the handle.
            if r.is_err() {
                self.poison.set();
            }
            r
        };
        set(&main, "NORMAL")?;
        let r = self.run(&mut main, CONTEXT, f);
        let restored = set(&main, "FULL");
        drop(main);
        let v = r?;
        restored?;
        Ok(v)
    }

    /// Runs a read-only `f` (no commit needed, nothing written).
    fn read<R>(&self, f: impl FnOnce(&mut SqlTx<'_>) -> Result<R>) -> Result<R> {
        self.poison.check()?;
        let mut main = self.lock_main();
        let Main { conn, counters } = &mut *main;
        let mut copy = *counters;
        let limit = engine::body_limit(self.options.max_payload);
        let mut tx = SqlTx::new(conn, &self.path, &mut copy, limit);
        let r = f(&mut tx);
        self.poison_on_io(r)
    }

    fn run<R>(
        &self,
        main: &mut Main,
        context: &'static str,
        f: impl FnOnce(&mut SqlTx<'_>) -> Result<R>,
    ) -> Result<R> {
        let Main { conn, counters } = main;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&self.path, context, e));
        let tx = self.poison_on_io(tx)?;
        let mut next = *counters;
        let (r, notices) = {
            let limit = engine::body_limit(self.options.max_payload);
            let mut stx = SqlTx::new(&tx, &self.path, &mut next, limit);
            let r = f(&mut stx);
            let notices = std::mem::take(&mut stx.notices);
            let r = r.and_then(|v| {
                if next != *counters {
                    write_counters(&tx, &self.path, &next)?;
                }
                Ok(v)
            });
            (r, notices)
        };
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                // Dropping the transaction rolls it back.
                drop(tx);
                if salvage::is_row_damage(&e) && context != SALVAGE {
                    // One damaged row must not stall every call: park it
                    // (see `salvage`); this call fails, the next works.
                    self.salvage(main, context);
                }
                return self.poison_on_io(Err(e));
            }
        };
        if let Some(fault) = self.faults.take() {
            drop(tx);
            return Err(FaultSlot::error(fault, &self.poison));
        }
        let committed = tx.commit().map_err(|e| classify(&self.path, "commit", e));
        self.poison_on_io(committed)?;
        self.notices.extend(notices);
        let changed = next != *counters;
        *counters = next;
        if changed {
            self.after_commit(counters);
        }
        Ok(v)
    }

    /// Parks the rows whose bookkeeping no longer converts (see
    /// `salvage`). Not generic, so `run` calling it does not recurse
    /// through instantiations.
    fn salvage(&self, main: &mut Main, context: &'static str) {
        let now = self.hint();
        match self.run(main, SALVAGE, |tx| salvage::salvage(tx, now, &self.options)) {
            Ok(rows) => tracing::warn!(rows, context, "rows with damaged bookkeeping parked"),
            Err(e) => tracing::error!(error = %e, context, "salvaging damaged rows failed"),
        }
    }

    /// An I/O error inside a transaction poisons the handle: after a failed
    /// write or sync SQLite's view and the disk's may differ, and a retried
    /// fsync may "succeed" with the pages gone.
    fn poison_on_io<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(StorageError::Io { .. }) = &r {
            self.poison.set();
        }
        r
    }

    fn after_commit(&self, counters: &Counters) {
        let wake = {
            let mut bg = lock(&self.bg);
            bg.commits += 1;
            bg.dirty = true;
            let was_empty = bg.empty;
            bg.empty = counters.stored() == 0;
            (bg.empty && !was_empty) || bg.commits >= CHECKPOINT_AFTER_COMMITS
        };
        if wake {
            self.bg_cv.notify_all();
        }
    }

    /// fdatasyncs the WAL (Relaxed mode): everything committed so far
    /// becomes durable.
    fn sync_wal(&self) -> Result<()> {
        let r = match File::open(&self.wal_path) {
            Ok(f) => f.sync_data(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        r.map_err(|e| {
            self.poison.set();
            dir::io_error("sync wal", e)
        })
    }

    /// Group commit: the first writer to find no leader leads; it waits up
    /// to `max_delay` for as many writers as joined its previous group, then
    /// commits every queued request in one transaction and one sync.
    ///
    /// Each writer sleeps on its own slot and is woken once, with its
    /// result or with the leadership: with one shared condition variable
    /// every arrival and every hand-back woke all waiting writers, and
    /// with 64 writers on 2 cores those wake-ups cost more than the commit.
    fn group_enqueue(
        &self,
        ops: Vec<Operation>,
        now: EpochMillis,
        max_delay: Duration,
    ) -> Result<Vec<u64>> {
        let g = &self.group;
        let slot = Arc::new(Slot::default());
        let mut st = lock(&g.state);
        st.queue.push(Request {
            ops,
            now,
            slot: Arc::clone(&slot),
        });
        if st.leading {
            if st.leader_waiting {
                g.leader_cv.notify_one();
            }
            drop(st);
            match slot.wait() {
                Handed::Result(r) => return r,
                Handed::Lead => st = lock(&g.state),
            }
        } else {
            st.leading = true;
        }
        // Leading: `st.leading` is ours until it is handed on or cleared.
        loop {
            let deadline = Instant::now() + max_delay;
            let want = st.last_group.clamp(1, MAX_GROUP);
            while st.queue.len() < want {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                st.leader_waiting = true;
                st = g
                    .leader_cv
                    .wait_timeout(st, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                st.leader_waiting = false;
            }
            let take = st.queue.len().min(MAX_GROUP);
            let batch: Vec<Request> = st.queue.drain(..take).collect();
            st.last_group = batch.len();
            drop(st);
            let results = self.commit_group(&batch);
            let mut mine = None;
            for (req, r) in batch.into_iter().zip(results) {
                if Arc::ptr_eq(&req.slot, &slot) {
                    mine = Some(r);
                } else {
                    req.slot.hand(Handed::Result(r));
                }
            }
            st = lock(&g.state);
            // The leader's request is in its first group unless more than
            // MAX_GROUP were queued before it: then it leads on.
            if let Some(r) = mine {
                match st.queue.first() {
                    Some(next) => next.slot.hand(Handed::Lead),
                    None => st.leading = false,
                }
                return r;
            }
        }
    }

    /// Commits `batch` in one transaction; one result per request, in order.
    fn commit_group(&self, batch: &[Request]) -> Vec<Result<Vec<u64>>> {
        if let Err(e) = self.poison.check() {
            return batch.iter().map(|_| Err(replicate(&e))).collect();
        }
        let mut results: Vec<Result<Vec<u64>>> = Vec::with_capacity(batch.len());
        let mut main = self.lock_main();
        let outcome = self.run(&mut main, "group commit", |tx| {
            for req in batch {
                // Refusals (duplicate, size) are per request and happen
                // before any write; a failed write fails the whole group.
                match engine::check_enqueue(tx, &req.ops, &self.options) {
                    Ok(()) => {
                        let seqs = engine::enqueue(tx, &req.ops, req.now, &self.options)?;
                        results.push(Ok(seqs));
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
            Ok(())
        });
        drop(main);
        match outcome {
            Ok(()) => results,
            Err(e) => {
                let mut first = Some(e);
                batch
                    .iter()
                    .map(|_| {
                        Err(match first.take() {
                            Some(e) => e,
                            None if self.poison.is_set() => StorageError::Poisoned,
                            None => StorageError::Io {
                                context: "group commit",
                                source: io::Error::other("the group's commit failed"),
                            },
                        })
                    })
                    .collect()
            }
        }
    }
}

/// A copy of a commit failure for the other members of a failed group.
fn replicate(e: &StorageError) -> StorageError {
    match e {
        StorageError::Poisoned => StorageError::Poisoned,
        StorageError::StorageFull(src) => {
            StorageError::StorageFull(io::Error::new(io::ErrorKind::StorageFull, src.to_string()))
        }
        other => StorageError::Io {
            context: "group commit",
            source: io::Error::other(other.to_string()),
        },
    }
}

#[derive(Debug, Default)]
struct Group {
    state: Mutex<GroupState>,
    /// Wakes a leader waiting for its group to fill.
    leader_cv: Condvar,
}

#[derive(Debug, Default)]
struct GroupState {
    queue: Vec<Request>,
    leading: bool,
    leader_waiting: bool,
    last_group: usize,
}

#[derive(Debug)]
struct Request {
    ops: Vec<Operation>,
    now: EpochMillis,
    slot: Arc<Slot>,
}

/// What a waiting writer is woken with.
#[derive(Debug)]
enum Handed {
    /// Its request was committed (or refused).
    Result(Result<Vec<u64>>),
    /// It leads the next group (its request is first in the queue).
    Lead,
}

/// Where one waiting writer sleeps until it is handed something.
#[derive(Debug, Default)]
struct Slot {
    handed: Mutex<Option<Handed>>,
    cv: Condvar,
}

impl Slot {
    fn hand(&self, h: Handed) {
        *lock(&self.handed) = Some(h);
        self.cv.notify_one();
    }

    fn wait(&self) -> Handed {
        let mut handed = lock(&self.handed);
        loop {
            if let Some(h) = handed.take() {
                return h;
            }
            handed = self.cv.wait(handed).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The background thread: checkpoints (PASSIVE while there is work,
/// incremental vacuum + TRUNCATE once the queue is empty) and, under
/// `Relaxed`, the periodic WAL sync. It uses its own connection so a
/// checkpoint's copying and syncing never happens inside a commit.
fn background(shared: &Shared, conn: Connection) {
    let relaxed = shared.options.durability == Durability::Relaxed;
    let interval = if relaxed {
        CHECKPOINT_INTERVAL.min(RELAXED_SYNC_INTERVAL)
    } else {
        CHECKPOINT_INTERVAL
    };
    let mut last_sync = Instant::now();
    let mut vacuumed_empty = false;
    // The first pass comes at once, and counts as having commits to copy:
    // the previous process may have left frames in the WAL. It catches up
    // with the writer (see `checkpoint_busy`) whatever the WAL's length, so
    // the WAL restarts at the next commit even in a short life.
    let mut wait = FIRST_PASS_DELAY;
    let mut first_pass = true;
    lock(&shared.bg).commits += 1;
    loop {
        let (commits, empty, dirty) = {
            let mut bg = lock(&shared.bg);
            let work_waiting =
                bg.stop || bg.commits >= CHECKPOINT_AFTER_COMMITS || (bg.empty && !vacuumed_empty);
            if !work_waiting {
                bg = shared
                    .bg_cv
                    .wait_timeout(bg, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            wait = interval;
            if bg.stop {
                // A queue closed empty gives its space back now rather than
                // at the next open.
                let final_vacuum = bg.empty && !vacuumed_empty;
                drop(bg);
                if final_vacuum && !shared.poison.is_set() {
                    if let Err(e) = checkpoint_empty(&conn) {
                        let e = classify(&shared.path, "checkpoint", e);
                        tracing::warn!(error = %e, "final vacuum of an empty queue failed");
                    }
                }
                return;
            }
            let out = (bg.commits, bg.empty, bg.dirty);
            bg.commits = 0;
            if relaxed && last_sync.elapsed() >= RELAXED_SYNC_INTERVAL {
                bg.dirty = false;
            }
            out
        };
        if shared.poison.is_set() {
            continue;
        }
        if relaxed && dirty && last_sync.elapsed() >= RELAXED_SYNC_INTERVAL {
            last_sync = Instant::now();
            if let Err(e) = shared.sync_wal() {
                tracing::error!(error = %e, "relaxed wal sync failed");
                continue;
            }
        }
        if commits > 0 {
            vacuumed_empty = false;
        }
        let result = if empty && !vacuumed_empty {
            vacuumed_empty = true;
            checkpoint_empty(&conn)
        } else if commits > 0 {
            checkpoint_busy(shared, &conn, std::mem::take(&mut first_pass))
        } else {
            Ok(())
        };
        if let Err(e) = result {
            match classify(&shared.path, "checkpoint", e) {
                StorageError::Locked { .. } => {}
                StorageError::Io { .. } => {
                    tracing::error!("background checkpoint failed with an i/o error");
                    shared.poison.set();
                }
                other => tracing::warn!(error = %other, "background checkpoint failed"),
            }
        }
    }
}

/// Checkpoints and truncates a WAL the previous process left larger than
/// [`OPEN_CHECKPOINT_BYTES`] (copying it back is crash-safe: SQLite's
/// checkpoint protocol), so a loop of short-lived processes, each killed
/// before its background pass, cannot grow the WAL and the next open's
/// recovery without bound.
fn checkpoint_leftover_wal(conn: &Connection, dir: &Path, wal: &Path) -> Result<()> {
    let len = match std::fs::metadata(wal) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(dir::io_error("inspect wal", e)),
    };
    if len <= OPEN_CHECKPOINT_BYTES {
        return Ok(());
    }
    let started = Instant::now();
    let (frames, copied) =
        wal_checkpoint(conn, "TRUNCATE").map_err(|e| classify(dir, "checkpoint at open", e))?;
    tracing::debug!(
        wal_bytes = len,
        frames,
        copied,
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "leftover WAL checkpointed at open"
    );
    Ok(())
}

/// `PRAGMA wal_checkpoint(mode)`: (frames in the WAL, frames copied).
fn wal_checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// A PASSIVE checkpoint copies the frames that were in the WAL when it
/// started while the writer keeps appending, and the WAL is restarted from
/// its beginning only by a write that begins when every frame has been
/// copied. Under a steady stream of commits that moment never comes: the
/// WAL grew to 9.3 GB while draining 1,000,000 ops, and every commit that
/// extends the file pays for a file-system metadata sync on top of its
/// fdatasync. So once a pass has copied [`CATCH_UP_FRAMES`] or more, the
/// few frames appended meanwhile are copied with the writer held off (the
/// main mutex): one short pause for the writer every
/// `CATCH_UP_FRAMES` pages written (and once after open: `catch_up`),
/// after which the next commit restarts the WAL and reuses its
/// already-allocated blocks.
fn checkpoint_busy(shared: &Shared, conn: &Connection, catch_up: bool) -> rusqlite::Result<()> {
    let (log, _) = wal_checkpoint(conn, "PASSIVE")?;
    if catch_up {
        // After open: also cut the file the previous process left back to
        // nothing, so a crash loop does not keep a WAL of its high-water
        // mark beside a small database.
        let _writer = shared.lock_main();
        wal_checkpoint(conn, "TRUNCATE")?;
    } else if log >= CATCH_UP_FRAMES {
        let _writer = shared.lock_main();
        wal_checkpoint(conn, "PASSIVE")?;
    }
    // Return space while draining once a quarter of the file is free.
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    if free >= VACUUM_STEP_PAGES && free * 4 >= pages {
        incremental_vacuum(conn, Some(VACUUM_STEP_PAGES))?;
    }
    Ok(())
}

/// Runs `PRAGMA incremental_vacuum` to completion: it frees one page per
/// step, so a single step (as `execute_batch` does) returns one page only.
fn incremental_vacuum(conn: &Connection, pages: Option<i64>) -> rusqlite::Result<()> {
    let sql = match pages {
        Some(n) => format!("PRAGMA incremental_vacuum({n})"),
        None => "PRAGMA incremental_vacuum".to_owned(),
    };
    let mut st = conn.prepare(&sql)?;
    let mut rows = st.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

fn checkpoint_empty(conn: &Connection) -> rusqlite::Result<()> {
    incremental_vacuum(conn, None)?;
    wal_checkpoint(conn, "TRUNCATE")?;
    Ok(())
}

/// Creates a new database file with mode 0600 before SQLite opens it
/// (SQLite gives the WAL and shared-memory files the database file's mode),
/// and brings the files of an existing store to 0600.
fn make_files_private(dir: &Path, db_path: &Path, create: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if create {
        dir::create_private(db_path).map_err(|e| dir::io_error("create database", e))?;
        return dir::sync_dir(dir);
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.join(format!("{DB_FILE}{suffix}"));
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(dir::io_error("restrict database file", e)),
        }
    }
    Ok(())
}

fn open_connection(dir: &Path, db_path: &Path, options: &QueueOptions) -> Result<Connection> {
    let durability = options.durability;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db_path, flags).map_err(|e| classify(dir, "open", e))?;
    let err = |e| classify(dir, "configure", e);
    // Read before any pragma writes: a newer store is refused untouched.
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::NotADatabase => {
                StorageError::Format {
                    path: dir.to_path_buf(),
                    reason: format!("{DB_FILE} is not an SQLite database"),
                }
            }
            e => err(e),
        })?;
    if version != 0 && version < i64::from(OLDEST_READABLE) {
        return Err(StorageError::Format {
            path: dir.to_path_buf(),
            reason: format!(
                "the database is format version {version}; this build opens \
                 {OLDEST_READABLE} to {FORMAT_VERSION}, and there is no migration"
            ),
        });
    }
    if version > i64::from(FORMAT_VERSION) {
        return Err(StorageError::Format {
            path: dir.to_path_buf(),
            reason: format!(
                "the database is format version {version}, newer than this build's {FORMAT_VERSION}"
            ),
        });
    }
    conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
    // Every pragma that writes costs a sync: an existing store (already
    // WAL, already incremental) is opened with reads only.
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(err)?;
    if pages == 0 {
        // Must precede the first table: auto_vacuum is fixed at creation.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(err)?;
    }
    let mut mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        mode = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err)?;
    }
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Format {
            path: dir.to_path_buf(),
            reason: format!("could not switch the database to WAL (journal mode {mode})"),
        });
    }
    let sync = match durability {
        Durability::Relaxed => "NORMAL",
        Durability::Immediate | Durability::GroupCommit { .. } => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(err)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(err)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(err)?;
    // Deleted content (acknowledged payloads) is overwritten, not left in
    // free pages and the WAL for anyone who copies the file.
    conn.pragma_update(None, "secure_delete", options.secure_delete)
        .map_err(err)?;
    // On Apple platforms fsync only reaches the drive's cache; F_FULLFSYNC
    // is what makes a commit survive power loss there. Not exercised here
    // (no Apple machine in CI); see durability.md.
    #[cfg(target_vendor = "apple")]
    {
        conn.pragma_update(None, "fullfsync", true).map_err(err)?;
        conn.pragma_update(None, "checkpoint_fullfsync", true)
            .map_err(err)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entities (
    eid INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY,
    eid INTEGER NOT NULL,
    nxt INTEGER,
    id BLOB NOT NULL,
    priority INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    payload_len INTEGER NOT NULL,
    remote BLOB,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS ops_id ON ops(id);
CREATE TABLE IF NOT EXISTS hot (
    seq INTEGER PRIMARY KEY,
    state INTEGER NOT NULL,
    wake_at INTEGER,
    ready_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    dead_reason TEXT,
    hk INTEGER,
    eff INTEGER,
    aging INTEGER
);
CREATE INDEX IF NOT EXISTS hot_due ON hot(eff DESC, seq) WHERE hk = 0;
CREATE INDEX IF NOT EXISTS hot_timed ON hot(wake_at, seq) WHERE hk = 1;
CREATE INDEX IF NOT EXISTS hot_aging ON hot(ready_at, seq) WHERE hk = 0 AND aging = 1;
CREATE INDEX IF NOT EXISTS hot_in_flight ON hot(wake_at, seq) WHERE state = 1;
CREATE INDEX IF NOT EXISTS hot_parked ON hot(state, seq) WHERE state >= 3;
CREATE TABLE IF NOT EXISTS counters (
    k INTEGER PRIMARY KEY CHECK (k = 0),
    ready INTEGER NOT NULL, in_flight INTEGER NOT NULL, waiting INTEGER NOT NULL,
    dead INTEGER NOT NULL, deferred INTEGER NOT NULL,
    p0 INTEGER NOT NULL, p1 INTEGER NOT NULL, p2 INTEGER NOT NULL, p3 INTEGER NOT NULL,
    bytes INTEGER NOT NULL, next_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters VALUES (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);
CREATE TABLE IF NOT EXISTS conflicts (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    resolved_at INTEGER NOT NULL,
    entity BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS conflicts_at ON conflicts(resolved_at);
CREATE TABLE IF NOT EXISTS quarantine (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw BLOB NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
";

fn init_schema(conn: &Connection, dir: &Path) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| classify(dir, "read schema version", e))?;
    if version == i64::from(FORMAT_VERSION) {
        return Ok(());
    }
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {FORMAT_VERSION}; COMMIT;"
    ))
    .map_err(|e| classify(dir, "create schema", e))
}

fn load_counters(conn: &Connection, dir: &Path) -> Result<Counters> {
    conn.query_row(
        "SELECT ready, in_flight, waiting, dead, deferred, p0, p1, p2, p3, bytes, next_seq \
         FROM counters WHERE k = 0",
        [],
        |r| {
            Ok(Counters {
                ready: to_u64(r.get(0)?),
                in_flight: to_u64(r.get(1)?),
                waiting: to_u64(r.get(2)?),
                dead: to_u64(r.get(3)?),
                deferred: to_u64(r.get(4)?),
                pending_by_priority: [
                    to_u64(r.get(5)?),
                    to_u64(r.get(6)?),
                    to_u64(r.get(7)?),
                    to_u64(r.get(8)?),
                ],
                pending_bytes: to_u64(r.get(9)?),
                next_seq: to_u64(r.get(10)?),
            })
        },
    )
    .map_err(|e| classify(dir, "load counters", e))
}

fn write_counters(conn: &Connection, dir: &Path, c: &Counters) -> Result<()> {
    conn.prepare_cached(
        "UPDATE counters SET ready = ?1, in_flight = ?2, waiting = ?3, dead = ?4, deferred = ?5, \
         p0 = ?6, p1 = ?7, p2 = ?8, p3 = ?9, bytes = ?10, next_seq = ?11 WHERE k = 0",
    )
    .and_then(|mut st| {
        st.execute(params![
            to_i64(c.ready),
            to_i64(c.in_flight),
            to_i64(c.waiting),
            to_i64(c.dead),
            to_i64(c.deferred),
            to_i64(c.pending_by_priority[0]),
            to_i64(c.pending_by_priority[1]),
            to_i64(c.pending_by_priority[2]),
            to_i64(c.pending_by_priority[3]),
            to_i64(c.pending_bytes),
            to_i64(c.next_seq),
        ])
    })
    .map(drop)
    .map_err(|e| classify(dir, "write counters", e))
}

/// Maps a SQLite error: full disk → `StorageFull`, busy/locked → `Locked`,
/// I/O failure → `Io` (which poisons the handle inside a transaction).
fn classify(dir: &Path, context: &'static str, e: rusqlite::Error) -> StorageError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.code {
            ErrorCode::DiskFull => {
                return StorageError::StorageFull(io::Error::new(io::ErrorKind::StorageFull, e))
            }
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return StorageError::Locked {
                    path: dir.to_path_buf(),
                }
            }
            ErrorCode::SystemIoFailure => {
                return StorageError::Io {
                    context,
                    source: io::Error::other(e),
                }
            }
            _ => {}
        }
    }
    StorageError::Sqlite {
        context,
        source: Box::new(e),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Bodies at least this large are written into their row through SQLite's
/// incremental blob I/O, which copies them into pages directly, instead of
/// being bound as a value, which first builds a whole record in memory.
const LARGE_BODY: usize = 64 * 1024;
// `SQL_DUE` spells it out as a literal.
const _: () = assert!(LARGE_BODY == 65536);

/// The context of the salvage transaction (never salvaged again itself).
const SALVAGE: &str = "salvage";

const STATE_READY: i64 = 0;
const STATE_IN_FLIGHT: i64 = 1;
const STATE_WAITING: i64 = 2;
const STATE_DEAD: i64 = 3;
const STATE_DEFERRED: i64 = 4;

/// The columns `read_row` expects, over `ops o`, `entities e` and the
/// (possibly absent: LEFT JOIN) `hot h` row of an operation.
macro_rules! meta_cols {
    () => {
        "o.seq, o.id, e.key, o.priority, h.state, h.wake_at, h.ready_at, o.enqueued_at, \
         h.attempts, h.last_error, h.dead_reason, o.payload_len, h.hk, h.eff, h.aging, o.nxt"
    };
}

/// Operations by a condition on their own row (`o`), with their hot row if any.
macro_rules! from_ops {
    () => {
        " FROM ops o CROSS JOIN entities e ON e.eid = o.eid LEFT JOIN hot h ON h.seq = o.seq "
    };
}

/// Operations by a condition on their hot row (`h`): heads, leases, parked.
macro_rules! from_hot {
    () => {
        " FROM hot h CROSS JOIN ops o ON o.seq = h.seq CROSS JOIN entities e ON e.eid = o.eid "
    };
}

mod salvage;

// The statements of the claim and completion paths (checked for index use
// by `tests::hot_paths_use_indexes`).
/// One operation by id.
/// One operation by id, with its entity's row (columns 16–18), which the
/// acknowledgement that usually follows unlinks it from.
const SQL_BY_ID: &str = concat!(
    "SELECT ",
    meta_cols!(),
    ", e.eid, e.first, e.last",
    from_ops!(),
    "WHERE o.id = ?1"
);
/// One operation by seq when its entity's key (`?2`) is known: no
/// entity look-up.
const SQL_BY_SEQ_IN: &str =
    "SELECT o.seq, o.id, ?2, o.priority, h.state, h.wake_at, h.ready_at, o.enqueued_at, \
     h.attempts, h.last_error, h.dead_reason, o.payload_len, h.hk, h.eff, h.aging, o.nxt \
     FROM ops o LEFT JOIN hot h ON h.seq = o.seq WHERE o.seq = ?1";
/// Due heads, claim order, with their bodies (column 16: the claim loads
/// every one of them).
const SQL_DUE: &str = concat!(
    "SELECT ",
    meta_cols!(),
    // Large bodies (LARGE_BODY, 64 KiB) are read apart, through blob I/O.
    ", CASE WHEN length(o.body) < 65536 THEN o.body END",
    from_hot!(),
    "WHERE h.hk = 0 ORDER BY h.eff DESC, h.seq LIMIT ?1"
);
/// Timed heads that are due.
const SQL_TIMED: &str = concat!(
    "SELECT ",
    meta_cols!(),
    from_hot!(),
    "WHERE h.hk = 1 AND h.wake_at <= ?1 ORDER BY h.wake_at, h.seq LIMIT ?2"
);
/// Due heads old enough to be promoted.
const SQL_AGING: &str = concat!(
    "SELECT ",
    meta_cols!(),
    from_hot!(),
    "WHERE h.hk = 0 AND h.aging = 1 AND h.ready_at <= ?1 \
                 ORDER BY h.ready_at, h.seq LIMIT ?2"
);
/// Ended leases.
const SQL_EXPIRED: &str = concat!(
    "SELECT ",
    meta_cols!(),
    from_hot!(),
    "WHERE h.state = 1 AND h.wake_at <= ?1 ORDER BY h.wake_at, h.seq"
);
/// An entity's row by key.
const SQL_ENTITY: &str = "SELECT eid, first, last FROM entities WHERE key = ?1";

/// Whether an operation needs a `hot` row: anything but a fresh, unmarked,
/// ready operation does. Fresh non-head operations (the bulk of a backlog)
/// have none, so claiming and acknowledging write only the small `hot`
/// table and the acknowledged rows, never the rows of waiting operations.
fn needs_hot(m: &OpMeta) -> bool {
    m.head.is_some()
        || m.state != OpState::Ready
        || m.attempts != 0
        || m.last_error.is_some()
        || m.ready_at != m.enqueued_at
}

/// The `hot` columns of one `OpMeta`.
struct HotRow {
    state: i64,
    wake_at: Option<i64>,
    dead_reason: Option<String>,
    hk: Option<i64>,
    eff: Option<i64>,
    aging: Option<i64>,
}

fn hot_row(m: &OpMeta) -> HotRow {
    let (state, wake_at, dead_reason) = match &m.state {
        OpState::Ready => (STATE_READY, None, None),
        OpState::InFlight { lease_until } => (STATE_IN_FLIGHT, Some(to_i64(*lease_until)), None),
        OpState::Waiting { until } => (STATE_WAITING, Some(to_i64(*until)), None),
        OpState::Dead { reason } => (STATE_DEAD, None, Some(reason.clone())),
        OpState::Deferred => (STATE_DEFERRED, None, None),
    };
    let (hk, eff, aging) = match m.head {
        None => (None, None, None),
        Some(Head::Due { eff, aging }) => {
            (Some(0), Some(i64::from(eff.rank())), Some(i64::from(aging)))
        }
        Some(Head::Timed) => (Some(1), None, None),
        Some(Head::Blocked) => (Some(2), None, None),
    };
    HotRow {
        state,
        wake_at,
        dead_reason,
        hk,
        eff,
        aging,
    }
}

fn bad(idx: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Integer, what.to_owned().into())
}

/// One operation's bookkeeping and the link to the next operation of its
/// entity.
struct MetaLink {
    meta: OpMeta,
    next: Option<u64>,
}

fn read_row(r: &Row<'_>) -> rusqlite::Result<MetaLink> {
    let id: Vec<u8> = r.get(1)?;
    let id: [u8; 16] = id.try_into().map_err(|_| bad(1, "id is not 16 bytes"))?;
    let priority: i64 = r.get(3)?;
    let priority = u8::try_from(priority)
        .ok()
        .and_then(OperationPriority::from_rank)
        .ok_or_else(|| bad(3, "priority out of range"))?;
    let enqueued_at = to_u64(r.get(7)?);
    let wake_at: Option<i64> = r.get(5)?;
    let wake = || {
        wake_at
            .map(to_u64)
            .ok_or_else(|| bad(5, "missing wake time"))
    };
    // No hot row: a fresh ready operation, not a head.
    let state = match r.get::<_, Option<i64>>(4)? {
        None | Some(STATE_READY) => OpState::Ready,
        Some(STATE_IN_FLIGHT) => OpState::InFlight {
            lease_until: wake()?,
        },
        Some(STATE_WAITING) => OpState::Waiting { until: wake()? },
        Some(STATE_DEAD) => OpState::Dead {
            reason: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
        },
        Some(STATE_DEFERRED) => OpState::Deferred,
        Some(_) => return Err(bad(4, "state out of range")),
    };
    let head = match r.get::<_, Option<i64>>(12)? {
        None => None,
        Some(0) => {
            let eff: i64 = r
                .get::<_, Option<i64>>(13)?
                .unwrap_or(priority.rank().into());
            let eff = u8::try_from(eff)
                .ok()
                .and_then(OperationPriority::from_rank)
                .ok_or_else(|| bad(13, "effective priority out of range"))?;
            Some(Head::Due {
                eff,
                aging: r.get::<_, Option<i64>>(14)?.unwrap_or(0) != 0,
            })
        }
        Some(1) => Some(Head::Timed),
        Some(2) => Some(Head::Blocked),
        Some(_) => return Err(bad(12, "head kind out of range")),
    };
    let meta = OpMeta {
        seq: to_u64(r.get(0)?),
        id: OperationId::from_be_bytes(id),
        entity: r.get(2)?,
        priority,
        state,
        ready_at: r.get::<_, Option<i64>>(6)?.map_or(enqueued_at, to_u64),
        enqueued_at,
        attempts: r
            .get::<_, Option<i64>>(8)?
            .map_or(0, |a| u32::try_from(a).unwrap_or(u32::MAX)),
        last_error: r.get(9)?,
        payload_len: to_u64(r.get(11)?),
        head,
    };
    let next = r.get::<_, Option<i64>>(15)?.map(to_u64);
    Ok(MetaLink { meta, next })
}

fn read_meta(r: &Row<'_>) -> rusqlite::Result<OpMeta> {
    read_row(r).map(|m| m.meta)
}

/// An entity's row: its interned id and the ends of its operation chain.
#[derive(Clone, Copy)]
struct EntityRow {
    eid: i64,
    first: u64,
    last: u64,
}

/// The engine's table interface over one SQLite transaction.
///
/// Layout (format 3; format 2 differs only in its bodies):
/// - `entities`: one row per entity with queued operations, interning its
///   key as a small integer `eid` and holding the ends (`first`, `last`)
///   of the chain of its operations in `seq` order;
/// - `ops`: the operations (rowid = `seq`), immutable but for the link
///   `nxt` to the entity's next operation, the deferred remote record and
///   a replaced body; `ops_id` finds one by id;
/// - `hot`: the mutable bookkeeping (state, lease, attempts, errors, head
///   mark) of the operations that have any (see [`needs_hot`]), with the
///   partial indexes the claim path reads.
///
/// So the entity FIFO needs no index over all operations: the head of an
/// entity is `entities.first`, the next one `ops.nxt`, and acknowledging a
/// head touches its own row, its entity's row and the new head's `hot` row.
struct SqlTx<'c> {
    conn: &'c Connection,
    path: &'c Path,
    counters: &'c mut Counters,
    /// The last entity row read or written by key in this transaction
    /// (`None` inside: no such entity): an enqueue asks for its entity's
    /// head and then appends to it, an acknowledgement unlinks its head
    /// and then looks for the next one, each time by the same key.
    entity: Option<(Vec<u8>, Option<EntityRow>)>,
    /// Bodies read with the last `due_heads`, by seq, for the claim's
    /// `load_op` calls that follow.
    bodies: Vec<(u64, Vec<u8>)>,
    /// Largest record body decoded ([`engine::body_limit`] of the store's
    /// `max_payload`).
    body_limit: u32,
    notices: Vec<QuarantineNotice>,
}

impl<'c> SqlTx<'c> {
    fn new(
        conn: &'c Connection,
        path: &'c Path,
        counters: &'c mut Counters,
        body_limit: u32,
    ) -> Self {
        SqlTx {
            conn,
            path,
            counters,
            entity: None,
            bodies: Vec::new(),
            body_limit,
            notices: Vec::new(),
        }
    }

    fn remember_entity(&mut self, key: &[u8], row: Option<EntityRow>) {
        match &mut self.entity {
            Some((k, r)) if k.as_slice() == key => *r = row,
            slot => *slot = Some((key.to_vec(), row)),
        }
    }

    fn err(&self, context: &'static str) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
        move |e| classify(self.path, context, e)
    }

    fn metas(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        context: &'static str,
    ) -> Result<Vec<OpMeta>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| st.query_map(params, read_meta)?.collect())
            .map_err(self.err(context))
    }

    /// One operation of the entity `key` by seq, with its link.
    fn link_in(&self, key: &[u8], seq: u64) -> Result<Option<MetaLink>> {
        self.conn
            .prepare_cached(SQL_BY_SEQ_IN)
            .and_then(|mut st| st.query_row(params![to_i64(seq), key], read_row).optional())
            .map_err(self.err("find operation"))
    }

    fn entity_row(&mut self, key: &[u8]) -> Result<Option<EntityRow>> {
        if let Some((k, row)) = &self.entity {
            if k.as_slice() == key {
                return Ok(*row);
            }
        }
        let row = self.read_entity_row(key)?;
        self.remember_entity(key, row);
        Ok(row)
    }

    fn read_entity_row(&self, key: &[u8]) -> Result<Option<EntityRow>> {
        self.conn
            .prepare_cached(SQL_ENTITY)
            .and_then(|mut st| {
                st.query_row(params![key], |r| {
                    Ok(EntityRow {
                        eid: r.get(0)?,
                        first: to_u64(r.get(1)?),
                        last: to_u64(r.get(2)?),
                    })
                })
                .optional()
            })
            .map_err(self.err("find entity"))
    }

    /// The link of operation `seq` (`Err` if it does not exist: the chain
    /// of its entity is broken).
    fn next_of(&self, seq: u64) -> Result<Option<u64>> {
        let next: Option<Option<i64>> = self
            .conn
            .prepare_cached("SELECT nxt FROM ops WHERE seq = ?1")
            .and_then(|mut st| st.query_row(params![to_i64(seq)], |r| r.get(0)).optional())
            .map_err(self.err("follow entity chain"))?;
        match next {
            Some(n) => Ok(n.map(to_u64)),
            None => Err(broken_chain(seq)),
        }
    }

    fn set_next(&self, seq: u64, next: Option<u64>) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE ops SET nxt = ?2 WHERE seq = ?1")
            .and_then(|mut st| st.execute(params![to_i64(seq), next.map(to_i64)]))
            .map(drop)
            .map_err(self.err("link operation"))
    }

    /// Takes operation `seq` (whose link is `next`) out of its entity's
    /// chain, deleting the entity row when it was the last operation.
    /// O(1) for the entity's oldest operation; a later one walks the chain
    /// from the oldest to find its predecessor.
    fn unlink(&mut self, key: &[u8], eid: i64, seq: u64, next: Option<u64>) -> Result<()> {
        let path = self.path;
        let cached = match &self.entity {
            Some((k, Some(row))) if k.as_slice() == key && row.eid == eid => Some(*row),
            _ => None,
        };
        let row = match cached {
            Some(row) => row,
            None => {
                let ends: Option<(i64, i64)> = self
                    .conn
                    .prepare_cached("SELECT first, last FROM entities WHERE eid = ?1")
                    .and_then(|mut st| {
                        st.query_row(params![eid], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                    })
                    .map_err(|e| classify(path, "find entity", e))?;
                let Some((first, last)) = ends else {
                    return Err(broken_chain(seq));
                };
                EntityRow {
                    eid,
                    first: to_u64(first),
                    last: to_u64(last),
                }
            }
        };
        let err = |e| classify(path, "unlink operation", e);
        if row.first == seq {
            let after = match next {
                None => {
                    self.conn
                        .prepare_cached("DELETE FROM entities WHERE eid = ?1")
                        .and_then(|mut st| st.execute(params![eid]))
                        .map_err(err)?;
                    None
                }
                Some(n) => {
                    self.conn
                        .prepare_cached("UPDATE entities SET first = ?2 WHERE eid = ?1")
                        .and_then(|mut st| st.execute(params![eid, to_i64(n)]))
                        .map_err(err)?;
                    Some(EntityRow { first: n, ..row })
                }
            };
            self.remember_entity(key, after);
            return Ok(());
        }
        let mut prev = row.first;
        loop {
            match self.next_of(prev)? {
                Some(n) if n == seq => break,
                Some(n) if n < seq => prev = n,
                _ => return Err(broken_chain(seq)),
            }
        }
        self.set_next(prev, next)?;
        let mut last = row.last;
        if last == seq {
            self.conn
                .prepare_cached("UPDATE entities SET last = ?2 WHERE eid = ?1")
                .and_then(|mut st| st.execute(params![eid, to_i64(prev)]))
                .map_err(err)?;
            last = prev;
        }
        self.remember_entity(key, Some(EntityRow { last, ..row }));
        Ok(())
    }

    fn write_hot(&self, m: &OpMeta) -> Result<()> {
        let err = self.err("update operation");
        if !needs_hot(m) {
            return self
                .conn
                .prepare_cached("DELETE FROM hot WHERE seq = ?1")
                .and_then(|mut st| st.execute(params![to_i64(m.seq)]))
                .map(drop)
                .map_err(err);
        }
        let row = hot_row(m);
        self.conn
            .prepare_cached(
                // An upsert, not INSERT OR REPLACE: a replace deletes and
                // re-inserts the row in every index, an update touches only
                // the indexes whose columns changed.
                "INSERT INTO hot (seq, state, wake_at, ready_at, attempts, \
                 last_error, dead_reason, hk, eff, aging) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (seq) DO UPDATE SET state = ?2, wake_at = ?3, ready_at = ?4, \
                 attempts = ?5, last_error = ?6, dead_reason = ?7, hk = ?8, eff = ?9, aging = ?10",
            )
            .and_then(|mut st| {
                st.execute(params![
                    to_i64(m.seq),
                    row.state,
                    row.wake_at,
                    to_i64(m.ready_at),
                    i64::from(m.attempts),
                    m.last_error,
                    row.dead_reason,
                    row.hk,
                    row.eff,
                    row.aging,
                ])
            })
            .map(drop)
            .map_err(err)
    }

    fn blob(&self, sql: &str, seq: u64, context: &'static str) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| {
                st.query_row(params![to_i64(seq)], |r| r.get::<_, Option<Vec<u8>>>(0))
                    .optional()
            })
            .map(Option::flatten)
            .map_err(self.err(context))
    }

    fn quarantine_row(&self, key: &str, reason: &str, raw: &[u8], at: EpochMillis) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO quarantine (key, reason, raw, at) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut st| st.execute(params![key, reason, raw, to_i64(at)]))
            .map(drop)
            .map_err(self.err("quarantine"))
    }

    fn clock_mark(&self) -> Result<Option<HlcTimestamp>> {
        let raw: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT v FROM meta WHERE k = 'clock_mark'")
            .and_then(|mut st| st.query_row([], |r| r.get(0)).optional())
            .map_err(self.err("load clock mark"))?;
        raw.map(|raw| {
            envelope::decode(RecordKind::Meta, &raw, 1024).map_err(|source| StorageError::Corrupt {
                key: "meta/clock_mark".into(),
                source,
            })
        })
        .transpose()
    }
}

/// The chain of an entity's operations does not hold together.
fn broken_chain(seq: u64) -> StorageError {
    StorageError::Corrupt {
        key: engine::record_key(seq),
        source: cpc_core::EnvelopeError::Malformed("the entity's operation chain is broken".into()),
    }
}

impl Tx for SqlTx<'_> {
    fn meta_by_id(&mut self, id: OperationId) -> Result<Option<OpMeta>> {
        let found = self
            .conn
            .prepare_cached(SQL_BY_ID)
            .and_then(|mut st| {
                st.query_row(params![id.to_be_bytes().as_slice()], |r| {
                    let row = EntityRow {
                        eid: r.get(16)?,
                        first: to_u64(r.get(17)?),
                        last: to_u64(r.get(18)?),
                    };
                    Ok((read_meta(r)?, row))
                })
                .optional()
            })
            .map_err(self.err("find operation"))?;
        Ok(found.map(|(meta, row)| {
            self.remember_entity(&meta.entity, Some(row));
            meta
        }))
    }

    fn contains_id(&mut self, id: OperationId) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM ops WHERE id = ?1)")
            .and_then(|mut st| st.query_row(params![id.to_be_bytes().as_slice()], |r| r.get(0)))
            .map_err(self.err("find operation"))
    }

    fn has_head(&mut self, entity: &[u8], skip_dead: bool) -> Result<bool> {
        if skip_dead {
            return Ok(self.first_in_entity(entity, true)?.is_some());
        }
        // Every stored operation is in its entity's chain.
        Ok(self.entity_row(entity)?.is_some())
    }

    fn first_in_entity(&mut self, entity: &[u8], skip_dead: bool) -> Result<Option<OpMeta>> {
        let Some(row) = self.entity_row(entity)? else {
            return Ok(None);
        };
        let mut seq = row.first;
        loop {
            let Some(link) = self.link_in(entity, seq)? else {
                return Err(broken_chain(seq));
            };
            if !(skip_dead && matches!(link.meta.state, OpState::Dead { .. })) {
                return Ok(Some(link.meta));
            }
            match link.next {
                Some(n) if n > seq => seq = n,
                Some(_) => return Err(broken_chain(seq)),
                None => return Ok(None),
            }
        }
    }

    fn list_metas(&mut self, f: MetaFilter<'_>) -> Result<Vec<OpMeta>> {
        let limit = f.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        // seqs start at 1: 0 means no cursor.
        let after = f.after.map_or(0, to_i64);
        if f.deferred_only {
            return self.metas(
                concat!(
                    "SELECT ",
                    meta_cols!(),
                    from_hot!(),
                    "WHERE h.state >= 3 AND h.state = 4 AND h.seq > ?2 ORDER BY h.seq LIMIT ?1"
                ),
                params![limit, after],
                "list deferred",
            );
        }
        let dead = f.dead.map(i64::from);
        match (f.entity, f.dead) {
            (Some(entity), _) => {
                // Walk the entity's chain (seq order).
                let mut out = Vec::new();
                let Some(row) = self.entity_row(entity)? else {
                    return Ok(out);
                };
                let max = f.limit.unwrap_or(usize::MAX);
                let mut next = Some(row.first);
                while let Some(seq) = next {
                    if out.len() >= max {
                        break;
                    }
                    let Some(link) = self.link_in(entity, seq)? else {
                        return Err(broken_chain(seq));
                    };
                    next = match link.next {
                        Some(n) if n > seq => Some(n),
                        Some(_) => return Err(broken_chain(seq)),
                        None => None,
                    };
                    let is_dead = matches!(link.meta.state, OpState::Dead { .. });
                    if f.dead.is_none_or(|d| d == is_dead) && f.after.is_none_or(|a| seq > a) {
                        out.push(link.meta);
                    }
                }
                Ok(out)
            }
            (None, Some(true)) => self.metas(
                concat!(
                    "SELECT ",
                    meta_cols!(),
                    from_hot!(),
                    "WHERE h.state >= 3 AND h.state = 3 AND h.seq > ?2 ORDER BY h.seq LIMIT ?1"
                ),
                params![limit, after],
                "list",
            ),
            (None, _) => self.metas(
                concat!(
                    "SELECT ",
                    meta_cols!(),
                    from_ops!(),
                    "WHERE o.seq > ?3 AND (?1 IS NULL OR (COALESCE(h.state, 0) = 3) = ?1) \
                     ORDER BY o.seq LIMIT ?2"
                ),
                params![dead, limit, after],
                "list",
            ),
        }
    }

    fn insert(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        let body = compact::encode(op)?;
        let path = self.path;
        let err = |e| classify(path, "insert operation", e);
        let seq = to_i64(meta.seq);
        let row = match self.entity_row(&meta.entity)? {
            Some(row) => {
                if row.last >= meta.seq {
                    return Err(broken_chain(row.last));
                }
                self.set_next(row.last, Some(meta.seq))?;
                self.conn
                    .prepare_cached("UPDATE entities SET last = ?2 WHERE eid = ?1")
                    .and_then(|mut st| st.execute(params![row.eid, seq]))
                    .map_err(err)?;
                EntityRow {
                    last: meta.seq,
                    ..row
                }
            }
            None => EntityRow {
                eid: self
                    .conn
                    .prepare_cached("INSERT INTO entities (key, first, last) VALUES (?1, ?2, ?2)")
                    .and_then(|mut st| st.insert(params![meta.entity, seq]))
                    .map_err(err)?,
                first: meta.seq,
                last: meta.seq,
            },
        };
        self.remember_entity(&meta.entity, Some(row));
        let eid = row.eid;
        self.conn
            .prepare_cached(
                "INSERT INTO ops (seq, eid, nxt, id, priority, enqueued_at, payload_len, \
                 remote, body) VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6, NULL, ?7)",
            )
            .and_then(|mut st| {
                // A large body is written into its row in place (below):
                // bound as a value, SQLite would first copy it whole into
                // a record of its own.
                let large = body.len() >= LARGE_BODY;
                let zero = rusqlite::blob::ZeroBlob(i32::try_from(body.len()).unwrap_or(i32::MAX));
                let value: &dyn rusqlite::ToSql = if large { &zero } else { &body };
                st.execute(params![
                    seq,
                    eid,
                    meta.id.to_be_bytes().as_slice(),
                    i64::from(meta.priority.rank()),
                    to_i64(meta.enqueued_at),
                    to_i64(meta.payload_len),
                    value,
                ])
            })
            .map_err(&err)?;
        if body.len() >= LARGE_BODY {
            let mut blob = self
                .conn
                .blob_open(rusqlite::DatabaseName::Main, "ops", "body", seq, false)
                .map_err(&err)?;
            blob.write_at(&body, 0).map_err(&err)?;
        }
        if needs_hot(meta) {
            self.write_hot(meta)?;
        }
        Ok(())
    }

    fn update(&mut self, old: &OpMeta, new: &OpMeta) -> Result<()> {
        if old.payload_len != new.payload_len {
            self.conn
                .prepare_cached("UPDATE ops SET payload_len = ?2 WHERE seq = ?1")
                .and_then(|mut st| st.execute(params![to_i64(new.seq), to_i64(new.payload_len)]))
                .map_err(self.err("update operation"))?;
        }
        self.write_hot(new)
    }

    fn update_op(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        let body = compact::encode(op)?;
        self.conn
            .prepare_cached("UPDATE ops SET body = ?2, payload_len = ?3 WHERE seq = ?1")
            .and_then(|mut st| {
                st.execute(params![
                    to_i64(meta.seq),
                    body,
                    to_i64(op.payload.len() as u64)
                ])
            })
            .map(drop)
            .map_err(self.err("update operation"))
    }

    fn set_remote(&mut self, meta: &OpMeta, remote: Option<&RemoteRecord>) -> Result<()> {
        let blob = remote
            .map(|r| envelope::encode(RecordKind::Deferred, r))
            .transpose()
            .map_err(StorageError::Encode)?;
        self.conn
            .prepare_cached("UPDATE ops SET remote = ?2 WHERE seq = ?1")
            .and_then(|mut st| st.execute(params![to_i64(meta.seq), blob]))
            .map(drop)
            .map_err(self.err("store deferred remote"))
    }

    fn delete(&mut self, meta: &OpMeta) -> Result<()> {
        let path = self.path;
        let err = |e| classify(path, "delete operation", e);
        let gone: Option<(i64, Option<i64>)> = self
            .conn
            .prepare_cached("DELETE FROM ops WHERE seq = ?1 RETURNING eid, nxt")
            .and_then(|mut st| {
                st.query_row(params![to_i64(meta.seq)], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(&err)?;
        let Some((eid, next)) = gone else {
            return Ok(());
        };
        {
            self.conn
                .prepare_cached("DELETE FROM hot WHERE seq = ?1")
                .and_then(|mut st| st.execute(params![to_i64(meta.seq)]))
                .map_err(&err)?;
        }
        self.unlink(&meta.entity, eid, meta.seq, next.map(to_u64))
    }

    fn load_op(&mut self, meta: &OpMeta) -> Result<Loaded<Operation>> {
        let raw = match self.bodies.iter().position(|(seq, _)| *seq == meta.seq) {
            Some(pos) => self.bodies.swap_remove(pos).1,
            None => self.raw_op(meta)?,
        };
        Ok(compact::decode(raw, meta, self.body_limit))
    }

    fn load_remote(&mut self, meta: &OpMeta) -> Result<Option<Loaded<RemoteRecord>>> {
        Ok(self
            .blob(
                "SELECT remote FROM ops WHERE seq = ?1",
                meta.seq,
                "load deferred remote",
            )?
            .map(|raw| engine::decode_remote(raw, self.body_limit)))
    }

    fn raw_op(&mut self, meta: &OpMeta) -> Result<Vec<u8>> {
        let len: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT CASE typeof(body) WHEN 'blob' THEN length(body) END FROM ops WHERE seq = ?1",
            )
            .and_then(|mut st| {
                st.query_row(params![to_i64(meta.seq)], |r| r.get(0))
                    .optional()
            })
            .map(Option::flatten)
            .map_err(self.err("load operation"))?;
        match len.and_then(|n| usize::try_from(n).ok()) {
            // Read page by page into a buffer of its size: a plain SELECT
            // would have SQLite hold a whole copy of it first.
            Some(n) if n >= LARGE_BODY => {
                let mut body = vec![0u8; n];
                self.conn
                    .blob_open(
                        rusqlite::DatabaseName::Main,
                        "ops",
                        "body",
                        to_i64(meta.seq),
                        true,
                    )
                    .and_then(|blob| blob.read_at_exact(&mut body, 0))
                    .map_err(self.err("load operation"))?;
                Ok(body)
            }
            _ => Ok(self
                .blob(
                    "SELECT body FROM ops WHERE seq = ?1",
                    meta.seq,
                    "load operation",
                )?
                .unwrap_or_default()),
        }
    }

    fn quarantine(
        &mut self,
        meta: &OpMeta,
        raw: Vec<u8>,
        reason: String,
        at: EpochMillis,
    ) -> Result<()> {
        self.quarantine_row(&engine::quarantine_key(meta), &reason, &raw, at)
    }

    fn due_heads(&mut self, limit: usize) -> Result<Vec<OpMeta>> {
        let rows: Vec<(OpMeta, Option<Vec<u8>>)> = self
            .conn
            .prepare_cached(SQL_DUE)
            .and_then(|mut st| {
                st.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                    Ok((read_meta(r)?, r.get(16)?))
                })?
                .collect()
            })
            .map_err(self.err("claim"))?;
        self.bodies.clear();
        let mut metas = Vec::with_capacity(rows.len());
        for (meta, body) in rows {
            if let Some(body) = body {
                self.bodies.push((meta.seq, body));
            }
            metas.push(meta);
        }
        Ok(metas)
    }

    fn timed_heads_upto(&mut self, now: EpochMillis, limit: usize) -> Result<Vec<OpMeta>> {
        self.metas(
            SQL_TIMED,
            params![to_i64(now), i64::try_from(limit).unwrap_or(i64::MAX)],
            "claim",
        )
    }

    fn aging_heads_upto(&mut self, cutoff: EpochMillis, limit: usize) -> Result<Vec<OpMeta>> {
        self.metas(
            SQL_AGING,
            params![to_i64(cutoff), i64::try_from(limit).unwrap_or(i64::MAX)],
            "claim",
        )
    }

    fn min_timed(&mut self) -> Result<Option<EpochMillis>> {
        self.conn
            .prepare_cached("SELECT MIN(wake_at) FROM hot WHERE hk = 1")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, Option<i64>>(0)))
            .map(|v| v.map(to_u64))
            .map_err(self.err("next wakeup"))
    }

    fn expired_leases(&mut self, now: EpochMillis) -> Result<Vec<OpMeta>> {
        self.metas(SQL_EXPIRED, params![to_i64(now)], "recover")
    }

    fn counters(&mut self) -> &mut Counters {
        self.counters
    }

    fn notices(&mut self) -> &mut Vec<QuarantineNotice> {
        &mut self.notices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // Unbound parameters are NULL: enough for a plan.
        let mut rows = st.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            out.push(r.get::<_, String>(3).unwrap());
        }
        out
    }

    fn synchronous(store: &SqliteStorage) -> i64 {
        let main = store.shared.lock_main();
        main.conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    /// A claim commits at `NORMAL` and leaves the writer at `FULL` for the
    /// enqueues and completions after it, also when the claim fails.
    #[test]
    fn a_claim_restores_full_sync() {
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let store = SqliteStorage::open_at(tmp.path(), QueueOptions::default(), 1).unwrap();
        assert_eq!(synchronous(&store), FULL);
        let op =
            cpc_core::Operation::builder(EntityKey::new("t", "e"), cpc_core::OperationKind::Update)
                .payload(vec![1; 8])
                .build_at(
                    HlcTimestamp::new(1, 0, cpc_core::NodeId(1)),
                    &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1),
                );
        store.enqueue(op, 1).unwrap();
        let seen = std::cell::Cell::new(0);
        let r = store.shared.write_claim(|tx| {
            seen.set(
                tx.conn
                    .query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .unwrap(),
            );
            Err::<(), _>(StorageError::Locked {
                path: PathBuf::new(),
            })
        });
        assert!(r.is_err());
        assert_eq!(seen.get(), NORMAL);
        assert_eq!(synchronous(&store), FULL);
        assert_eq!(store.claim_ready(2, 8).unwrap().len(), 1);
        assert_eq!(synchronous(&store), FULL);
    }

    /// The database and its WAL are 0600; with `secure_delete` (the
    /// default) an acknowledged payload is not left readable in the file.
    #[test]
    fn files_are_private_and_acknowledged_payloads_are_erased() {
        use std::os::unix::fs::PermissionsExt;
        const CANARY: &[u8] = b"ERASE-ME-canary-4b1d";
        let leftover = |secure_delete: bool| {
            let tmp = tempfile::Builder::new()
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .unwrap();
            let path = tmp.path().join("queue");
            let options = QueueOptions {
                secure_delete,
                ..QueueOptions::default()
            };
            let store = SqliteStorage::open_at(&path, options, 1).unwrap();
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
            let mut payload = CANARY.repeat(64);
            payload.extend_from_slice(&[7; 100]);
            let op = cpc_core::Operation::builder(
                EntityKey::new("t", "e"),
                cpc_core::OperationKind::Update,
            )
            .payload(payload)
            .build_at(HlcTimestamp::new(1, 0, cpc_core::NodeId(1)), &mut rng);
            store.enqueue(op.clone(), 1).unwrap();
            for file in [DB_FILE.to_owned(), format!("{DB_FILE}-wal")] {
                let mode = std::fs::metadata(path.join(&file))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
            store.claim_ready(2, 1).unwrap();
            store.complete(&[Completion::Ack(op.id)], 3).unwrap();
            drop(store);
            let mut found = 0;
            for entry in std::fs::read_dir(&path).unwrap() {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                found += bytes.windows(CANARY.len()).filter(|w| *w == CANARY).count();
            }
            found
        };
        assert_eq!(leftover(true), 0, "secure_delete leaves nothing behind");
        assert!(
            leftover(false) > 0,
            "control: without secure_delete the freed page still holds the payload"
        );
    }

    /// The statements a claim, an acknowledgement and an enqueue run read
    /// through indexes only: no table scan, no sort; an index is walked in
    /// order only up to a LIMIT.
    #[test]
    fn hot_paths_use_indexes() {
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let store = SqliteStorage::open_at(tmp.path(), QueueOptions::default(), 1).unwrap();
        let main = store.shared.lock_main();
        for sql in [
            SQL_BY_ID,
            SQL_BY_SEQ_IN,
            SQL_DUE,
            SQL_TIMED,
            SQL_AGING,
            SQL_EXPIRED,
            SQL_ENTITY,
            "SELECT MIN(wake_at) FROM hot WHERE hk = 1",
            "SELECT first, last FROM entities WHERE eid = ?1",
            "DELETE FROM ops WHERE seq = ?1 RETURNING eid, nxt",
            "DELETE FROM hot WHERE seq = ?1",
            "UPDATE ops SET nxt = ?2 WHERE seq = ?1",
        ] {
            let steps = plan(&main.conn, sql);
            assert!(!steps.is_empty(), "{sql}");
            for step in &steps {
                // An ordered index walk is bounded only with a LIMIT.
                let bounded_walk = step.contains("USING INDEX") && sql.contains("LIMIT");
                assert!(
                    (!step.starts_with("SCAN") || bounded_walk) && !step.contains("TEMP B-TREE"),
                    "{sql}: {steps:?}"
                );
            }
        }
    }

    /// A drained queue gives its disk space back (incremental vacuum run
    /// to completion, WAL truncated) by the time it is closed.
    #[test]
    fn a_drained_queue_returns_its_space() {
        use cpc_core::{EntityKey, HlcTimestamp, NodeId, OperationKind};
        use rand::{rngs::StdRng, SeedableRng};
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("q");
        let options = QueueOptions {
            durability: Durability::Relaxed,
            ..QueueOptions::default()
        };
        let mut rng = StdRng::seed_from_u64(3);
        let ops: Vec<Operation> = (0..4000u64)
            .map(|n| {
                Operation::builder(
                    EntityKey::new("c", format!("e{}", n % 50)),
                    OperationKind::Update,
                )
                .payload(vec![1u8; 1024])
                .build_at(HlcTimestamp::new(1_000 + n, 0, NodeId(1)), &mut rng)
            })
            .collect();
        let db = dir.join(DB_FILE);
        {
            let store = SqliteStorage::open_at(&dir, options.clone(), 1).unwrap();
            store.enqueue_batch(ops, 1).unwrap();
        }
        let full = std::fs::metadata(&db).unwrap().len();
        assert!(full > 4_000_000, "{full}");
        {
            let store = SqliteStorage::open_at(&dir, options, 2).unwrap();
            loop {
                let batch = store.claim_ready(2, 64).unwrap();
                if batch.is_empty() {
                    break;
                }
                let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
                store.complete(&acks, 2).unwrap();
            }
            assert_eq!(store.pending().unwrap(), 0);
        }
        let empty = std::fs::metadata(&db).unwrap().len();
        assert!(empty * 20 < full, "{empty} bytes left of {full}");
        let wal = dir.join(format!("{DB_FILE}-wal"));
        assert!(std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0);
    }

    /// A format-2 store (same tables, envelope bodies, marker and
    /// `user_version` 2) opens, reads its operations, takes new ones in the
    /// compact body, and is marked format 3 afterwards.
    #[test]
    fn a_format_2_store_is_upgraded_in_place() {
        use cpc_core::{NodeId, OperationKind};
        use rand::{rngs::StdRng, SeedableRng};
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("q");
        let mut rng = StdRng::seed_from_u64(4);
        let op = |n: u64, rng: &mut StdRng| {
            Operation::builder(
                EntityKey::new("c", format!("e{}", n % 3)),
                OperationKind::Update,
            )
            .payload(vec![n as u8; 40])
            .build_at(HlcTimestamp::new(1_000 + n, 0, NodeId(1)), rng)
        };
        let old: Vec<Operation> = (0..6).map(|n| op(n, &mut rng)).collect();
        {
            let store = SqliteStorage::open_at(&dir, QueueOptions::default(), 1).unwrap();
            store.enqueue_batch(old.clone(), 1).unwrap();
        }
        // Make it exactly what format 2 wrote.
        {
            let conn = Connection::open(dir.join(DB_FILE)).unwrap();
            for o in &old {
                let body = envelope::encode_operation(o).unwrap();
                conn.execute(
                    "UPDATE ops SET body = ?1 WHERE id = ?2",
                    params![body, o.id.to_be_bytes().as_slice()],
                )
                .unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
        }
        let marker = dir.join(dir::MARKER_FILE);
        let text = std::fs::read_to_string(&marker).unwrap();
        std::fs::write(&marker, text.replace("format=3", "format=2")).unwrap();

        let newer = op(6, &mut rng);
        {
            let store = SqliteStorage::open_at(&dir, QueueOptions::default(), 2).unwrap();
            store.enqueue(newer.clone(), 2).unwrap();
            let mut got = Vec::new();
            loop {
                let batch = store.claim_ready(3, 4).unwrap();
                if batch.is_empty() {
                    break;
                }
                let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
                got.extend(batch.into_iter().map(|c| c.op));
                store.complete(&acks, 3).unwrap();
            }
            let mut want = old.clone();
            want.push(newer);
            got.sort_by_key(|o| o.id);
            want.sort_by_key(|o| o.id);
            assert_eq!(got, want);
            assert_eq!(store.stats().unwrap().quarantined, 0);
        }
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, i64::from(FORMAT_VERSION));
        assert!(std::fs::read_to_string(&marker)
            .unwrap()
            .contains("format=3"));
    }

    /// A store of an older format is refused, not misread.
    #[test]
    fn an_older_format_is_refused_untouched() {
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("q");
        drop(SqliteStorage::open_at(&dir, QueueOptions::default(), 1).unwrap());
        let db = dir.join(DB_FILE);
        Connection::open(&db)
            .unwrap()
            .pragma_update(None, "user_version", 1)
            .unwrap();
        let before = std::fs::read(&db).unwrap();
        let err = SqliteStorage::open_at(&dir, QueueOptions::default(), 1).unwrap_err();
        assert!(matches!(err, StorageError::Format { .. }), "{err:?}");
        assert_eq!(std::fs::read(&db).unwrap(), before);
    }
}
