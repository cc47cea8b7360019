//! A small reference client: drives a scenario's workload through
//! `FaultyTransport<SimulatedRemote>` without the engine, honouring the
//! engine's delivery rules (one operation per entity in flight, submission
//! order per entity, highest priority first, retries after failures).
//!
//! It exists to exercise the simulator end to end (tests, the bench, the
//! docs) and as a template for a harness. It is not the engine: no storage,
//! no backoff strategy beyond a fixed delay (or the server's hint), no
//! conflict resolver beyond "keep local".

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use cpc_fault::{
    check_with, Abandoned, ApplyRecord, FaultCounters, FaultyTransport, InvariantReport,
    RemoteStats, SimClock, SimulatedRemote, SubmitOutcome, SubmittedRecord,
};
use cpc_sync::core::{
    match_outcomes, EntityKey, Operation, PushOutcome, PushQuery, Transport, TransportError,
};

use crate::scenario::{PlannedOp, Result, Scenario, ScenarioError};

/// Settings of the reference client.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceOptions {
    /// Most operations per push.
    pub batch_size: usize,
    /// Wait after a failed push, or before retrying a `RetryLater` without
    /// a hint. A server's `Retry-After` is honoured as a floor.
    pub retry_delay: Duration,
    /// How long after the scenario's `duration` the client keeps draining
    /// before it gives up (what is left is then reported lost).
    pub drain_limit: Duration,
}

impl Default for ReferenceOptions {
    fn default() -> Self {
        ReferenceOptions {
            batch_size: 50,
            retry_delay: Duration::from_secs(1),
            drain_limit: Duration::from_secs(3600),
        }
    }
}

/// Everything a reference run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The checker's verdict.
    pub report: InvariantReport,
    /// The remote's apply log.
    pub apply_log: Vec<ApplyRecord>,
    /// What was submitted, in submission order per device.
    pub submitted: Vec<SubmittedRecord>,
    /// The fault injector's counters.
    pub counters: FaultCounters,
    /// The remote's counters.
    pub remote_stats: RemoteStats,
}

/// Runs `scenario` with the reference client, one task per device, and
/// checks the result. Call it on a current-thread runtime with tokio's
/// clock paused: then the run is a pure function of the scenario.
pub async fn run_reference(scenario: &Scenario, options: &ReferenceOptions) -> Result<RunOutput> {
    scenario.validate()?;
    let clock = SimClock::start_now();
    let remote = scenario.remote(clock);
    let transport = scenario.faulty(remote.clone(), clock);
    let deadline = scenario.duration.saturating_add(options.drain_limit);
    let mut handles = Vec::with_capacity(scenario.devices as usize);
    for device in 0..scenario.devices {
        let workload = scenario.workload(device)?;
        let transport = transport.clone();
        let options = options.clone();
        handles.push(tokio::spawn(async move {
            run_device(workload, transport, clock, options, deadline).await
        }));
    }
    let mut submitted = Vec::new();
    for (device, handle) in handles.into_iter().enumerate() {
        match handle.await {
            Ok(records) => submitted.extend(records),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                return Err(ScenarioError::Driver {
                    device: device as u32,
                    reason: e.to_string(),
                })
            }
        }
    }
    let first = transport.first_attempts();
    for rec in &mut submitted {
        rec.first_attempt_at = first.get(&rec.op_id).copied();
    }
    let counters = transport.counters();
    let apply_log = remote.apply_log();
    let mut check = scenario.check_options();
    check.transport_calls = Some(counters.calls);
    check.ops_sent = Some(counters.ops_sent);
    let report = check_with(&apply_log, &submitted, &check);
    Ok(RunOutput {
        report,
        apply_log,
        submitted,
        counters,
        remote_stats: remote.stats(),
    })
}

struct Pending {
    op: Operation,
    record: usize,
    not_before: Duration,
}

