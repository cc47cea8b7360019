//! Offline periods, lost acks, corrupt answers, poison and outages: nothing
//! lost, nothing applied twice.

use std::time::Duration;

use cpc_fault::{
    check_with, CheckOptions, FaultPlan, PoisonKey, PoisonRule, Probability, RemoteOptions,
    Schedule, ScriptedNetwork,
};
use cpc_sync::core::OperationPriority;
use cpc_sync::network::{ManualSource, MonitorConfig, NetworkMonitor};
use cpc_sync::worker::WorkerEvent;

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn submits_made_offline_are_all_applied_once_after_reconnect() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 1);
    let monitor = NetworkMonitor::new(MonitorConfig {
        seed: Some(2),
        ..MonitorConfig::default()
    })
    .unwrap();
    let link = ManualSource::new();
    link.connect(monitor.sink("manual"));
    link.set_offline();
    let engine = builder(&w).network(monitor).start().await.unwrap();
    let mut submitted = Vec::new();
    for i in 0..300 {
        let op = op(
            &engine,
            &format!("e{}", i % 40),
            OperationPriority::Normal,
            b"x",
        );
        submitted.push(record(&w, &op));
        engine.submit(op).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1800)).await;
    assert_eq!(
        w.transport.counters().calls,
        0,
        "nothing sent while offline"
    );
    assert_eq!(engine.pending().await.unwrap(), 300);
    link.set_online();
    drain(&engine, Duration::from_secs(120)).await;
    let report = check_with(
        &w.remote.apply_log(),
        &submitted,
        &CheckOptions {
            seed: 1,
            ..Default::default()
        },
    );
    assert!(report.passed, "{report}");
    assert_eq!(report.applies, 300);
    engine.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn lost_acks_cause_no_double_application_and_no_loss() {
    let plan = FaultPlan {
        lost_ack: Probability::new(0.3).unwrap(),
        ..FaultPlan::none()
    };
    let w = world(RemoteOptions::default(), plan, 3);
    let engine = builder(&w)
        .retry_budget(None)
        .circuit_breaker(None)
        .start()
        .await
        .unwrap();
    let mut submitted = Vec::new();
    for i in 0..500 {
        let op = op(
            &engine,
            &format!("e{}", i % 50),
            OperationPriority::Normal,
            b"x",
        );
        submitted.push(record(&w, &op));
        engine.submit(op).await.unwrap();
    }
    drain(&engine, Duration::from_secs(3600)).await;
    assert!(w.transport.counters().lost_acks > 0, "the plan lost no ack");
    let report = check_with(
        &w.remote.apply_log(),
        &submitted,
        &CheckOptions {
            seed: 3,
            ..Default::default()
        },
    );
    assert!(report.passed, "{report}");
    assert_eq!(report.applies, 500, "each applied exactly once");
    assert!(
        w.remote.stats().already_applied > 0,
        "replays were answered AlreadyApplied"
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_malformed_answer_acks_nothing() {
    let plan = FaultPlan {
        corrupt: Probability::new(1.0).unwrap(),
        ..FaultPlan::none()
    };
    let w = world(RemoteOptions::default(), plan, 4);
    let engine = builder(&w).build().unwrap();
    for i in 0..10 {
        engine
            .submit(op(
                &engine,
                &format!("e{i}"),
                OperationPriority::Normal,
                b"x",
            ))
            .await
            .unwrap();
    }
    let summary = engine.process_once().await.unwrap();
    assert_eq!(summary.attempted, 10);
    assert_eq!(summary.applied, 0);
    assert_eq!(summary.retried, 10);
    assert!(matches!(
        summary.batch_error,
        Some(cpc_sync::core::TransportError::Protocol(_))
    ));
    assert_eq!(engine.pending().await.unwrap(), 10, "nothing acked");
}

#[tokio::test(start_paused = true)]
async fn a_poisoned_op_is_dead_lettered_and_the_other_999_apply() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 5);
    let engine = builder(&w).build().unwrap();
    let mut ids = Vec::new();
    for i in 0..1000 {
        let op = op(&engine, &format!("e{i}"), OperationPriority::Normal, b"x");
        ids.push(op.id);
        engine.submit(op).await.unwrap();
    }
    // Poison exactly one: the rule hashes ids, so pick a salt that hits one.
    let poisoned = ids[500];
    let salt = (0..100_000u64).find(|salt| {
        let rule = PoisonRule {
            fraction: Probability::new(0.001).unwrap(),
            key: PoisonKey::Operation,
            salt: *salt,
        };
        let hits: Vec<_> = ids.iter().filter(|id| rule_hits(&rule, **id)).collect();
        hits.len() == 1 && *hits[0] == poisoned
    });
    let rule = match salt {
        Some(salt) => PoisonRule {
            fraction: Probability::new(0.001).unwrap(),
            key: PoisonKey::Operation,
            salt,
        },
        None => {
            // No salt singles out ids[500]: poison whatever single op some salt picks.
            let salt = (0..100_000u64)
                .find(|salt| {
                    let rule = PoisonRule {
                        fraction: Probability::new(0.001).unwrap(),
                        key: PoisonKey::Operation,
                        salt: *salt,
                    };
                    ids.iter().filter(|id| rule_hits(&rule, **id)).count() == 1
                })
                .unwrap();
            PoisonRule {
                fraction: Probability::new(0.001).unwrap(),
                key: PoisonKey::Operation,
                salt,
            }
        }
    };
    let poisoned = *ids.iter().find(|id| rule_hits(&rule, **id)).unwrap();
    w.remote.update_options(|o| o.poison = Some(rule));
    let mut events = engine.subscribe();
    engine.start().await.unwrap();
    drain(&engine, Duration::from_secs(600)).await;
    let dead = engine.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].op.id, poisoned);
    assert_eq!(w.remote.apply_count(), 999);
    let mut saw = false;
    while let Ok(e) = events.try_recv() {
        saw |= matches!(e, WorkerEvent::DeadLettered { id, .. } if id == poisoned);
    }
    assert!(saw);
    engine.shutdown().await.unwrap();
}

