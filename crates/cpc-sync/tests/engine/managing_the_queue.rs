//! What an application does with the queue by hand: page through dead
//! letters, repair or drop them, list and settle deferred conflicts, read
//! the conflict log page by page; and the queue settings of the builder,
//! each shown by what it changes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cpc_fault::{FaultPlan, Probability, RemoteOptions};
use cpc_sync::backoff::{BackoffExt, Exponential, Jitter};
use cpc_sync::conflict::{DeferAll, RemoteWins};
use cpc_sync::core::{
    EntityKey, HlcTimestamp, NodeId, OperationKind, OperationPriority, RemoteRecord, Resolution,
    TransportError,
};
use cpc_sync::storage::{
    ConflictFilter, DeadHeadPolicy, ListFilter, OpState, Page, QueueOptions, RetainAcked,
};
use cpc_sync::worker::RetryPolicy;
use cpc_sync::{Error, SyncEngine};

use crate::support::*;

fn key(id: &str) -> EntityKey {
    EntityKey::new("notes", id)
}

fn private_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap()
}

/// The remote holds version 3 of `id`, written by another device.
fn seed_v3(w: &World, id: &str) {
    w.remote.seed_record(
        key(id),
        RemoteRecord {
            version: 3,
            timestamp: HlcTimestamp::new(START_MS - 1_000, 0, NodeId(9)),
            payload: Some(b"remote".to_vec()),
            node: NodeId(9),
        },
    );
}

#[tokio::test(start_paused = true)]
async fn dead_letters_are_paged_repaired_and_dropped() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 41);
    w.remote.update_options(|o| {
        o.reject_collections.insert("notes".into());
    });
    let engine = builder(&w).build().unwrap();
    let mut heads = Vec::new();
    for id in ["a", "b", "c"] {
        let o = op(&engine, id, OperationPriority::Normal, b"bad");
        heads.push(engine.submit(o).await.unwrap());
    }
    let behind = engine
        .submit(op(&engine, "a", OperationPriority::Normal, b"later"))
        .await
        .unwrap();
    let summary = engine.process_once().await.unwrap();
    assert_eq!(summary.dead_lettered, 3);
    let stats = engine.stats().await.unwrap();
    assert_eq!((stats.dead, stats.blocked), (3, 1));

    // Two pages of two.
    let first = engine.dead_letters_page(None, 2).await.unwrap();
    let ids: Vec<_> = first.iter().map(|s| s.op.id).collect();
    assert_eq!(ids, heads[..2]);
    let rest = engine
        .dead_letters_page(Some(first[1].seq), 2)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|s| s.op.id).collect::<Vec<_>>(), heads[2..]);
    // What waits behind the dead head of "a" (the dead one is not pending).
    let pending: Vec<_> = engine
        .pending_for(&key("a"))
        .await
        .unwrap()
        .iter()
        .map(|s| s.op.id)
        .collect();
    assert_eq!(pending, vec![behind]);

    // "b" is repaired with a payload the remote accepts.
    w.remote.update_options(|o| o.reject_collections.clear());
    let mut fixed = first[1].op.clone();
    fixed.payload = b"fixed".to_vec();
    assert!(engine.repair(fixed.clone()).await.unwrap());
    assert!(
        !engine.repair(fixed).await.unwrap(),
        "no longer a dead letter"
    );
    // "c" is given up; "a" with what waited behind it too.
    assert!(engine.drop_operation(heads[2]).await.unwrap());
    assert!(!engine.drop_operation(heads[2]).await.unwrap());
    assert_eq!(engine.drop_entity(&key("a")).await.unwrap(), 2);

    engine.start().await.unwrap();
    drain(&engine, Duration::from_secs(60)).await;
    let applied: Vec<_> = w.remote.apply_log().iter().map(|r| r.op_id).collect();
    assert_eq!(applied, vec![heads[1]]);
    assert_eq!(
        w.remote.record(&key("b")).unwrap().payload.as_deref(),
        Some(&b"fixed"[..])
    );
    assert!(engine.dead_letters().await.unwrap().is_empty());
    assert_eq!(engine.pending().await.unwrap(), 0);
    engine.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn deferred_conflicts_are_paged_and_settled_either_way() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 42);
    seed_v3(&w, "x");
    seed_v3(&w, "y");
    let engine = builder(&w).resolver(DeferAll).build().unwrap();
    let mut ids = Vec::new();
    for id in ["x", "y"] {
        let submitted = engine
            .operation(key(id), OperationKind::Update)
            .payload(format!("local-{id}").into_bytes())
            .base_version(1)
            .submit()
            .await
            .unwrap();
        ids.push(submitted);
    }
    engine.process_once().await.unwrap();
    let all = engine.deferred().await.unwrap();
    assert_eq!(all.iter().map(|d| d.op.id).collect::<Vec<_>>(), ids);
    assert!(all.iter().all(|d| d.remote.version == 3));
    let page = engine.deferred_page(Page::first(1)).await.unwrap();
    assert_eq!(page.len(), 1);
    let next = engine
        .deferred_page(Page {
            after: Some(page[0].seq),
            limit: Some(1),
        })
        .await
        .unwrap();
    assert_eq!((page[0].op.id, next[0].op.id), (ids[0], ids[1]));

    // x: resent on top of the remote's version; y: the remote's is kept.
    assert!(engine.settle(ids[0], Resolution::KeepLocal).await.unwrap());
    assert!(
        !engine.settle(ids[0], Resolution::KeepLocal).await.unwrap(),
        "no longer deferred"
    );
    assert!(engine.settle(ids[1], Resolution::KeepRemote).await.unwrap());
    engine.start().await.unwrap();
    drain(&engine, Duration::from_secs(60)).await;
    let x = w.remote.record(&key("x")).unwrap();
    assert_eq!(
        (x.version, x.payload.as_deref()),
        (4, Some(&b"local-x"[..]))
    );
    let y = w.remote.record(&key("y")).unwrap();
    assert_eq!((y.version, y.payload.as_deref()), (3, Some(&b"remote"[..])));
    assert!(engine.deferred().await.unwrap().is_empty());
    // A healthy store quarantined nothing along the way.
    assert!(engine.quarantined().await.unwrap().is_empty());
    assert!(engine
        .quarantined_page(Page::first(10))
        .await
        .unwrap()
        .is_empty());
    engine.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn resolved_conflicts_are_logged_and_read_newest_first_page_by_page() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 43);
    seed_v3(&w, "p");
    seed_v3(&w, "q");
    let engine = builder(&w).resolver(RemoteWins).build().unwrap();
    let mut ids = BTreeSet::new();
    for id in ["p", "q"] {
        let submitted = engine
            .operation(key(id), OperationKind::Update)
            .payload(b"lost".to_vec())
            .base_version(1)
            .submit()
            .await
            .unwrap();
        ids.insert(submitted);
    }
    engine.process_once().await.unwrap();
    assert_eq!(engine.pending().await.unwrap(), 0, "the remote's kept");

    let one = |before| ConflictFilter {
        limit: Some(1),
        before,
        ..ConflictFilter::default()
    };
    let first = engine.conflict_log_page(one(None)).await.unwrap();
    let second = engine
        .conflict_log_page(one(Some(first[0].cursor)))
        .await
        .unwrap();
    let third = engine
        .conflict_log_page(one(Some(second[0].cursor)))
        .await
        .unwrap();
    assert!(third.is_empty());
    let logged: BTreeSet<_> = first.iter().chain(&second).map(|e| e.entry.op_id).collect();
    assert_eq!(logged, ids);
    for e in first.iter().chain(&second) {
        assert_eq!(e.entry.resolution, Resolution::KeepRemote);
        assert_eq!(e.entry.losing_payload.as_deref(), Some(&b"lost"[..]));
        assert_eq!(e.entry.remote.version, 3);
    }
    assert!(first[0].cursor > second[0].cursor, "newest first");
    // The whole log at once: the same entries, without their cursors.
    let whole = engine
        .conflict_log(ConflictFilter::default())
        .await
        .unwrap();
    assert_eq!(whole, vec![first[0].entry.clone(), second[0].entry.clone()]);
}

