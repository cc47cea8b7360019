//! 1,000 clients fail at t = 0 against a remote that accepts 100 requests/s
//! (simulated in discrete time, no sleeping). The published shape: no jitter
//! is the worst on both calls and completion time; full and decorrelated
//! jitter need far fewer calls.

use cpc_backoff::herd::{compare_jitters, simulate, HerdConfig, HerdReport};
use cpc_backoff::{Exponential, Jitter};

const SEED: u64 = 0x5EED_2015;

fn report_for(reports: &[HerdReport], jitter: Jitter) -> &HerdReport {
    reports.iter().find(|r| r.jitter == jitter).unwrap()
}

#[test]
fn no_jitter_is_worst_and_full_and_decorrelated_need_far_fewer_calls() {
    let reports = compare_jitters(&HerdConfig::default(), SEED);
    for r in &reports {
        println!("{r}");
        assert_eq!(r.succeeded, 1_000, "seed {SEED}: {r}");
        // Every client succeeds exactly once, on its last call.
        assert!(r.total_calls >= 1_000 + 1_000);
    }
    let none = report_for(&reports, Jitter::None);
    let none_time = none.time_to_all_succeeded.unwrap();
    for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
        let r = report_for(&reports, jitter);
        assert!(
            r.total_calls < none.total_calls,
            "seed {SEED}: {r} vs {none}"
        );
        assert!(
            r.time_to_all_succeeded.unwrap() < none_time,
            "seed {SEED}: {r} vs {none}"
        );
    }
    for jitter in [Jitter::Full, Jitter::Decorrelated] {
        let r = report_for(&reports, jitter);
        // "Far fewer": at most a quarter of the calls of no jitter.
        assert!(
            4 * r.total_calls <= none.total_calls,
            "seed {SEED}: {r} vs {none}"
        );
    }
}

#[test]
fn decorrelated_from_the_attempt_count_alone_still_beats_no_jitter() {
    // What the worker runs: it persists only the attempt count.
    let config = HerdConfig {
        remember_previous: false,
        ..HerdConfig::default()
    };
    let reports = compare_jitters(&config, SEED);
    let none = report_for(&reports, Jitter::None);
    let decorrelated = report_for(&reports, Jitter::Decorrelated);
    println!("{decorrelated} (attempt count only)");
    assert_eq!(decorrelated.succeeded, 1_000);
    assert!(
        4 * decorrelated.total_calls <= none.total_calls,
        "{decorrelated} vs {none}"
    );
    assert!(decorrelated.time_to_all_succeeded < none.time_to_all_succeeded);
}

#[test]
fn the_simulation_is_deterministic_and_depends_on_the_seed() {
    let config = HerdConfig {
        clients: 200,
        ..HerdConfig::default()
    };
    assert_eq!(simulate(&config, 1), simulate(&config, 1));
    assert_ne!(simulate(&config, 1), simulate(&config, 2));
}

#[test]
fn the_time_limit_is_reported_as_incomplete() {
    let config = HerdConfig {
        time_limit: std::time::Duration::from_secs(2),
        backoff: Exponential::default().with_jitter(Jitter::None),
        ..HerdConfig::default()
    };
    let r = simulate(&config, SEED);
    assert!(r.succeeded < r.clients);
    assert_eq!(r.time_to_all_succeeded, None);
    assert!(r.to_string().contains("succeeded"));
}

#[test]
fn a_remote_with_enough_capacity_serves_everyone_on_the_first_retry() {
    // A checker must be able to fail: with ample capacity nothing is refused
    // after t = 0, whatever the jitter.
    let config = HerdConfig {
        remote_rate_per_second: 1_000_000,
        remote_burst: 1_000_000,
        ..HerdConfig::default()
    };
    for r in compare_jitters(&config, SEED) {
        assert_eq!(r.total_calls, 2_000, "{r}");
    }
}
