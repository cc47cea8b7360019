use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpc_network::{MonitorConfig, NetworkMonitor, NetworkStatus, ObserverHandle, StatusChange};

pub const DWELL: Duration = Duration::from_secs(2);

pub fn monitor() -> NetworkMonitor {
    monitor_with(MonitorConfig::default())
}

pub fn monitor_with(config: MonitorConfig) -> NetworkMonitor {
    NetworkMonitor::new(MonitorConfig {
        seed: config.seed.or(Some(7)),
        ..config
    })
    .unwrap()
}

pub type Log = Arc<Mutex<Vec<StatusChange>>>;

pub fn record(monitor: &NetworkMonitor) -> (Log, ObserverHandle) {
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    let handle = monitor.add_observer(Arc::new(move |change: &StatusChange| {
        sink.lock().unwrap().push(change.clone());
    }));
    (log, handle)
}

pub fn statuses(log: &Log) -> Vec<NetworkStatus> {
    log.lock().unwrap().iter().map(|c| c.to).collect()
}

/// Advances the paused clock and lets the monitor's timer task run.
pub async fn step(by: Duration) {
    tokio::time::advance(by).await;
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// Reaches Online from a fresh monitor (no dwell before the first change).
pub fn go_online(monitor: &NetworkMonitor) {
    monitor.report_success();
    monitor.report_success();
    assert_eq!(monitor.status(), NetworkStatus::Online);
}
