//! Restarts on SQLite, payload limits, credentials, the clock mark.

use std::time::Duration;

use cpc_fault::{FaultPlan, RemoteOptions};
use cpc_sync::core::{OperationPriority, TransportError};
use cpc_sync::storage::OpState;
use cpc_sync::worker::WorkerEvent;
use cpc_sync::{Error, SyncEngine};

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn a_payload_over_the_limit_is_refused_and_nothing_is_stored() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 20);
    let engine = builder(&w).max_payload(16).build().unwrap();
    let op = op(&engine, "a", OperationPriority::Normal, &[0u8; 17]);
    let err = engine.submit(op).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { size: 17, max: 16 }));
    assert!(err.is_user_recoverable());
    assert_eq!(engine.pending().await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_mid_batch_then_restart_on_sqlite_loses_nothing() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let w = world(RemoteOptions::default(), FaultPlan::none(), 21);
    let hanging = std::sync::Arc::new(Hanging);
    let engine = SyncEngine::builder()
        .path(dir.path())
        .transport_arc(hanging)
        .shutdown_timeout(Duration::from_secs(1))
        .start_time_ms(START_MS)
        .start()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            engine
                .submit(op(
                    &engine,
                    &format!("e{}", i % 7),
                    OperationPriority::Normal,
                    b"x",
                ))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(engine.worker().in_flight() > 0, "a batch is in flight");
    let last_ts = engine.clock().last();
    engine.shutdown().await.unwrap();
    assert!(matches!(
        engine
            .submit(op(&engine, "z", OperationPriority::Normal, b"x"))
            .await,
        Err(Error::ShutDown)
    ));
    drop(engine);

    let engine = SyncEngine::builder()
        .path(dir.path())
        .transport_arc(w.transport.clone())
        .start()
        .await
        .unwrap();
    // The clock resumes above everything issued before the restart.
    assert!(engine.clock().now().unwrap() > last_ts);
    let pending = engine.pending().await.unwrap();
    assert_eq!(pending, 50);
    drain(&engine, Duration::from_secs(60)).await;
    let mut applied: Vec<_> = w.remote.apply_log().iter().map(|r| r.op_id).collect();
    applied.sort();
    ids.sort();
    assert_eq!(applied, ids);
    engine.shutdown().await.unwrap();
}

#[derive(Debug)]
struct Hanging;
#[async_trait::async_trait]
impl cpc_sync::core::Transport for Hanging {
    async fn push(
        &self,
        _: &cpc_sync::core::PushQuery<'_>,
    ) -> Result<cpc_sync::core::PushAnswer, TransportError> {
        std::future::pending().await
    }
}

#[derive(Debug)]
struct ExpiredOnce {
    inner: std::sync::Arc<cpc_fault::FaultyTransport<cpc_fault::SimulatedRemote>>,
    refused: std::sync::atomic::AtomicBool,
}
#[async_trait::async_trait]
impl cpc_sync::core::Transport for ExpiredOnce {
    async fn push(
        &self,
        query: &cpc_sync::core::PushQuery<'_>,
    ) -> Result<cpc_sync::core::PushAnswer, TransportError> {
        if !self.refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(TransportError::Unauthorized);
        }
        self.inner.push(query).await
    }
}

#[tokio::test(start_paused = true)]
async fn unauthorized_pauses_until_resume() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 22);
    let t = std::sync::Arc::new(ExpiredOnce {
        inner: w.transport.clone(),
        refused: Default::default(),
    });
    let engine = builder(&w).transport_arc(t).start().await.unwrap();
    let mut events = engine.subscribe();
    let id = engine
        .submit(op(&engine, "a", OperationPriority::Normal, b"x"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if matches!(events.recv().await.unwrap(), WorkerEvent::AuthRequired) {
                break;
            }
        }
    })
    .await;
    assert!(got.is_ok());
    tokio::time::sleep(Duration::from_secs(600)).await;
    let stored = engine.storage().get(id).unwrap().unwrap();
    assert_eq!(stored.state, OpState::Ready);
    assert_eq!(stored.attempts, 0);
    assert_eq!(w.remote.apply_count(), 0);
    engine.resume();
    drain(&engine, Duration::from_secs(10)).await;
    assert_eq!(w.remote.apply_count(), 1);
    engine.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dead_letters_can_be_revived_and_deferred_conflicts_settled() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 23);
    w.remote.update_options(|o| {
        o.reject_collections.insert("notes".into());
    });
    let engine = builder(&w).build().unwrap();
    let id = engine
        .submit(op(&engine, "a", OperationPriority::Normal, b"x"))
        .await
        .unwrap();
    engine.process_once().await.unwrap();
    let dead = engine.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    w.remote.update_options(|o| o.reject_collections.clear());
    assert!(engine.revive(id).await.unwrap());
    engine.start().await.unwrap();
    drain(&engine, Duration::from_secs(10)).await;
    assert_eq!(w.remote.apply_count(), 1);
    assert!(engine.dead_letters().await.unwrap().is_empty());
    engine.shutdown().await.unwrap();
}

/// A running engine dropped without `shutdown` stops its worker, which lets
/// go of the store: the same queue directory opens again (it stayed locked
/// by the orphaned loop before) and nothing submitted is lost.
#[tokio::test(start_paused = true)]
async fn dropping_a_running_engine_releases_its_queue() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let w = world(RemoteOptions::default(), FaultPlan::none(), 22);
    let engine = SyncEngine::builder()
        .path(dir.path())
        .transport_arc(std::sync::Arc::new(Hanging))
        .shutdown_timeout(Duration::from_secs(1))
        .start_time_ms(START_MS)
        .start()
        .await
        .unwrap();
    let id = engine
        .submit(op(&engine, "a", OperationPriority::Normal, b"x"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(engine.worker().in_flight() > 0, "a batch is in flight");
    drop(engine);
    // The loop gives its in-flight batch the shutdown timeout, then ends.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let engine = SyncEngine::builder()
        .path(dir.path())
        .transport_arc(w.transport.clone())
        .start()
        .await
        .unwrap();
    // The abandoned batch's lease was not handed back, but the directory
    // is this process's now: the lease is returned at open and the batch
    // resent at once, not after the lease (60 s) would have run out.
    drain(&engine, Duration::from_secs(5)).await;
    let applied: Vec<_> = w.remote.apply_log().iter().map(|r| r.op_id).collect();
    assert_eq!(applied, vec![id]);
    engine.shutdown().await.unwrap();
}
