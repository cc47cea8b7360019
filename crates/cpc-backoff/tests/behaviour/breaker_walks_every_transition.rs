//! The circuit breaker's state machine, walked on tokio's paused clock.

use std::time::Duration;

use cpc_backoff::{
    BreakerState, CircuitBreaker, CircuitBreakerConfig, Error, ExponentialConfig,
    FailureRateConfig, Jitter,
};
use tokio::time::advance;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn config(threshold: u32, probes: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: threshold,
        failure_rate: None,
        half_open_probes: probes,
        cool_down: ExponentialConfig::default()
            .base(5 * SEC)
            .factor(2.0)
            .max_delay(40 * SEC)
            .jitter(Jitter::None),
    }
}

fn fail(breaker: &CircuitBreaker, times: u32) {
    for _ in 0..times {
        breaker.try_acquire().unwrap().failure();
    }
}

fn refused(breaker: &CircuitBreaker) -> (BreakerState, Duration) {
    match breaker.try_acquire() {
        Err(Error::CircuitOpen { state, retry_after }) => (state, retry_after),
        Err(other) => panic!("unexpected error {other}"),
        Ok(permit) => panic!("admitted (probe: {})", permit.is_probe()),
    }
}

#[tokio::test(start_paused = true)]
async fn closed_open_half_open_reopen_half_open_closed() {
    let breaker = CircuitBreaker::new(config(5, 2)).unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);

    // closed → open after 5 consecutive failures, not before.
    fail(&breaker, 4);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.snapshot().consecutive_failures, 4);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(refused(&breaker), (BreakerState::Open, 5 * SEC));

    // open → half-open exactly when the cool-down ends.
    advance(5 * SEC - MS).await;
    assert_eq!(refused(&breaker), (BreakerState::Open, MS));
    advance(MS).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    // half-open admits K = 2 probes, then refuses.
    let p1 = breaker.try_acquire().unwrap();
    let p2 = breaker.try_acquire().unwrap();
    assert!(p1.is_probe() && p2.is_probe());
    assert_eq!(refused(&breaker), (BreakerState::HalfOpen, Duration::ZERO));

    // A failed probe re-opens, with a longer cool-down (backoff: 10 s).
    p1.failure();
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.snapshot().opens, 2);
    assert_eq!(refused(&breaker), (BreakerState::Open, 10 * SEC));
    // The other probe's late success belongs to the old half-open period.
    p2.success();
    assert_eq!(breaker.state(), BreakerState::Open);

    advance(10 * SEC).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    // half-open → closed once K probes succeeded in a row.
    let p1 = breaker.try_acquire().unwrap();
    let p2 = breaker.try_acquire().unwrap();
    p1.success();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    p2.success();
    assert_eq!(breaker.state(), BreakerState::Closed);
    let snap = breaker.snapshot();
    assert_eq!(
        (snap.opens, snap.consecutive_failures, snap.open_until),
        (0, 0, None)
    );

    // After closing, the cool-down starts again from the base.
    fail(&breaker, 5);
    assert_eq!(refused(&breaker), (BreakerState::Open, 5 * SEC));
}

