//! Each per-operation outcome ends in the right storage state and event.

use cpc_storage::QueueStorageExt as _;
use std::sync::Arc;
use std::time::Duration;

use cpc_conflict::ConflictResolver;
use cpc_core::{
    HlcTimestamp, NodeId, OpOutcome, Operation, OperationPriority, PushOutcome, RemoteRecord,
    Resolution, TransportError,
};
use cpc_storage::{ConflictFilter, OpState, QueueStorage};
use cpc_worker::WorkerEvent;

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn applied_acks_rejected_dead_letters_retry_later_waits_at_least_the_hint() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let a = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let b = enqueue(&s, &c, op(&h, "b", OperationPriority::Normal));
    let d = enqueue(&s, &c, op(&h, "c", OperationPriority::Normal));
    let t = Scripted::applied();
    t.then(Box::new(move |batch: &[Operation]| {
        Ok(batch
            .iter()
            .map(|o| {
                let outcome = if o.id == a {
                    PushOutcome::Applied { version: 3 }
                } else if o.id == b {
                    PushOutcome::Rejected {
                        reason: "schema".into(),
                    }
                } else {
                    PushOutcome::RetryLater {
                        after: Some(Duration::from_secs(30)),
                    }
                };
                OpOutcome::new(o.id, outcome)
            })
            .collect())
    }));
    let w = worker(&s, &t, &c).build().unwrap();
    let mut events = w.subscribe();
    let summary = w.process_once().await.unwrap();
    assert_eq!(summary.attempted, 3);
    assert_eq!(summary.applied, 1);
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(summary.retried, 1);
    assert_eq!(summary.by_priority, [0, 3, 0, 0]);

    assert!(s.get(a).unwrap().is_none());
    assert!(
        matches!(s.get(b).unwrap().unwrap().state, OpState::Dead { ref reason } if reason == "schema")
    );
    let waiting = s.get(d).unwrap().unwrap();
    // The backoff says 1 s, the server said 30 s: the hint is the floor.
    assert_eq!(
        waiting.state,
        OpState::Waiting {
            until: START_MS + 30_000
        }
    );
    // A `retry_later` is the remote's pacing, not the op's failure: the
    // attempt is given back (it never leads to a dead letter).
    assert_eq!(waiting.attempts, 0);

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(seen.iter().any(
        |e| matches!(e, WorkerEvent::Applied { id, version: 3, replay: false, .. } if *id == a)
    ));
    assert!(seen
        .iter()
        .any(|e| matches!(e, WorkerEvent::DeadLettered { id, .. } if *id == b)));
    assert!(seen.iter().any(|e| matches!(e, WorkerEvent::RetryScheduled { id, at, attempt: 1, .. } if *id == d && *at == START_MS + 30_000)));
    assert!(seen
        .iter()
        .any(|e| matches!(e, WorkerEvent::BatchCompleted { .. })));
}

#[tokio::test(start_paused = true)]
async fn retry_later_for_ever_never_dead_letters_and_backs_off() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let id = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let t = Scripted::new(all(|_| PushOutcome::RetryLater { after: None }));
    let w = worker(&s, &t, &c)
        .retry_policy(plain_policy(3))
        .build()
        .unwrap();
    let mut waits = Vec::new();
    for _ in 0..30 {
        w.process_once().await.unwrap();
        let stored = s.get(id).unwrap().unwrap();
        let OpState::Waiting { until } = stored.state else {
            panic!("a retry_later storm buried the op: {stored:?}");
        };
        assert_eq!(stored.attempts, 0, "retry_later never counts");
        let now = c.now_ms();
        waits.push(until - now);
        tokio::time::advance(Duration::from_millis(until - now)).await;
    }
    assert_eq!(t.pushes(), 30);
    // Paced by its answers in a row: the waits grow (to the cap) instead
    // of hammering the remote at the first delay.
    assert!(waits[5] > waits[0], "{waits:?}");
}

