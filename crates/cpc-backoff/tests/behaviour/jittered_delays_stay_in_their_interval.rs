//! Every jittered delay lies in the interval the docs promise, over 100,000
//! draws per jitter kind, and the draws fill that interval (a jitter that
//! always returned the ceiling would pass a bounds check alone).

use std::time::Duration;

use cpc_backoff::{BackoffStrategy, Constant, Exponential, Jitter, Linear};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DRAWS: u32 = 100_000;

/// Draws `DRAWS` delays, checks each against `[lo, hi]` and returns the
/// position of each draw inside its interval, in `[0, 1]`.
fn positions(
    strategy: &dyn BackoffStrategy,
    seed: u64,
    mut draw: impl FnMut(&dyn BackoffStrategy, u32, &mut StdRng) -> (Duration, Duration, Duration),
) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..DRAWS)
        .map(|i| {
            let attempt = 1 + i % 16;
            let (delay, lo, hi) = draw(strategy, attempt, &mut rng);
            assert!(
                lo <= delay && delay <= hi,
                "{strategy:?} attempt {attempt}: {delay:?} outside [{lo:?}, {hi:?}] (seed {seed})"
            );
            if hi == lo {
                0.5
            } else {
                (delay - lo).as_secs_f64() / (hi - lo).as_secs_f64()
            }
        })
        .collect()
}

/// The draws cover the interval and are centred as a uniform draw would be.
fn assert_spread(name: &str, positions: &[f64]) {
    let min = positions.iter().copied().fold(f64::INFINITY, f64::min);
    let max = positions.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = positions.iter().sum::<f64>() / positions.len() as f64;
    assert!(
        min < 0.01 && max > 0.99,
        "{name}: draws span only [{min}, {max}]"
    );
    assert!(
        (mean - 0.5).abs() < 0.01,
        "{name}: mean position {mean}, expected 0.5"
    );
}

#[test]
fn no_jitter_is_exactly_the_ceiling() {
    let e = Exponential::default().with_jitter(Jitter::None);
    let mut rng = StdRng::seed_from_u64(11);
    for i in 0..DRAWS {
        let attempt = 1 + i % 16;
        assert_eq!(e.delay(attempt, &mut rng), Some(e.ceiling(attempt)));
    }
}

#[test]
fn full_jitter_lies_in_zero_to_ceiling() {
    let e = Exponential::default();
    let p = positions(&e, 12, |s, a, rng| {
        (s.delay(a, rng).unwrap(), Duration::ZERO, e.ceiling(a))
    });
    assert_spread("full", &p);
}

#[test]
fn equal_jitter_lies_in_half_ceiling_to_ceiling() {
    let e = Exponential::default().with_jitter(Jitter::Equal);
    let p = positions(&e, 13, |s, a, rng| {
        (s.delay(a, rng).unwrap(), e.ceiling(a) / 2, e.ceiling(a))
    });
    assert_spread("equal", &p);
}

#[test]
fn decorrelated_jitter_lies_in_base_to_three_times_previous() {
    let e = Exponential::default().with_jitter(Jitter::Decorrelated);
    let (base, max) = (e.base(), e.max_delay());
    // With a known previous delay (as `BackoffState` passes it), including
    // previous delays below base and far above the cap.
    let p = positions(&e, 14, |s, a, rng| {
        let previous = Duration::from_nanos(rng.gen_range(0..=200_000_000_000u64));
        let hi = (previous * 3).min(max).max(base);
        (s.delay_after(a, Some(previous), rng).unwrap(), base, hi)
    });
    assert_spread("decorrelated (previous known)", &p);
    // From the attempt alone: previous = un-jittered delay of attempt - 1.
    let p = positions(&e, 15, |s, a, rng| {
        let previous = if a == 1 { base } else { e.ceiling(a - 1) };
        (s.delay(a, rng).unwrap(), base, (previous * 3).min(max))
    });
    assert_spread("decorrelated (attempt only)", &p);
}

#[test]
fn constant_and_linear_jitter_stay_in_bounds() {
    let c = Constant::with_jitter(Duration::from_secs(2), Jitter::Equal).unwrap();
    let p = positions(&c, 16, |s, a, rng| {
        (
            s.delay(a, rng).unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(2),
        )
    });
    assert_spread("constant/equal", &p);
    let l = Linear::new(
        Duration::from_secs(1),
        Duration::from_secs(2),
        Duration::from_secs(20),
        Jitter::Full,
    )
    .unwrap();
    let p = positions(&l, 17, |s, a, rng| {
        (s.delay(a, rng).unwrap(), Duration::ZERO, l.ceiling(a))
    });
    assert_spread("linear/full", &p);
}