async fn run_device(
    workload: Vec<PlannedOp>,
    transport: FaultyTransport<SimulatedRemote>,
    clock: SimClock,
    options: ReferenceOptions,
    deadline: Duration,
) -> Vec<SubmittedRecord> {
    let batch_size = options.batch_size.max(1);
    let mut submitted: Vec<SubmittedRecord> = Vec::with_capacity(workload.len());
    let mut queues: BTreeMap<EntityKey, VecDeque<Pending>> = BTreeMap::new();
    let mut arrivals = workload.into_iter().peekable();
    loop {
        let now = clock.elapsed();
        while let Some(planned) = arrivals.next_if(|p| p.at <= now) {
            submitted.push(SubmittedRecord::new(
                &planned.op,
                planned.at,
                SubmitOutcome::Acknowledged,
            ));
            queues
                .entry(planned.op.entity.clone())
                .or_default()
                .push_back(Pending {
                    op: planned.op,
                    record: submitted.len() - 1,
                    not_before: planned.at,
                });
        }
        if queues.is_empty() && arrivals.peek().is_none() {
            break;
        }
        if now >= deadline {
            tracing::debug!(
                pending = queues.values().map(VecDeque::len).sum::<usize>(),
                "reference client gave up at the drain limit"
            );
            break;
        }
        // Heads of entities whose retry time has come, best first.
        let mut ready: Vec<(
            Reverse<cpc_sync::core::OperationPriority>,
            cpc_sync::core::OperationId,
            &EntityKey,
        )> = queues
            .iter()
            .filter_map(|(key, q)| q.front().map(|p| (key, p)))
            .filter(|(_, p)| p.not_before <= now)
            .map(|(key, p)| (Reverse(p.op.priority), p.op.id, key))
            .collect();
        if ready.is_empty() {
            let next_retry = queues
                .values()
                .filter_map(|q| q.front().map(|p| p.not_before))
                .min();
            let next_arrival = arrivals.peek().map(|p| p.at);
            let wake = match (next_retry, next_arrival) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            clock.sleep_until(wake.min(deadline)).await;
            continue;
        }
        ready.sort_unstable();
        ready.truncate(batch_size);
        let keys: Vec<EntityKey> = ready.into_iter().map(|(_, _, k)| k.clone()).collect();
        let batch: Vec<Operation> = keys
            .iter()
            .filter_map(|k| queues.get(k).and_then(VecDeque::front))
            .map(|p| p.op.clone())
            .collect();
        // The reference client keeps no `known` position: it handles no
        // remote restore (§8), so it asks for no check.
        let answer = match transport.push(&PushQuery::new(&batch)).await {
            Ok(answer) => match_outcomes(&batch, answer.outcomes),
            Err(e) => Err(e),
        };
        let now = clock.elapsed();
        match answer {
            Ok(outcomes) => {
                for (key, outcome) in keys.iter().zip(outcomes) {
                    let Some(queue) = queues.get_mut(key) else {
                        continue;
                    };
                    match outcome {
                        PushOutcome::Applied { .. } | PushOutcome::AlreadyApplied { .. } => {
                            if let Some(p) = queue.pop_front() {
                                submitted[p.record].acked_at = Some(now);
                            }
                        }
                        PushOutcome::Rejected { .. } => {
                            if let Some(p) = queue.pop_front() {
                                submitted[p.record].abandoned = Some(Abandoned::DeadLettered);
                            }
                        }
                        PushOutcome::Conflict { remote } => {
                            // Keep local: resend on top of the remote version.
                            if let Some(p) = queue.front_mut() {
                                p.op.base_version = Some(remote.version);
                            }
                        }
                        PushOutcome::RetryLater { after } => {
                            if let Some(p) = queue.front_mut() {
                                p.not_before = now + after.unwrap_or(options.retry_delay);
                            }
                        }
                    }
                    if queue.is_empty() {
                        queues.remove(key);
                    }
                }
            }
            Err(e) => {
                let delay = match e {
                    TransportError::RateLimited {
                        retry_after: Some(after),
                    } => after.max(options.retry_delay),
                    _ => options.retry_delay,
                };
                for key in &keys {
                    if let Some(p) = queues.get_mut(key).and_then(VecDeque::front_mut) {
                        p.not_before = now + delay;
                    }
                }
            }
        }
    }
    submitted
}