#[tokio::test(start_paused = true)]
async fn cool_down_grows_per_failed_probe_and_saturates() {
    let breaker = CircuitBreaker::new(config(1, 1)).unwrap();
    fail(&breaker, 1);
    let mut cool_downs = Vec::new();
    for _ in 0..6 {
        let (_, wait) = refused(&breaker);
        cool_downs.push(wait.as_secs());
        advance(wait).await;
        breaker.try_acquire().unwrap().failure();
    }
    assert_eq!(cool_downs, [5, 10, 20, 40, 40, 40]);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_consecutive_count() {
    let breaker = CircuitBreaker::new(config(3, 1)).unwrap();
    for _ in 0..10 {
        fail(&breaker, 2);
        breaker.try_acquire().unwrap().success();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn results_of_calls_admitted_before_a_transition_are_ignored() {
    let breaker = CircuitBreaker::new(config(2, 1)).unwrap();
    let slow = breaker.try_acquire().unwrap();
    fail(&breaker, 2);
    assert_eq!(breaker.state(), BreakerState::Open);
    advance(5 * SEC).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    // The slow call started while closed; its success is not a probe result.
    slow.success();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    let probe = breaker.try_acquire().unwrap();
    probe.success();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_frees_its_slot() {
    let breaker = CircuitBreaker::new(config(1, 1)).unwrap();
    fail(&breaker, 1);
    advance(5 * SEC).await;
    let probe = breaker.try_acquire().unwrap();
    assert_eq!(refused(&breaker).0, BreakerState::HalfOpen);
    drop(probe); // e.g. the call's future was cancelled
    let probe = breaker.try_acquire().unwrap();
    assert!(probe.is_probe());
    probe.success();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_the_window_opens() {
    let mut c = config(1_000, 1);
    c.failure_rate = Some(FailureRateConfig {
        threshold: 0.5,
        window: 10 * SEC,
        min_calls: 10,
    });
    let breaker = CircuitBreaker::new(c).unwrap();
    // 4 failures and 5 successes interleaved: never consecutive, 9 calls.
    for _ in 0..4 {
        breaker.try_acquire().unwrap().success();
        breaker.try_acquire().unwrap().failure();
    }
    breaker.try_acquire().unwrap().success();
    assert_eq!(breaker.state(), BreakerState::Closed);
    // The 10th result is a failure: 5/10 = 50 %.
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn old_results_slide_out_of_the_window() {
    let mut c = config(1_000, 1);
    c.failure_rate = Some(FailureRateConfig {
        threshold: 0.5,
        window: 10 * SEC,
        min_calls: 10,
    });
    let breaker = CircuitBreaker::new(c).unwrap();
    fail(&breaker, 9);
    advance(11 * SEC).await;
    // Nine old failures are out of the window: one new failure is 1 call.
    fail(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Closed);
    fail(&breaker, 8);
    assert_eq!(breaker.state(), BreakerState::Closed);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn jittered_cool_down_is_bounded_and_reproducible() {
    let mut c = config(1, 1);
    c.cool_down = c.cool_down.jitter(Jitter::Equal);
    let run = |seed| {
        let breaker = CircuitBreaker::new(c.clone()).unwrap().with_seed(seed);
        fail(&breaker, 1);
        refused(&breaker).1
    };
    for seed in 0..50 {
        let wait = run(seed);
        assert!(
            (2500 * MS..=5 * SEC).contains(&wait),
            "{wait:?} (seed {seed})"
        );
        assert_eq!(wait, run(seed));
    }
}

#[test]
fn invalid_configurations_are_rejected() {
    assert!(CircuitBreaker::new(config(0, 1)).is_err());
    assert!(CircuitBreaker::new(config(1, 0)).is_err());
    let mut c = config(1, 1);
    c.failure_rate = Some(FailureRateConfig {
        threshold: f64::NAN,
        ..FailureRateConfig::default()
    });
    assert!(CircuitBreaker::new(c.clone()).is_err());
    c.failure_rate = Some(FailureRateConfig {
        threshold: 1.5,
        ..FailureRateConfig::default()
    });
    assert!(CircuitBreaker::new(c.clone()).is_err());
    c.failure_rate = None;
    c.cool_down = c.cool_down.factor(0.5);
    assert!(CircuitBreaker::new(c).is_err());
}

#[test]
fn breaker_and_budget_configurations_read_from_toml() {
    let c: CircuitBreakerConfig = toml::from_str(
        r#"
        failure_threshold = 3
        half_open_probes = 2
        [failure_rate]
        threshold = 0.25
        window = "30s"
        [cool_down]
        base = "1s"
        max_delay = "2m"
        jitter = "none"
        "#,
    )
    .unwrap();
    assert_eq!(c.failure_threshold, 3);
    assert_eq!(c.failure_rate.as_ref().unwrap().window, 30 * SEC);
    assert_eq!(
        c.failure_rate.as_ref().unwrap().min_calls,
        FailureRateConfig::default().min_calls
    );
    assert_eq!(c.cool_down.max_delay, 120 * SEC);
    let text = toml::to_string(&c).unwrap();
    assert_eq!(toml::from_str::<CircuitBreakerConfig>(&text).unwrap(), c);
    assert!(CircuitBreaker::new(c).is_ok());
    assert!(toml::from_str::<CircuitBreakerConfig>("failure_treshold = 3").is_err());

    let b: cpc_backoff::RetryBudgetConfig =
        toml::from_str("capacity = 100\nrefill_per_second = 0").unwrap();
    assert_eq!((b.capacity, b.retry_cost, b.refill_per_second), (100, 5, 0));
    assert!(toml::from_str::<cpc_backoff::RetryBudgetConfig>("capacty = 1").is_err());
}
