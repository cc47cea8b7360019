//! The engine's time follows the wall clock it is given (the system's by
//! default), so a night asleep does not leave its timestamps behind, and an
//! NTP step back never makes them go backwards.

use std::sync::Arc;

use cpc_fault::{FaultPlan, RemoteOptions};
use cpc_sync::core::{EntityKey, ManualWallClock, OperationKind};
use cpc_sync::storage::{MemoryStorage, QueueOptions};
use cpc_sync::SyncEngine;

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn timestamps_follow_a_user_wall_clock_across_sleep_and_steps_back() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 9);
    let wall = Arc::new(ManualWallClock::new(START_MS));
    let engine = SyncEngine::builder()
        .storage(Arc::new(MemoryStorage::new(QueueOptions::default())))
        .transport_arc(w.transport.clone())
        .wall_clock(wall.clone())
        .seed(9)
        .start()
        .await
        .unwrap();
    let stamp = |engine: &SyncEngine| {
        engine
            .operation(EntityKey::new("notes", "1"), OperationKind::Update)
            .build()
            .unwrap()
            .timestamp
            .wall_ms
    };
    assert_eq!(stamp(&engine), START_MS);
    // Eight hours asleep: tokio's clock did not move, the wall clock did.
    wall.set(START_MS + 8 * 3_600_000);
    assert_eq!(stamp(&engine), START_MS + 8 * 3_600_000);
    assert_eq!(engine.wall_clock().now_ms(), START_MS + 8 * 3_600_000);
    // An NTP step back: the clocks hold, never go backwards.
    wall.set(START_MS + 8 * 3_600_000 - 60_000);
    assert!(stamp(&engine) >= START_MS + 8 * 3_600_000);
    assert_eq!(engine.wall_clock().now_ms(), START_MS + 8 * 3_600_000);
    engine.shutdown().await.unwrap();
}
