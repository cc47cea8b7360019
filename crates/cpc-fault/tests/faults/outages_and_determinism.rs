use crate::PushOps as _;
use std::time::Duration;

use cpc_core::TransportError;
use cpc_fault::{
    FaultPlan, FaultyTransport, Flapping, LinkState, Probability, Schedule, SimClock,
    SimulatedRemote,
};
use tokio::time::Instant;

use crate::ops;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

#[tokio::test(start_paused = true)]
async fn offline_windows_answer_offline_at_once_and_heal() {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(Default::default(), clock);
    let schedule = Schedule::builder().offline(s(10), s(20)).build().unwrap();
    let t = FaultyTransport::new(remote.clone(), FaultPlan::none(), 1)
        .with_schedule(schedule)
        .with_clock(clock);
    let batch = ops(1);
    assert!(t.push_ops(&batch).await.is_ok());
    clock.sleep_until(s(10)).await;
    let before = Instant::now();
    assert_eq!(t.push_ops(&batch).await, Err(TransportError::Offline));
    assert_eq!(before.elapsed(), Duration::ZERO);
    clock.sleep_until(s(19)).await;
    assert_eq!(t.push_ops(&batch).await, Err(TransportError::Offline));
    clock.sleep_until(s(20)).await;
    assert!(t.push_ops(&batch).await.is_ok());
    assert_eq!(t.counters().offline, 2);
    assert_eq!(remote.stats().requests, 2);
}

#[tokio::test(start_paused = true)]
async fn degraded_link_fails_with_its_probability() {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(Default::default(), clock);
    let schedule = Schedule::builder()
        .degraded(s(0), s(100_000), Probability::new(0.25).unwrap())
        .build()
        .unwrap();
    let plan = FaultPlan {
        timeout: Duration::from_millis(1),
        ..FaultPlan::none()
    };
    let t = FaultyTransport::new(remote, plan, 3)
        .with_schedule(schedule)
        .with_clock(clock);
    let batch = ops(1);
    let mut failed = 0;
    for _ in 0..2_000 {
        if t.push_ops(&batch).await == Err(TransportError::Timeout) {
            failed += 1;
        }
    }
    assert!((420..580).contains(&failed), "failed {failed}");
    assert_eq!(t.counters().degraded, failed);
}

#[tokio::test(start_paused = true)]
async fn flapping_link_alternates_every_period() {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(Default::default(), clock);
    let schedule = Schedule::builder()
        .flapping(Flapping {
            from: s(0),
            period: s(2),
            duty: Probability::new(0.5).unwrap(),
            span: s(300),
            state: LinkState::Offline,
        })
        .build()
        .unwrap();
    assert_eq!(schedule.outage_count(), 150);
    let t = FaultyTransport::new(remote, FaultPlan::none(), 1)
        .with_schedule(schedule)
        .with_clock(clock);
    let batch = ops(1);
    let mut pattern = Vec::new();
    for sec in 0..6 {
        clock.sleep_until(s(sec)).await;
        pattern.push(t.push_ops(&batch).await.is_ok());
    }
    assert_eq!(pattern, vec![false, true, false, true, false, true]);
}

/// The same calls with the same seed make the same decisions; another seed
/// makes others.
#[tokio::test(start_paused = true)]
async fn same_seed_same_decisions() {
    async fn trace(seed: u64) -> Vec<String> {
        let clock = SimClock::start_now();
        let remote = SimulatedRemote::new(Default::default(), clock);
        let plan = FaultPlan {
            drop: Probability::new(0.2).unwrap(),
            lost_ack: Probability::new(0.2).unwrap(),
            partial_batch: Probability::new(0.2).unwrap(),
            timeout: Duration::from_millis(100),
            ..FaultPlan::none()
        };
        let t = FaultyTransport::new(remote, plan, seed).with_clock(clock);
        let batch = ops(5);
        let mut out = Vec::new();
        for _ in 0..200 {
            out.push(match t.push_ops(&batch).await {
                Ok(o) => o
                    .iter()
                    .map(|x| x.outcome.name())
                    .collect::<Vec<_>>()
                    .join(","),
                Err(e) => e.name().to_owned(),
            });
        }
        out
    }
    let a = trace(11).await;
    assert_eq!(a, trace(11).await);
    assert_ne!(a, trace(12).await);
}
