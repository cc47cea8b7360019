//! Every configured value is checked when the engine is built: an extreme
//! value is a clear error naming its field, never a panic later.

use std::time::Duration;

use cpc_fault::{FaultPlan, RemoteOptions};
use cpc_sync::storage::{Durability, QueueOptions, SqliteStorage, StorageError};
use cpc_sync::worker::WorkerConfig;
use cpc_sync::{Error, SyncEngine};

use crate::support::*;

fn worker_error(config: WorkerConfig) -> String {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 1);
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    match SyncEngine::builder()
        .path(dir.path())
        .transport_arc(w.transport.clone())
        .worker_config(config)
        .build()
    {
        Err(Error::Config(cpc_sync::ConfigError::Invalid { field, reason })) => {
            format!("{field} {reason}")
        }
        Err(e) => e.to_string(),
        Ok(_) => "accepted".into(),
    }
}

#[test]
fn every_worker_duration_at_duration_max_is_refused_by_name() {
    type Set = fn(&mut WorkerConfig);
    let cases: [(&str, Set); 5] = [
        ("push_timeout", |c| c.push_timeout = Duration::MAX),
        ("shutdown_timeout", |c| c.shutdown_timeout = Duration::MAX),
        ("reconnect_spread", |c| c.reconnect_spread = Duration::MAX),
        ("storage_retry", |c| c.storage_retry = Duration::MAX),
        ("min_wakeup_interval", |c| {
            c.min_wakeup_interval = Duration::MAX
        }),
    ];
    for (field, set) in cases {
        let mut config = WorkerConfig::default();
        set(&mut config);
        let msg = worker_error(config);
        assert!(msg.starts_with(field), "{field}: {msg}");
    }
}

#[test]
fn a_push_timeout_past_the_lease_is_refused() {
    let msg = worker_error(WorkerConfig {
        push_timeout: Duration::from_secs(120),
        ..WorkerConfig::default()
    });
    assert!(msg.contains("lease_timeout"), "{msg}");
}

#[test]
fn every_queue_option_at_its_extreme_is_refused_by_name() {
    type Set = fn(&mut QueueOptions);
    let cases: [(&str, Set); 7] = [
        ("lease_timeout", |o| o.lease_timeout = Duration::MAX),
        ("lease_timeout", |o| o.lease_timeout = Duration::ZERO),
        ("aging_after", |o| o.aging_after = Some(Duration::MAX)),
        ("max_payload", |o| o.max_payload = usize::MAX),
        ("conflict_log_max_age", |o| {
            o.conflict_log_max_age = Duration::MAX
        }),
        ("conflict_log_max_entries", |o| {
            o.conflict_log_max_entries = 0
        }),
        ("durability", |o| {
            o.durability = Durability::GroupCommit {
                max_delay: Duration::MAX,
            }
        }),
    ];
    for (field, set) in cases {
        let mut options = QueueOptions::default();
        set(&mut options);
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        match SqliteStorage::open(dir.path(), options) {
            Err(StorageError::InvalidOption { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_largest_valid_durations_run_without_overflow() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 2);
    let max = cpc_sync::worker::MAX_DURATION;
    let engine = builder(&w)
        .worker_config(WorkerConfig {
            push_timeout: max,
            shutdown_timeout: max,
            reconnect_spread: max,
            storage_retry: max,
            min_wakeup_interval: max,
            seed: Some(2),
            ..WorkerConfig::default()
        })
        .start()
        .await
        .unwrap();
    let o = op(
        &engine,
        "a",
        cpc_sync::core::OperationPriority::Normal,
        b"x",
    );
    engine.submit(o).await.unwrap();
    drain(&engine, Duration::from_secs(60)).await;
    engine.shutdown().await.unwrap();
}
