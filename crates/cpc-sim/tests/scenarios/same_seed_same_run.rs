use std::time::Duration;

use cpc_fault::apply_log_text;
use cpc_sim::{run_reference, OperationMix, ReferenceOptions, Scenario};

fn lost_acks(seed: u64, dedupe: bool) -> Scenario {
    let mut s = Scenario::from_toml_str(include_str!("files/lost-acks.toml")).unwrap();
    s.seed = seed;
    s.remote.dedupe = dedupe;
    s.ops.per_device = 400;
    s
}

#[test]
fn workloads_are_a_function_of_the_seed() {
    let s = lost_acks(5, true);
    assert_eq!(s.workload(0).unwrap(), s.workload(0).unwrap());
    let other = lost_acks(6, true);
    assert_ne!(s.workload(0).unwrap(), other.workload(0).unwrap());
    assert!(s.workload(1).is_err());
}

#[test]
fn workloads_respect_the_mix() {
    let s = Scenario::builder("mix")
        .devices(2)
        .clock_skew(vec![-600_000, 600_000])
        .ops(OperationMix {
            per_device: 2_000,
            entities: 10,
            shared_entities: true,
            base_versions: true,
            arrival: cpc_sim::Arrival::Uniform {
                rate: 10.0,
                start: Duration::ZERO,
            },
            ..OperationMix::default()
        })
        .build()
        .unwrap();
    let a = s.workload(0).unwrap();
    let b = s.workload(1).unwrap();
    assert_eq!(a.len(), 2_000);
    assert_eq!(a[10].at, Duration::from_secs(1));
    // Shared records, distinct nodes, skewed clocks 20 minutes apart.
    assert_eq!(a[0].op.entity.collection, "items");
    assert!(a
        .iter()
        .all(|p| p.op.entity.id.parse::<u64>().unwrap() < 10));
    assert_ne!(a[0].op.timestamp.node, b[0].op.timestamp.node);
    assert_eq!(
        b[0].op.timestamp.wall_ms - a[0].op.timestamp.wall_ms,
        1_200_000
    );
    // Ids strictly increase per device; the first op of a record is a create.
    assert!(a.windows(2).all(|w| w[0].op.id < w[1].op.id));
    let first_of_0 = a.iter().find(|p| p.op.entity.id == "0").unwrap();
    assert_eq!(first_of_0.op.kind, cpc_sync::core::OperationKind::Create);
    assert_eq!(first_of_0.op.base_version, None);
    assert!(a.iter().any(|p| p.op.base_version.is_some()));
    // Every priority appears with the default weights.
    let crit = a
        .iter()
        .filter(|p| p.op.priority == cpc_sync::core::OperationPriority::Critical)
        .count();
    assert!(crit > 0 && crit < 100, "{crit}");
}

#[tokio::test(start_paused = true)]
async fn same_seed_gives_byte_identical_report_and_apply_log() {
    let options = ReferenceOptions::default();
    let a = run_reference(&lost_acks(7, true), &options).await.unwrap();
    let b = run_reference(&lost_acks(7, true), &options).await.unwrap();
    assert!(a.report.passed, "{}", a.report);
    assert!(a.counters.lost_acks > 0);
    assert_eq!(a.report.to_text(), b.report.to_text());
    assert_eq!(a.report.to_json(), b.report.to_json());
    assert_eq!(apply_log_text(&a.apply_log), apply_log_text(&b.apply_log));
    assert!(a.report.to_text().starts_with("seed 7\n"));

    let c = run_reference(&lost_acks(8, true), &options).await.unwrap();
    assert_ne!(apply_log_text(&a.apply_log), apply_log_text(&c.apply_log));
    assert_ne!(a.report.to_text(), c.report.to_text());
}

#[tokio::test(start_paused = true)]
async fn without_dedupe_lost_acks_become_duplicates_and_the_run_fails() {
    let out = run_reference(&lost_acks(7, false), &ReferenceOptions::default())
        .await
        .unwrap();
    assert!(out.report.duplicated.count > 0, "{}", out.report);
    assert!(!out.report.passed);
}

#[tokio::test(start_paused = true)]
async fn a_hostile_multi_device_run_keeps_every_invariant() {
    let mut s = Scenario::from_toml_str(include_str!("files/everything.toml")).unwrap();
    s.ops.per_device = 300;
    // The reference client does not age priorities and has no retry
    // budget, so only the invariants are asserted here.
    s.expect = Default::default();
    s.expect.max_priority_inversions = u64::MAX;
    let a = run_reference(&s, &ReferenceOptions::default())
        .await
        .unwrap();
    let r = &a.report;
    assert_eq!(
        (
            r.lost.count,
            r.duplicated.count,
            r.reordered.count,
            r.unexpected.count
        ),
        (0, 0, 0, 0),
        "{r}"
    );
    assert!(r.abandoned > 0, "poison and the rejected collection: {r}");
    assert!(
        a.remote_stats.conflicts > 0,
        "shared records with base versions: {r}"
    );
    let b = run_reference(&s, &ReferenceOptions::default())
        .await
        .unwrap();
    assert_eq!(r.to_text(), b.report.to_text());
    assert_eq!(apply_log_text(&a.apply_log), apply_log_text(&b.apply_log));
}
