//! Tests of the SQLite backend's own mechanics (the shared behaviour is in
//! `conformance`).

use super::*;
use crate::QueueStorageExt;

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
        let op =
            cpc_core::Operation::builder(EntityKey::new("t", "e"), cpc_core::OperationKind::Update)
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
        // Format 2 had no acked journal (format 4 adds it on upgrade) and
        // no claimed mark (format 5).
        conn.execute_batch("DROP TABLE acked; ALTER TABLE hot DROP COLUMN claimed")
            .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
    }
    let marker = dir.join(dir::MARKER_FILE);
    let text = std::fs::read_to_string(&marker).unwrap();
    let current = format!("format={FORMAT_VERSION}");
    std::fs::write(&marker, text.replace(&current, "format=2")).unwrap();

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
        // The upgrade made the journal: every acknowledgement is in it.
        assert_eq!(store.stats().unwrap().acked_journal, want.len() as u64);
    }
    let conn = Connection::open(dir.join(DB_FILE)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::from(FORMAT_VERSION));
    assert!(std::fs::read_to_string(&marker).unwrap().contains(&current));
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

/// A format-4 store (no `hot.claimed`) is upgraded: every operation it
/// holds counts as claimed, since whether it was is unknown (a released
/// claim leaves no trace in format 4), so none is coalesced into; the
/// read-only inspector reads the old format as it is; operations
/// submitted after the upgrade coalesce.
#[test]
fn a_format_4_store_marks_its_operations_claimed_on_upgrade() {
    use cpc_core::{Coalescer, NodeId, OperationKind, StandardCoalescer};
    use rand::{rngs::StdRng, SeedableRng};
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("q");
    let mut rng = StdRng::seed_from_u64(5);
    let mut op = |entity: &str, n: u64| {
        Operation::builder(EntityKey::new("c", entity), OperationKind::Update)
            .payload(vec![n as u8; 8])
            .build_at(HlcTimestamp::new(1_000 + n, 0, NodeId(1)), &mut rng)
    };
    // e0: a head and a fresh op behind it (no `hot` row in format 4);
    // e1: a head claimed and released (attempts 0 again).
    let old = vec![op("e0", 0), op("e0", 1), op("e1", 2)];
    {
        let store = SqliteStorage::open_at(&dir, QueueOptions::default(), 1).unwrap();
        store.enqueue_batch(old.clone(), 1).unwrap();
        let c = store.claim_ready(2, 2).unwrap();
        let release: Vec<_> = c.iter().map(|c| Completion::Release(c.op.id)).collect();
        store.complete(&release, 2).unwrap();
    }
    {
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.execute_batch("ALTER TABLE hot DROP COLUMN claimed; DELETE FROM hot WHERE hk IS NULL AND state = 0 AND attempts = 0 AND last_error IS NULL;")
            .unwrap();
        conn.pragma_update(None, "user_version", 4).unwrap();
    }
    let marker = dir.join(dir::MARKER_FILE);
    let text = std::fs::read_to_string(&marker).unwrap();
    let current = format!("format={FORMAT_VERSION}");
    std::fs::write(&marker, text.replace(&current, "format=4")).unwrap();

    let seen = SqliteInspector::open(&dir).unwrap();
    assert_eq!(seen.format_version(), 4);
    assert_eq!(seen.list(&ListFilter::default()).unwrap().len(), 3);
    drop(seen);

    let store = SqliteStorage::open_at(&dir, QueueOptions::default(), 3).unwrap();
    let standard: Arc<dyn Coalescer> = Arc::new(StandardCoalescer::new());
    let newer = vec![op("e0", 3), op("e1", 4)];
    let out = store
        .enqueue_coalesced(newer.clone(), 3, Arc::clone(&standard))
        .unwrap();
    assert!(
        out.iter().all(|e| matches!(e, Enqueued::Stored { .. })),
        "{out:?}"
    );
    let out = store
        .enqueue_coalesced(vec![op("e0", 5)], 3, standard)
        .unwrap();
    assert_eq!(
        out,
        vec![Enqueued::Merged {
            into: newer[0].id,
            seq: store.get(newer[0].id).unwrap().unwrap().seq
        }]
    );
    assert!(std::fs::read_to_string(&marker).unwrap().contains(&current));
}

