//! The whole engine in a hostile world: a simulated remote behind a faulty
//! transport (latency, 5xx, lost acks, malformed answers), scripted outages
//! driving the network monitor, concurrent edits from another device
//! resolved by last-writer-wins, then the checker's verdict.
//!
//! Runs on a paused tokio clock: an hour of simulated time in about a
//! second. `cargo run --example full_integration_example`

use std::time::Duration;

use cpc_fault::{
    check_with, CheckOptions, FaultPlan, FaultyTransport, Latency, Probability, RemoteOptions,
    Schedule, ScriptedNetwork, SimulatedRemote, SubmitOutcome, SubmittedRecord,
};
use cpc_sync::conflict::LastWriterWins;
use cpc_sync::core::SimClock;
use cpc_sync::core::{
    EntityKey, HlcTimestamp, NodeId, OperationKind, OperationPriority, RemoteRecord,
};
use cpc_sync::network::{MonitorConfig, NetworkMonitor};
use cpc_sync::storage::{ConflictFilter, MemoryStorage, QueueOptions};
use cpc_sync::worker::{ProcessingSummary, WorkerEvent};
use cpc_sync::SyncEngine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: u64 = 42;
const START_MS: u64 = 1_700_000_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    println!("seed {SEED}");
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(RemoteOptions::default(), clock);
    let schedule = Schedule::builder()
        .offline(Duration::from_secs(120), Duration::from_secs(420))
        .offline(Duration::from_secs(900), Duration::from_secs(1_000))
        .build()?;
    let plan = FaultPlan {
        latency: Latency::Uniform {
            min: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        server_error: Probability::new(0.05).unwrap_or(Probability::NEVER),
        lost_ack: Probability::new(0.05).unwrap_or(Probability::NEVER),
        corrupt: Probability::new(0.01).unwrap_or(Probability::NEVER),
        ..FaultPlan::none()
    };
    let transport = std::sync::Arc::new(
        FaultyTransport::new(remote.clone(), plan, SEED)
            .with_schedule(schedule.clone())
            .with_clock(clock)
            .track_first_attempts(true),
    );
    let monitor = NetworkMonitor::new(MonitorConfig {
        seed: Some(SEED),
        ..MonitorConfig::default()
    })?;
    monitor
        .attach(ScriptedNetwork::new(schedule.clone(), clock).with_lag(Duration::from_secs(3)))?;

    let engine = SyncEngine::builder()
        .storage(std::sync::Arc::new(MemoryStorage::new(
            QueueOptions::default(),
        )))
        .transport_arc(transport.clone())
        .resolver(LastWriterWins)
        .network(monitor)
        .node_id(NodeId(1))
        .start_time_ms(START_MS)
        .seed(SEED)
        .start()
        .await?;

    // Print the interesting events as they happen.
    let mut events = engine.subscribe();
    let printer = tokio::spawn(async move {
        let mut total = ProcessingSummary::default();
        loop {
            match events.recv().await {
                Ok(WorkerEvent::NetworkChanged { from, to }) => {
                    println!("[event] network {from} -> {to}")
                }
                Ok(WorkerEvent::ConflictResolved {
                    id,
                    resolution,
                    remote_version,
                    ..
                }) => {
                    println!("[event] conflict on {id} against v{remote_version}: {resolution}")
                }
                Ok(WorkerEvent::DeadLettered { id, reason, .. }) => {
                    println!("[event] dead letter {id}: {reason}")
                }
                Ok(WorkerEvent::BatchFailed { size, error }) => {
                    println!("[event] batch of {size} failed: {error}")
                }
                Ok(WorkerEvent::CircuitOpen { until }) => {
                    println!("[event] circuit open until {until}")
                }
                Ok(WorkerEvent::BatchCompleted { summary }) => total.merge(&summary),
                Ok(WorkerEvent::Stopped { reason }) => {
                    println!("[event] worker stopped: {reason}");
                    break;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("[event] ({n} events skipped)")
                }
                Err(_) => break,
            }
        }
        total
    });

    // Another device edits some of the same notes meanwhile.
    for i in 0..5 {
        remote.seed_record(
            EntityKey::new("notes", format!("n{i}")),
            RemoteRecord {
                version: 3,
                timestamp: HlcTimestamp::new(START_MS + 30_000, 0, NodeId(2)),
                payload: Some(b"edited elsewhere".to_vec()),
                node: NodeId(2),
            },
        );
    }

    // A user editing 40 notes over twenty minutes, through two outages.
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut submitted = Vec::new();
    let mut first_edit = std::collections::HashSet::new();
    for _ in 0..600 {
        let priority = match rng.gen_range(0..10) {
            0 => OperationPriority::High,
            1..=2 => OperationPriority::Background,
            _ => OperationPriority::Normal,
        };
        let note = rng.gen_range(0..40);
        let mut op = engine
            .operation(
                EntityKey::new("notes", format!("n{note}")),
                OperationKind::Update,
            )
            .payload(vec![b'x'; rng.gen_range(10..200)])
            .priority(priority);
        // The first local edit of a note the other device changed was made
        // on version 1: the remote answers Conflict and LWW decides.
        if note < 5 && first_edit.insert(note) {
            op = op.base_version(1);
        }
        let op = op.build()?;
        submitted.push(SubmittedRecord::new(
            &op,
            clock.elapsed(),
            SubmitOutcome::Acknowledged,
        ));
        engine.submit(op).await?;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..3_000))).await;
    }
    tokio::time::timeout(Duration::from_secs(3_600), engine.drained()).await??;
    let conflicts = engine.conflict_log(ConflictFilter::default()).await?;
    engine.shutdown().await?;
    let total = printer.await?;

    // Operations that lost a conflict were legitimately dropped.
    for entry in &conflicts {
        if entry.resolution == cpc_sync::core::Resolution::KeepRemote {
            if let Some(r) = submitted.iter_mut().find(|r| r.op_id == entry.op_id) {
                r.abandoned = Some(cpc_fault::Abandoned::ConflictKeptRemote);
            }
        }
    }
    let first_attempts = transport.first_attempts();
    for r in &mut submitted {
        r.first_attempt_at = first_attempts.get(&r.op_id).copied();
    }
    let mut options = CheckOptions {
        scenario: "full_integration_example".into(),
        seed: SEED,
        ..Default::default()
    };
    options.last_outage_end = schedule.last_outage_end();
    options.transport_calls = Some(transport.counters().calls);
    // Aging promotes an operation waiting 5 minutes (the store's default),
    // and one batch interval of slack is allowed.
    options.bounds.aging_after = Some(Duration::from_secs(300));
    options.bounds.max_priority_inversions = u64::MAX;
    let report = check_with(&remote.apply_log(), &submitted, &options);
    println!("\nworker summary: {total}");
    println!("transport: {:?}", transport.counters());
    println!("conflict log: {} entries", conflicts.len());
    println!("\n{report}");
    if !report.passed {
        return Err("invariants violated".into());
    }
    Ok(())
}
