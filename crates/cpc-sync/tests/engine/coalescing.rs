//! Coalescing (`SyncEngineBuilder::coalesce`): queued edits of one record
//! merged before they are sent, and the remote ending in the same state
//! as without it.

use std::time::Duration;

use cpc_fault::{FaultPlan, Probability, RemoteOptions};
use cpc_sync::core::{EntityKey, Operation, OperationKind, StandardCoalescer};
use cpc_sync::network::{ManualSource, MonitorConfig, NetworkMonitor};
use cpc_sync::worker::WorkerEvent;
use cpc_sync::SyncEngine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::*;

fn offline_link(seed: u64) -> (NetworkMonitor, ManualSource) {
    let monitor = NetworkMonitor::new(MonitorConfig {
        seed: Some(seed),
        ..MonitorConfig::default()
    })
    .unwrap();
    let link = ManualSource::new();
    link.connect(monitor.sink("manual"));
    link.set_offline();
    (monitor, link)
}

fn edit(engine: &SyncEngine, collection: &str, kind: OperationKind, payload: &str) -> Operation {
    engine
        .operation(EntityKey::new(collection, "1"), kind)
        .payload(payload.as_bytes().to_vec())
        .build()
        .unwrap()
}

/// A fault-free world and an engine coalescing `notes`, offline.
async fn coalescing_offline(seed: u64) -> (World, ManualSource, SyncEngine) {
    let w = world(RemoteOptions::default(), FaultPlan::none(), seed);
    let (monitor, link) = offline_link(seed + 1);
    let engine = builder(&w)
        .network(monitor)
        .coalesce("notes", StandardCoalescer::new())
        .start()
        .await
        .unwrap();
    (w, link, engine)
}

