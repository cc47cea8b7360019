//! The loop: draining, offline, reconnect spread, breaker, shutdown.

use cpc_storage::QueueStorageExt;
use std::sync::Arc;
use std::time::Duration;

use cpc_backoff::{CircuitBreaker, CircuitBreakerConfig};
use cpc_core::{OperationPriority, TransportError};
use cpc_network::{ManualSource, MonitorConfig, NetworkMonitor, NetworkStatus};
use cpc_storage::{OpState, QueueStorage};
use cpc_worker::{StorageCalls, SyncWorker, WorkerConfig, WorkerEvent};

use crate::support::*;

fn monitor() -> (NetworkMonitor, ManualSource) {
    let m = NetworkMonitor::new(MonitorConfig {
        seed: Some(1),
        ..MonitorConfig::default()
    })
    .unwrap();
    let link = ManualSource::new();
    link.connect(m.sink("manual"));
    (m, link)
}

#[tokio::test(start_paused = true)]
async fn drains_in_full_batches_and_then_sleeps() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    for i in 0..200 {
        enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal));
    }
    let t = Scripted::applied();
    let w = worker(&s, &t, &c).build().unwrap();
    let mut events = w.subscribe();
    w.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), w.drained())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.pushes(), 4, "64 + 64 + 64 + 8");
    // Idle for a day: no pushes, no spinning.
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert_eq!(t.pushes(), 4);
    let mut drained = false;
    while let Ok(e) = events.try_recv() {
        drained |= matches!(e, WorkerEvent::Drained);
    }
    assert!(drained);
    w.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn inline_storage_calls_drain_the_same_way() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    for i in 0..200 {
        enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal));
    }
    let t = Scripted::applied();
    let w = worker(&s, &t, &c)
        .config(WorkerConfig {
            seed: Some(7),
            storage_calls: StorageCalls::Inline,
            ..WorkerConfig::default()
        })
        .build()
        .unwrap();
    assert_eq!(w.config().storage_calls, StorageCalls::Inline);
    let mut events = w.subscribe();
    w.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), w.drained())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.pushes(), 4, "64 + 64 + 64 + 8");
    assert_eq!(s.pending().unwrap(), 0);
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert_eq!(t.pushes(), 4, "idle without spinning");
    // A subscriber still hears of every operation.
    let mut applied = 0;
    let mut drained = false;
    while let Ok(e) = events.try_recv() {
        applied += usize::from(matches!(e, WorkerEvent::Applied { .. }));
        drained |= matches!(e, WorkerEvent::Drained);
    }
    assert_eq!(applied, 200);
    assert!(drained);
    w.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn offline_sends_nothing_and_reconnect_sends_everything() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let (m, link) = monitor();
    link.set_offline();
    assert_eq!(m.status(), NetworkStatus::Offline);
    let t = Scripted::applied();
    let w = worker(&s, &t, &c).network(m.clone()).build().unwrap();
    let mut events = w.subscribe();
    w.start().await.unwrap();
    for i in 0..10 {
        enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal));
        w.notify();
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(t.pushes(), 0);
    link.set_online();
    tokio::time::timeout(Duration::from_secs(60), w.drained())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.pending().unwrap(), 0);
    let mut changed = false;
    while let Ok(e) = events.try_recv() {
        changed |= matches!(
            e,
            WorkerEvent::NetworkChanged {
                from: NetworkStatus::Offline,
                ..
            }
        );
    }
    assert!(changed);
    w.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reconnect_spreads_waiting_retries() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let (m, link) = monitor();
    let ids: Vec<_> = (0..50)
        .map(|i| enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal)))
        .collect();
    let t = Scripted::applied();
    t.then(fail(TransportError::Server { status: 503 }));
    let w = worker(&s, &t, &c)
        .network(m.clone())
        .config(WorkerConfig {
            reconnect_spread: Duration::from_secs(10),
            seed: Some(5),
            ..WorkerConfig::default()
        })
        .build()
        .unwrap();
    w.process_once().await.unwrap();
    // All 50 wait for the same instant (no jitter in this policy).
    let untils: Vec<_> = ids
        .iter()
        .map(|id| s.get(*id).unwrap().unwrap().state)
        .collect();
    assert!(untils.iter().all(|u| *u
        == OpState::Waiting {
            until: START_MS + 1_000
        }));

    link.set_offline();
    w.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(t.pushes(), 1);
    *t.latency.lock().unwrap() = Some(Duration::from_secs(3600));
    link.set_online();
    // Give the loop the transition (the monitor waits its dwell time).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = c.now_ms();
    let mut untils: Vec<u64> = ids
        .iter()
        .filter_map(|id| match s.get(*id).unwrap().unwrap().state {
            OpState::Waiting { until } => Some(until),
            _ => None,
        })
        .collect();
    untils.sort_unstable();
    untils.dedup();
    assert!(untils.len() > 30, "retries not spread: {untils:?}");
    assert!(untils.iter().all(|u| *u <= now + 12_000));
    w.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_stops_pushes_until_it_half_opens() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    for i in 0..3 {
        enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal));
    }
    let t = Scripted::new(fail(TransportError::Server { status: 500 }));
    let cfg = CircuitBreakerConfig {
        failure_threshold: 2,
        ..CircuitBreakerConfig::default()
    };
    let breaker = Arc::new(CircuitBreaker::new(cfg).unwrap().with_seed(1));
    let policy = plain_policy(1_000).with_breaker(Some(breaker.clone()));
    let w = worker(&s, &t, &c).retry_policy(policy).build().unwrap();
    let mut events = w.subscribe();
    w.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Two failures open it: pushes at 0 s and ~1 s, then the cool-down
    // (2.5-5 s with equal jitter) holds the retry due at ~3 s.
    assert_eq!(t.pushes(), 2);
    let mut open = false;
    while let Ok(e) = events.try_recv() {
        open |= matches!(e, WorkerEvent::CircuitOpen { .. });
    }
    assert!(open);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(t.pushes(), 3, "one probe when half-open");
    w.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_mid_batch_returns_leases_and_a_restart_loses_nothing() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let ids: Vec<_> = (0..10)
        .map(|i| enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal)))
        .collect();
    let hanging = Scripted::applied();
    *hanging.latency.lock().unwrap() = Some(Duration::from_secs(3600));
    let w = worker(&s, &hanging, &c)
        .config(WorkerConfig {
            shutdown_timeout: Duration::from_secs(2),
            ..WorkerConfig::default()
        })
        .build()
        .unwrap();
    w.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hanging.pushes(), 1);
    assert_eq!(w.in_flight(), 10);
    w.shutdown().await.unwrap();
    assert_eq!(w.in_flight(), 0);
    for id in &ids {
        let stored = s.get(*id).unwrap().unwrap();
        assert_eq!(stored.state, OpState::Ready, "lease returned");
        assert_eq!(stored.attempts, 0, "an abandoned send is not an attempt");
    }
    assert!(w.start().await.is_err(), "a shut down worker stays down");

    let t = Scripted::applied();
    let w2 = SyncWorker::builder(s.clone(), t.clone())
        .clock(c.clone())
        .build()
        .unwrap();
    w2.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), w2.drained())
        .await
        .unwrap()
        .unwrap();
    let mut sent = t.sent();
    sent.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sent, expected);
    w2.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn several_batches_in_flight_keep_entity_order() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let mut per_entity: Vec<Vec<cpc_core::OperationId>> = vec![Vec::new(); 8];
    for round in 0..20 {
        for (e, list) in per_entity.iter_mut().enumerate() {
            let p = OperationPriority::from_rank(((round + e) % 4) as u8).unwrap();
            list.push(enqueue(&s, &c, op(&h, &format!("e{e}"), p)));
        }
    }
    let t = Scripted::applied();
    *t.latency.lock().unwrap() = Some(Duration::from_millis(20));
    let w = worker(&s, &t, &c)
        .config(WorkerConfig {
            batch_size: 3,
            max_in_flight: 4,
            ..WorkerConfig::default()
        })
        .build()
        .unwrap();
    w.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), w.drained())
        .await
        .unwrap()
        .unwrap();
    let sent = t.sent();
    assert_eq!(sent.len(), 160);
    for list in &per_entity {
        let positions: Vec<usize> = list
            .iter()
            .map(|id| sent.iter().position(|x| x == id).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "entity order broken"
        );
    }
    w.shutdown().await.unwrap();
}

