//! `SqliteInspector`: the read-only view the command line takes of a SQLite
//! queue directory, possibly while an engine has it open. It must read
//! what the store holds, report damaged records without quarantining them,
//! read an older format as it is without upgrading it, and refuse what is
//! not a SQLite queue.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, OperationPriority};
use cpc_storage::{
    Completion, Durability, ListFilter, OpState, Page, QueueOptions, QueueStorage, QueueStorageExt,
    RetainAcked, SqliteInspector, SqliteStorage, StorageError,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

const T0: u64 = 1_000_000;
const DB: &str = "queue.sqlite3";
const MARKER: &str = "cpc-queue.marker";

fn options() -> QueueOptions {
    QueueOptions {
        durability: Durability::Immediate,
        retain_acked: Some(RetainAcked::default()),
        ..QueueOptions::default()
    }
}

fn op(n: u64, rng: &mut StdRng) -> Operation {
    Operation::builder(
        EntityKey::new("notes", format!("e{}", n % 4)),
        OperationKind::Update,
    )
    .priority(if n.is_multiple_of(2) {
        OperationPriority::Normal
    } else {
        OperationPriority::High
    })
    .payload(vec![n as u8; 16 + n as usize])
    .build_at(HlcTimestamp::new(T0 + n, 0, NodeId(3)), rng)
}

fn queue_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("queue");
    (tmp, dir)
}

/// A store of `n` operations (enqueued at T0 + i), the first `acked` of
/// them claimed and acknowledged at remote seq 100 + i.
fn filled(dir: &Path, n: u64, acked: usize) -> (SqliteStorage, Vec<Operation>) {
    let mut rng = StdRng::seed_from_u64(11);
    let store = SqliteStorage::open_at(dir, options(), T0).unwrap();
    let ops: Vec<Operation> = (0..n).map(|i| op(i, &mut rng)).collect();
    for (i, o) in ops.iter().enumerate() {
        store.enqueue(o.clone(), T0 + i as u64).unwrap();
    }
    let claimed = store.claim_ready(T0 + 1_000, acked).unwrap();
    assert_eq!(claimed.len(), acked);
    let acks: Vec<Completion> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| Completion::AckAt {
            id: c.op.id,
            seq: 100 + i as u64,
        })
        .collect();
    store.complete(&acks, T0 + 1_001).unwrap();
    (store, ops)
}

fn sql(dir: &Path, batch: &str) {
    rusqlite::Connection::open(dir.join(DB))
        .unwrap()
        .execute_batch(batch)
        .unwrap();
}

#[test]
fn the_inspector_reads_what_an_open_store_holds_page_by_page() {
    let (_tmp, dir) = queue_dir();
    // More operations than one verification page (64) reads.
    let (store, ops) = filled(&dir, 70, 3);
    store
        .sync_state("pull-cursor", Some(b"c-42".to_vec()))
        .unwrap();

    // The engine keeps the store open: the inspector takes no lock.
    let inspector = SqliteInspector::open(&dir).unwrap();
    assert_eq!(inspector.format_version(), SqliteInspector::CURRENT_FORMAT);

    let stats = inspector.stats().unwrap();
    assert_eq!(stats, store.stats().unwrap());
    assert_eq!(stats.pending, 67);
    assert_eq!(stats.acked_journal, 3);

    // The acked ones (the oldest heads) are gone; the oldest left is the
    // earliest enqueued that was not acknowledged.
    let acked = inspector.acked(&Page::ALL).unwrap();
    assert_eq!(acked, store.acked(&Page::ALL).unwrap());
    assert_eq!(
        acked.iter().map(|a| a.remote_seq).collect::<Vec<_>>(),
        vec![Some(100), Some(101), Some(102)]
    );
    assert!(acked.iter().all(|a| a.retained));
    let acked_ids: Vec<_> = acked.iter().map(|a| a.id).collect();
    let oldest = ops
        .iter()
        .enumerate()
        .find(|(_, o)| !acked_ids.contains(&o.id))
        .map(|(i, _)| T0 + i as u64);
    assert_eq!(inspector.oldest_pending().unwrap(), oldest);

    // A listing by entity: decoded operations with their bookkeeping.
    let entity = EntityKey::new("notes", "e1");
    let listed = inspector
        .list(&ListFilter {
            entity: Some(entity.clone()),
            ..ListFilter::default()
        })
        .unwrap();
    let want: Vec<&Operation> = ops
        .iter()
        .filter(|o| o.entity == entity && !acked_ids.contains(&o.id))
        .collect();
    assert_eq!(listed.len(), want.len());
    for (got, want) in listed.iter().zip(&want) {
        assert_eq!(got.id, want.id);
        assert_eq!(got.entity.as_ref(), Some(&entity));
        assert_eq!(got.priority, want.priority);
        assert_eq!(got.state, OpState::Ready);
        assert_eq!(got.payload_len, want.payload.len() as u64);
        assert_eq!(got.op.as_ref(), Ok(*want));
    }

    assert_eq!(
        inspector.sync_state("pull-cursor").unwrap(),
        Some(b"c-42".to_vec())
    );
    assert_eq!(inspector.sync_state("never-set").unwrap(), None);
    assert!(inspector.sync_state("").is_err(), "an empty key is refused");

    let verified = inspector.verify().unwrap();
    assert_eq!(verified.operations, 67);
    assert_eq!(verified.journal, 3);
    assert!(verified.damaged.is_empty(), "{:?}", verified.damaged);
    assert_eq!(verified.quarantined, 0);

    assert!(inspector.files().database > 0);
    drop(inspector);
    // The store the inspector read beside is still fully usable.
    assert_eq!(store.claim_ready(T0 + 2_000, 100).unwrap().len(), 4);
}