fn rule_hits(rule: &PoisonRule, id: cpc_sync::core::OperationId) -> bool {
    let probe = cpc_sync::core::Operation {
        id,
        entity: cpc_sync::core::EntityKey::new("n", "x"),
        kind: cpc_sync::core::OperationKind::Update,
        payload: Vec::new(),
        priority: OperationPriority::Normal,
        timestamp: Default::default(),
        base_version: None,
    };
    rule.matches(&probe)
}

#[tokio::test(start_paused = true)]
async fn reconnect_after_an_outage_stays_under_the_retry_budget() {
    let schedule = Schedule::builder()
        .offline(Duration::from_secs(10), Duration::from_secs(610))
        .build()
        .unwrap();
    let w = world(RemoteOptions::default(), FaultPlan::none(), 6);
    let transport = std::sync::Arc::new(
        cpc_fault::FaultyTransport::new(w.remote.clone(), FaultPlan::none(), 6)
            .with_clock(w.clock)
            .with_schedule(schedule.clone())
            .track_first_attempts(true),
    );
    let monitor = NetworkMonitor::new(MonitorConfig {
        seed: Some(6),
        ..MonitorConfig::default()
    })
    .unwrap();
    monitor
        .attach(ScriptedNetwork::new(schedule.clone(), w.clock).with_lag(Duration::from_secs(5)))
        .unwrap();
    let engine = builder(&w)
        .transport_arc(transport.clone())
        .network(monitor)
        .start()
        .await
        .unwrap();
    let mut submitted = Vec::new();
    // Work trickles in before, during and after the outage.
    for i in 0..400 {
        let op = op(
            &engine,
            &format!("e{}", i % 60),
            OperationPriority::Normal,
            b"x",
        );
        submitted.push(record(&w, &op));
        engine.submit(op).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    drain(&engine, Duration::from_secs(3600)).await;
    let mut options = CheckOptions {
        seed: 6,
        ..Default::default()
    };
    options.last_outage_end = schedule.last_outage_end();
    options.transport_calls = Some(transport.counters().calls);
    options.bounds.max_drain_after_heal = Some(Duration::from_secs(300));
    let report = check_with(&w.remote.apply_log(), &submitted, &options);
    assert!(report.passed, "{report}");
    // The default budget: 500 tokens, 5 per retry, refilled at 10/s and by
    // one token per first-attempt success. Retries can never outrun that.
    let resent = transport.counters().ops_sent.saturating_sub(400);
    let secs = w.clock.elapsed().as_secs();
    let bound = 500 / 5 + secs * 10 / 5 + 400 / 5;
    assert!(resent <= bound, "{resent} resends, budget allows {bound}");
    engine.shutdown().await.unwrap();
}