/// How long an operation waits after a failed push is the retry
/// policy's backoff, exactly (no jitter).
#[tokio::test(start_paused = true)]
async fn the_retry_policy_given_to_the_builder_paces_a_failed_push() {
    let plan = FaultPlan {
        server_error: Probability::new(1.0).unwrap(),
        ..FaultPlan::none()
    };
    let w = world(RemoteOptions::default(), plan, 44);
    let seven_minutes = Exponential::new(
        Duration::from_secs(420),
        2.0,
        Duration::from_secs(3600),
        Jitter::None,
    )
    .unwrap()
    .with_max_attempts(3);
    let engine = builder(&w)
        .retry_policy(RetryPolicy::new(Arc::new(seven_minutes)))
        .build()
        .unwrap();
    engine
        .submit(op(&engine, "a", OperationPriority::Normal, b"x"))
        .await
        .unwrap();
    let summary = engine.process_once().await.unwrap();
    let now = engine.wall_clock().now_ms();
    assert_eq!(
        summary.batch_error,
        Some(TransportError::Server { status: 503 })
    );
    assert_eq!(summary.retried, 1);
    let stored = engine.list(ListFilter::default()).await.unwrap();
    assert_eq!(
        stored[0].state,
        OpState::Waiting {
            until: now + 420_000
        }
    );
}

