//! Whatever the remote answers, a queue that still holds work always has a
//! wake-up scheduled: the worker drains it without any new submission.

use cpc_storage::QueueStorageExt;
use std::sync::Arc;
use std::time::Duration;

use cpc_conflict::LocalWins;
use cpc_core::{
    HlcTimestamp, NodeId, OpOutcome, Operation, OperationPriority, PushOutcome, RemoteRecord,
    TransportError,
};
use cpc_worker::{SyncWorker, WorkerConfig};
use proptest::prelude::*;

use crate::support::*;

#[derive(Debug, Clone)]
enum OpAnswer {
    Applied,
    RetryLater(Option<u64>),
    Conflict,
}

#[derive(Debug, Clone)]
enum PushAnswer {
    PerOp(Vec<OpAnswer>),
    Fail(TransportError),
    Short,
    /// The transport panics: the batch fails, its claims come back, the
    /// in-flight count stays balanced.
    Panic,
    /// Per-op answers, listed in reverse order (matched by id).
    Reversed(Vec<OpAnswer>),
}

fn op_answer() -> impl Strategy<Value = OpAnswer> {
    prop_oneof![
        3 => Just(OpAnswer::Applied),
        3 => prop::option::of(0u64..120_000).prop_map(OpAnswer::RetryLater),
        1 => Just(OpAnswer::Conflict),
    ]
}

fn push_answer() -> impl Strategy<Value = PushAnswer> {
    prop_oneof![
        4 => prop::collection::vec(op_answer(), 1..8).prop_map(PushAnswer::PerOp),
        1 => Just(PushAnswer::Fail(TransportError::Server { status: 503 })),
        1 => Just(PushAnswer::Fail(TransportError::Timeout)),
        1 => Just(PushAnswer::Fail(TransportError::RateLimited { retry_after: Some(Duration::from_secs(90)) })),
        1 => Just(PushAnswer::Short),
        1 => Just(PushAnswer::Panic),
        1 => prop::collection::vec(op_answer(), 1..8).prop_map(PushAnswer::Reversed),
    ]
}

fn per_op(batch: &[Operation], list: &[OpAnswer]) -> Vec<OpOutcome> {
    batch
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let outcome = match &list[i % list.len()] {
                OpAnswer::Applied => PushOutcome::Applied { version: 1 },
                OpAnswer::RetryLater(after) => PushOutcome::RetryLater {
                    after: after.map(Duration::from_millis),
                },
                OpAnswer::Conflict => PushOutcome::Conflict {
                    remote: RemoteRecord {
                        version: 2,
                        timestamp: HlcTimestamp::new(1, 0, NodeId(9)),
                        payload: None,
                        node: NodeId(9),
                    },
                },
            };
            OpOutcome::new(op.id, outcome)
        })
        .collect()
}

fn answer(a: PushAnswer) -> Answer {
    Box::new(move |batch: &[Operation]| match &a {
        PushAnswer::Fail(e) => Err(e.clone()),
        PushAnswer::Short => Ok(Vec::new()),
        PushAnswer::Panic => panic!("scripted transport panic"),
        PushAnswer::PerOp(list) => Ok(per_op(batch, list)),
        PushAnswer::Reversed(list) => {
            let mut answer = per_op(batch, list);
            answer.reverse();
            Ok(answer)
        }
    })
}

fn run_case(
    ops: Vec<(u8, u8)>,
    answers: Vec<PushAnswer>,
    defaults: bool,
    batch_size: usize,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = storage();
        let c = clock();
        let h = hlc(&c);
        let t = Scripted::applied();
        let scripted = answers.len();
        for a in answers {
            t.then(answer(a));
        }
        let mut b = SyncWorker::builder(s.clone(), t.clone())
            .clock(c.clone())
            .resolver(Arc::new(LocalWins))
            .config(WorkerConfig {
                batch_size,
                seed: Some(3),
                ..WorkerConfig::default()
            });
        if !defaults {
            b = b.retry_policy(plain_policy(1_000));
        }
        let w = b.build().unwrap();
        w.start().await.unwrap();
        let n = ops.len();
        for (entity, prio) in ops {
            let p = OperationPriority::from_rank(prio % 4).unwrap();
            let id = op(&h, &format!("e{}", entity % 6), p);
            s.enqueue(id, c.now_ms()).unwrap();
            w.notify();
        }
        // From here on nobody notifies the worker: only its own wake-ups
        // can finish the job.
        let drained = tokio::time::timeout(Duration::from_secs(6 * 3600), w.drained()).await;
        let pending = s.pending().unwrap();
        let pushes = t.pushes();
        let in_flight = w.in_flight();
        w.shutdown().await.unwrap();
        prop_assert!(
            drained.is_ok(),
            "stalled with {pending} pending after {pushes} pushes"
        );
        prop_assert_eq!(pending, 0);
        prop_assert_eq!(in_flight, 0, "in-flight accounting balanced");
        // No busy loop: every push is either scripted or makes progress.
        prop_assert!(
            pushes <= scripted + n + 1,
            "{pushes} pushes for {n} ops and {scripted} scripted answers"
        );
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_outcomes_never_leave_work_unscheduled(
        ops in prop::collection::vec((any::<u8>(), any::<u8>()), 1..60),
        answers in prop::collection::vec(push_answer(), 0..30),
        batch_size in 1usize..16,
    ) {
        run_case(ops, answers, false, batch_size)?;
    }

    #[test]
    fn also_with_the_default_budget_and_breaker(
        ops in prop::collection::vec((any::<u8>(), any::<u8>()), 1..40),
        answers in prop::collection::vec(push_answer(), 0..20),
    ) {
        run_case(ops, answers, true, 8)?;
    }
}