#[tokio::test(start_paused = true)]
async fn attempts_exhausted_by_a_lone_failure_among_healthy_pushes_dead_letter() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let poison = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    for i in 0..3 {
        enqueue(&s, &c, op(&h, &format!("b{i}"), OperationPriority::Normal));
    }
    let t = Scripted::new(Box::new(move |batch: &[Operation]| {
        if batch.iter().any(|o| o.id == poison) {
            return Err(TransportError::Server { status: 500 });
        }
        Ok(batch
            .iter()
            .map(|o| OpOutcome::new(o.id, PushOutcome::Applied { version: 1 }))
            .collect())
    }));
    let w = worker(&s, &t, &c)
        .retry_policy(plain_policy(3))
        .build()
        .unwrap();
    for _ in 0..40 {
        w.process_once().await.unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    let stored = s.get(poison).unwrap().unwrap();
    assert!(
        matches!(&stored.state, OpState::Dead { reason } if reason.contains("gave up after 3 attempts") && reason.contains("500")),
        "{stored:?}"
    );
    let stats = s.stats().unwrap();
    assert_eq!(
        (stats.pending, stats.dead),
        (0, 1),
        "only the poison op is left"
    );
}

#[derive(Debug)]
struct Fixed(Resolution);
impl ConflictResolver for Fixed {
    fn resolve(&self, _: &Operation, _: &cpc_core::RemoteRecord) -> Resolution {
        self.0.clone()
    }
}

fn remote(version: u64) -> RemoteRecord {
    RemoteRecord {
        version,
        timestamp: HlcTimestamp::new(START_MS - 5, 0, NodeId(9)),
        payload: Some(b"remote".to_vec()),
        node: NodeId(9),
    }
}

async fn conflict_with(
    resolution: Resolution,
) -> (
    Arc<cpc_storage::MemoryStorage>,
    cpc_core::OperationId,
    cpc_worker::ProcessingSummary,
    Vec<WorkerEvent>,
) {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let id = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let t = Scripted::new(all(|_| PushOutcome::Conflict { remote: remote(7) }));
    let w = worker(&s, &t, &c)
        .resolver(Arc::new(Fixed(resolution)))
        .build()
        .unwrap();
    let mut events = w.subscribe();
    let summary = w.process_once().await.unwrap();
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    (s, id, summary, seen)
}

#[tokio::test(start_paused = true)]
async fn keep_local_resends_on_the_remote_version_and_logs() {
    let (s, id, summary, events) = conflict_with(Resolution::KeepLocal).await;
    assert_eq!(summary.conflicts.keep_local, 1);
    let stored = s.get(id).unwrap().unwrap();
    // Resent on the remote's version after the retry policy's backoff
    // (1 s for a first attempt here), not at once.
    assert_eq!(
        stored.state,
        OpState::Waiting {
            until: START_MS + 1_000
        }
    );
    assert_eq!(stored.op.base_version, Some(7));
    let log = s.conflict_log(&ConflictFilter::default()).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].resolution, Resolution::KeepLocal);
    assert_eq!(log[0].losing_payload.as_deref(), Some(&b"remote"[..]));
    assert!(events.iter().any(|e| matches!(
        e,
        WorkerEvent::ConflictResolved {
            resolution: "keep_local",
            remote_version: 7,
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn merged_replaces_the_payload() {
    let (s, id, summary, _) = conflict_with(Resolution::Merged(b"both".to_vec())).await;
    assert_eq!(summary.conflicts.merged, 1);
    let stored = s.get(id).unwrap().unwrap();
    assert_eq!(stored.op.payload, b"both");
    assert_eq!(stored.op.base_version, Some(7));
}

#[tokio::test(start_paused = true)]
async fn keep_remote_drops_but_keeps_the_losing_payload_in_the_log() {
    let (s, id, summary, events) = conflict_with(Resolution::KeepRemote).await;
    assert_eq!(summary.conflicts.keep_remote, 1);
    assert!(s.get(id).unwrap().is_none());
    let log = s.conflict_log(&ConflictFilter::default()).unwrap();
    assert_eq!(log[0].losing_payload.as_deref(), Some(&b"a"[..]));
    assert!(events.iter().any(|e| matches!(
        e,
        WorkerEvent::ConflictResolved {
            resolution: "keep_remote",
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn defer_parks_the_conflict_for_the_application() {
    let (s, id, summary, events) = conflict_with(Resolution::Defer).await;
    assert_eq!(summary.conflicts.deferred, 1);
    assert_eq!(s.get(id).unwrap().unwrap().state, OpState::Deferred);
    let deferred = s.list_deferred(&cpc_storage::Page::ALL).unwrap();
    assert_eq!(deferred.len(), 1);
    assert_eq!(deferred[0].remote.version, 7);
    assert!(events
        .iter()
        .any(|e| matches!(e, WorkerEvent::Deferred { id: d, .. } if *d == id)));
    assert_eq!(s.pending().unwrap(), 0);
}
