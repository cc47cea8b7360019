//! The store's file: pragmas, schema, migrations, and the data directory's
//! lock.

use std::fs::{self, File};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// The schema this build writes. Older files are migrated at open; a newer
/// one is refused (an older server must not write a format it does not
/// know).
pub(crate) const SCHEMA_VERSION: i64 = 3;

/// The database file inside the data directory.
pub(crate) const DB_FILE: &str = "cpc-server.sqlite3";
/// The lock file inside the data directory.
const LOCK_FILE: &str = "lock";

const SCHEMA_V1: &str = "
CREATE TABLE meta(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  store_id TEXT NOT NULL,
  head_seq INTEGER NOT NULL,
  head_fp INTEGER NOT NULL,
  created_at_ms INTEGER NOT NULL);
CREATE TABLE entities(
  collection TEXT NOT NULL, id TEXT NOT NULL,
  version INTEGER NOT NULL,
  wall_ms INTEGER NOT NULL, logical INTEGER NOT NULL, node INTEGER NOT NULL,
  payload BLOB,
  deleted INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  PRIMARY KEY (collection, id)) WITHOUT ROWID;
CREATE TABLE changes(
  seq INTEGER PRIMARY KEY,
  fp INTEGER NOT NULL,
  collection TEXT NOT NULL, id TEXT NOT NULL,
  version INTEGER NOT NULL,
  deleted INTEGER NOT NULL,
  kind TEXT NOT NULL,
  payload BLOB,
  wall_ms INTEGER NOT NULL, logical INTEGER NOT NULL, node INTEGER NOT NULL,
  origin_client TEXT NOT NULL, origin_op TEXT NOT NULL,
  committed_at_ms INTEGER NOT NULL);
CREATE TABLE applied_ops(
  client_id TEXT NOT NULL, op_id TEXT NOT NULL,
  version INTEGER NOT NULL, seq INTEGER NOT NULL,
  content_hash BLOB NOT NULL,
  PRIMARY KEY (client_id, op_id)) WITHOUT ROWID;
CREATE TABLE clients(
  client_id TEXT PRIMARY KEY,
  first_seen_ms INTEGER NOT NULL,
  last_seen_ms INTEGER NOT NULL);
";

/// Version 2: the compaction horizon (docs/protocol.md §7.5). Rows at or
/// below it keep their fingerprint and origin (the history check and the
/// exported log need them) but lose their payload.
const MIGRATE_V2: &str = "
ALTER TABLE meta ADD COLUMN compacted_through INTEGER NOT NULL DEFAULT 0;
";

/// Version 3: compaction reclaims the change rows at or below the horizon.
/// Only what the history check (§8) needs of them is kept: each `seq` and
/// its fingerprint, in `history` (about 20 bytes a row instead of the whole
/// change). A store created at version 3 also gets `auto_vacuum =
/// INCREMENTAL`, so the pages compaction frees go back to the file system
/// (an existing file keeps its mode: changing it needs a full `VACUUM`).
const MIGRATE_V3: &str = "
CREATE TABLE history(seq INTEGER PRIMARY KEY, fp INTEGER NOT NULL);
";

/// Holds the data directory's exclusive lock for as long as it lives: two
/// servers on one store would both hand out the same `seq`.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Creates the data directory (mode 0700) if needed and locks it.
pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock, StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |what: &'static str| move |e| StoreError::Io(what, e);
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating the data directory"))?;
    }
    refuse_foreign_dir(dir)?;
    let meta = fs::metadata(dir).map_err(io("reading the data directory"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io("restricting the data directory to its owner"))?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(io("opening the lock file"))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| StoreError::Locked(dir.display().to_string()))?;
    Ok(DirLock { _file: file })
}

/// Refuses a data directory that is a symbolic link or is owned by another
/// user than the one the server runs as. Either way, someone else decides
/// where the store's files go, or can read and replace them (the chmod to
/// 0700 that follows would otherwise lock its owner out, or be done on
/// their behalf by a server running as root). Symbolic links higher up
/// the path are the administrator's layout and are followed.
fn refuse_foreign_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let shown = dir.display();
    let meta =
        fs::symlink_metadata(dir).map_err(|e| StoreError::Io("reading the data directory", e))?;
    if meta.file_type().is_symlink() {
        return Err(StoreError::ForeignDir(format!(
            "{shown}: it is a symbolic link; give the directory's real path"
        )));
    }
    if !meta.is_dir() {
        return Err(StoreError::ForeignDir(format!("{shown}: not a directory")));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(StoreError::ForeignDir(format!(
            "{shown}: owned by uid {}, and this server runs as uid {me}; \
             chown it to the server's user",
            meta.uid()
        )));
    }
    Ok(())
}

/// Opens (creating or migrating) the store's database with the durable
/// pragmas: WAL, `synchronous=FULL` (an answer follows a durable commit).
pub(crate) fn open(
    dir: &Path,
    now_ms: u64,
    new_id: Option<&str>,
) -> Result<Connection, StoreError> {
    let conn = Connection::open(dir.join(DB_FILE))?;
    // Before anything else: only a file without tables (and not yet in
    // WAL mode) takes the mode; on an existing file this changes nothing.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The WAL is reused after each checkpoint; this bounds what it keeps
    // of a burst (a large push, a compaction) once it is reset.
    conn.pragma_update(None, "journal_size_limit", 16i64 << 20)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if !(0..=SCHEMA_VERSION).contains(&version) {
        return Err(StoreError::Schema(version));
    }
    // Each step in its own transaction: a crash between two leaves a
    // store the next open carries on from.
    if version < 1 {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(SCHEMA_V1)?;
        tx.execute(
            "INSERT INTO meta (id, store_id, head_seq, head_fp, created_at_ms) VALUES (1, ?1, 0, 0, ?2)",
            params![
                new_id.map_or_else(new_store_id, str::to_owned),
                to_sql(now_ms)
            ],
        )?;
        tx.pragma_update(None, "user_version", 1)?;
        tx.commit()?;
    }
    if version < 2 {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(MIGRATE_V2)?;
        tx.pragma_update(None, "user_version", 2)?;
        tx.commit()?;
    }
    if version < 3 {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(MIGRATE_V3)?;
        tx.pragma_update(None, "user_version", 3)?;
        tx.commit()?;
    }
    Ok(conn)
}

/// The identity of a new store: 32 random lowercase hex digits.
fn new_store_id() -> String {
    let a: u128 = rand::random();
    format!("{a:032x}")
}

/// The head as stored: `(store_id, seq, fp)`.
pub(crate) fn read_head(conn: &Connection) -> Result<(String, u64, u64), StoreError> {
    let row: Option<(String, i64, i64)> = conn
        .query_row(
            "SELECT store_id, head_seq, head_fp FROM meta WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (store_id, seq, fp) = row.ok_or(StoreError::Corrupt("the meta row is missing"))?;
    Ok((store_id, from_sql(seq)?, fp as u64))
}

/// An unsigned value as SQLite's signed integer (every value the server
/// stores is at most 2^53 − 1, or a 64-bit hash stored bit for bit).
pub(crate) fn to_sql(v: u64) -> i64 {
    v as i64
}

/// A stored count back to unsigned; a negative one is corruption.
pub(crate) fn from_sql(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("a negative count or version"))
}
