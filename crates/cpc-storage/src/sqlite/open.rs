//! Opening a store: private files, the connection's pragmas, the schema
//! and the counters row.

use super::*;

/// Creates a new database file with mode 0600 before SQLite opens it
/// (SQLite gives the WAL and shared-memory files the database file's mode),
/// and brings the files of an existing store to 0600.
pub(super) fn make_files_private(dir: &Path, db_path: &Path, create: bool) -> Result<()> {
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

pub(super) fn open_connection(
    dir: &Path,
    db_path: &Path,
    options: &QueueOptions,
) -> Result<Connection> {
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

pub(super) const SCHEMA: &str = "
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
    aging INTEGER,
    claimed INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE IF NOT EXISTS acked (
    n INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    body BLOB NOT NULL
);
";

pub(super) fn init_schema(conn: &Connection, dir: &Path) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| classify(dir, "read schema version", e))?;
    if version == i64::from(FORMAT_VERSION) {
        return Ok(());
    }
    let upgrade = if version != 0 && !has_column(conn, dir, "hot", "claimed")? {
        UPGRADE_CLAIMED
    } else {
        ""
    };
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {upgrade} {SCHEMA} PRAGMA user_version = {FORMAT_VERSION}; COMMIT;"
    ))
    .map_err(|e| classify(dir, "create schema", e))
}

/// Format 5 (coalescing) adds `hot.claimed`. Whether an operation of an
/// older store was ever claimed is unknown (a released claim gives its
/// attempt back), and only a never-claimed one may be coalesced into: so
/// every existing operation is marked claimed, which gives the ones
/// without a `hot` row one. One pass at the upgrade; operations submitted
/// after it coalesce.
const UPGRADE_CLAIMED: &str = "
ALTER TABLE hot ADD COLUMN claimed INTEGER NOT NULL DEFAULT 1;
INSERT INTO hot (seq, state, ready_at, attempts, claimed)
    SELECT o.seq, 0, o.enqueued_at, 0, 1 FROM ops o
    WHERE NOT EXISTS (SELECT 1 FROM hot h WHERE h.seq = o.seq);
";

/// Whether `table` has a column `column`.
pub(super) fn has_column(conn: &Connection, dir: &Path, table: &str, column: &str) -> Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")
        .and_then(|mut st| st.exists(params![table, column]))
        .map_err(|e| classify(dir, "read schema", e))
}

/// The counters: the `counters` row, plus the operations appended after
/// its `next_seq` (format 6). A plain enqueue does not rewrite the row: it
/// is one more page in every enqueue's commit, of the few an enqueue
/// writes. Every other transaction rewrites it whole, so the operations
/// past the row's `next_seq` are only the appends of the enqueues that
/// followed the last rewrite: each ready, pending, at its priority and
/// size (see `Shared::run`).
pub(super) fn load_counters(conn: &Connection, dir: &Path) -> Result<Counters> {
    let mut counters = load_counters_row(conn, dir)?;
    let mut st = conn
        .prepare_cached(
            "SELECT priority, COUNT(*), COALESCE(SUM(payload_len), 0), MAX(seq) \
             FROM ops WHERE seq >= ?1 GROUP BY priority",
        )
        .map_err(|e| classify(dir, "load counters", e))?;
    let rows = st
        .query_map(params![to_i64(counters.next_seq)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(|e| classify(dir, "load counters", e))?;
    for row in rows {
        let (priority, count, bytes, last) = row.map_err(|e| classify(dir, "load counters", e))?;
        // A damaged rank is counted at the nearest one: the first call that
        // reads the row parks it and recounts (see `salvage`).
        let top = counters.pending_by_priority.len() - 1;
        let rank = usize::try_from(priority.max(0)).map_or(top, |r| r.min(top));
        let count = to_u64(count);
        counters.ready = counters.ready.saturating_add(count);
        counters.pending_by_priority[rank] =
            counters.pending_by_priority[rank].saturating_add(count);
        counters.pending_bytes = counters.pending_bytes.saturating_add(to_u64(bytes));
        counters.next_seq = counters.next_seq.max(to_u64(last).saturating_add(1));
    }
    Ok(counters)
}

/// The `counters` row alone (what [`write_counters`] wrote last).
pub(super) fn load_counters_row(conn: &Connection, dir: &Path) -> Result<Counters> {
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

pub(super) fn write_counters(conn: &Connection, dir: &Path, c: &Counters) -> Result<()> {
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
