//! One payload limit, the store's `max_payload`, checked where remote data
//! and merges come in: an oversized remote record is resolved all the same
//! and stored without its body; an oversized merge fails that operation
//! alone, visibly; neither ever costs a local edit.

use cpc_storage::QueueStorageExt;
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
async fn an_oversized_remote_record_is_deferred_without_its_body_and_can_be_settled() {
    let s = small_store();
    let c = clock();
    let h = hlc(&c);
    let first = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let second = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let other = enqueue(&s, &c, op(&h, "b", OperationPriority::Normal));
    let t = Scripted::new(conflict_on(first, 100 * MAX));
    let w = worker(&s, &t, &c)
        .resolver(Arc::new(DeferAll))
        .build()
        .unwrap();
    let mut events = w.subscribe();
    let summary = w.process_once().await.unwrap();
    assert_eq!(
        (
            summary.applied,
            summary.dead_lettered,
            summary.conflicts.deferred
        ),
        (1, 0, 1)
    );
    assert!(s.get(other).unwrap().is_none());
    // Parked whole on this side, the remote's body left out and said so.
    let deferred = s.list_deferred(&cpc_storage::Page::ALL).unwrap();
    assert_eq!(deferred.len(), 1);
    let d = &deferred[0];
    assert_eq!(d.op.id, first);
    assert_eq!(d.op.payload, b"a");
    assert!(d.remote_body_withheld(), "{:?}", d.reason);
    assert_eq!((d.remote.version, d.remote.payload.as_ref()), (9, None));
    assert_eq!(s.stats().unwrap().quarantined, 0);
    let mut resolved = false;
    while let Ok(e) = events.try_recv() {
        assert!(!matches!(e, WorkerEvent::DeadLettered { .. }), "{e:?}");
        resolved |= matches!(e, WorkerEvent::ConflictResolved { id, .. } if id == first);
    }
    assert!(resolved);
    // The entity's next edit waits for the application...
    assert!(w.process_once().await.unwrap().is_empty());
    // ...which settles it: resent on the remote's version, then the next.
    assert!(s.settle(first, Resolution::KeepLocal, c.now_ms()).unwrap());
    t.then(all(|_| PushOutcome::Applied { version: 10 }));
    assert_eq!(w.process_once().await.unwrap().applied, 1);
    assert_eq!(w.process_once().await.unwrap().applied, 1);
    assert!(s.get(second).unwrap().is_none());
    assert_eq!(s.pending().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn last_writer_wins_decides_an_oversized_remote_record_from_the_timestamps() {
    let s = small_store();
    let c = clock();
    let h = hlc(&c);
    // The remote record is older (timestamp 1): the local edit wins.
    let first = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let second = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let t = Scripted::new(conflict_on(first, 100 * MAX));
    let w = worker(&s, &t, &c).build().unwrap();
    let summary = w.process_once().await.unwrap();
    assert_eq!(
        (summary.dead_lettered, summary.conflicts.keep_local),
        (0, 1)
    );
    // Logged, without the body it could not keep.
    let log = s
        .conflict_log(&cpc_storage::ConflictFilter::default())
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].op_id, first);
    assert_eq!(log[0].resolution, Resolution::KeepLocal);
    assert_eq!(log[0].remote.payload, None);
    assert_eq!(log[0].local_payload, b"a");
    // Resent on the remote's version, and the next edit follows.
    let resent = s.get(first).unwrap().unwrap();
    assert_eq!(resent.op.base_version, Some(9));
    t.then(all(|_| PushOutcome::Applied { version: 10 }));
    tokio::time::advance(std::time::Duration::from_secs(60)).await;
    assert_eq!(w.process_once().await.unwrap().applied, 1);
    tokio::time::advance(std::time::Duration::from_secs(60)).await;
    assert_eq!(w.process_once().await.unwrap().applied, 1);
    assert!(s.get(second).unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_remote_record_at_the_limit_is_accepted() {
    let s = small_store();
    let c = clock();
    let h = hlc(&c);
    let first = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let t = Scripted::new(conflict_on(first, MAX));
    let w = worker(&s, &t, &c)
        .resolver(Arc::new(DeferAll))
        .build()
        .unwrap();
    let summary = w.process_once().await.unwrap();
    assert_eq!(summary.conflicts.deferred, 1);
    let deferred = s.list_deferred(&cpc_storage::Page::ALL).unwrap();
    assert_eq!(deferred[0].remote.payload.as_ref().map(Vec::len), Some(MAX));
}

#[tokio::test(start_paused = true)]
async fn an_oversized_merge_fails_that_op_only_and_the_batch_is_acked() {
    let s = small_store();
    let c = clock();
    let h = hlc(&c);
    let first = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let others: Vec<_> = (0..5)
        .map(|i| enqueue(&s, &c, op(&h, &format!("o{i}"), OperationPriority::Normal)))
        .collect();
    let t = Scripted::new(conflict_on(first, 10));
    let w = worker(&s, &t, &c)
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

#[tokio::test(start_paused = true)]
async fn remote_reasons_and_error_texts_are_cut_before_they_are_stored() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let a = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let b = enqueue(&s, &c, op(&h, "b", OperationPriority::Normal));
    let long = "r".repeat(10_000);
    let reason = long.clone();
    let t = Scripted::new(all(move |_| PushOutcome::Rejected {
        reason: reason.clone(),
    }));
    t.then(fail(cpc_core::TransportError::Protocol("p".repeat(10_000))));
    let w = worker(&s, &t, &c).build().unwrap();
    let mut events = w.subscribe();
    w.process_once().await.unwrap();
    for id in [a, b] {
        let stored = s.get(id).unwrap().unwrap();
        let error = stored.last_error.unwrap();
        assert!(error.chars().count() < 300, "{} chars stored", error.len());
    }
    // The failed batch is split: one operation per push from here.
    for _ in 0..2 {
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        w.process_once().await.unwrap();
    }
    for id in [a, b] {
        let OpState::Dead { reason } = s.get(id).unwrap().unwrap().state else {
            panic!("not dead")
        };
        assert!(
            reason.chars().count() < 300,
            "{} chars stored",
            reason.len()
        );
        assert!(reason.ends_with("[truncated]"));
    }
    while let Ok(e) = events.try_recv() {
        let text = format!("{e:?}");
        assert!(text.len() < 1_000, "an event carries {} bytes", text.len());
    }
}
