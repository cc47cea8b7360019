//! A phone offline for weeks must not lose its queue to dead letters:
//! failures that say nothing about an operation never count towards it.

use std::time::Duration;

use cpc_core::SimClock;
use cpc_fault::{FaultPlan, FaultyTransport, RemoteOptions, Schedule, SimulatedRemote};
use cpc_sync::core::{EntityKey, OperationKind};
use cpc_sync::storage::{MemoryStorage, QueueOptions};
use cpc_sync::worker::StorageCalls;
use cpc_sync::SyncEngine;

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test(start_paused = true)]
async fn thirty_days_offline_with_a_thousand_ops_dead_letters_nothing_and_then_drains() {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(RemoteOptions::default(), clock);
    let schedule = Schedule::builder()
        .offline(Duration::ZERO, DAY * 30)
        .build()
        .unwrap();
    let transport = FaultyTransport::new(remote.clone(), FaultPlan::none(), 5)
        .with_schedule(schedule)
        .with_clock(clock);
    // The default builder (default retry policy, budget and breaker, no
    // network monitor, default queue options) on simulated time; in memory
    // only so that a month of failed pushes takes seconds, not minutes, of
    // writes.
    let engine = SyncEngine::builder()
        .storage(std::sync::Arc::new(MemoryStorage::new(
            QueueOptions::default(),
        )))
        .storage_calls(StorageCalls::Inline)
        .transport(transport.clone())
        // Simulated wall time (the default follows the system clock, which
        // a paused tokio clock does not move).
        .start_time_ms(crate::support::START_MS)
        .seed(30)
        .start()
        .await
        .unwrap();
    let ops = (0..1_000)
        .map(|i| {
            engine
                .operation(
                    EntityKey::new("forms", format!("{}", i % 100)),
                    OperationKind::Update,
                )
                .payload(format!("edit {i}").into_bytes())
                .build()
                .unwrap()
        })
        .collect();
    engine.submit_batch(ops).await.unwrap();

    tokio::time::sleep(DAY * 30 - Duration::from_secs(60)).await;
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.dead, 0, "offline must never dead-letter");
    assert_eq!(stats.pending, 1_000);
    let tried = transport.counters().offline;
    eprintln!("pushes while offline: {tried}");
    assert!(tried > 100, "the engine kept trying ({tried} pushes)");

    // The link is back: everything drains, in a bounded time.
    tokio::time::timeout(Duration::from_secs(3600), engine.drained())
        .await
        .expect("drains within an hour of the link coming back")
        .unwrap();
    let stats = engine.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 0));
    assert_eq!(remote.apply_count(), 1_000);
    engine.shutdown().await.unwrap();
}
