use std::time::Duration;

use cpc_backoff::{BackoffExt, BackoffStrategy, Exponential, Jitter, Linear};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

const HUGE: [u32; 6] = [
    64,
    1_000,
    1 << 20,
    i32::MAX as u32,
    i32::MAX as u32 + 1,
    u32::MAX,
];

#[test]
fn exponential_saturates_at_max_delay_for_huge_attempts() {
    for jitter in Jitter::ALL {
        let e = Exponential::default().with_jitter(jitter);
        let mut rng = StdRng::seed_from_u64(5);
        for attempt in HUGE {
            let d = e.delay(attempt, &mut rng).unwrap();
            assert!(d <= e.max_delay(), "{jitter}: {d:?} at attempt {attempt}");
            assert_eq!(e.ceiling(attempt), e.max_delay());
        }
    }
}

#[test]
fn extreme_bases_and_factors_do_not_overflow() {
    let mut rng = StdRng::seed_from_u64(6);
    for (base, factor, max) in [
        (Duration::from_nanos(1), f64::MAX, Duration::MAX),
        (Duration::MAX, 1.0, Duration::MAX),
        (Duration::from_secs(u64::MAX / 2), 1e300, Duration::MAX),
        (
            Duration::from_nanos(1),
            1.000_000_001,
            Duration::from_nanos(2),
        ),
    ] {
        for jitter in Jitter::ALL {
            let e = Exponential::new(base, factor, max, jitter).unwrap();
            for attempt in [0, 1, 2, 3].into_iter().chain(HUGE) {
                let d = e.delay(attempt, &mut rng).unwrap();
                // Durations beyond u64 nanoseconds (584 years) saturate there.
                assert!(d <= max, "{e:?} attempt {attempt}");
                let _ = e
                    .delay_with_hint(attempt, Some(Duration::MAX), &mut rng)
                    .unwrap();
                let _ = e
                    .delay_after(attempt, Some(Duration::MAX), &mut rng)
                    .unwrap();
            }
        }
    }
}

#[test]
fn limits_do_not_overflow_on_huge_elapsed() {
    let policy = Exponential::default().with_max_elapsed(Duration::MAX);
    let mut rng = StdRng::seed_from_u64(7);
    let ctx = cpc_backoff::RetryContext::new(u32::MAX).with_elapsed(Duration::MAX);
    assert_eq!(policy.next_delay(&ctx, &mut rng), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_valid_exponential_is_monotone_and_capped(
        base_ns in 1u64..=10_000_000_000,
        factor in 1.0f64..100.0,
        extra_ns in 0u64..=100_000_000_000,
        attempt in any::<u32>(),
    ) {
        let max = Duration::from_nanos(base_ns.saturating_add(extra_ns));
        let e = Exponential::new(Duration::from_nanos(base_ns), factor, max, Jitter::None).unwrap();
        let a = attempt.max(1);
        prop_assert!(e.ceiling(a) <= max);
        prop_assert!(e.ceiling(a) >= Duration::from_nanos(base_ns));
        if a < u32::MAX {
            prop_assert!(e.ceiling(a) <= e.ceiling(a + 1));
        }
    }

    #[test]
    fn any_linear_is_capped(initial in any::<u64>(), step in any::<u64>(), attempt in any::<u32>()) {
        let l = Linear::new(Duration::from_nanos(initial), Duration::from_nanos(step), Duration::MAX, Jitter::None)
            .unwrap();
        let d = l.delay(attempt, &mut StdRng::seed_from_u64(0)).unwrap();
        prop_assert!(d >= Duration::from_nanos(initial));
    }
}
