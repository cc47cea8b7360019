//! Fault tests for the durable backends: a full disk, a record overwritten
//! with garbage, and a failed sync.
//!
//! - Disk full: as root, a tiny tmpfs (`mount -t tmpfs -o size=...`) is
//!   filled through the store until `StorageFull`; earlier operations must
//!   be intact after reopening, and writes must resume once space is freed
//!   (by deleting a ballast file the test put there first). Without root
//!   (or if mounting fails) the test says so and uses the backends' injected
//!   disk-full fault instead.
//! - Corruption: a record is overwritten on disk while the store is closed
//!   (through rusqlite for SQLite, through sled for sled); it must be
//!   quarantined with its raw bytes, and the rest must stay claimable.
//! - A failed sync: every later call returns `Poisoned` until reopened.

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cpc_storage::QueueStorageExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, OperationPriority};
use cpc_storage::{
    Completion, InjectedFault, ListFilter, Page, QueueOptions, QueueStorage, SqliteStorage,
    StorageError,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Opens a durable backend as a trait object, with its fault hook.
struct Store {
    queue: Box<dyn QueueStorage>,
    inject: Box<dyn Fn(InjectedFault)>,
}

fn open(backend: &str, dir: &Path) -> Result<Store, StorageError> {
    let options = QueueOptions::default();
    match backend {
        #[cfg(feature = "sled")]
        "sled" => {
            let s = std::sync::Arc::new(cpc_storage::SledStorage::open(dir, options)?);
            let hook = s.clone();
            Ok(Store {
                queue: Box::new(s),
                inject: Box::new(move |f| hook.inject_fault(f)),
            })
        }
        "sqlite" => {
            let s = std::sync::Arc::new(SqliteStorage::open(dir, options)?);
            let hook = s.clone();
            Ok(Store {
                queue: Box::new(s),
                inject: Box::new(move |f| hook.inject_fault(f)),
            })
        }
        other => panic!("unknown backend {other}"),
    }
}

fn op(n: u64, payload_len: usize) -> Operation {
    Operation::builder(
        EntityKey::new("faults", format!("e{}", n % 5)),
        OperationKind::Update,
    )
    .payload(vec![(n % 251) as u8; payload_len])
    .priority(OperationPriority::from_rank((n % 4) as u8).unwrap_or_default())
    .build_at(
        HlcTimestamp::new(1_000 + n, 0, NodeId(9)),
        &mut StdRng::seed_from_u64(n),
    )
}

// ----- disk full -------------------------------------------------------------

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            return None;
        }
        std::fs::create_dir_all(path).ok()?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// tmpfs size and ballast per backend. 64 KiB holds neither store: SQLite's
/// schema alone is 15 b-trees of one 4 KiB page each, beside a 32 KiB
/// shared-memory file; sled writes its log in 512 KiB segments and needs
/// room for a fresh one at reopen.
fn tmpfs_size(backend: &str) -> (&'static str, usize) {
    match backend {
        "sled" => ("4m", 1536 * 1024),
        _ => ("1m", 256 * 1024),
    }
}

fn fill_until_full(backend: &str) {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let mnt = tmp.path().join("mnt");
    let (size, ballast_len) = tmpfs_size(backend);
    let Some(fs) = Tmpfs::mount(&mnt, size) else {
        println!(
            "{backend}: cannot mount a tmpfs (not root, or mount refused); using the injected disk-full fault instead"
        );
        injected_disk_full(backend, tmp.path());
        return;
    };
    println!("{backend}: filling a {size} tmpfs at {}", fs.path.display());
    let ballast = fs.path.join("ballast");
    std::fs::write(&ballast, vec![0xAB; ballast_len]).unwrap();
    let dir = fs.path.join("queue");
    let store = open(backend, &dir).unwrap();
    let mut acked = Vec::new();
    let mut n = 0;
    let full = loop {
        match store.queue.enqueue(op(n, 1024), 1_000 + n) {
            Ok(_) => acked.push(op(n, 1024).id),
            Err(e) => break e,
        }
        n += 1;
        assert!(n < 100_000, "{backend}: the tmpfs never filled up");
    };
    assert!(
        matches!(full, StorageError::StorageFull(_)),
        "{backend}: expected StorageFull, got {full:?}"
    );
    assert!(
        !acked.is_empty(),
        "{backend}: nothing fit before the disk was full"
    );
    println!(
        "{backend}: {} operations stored before StorageFull",
        acked.len()
    );
    drop(store);

    // Free space, reopen: everything acknowledged is intact, nothing is
    // quarantined, and writes resume.
    std::fs::remove_file(&ballast).unwrap();
    let store = open(backend, &dir).unwrap();
    check_all_present(backend, &*store.queue, &acked);
    let more = op(1_000_000, 512);
    store
        .queue
        .enqueue(more.clone(), 2_000_000)
        .unwrap_or_else(|e| panic!("{backend}: writes do not resume after space was freed: {e:?}"));
    acked.push(more.id);
    drop(store);
    let store = open(backend, &dir).unwrap();
    check_all_present(backend, &*store.queue, &acked);
}

