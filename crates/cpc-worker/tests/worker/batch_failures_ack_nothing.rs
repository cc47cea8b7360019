//! Failures of a whole push: nothing acked, everything retried (or given
//! back uncounted for credentials).

use cpc_storage::QueueStorageExt;
use std::sync::Arc;
use std::time::Duration;

use cpc_core::{OpOutcome, Operation, OperationPriority, PushOutcome, TransportError};
use cpc_storage::{OpState, QueueStorage};
use cpc_worker::WorkerEvent;

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn a_short_answer_is_a_protocol_error_and_acks_nothing() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let ids: Vec<_> = (0..5)
        .map(|i| enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal)))
        .collect();
    let t = Scripted::applied();
    // Four answers for five operations: even the four must not be acked.
    t.then(Box::new(|batch: &[Operation]| {
        Ok(batch[1..]
            .iter()
            .map(|o| OpOutcome::new(o.id, PushOutcome::Applied { version: 1 }))
            .collect())
    }));
    let w = worker(&s, &t, &c).build().unwrap();
    let summary = w.process_once().await.unwrap();
    assert_eq!(summary.applied, 0);
    assert_eq!(summary.retried, 5);
    assert!(matches!(
        summary.batch_error,
        Some(TransportError::Protocol(_))
    ));
    for id in &ids {
        let stored = s.get(*id).unwrap().unwrap();
        assert_eq!(
            stored.state,
            OpState::Waiting {
                until: START_MS + 1_000
            }
        );
        // A whole batch answered wrongly says nothing about any one
        // operation: the attempt is given back.
        assert_eq!(stored.attempts, 0);
    }
    // The retry fires by itself and succeeds, in halves: an operation may
    // have caused the bad answer, so its batch is split.
    tokio::time::advance(Duration::from_secs(1)).await;
    let summary = w.process_once().await.unwrap();
    assert_eq!(summary.applied, 3);
    let summary = w.process_once().await.unwrap();
    assert_eq!(summary.applied, 2);
    assert_eq!(s.pending().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn outcomes_answered_in_another_order_are_matched_by_operation_id() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let a = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let b = enqueue(&s, &c, op(&h, "b", OperationPriority::Normal));
    let d = enqueue(&s, &c, op(&h, "d", OperationPriority::Normal));
    let t = Scripted::applied();
    // Only `a` is applied; the answer lists it last. Matched by position,
    // `d`'s Applied would land on `a` and `a`'s on `d`.
    t.then(Box::new(move |batch: &[Operation]| {
        let mut answer: Vec<OpOutcome> = batch
            .iter()
            .map(|o| {
                let outcome = if o.id == a {
                    PushOutcome::Applied { version: 7 }
                } else if o.id == b {
                    PushOutcome::RetryLater { after: None }
                } else {
                    PushOutcome::Rejected {
                        reason: "invalid".into(),
                    }
                };
                OpOutcome::new(o.id, outcome)
            })
            .collect();
        answer.reverse();
        Ok(answer)
    }));
    let w = worker(&s, &t, &c).build().unwrap();
    let summary = w.process_once().await.unwrap();
    assert_eq!(summary.applied, 1);
    assert_eq!(summary.retried, 1);
    assert_eq!(summary.dead_lettered, 1);
    assert!(s.get(a).unwrap().is_none(), "a was applied and acked");
    assert!(matches!(
        s.get(b).unwrap().unwrap().state,
        OpState::Waiting { .. }
    ));
    assert!(matches!(
        s.get(d).unwrap().unwrap().state,
        OpState::Dead { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn an_answer_naming_an_unknown_or_repeated_operation_acks_nothing() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let ids: Vec<_> = (0..3)
        .map(|i| enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal)))
        .collect();
    let t = Scripted::applied();
    let stranger = op(&h, "stranger", OperationPriority::Normal).id;
    // The right count, but one outcome names an operation never sent.
    t.then(Box::new(move |batch: &[Operation]| {
        let mut answer: Vec<OpOutcome> = batch
            .iter()
            .map(|o| OpOutcome::new(o.id, PushOutcome::Applied { version: 1 }))
            .collect();
        answer[2].op = stranger;
        Ok(answer)
    }));
    // The right count, but one operation answered twice.
    t.then(Box::new(|batch: &[Operation]| {
        Ok(batch
            .iter()
            .map(|_| OpOutcome::new(batch[0].id, PushOutcome::Applied { version: 1 }))
            .collect())
    }));
    let w = worker(&s, &t, &c).build().unwrap();
    for _ in 0..2 {
        let summary = w.process_once().await.unwrap();
        assert_eq!(summary.applied, 0);
        assert!(matches!(
            summary.batch_error,
            Some(TransportError::Protocol(_))
        ));
        assert_eq!(s.pending().unwrap(), 3, "nothing acked");
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    for id in &ids {
        assert!(s.get(*id).unwrap().is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn transport_errors_retry_the_whole_batch_with_the_rate_limit_hint() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let id = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let t = Scripted::applied();
    t.then(fail(TransportError::RateLimited {
        retry_after: Some(Duration::from_secs(20)),
    }));
    let w = worker(&s, &t, &c).build().unwrap();
    let summary = w.process_once().await.unwrap();
    assert_eq!(summary.retried, 1);
    assert_eq!(
        s.get(id).unwrap().unwrap().state,
        OpState::Waiting {
            until: START_MS + 20_000
        }
    );
}

#[tokio::test(start_paused = true)]
async fn unauthorized_pauses_without_counting_and_resume_continues() {
    refusal_to_talk_pauses(TransportError::Unauthorized, |e| {
        matches!(e, WorkerEvent::AuthRequired)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_incompatible_server_pauses_with_upgrade_required_and_counts_nothing() {
    refusal_to_talk_pauses(TransportError::Incompatible("v2 only".into()), |e| {
        matches!(e, WorkerEvent::UpgradeRequired)
    })
    .await;
}

/// The remote refuses to talk (`error`): the worker reports it (`event`),
/// pauses, counts no attempt, sends nothing until resumed, then drains.
async fn refusal_to_talk_pauses(error: TransportError, event: fn(&WorkerEvent) -> bool) {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let ids: Vec<_> = (0..3)
        .map(|i| enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal)))
        .collect();
    let t = Scripted::applied();
    t.then(fail(error));
    let w = worker(&s, &t, &c).build().unwrap();
    let mut events = w.subscribe();
    w.start().await.unwrap();
    // The loop pushes once, gets Unauthorized and pauses.
    let auth = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if event(&events.recv().await.unwrap()) {
                break;
            }
        }
    })
    .await;
    assert!(auth.is_ok(), "no pause event");
    assert!(w.is_paused());
    for id in &ids {
        let stored = s.get(*id).unwrap().unwrap();
        assert_eq!(stored.state, OpState::Ready);
        assert_eq!(stored.attempts, 0, "a refusal to talk is not an attempt");
    }
    // Paused: nothing is sent however long we wait.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(t.pushes(), 1);
    w.resume();
    tokio::time::timeout(Duration::from_secs(60), w.drained())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.pushes(), 2);
    assert_eq!(s.pending().unwrap(), 0);
    w.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_push_that_hangs_times_out_and_is_retried() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let id = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let t = Scripted::applied();
    *t.latency.lock().unwrap() = Some(Duration::from_secs(3600));
    let w = worker(&s, &t, &c)
        .config(cpc_worker::WorkerConfig {
            push_timeout: Duration::from_secs(5),
            ..cpc_worker::WorkerConfig::default()
        })
        .build()
        .unwrap();
    let summary = w.process_once().await.unwrap();
    assert_eq!(summary.batch_error, Some(TransportError::Timeout));
    assert!(matches!(
        s.get(id).unwrap().unwrap().state,
        OpState::Waiting { .. }
    ));
    let _ = Arc::clone(&t);
}
