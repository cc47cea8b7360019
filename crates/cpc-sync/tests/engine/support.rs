//! Shared fixtures.

use std::sync::Arc;
use std::time::Duration;

use cpc_fault::{
    FaultPlan, FaultyTransport, RemoteOptions, SimClock, SimulatedRemote, SubmitOutcome,
    SubmittedRecord,
};
use cpc_sync::backoff::{BackoffExt, Exponential, Jitter};
use cpc_sync::core::{EntityKey, Operation, OperationKind, OperationPriority};
use cpc_sync::storage::{MemoryStorage, QueueOptions};
use cpc_sync::{SyncEngine, SyncEngineBuilder};

pub const START_MS: u64 = 1_700_000_000_000;

pub struct World {
    pub clock: SimClock,
    pub remote: SimulatedRemote,
    pub transport: Arc<FaultyTransport<SimulatedRemote>>,
}

pub fn world(options: RemoteOptions, plan: FaultPlan, seed: u64) -> World {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(options, clock);
    let transport = Arc::new(
        FaultyTransport::new(remote.clone(), plan, seed)
            .with_clock(clock)
            .track_first_attempts(true),
    );
    World {
        clock,
        remote,
        transport,
    }
}

/// An engine on `MemoryStorage` with a fast, jitter-free backoff and aging off.
pub fn builder(w: &World) -> SyncEngineBuilder {
    let options = QueueOptions {
        aging_after: None,
        ..QueueOptions::default()
    };
    SyncEngine::builder()
        .storage(Arc::new(MemoryStorage::new(options)))
        .transport_arc(w.transport.clone())
        .backoff(
            Exponential::new(
                Duration::from_millis(500),
                2.0,
                Duration::from_secs(30),
                Jitter::Full,
            )
            .unwrap()
            .with_max_attempts(50),
        )
        .start_time_ms(START_MS)
        .seed(11)
}

pub fn op(
    engine: &SyncEngine,
    entity: &str,
    priority: OperationPriority,
    payload: &[u8],
) -> Operation {
    engine
        .operation(EntityKey::new("notes", entity), OperationKind::Update)
        .priority(priority)
        .payload(payload.to_vec())
        .build()
        .unwrap()
}

pub fn record(w: &World, op: &Operation) -> SubmittedRecord {
    SubmittedRecord::new(op, w.clock.elapsed(), SubmitOutcome::Acknowledged)
}

pub async fn drain(engine: &SyncEngine, within: Duration) {
    tokio::time::timeout(within, engine.drained())
        .await
        .expect("not drained in time")
        .unwrap();
}
