//! Every refusal of the facade is a specific `Error` variant, with the
//! message, the fields and the answers to `is_user_recoverable` /
//! `is_retryable` an application acts on.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use cpc_fault::{FaultPlan, RemoteOptions};
use cpc_sync::backoff::{BackoffExt, Exponential, Jitter};
use cpc_sync::core::{EntityKey, OperationKind, OperationPriority};
use cpc_sync::storage::{MemoryStorage, QueueOptions, StorageError};
use cpc_sync::worker::WorkerError;
use cpc_sync::{CompositeAdapter, ConfigError, Error, SyncEngine, SyncEngineBuilder};

use crate::support::*;

fn private_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap()
}

fn memory() -> Arc<MemoryStorage> {
    Arc::new(MemoryStorage::new(QueueOptions::default()))
}

#[test]
fn a_builder_without_a_queue_is_refused_as_missing_storage() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 1);
    let e = SyncEngine::builder()
        .transport_arc(w.transport.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(e, Error::Config(ConfigError::MissingStorage)),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "invalid configuration: a queue is required (`SyncEngineBuilder::path` or `::storage`)"
    );
    assert!(e.is_user_recoverable());
    assert!(!e.is_retryable());
}

#[test]
fn a_builder_given_both_a_path_and_a_storage_is_refused() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 2);
    let dir = private_dir();
    let e = SyncEngine::builder()
        .path(dir.path())
        .storage(memory())
        .transport_arc(w.transport.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(e, Error::Config(ConfigError::PathAndStorage)),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "invalid configuration: give either `SyncEngineBuilder::path` or `::storage`, not both"
    );
    // Refused before anything was opened: the directory stays empty.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(e.is_user_recoverable());
}

#[test]
fn a_zero_payload_limit_is_refused_by_name() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 3);
    let e = SyncEngine::builder()
        .storage(memory())
        .transport_arc(w.transport.clone())
        .max_payload(0)
        .build()
        .unwrap_err();
    match &e {
        Error::Config(ConfigError::Invalid { field, reason }) => {
            assert_eq!((*field, *reason), ("max_payload", "must be positive"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "invalid configuration: `max_payload` must be positive"
    );
}

/// An application that configures its backoff with `?` in a function
/// returning the facade's `Result`.
fn with_backoff(builder: SyncEngineBuilder, base: Duration) -> cpc_sync::Result<SyncEngineBuilder> {
    let backoff = Exponential::new(base, 2.0, Duration::from_secs(30), Jitter::Full)?;
    Ok(builder.backoff(backoff.with_max_attempts(5)))
}

#[test]
fn a_refused_backoff_setting_converts_to_backoff_config() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 4);
    let e = with_backoff(builder(&w), Duration::ZERO).unwrap_err();
    let Error::BackoffConfig(cause) = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*cause, cpc_sync::backoff::ConfigError::ZeroBase);
    assert_eq!(e.to_string(), "invalid backoff configuration");
    assert_eq!(e.source().map(ToString::to_string), Some(cause.to_string()));
    assert!(e.is_user_recoverable());
    assert!(!e.is_retryable());
    // The same function with a valid base configures the engine.
    assert!(with_backoff(builder(&w), Duration::from_millis(100))
        .unwrap()
        .build()
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn starting_a_running_engine_is_a_worker_error_already_running() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 5);
    let engine = builder(&w).start().await.unwrap();
    let e = engine.start().await.unwrap_err();
    assert!(
        matches!(e, Error::Worker(WorkerError::AlreadyRunning)),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "sync worker failure");
    assert_eq!(
        e.source().map(ToString::to_string).as_deref(),
        Some("the worker is already running")
    );
    assert!(!e.is_retryable());
    assert!(!e.is_user_recoverable());
    // The first start is unharmed: the engine still delivers.
    engine
        .submit(op(&engine, "a", OperationPriority::Normal, b"x"))
        .await
        .unwrap();
    drain(&engine, Duration::from_secs(10)).await;
    assert_eq!(w.remote.apply_count(), 1);
    engine.shutdown().await.unwrap();
    // After shutdown, neither start nor submit work.
    assert!(matches!(engine.start().await, Err(Error::ShutDown)));
    let late = op(&engine, "a", OperationPriority::Normal, b"y");
    assert!(matches!(engine.submit(late).await, Err(Error::ShutDown)));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_operation_is_refused_at_every_door_and_nothing_is_stored() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 6);
    let engine = builder(&w).build().unwrap();
    let expect_invalid = |e: Error, why: &str| {
        match &e {
            Error::InvalidOperation(cpc_sync::core::Error::InvalidOperation(reason)) => {
                assert_eq!(*reason, why)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.to_string(), "invalid operation");
        assert_eq!(
            e.source().map(ToString::to_string),
            Some(format!("invalid operation: {why}"))
        );
        assert!(e.is_user_recoverable());
        assert!(!e.is_retryable());
    };

    // `submit`: an empty collection name.
    let e = engine
        .operation(EntityKey::new("", "1"), OperationKind::Update)
        .submit()
        .await
        .unwrap_err();
    expect_invalid(e, "empty collection name");

    // `submit_batch`: one bad operation refuses the whole batch.
    let good = op(&engine, "a", OperationPriority::Normal, b"x");
    let bad = engine
        .operation(
            EntityKey::new("notes", "k".repeat(1025)),
            OperationKind::Update,
        )
        .build()
        .unwrap();
    let e = engine.submit_batch(vec![good, bad]).await.unwrap_err();
    expect_invalid(e, "collection or entity id longer than 1024 bytes");

    // The composite adapter validates before sending or queueing.
    let custom = engine
        .operation(
            EntityKey::new("notes", "b"),
            OperationKind::Custom("c".repeat(1025)),
        )
        .build()
        .unwrap();
    let e = CompositeAdapter::new(&engine)
        .send(custom)
        .await
        .unwrap_err();
    expect_invalid(e, "custom kind name longer than 1024 bytes");

    assert_eq!(engine.pending().await.unwrap(), 0);
    assert_eq!(w.remote.stats().requests, 0, "nothing was sent either");
}