/// Without a tmpfs: the injected fault stands in for ENOSPC.
fn injected_disk_full(backend: &str, root: &Path) {
    let dir = root.join("queue");
    let store = open(backend, &dir).unwrap();
    let first = op(1, 256);
    store.queue.enqueue(first.clone(), 1).unwrap();
    (store.inject)(InjectedFault::DiskFull);
    assert!(matches!(
        store.queue.enqueue(op(2, 256), 2),
        Err(StorageError::StorageFull(_))
    ));
    store.queue.enqueue(op(3, 256), 3).unwrap();
    drop(store);
    let store = open(backend, &dir).unwrap();
    check_all_present(backend, &*store.queue, &[first.id, op(3, 256).id]);
}

fn check_all_present(backend: &str, store: &dyn QueueStorage, ids: &[cpc_core::OperationId]) {
    let stored: std::collections::HashSet<_> = store
        .list(&ListFilter::default())
        .unwrap()
        .into_iter()
        .map(|s| s.op.id)
        .collect();
    let missing = ids.iter().filter(|id| !stored.contains(id)).count();
    assert_eq!(
        missing, 0,
        "{backend}: {missing} acknowledged operations missing"
    );
    assert!(
        store.list_quarantined(&Page::ALL).unwrap().is_empty(),
        "{backend}: records quarantined after a full disk"
    );
}

#[test]
fn a_full_disk_is_storage_full_and_loses_nothing_sqlite() {
    fill_until_full("sqlite");
}

#[cfg(feature = "sled")]
#[test]
fn a_full_disk_is_storage_full_and_loses_nothing_sled() {
    fill_until_full("sled");
}

// ----- corruption ------------------------------------------------------------

const GARBAGE: &[u8] = b"\x00\x01garbage, not an envelope\xff\xfe";

fn corrupt_sqlite(dir: &Path, seq: u64) {
    let conn = rusqlite::Connection::open(dir.join("queue.sqlite3")).unwrap();
    let n = conn
        .execute(
            "UPDATE ops SET body = ?1 WHERE seq = ?2",
            rusqlite::params![GARBAGE, seq as i64],
        )
        .unwrap();
    assert_eq!(n, 1, "no sqlite row with seq {seq}");
}

#[cfg(feature = "sled")]
fn corrupt_sled(dir: &Path, tree: &str, seq: u64) {
    // sled's I/O threads let go of its file lock a moment after the store
    // that used it is dropped (longer on a loaded machine): wait for it,
    // bounded, as the store's own open does.
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
    let t = db.open_tree(tree).unwrap();
    assert!(
        t.get(seq.to_be_bytes()).unwrap().is_some(),
        "no sled record {seq}"
    );
    t.insert(seq.to_be_bytes(), GARBAGE).unwrap();
    db.flush().unwrap();
}

fn garbage_record_is_quarantined(backend: &str, corrupt: impl Fn(&Path, u64)) {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("queue");
    let ops: Vec<_> = (0..10).map(|n| op(n, 256)).collect();
    let seqs: Vec<u64> = {
        let store = open(backend, &dir).unwrap();
        ops.iter()
            .map(|o| store.queue.enqueue(o.clone(), 10).unwrap())
            .collect()
    };
    // Corrupt the 4th operation (head of its entity, `e3`, whose other
    // operation is the 9th).
    corrupt(&dir, seqs[3]);
    let store = open(backend, &dir).unwrap();
    let drain = |now: &mut u64| {
        let mut claimed = Vec::new();
        loop {
            let batch = store.queue.claim_ready(*now, 64).unwrap();
            if batch.is_empty() {
                break;
            }
            let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
            claimed.extend(batch.into_iter().map(|c| c.op.id));
            store.queue.complete(&acks, *now).unwrap();
            *now += 1;
        }
        claimed.sort();
        claimed
    };
    let mut now = 100;
    let claimed = drain(&mut now);
    let mut want: Vec<_> = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 8)
        .map(|(_, o)| o.id)
        .collect();
    want.sort();
    assert_eq!(
        claimed, want,
        "{backend}: the rest drains, the damaged op's entity waits"
    );
    let notices = store.queue.take_quarantine_notices();
    assert_eq!(notices.len(), 1, "{backend}: {notices:?}");
    assert_eq!(notices[0].id, Some(ops[3].id));
    assert_eq!(notices[0].entity.as_ref(), Some(&ops[3].entity));
    assert!(store.queue.take_quarantine_notices().is_empty());
    let q = store.queue.list_quarantined(&Page::ALL).unwrap();
    assert_eq!(q.len(), 1, "{backend}: {q:?}");
    assert_eq!(q[0].raw, GARBAGE, "{backend}: the raw bytes are kept");
    assert_eq!(q[0].operation_id(), Some(ops[3].id));
    let stats = store.queue.stats().unwrap();
    assert_eq!((stats.quarantined, stats.dead, stats.pending), (1, 1, 1));
    // The dead letter listing does not quarantine it again.
    assert!(store.queue.list(&ListFilter::default()).unwrap().len() == 1);
    assert_eq!(store.queue.list_quarantined(&Page::ALL).unwrap().len(), 1);
    // The application repairs it with the version it still has: it goes
    // first, then its entity's next operation.
    assert!(store.queue.repair(ops[3].clone(), now).unwrap());
    let first = store.queue.claim_ready(now, 64).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].op, ops[3]);
    store
        .queue
        .complete(&[Completion::Ack(ops[3].id)], now)
        .unwrap();
    now += 1;
    assert_eq!(drain(&mut now), vec![ops[8].id]);
    assert_eq!(store.queue.pending().unwrap(), 0);
    assert_eq!(store.queue.purge_quarantined().unwrap(), 1);
    assert!(store.queue.list_quarantined(&Page::ALL).unwrap().is_empty());
}

