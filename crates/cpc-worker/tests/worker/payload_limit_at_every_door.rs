//! One payload limit, the store's `max_payload`, checked where remote data
//! and merges come in: an oversized remote record or merge fails that
//! operation alone, visibly, and never costs a local edit.

use std::sync::Arc;

use cpc_conflict::{DeferAll, FnResolver};
use cpc_core::{
    HlcTimestamp, NodeId, OpOutcome, Operation, OperationPriority, PushOutcome, RemoteRecord,
    Resolution,
};
use cpc_storage::{MemoryStorage, OpState, QueueOptions, QueueStorage};
use cpc_worker::WorkerEvent;

use crate::support::*;

const MAX: usize = 1024;

fn small_store() -> Arc<MemoryStorage> {
    Arc::new(MemoryStorage::new(QueueOptions {
        max_payload: MAX,
        ..QueueOptions::default()
    }))
}

fn remote_of(len: usize) -> RemoteRecord {
    RemoteRecord {
        version: 9,
        timestamp: HlcTimestamp::new(1, 0, NodeId(9)),
        payload: Some(vec![7; len]),
        node: NodeId(9),
    }
}

/// `first` conflicts with a remote record of `len` bytes, the rest apply.
fn conflict_on(first: cpc_core::OperationId, len: usize) -> Answer {
    Box::new(move |batch: &[Operation]| {
        Ok(batch
            .iter()
            .map(|o| {
                let outcome = if o.id == first {
                    PushOutcome::Conflict {
                        remote: remote_of(len),
                    }
                } else {
                    PushOutcome::Applied { version: 1 }
                };
                OpOutcome::new(o.id, outcome)
            })
            .collect())
    })
}

#[tokio::test(start_paused = true)]
async fn an_oversized_remote_record_dead_letters_the_op_and_keeps_it_and_its_order() {
    let s = small_store();
    let c = clock();
    let h = hlc(c);
    let first = enqueue(&s, c, op(&h, "a", OperationPriority::Normal));
    let second = enqueue(&s, c, op(&h, "a", OperationPriority::Normal));
    let other = enqueue(&s, c, op(&h, "b", OperationPriority::Normal));
    let t = Scripted::new(conflict_on(first, MAX + 1));
    let w = worker(&s, &t, c)
        .resolver(Arc::new(DeferAll))
        .build()
        .unwrap();
    let mut events = w.subscribe();
    let summary = w.process_once().await.unwrap();
    assert_eq!((summary.applied, summary.dead_lettered), (1, 1));
    assert!(s.get(other).unwrap().is_none());
    // Kept, whole, as a dead letter with the reason...
    let stored = s.get(first).unwrap().unwrap();
    let OpState::Dead { reason } = &stored.state else {
        panic!("{:?}", stored.state)
    };
    assert!(reason.starts_with("remote record too large"), "{reason}");
    assert_eq!(stored.op.payload, b"a");
    assert_eq!(s.stats().unwrap().quarantined, 0);
    assert!(s.list_deferred().unwrap().is_empty());
    // ...and the entity's next edit waits behind it (default BlockEntity).
    assert!(w.process_once().await.unwrap().is_empty());
    assert!(s.get(second).unwrap().is_some());
    let mut dead = false;
    while let Ok(e) = events.try_recv() {
        dead |= matches!(e, WorkerEvent::DeadLettered { id, .. } if id == first);
    }
    assert!(dead);
    // The app revives it once the remote serves a sane record: delivered, in order.
    assert!(s.revive(first, c.now_ms()).unwrap());
    t.then(all(|_| PushOutcome::Applied { version: 2 }));
    assert_eq!(w.process_once().await.unwrap().applied, 1);
    assert_eq!(w.process_once().await.unwrap().applied, 1);
    assert_eq!(s.pending().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_remote_record_at_the_limit_is_accepted() {
    let s = small_store();
    let c = clock();
    let h = hlc(c);
    let first = enqueue(&s, c, op(&h, "a", OperationPriority::Normal));
    let t = Scripted::new(conflict_on(first, MAX));
    let w = worker(&s, &t, c)
        .resolver(Arc::new(DeferAll))
        .build()
        .unwrap();
    let summary = w.process_once().await.unwrap();
    assert_eq!(summary.conflicts.deferred, 1);
    let deferred = s.list_deferred().unwrap();
    assert_eq!(deferred[0].remote.payload.as_ref().map(Vec::len), Some(MAX));
}

#[tokio::test(start_paused = true)]
async fn an_oversized_merge_fails_that_op_only_and_the_batch_is_acked() {
    let s = small_store();
    let c = clock();
    let h = hlc(c);
    let first = enqueue(&s, c, op(&h, "a", OperationPriority::Normal));
    let others: Vec<_> = (0..5)
        .map(|i| enqueue(&s, c, op(&h, &format!("o{i}"), OperationPriority::Normal)))
        .collect();
    let t = Scripted::new(conflict_on(first, 10));
    let w = worker(&s, &t, c)
        .resolver(Arc::new(FnResolver::new(
            |_: &Operation, _: &RemoteRecord| Resolution::Merged(vec![1; MAX + 1]),
        )))
        .build()
        .unwrap();
    let summary = w.process_once().await.unwrap();
    assert_eq!((summary.applied, summary.dead_lettered), (5, 1));
    for id in &others {
        assert!(s.get(*id).unwrap().is_none(), "acked");
    }
    let stored = s.get(first).unwrap().unwrap();
    assert!(
        matches!(&stored.state, OpState::Dead { reason } if reason.starts_with("merged payload too large")),
        "{:?}",
        stored.state
    );
    assert_eq!(stored.op.payload, b"a", "the local edit is kept");
    // Nothing is resent in a loop.
    assert!(w.process_once().await.unwrap().is_empty());
}
