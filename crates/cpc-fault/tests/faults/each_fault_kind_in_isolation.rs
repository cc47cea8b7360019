use crate::PushOps as _;
use std::time::Duration;

use cpc_core::SimClock;
use cpc_core::{match_outcomes, PushOutcome, TransportError};
use cpc_fault::{FaultPlan, FaultyTransport, Latency, Probability, SimulatedRemote};
use tokio::time::Instant;

use crate::ops;

fn always() -> Probability {
    Probability::ALWAYS
}

fn setup(plan: FaultPlan) -> (SimulatedRemote, FaultyTransport<SimulatedRemote>) {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(Default::default(), clock);
    let t = FaultyTransport::new(remote.clone(), plan, 1).with_clock(clock);
    (remote, t)
}

#[tokio::test(start_paused = true)]
async fn lost_ack_applies_once_and_the_client_sees_a_timeout() {
    let (remote, t) = setup(FaultPlan {
        lost_ack: always(),
        timeout: Duration::from_secs(5),
        ..FaultPlan::none()
    });
    let batch = ops(3);
    let start = Instant::now();
    assert_eq!(t.push_ops(&batch).await, Err(TransportError::Timeout));
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(remote.apply_count(), 3);
    // The client resends: dedupe answers with the first versions and
    // nothing is applied twice.
    let inner = remote.push_ops(&batch).await.unwrap();
    assert!(inner
        .iter()
        .all(|o| o.outcome == PushOutcome::AlreadyApplied { version: 1 }));
    assert_eq!(remote.apply_count(), 3);
    assert_eq!(t.counters().lost_acks, 1);
}

#[tokio::test(start_paused = true)]
async fn drop_applies_nothing_and_times_out() {
    let (remote, t) = setup(FaultPlan {
        drop: always(),
        timeout: Duration::from_secs(7),
        ..FaultPlan::none()
    });
    let start = Instant::now();
    assert_eq!(t.push_ops(&ops(2)).await, Err(TransportError::Timeout));
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    assert_eq!(remote.apply_count(), 0);
    assert_eq!(remote.stats().requests, 0);
    assert_eq!(t.counters().dropped, 1);
}

