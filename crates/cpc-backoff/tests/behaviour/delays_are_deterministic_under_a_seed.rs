use std::time::Duration;

use cpc_backoff::{BackoffState, BackoffStrategy, Constant, Exponential, Jitter, Linear};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn strategies() -> Vec<Box<dyn BackoffStrategy>> {
    let mut all: Vec<Box<dyn BackoffStrategy>> = Jitter::ALL
        .iter()
        .map(|&j| Box::new(Exponential::default().with_jitter(j)) as Box<dyn BackoffStrategy>)
        .collect();
    all.push(Box::new(
        Constant::with_jitter(Duration::from_secs(1), Jitter::Full).unwrap(),
    ));
    all.push(Box::new(
        Linear::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(30),
            Jitter::Equal,
        )
        .unwrap(),
    ));
    all
}

fn sequence(strategy: &dyn BackoffStrategy, seed: u64) -> Vec<Duration> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state = BackoffState::new();
    (0..40)
        .map(|_| {
            state
                .next_delay(strategy, Duration::ZERO, None, &mut rng)
                .unwrap()
        })
        .collect()
}

#[test]
fn same_seed_gives_the_same_delays_and_another_seed_does_not() {
    for strategy in strategies() {
        let a = sequence(strategy.as_ref(), 0xC0FFEE);
        assert_eq!(a, sequence(strategy.as_ref(), 0xC0FFEE), "{strategy:?}");
        let jittered = !format!("{strategy:?}").contains("jitter: None");
        if jittered {
            assert_ne!(a, sequence(strategy.as_ref(), 0xC0FFEF), "{strategy:?}");
        }
    }
}

#[test]
fn jittered_sequences_are_pinned() {
    // Pins the exact algorithm: a change to how delays are drawn changes
    // every client's schedule (and the herd figures), so it must be
    // deliberate. Values in microseconds, `StdRng::seed_from_u64(42)`.
    let mut got = Vec::new();
    for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
        let strategy = Exponential::default().with_jitter(jitter);
        let mut rng = StdRng::seed_from_u64(42);
        let mut state = BackoffState::new();
        let seq: Vec<u128> = (0..8)
            .map(|_| {
                state
                    .next_delay(&strategy, Duration::ZERO, None, &mut rng)
                    .unwrap()
                    .as_micros()
            })
            .collect();
        got.push(seq);
    }
    assert_eq!(got, PINNED);
}

const PINNED: [[u128; 8]; 3] = [
    [
        105_311, 217_090, 27_474, 663_930, 2_359_758, 5_435_210, 1_680_369, 83_253,
    ],
    [
        152_655, 308_545, 654_586, 827_474, 2_263_930, 5_559_758, 11_835_210, 14_480_369,
    ],
    [
        410_622, 760_021, 1_523_888, 350_135, 552_881, 1_275_640, 3_280_168, 1_465_595,
    ],
];

#[test]
fn no_jitter_is_exactly_the_exponential_sequence() {
    let strategy = Exponential::builder()
        .base(Duration::from_millis(100))
        .factor(3.0)
        .max_delay(Duration::from_secs(10))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let got: Vec<u128> = (1..=7)
        .map(|a| strategy.delay(a, &mut rng).unwrap().as_millis())
        .collect();
    assert_eq!(got, [100, 300, 900, 2_700, 8_100, 10_000, 10_000]);
}

#[test]
fn decorrelated_from_attempt_alone_is_reproducible_for_a_restarted_worker() {
    // The worker persists only the attempt count: after a restart it must
    // get the same distribution, and with the same seed the same delay.
    let strategy = Exponential::default().with_jitter(Jitter::Decorrelated);
    for attempt in [1, 2, 5, 30, u32::MAX] {
        let a = strategy.delay(attempt, &mut StdRng::seed_from_u64(attempt as u64));
        let b = strategy.delay(attempt, &mut StdRng::seed_from_u64(attempt as u64));
        assert_eq!(a, b);
    }
}