#[test]
fn a_garbage_record_is_quarantined_its_entity_waits_and_the_rest_drains_sqlite() {
    garbage_record_is_quarantined("sqlite", corrupt_sqlite);
}

#[cfg(feature = "sled")]
#[test]
fn a_garbage_record_is_quarantined_its_entity_waits_and_the_rest_drains_sled() {
    garbage_record_is_quarantined("sled", |dir, seq| corrupt_sled(dir, "ops", seq));
}

/// Rows whose bookkeeping columns no longer convert (a state out of range,
/// a priority out of range, an id of the wrong length) used to fail every
/// claim, stalling the whole queue. Each is now parked as a quarantined dead
/// letter that holds its entity; the rest drains.
#[test]
fn damaged_bookkeeping_rows_are_parked_and_the_rest_drains_sqlite() {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("queue");
    // Entities e0..e4, two operations each: op n and op n + 5.
    let ops: Vec<_> = (0..10).map(|n| op(n, 64)).collect();
    let seqs: Vec<u64> = {
        let store = open("sqlite", &dir).unwrap();
        ops.iter()
            .map(|o| store.queue.enqueue(o.clone(), 10).unwrap())
            .collect()
    };
    {
        let conn = rusqlite::Connection::open(dir.join("queue.sqlite3")).unwrap();
        let damage = |sql: &str, seq: u64| {
            let n = conn.execute(sql, rusqlite::params![seq as i64]).unwrap();
            assert_eq!(n, 1, "{sql}");
        };
        damage("UPDATE hot SET state = 'bogus' WHERE seq = ?1", seqs[3]);
        damage("UPDATE ops SET priority = 77 WHERE seq = ?1", seqs[1]);
        damage("UPDATE ops SET id = x'00' WHERE seq = ?1", seqs[2]);
    }
    let store = open("sqlite", &dir).unwrap();
    let mut now = 100;
    let mut claimed = Vec::new();
    let mut failures = 0;
    for _ in 0..20 {
        match store.queue.claim_ready(now, 64) {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => {
                let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
                claimed.extend(batch.into_iter().map(|c| c.op.id));
                store.queue.complete(&acks, now).unwrap();
            }
            Err(e) => {
                assert!(matches!(e, StorageError::Sqlite { .. }), "{e}");
                failures += 1;
            }
        }
        now += 1;
    }
    assert!(failures <= 1, "one failed call at most, then salvaged");
    claimed.sort();
    let mut want: Vec<_> = [0, 4, 5, 9].iter().map(|i| ops[*i].id).collect();
    want.sort();
    assert_eq!(claimed, want, "the undamaged entities drain");
    let stats = store.queue.stats().unwrap();
    assert_eq!(
        (stats.dead, stats.pending, stats.quarantined),
        (3, 3, 3),
        "{stats:?}"
    );
    let notices = store.queue.take_quarantine_notices();
    assert_eq!(notices.len(), 3, "{notices:?}");
    // The quarantine reads page by page, each record once, in order.
    let all = store.queue.list_quarantined(&Page::ALL).unwrap();
    let mut paged = Vec::new();
    let mut page = Page::first(2);
    loop {
        let got = store.queue.list_quarantined(&page).unwrap();
        assert!(got.len() <= 2);
        let Some(last) = got.last() else { break };
        page = Page::after(last.n, 2);
        paged.extend(got);
    }
    assert_eq!(paged, all);
    // The damaged op whose id survived is repaired; its entity follows.
    assert!(store.queue.repair(ops[3].clone(), now).unwrap());
    // The one whose id was lost is dropped by its stand-in id.
    let lost = store
        .queue
        .list_quarantined(&Page::ALL)
        .unwrap()
        .into_iter()
        .filter_map(|q| q.operation_id())
        .find(|id| !ops.iter().any(|o| o.id == *id))
        .expect("a stand-in id for the unreadable one");
    assert!(store.queue.drop_op(lost).unwrap());
    let mut rest = Vec::new();
    loop {
        let batch = store.queue.claim_ready(now, 64).unwrap();
        if batch.is_empty() {
            break;
        }
        let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
        rest.extend(batch.into_iter().map(|c| c.op.id));
        store.queue.complete(&acks, now).unwrap();
        now += 1;
    }
    // op 3 before op 8 (same entity), op 7 once op 2 was dropped.
    let pos = |id| rest.iter().position(|x| *x == id).unwrap();
    assert!(pos(ops[3].id) < pos(ops[8].id));
    assert!(rest.contains(&ops[7].id));
    let stats = store.queue.stats().unwrap();
    assert_eq!(
        (stats.pending, stats.dead),
        (1, 1),
        "op 6 waits behind op 1"
    );
}

