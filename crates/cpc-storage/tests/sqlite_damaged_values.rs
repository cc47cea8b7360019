//! The SQLite backend meeting damaged values outside the operation
//! records: the clock mark, a sync-state value and a conflict log entry.
//! Each is reported (as `Corrupt`, naming the key) or quarantined, never
//! misread; a value written over a damaged one replaces it. A database
//! file that is not SQLite, or of a newer format, is refused untouched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use cpc_core::{
    ConflictRecord, EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, RemoteRecord,
    Resolution,
};
use cpc_storage::{
    ConflictFilter, Durability, Page, QueueOptions, QueueStorage, QueueStorageExt, SqliteInspector,
    SqliteStorage, StorageError,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

const T0: u64 = 1_000_000;
const GARBAGE: &[u8] = b"\x00\x01not an envelope\xff";

fn options() -> QueueOptions {
    QueueOptions {
        durability: Durability::Immediate,
        ..QueueOptions::default()
    }
}

fn queue_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("queue");
    (tmp, dir)
}

fn conflict(n: u64) -> ConflictRecord {
    let o = Operation::builder(
        EntityKey::new("notes", format!("e{n}")),
        OperationKind::Update,
    )
    .payload(vec![n as u8; 8])
    .build_at(
        HlcTimestamp::new(T0 + n, 0, NodeId(2)),
        &mut StdRng::seed_from_u64(n),
    );
    ConflictRecord {
        op_id: o.id,
        entity: o.entity.clone(),
        local_timestamp: o.timestamp,
        local_payload: o.payload.clone(),
        remote: RemoteRecord {
            version: n,
            timestamp: HlcTimestamp::new(T0 + n, 1, NodeId(3)),
            payload: Some(vec![9; 4]),
            node: NodeId(3),
        },
        resolution: Resolution::KeepRemote,
        losing_payload: Some(o.payload),
        resolved_at_ms: T0 + n,
    }
}

/// Runs one statement on the closed store's database; it must change
/// exactly one row.
fn damage(dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("queue.sqlite3")).unwrap();
    assert_eq!(conn.execute(sql, [GARBAGE]).unwrap(), 1, "{sql}");
}

fn open(dir: &Path) -> SqliteStorage {
    SqliteStorage::open_at(dir, options(), T0).unwrap()
}

fn corrupt_key(r: Result<impl std::fmt::Debug, StorageError>) -> String {
    match r {
        Err(StorageError::Corrupt { key, .. }) => key,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_damaged_clock_mark_or_sync_state_is_corrupt_until_written_again() {
    let (_tmp, dir) = queue_dir();
    let mark = HlcTimestamp::new(T0, 4, NodeId(2));
    {
        let store = open(&dir);
        store.store_clock_mark(mark).unwrap();
        store.sync_state("cursor", Some(b"c-1".to_vec())).unwrap();
    }
    damage(&dir, "UPDATE meta SET v = ?1 WHERE k = 'clock_mark'");
    damage(&dir, "UPDATE meta SET v = ?1 WHERE k = 'sync/cursor'");

    // The read-only inspector reports it the same way.
    let inspector = SqliteInspector::open(&dir).unwrap();
    assert_eq!(
        corrupt_key(inspector.sync_state("cursor")),
        "meta/sync/cursor"
    );
    drop(inspector);

    let store = open(&dir);
    assert_eq!(corrupt_key(store.load_clock_mark()), "meta/clock_mark");
    assert_eq!(
        corrupt_key(store.sync_state("cursor", None)),
        "meta/sync/cursor"
    );
    // A damaged mark cannot hold a raise back: the new mark replaces it.
    let lower = HlcTimestamp::new(T0 - 1, 0, NodeId(2));
    store.store_clock_mark(lower).unwrap();
    assert_eq!(store.load_clock_mark().unwrap(), Some(lower));
    store.sync_state("cursor", Some(b"c-2".to_vec())).unwrap();
    assert_eq!(
        store.sync_state("cursor", None).unwrap(),
        Some(b"c-2".to_vec())
    );
}

#[test]
fn a_damaged_conflict_entry_is_quarantined_and_the_page_is_filled_from_older_ones() {
    let (_tmp, dir) = queue_dir();
    {
        let store = open(&dir);
        for n in 1..=4 {
            store.log_conflict(&conflict(n)).unwrap();
        }
    }
    // The second newest entry is damaged.
    damage(&dir, "UPDATE conflicts SET body = ?1 WHERE n = 3");
    let store = open(&dir);
    let versions = |limit: Option<usize>| -> Vec<u64> {
        store
            .conflict_log(&ConflictFilter {
                limit,
                ..ConflictFilter::default()
            })
            .unwrap()
            .iter()
            .map(|c| c.remote.version)
            .collect()
    };
    // A page of two still holds two entries: the damaged one is skipped.
    assert_eq!(versions(Some(2)), vec![4, 2]);
    let q = store.list_quarantined(&Page::ALL).unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].key, "conflict/3");
    assert!(
        q[0].reason.starts_with("conflict log entry"),
        "{}",
        q[0].reason
    );
    assert_eq!(q[0].raw, GARBAGE);
    // Quarantined once: the whole log reads without moving anything more.
    assert_eq!(versions(None), vec![4, 2, 1]);
    assert_eq!(store.list_quarantined(&Page::ALL).unwrap().len(), 1);
}

/// Opens the store expecting a `Format` refusal; returns its reason.
fn refused(dir: &Path) -> String {
    match SqliteStorage::open_at(dir, options(), T0) {
        Err(StorageError::Format { reason, .. }) => reason,
        other => panic!("expected a format refusal, got {other:?}"),
    }
}

/// A closed store's database file with its `-wal`/`-shm` companions gone.
fn closed_store(dir: &Path) -> PathBuf {
    drop(open(dir));
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("queue.sqlite3{suffix}")));
    }
    dir.join("queue.sqlite3")
}

#[test]
fn a_database_file_that_is_not_sqlite_is_refused_untouched() {
    let (_tmp, dir) = queue_dir();
    let db = closed_store(&dir);
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    let reason = refused(&dir);
    assert!(reason.contains("not an SQLite database"), "{reason}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage);
}

#[test]
fn a_newer_database_format_is_refused_untouched() {
    let (_tmp, dir) = queue_dir();
    let db = closed_store(&dir);
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let reason = refused(&dir);
    assert!(reason.contains("format version 99, newer than"), "{reason}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}
