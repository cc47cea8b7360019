//! A remote restored from a backup (`409 history_diverged`): the worker
//! stops sending, puts the retained acknowledged operations back ahead of
//! their entities' later ones, reports it, and sends them again first.

use std::sync::Arc;
use std::time::Duration;

use cpc_core::{
    OpOutcome, Operation, OperationPriority, PushOutcome, RemotePosition, TransportError,
};
use cpc_storage::{MemoryStorage, QueueOptions, QueueStorage, RetainAcked};
use cpc_worker::WorkerEvent;

use crate::support::*;

fn head(seq: u64) -> RemotePosition {
    RemotePosition {
        store_id: "s1".into(),
        seq,
        fp: 0xfeed,
    }
}

/// Applied at seqs 1, 2, … in push order.
fn applied_in_order() -> Answer {
    let next = std::sync::atomic::AtomicU64::new(0);
    Box::new(move |batch: &[Operation]| {
        Ok(batch
            .iter()
            .map(|op| {
                let seq = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                OpOutcome::new(op.id, PushOutcome::Applied { version: seq }).at_seq(seq)
            })
            .collect())
    })
}

async fn regressed(events: &mut tokio::sync::broadcast::Receiver<WorkerEvent>) -> (u64, u64) {
    loop {
        match events.recv().await.unwrap() {
            WorkerEvent::RemoteRegressed {
                requeued,
                unrecoverable,
                head,
                ..
            } => {
                assert_eq!(head.seq, 1);
                return (requeued, unrecoverable);
            }
            _ => continue,
        }
    }
}

/// The ids (a, b, a2), what was pushed after the 409, and the event's
/// (requeued, unrecoverable).
type Run = (
    Vec<cpc_core::OperationId>,
    Vec<cpc_core::OperationId>,
    (u64, u64),
);

async fn run(retain: Option<RetainAcked>) -> Run {
    let s = Arc::new(MemoryStorage::new(QueueOptions {
        retain_acked: retain,
        ..QueueOptions::default()
    }));
    let c = clock();
    let h = hlc(&c);
    let t = Scripted::new(applied_in_order());
    let w = worker(&s, &t, &c).build().unwrap();
    // Two entities, acknowledged at seqs 1 and 2.
    let a = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let b = enqueue(&s, &c, op(&h, "b", OperationPriority::Normal));
    assert_eq!(w.process_once().await.unwrap().applied, 2);
    assert_eq!(s.stats().unwrap().acked_journal, 2);
    // The remote is restored to seq 1 (b's change is gone); the next push
    // is refused with its head.
    let a2 = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    t.then(fail(TransportError::HistoryDiverged { head: head(1) }));
    let mut events = w.subscribe();
    w.start().await.unwrap();
    let counts = tokio::time::timeout(Duration::from_secs(60), regressed(&mut events))
        .await
        .expect("a RemoteRegressed event");
    w.drained().await.unwrap();
    w.shutdown().await.unwrap();
    let sent_after: Vec<_> = t.calls.lock().unwrap()[2..]
        .iter()
        .flatten()
        .copied()
        .collect();
    (vec![a, b, a2], sent_after, counts)
}

#[tokio::test(start_paused = true)]
async fn with_retention_the_acknowledged_go_again_first_and_nothing_is_lost() {
    let (ids, sent_after, counts) = run(Some(RetainAcked::default())).await;
    let [a, b, a2] = [ids[0], ids[1], ids[2]];
    assert_eq!(counts, (2, 0));
    // a goes again before a2 (its entity's order); b goes again too.
    let pos = |id| sent_after.iter().position(|x| *x == id).unwrap();
    assert!(pos(a) < pos(a2), "{sent_after:?}");
    assert!(sent_after.contains(&b));
    assert_eq!(sent_after.len(), 3, "{sent_after:?}");
}

#[tokio::test(start_paused = true)]
async fn without_retention_the_lost_one_is_reported_unrecoverable() {
    let (ids, sent_after, counts) = run(None).await;
    // b was applied at seq 2, above the restored head (1): lost, and only
    // its id was kept. a (seq 1) survived.
    assert_eq!(counts, (0, 1));
    assert_eq!(sent_after, vec![ids[2]]);
}