#[cfg(feature = "sled")]
/// sled keeps an operation's bookkeeping in its own checksummed record; a
/// damaged one is quarantined too (with both halves' bytes), the counters
/// are recounted, and the rest stays claimable.
#[test]
fn garbage_bookkeeping_is_quarantined_too_sled() {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("queue");
    let ops: Vec<_> = (0..6).map(|n| op(n, 64)).collect();
    let seqs: Vec<u64> = {
        let store = open("sled", &dir).unwrap();
        ops.iter()
            .map(|o| store.queue.enqueue(o.clone(), 10).unwrap())
            .collect()
    };
    corrupt_sled(&dir, "metas", seqs[1]);
    let store = open("sled", &dir).unwrap();
    let claimed = store.queue.claim_ready(100, 64).unwrap();
    // Entities e0..e4 each have one head; e1's head (seq[1]) is damaged.
    assert_eq!(claimed.len(), 4, "{claimed:?}");
    assert!(claimed.iter().all(|c| c.op.id != ops[1].id));
    let acks: Vec<_> = claimed.iter().map(|c| Completion::Ack(c.op.id)).collect();
    store.queue.complete(&acks, 101).unwrap();
    // ops[5] (entity e0) comes next.
    let next = store.queue.claim_ready(102, 64).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].op.id, ops[5].id);
    let q = store.queue.list_quarantined(&Page::ALL).unwrap();
    assert_eq!(q.len(), 1);
    let stats = store.queue.stats().unwrap();
    assert_eq!(stats.quarantined, 1);
    assert_eq!(stats.pending, 1, "{stats:?}");
    assert!(store.queue.get(ops[1].id).unwrap().is_none());
}

// ----- failed sync -------------------------------------------------------------

fn a_failed_sync_poisons(backend: &str) {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("queue");
    let store = open(backend, &dir).unwrap();
    let kept = op(1, 128);
    store.queue.enqueue(kept.clone(), 1).unwrap();
    (store.inject)(InjectedFault::SyncError);
    let err = store.queue.enqueue(op(2, 128), 2).unwrap_err();
    assert!(
        !matches!(err, StorageError::Poisoned),
        "{backend}: the failing call reports the I/O error itself"
    );
    let q = &*store.queue;
    let poisoned = |what: &str, r: Result<(), StorageError>| {
        assert!(
            matches!(r, Err(StorageError::Poisoned)),
            "{backend}: {what} after a failed sync: {r:?}"
        );
    };
    poisoned("enqueue", q.enqueue(op(3, 128), 3).map(drop));
    poisoned("claim_ready", q.claim_ready(4, 8).map(drop));
    poisoned("complete", q.complete(&[Completion::Ack(kept.id)], 5));
    poisoned("pending", q.pending().map(drop));
    poisoned("stats", q.stats().map(drop));
    poisoned("list", q.list(&ListFilter::default()).map(drop));
    poisoned("get", q.get(kept.id).map(drop));
    poisoned(
        "store_clock_mark",
        q.store_clock_mark(HlcTimestamp::new(5, 0, NodeId(1))),
    );
    poisoned("flush", q.flush());
    drop(store);
    // Reopening clears it; what was acknowledged before is there.
    let store = open(backend, &dir).unwrap();
    assert!(store.queue.get(kept.id).unwrap().is_some());
    store.queue.enqueue(op(4, 128), 6).unwrap();
}

#[test]
fn a_failed_sync_poisons_every_later_call_sqlite() {
    a_failed_sync_poisons("sqlite");
}

#[cfg(feature = "sled")]
#[test]
fn a_failed_sync_poisons_every_later_call_sled() {
    a_failed_sync_poisons("sled");
}