/// Sees, at the first push, how many waiting retries were not re-spread yet.
#[derive(Debug)]
struct FirstPushWatch {
    storage: Arc<cpc_storage::MemoryStorage>,
    clock: cpc_core::TokioWallClock,
    not_yet_respread: std::sync::Mutex<Option<usize>>,
}

#[async_trait::async_trait]
impl cpc_core::Transport for FirstPushWatch {
    async fn push(
        &self,
        query: &cpc_core::PushQuery<'_>,
    ) -> Result<cpc_core::PushAnswer, TransportError> {
        let batch = query.ops;
        let mut seen = self.not_yet_respread.lock().unwrap();
        if seen.is_none() {
            let now = cpc_core::WallClock::now_ms(&self.clock);
            let stale = self
                .storage
                .list(&cpc_storage::ListFilter::default())
                .unwrap()
                .iter()
                .filter(|s| matches!(s.state, OpState::Waiting { until } if until < now))
                .count();
            *seen = Some(stale);
        }
        Ok(batch
            .iter()
            .map(|o| cpc_core::OpOutcome::new(o.id, cpc_core::PushOutcome::Applied { version: 1 }))
            .collect())
    }
}

/// A queue longer than one re-spread page: the first page is re-spread
/// before anything is claimed, the rest beside the claims, so the first push
/// does not wait for the whole queue; every operation is still delivered.
#[tokio::test(start_paused = true)]
async fn a_long_queue_is_respread_page_by_page_and_the_first_push_does_not_wait_for_it() {
    const N: usize = 10_000; // more than two pages of 4096
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let ids: Vec<_> = (0..N)
        .map(|i| enqueue(&s, &c, op(&h, &format!("e{i}"), OperationPriority::Normal)))
        .collect();
    let now = c.now_ms();
    let claimed = s.claim_ready(now, N).unwrap();
    assert_eq!(claimed.len(), N);
    let failed: Vec<_> = claimed
        .iter()
        .map(|cl| cpc_storage::Completion::Retry {
            id: cl.op.id,
            at: now + 1_000,
            error: "offline".into(),
        })
        .collect();
    s.complete(&failed, now).unwrap();

    // No resume jitter: the worker may claim as soon as the first page is
    // done (with a hold, the later pages would finish during it).
    let m = NetworkMonitor::new(MonitorConfig {
        seed: Some(1),
        resume_jitter_max: Duration::ZERO,
        ..MonitorConfig::default()
    })
    .unwrap();
    let link = ManualSource::new();
    link.connect(m.sink("manual"));
    link.set_offline();
    let t = Arc::new(FirstPushWatch {
        storage: s.clone(),
        clock: c.clone(),
        not_yet_respread: std::sync::Mutex::new(None),
    });
    let w = SyncWorker::builder(s.clone(), t.clone())
        .clock(c.clone())
        .retry_policy(plain_policy(5))
        .network(m.clone())
        .config(WorkerConfig {
            reconnect_spread: Duration::from_secs(10),
            seed: Some(5),
            // On this task, in order: with the blocking pool, the later
            // pages raced the first claim on real threads and a loaded
            // machine could finish them all before the first push.
            storage_calls: StorageCalls::Inline,
            ..WorkerConfig::default()
        })
        .build()
        .unwrap();
    w.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(t.not_yet_respread.lock().unwrap().is_none(), "sent offline");
    link.set_online();
    tokio::time::timeout(Duration::from_secs(600), w.drained())
        .await
        .expect("drains after the reconnect")
        .unwrap();
    let stale = t.not_yet_respread.lock().unwrap().expect("pushed");
    assert!(
        stale > 0 && stale <= N - 4096,
        "the first page ({}) is re-spread before the first push, and the \
         first push comes before the last page: {stale} not re-spread yet",
        4096
    );
    for id in ids {
        assert!(s.get(id).unwrap().is_none(), "every operation delivered");
    }
    w.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_second_start_is_already_running_and_leaves_the_loop_running() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let t = Scripted::applied();
    let w = worker(&s, &t, &c).build().unwrap();
    w.start().await.unwrap();
    let e = w.start().await.unwrap_err();
    assert!(
        matches!(e, cpc_worker::WorkerError::AlreadyRunning),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "the worker is already running");
    assert!(!e.is_poisoned());
    // The loop started first still delivers.
    enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    w.notify();
    tokio::time::timeout(Duration::from_secs(10), w.drained())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.pushes(), 1);
    w.shutdown().await.unwrap();
    assert!(matches!(
        w.start().await,
        Err(cpc_worker::WorkerError::ShutDown)
    ));
}
