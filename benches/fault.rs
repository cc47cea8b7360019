//! A simulated hour with 20 outages and 10,000 operations pushed through
//! `FaultyTransport<SimulatedRemote>` by a simple driver loop (no worker),
//! on a paused current-thread runtime. The figure is the wall time of one
//! whole run; the target is under 2 s.
//!
//! Run: `cargo bench -p cpc-benches --bench fault`.

use std::collections::VecDeque;
use std::time::Duration;

use cpc_core::{match_outcomes, Operation, PushOutcome, Transport};
use cpc_fault::{
    check_with, FaultPlan, InvariantReport, Latency, Probability, Schedule, SimClock,
    SubmitOutcome, SubmittedRecord,
};
use cpc_sim::{OperationMix, Scenario};
use criterion::Criterion;

const OPS: u64 = 10_000;
const HOUR: Duration = Duration::from_secs(3600);
const BATCH: usize = 50;

fn scenario() -> Result<Scenario, cpc_sim::ScenarioError> {
    let schedule = Schedule::builder()
        // 20 one-minute outages spread over the hour.
        .evenly_spread_outages(
            Duration::from_secs(60),
            Duration::from_secs(3400),
            20,
            Duration::from_secs(60),
        )
        .build()?;
    let p = |x| Probability::new(x).unwrap_or(Probability::NEVER);
    Scenario::builder("bench-hour")
        .seed(2024)
        .duration(HOUR)
        .ops(OperationMix {
            per_device: OPS,
            entities: 1_000,
            // The FIFO driver ignores priorities, so the workload has one
            // (the checker reports inversions otherwise).
            priorities: cpc_sim::PriorityWeights {
                critical: 0,
                high: 0,
                normal: 1,
                background: 0,
            },
            arrival: cpc_sim::Arrival::Uniform {
                rate: OPS as f64 / 3500.0,
                start: Duration::ZERO,
            },
            ..OperationMix::default()
        })
        .faults(FaultPlan {
            latency: Latency::Uniform {
                min: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
            timeout: Duration::from_secs(5),
            drop: p(0.05),
            lost_ack: p(0.05),
            server_error: p(0.02),
            ..FaultPlan::none()
        })
        .schedule(schedule)
        .build()
}

/// The driver: FIFO, batches of 50, resend the same batch after 1 s on any
/// failure (so per-entity order holds trivially), until everything is
/// acknowledged.
async fn run(scenario: &Scenario) -> Result<InvariantReport, cpc_sim::ScenarioError> {
    let clock = SimClock::start_now();
    let remote = scenario.remote(clock);
    let transport = scenario.faulty(remote.clone(), clock);
    let mut arrivals: VecDeque<_> = scenario.workload(0)?.into();
    let mut queue: VecDeque<Operation> = VecDeque::new();
    let mut submitted = Vec::with_capacity(OPS as usize);
    while !(arrivals.is_empty() && queue.is_empty()) {
        let now = clock.elapsed();
        while arrivals.front().is_some_and(|p| p.at <= now) {
            let Some(p) = arrivals.pop_front() else {
                break;
            };
            submitted.push(SubmittedRecord::new(
                &p.op,
                p.at,
                SubmitOutcome::Acknowledged,
            ));
            queue.push_back(p.op);
        }
        if queue.is_empty() {
            if let Some(next) = arrivals.front() {
                clock.sleep_until(next.at).await;
            }
            continue;
        }
        let n = queue.len().min(BATCH);
        let batch: Vec<Operation> = queue.iter().take(n).cloned().collect();
        let answer = transport
            .push(&cpc_core::PushQuery::new(&batch))
            .await
            .map(|a| a.outcomes)
            .and_then(|o| match_outcomes(&batch, o));
        match answer {
            Ok(outcomes) => {
                // Acknowledge the applied prefix; stop at the first op to retry.
                let done = outcomes
                    .iter()
                    .take_while(|o| {
                        matches!(
                            o,
                            PushOutcome::Applied { .. } | PushOutcome::AlreadyApplied { .. }
                        )
                    })
                    .count();
                queue.drain(..done);
                if done < n {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    let counters = transport.counters();
    let mut options = scenario.check_options();
    options.transport_calls = Some(counters.calls);
    options.ops_sent = Some(counters.ops_sent);
    Ok(check_with(&remote.apply_log(), &submitted, &options))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
}

fn simulated_hour(c: &mut Criterion) -> Result<(), Box<dyn std::error::Error>> {
    let scenario = scenario()?;
    // One checked run first: the bench measures a correct simulation.
    let report = runtime()?.block_on(run(&scenario))?;
    println!("{}", report.to_text());
    if !report.passed || report.applied != OPS {
        return Err(format!("the simulated hour broke an invariant:\n{report}").into());
    }
    let rt = runtime()?;
    let mut group = c.benchmark_group("fault");
    group.sample_size(10);
    group.bench_function("simulated_hour_20_outages_10k_ops", |b| {
        b.iter(|| rt.block_on(run(&scenario)))
    });
    group.finish();
    Ok(())
}

// What `criterion_group!`/`criterion_main!` expand to, written out because
// the macro's generated `pub fn` trips the workspace's `missing_docs` lint.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    if let Err(e) = simulated_hour(&mut criterion) {
        eprintln!("fault bench: {e}");
        std::process::exit(1);
    }
    criterion.final_summary();
}
