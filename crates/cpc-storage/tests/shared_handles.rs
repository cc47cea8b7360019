//! `Arc<S>` and `Box<S>` are stores too (`cpc_storage`'s forwarding
//! impls): a handle shared with a worker, a test or a wrapper reaches the
//! one store behind it, on every backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cpc_core::{
    ConflictRecord, EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, RemoteRecord,
    Resolution, StandardCoalescer,
};
use cpc_storage::{
    Amend, Completion, ConflictFilter, Durability, Enqueued, ListFilter, MemoryStorage, OpState,
    Page, QueueOptions, QueueStorage, SqliteStorage,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

const T0: u64 = 1_000_000;
const LEASE_MS: u64 = 10_000;

fn options() -> QueueOptions {
    QueueOptions {
        durability: Durability::Immediate,
        lease_timeout: Duration::from_millis(LEASE_MS),
        max_payload: 1024,
        ..QueueOptions::default()
    }
}

fn normal(entity: &str, n: u64) -> Operation {
    Operation::builder(EntityKey::new("notes", entity), OperationKind::Update)
        .payload(format!("payload {n}").into_bytes())
        .build_at(
            HlcTimestamp::new(T0 + n, 0, NodeId(1)),
            &mut StdRng::seed_from_u64(n),
        )
}

fn remote(version: u64) -> RemoteRecord {
    RemoteRecord {
        version,
        timestamp: HlcTimestamp::new(T0, 0, NodeId(2)),
        payload: Some(b"remote".to_vec()),
        node: NodeId(2),
    }
}

fn conflict(entity: &str, n: u64, at: u64) -> ConflictRecord {
    let o = normal(entity, n);
    ConflictRecord {
        op_id: o.id,
        entity: o.entity.clone(),
        local_timestamp: o.timestamp,
        local_payload: o.payload.clone(),
        remote: remote(n),
        resolution: Resolution::KeepRemote,
        losing_payload: Some(o.payload),
        resolved_at_ms: at,
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

/// `Arc<S>` and `Box<S>` are stores too: every call made through one
/// shared handle is seen through another, as if made on the store itself.
fn shared_and_boxed_handles_reach_the_one_store(store: Box<dyn QueueStorage>) {
    // Both handles dispatch through `Arc`'s forwarding, then `Box`'s.
    let shared: Arc<Box<dyn QueueStorage>> = Arc::new(store);
    let other = Arc::clone(&shared);
    let (a, b): (&dyn QueueStorage, &dyn QueueStorage) = (&shared, &other);
    assert_eq!(a.max_payload(), 1024);

    let (x, y, z, w) = (
        normal("x", 1),
        normal("y", 2),
        normal("z", 3),
        normal("w", 4),
    );
    assert_eq!(
        a.enqueue_batch(vec![x.clone(), y.clone()], T0)
            .unwrap()
            .len(),
        2
    );
    let merged = a
        .enqueue_coalesced(vec![z.clone()], T0, Arc::new(StandardCoalescer::new()))
        .unwrap();
    assert!(
        matches!(merged[..], [Enqueued::Stored { .. }]),
        "{merged:?}"
    );
    a.enqueue_batch(vec![w.clone()], T0).unwrap();
    assert_eq!(b.get(z.id).unwrap().unwrap().op, z);
    assert_eq!(b.list(&ListFilter::default()).unwrap().len(), 4);

    assert_eq!(a.claim_ready(T0 + 1, 10).unwrap().len(), 4);
    a.complete(
        &[
            Completion::AckAt { id: x.id, seq: 5 },
            Completion::Retry {
                id: y.id,
                at: T0 + 100,
                error: "timeout".into(),
            },
            Completion::Defer {
                id: z.id,
                remote: remote(2),
                reason: "conflict".into(),
            },
        ],
        T0 + 2,
    )
    .unwrap();
    assert_eq!(b.next_wakeup().unwrap(), Some(T0 + 100));
    assert_eq!(
        b.list_deferred(&Page::ALL)
            .unwrap()
            .iter()
            .map(|d| d.op.id)
            .collect::<Vec<_>>(),
        vec![z.id]
    );
    // `w`'s lease ends; recovery through one handle, seen by the other.
    assert_eq!(a.recover(T0 + 1 + LEASE_MS).unwrap(), 1);
    assert_eq!(b.get(w.id).unwrap().unwrap().state, OpState::Ready);
    let respread = a.respread_waiting(T0 + 1_000, 10, 0, &Page::ALL).unwrap();
    assert_eq!(respread.moved, 1, "y was due before its slot");
    let slot = b.next_wakeup().unwrap().unwrap();
    assert!((T0 + 1_000..=T0 + 1_010).contains(&slot), "{slot}");

    let acked = b.acked(&Page::ALL).unwrap();
    assert_eq!(
        acked
            .iter()
            .map(|e| (e.id, e.remote_seq))
            .collect::<Vec<_>>(),
        vec![(x.id, Some(5))]
    );
    let requeued = a.requeue_acked(0, T0 + 3, 10).unwrap();
    assert_eq!((requeued.requeued, requeued.unrecoverable), (0, 1));
    assert!(b.acked(&Page::ALL).unwrap().is_empty());

    assert_eq!(a.log_conflict(&conflict("x", 1, T0)).unwrap(), 0);
    assert_eq!(
        b.conflict_entries(&ConflictFilter::default())
            .unwrap()
            .len(),
        1
    );
    assert!(a.list_quarantined(&Page::ALL).unwrap().is_empty());
    assert!(a.take_quarantine_notices().is_empty());

    let mark = HlcTimestamp::new(T0, 3, NodeId(1));
    assert_eq!(a.clock_mark(Some(mark)).unwrap(), Some(mark));
    assert_eq!(b.clock_mark(None).unwrap(), Some(mark));
    a.sync_state("k", Some(vec![4])).unwrap();
    assert_eq!(b.sync_state("k", None).unwrap(), Some(vec![4]));
    a.flush().unwrap();

    assert_eq!(a.amend(Amend::Drop(w.id)).unwrap(), 1);
    let stats = b.stats().unwrap();
    assert_eq!(
        (stats.waiting, stats.deferred, stats.ready, stats.in_flight),
        (1, 1, 0, 0)
    );
}

#[test]
fn shared_and_boxed_memory_handles_reach_the_one_store() {
    let store = MemoryStorage::new(options());
    shared_and_boxed_handles_reach_the_one_store(Box::new(store));
}

#[test]
fn shared_and_boxed_sqlite_handles_reach_the_one_store() {
    let (_tmp, dir) = queue_dir();
    let store = SqliteStorage::open_at(&dir, options(), T0).unwrap();
    shared_and_boxed_handles_reach_the_one_store(Box::new(store));
}

#[cfg(feature = "sled")]
#[test]
fn shared_and_boxed_sled_handles_reach_the_one_store() {
    let (_tmp, dir) = queue_dir();
    let store = cpc_storage::SledStorage::open_at(&dir, options(), T0).unwrap();
    shared_and_boxed_handles_reach_the_one_store(Box::new(store));
}
