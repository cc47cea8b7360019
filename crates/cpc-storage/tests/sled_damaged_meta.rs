//! The sled backend meeting damaged values outside the operation records:
//! the store state, the clock mark, a sync-state value, a conflict log
//! entry and a quarantine entry. Each is reported (as `Corrupt`, naming
//! the key) or quarantined, never misread; a value written over a damaged
//! one replaces it.

#![cfg(feature = "sled")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use cpc_core::{
    ConflictRecord, EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, RemoteRecord,
    Resolution,
};
use cpc_storage::{
    ConflictFilter, Durability, Page, QueueOptions, QueueStorage, QueueStorageExt, SledStorage,
    StorageError,
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

fn op(n: u64) -> Operation {
    Operation::builder(
        EntityKey::new("notes", format!("e{n}")),
        OperationKind::Update,
    )
    .payload(vec![n as u8; 8])
    .build_at(
        HlcTimestamp::new(T0 + n, 0, NodeId(2)),
        &mut StdRng::seed_from_u64(n),
    )
}

fn conflict(n: u64) -> ConflictRecord {
    let o = op(n);
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

/// Runs `f` on the sled files of a closed store. sled's I/O threads let go
/// of its file lock a moment after the store is dropped: wait for it,
/// bounded, as the store's own open does.
fn with_sled_files(dir: &Path, f: impl FnOnce(&sled::Db)) {
    let mut attempts = 0;
    let db = loop {
        match sled::open(dir.join("sled")) {
            Ok(db) => break db,
            Err(sled::Error::Io(e))
                if attempts < 2_000 && e.to_string().contains("could not acquire lock") =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("opening the sled files: {e}"),
        }
    };
    f(&db);
    db.flush().unwrap();
}

/// Overwrites the value of `key` in `tree`, which must exist.
fn damage(db: &sled::Db, tree: &str, key: &[u8]) {
    let t = db.open_tree(tree).unwrap();
    assert!(t.get(key).unwrap().is_some(), "no {tree} entry {key:?}");
    t.insert(key, GARBAGE).unwrap();
}

/// The key of the first entry of `tree`.
fn first_key(db: &sled::Db, tree: &str) -> Vec<u8> {
    let t = db.open_tree(tree).unwrap();
    t.iter().next().unwrap().unwrap().0.to_vec()
}

fn open(dir: &Path) -> SledStorage {
    SledStorage::open_at(dir, options(), T0).unwrap()
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
    with_sled_files(&dir, |db| {
        damage(db, "meta", b"clock");
        damage(db, "meta", b"sync/cursor");
    });
    let store = open(&dir);
    assert_eq!(corrupt_key(store.load_clock_mark()), "meta/clock");
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
fn a_damaged_store_state_refuses_the_open() {
    let (_tmp, dir) = queue_dir();
    {
        let store = open(&dir);
        store.enqueue(op(1), T0).unwrap();
    }
    with_sled_files(&dir, |db| damage(db, "meta", b"state"));
    assert_eq!(
        corrupt_key(SledStorage::open_at(&dir, options(), T0)),
        "meta/state"
    );
}

#[test]
fn a_damaged_conflict_entry_is_quarantined_and_the_rest_is_read() {
    let (_tmp, dir) = queue_dir();
    {
        let store = open(&dir);
        for n in 1..=3 {
            store.log_conflict(&conflict(n)).unwrap();
        }
    }
    // The oldest entry (first in key order) is damaged.
    with_sled_files(&dir, |db| {
        let key = first_key(db, "conflicts");
        damage(db, "conflicts", &key);
    });
    let store = open(&dir);
    let read = |store: &SledStorage| -> Vec<u64> {
        store
            .conflict_log(&ConflictFilter::default())
            .unwrap()
            .iter()
            .map(|c| c.remote.version)
            .collect()
    };
    assert_eq!(read(&store), vec![3, 2]);
    let q = store.list_quarantined(&Page::ALL).unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].key, "conflict/0");
    assert!(
        q[0].reason.starts_with("conflict log entry"),
        "{}",
        q[0].reason
    );
    assert_eq!(q[0].raw, GARBAGE);
    // Quarantined once: a second read finds nothing more to move.
    assert_eq!(read(&store), vec![3, 2]);
    assert_eq!(store.list_quarantined(&Page::ALL).unwrap().len(), 1);
    drop(store);

    // The quarantine entry itself damaged: listed with its raw bytes.
    with_sled_files(&dir, |db| {
        let key = first_key(db, "quarantine");
        damage(db, "quarantine", &key);
    });
    let store = open(&dir);
    let q = store.list_quarantined(&Page::ALL).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].key, format!("quarantine/{}", q[0].n));
    assert_eq!((q[0].raw.as_slice(), q[0].at), (GARBAGE, 0));
    assert!(store
        .list_quarantined(&Page {
            after: Some(q[0].n),
            limit: None
        })
        .unwrap()
        .is_empty());
    assert_eq!(store.purge_quarantined().unwrap(), 1);
}

#[test]
fn getting_a_damaged_record_reports_it_and_quarantines_it() {
    let (_tmp, dir) = queue_dir();
    let (kept, damaged) = (op(1), op(2));
    {
        let store = open(&dir);
        store.enqueue(kept.clone(), T0).unwrap();
        store.enqueue(damaged.clone(), T0).unwrap();
    }
    with_sled_files(&dir, |db| damage(db, "ops", &2u64.to_be_bytes()));
    let store = open(&dir);
    assert!(matches!(
        store.get(damaged.id),
        Err(StorageError::Corrupt { .. })
    ));
    let q = store.list_quarantined(&Page::ALL).unwrap();
    assert_eq!(q.len(), 1, "the failing get kept its quarantine");
    // Asked again: still reported, as quarantined, and not moved twice.
    match store.get(damaged.id) {
        Err(StorageError::Corrupt { key, source }) => {
            assert_eq!(key, "op/2");
            assert!(source.to_string().contains("quarantined"), "{source}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(store.list_quarantined(&Page::ALL).unwrap().len(), 1);
    assert_eq!(store.get(kept.id).unwrap().unwrap().op, kept);
}

#[test]
fn a_sled_store_debug_shows_where_and_how_it_stores_never_contents() {
    let (_tmp, dir) = queue_dir();
    let options = QueueOptions {
        max_payload: 4_096,
        ..options()
    };
    let store = SledStorage::open_at(&dir, options.clone(), T0).unwrap();
    store.enqueue(op(7), T0).unwrap();
    assert_eq!(store.path(), dir.as_path());
    assert_eq!(store.options(), &options);
    assert_eq!(store.max_payload(), 4_096);
    let text = format!("{store:?}");
    assert!(text.starts_with("SledStorage {"), "{text}");
    assert!(text.contains(&format!("{:?}", dir)), "{text}");
    assert!(text.contains("durability: Immediate"), "{text}");
    assert!(text.contains("poisoned: false"), "{text}");
    assert!(!text.contains("notes"), "no entity or payload: {text}");
}
