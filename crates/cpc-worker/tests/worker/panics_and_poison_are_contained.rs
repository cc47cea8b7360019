//! What used to lose or stall work silently: a transport or resolver that
//! panics, a poison operation that makes the server fail every batch it is
//! in, conflicts that never end.

use cpc_storage::QueueStorageExt as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cpc_conflict::{ConflictResolver, LocalWins};
use cpc_core::{
    HlcTimestamp, NodeId, OpOutcome, Operation, OperationPriority, PushOutcome, RemoteRecord,
    Resolution, TransportError,
};
use cpc_storage::{OpState, QueueStorage};
use cpc_worker::{RetryPolicy, StorageCalls, SyncWorker, WorkerConfig, WorkerEvent};

use crate::support::*;

fn remote(version: u64) -> RemoteRecord {
    RemoteRecord {
        version,
        timestamp: HlcTimestamp::new(1, 0, NodeId(9)),
        payload: Some(b"remote".to_vec()),
        node: NodeId(9),
    }
}

fn applied_unless(poison: cpc_core::OperationId) -> Answer {
    Box::new(move |batch: &[Operation]| {
        if batch.iter().any(|o| o.id == poison) {
            return Err(TransportError::Server { status: 500 });
        }
        Ok(batch
            .iter()
            .map(|o| OpOutcome::new(o.id, PushOutcome::Applied { version: 1 }))
            .collect())
    })
}

#[tokio::test(start_paused = true)]
async fn a_poison_op_failing_every_batch_it_is_in_is_isolated_and_buried_alone() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let ids: Vec<_> = (0..200)
        .map(|i| enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal)))
        .collect();
    let poison = ids[37];
    let t = Scripted::new(applied_unless(poison));
    // The defaults: backoff, budget, breaker, 25 attempts.
    let w = SyncWorker::builder(s.clone(), t.clone())
        .clock(c.clone())
        .retry_policy(RetryPolicy::default())
        .config(WorkerConfig {
            seed: Some(3),
            storage_calls: StorageCalls::Inline,
            ..WorkerConfig::default()
        })
        .build()
        .unwrap();
    w.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(24 * 3600), w.drained())
        .await
        .expect("drains within a simulated day")
        .unwrap();
    // Every other operation was delivered...
    for id in ids.iter().filter(|id| **id != poison) {
        assert!(s.get(*id).unwrap().is_none(), "{id} still queued");
    }
    // ...and the poison one is a dead letter with the server's failure,
    // counted only when it was sent alone.
    let stored = s.get(poison).unwrap().unwrap();
    let OpState::Dead { reason } = &stored.state else {
        panic!("poison op not dead: {:?}", stored.state);
    };
    assert!(reason.contains("status 500"), "{reason}");
    assert!(reason.contains("gave up after 25 attempts"), "{reason}");
    let alone = t
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b.len() == 1 && b[0] == poison)
        .count();
    assert_eq!(alone, 25, "each counted attempt was the op alone");
    w.shutdown().await.unwrap();
}

#[derive(Debug)]
struct PanicsOn(cpc_core::OperationId);

#[async_trait::async_trait]
impl cpc_core::Transport for PanicsOn {
    async fn push(
        &self,
        query: &cpc_core::PushQuery<'_>,
    ) -> Result<cpc_core::PushAnswer, TransportError> {
        let batch = query.ops;
        tokio::task::yield_now().await;
        if batch.iter().any(|o| o.id == self.0) {
            panic!("transport bug");
        }
        Ok(batch
            .iter()
            .map(|o| OpOutcome::new(o.id, PushOutcome::Applied { version: 1 }))
            .collect())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_transport_fails_its_batch_at_once_and_the_queue_drains() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let ids: Vec<_> = (0..10)
        .map(|i| enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal)))
        .collect();
    let poison = ids[4];
    let w = SyncWorker::builder(s.clone(), Arc::new(PanicsOn(poison)))
        .clock(c.clone())
        .retry_policy(plain_policy(3))
        .config(WorkerConfig {
            seed: Some(3),
            ..WorkerConfig::default()
        })
        .build()
        .unwrap();
    let mut events = w.subscribe();
    let summary = w.process_once().await.unwrap();
    assert_eq!(summary.batch_error, Some(TransportError::Panicked));
    assert_eq!(w.in_flight(), 0);
    // Released at once with a backoff, not after the 60 s lease.
    for id in &ids {
        let stored = s.get(*id).unwrap().unwrap();
        assert!(
            matches!(stored.state, OpState::Waiting { until } if until <= START_MS + 1_000),
            "{:?}",
            stored.state
        );
    }
    let mut failed = false;
    while let Ok(e) = events.try_recv() {
        if let WorkerEvent::BatchFailed { error, size } = e {
            assert_eq!((error, size), (TransportError::Panicked, 10));
            failed = true;
        }
    }
    assert!(failed, "a BatchFailed event names the panic");
    // The loop isolates the panicking op and buries it; the rest drains.
    w.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(3600), w.drained())
        .await
        .expect("drained() resolves")
        .unwrap();
    assert_eq!(s.pending().unwrap(), 0);
    assert!(matches!(
        s.get(poison).unwrap().unwrap().state,
        OpState::Dead { .. }
    ));
    assert_eq!(w.in_flight(), 0);
    w.shutdown().await.unwrap();
}