#[tokio::test(start_paused = true)]
async fn server_error_comes_before_apply() {
    let (remote, t) = setup(FaultPlan {
        server_error: always(),
        server_error_status: 502,
        latency: Latency::Fixed {
            delay: Duration::from_millis(80),
        },
        ..FaultPlan::none()
    });
    let start = Instant::now();
    assert_eq!(
        t.push_ops(&ops(2)).await,
        Err(TransportError::Server { status: 502 })
    );
    assert_eq!(start.elapsed(), Duration::from_millis(80));
    assert_eq!(remote.apply_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_carries_retry_after_and_applies_nothing() {
    let (remote, t) = setup(FaultPlan {
        rate_limit: always(),
        retry_after: Some(Duration::from_secs(3)),
        ..FaultPlan::none()
    });
    assert_eq!(
        t.push_ops(&ops(1)).await,
        Err(TransportError::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        })
    );
    assert_eq!(remote.apply_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn partial_batch_applies_a_prefix_and_asks_to_retry_the_rest() {
    let (remote, t) = setup(FaultPlan {
        partial_batch: always(),
        ..FaultPlan::none()
    });
    let batch = ops(10);
    let mut saw_short_prefix = false;
    for round in 0..5 {
        let out = t.push_ops(&batch).await.unwrap();
        assert_eq!(out.len(), batch.len(), "round {round}");
        let k = out
            .iter()
            .position(|o| matches!(o.outcome, PushOutcome::RetryLater { .. }))
            .unwrap();
        assert!(out[k..]
            .iter()
            .all(|o| o.outcome == PushOutcome::RetryLater { after: None }));
        assert!(out[..k]
            .iter()
            .all(|o| !matches!(o.outcome, PushOutcome::RetryLater { .. })));
        saw_short_prefix |= k < batch.len() - 1;
    }
    assert!(saw_short_prefix);
    // Only prefixes were applied, so the log is a prefix of the batch.
    let log = remote.apply_log();
    for (rec, op) in log.iter().zip(&batch) {
        assert_eq!(rec.op_id, op.id);
    }
    // A batch of one has no proper prefix and passes.
    let one = ops(11).pop().unwrap();
    assert!(t.push_ops(std::slice::from_ref(&one)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn corrupt_answer_reaches_the_caller_who_detects_it() {
    let (remote, t) = setup(FaultPlan {
        corrupt: always(),
        ..FaultPlan::none()
    });
    let batch = ops(4);
    let mut lengths = std::collections::BTreeSet::new();
    for _ in 0..8 {
        // The wrapper hands the mismatched answer over as is...
        let out = t.push_ops(&batch).await.unwrap();
        assert_ne!(out.len(), batch.len());
        lengths.insert(out.len());
        // ...and the caller's check turns it into a protocol error.
        assert!(matches!(
            match_outcomes(&batch, out),
            Err(TransportError::Protocol(_))
        ));
    }
    assert_eq!(lengths.into_iter().collect::<Vec<_>>(), vec![3, 5]);
    // The batch was applied; replays are deduplicated.
    assert_eq!(remote.apply_count(), 4);
    assert_eq!(t.counters().corrupt, 8);
}

#[tokio::test(start_paused = true)]
async fn reordered_answers_name_their_operations() {
    let (remote, t) = setup(FaultPlan {
        reorder: always(),
        ..FaultPlan::none()
    });
    let batch = ops(4);
    let out = t.push_ops(&batch).await.unwrap();
    // Another order than the batch's...
    let answered: Vec<_> = out.iter().map(|o| o.op).collect();
    let sent: Vec<_> = batch.iter().map(|o| o.id).collect();
    assert_ne!(answered, sent);
    // ...that matching by id puts right.
    let matched = match_outcomes(&batch, out).unwrap();
    assert!(matched
        .iter()
        .all(|o| matches!(o, PushOutcome::Applied { .. })));
    assert_eq!(remote.apply_count(), 4);
    assert_eq!(t.counters().reordered, 1);
}

#[tokio::test(start_paused = true)]
async fn answers_slower_than_the_timeout_are_timeouts_after_apply() {
    let (remote, t) = setup(FaultPlan {
        latency: Latency::Fixed {
            delay: Duration::from_secs(12),
        },
        timeout: Duration::from_secs(10),
        ..FaultPlan::none()
    });
    let start = Instant::now();
    assert_eq!(t.push_ops(&ops(1)).await, Err(TransportError::Timeout));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    // The request arrived after 6 s: applied, answer late.
    assert_eq!(remote.apply_count(), 1);
    assert_eq!(remote.apply_log()[0].at, Duration::from_secs(6));
    assert_eq!(t.counters().slow_timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn latency_distributions_stay_in_their_bounds() {
    let uniform = Latency::Uniform {
        min: Duration::from_millis(10),
        max: Duration::from_millis(200),
    };
    let tail = Latency::LongTail {
        median: Duration::from_millis(50),
        p99: Duration::from_secs(2),
        max: Duration::from_secs(30),
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let mut u: Vec<Duration> = (0..10_000).map(|_| uniform.sample(&mut rng)).collect();
    let mut l: Vec<Duration> = (0..10_000).map(|_| tail.sample(&mut rng)).collect();
    u.sort();
    l.sort();
    assert!(u[0] >= Duration::from_millis(10) && u[9_999] <= Duration::from_millis(200));
    // Median near 50 ms, p99 near 2 s, nothing above the cap.
    let (median, p99) = (l[5_000], l[9_900]);
    assert!(
        median > Duration::from_millis(40) && median < Duration::from_millis(60),
        "{median:?}"
    );
    assert!(
        p99 > Duration::from_millis(1_400) && p99 < Duration::from_millis(2_800),
        "{p99:?}"
    );
    assert!(l[9_999] <= Duration::from_secs(30));

    // Through the transport: the call takes exactly the sampled latency.
    let (_remote, t) = setup(FaultPlan {
        latency: Latency::Fixed {
            delay: Duration::from_millis(120),
        },
        ..FaultPlan::none()
    });
    let start = Instant::now();
    t.push_ops(&ops(1)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(120));
}

#[tokio::test(start_paused = true)]
async fn probabilities_are_honoured_and_counted() {
    let (remote, t) = setup(FaultPlan {
        drop: Probability::new(0.3).unwrap(),
        timeout: Duration::from_millis(10),
        ..FaultPlan::none()
    });
    let batch = ops(1);
    for _ in 0..2_000 {
        let _ = t.push_ops(&batch).await;
    }
    let c = t.counters();
    assert_eq!(c.calls, 2_000);
    assert_eq!(c.dropped + c.passed, 2_000);
    assert!((500..700).contains(&c.dropped), "dropped {}", c.dropped);
    assert_eq!(remote.stats().requests, c.passed);
}

#[test]
fn plans_whose_probabilities_exceed_one_are_refused() {
    let plan = FaultPlan {
        drop: Probability::new(0.6).unwrap(),
        lost_ack: Probability::new(0.6).unwrap(),
        ..FaultPlan::none()
    };
    let err = plan.validate().unwrap_err().to_string();
    assert!(err.contains("faults"), "{err}");
    assert!(Probability::new(1.5).is_none());
}
