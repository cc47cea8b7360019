//! Priority across entities, submission order within one.

use std::time::Duration;

use cpc_fault::{check_with, CheckOptions, FaultPlan, Probability, RemoteOptions};
use cpc_sync::core::OperationPriority;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn per_entity_order_holds_under_random_priorities_and_faults() {
    for seed in [7u64, 8, 9] {
        let plan = FaultPlan {
            lost_ack: Probability::new(0.1).unwrap(),
            server_error: Probability::new(0.1).unwrap(),
            partial_batch: Probability::new(0.1).unwrap(),
            ..FaultPlan::none()
        };
        let w = world(RemoteOptions::default(), plan, seed);
        let engine = builder(&w)
            .retry_budget(None)
            .circuit_breaker(None)
            .max_in_flight(2)
            .batch_size(16)
            .start()
            .await
            .unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut submitted = Vec::new();
        for _ in 0..400 {
            let p = OperationPriority::from_rank(rng.gen_range(0..4)).unwrap();
            let op = op(&engine, &format!("e{}", rng.gen_range(0..12)), p, b"x");
            submitted.push(record(&w, &op));
            engine.submit(op).await.unwrap();
        }
        drain(&engine, Duration::from_secs(3600)).await;
        let mut options = CheckOptions {
            seed,
            ..Default::default()
        };
        // Faults make ops back off while others pass them; only order and
        // exactly-once are asserted here.
        options.bounds.max_priority_inversions = u64::MAX;
        let report = check_with(&w.remote.apply_log(), &submitted, &options);
        assert!(report.passed, "{report}");
        assert_eq!(report.reordered.count, 0);
        assert_eq!(report.duplicated.count, 0);
        assert_eq!(report.applies, 400);
        engine.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_critical_op_behind_ten_thousand_background_ops_goes_in_the_next_batch() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 10);
    let engine = builder(&w).build().unwrap();
    let background: Vec<_> = (0..10_000)
        .map(|i| {
            op(
                &engine,
                &format!("bg{i}"),
                OperationPriority::Background,
                b"x",
            )
        })
        .collect();
    engine.submit_batch(background).await.unwrap();
    // One batch of background work goes out first.
    let first = engine.process_once().await.unwrap();
    assert_eq!(first.attempted_at(OperationPriority::Background), 64);
    let critical = op(&engine, "urgent", OperationPriority::Critical, b"!");
    let id = critical.id;
    engine.submit(critical).await.unwrap();
    let next = engine.process_once().await.unwrap();
    assert_eq!(next.attempted_at(OperationPriority::Critical), 1);
    let log = w.remote.apply_log();
    let pos = log.iter().position(|r| r.op_id == id).unwrap();
    assert_eq!(
        pos, 64,
        "applied first in the batch right after it was submitted"
    );
}
