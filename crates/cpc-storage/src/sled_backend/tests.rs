//! Tests of the sled backend's own mechanics (the shared behaviour is in
//! `conformance`).

use super::*;
use crate::QueueStorageExt;
use cpc_core::{EntityKey, HlcTimestamp, NodeId, OperationKind, OperationPriority};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn op(entity: &str, n: u64, priority: OperationPriority) -> Operation {
    Operation::builder(EntityKey::new("t", entity), OperationKind::Update)
        .payload(vec![7; 32])
        .priority(priority)
        .build_at(
            HlcTimestamp::new(1_000 + n, 0, NodeId(1)),
            &mut StdRng::seed_from_u64(n),
        )
}

/// A claim is flushed, not synced; `flush` then syncs it, and only then.
#[test]
fn flush_syncs_a_claim_committed_without_a_sync() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let s = SledStorage::open(dir.path().join("q"), QueueOptions::default()).unwrap();
    s.enqueue(op("a", 1, OperationPriority::Normal), 10)
        .unwrap();
    let unsynced = || s.claims_unsynced.load(Ordering::SeqCst);
    assert!(!unsynced());
    assert_eq!(s.claim_ready(11, 1).unwrap().len(), 1);
    assert!(unsynced());
    s.flush().unwrap();
    assert!(!unsynced());
}

#[test]
fn survives_reopen_with_order_and_counters() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let path = dir.path().join("q");
    let ops = [
        op("a", 1, OperationPriority::Background),
        op("b", 2, OperationPriority::Critical),
        op("a", 3, OperationPriority::Critical),
        op("c", 4, OperationPriority::Normal),
    ];
    {
        let s = SledStorage::open(&path, QueueOptions::default()).unwrap();
        for o in &ops {
            s.enqueue(o.clone(), 10).unwrap();
        }
        assert_eq!(s.pending().unwrap(), 4);
    }
    let s = SledStorage::open(&path, QueueOptions::default()).unwrap();
    assert_eq!(s.pending().unwrap(), 4);
    let claimed: Vec<_> = s
        .claim_ready(20, 10)
        .unwrap()
        .into_iter()
        .map(|c| c.op.id)
        .collect();
    // b (critical), c (normal), a1 (background head of a); a3 waits.
    assert_eq!(claimed, vec![ops[1].id, ops[3].id, ops[0].id]);
    s.complete(&[Completion::Ack(ops[0].id)], 30).unwrap();
    let next = s.claim_ready(40, 10).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].op.id, ops[2].id);
    assert_eq!(s.stats().unwrap().in_flight, 3);
    assert!(s.sync_count() > 0);
}

#[test]
fn a_second_open_is_locked() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let _s = SledStorage::open(dir.path(), QueueOptions::default()).unwrap();
    assert!(matches!(
        SledStorage::open(dir.path(), QueueOptions::default()),
        Err(StorageError::Locked { .. })
    ));
}

#[test]
fn an_injected_sync_error_poisons_the_handle() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let s = SledStorage::open(dir.path(), QueueOptions::default()).unwrap();
    s.enqueue(op("a", 1, OperationPriority::Normal), 1).unwrap();
    s.inject_fault(InjectedFault::SyncError);
    assert!(s.enqueue(op("a", 2, OperationPriority::Normal), 2).is_err());
    assert!(matches!(s.pending(), Err(StorageError::Poisoned)));
    assert!(matches!(
        s.enqueue(op("a", 3, OperationPriority::Normal), 3),
        Err(StorageError::Poisoned)
    ));
    drop(s);
    let s = SledStorage::open(dir.path(), QueueOptions::default()).unwrap();
    assert!(s.pending().unwrap() >= 1);
}