#[derive(Debug)]
struct PanickingResolver;
impl ConflictResolver for PanickingResolver {
    fn resolve(&self, _: &Operation, _: &RemoteRecord) -> Resolution {
        panic!("resolver bug")
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_resolver_defers_its_op_with_a_reason_instead_of_looping() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let a = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let b = enqueue(&s, &c, op(&h, "b", OperationPriority::Normal));
    let t = Scripted::new(Box::new(move |batch: &[Operation]| {
        Ok(batch
            .iter()
            .map(|o| {
                let outcome = if o.id == a {
                    PushOutcome::Conflict { remote: remote(4) }
                } else {
                    PushOutcome::Applied { version: 1 }
                };
                OpOutcome::new(o.id, outcome)
            })
            .collect())
    }));
    let w = worker(&s, &t, &c)
        .resolver(Arc::new(PanickingResolver))
        .build()
        .unwrap();
    let summary = w.process_once().await.unwrap();
    assert_eq!((summary.applied, summary.conflicts.deferred), (1, 1));
    assert!(s.get(b).unwrap().is_none());
    let deferred = s.list_deferred(&cpc_storage::Page::ALL).unwrap();
    assert_eq!(deferred.len(), 1);
    assert_eq!(deferred[0].op.id, a);
    assert_eq!(
        deferred[0].reason.as_deref(),
        Some("the conflict resolver panicked")
    );
    assert_eq!(w.in_flight(), 0);
    // Nothing is sent again until the application settles it.
    tokio::time::advance(Duration::from_secs(600)).await;
    assert!(w.process_once().await.unwrap().is_empty());
    tokio::time::timeout(Duration::from_secs(1), w.drained())
        .await
        .expect("deferred conflicts do not hold drained()")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn endless_conflicts_back_off_then_defer_after_max_conflicts() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let a = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let version = Arc::new(AtomicUsize::new(1));
    let v = version.clone();
    // The other device keeps its edit too: every send conflicts again.
    let t = Scripted::new(Box::new(move |batch: &[Operation]| {
        let n = v.fetch_add(1, Ordering::SeqCst) as u64;
        Ok(batch
            .iter()
            .map(|o| OpOutcome::new(o.id, PushOutcome::Conflict { remote: remote(n) }))
            .collect())
    }));
    let w = worker(&s, &t, &c)
        .retry_policy(RetryPolicy::default())
        .resolver(Arc::new(LocalWins))
        .config(WorkerConfig {
            seed: Some(5),
            storage_calls: StorageCalls::Inline,
            max_conflicts: 4,
            ..WorkerConfig::default()
        })
        .build()
        .unwrap();
    w.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(3600), w.drained())
        .await
        .expect("drained() resolves once the op is deferred")
        .unwrap();
    // Four sends, each after a backoff, then parked for the application.
    assert_eq!(t.pushes(), 4);
    let deferred = s.list_deferred(&cpc_storage::Page::ALL).unwrap();
    assert_eq!(deferred.len(), 1);
    assert_eq!(deferred[0].op.id, a);
    assert!(deferred[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("max_conflicts 4"));
    let log = s.conflict_log(&Default::default()).unwrap();
    assert_eq!(log.len(), 4, "every conflict logged");
    // Newest first; the resends waited a growing backoff (200 ms doubling,
    // full jitter), not a tight loop.
    let spent = log[0].resolved_at_ms - log[3].resolved_at_ms;
    assert!(spent >= 100, "three resends took {spent} ms");
    w.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_remote_timestamp_too_far_ahead_raises_clock_skew_and_is_not_merged() {
    let s = storage();
    let c = clock();
    let h = Arc::new(hlc(&c));
    enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let two_hours_ahead = START_MS + 2 * 3_600_000;
    let t = Scripted::new(all(move |_| PushOutcome::Conflict {
        remote: RemoteRecord {
            version: 3,
            timestamp: HlcTimestamp::new(two_hours_ahead, 0, NodeId(9)),
            payload: None,
            node: NodeId(9),
        },
    }));
    let w = worker(&s, &t, &c)
        .hybrid_clock(Arc::clone(&h))
        .resolver(Arc::new(LocalWins))
        .build()
        .unwrap();
    let mut events = w.subscribe();
    w.process_once().await.unwrap();
    let mut skew = None;
    while let Ok(e) = events.try_recv() {
        if let WorkerEvent::ClockSkew {
            ahead_ms,
            max_drift_ms,
            ..
        } = e
        {
            skew = Some((ahead_ms, max_drift_ms));
        }
    }
    let (ahead_ms, max_drift_ms) = skew.expect("a ClockSkew event");
    assert!((7_190_000..=7_200_000).contains(&ahead_ms), "{ahead_ms}");
    assert_eq!(max_drift_ms, 3_600_000);
    // Not merged: the next local timestamp stays near the local clock.
    assert!(h.now().unwrap().wall_ms < START_MS + 60_000);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_url_answering_404_for_days_buries_nothing() {
    // A misconfigured base URL (or a proxy page) answers 404 to every
    // batch: the same for every operation, so none of them may be counted
    // towards a dead letter, even alone.
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let ids: Vec<_> = (0..5)
        .map(|i| enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal)))
        .collect();
    let t = Scripted::new(fail(TransportError::Server { status: 404 }));
    let w = SyncWorker::builder(s.clone(), t.clone())
        .clock(c.clone())
        .retry_policy(RetryPolicy::default())
        .config(WorkerConfig {
            seed: Some(5),
            storage_calls: StorageCalls::Inline,
            ..WorkerConfig::default()
        })
        .build()
        .unwrap();
    w.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3 * 24 * 3600)).await;
    assert!(t.pushes() > 25, "kept trying: {} pushes", t.pushes());
    for id in &ids {
        let stored = s.get(*id).unwrap().unwrap();
        assert!(
            !matches!(stored.state, OpState::Dead { .. }),
            "{id} buried by a 404: {:?}",
            stored.state
        );
    }
    w.shutdown().await.unwrap();
}