/// An empty batch is refused as such (it used to be accepted as a batch
/// of nothing, contrary to `Error::EmptyBatch`'s contract).
#[tokio::test(start_paused = true)]
async fn an_empty_batch_is_refused_as_empty_batch() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 7);
    let engine = builder(&w).build().unwrap();
    let e = engine.submit_batch(Vec::new()).await.unwrap_err();
    assert!(matches!(e, Error::EmptyBatch), "{e:?}");
    assert_eq!(e.to_string(), "an empty batch was submitted");
    assert!(e.is_user_recoverable());
    assert!(matches!(
        engine.submit_batch_with_outcomes(Vec::new()).await,
        Err(Error::EmptyBatch)
    ));
    // A batch of one and of two still go through.
    let one = op(&engine, "a", OperationPriority::Normal, b"1");
    let two = vec![
        op(&engine, "b", OperationPriority::Normal, b"2"),
        op(&engine, "c", OperationPriority::Normal, b"3"),
    ];
    assert_eq!(engine.submit_batch(vec![one]).await.unwrap().len(), 1);
    assert_eq!(engine.submit_batch(two).await.unwrap().len(), 2);
    assert_eq!(engine.pending().await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_queue_directory_held_by_another_engine_is_locked() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 8);
    let dir = private_dir();
    let open = || {
        SyncEngine::builder()
            .path(dir.path())
            .transport_arc(w.transport.clone())
            .start_time_ms(START_MS)
            .build()
    };
    let first = open().unwrap();
    let e = open().unwrap_err();
    match &e {
        Error::Storage(StorageError::Locked { path }) => {
            assert!(path.starts_with(dir.path()), "{}", path.display())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.to_string(), "storage failure");
    // Close the other engine (or wait for it), then try again.
    assert!(e.is_user_recoverable());
    assert!(e.is_retryable());
    first.shutdown().await.unwrap();
    drop(first);
    let again = open().unwrap();
    again.shutdown().await.unwrap();
}
