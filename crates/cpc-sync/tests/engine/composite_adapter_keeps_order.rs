//! The composite adapter sends at once when it is safe and queues otherwise.

use std::time::Duration;

use cpc_fault::{FaultPlan, RemoteOptions};
use cpc_sync::core::OperationPriority;
use cpc_sync::network::{ManualSource, MonitorConfig, NetworkMonitor, Observation, SourceName};
use cpc_sync::{CompositeAdapter, Delivery, QueueReason};

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn direct_when_online_and_idle_queued_when_offline_or_behind() {
    let w = world(RemoteOptions::default(), FaultPlan::none(), 30);
    let monitor = NetworkMonitor::new(MonitorConfig {
        seed: Some(1),
        ..MonitorConfig::default()
    })
    .unwrap();
    let link = ManualSource::new();
    link.connect(monitor.sink("manual"));
    for _ in 0..3 {
        monitor.apply(Observation::success(SourceName::new("probe")));
    }
    assert_eq!(monitor.status(), cpc_sync::network::NetworkStatus::Online);
    let engine = builder(&w).network(monitor.clone()).build().unwrap();
    let adapter = CompositeAdapter::new(&engine).with_timeout(Duration::from_secs(1));

    let d = adapter
        .send(op(&engine, "a", OperationPriority::Normal, b"1"))
        .await
        .unwrap();
    assert!(matches!(d, Delivery::Sent { .. }), "{d:?}");
    assert_eq!(w.remote.apply_count(), 1);
    assert_eq!(engine.pending().await.unwrap(), 0);

    link.set_offline();
    let d = adapter
        .send(op(&engine, "a", OperationPriority::Normal, b"2"))
        .await
        .unwrap();
    assert!(
        matches!(
            d,
            Delivery::Queued {
                reason: QueueReason::NotOnline(_),
                ..
            }
        ),
        "{d:?}"
    );
    // Back online, but "a" has a queued op: the next one must queue behind it.
    link.set_online();
    tokio::time::sleep(Duration::from_secs(5)).await;
    for _ in 0..3 {
        monitor.apply(Observation::success(SourceName::new("probe")));
    }
    let third = op(&engine, "a", OperationPriority::Critical, b"3");
    let third_id = third.id;
    let d = adapter.send(third).await.unwrap();
    assert!(
        matches!(
            d,
            Delivery::Queued {
                reason: QueueReason::EntityPending,
                ..
            }
        ),
        "{d:?}"
    );
    // Another entity with nothing queued goes directly.
    let d = adapter
        .send(op(&engine, "b", OperationPriority::Normal, b"4"))
        .await
        .unwrap();
    assert!(matches!(d, Delivery::Sent { .. }), "{d:?}");

    engine.start().await.unwrap();
    drain(&engine, Duration::from_secs(60)).await;
    let log = w.remote.apply_log();
    let a: Vec<_> = log
        .iter()
        .filter(|r| r.entity.id == "a")
        .map(|r| r.op_id)
        .collect();
    assert_eq!(a.len(), 3);
    assert_eq!(
        a[2], third_id,
        "entity order kept across direct and queued sends"
    );
    engine.shutdown().await.unwrap();
}