/// A claim commits without a sync; `flush` then syncs it (what the worker
/// does before sending when it coalesces), and only then.
#[test]
fn flush_syncs_a_claim_committed_without_a_sync() {
    use cpc_core::{NodeId, OperationKind};
    use rand::{rngs::StdRng, SeedableRng};
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let store = SqliteStorage::open_at(tmp.path().join("q"), QueueOptions::default(), 1).unwrap();
    let op = Operation::builder(EntityKey::new("c", "1"), OperationKind::Update).build_at(
        HlcTimestamp::new(1, 0, NodeId(1)),
        &mut StdRng::seed_from_u64(1),
    );
    store.enqueue(op, 1).unwrap();
    let unsynced = || store.shared.claims_unsynced.load(Ordering::SeqCst);
    assert!(!unsynced(), "an enqueue is synced as it commits");
    assert_eq!(store.claim_ready(2, 1).unwrap().len(), 1);
    assert!(unsynced());
    // A failed sync keeps it owed (and poisons the handle, as any).
    store.flush().unwrap();
    assert!(!unsynced());
}

fn numbered_op(n: u64, priority: cpc_core::OperationPriority) -> cpc_core::Operation {
    cpc_core::Operation::builder(
        EntityKey::new("t", format!("e{}", n % 7)),
        cpc_core::OperationKind::Update,
    )
    .priority(priority)
    .payload(vec![1; n as usize % 50])
    .build_at(
        HlcTimestamp::new(n + 1, 0, cpc_core::NodeId(1)),
        &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(n),
    )
}

fn row(store: &SqliteStorage) -> Counters {
    let main = store.shared.lock_main();
    load_counters_row(&main.conn, &store.shared.path).unwrap()
}

/// Format 6: a plain enqueue does not rewrite the `counters` row (one page
/// less per commit); the counters are rebuilt from the row and the
/// operations past it at open, exactly, and any other transaction
/// rewrites the row.
#[test]
fn plain_enqueues_leave_the_counters_row_and_an_open_rebuilds_them_exactly() {
    use cpc_core::OperationPriority::*;
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let open = || SqliteStorage::open_at(tmp.path(), QueueOptions::default(), 1).unwrap();
    let store = open();
    let before = row(&store);
    let priorities = [Background, Normal, High, Critical];
    for n in 0..40 {
        store
            .enqueue(numbered_op(n, priorities[n as usize % 4]), 1)
            .unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!(row(&store), before, "the row was not rewritten");
    drop(store);
    let store = open();
    assert_eq!(store.stats().unwrap(), stats, "rebuilt exactly at open");
    // A claim rewrites it whole.
    let claimed = store.claim_ready(2, 3).unwrap();
    assert_eq!(claimed.len(), 3);
    let counters = store.shared.lock_main().counters;
    assert_eq!(row(&store), counters);
    let stats = store.stats().unwrap();
    drop(store);
    assert_eq!(open().stats().unwrap(), stats);
}

#[test]
fn the_counters_row_lags_by_at_most_max_lag_enqueues() {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let store = SqliteStorage::open_at(tmp.path(), QueueOptions::default(), 1).unwrap();
    for n in 0..2_100 {
        store
            .enqueue(numbered_op(n, cpc_core::OperationPriority::Normal), 1)
            .unwrap();
        let next = store.shared.lock_main().counters.next_seq;
        let lag = next - row(&store).next_seq;
        assert!(lag < 1024, "lag {lag} after {n}");
    }
}

/// Group commit of plain enqueues is append-only too; through a
/// coalescer it is not, and the row follows.
#[test]
fn a_coalescing_enqueue_rewrites_the_counters_row() {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let store = SqliteStorage::open_at(tmp.path(), QueueOptions::default(), 1).unwrap();
    store
        .enqueue(numbered_op(1, cpc_core::OperationPriority::Normal), 1)
        .unwrap();
    let coalescer: Arc<dyn cpc_core::Coalescer> = Arc::new(cpc_core::StandardCoalescer::default());
    store
        .enqueue_coalesced(
            vec![numbered_op(8, cpc_core::OperationPriority::Normal)],
            1,
            coalescer,
        )
        .unwrap();
    let counters = store.shared.lock_main().counters;
    assert_eq!(row(&store), counters);
}