#[test]
fn damaged_records_are_reported_and_left_where_they_are() {
    let (_tmp, dir) = queue_dir();
    let (store, ops) = filled(&dir, 4, 1);
    let acked_id = store.acked(&Page::ALL).unwrap()[0].id;
    drop(store);
    let damaged = ops.iter().find(|o| o.id != acked_id).unwrap();
    let conn = rusqlite::Connection::open(dir.join(DB)).unwrap();
    let seq: i64 = conn
        .query_row(
            "SELECT seq FROM ops WHERE id = ?1",
            [damaged.id.to_be_bytes().as_slice()],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute("UPDATE ops SET body = x'00ff00ff' WHERE seq = ?1", [seq])
        .unwrap();
    conn.execute("UPDATE acked SET body = x'0102'", []).unwrap();
    drop(conn);
    let before = std::fs::read(dir.join(DB)).unwrap();

    let inspector = SqliteInspector::open(&dir).unwrap();
    let listed = inspector.list(&ListFilter::default()).unwrap();
    assert_eq!(listed.len(), 3);
    let bad = listed.iter().find(|o| o.id == damaged.id).unwrap();
    assert!(bad.op.is_err(), "{:?}", bad.op);
    assert!(listed
        .iter()
        .filter(|o| o.id != damaged.id)
        .all(|o| o.op.is_ok()));

    let verified = inspector.verify().unwrap();
    assert_eq!((verified.operations, verified.journal), (3, 1));
    let places: Vec<&str> = verified.damaged.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(
        places,
        vec![
            format!("operation seq {seq} id {}", damaged.id).as_str(),
            "acked journal entry 1"
        ]
    );
    // Reported, not quarantined: nothing was written.
    assert_eq!(verified.quarantined, 0);
    drop(inspector);
    assert_eq!(std::fs::read(dir.join(DB)).unwrap(), before);

    // The store itself quarantines the record when it meets it; the
    // inspector then counts it.
    let store = SqliteStorage::open_at(&dir, options(), T0 + 5_000).unwrap();
    assert!(matches!(
        store.get(damaged.id),
        Err(StorageError::Corrupt { .. })
    ));
    drop(store);
    let inspector = SqliteInspector::open(&dir).unwrap();
    assert_eq!(inspector.verify().unwrap().quarantined, 1);
    assert_eq!(inspector.stats().unwrap().quarantined, 1);
}

#[test]
fn an_older_format_is_read_as_it_is_and_not_upgraded() {
    let (_tmp, dir) = queue_dir();
    let (store, ops) = filled(&dir, 3, 0);
    drop(store);
    // What format 3 wrote: no acked journal, no claimed mark.
    sql(
        &dir,
        "DROP TABLE acked; ALTER TABLE hot DROP COLUMN claimed; PRAGMA user_version = 3;",
    );
    let marker = dir.join(MARKER);
    let text = std::fs::read_to_string(&marker).unwrap();
    let current = format!("format={}", SqliteInspector::CURRENT_FORMAT);
    assert!(text.contains(&current), "{text}");
    std::fs::write(&marker, text.replace(&current, "format=3")).unwrap();
    let db_before = std::fs::read(dir.join(DB)).unwrap();
    let marker_before = std::fs::read(&marker).unwrap();

    let inspector = SqliteInspector::open(&dir).unwrap();
    assert_eq!(inspector.format_version(), 3);
    let listed = inspector.list(&ListFilter::default()).unwrap();
    assert_eq!(
        listed.iter().map(|o| o.id).collect::<Vec<_>>(),
        ops.iter().map(|o| o.id).collect::<Vec<_>>()
    );
    assert!(inspector.acked(&Page::ALL).unwrap().is_empty());
    let stats = inspector.stats().unwrap();
    assert_eq!((stats.pending, stats.acked_journal), (3, 0));
    let verified = inspector.verify().unwrap();
    assert_eq!((verified.operations, verified.journal), (3, 0));
    drop(inspector);

    assert_eq!(std::fs::read(dir.join(DB)).unwrap(), db_before);
    assert_eq!(std::fs::read(&marker).unwrap(), marker_before);
}

#[test]
fn the_inspector_refuses_what_is_not_a_sqlite_queue() {
    let (_tmp, dir) = queue_dir();
    std::fs::create_dir(&dir).unwrap();
    assert!(matches!(
        SqliteInspector::open(&dir),
        Err(StorageError::NotAQueue { .. })
    ));

    // A queue whose database file is gone.
    let (_tmp2, other) = queue_dir();
    drop(SqliteStorage::open_at(&other, options(), T0).unwrap());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(other.join(format!("{DB}{suffix}")));
    }
    match SqliteInspector::open(&other) {
        Err(StorageError::Format { reason, .. }) => {
            assert!(reason.contains("queue.sqlite3 is missing"), "{reason}");
        }
        r => panic!("expected a format error, got {r:?}"),
    }

    // Another backend's queue.
    #[cfg(feature = "sled")]
    {
        let (_tmp3, sled_dir) = queue_dir();
        drop(cpc_storage::SledStorage::open_at(&sled_dir, options(), T0).unwrap());
        assert!(matches!(
            SqliteInspector::open(&sled_dir),
            Err(StorageError::Format { .. })
        ));
    }
}