#[tokio::test(start_paused = true)]
async fn forty_offline_edits_of_a_note_go_out_as_one() {
    let (w, link, engine) = coalescing_offline(1).await;
    // Claims are made durable before a batch goes out (a claim lost to a
    // power loss must not let an edit merge into a sent operation).
    assert!(engine.worker().config().durable_claims);
    let plain = builder(&w).build().unwrap();
    assert!(!plain.worker().config().durable_claims);
    let mut events = engine.subscribe();
    let first = edit(&engine, "notes", OperationKind::Create, "v0");
    let first_id = engine.submit(first).await.unwrap();
    for n in 1..40 {
        let id = engine
            .submit(edit(
                &engine,
                "notes",
                OperationKind::Update,
                &format!("v{n}"),
            ))
            .await
            .unwrap();
        assert_eq!(id, first_id, "submit returns the id that will be sent");
    }
    // A collection without a coalescer keeps every operation.
    for n in 0..3 {
        engine
            .submit(edit(
                &engine,
                "audit",
                OperationKind::Update,
                &format!("a{n}"),
            ))
            .await
            .unwrap();
    }
    assert_eq!(engine.pending().await.unwrap(), 4);
    let mut coalesced = 0;
    while let Ok(e) = events.try_recv() {
        if let WorkerEvent::Coalesced { into, .. } = e {
            assert_eq!(into, first_id);
            coalesced += 1;
        }
    }
    assert_eq!(coalesced, 39);
    link.set_online();
    drain(&engine, Duration::from_secs(120)).await;
    let log = w.remote.apply_log();
    assert_eq!(log.len(), 4, "{log:?}");
    let note = w.remote.record(&EntityKey::new("notes", "1")).unwrap();
    assert_eq!(note.payload.as_deref(), Some(&b"v39"[..]));
    let stored = engine
        .list(cpc_sync::storage::ListFilter::default())
        .await
        .unwrap();
    assert!(stored.is_empty());
    engine.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_create_then_delete_made_offline_never_reaches_the_remote() {
    let (w, link, engine) = coalescing_offline(3).await;
    let mut events = engine.subscribe();
    let create = edit(&engine, "notes", OperationKind::Create, "draft");
    let create_id = create.id;
    engine.submit(create).await.unwrap();
    let delete = edit(&engine, "notes", OperationKind::Delete, "");
    let delete_id = engine.submit(delete).await.unwrap();
    assert_eq!(engine.pending().await.unwrap(), 0);
    assert!(matches!(
        events.try_recv().unwrap(),
        WorkerEvent::CoalescedAway { later, earlier, .. } if later == delete_id && earlier == create_id
    ));
    link.set_online();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(w.remote.apply_log().is_empty());
    assert!(w.remote.record(&EntityKey::new("notes", "1")).is_none());
    engine.shutdown().await.unwrap();
}

/// One random life of a record: kinds and payloads, and after each submit
/// whether (and for how long) the network comes up, so the worker claims
/// some operations (and loses some answers) at random points.
#[derive(Clone, Debug)]
struct Life {
    steps: Vec<(OperationKind, String, Option<u64>)>,
}

/// Creates only when the record is absent in the app's own view (that is
/// what Create means: the cancel of Create+Delete relies on it), updates
/// and deletes any time.
fn life(rng: &mut StdRng) -> Life {
    let mut exists = false;
    let mut steps = Vec::new();
    for n in 0..rng.gen_range(1..24) {
        let kind = match rng.gen_range(0..10) {
            0..=2 if !exists => OperationKind::Create,
            0..=1 => OperationKind::Delete,
            _ => OperationKind::Update,
        };
        exists = !matches!(kind, OperationKind::Delete);
        let online = rng.gen_bool(0.3).then(|| rng.gen_range(0..3_000));
        steps.push((kind, format!("v{n}"), online));
    }
    Life { steps }
}

/// Runs `life` on a fresh world; returns the remote's final payload (or
/// absence) and how many operations it applied.
async fn run(life: &Life, coalesce: bool, seed: u64) -> (Option<Vec<u8>>, usize) {
    let plan = FaultPlan {
        lost_ack: Probability::new(0.3).unwrap(),
        server_error: Probability::new(0.2).unwrap(),
        ..FaultPlan::none()
    };
    let w = world(RemoteOptions::default(), plan, seed);
    let (monitor, link) = offline_link(seed);
    let mut b = builder(&w)
        .network(monitor)
        .retry_budget(None)
        .circuit_breaker(None);
    if coalesce {
        b = b.coalesce("notes", StandardCoalescer::new());
    }
    let engine = b.start().await.unwrap();
    for (kind, payload, online) in &life.steps {
        engine
            .submit(edit(&engine, "notes", kind.clone(), payload))
            .await
            .unwrap();
        if let Some(ms) = online {
            link.set_online();
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            link.set_offline();
        }
    }
    link.set_online();
    drain(&engine, Duration::from_secs(3600)).await;
    engine.shutdown().await.unwrap();
    let entity = EntityKey::new("notes", "1");
    let state = w.remote.record(&entity).and_then(|r| r.payload);
    let mut ids: Vec<_> = w.remote.apply_log().iter().map(|a| a.op_id).collect();
    ids.sort();
    ids.dedup();
    (state, ids.len())
}

#[tokio::test(start_paused = true)]
async fn with_coalescing_the_remote_ends_the_same_and_never_gets_more() {
    let mut merged_somewhere = false;
    for case in 0..48u64 {
        let mut rng = StdRng::seed_from_u64(case);
        let life = life(&mut rng);
        let (plain, sent_plain) = run(&life, false, case).await;
        let (coalesced, sent_coalesced) = run(&life, true, case).await;
        assert_eq!(plain, coalesced, "case {case}: {life:?}");
        assert!(
            sent_coalesced <= sent_plain,
            "case {case}: {sent_coalesced} > {sent_plain}: {life:?}"
        );
        merged_somewhere |= sent_coalesced < sent_plain;
    }
    assert!(merged_somewhere, "no case coalesced anything");
}

/// A direct send whose answer was lost may have been applied: the adapter
/// queues it as possibly sent, and a later edit is not merged into it (the
/// remote would answer `already_applied` for the merged operation and the
/// edit would be lost).
#[tokio::test(start_paused = true)]
async fn an_operation_the_adapter_may_have_sent_is_never_merged_into() {
    let plan = FaultPlan {
        lost_ack: Probability::new(1.0).unwrap(),
        ..FaultPlan::none()
    };
    let w = world(RemoteOptions::default(), plan, 5);
    let engine = builder(&w)
        .coalesce("notes", StandardCoalescer::new())
        .build()
        .unwrap();
    let adapter = cpc_sync::CompositeAdapter::new(&engine);
    let create = edit(&engine, "notes", OperationKind::Create, "v0");
    let delivery = adapter.send(create.clone()).await.unwrap();
    assert!(
        matches!(delivery, cpc_sync::Delivery::Queued { id, .. } if id == create.id),
        "{delivery:?}"
    );
    assert_eq!(w.remote.apply_log().len(), 1, "applied, answer lost");
    let update = edit(&engine, "notes", OperationKind::Update, "v1");
    let update_id = update.id;
    assert_eq!(engine.submit(update).await.unwrap(), update_id);
    assert_eq!(engine.pending().await.unwrap(), 2);
}
