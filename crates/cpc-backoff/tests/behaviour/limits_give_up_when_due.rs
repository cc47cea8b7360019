use std::time::Duration;

use cpc_backoff::{
    BackoffExt, BackoffState, BackoffStrategy, Constant, Exponential, Jitter, RetryContext,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn max_attempts_counts_the_first_attempt() {
    let policy = Constant::new(Duration::from_secs(1)).with_max_attempts(3);
    let mut rng = StdRng::seed_from_u64(1);
    let mut state = BackoffState::new();
    let delays: Vec<_> = (0..4)
        .map(|_| state.next_delay(&policy, Duration::ZERO, None, &mut rng))
        .collect();
    // Attempt 1 failed → wait; attempt 2 failed → wait; attempt 3 failed → give up.
    assert_eq!(delays[..2], [Some(Duration::from_secs(1)); 2]);
    assert_eq!(delays[2..], [None, None]);
    // Zero is treated as one: the first attempt is made, then no retry.
    let once = Constant::new(Duration::from_secs(1)).with_max_attempts(0);
    assert_eq!(once.max_attempts(), Some(1));
    assert_eq!(once.delay(1, &mut rng), None);
}

#[test]
fn max_elapsed_gives_up_when_the_next_attempt_would_start_too_late() {
    let policy = Constant::new(Duration::from_secs(10)).with_max_elapsed(Duration::from_secs(60));
    let mut rng = StdRng::seed_from_u64(2);
    let at = |elapsed: u64| RetryContext::new(1).with_elapsed(Duration::from_secs(elapsed));
    assert_eq!(
        policy.next_delay(&at(0), &mut rng),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        policy.next_delay(&at(50), &mut rng),
        Some(Duration::from_secs(10))
    );
    assert_eq!(policy.next_delay(&at(51), &mut rng), None);
    assert_eq!(policy.next_delay(&at(3600), &mut rng), None);
}

#[test]
fn limits_compose_and_replace_instead_of_nesting() {
    let policy = Exponential::default()
        .with_max_attempts(10)
        .with_max_elapsed(Duration::from_secs(5))
        .with_max_attempts(4);
    assert_eq!(policy.max_attempts(), Some(4));
    assert_eq!(policy.max_elapsed(), Some(Duration::from_secs(5)));
    let mut rng = StdRng::seed_from_u64(3);
    assert!(policy.delay(3, &mut rng).is_some());
    assert_eq!(policy.delay(4, &mut rng), None);
    let late = RetryContext::new(1).with_elapsed(Duration::from_secs(6));
    assert_eq!(policy.next_delay(&late, &mut rng), None);
}

#[test]
fn limits_work_on_a_boxed_strategy() {
    let boxed: Box<dyn BackoffStrategy> = Box::new(Exponential::default());
    let policy = boxed.with_max_attempts(2);
    let mut rng = StdRng::seed_from_u64(4);
    assert!(policy.delay(1, &mut rng).is_some());
    assert_eq!(policy.delay(2, &mut rng), None);
}

#[test]
fn delay_without_limits_keeps_pacing_past_every_limit() {
    let policy = Exponential::new(
        Duration::from_secs(1),
        2.0,
        Duration::from_secs(60),
        Jitter::None,
    )
    .unwrap()
    .with_max_attempts(3)
    .with_max_elapsed(Duration::from_secs(10));
    let mut rng = StdRng::seed_from_u64(1);
    let late = RetryContext::new(50).with_elapsed(Duration::from_secs(86_400));
    assert_eq!(policy.next_delay(&late, &mut rng), None);
    assert_eq!(
        policy.delay_without_limits(&late, &mut rng),
        Some(Duration::from_secs(60))
    );
    // The hint is still a floor, and still capped.
    let hinted = late.with_hint(Some(Duration::from_secs(90)));
    assert_eq!(
        policy.delay_without_limits(&hinted, &mut rng),
        Some(Duration::from_secs(90))
    );
    // Through a trait object too.
    let dynamic: std::sync::Arc<dyn BackoffStrategy> = std::sync::Arc::new(policy);
    assert_eq!(
        dynamic.delay_without_limits(&RetryContext::new(1), &mut rng),
        Some(Duration::from_secs(1))
    );
}
