//! A TCP probe against a listener the test opens, closes and reopens. The
//! probes are driven one by one with `probe_once`, so nothing waits on the
//! interval; the monitor's dwell time is zero here because what is checked
//! is the counts (dwell is covered on the paused clock in the monitor suite).

use std::time::Duration;

use cpc_network::{
    Error, FailureKind, MonitorConfig, NetworkMonitor, NetworkStatus, Observation, ProbeConfig,
    ProbeSource, Signal,
};
use tokio::net::TcpListener;

#[tokio::test]
async fn offline_after_the_listener_closes_and_online_after_it_reopens() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let probe = ProbeSource::new(ProbeConfig::tcp(addr.to_string())).unwrap();
    let config = MonitorConfig {
        min_dwell: Duration::ZERO,
        seed: Some(3),
        ..MonitorConfig::default()
    };
    let (offline_after, online_after) = (config.offline_after, config.online_after);
    let monitor = NetworkMonitor::new(config).unwrap();
    let probe_into_monitor = || async {
        let signal = probe.probe_signal().await;
        monitor.apply(Observation::new("probe", signal));
        signal
    };

    for _ in 0..online_after {
        assert_eq!(probe_into_monitor().await, Signal::Success);
    }
    assert_eq!(monitor.status(), NetworkStatus::Online);

    drop(listener);
    for i in 1..=offline_after {
        assert_eq!(
            probe_into_monitor().await,
            Signal::Failure(FailureKind::Connect)
        );
        let expected = if i < offline_after {
            NetworkStatus::Online
        } else {
            NetworkStatus::Offline
        };
        assert_eq!(monitor.status(), expected, "after {i} failed probes");
    }
    assert!(matches!(
        probe.probe_once().await,
        Err(Error::Connect { .. })
    ));

    let _reopened = TcpListener::bind(addr).await.unwrap();
    for i in 1..=online_after {
        assert_eq!(probe_into_monitor().await, Signal::Success);
        let expected = if i < online_after {
            NetworkStatus::Offline
        } else {
            NetworkStatus::Online
        };
        assert_eq!(monitor.status(), expected, "after {i} good probes");
    }
}
