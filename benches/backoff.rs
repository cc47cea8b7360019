//! `cpc-backoff`: cost of one `delay()` call per strategy (target: under
//! 50 ns), beside the cost of the random draw it contains, measured in the
//! same run. Also the shared retry budget and circuit breaker, which the
//! worker touches once per attempt.

use std::hint::black_box;
use std::time::Duration;

use cpc_backoff::{
    BackoffConfig, BackoffExt, BackoffStrategy, CircuitBreaker, CircuitBreakerConfig, Constant,
    Exponential, Jitter, Linear, RetryBudget, RetryBudgetConfig, RetryCause, RetryPermit,
};
use criterion::Criterion;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// Attempts cycle through 1..=32 so that neither the early (growing) nor the
/// saturated branch is favoured and nothing is constant-folded.
fn next_attempt(attempt: &mut u32) -> u32 {
    *attempt = *attempt % 32 + 1;
    *attempt
}

fn strategies() -> Vec<(String, Box<dyn BackoffStrategy>)> {
    let mut all: Vec<(String, Box<dyn BackoffStrategy>)> = Jitter::ALL
        .iter()
        .map(|&j| {
            (
                format!("exponential/{j}"),
                Box::new(Exponential::default().with_jitter(j)) as Box<dyn BackoffStrategy>,
            )
        })
        .collect();
    let constant = Constant::with_jitter(Duration::from_secs(1), Jitter::Full);
    let linear = Linear::new(
        Duration::from_secs(1),
        Duration::from_secs(1),
        Duration::from_secs(30),
        Jitter::Full,
    );
    if let (Ok(constant), Ok(linear)) = (constant, linear) {
        all.push(("constant/full".to_owned(), Box::new(constant)));
        all.push(("linear/full".to_owned(), Box::new(linear)));
    }
    all.push((
        "limited_exponential/full".to_owned(),
        Box::new(
            Exponential::default()
                .with_max_attempts(1_000)
                .with_max_elapsed(Duration::from_secs(3600)),
        ),
    ));
    if let Ok(from_config) = BackoffConfig::default().build() {
        all.push(("config_built/full".to_owned(), from_config));
    }
    all
}

fn bench_delay(c: &mut Criterion) {
    let mut group = c.benchmark_group("backoff_delay");
    // Baseline: the draw every jittered delay pays, through the same `dyn`.
    group.bench_function("baseline/rng_next_u64", |b| {
        let mut rng = StdRng::seed_from_u64(1);
        let rng: &mut dyn RngCore = &mut rng;
        b.iter(|| black_box(rng.next_u64()))
    });
    for (name, strategy) in strategies() {
        group.bench_function(&name, |b| {
            let mut rng = StdRng::seed_from_u64(1);
            let mut attempt = 0;
            b.iter(|| black_box(strategy.delay(black_box(next_attempt(&mut attempt)), &mut rng)))
        });
    }
    group.bench_function("exponential/full/with_hint", |b| {
        let strategy: Box<dyn BackoffStrategy> = Box::new(Exponential::default());
        let mut rng = StdRng::seed_from_u64(1);
        let mut attempt = 0;
        let hint = Some(Duration::from_secs(2));
        b.iter(|| {
            black_box(strategy.delay_with_hint(
                black_box(next_attempt(&mut attempt)),
                black_box(hint),
                &mut rng,
            ))
        })
    });
    group.finish();
}

fn bench_guards(c: &mut Criterion) {
    let mut group = c.benchmark_group("backoff_guards");
    if let Ok(budget) = RetryBudget::new(RetryBudgetConfig::default()) {
        group.bench_function("retry_budget/acquire_and_refund", |b| {
            b.iter(|| {
                if let Ok(permit) = budget.try_acquire(black_box(1), RetryCause::Error) {
                    budget.record_success(permit);
                }
            })
        });
        group.bench_function("retry_budget/first_attempt_success", |b| {
            b.iter(|| budget.record_success(black_box(RetryPermit::FIRST_ATTEMPT)))
        });
    }
    if let Ok(breaker) = CircuitBreaker::new(CircuitBreakerConfig::default()) {
        group.bench_function("circuit_breaker/acquire_and_succeed", |b| {
            b.iter(|| {
                if let Ok(permit) = breaker.try_acquire() {
                    permit.success();
                }
            })
        });
    }
    group.finish();
}

// What `criterion_group!`/`criterion_main!` expand to, written out because
// the macro's generated `pub fn` trips the workspace's `missing_docs` lint.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_delay(&mut criterion);
    bench_guards(&mut criterion);
    criterion.final_summary();
}
