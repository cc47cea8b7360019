use std::time::Duration;

use cpc_backoff::{
    BackoffConfig, BackoffExt, BackoffState, BackoffStrategy, Constant, Exponential, Jitter,
    DEFAULT_HINT_CAP,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn a_hint_above_the_computed_delay_is_the_delay() {
    let e = Exponential::default().with_jitter(Jitter::None);
    let mut rng = StdRng::seed_from_u64(1);
    // Attempt 1 would wait 200 ms; the server asked for 5 s.
    assert_eq!(e.delay_with_hint(1, Some(5 * SEC), &mut rng), Some(5 * SEC));
    // A hint above max_delay is still honoured (up to the hint cap).
    assert_eq!(
        e.delay_with_hint(30, Some(600 * SEC), &mut rng),
        Some(600 * SEC)
    );
}

#[test]
fn a_hint_below_the_computed_delay_changes_nothing() {
    let e = Exponential::default().with_jitter(Jitter::None);
    let mut rng = StdRng::seed_from_u64(1);
    assert_eq!(e.delay_with_hint(10, Some(SEC), &mut rng), Some(60 * SEC));
    assert_eq!(e.delay_with_hint(10, None, &mut rng), Some(60 * SEC));
    assert_eq!(
        e.delay_with_hint(10, Some(Duration::ZERO), &mut rng),
        Some(60 * SEC)
    );
}

#[test]
fn a_hint_is_a_floor_under_every_jitter() {
    for jitter in Jitter::ALL {
        let e = Exponential::default().with_jitter(jitter);
        let mut rng = StdRng::seed_from_u64(2);
        for attempt in 1..200 {
            let d = e.delay_with_hint(attempt, Some(7 * SEC), &mut rng).unwrap();
            assert!(d >= 7 * SEC, "{jitter}: {d:?}");
        }
    }
}

#[test]
fn a_huge_hint_is_clamped_to_the_default_cap_of_one_hour() {
    assert_eq!(DEFAULT_HINT_CAP, Duration::from_secs(3600));
    let mut rng = StdRng::seed_from_u64(3);
    let strategies: [&dyn BackoffStrategy; 2] = [
        &Exponential::default(),
        &Constant::new(Duration::from_millis(10)),
    ];
    for s in strategies {
        for hint in [3601 * SEC, 30 * 24 * 3600 * SEC, Duration::MAX] {
            assert_eq!(
                s.delay_with_hint(1, Some(hint), &mut rng),
                Some(DEFAULT_HINT_CAP)
            );
        }
    }
}

#[test]
fn the_hint_cap_is_configurable() {
    let policy = Exponential::default()
        .with_jitter(Jitter::None)
        .with_hint_cap(30 * SEC);
    let mut rng = StdRng::seed_from_u64(4);
    assert_eq!(
        policy.delay_with_hint(1, Some(3600 * SEC), &mut rng),
        Some(30 * SEC)
    );
    assert_eq!(
        policy.delay_with_hint(1, Some(20 * SEC), &mut rng),
        Some(20 * SEC)
    );
    // A cap below the computed delay never shortens the delay.
    assert_eq!(
        policy.delay_with_hint(10, Some(3600 * SEC), &mut rng),
        Some(60 * SEC)
    );

    let from_config: BackoffConfig = toml::from_str("hint_cap = \"2m\"").unwrap();
    let policy = from_config.build().unwrap();
    assert_eq!(
        policy.delay_with_hint(1, Some(3600 * SEC), &mut rng),
        Some(120 * SEC)
    );
}

#[test]
fn a_hinted_delay_still_counts_against_max_elapsed() {
    let policy = Exponential::default().with_max_elapsed(60 * SEC);
    let mut rng = StdRng::seed_from_u64(5);
    let mut state = BackoffState::new();
    // 50 s in, the server says 20 s: the next attempt would start at 70 s.
    assert_eq!(
        state.next_delay(&policy, 50 * SEC, Some(20 * SEC), &mut rng),
        None
    );
    assert_eq!(
        state.next_delay(&policy, 30 * SEC, Some(20 * SEC), &mut rng),
        Some(20 * SEC)
    );
}
