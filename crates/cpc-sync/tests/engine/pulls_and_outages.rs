//! The pull side through the engine (a sink, its cursor, the loop), and
//! what a scheduled outage of the link does to a push and to a pull: both
//! fail `Offline`, nothing moves, and both succeed once the link is back.

use std::sync::Arc;
use std::time::Duration;

use cpc_fault::{FaultPlan, FaultyTransport, RemoteOptions, Schedule, SimClock, SimulatedRemote};
use cpc_sync::core::{
    EntityKey, HybridClock, ManualWallClock, MemorySink, NodeId, Operation, OperationKind,
    OperationPriority, RemoteSink, TransportError,
};
use cpc_sync::network::{ManualSource, NetworkMonitor};
use cpc_sync::storage::{MemoryStorage, QueueOptions};
use cpc_sync::worker::{PullConfig, PullError};
use cpc_sync::{Error, SyncEngine, SyncEngineBuilder};

use crate::support::*;

/// The link is down for the first minute.
const OUTAGE_END: Duration = Duration::from_secs(60);

struct Link {
    clock: SimClock,
    remote: SimulatedRemote,
    transport: Arc<FaultyTransport<SimulatedRemote>>,
}

fn link(outage: bool, seed: u64) -> Link {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(RemoteOptions::default(), clock);
    let mut transport = FaultyTransport::new(remote.clone(), FaultPlan::none(), seed);
    if outage {
        let schedule = Schedule::builder()
            .offline(Duration::ZERO, OUTAGE_END)
            .build()
            .unwrap();
        transport = transport.with_schedule(schedule);
    }
    Link {
        clock,
        remote,
        transport: Arc::new(transport.with_clock(clock)),
    }
}

fn engine(l: &Link, sink: Option<Arc<MemorySink>>) -> SyncEngineBuilder {
    let mut b = SyncEngine::builder()
        .storage(Arc::new(MemoryStorage::new(QueueOptions::default())))
        .transport_arc(l.transport.clone())
        .start_time_ms(START_MS)
        .seed(17);
    if let Some(sink) = sink {
        b = b.remote_sink(sink as Arc<dyn RemoteSink>);
    }
    b
}

/// Another device's changes, applied at the remote directly.
fn seed_remote(remote: &SimulatedRemote, ids: &[&str]) -> Vec<Operation> {
    let clock = HybridClock::with_wall_clock(NodeId(2), Arc::new(ManualWallClock::new(START_MS)));
    let ops: Vec<Operation> = ids
        .iter()
        .map(|id| {
            Operation::builder(EntityKey::new("notes", *id), OperationKind::Create)
                .payload(format!("from-b:{id}").into_bytes())
                .build(&clock)
                .unwrap()
        })
        .collect();
    remote.apply_batch(&ops).unwrap();
    ops
}

#[tokio::test(start_paused = true)]
async fn an_engine_without_a_sink_refuses_every_pull_call_with_no_remote_sink() {
    let l = link(false, 1);
    let engine = engine(&l, None).build().unwrap();
    let refused = |r: Result<(), Error>| match r {
        Err(e @ Error::NoRemoteSink) => {
            assert_eq!(
                e.to_string(),
                "the engine has no remote sink: it only pushes"
            );
            assert!(e.is_user_recoverable());
            assert!(!e.is_retryable());
        }
        other => panic!("{other:?}"),
    };
    refused(engine.pull_now());
    refused(engine.pull_once().await.map(drop));
    refused(engine.pulled_through(1).await);
    refused(engine.pull_cursor().await.map(drop));
    refused(engine.known_position().await.map(drop));
    assert_eq!(l.remote.stats().requests, 0);
}

#[tokio::test(start_paused = true)]
async fn a_pull_during_an_outage_is_offline_and_moves_no_cursor() {
    let l = link(true, 2);
    seed_remote(&l.remote, &["a", "b"]);
    let sink = Arc::new(MemorySink::new());
    let engine = engine(&l, Some(sink.clone())).build().unwrap();

    let e = engine.pull_once().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Pull(PullError::Transport(TransportError::Offline))
        ),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "pull failed");
    assert_eq!(
        std::error::Error::source(&e).map(ToString::to_string),
        Some("pull failed: offline".to_owned())
    );
    assert!(e.is_retryable());
    assert!(!e.is_user_recoverable());
    assert_eq!(engine.pull_cursor().await.unwrap(), None);
    assert_eq!(engine.known_position().await.unwrap(), None);
    assert_eq!(sink.pages(), 0);

    l.clock.sleep_until(OUTAGE_END).await;
    let page = engine.pull_once().await.unwrap();
    assert_eq!(page.changes, 2);
    let live = sink.live();
    assert_eq!(
        live[&EntityKey::new("notes", "b")].payload.as_deref(),
        Some(&b"from-b:b"[..])
    );
    assert_eq!(live.len(), 2);
    let head = l.remote.head();
    assert_eq!(head.seq, 2);
    let cursor = engine.pull_cursor().await.unwrap().expect("a cursor");
    assert_eq!(cursor.position, head);
    assert_eq!(engine.known_position().await.unwrap(), Some(head));
}