/// The queue options of the builder reach a store it opens at a path.
#[tokio::test(start_paused = true)]
async fn queue_options_given_to_the_builder_reach_the_store_at_a_path() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 45);
    let dir = private_dir();
    let engine = SyncEngine::builder()
        .path(dir.path())
        .transport_arc(w.transport.clone())
        .start_time_ms(START_MS)
        .queue_options(QueueOptions {
            max_payload: 8,
            ..QueueOptions::default()
        })
        .build()
        .unwrap();
    assert_eq!(engine.storage().max_payload(), 8);
    let e = engine
        .submit(op(&engine, "a", OperationPriority::Normal, b"123456789"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::PayloadTooLarge { size: 9, max: 8 }),
        "{e:?}"
    );
    engine
        .submit(op(&engine, "a", OperationPriority::Normal, b"12345678"))
        .await
        .unwrap();
    assert_eq!(engine.pending().await.unwrap(), 1);
    engine.shutdown().await.unwrap();
}

/// Under `SkipEntityHead` the operation behind a dead head is sent; under
/// the default it waits.
#[tokio::test(start_paused = true)]
async fn the_dead_head_policy_decides_whether_an_entity_waits_behind_a_dead_letter() {
    async fn sent_behind_a_dead_head(policy: Option<DeadHeadPolicy>, seed: u64) -> usize {
        let w = world(RemoteOptions::default(), FaultPlan::none(), seed);
        let dir = private_dir();
        let mut b = SyncEngine::builder()
            .path(dir.path())
            .transport_arc(w.transport.clone())
            .start_time_ms(START_MS);
        if let Some(policy) = policy {
            b = b.dead_head(policy);
        }
        let engine = b.build().unwrap();
        w.remote.update_options(|o| {
            o.reject_collections.insert("notes".into());
        });
        engine
            .submit(op(&engine, "a", OperationPriority::Normal, b"bad"))
            .await
            .unwrap();
        assert_eq!(engine.process_once().await.unwrap().dead_lettered, 1);
        w.remote.update_options(|o| o.reject_collections.clear());
        engine
            .submit(op(&engine, "a", OperationPriority::Normal, b"good"))
            .await
            .unwrap();
        let summary = engine.process_once().await.unwrap();
        engine.shutdown().await.unwrap();
        summary.applied
    }
    assert_eq!(sent_behind_a_dead_head(None, 46).await, 0);
    assert_eq!(
        sent_behind_a_dead_head(Some(DeadHeadPolicy::BlockEntity), 47).await,
        0
    );
    assert_eq!(
        sent_behind_a_dead_head(Some(DeadHeadPolicy::SkipEntityHead), 48).await,
        1
    );
}

/// With aging, a background operation ready long enough goes out before
/// a newer normal one; without it, strict priority.
#[tokio::test(start_paused = true)]
async fn aging_lets_a_waiting_background_operation_overtake() {
    async fn first_sent(aging: Option<Duration>, seed: u64) -> &'static str {
        let w = world(RemoteOptions::default(), FaultPlan::none(), seed);
        let dir = private_dir();
        let engine = SyncEngine::builder()
            .path(dir.path())
            .transport_arc(w.transport.clone())
            .start_time_ms(START_MS)
            .batch_size(1)
            .aging_after(aging)
            .build()
            .unwrap();
        let old = engine
            .submit(op(&engine, "old", OperationPriority::Background, b"1"))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        engine
            .submit(op(&engine, "new", OperationPriority::Normal, b"2"))
            .await
            .unwrap();
        engine.process_once().await.unwrap();
        engine.shutdown().await.unwrap();
        let log = w.remote.apply_log();
        assert_eq!(log.len(), 1);
        if log[0].op_id == old {
            "background"
        } else {
            "normal"
        }
    }
    assert_eq!(
        first_sent(Some(Duration::from_secs(10)), 49).await,
        "background"
    );
    assert_eq!(first_sent(None, 50).await, "normal");
}

/// `retain_acked` keeps acknowledged operations whole in a store opened at
/// a path (so they can be sent again to a restored remote); without it
/// only their ids are journaled.
#[tokio::test(start_paused = true)]
async fn retain_acked_keeps_delivered_operations_whole() {
    async fn retained(retain: Option<RetainAcked>, seed: u64) -> Vec<bool> {
        let w = world(RemoteOptions::default(), FaultPlan::none(), seed);
        let dir = private_dir();
        let engine = SyncEngine::builder()
            .path(dir.path())
            .transport_arc(w.transport.clone())
            .start_time_ms(START_MS)
            .retain_acked(retain)
            .build()
            .unwrap();
        let id = engine
            .submit(op(&engine, "a", OperationPriority::Normal, b"x"))
            .await
            .unwrap();
        assert_eq!(engine.process_once().await.unwrap().applied, 1);
        let acked = engine.storage().acked(&Page::ALL).unwrap();
        engine.shutdown().await.unwrap();
        assert!(acked.iter().all(|a| a.id == id), "{acked:?}");
        acked.iter().map(|a| a.retained).collect()
    }
    let keep = RetainAcked {
        max_count: 10,
        max_age: Duration::from_secs(3600),
    };
    assert_eq!(retained(Some(keep), 51).await, vec![true]);
    assert_eq!(retained(None, 52).await, vec![false]);
}
