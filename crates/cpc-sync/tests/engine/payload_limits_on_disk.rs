//! The store reads back everything it accepted, whatever `max_payload` it
//! was opened with: decoding limits come from the configured limit, not
//! from a fixed constant.

use cpc_sync::storage::QueueStorageExt as _;
use std::sync::Arc;
use std::time::Duration;

use cpc_fault::{FaultPlan, RemoteOptions};
use cpc_sync::conflict::RemoteWins;
use cpc_sync::core::{
    ConflictRecord, EntityKey, HlcTimestamp, NodeId, OperationKind, RemoteRecord, Resolution,
};
use cpc_sync::storage::{ConflictFilter, QueueOptions, QueueStorage, SqliteStorage};
use cpc_sync::SyncEngine;

use crate::support::*;

const MIB: usize = 1024 * 1024;

#[tokio::test(start_paused = true)]
async fn a_payload_above_one_mib_under_a_larger_limit_is_delivered_not_quarantined() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 40);
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let engine = SyncEngine::builder()
        .path(dir.path())
        .max_payload(5 * MIB)
        .transport_arc(w.transport.clone())
        .resolver(RemoteWins)
        .start_time_ms(START_MS)
        .seed(40)
        .start()
        .await
        .unwrap();
    engine
        .operation(EntityKey::new("photos", "1"), OperationKind::Create)
        .payload(vec![42u8; 2 * MIB])
        .submit()
        .await
        .unwrap();
    drain(&engine, Duration::from_secs(60)).await;
    let stats = engine.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead, stats.quarantined), (0, 0, 0));
    assert_eq!(w.remote.apply_count(), 1);
    engine.shutdown().await.unwrap();
}

#[test]
fn a_large_conflict_log_entry_reads_back_whole() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let options = QueueOptions {
        max_payload: 3 * MIB,
        ..QueueOptions::default()
    };
    let store = SqliteStorage::open(dir.path(), options).unwrap();
    let entry = ConflictRecord {
        op_id: cpc_sync::core::OperationId::from_u128(7),
        entity: EntityKey::new("photos", "1"),
        local_timestamp: HlcTimestamp::new(1, 0, NodeId(1)),
        local_payload: vec![1; 2 * MIB],
        remote: RemoteRecord {
            version: 3,
            timestamp: HlcTimestamp::new(2, 0, NodeId(2)),
            payload: Some(vec![2; 2 * MIB]),
            node: NodeId(2),
        },
        resolution: Resolution::KeepRemote,
        losing_payload: Some(vec![1; 2 * MIB]),
        resolved_at_ms: START_MS,
    };
    store.log_conflict(&entry).unwrap();
    let log = store.conflict_log(&ConflictFilter::default()).unwrap();
    assert_eq!(log, vec![entry.clone()]);
    assert_eq!(store.stats().unwrap().quarantined, 0);
    // An entry holding a payload over the limit is refused as it is written.
    let mut too_big = entry;
    too_big.local_payload = vec![0; 3 * MIB + 1];
    assert!(store.log_conflict(&too_big).is_err());
    let store: Arc<dyn QueueStorage> = Arc::new(store);
    assert_eq!(store.max_payload(), 3 * MIB);
}