#[tokio::test(start_paused = true)]
async fn a_push_during_an_outage_fails_offline_and_goes_out_after_it() {
    let l = link(true, 3);
    let engine = engine(&l, None).build().unwrap();
    let id = engine
        .submit(op(&engine, "a", OperationPriority::Normal, b"x"))
        .await
        .unwrap();
    let summary = engine.process_once().await.unwrap();
    assert_eq!(summary.batch_error, Some(TransportError::Offline));
    assert_eq!((summary.attempted, summary.applied), (1, 0));
    assert_eq!(l.transport.counters().offline, 1);
    assert_eq!(l.remote.stats().requests, 0, "nothing reached the remote");
    assert_eq!(engine.pending().await.unwrap(), 1);

    l.clock.sleep_until(OUTAGE_END).await;
    engine.start().await.unwrap();
    drain(&engine, Duration::from_secs(600)).await;
    let applied: Vec<_> = l.remote.apply_log().iter().map(|r| r.op_id).collect();
    assert_eq!(applied, vec![id]);
    assert!(engine.dead_letters().await.unwrap().is_empty());
    engine.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_started_engine_pulls_remote_changes_into_its_sink_on_its_own() {
    let l = link(false, 4);
    let sink = Arc::new(MemorySink::new());
    let engine = engine(&l, Some(sink.clone())).start().await.unwrap();
    // The first pull (an empty snapshot) is the loop's own.
    tokio::time::timeout(Duration::from_secs(60), engine.pulled_through(0))
        .await
        .expect("first pull")
        .unwrap();
    assert!(sink.pages() >= 1);

    seed_remote(&l.remote, &["a"]);
    engine.pull_now().unwrap();
    tokio::time::timeout(Duration::from_secs(60), engine.pulled_through(1))
        .await
        .expect("pulled through the change")
        .unwrap();
    assert_eq!(
        sink.live()[&EntityKey::new("notes", "a")]
            .payload
            .as_deref(),
        Some(&b"from-b:a"[..])
    );

    // Its own push comes back down through the feed too.
    engine
        .operation(EntityKey::new("notes", "c"), OperationKind::Create)
        .payload(b"mine".to_vec())
        .submit()
        .await
        .unwrap();
    drain(&engine, Duration::from_secs(60)).await;
    tokio::time::timeout(Duration::from_secs(60), engine.pulled_through(2))
        .await
        .expect("pulled through the own change")
        .unwrap();
    assert_eq!(sink.live().len(), 2);
    engine.shutdown().await.unwrap();
    // The loop is stopped with the engine: a later change stays remote.
    seed_remote(&l.remote, &["z"]);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(sink.live().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_direct_send_during_an_outage_is_queued_as_failed_offline() {
    let l = link(true, 5);
    let engine = engine(&l, None).build().unwrap();
    let o = op(&engine, "a", OperationPriority::Normal, b"x");
    let d = cpc_sync::CompositeAdapter::new(&engine)
        .send(o.clone())
        .await
        .unwrap();
    assert_eq!(
        d,
        cpc_sync::Delivery::Queued {
            id: o.id,
            reason: cpc_sync::QueueReason::Failed(TransportError::Offline)
        }
    );
    assert_eq!(engine.pending().await.unwrap(), 1);
    l.clock.sleep_until(OUTAGE_END).await;
    engine.start().await.unwrap();
    drain(&engine, Duration::from_secs(600)).await;
    assert_eq!(l.remote.apply_count(), 1);
    engine.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_pull_scope_brings_down_only_its_collections() {
    let l = link(false, 6);
    seed_remote(&l.remote, &["a"]);
    let clock = HybridClock::with_wall_clock(NodeId(3), Arc::new(ManualWallClock::new(START_MS)));
    let tag = Operation::builder(EntityKey::new("tags", "t"), OperationKind::Create)
        .payload(b"tag".to_vec())
        .build(&clock)
        .unwrap();
    l.remote.apply_batch(&[tag]).unwrap();
    let sink = Arc::new(MemorySink::new());
    let engine = engine(&l, Some(sink.clone()))
        .pull_config(PullConfig {
            collections: Some(vec!["notes".into()]),
            ..PullConfig::default()
        })
        .build()
        .unwrap();
    let mut pages = 0;
    while engine.pull_once().await.unwrap().has_more {
        pages += 1;
        assert!(pages < 10, "the pull never finished");
    }
    let live: Vec<_> = sink.live().into_keys().collect();
    assert_eq!(live, vec![EntityKey::new("notes", "a")]);
}

/// With a network monitor the pull loop waits while it says offline, and
/// pulls once it says online.
#[tokio::test(start_paused = true)]
async fn the_pull_loop_waits_while_the_monitor_says_offline() {
    let l = link(false, 7);
    seed_remote(&l.remote, &["a"]);
    let monitor = NetworkMonitor::default();
    let manual = ManualSource::new();
    manual.connect(monitor.sink("manual"));
    manual.set_offline();
    let sink = Arc::new(MemorySink::new());
    let engine = engine(&l, Some(sink.clone()))
        .network(monitor)
        .pull_config(PullConfig {
            seed: Some(7),
            ..PullConfig::default()
        })
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(sink.pages(), 0, "no pull while offline");
    assert_eq!(engine.pull_cursor().await.unwrap(), None);

    manual.set_online();
    tokio::time::timeout(Duration::from_secs(60), engine.pulled_through(1))
        .await
        .expect("pulled once online")
        .unwrap();
    assert_eq!(sink.live().len(), 1);
    engine.shutdown().await.unwrap();
}
