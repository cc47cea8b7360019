//! What the composite adapter does with each kind of answer to a direct
//! send: a replay is still a delivery, anything else queues the operation
//! for the worker with the reason.

use std::time::Duration;

use async_trait::async_trait;
use cpc_fault::{FaultPlan, RemoteOptions};
use cpc_sync::core::{
    EntityKey, HlcTimestamp, NodeId, OperationKind, OperationPriority, PushAnswer, PushQuery,
    RemoteRecord, Transport, TransportError,
};
use cpc_sync::network::NetworkMonitor;
use cpc_sync::storage::{MemoryStorage, QueueOptions};
use cpc_sync::{CompositeAdapter, Delivery, QueueReason, SyncEngine, SyncEngineBuilder};

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn a_direct_send_made_twice_is_the_second_time_a_replay() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 51);
    let engine = builder(&w).build().unwrap();
    let adapter = CompositeAdapter::new(&engine);
    let o = op(&engine, "a", OperationPriority::Normal, b"x");
    let first = adapter.send(o.clone()).await.unwrap();
    let again = adapter.send(o.clone()).await.unwrap();
    assert_eq!(
        first,
        Delivery::Sent {
            id: o.id,
            version: 1,
            replay: false
        }
    );
    assert_eq!(
        again,
        Delivery::Sent {
            id: o.id,
            version: 1,
            replay: true
        }
    );
    assert_eq!((first.id(), again.id()), (o.id, o.id));
    assert_eq!(w.remote.apply_count(), 1);
    assert_eq!(engine.pending().await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_conflict_answer_queues_the_operation_for_the_worker() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 52);
    let entity = EntityKey::new("notes", "x");
    w.remote.seed_record(
        entity.clone(),
        RemoteRecord {
            version: 3,
            timestamp: HlcTimestamp::new(START_MS - 1_000, 0, NodeId(9)),
            payload: Some(b"remote".to_vec()),
            node: NodeId(9),
        },
    );
    let engine = builder(&w).build().unwrap();
    let o = engine
        .operation(entity.clone(), OperationKind::Update)
        .payload(b"local".to_vec())
        .base_version(1)
        .build()
        .unwrap();
    let d = CompositeAdapter::new(&engine)
        .send(o.clone())
        .await
        .unwrap();
    assert_eq!(
        d,
        Delivery::Queued {
            id: o.id,
            reason: QueueReason::Answered("conflict")
        }
    );
    let queued = engine.pending_for(&entity).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].op.id, o.id);
    // The worker resolves it (last writer wins: the local edit is newer).
    engine.start().await.unwrap();
    drain(&engine, Duration::from_secs(60)).await;
    assert_eq!(
        w.remote.record(&entity).unwrap().payload.as_deref(),
        Some(&b"local"[..])
    );
    engine.shutdown().await.unwrap();
}

/// Answers every push with no outcome at all.
#[derive(Debug)]
struct Mute;

#[async_trait]
impl Transport for Mute {
    async fn push(&self, _query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
        Ok(PushAnswer::default())
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_does_not_match_the_batch_queues_as_a_protocol_failure() {
    let engine = SyncEngine::builder()
        .storage(std::sync::Arc::new(MemoryStorage::new(
            QueueOptions::default(),
        )))
        .transport(Mute)
        .start_time_ms(START_MS)
        .build()
        .unwrap();
    let o = op(&engine, "a", OperationPriority::Normal, b"x");
    let d = CompositeAdapter::new(&engine)
        .send(o.clone())
        .await
        .unwrap();
    assert_eq!(
        d,
        Delivery::Queued {
            id: o.id,
            reason: QueueReason::Failed(TransportError::Protocol(
                "answer has 0 outcomes for a batch of 1".into()
            ))
        }
    );
    assert_eq!(engine.pending().await.unwrap(), 1);
}

/// A transport whose `Debug` would leak a credential.
#[derive(Debug)]
struct WithToken {
    #[allow(dead_code)]
    token: &'static str,
}

#[async_trait]
impl Transport for WithToken {
    async fn push(&self, _query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
        Err(TransportError::Unauthorized)
    }
}

#[tokio::test(start_paused = true)]
async fn debug_output_names_the_settings_and_the_builder_hides_the_transport() {
    let secret = WithToken {
        token: "token-canary",
    };
    let b = SyncEngine::builder()
        .path("/queue-dir")
        .transport(secret)
        .max_payload(4096);
    let text = format!("{b:?}");
    assert!(text.contains("has_transport: true"), "{text}");
    assert!(text.contains("\"/queue-dir\""), "{text}");
    assert!(text.contains("max_payload: 4096"), "{text}");
    assert!(!text.contains("token-canary"), "{text}");
    assert_eq!(
        format!("{:?}", SyncEngineBuilder::default()),
        format!("{:?}", SyncEngine::builder())
    );

    let monitor = NetworkMonitor::default();
    let engine = SyncEngine::builder()
        .storage(std::sync::Arc::new(MemoryStorage::new(
            QueueOptions::default(),
        )))
        .transport(WithToken {
            token: "token-canary",
        })
        .network(monitor.clone())
        .max_payload(4096)
        .build()
        .unwrap();
    assert_eq!(
        engine.network().map(NetworkMonitor::status),
        Some(monitor.status())
    );
    let text = format!("{engine:?}");
    assert!(text.contains("max_payload: 4096"), "{text}");
    assert!(text.contains("shut: false"), "{text}");
    let adapter = CompositeAdapter::new(&engine).with_timeout(Duration::from_millis(250));
    let text = format!("{adapter:?}");
    assert!(text.contains("timeout: 250ms"), "{text}");
    engine.shutdown().await.unwrap();
    assert!(format!("{engine:?}").contains("shut: true"));
}
