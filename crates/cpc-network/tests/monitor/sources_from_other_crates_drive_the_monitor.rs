//! This test crate stands for another crate (cpc-fault): it implements
//! `StatusSource` on tokio's paused clock and plugs it into the monitor.

use std::time::Duration;

use cpc_network::{
    FailureKind, ManualSource, NetworkStatus, ObservationSink, Signal, SourceName, StatusSource,
};
use tokio::time::Instant;

use crate::common::*;

/// A scripted outage: healthy checks every second, failing ones between
/// `outage_from` and `outage_to`.
struct ScriptedOutage {
    outage_from: Duration,
    outage_to: Duration,
    run_for: Duration,
}

impl StatusSource for ScriptedOutage {
    fn name(&self) -> SourceName {
        SourceName::new("scripted")
    }

    async fn run(self, sink: ObservationSink) {
        let start = Instant::now();
        while start.elapsed() < self.run_for {
            let t = start.elapsed();
            let signal = if t >= self.outage_from && t < self.outage_to {
                Signal::Failure(FailureKind::Timeout)
            } else {
                Signal::Success
            };
            if !sink.report(signal) {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_scripted_outage_source_takes_the_monitor_offline_and_back() {
    let monitor = monitor();
    let (log, _h) = record(&monitor);
    let start = Instant::now();
    let handle = monitor
        .attach(ScriptedOutage {
            outage_from: Duration::from_secs(10),
            outage_to: Duration::from_secs(40),
            run_for: Duration::from_secs(60),
        })
        .unwrap();
    assert_eq!(handle.name().as_str(), "scripted");
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(handle.is_finished());
    let log = log.lock().unwrap();
    let timeline: Vec<_> = log
        .iter()
        .map(|c| (c.to, (c.at - start).as_secs()))
        .collect();
    // Checks at 0 s, 1 s, ...: Online at the second success, Offline at the
    // third failure (12 s) with no Degraded stop, Online at the second
    // success after the outage (41 s).
    assert_eq!(
        timeline,
        [
            (NetworkStatus::Online, 1),
            (NetworkStatus::Offline, 12),
            (NetworkStatus::Online, 41)
        ]
    );
    let back = &log[2];
    assert!(back.resume_after.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_manual_source_forwards_the_platform_signal() {
    let monitor = monitor();
    let manual = ManualSource::new();
    let handle = monitor.attach(manual.clone()).unwrap();
    tokio::task::yield_now().await;
    go_online(&monitor);
    manual.set_offline();
    assert_eq!(monitor.status(), NetworkStatus::Offline, "at once");
    manual.set_online();
    step(DWELL).await;
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
    manual.set_offline();
    step(DWELL).await;
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    // A stopped source no longer watches: its link loss is withdrawn.
    handle.stop();
    tokio::task::yield_now().await;
    assert!(handle.is_finished());
    step(DWELL).await;
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
    manual.set_offline();
    assert_eq!(
        monitor.status(),
        NetworkStatus::Unknown,
        "stopped: no more reports"
    );
}

#[tokio::test(start_paused = true)]
async fn a_manual_source_connects_without_a_task() {
    let monitor = monitor();
    let manual = ManualSource::named("os");
    manual.set_offline();
    manual.connect(monitor.sink("os"));
    assert_eq!(
        monitor.status(),
        NetworkStatus::Offline,
        "last signal replayed on connect"
    );
}

#[tokio::test(start_paused = true)]
async fn attached_sources_stop_with_the_monitor() {
    let monitor = monitor();
    let handle = monitor
        .attach(ScriptedOutage {
            outage_from: Duration::ZERO,
            outage_to: Duration::ZERO,
            run_for: Duration::from_secs(3600),
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!handle.is_finished());
    drop(monitor);
    tokio::task::yield_now().await;
    assert!(handle.is_finished());
}

#[test]
fn attach_outside_a_runtime_is_an_error_not_a_panic() {
    let monitor = cpc_network::NetworkMonitor::default();
    assert!(matches!(
        monitor.attach(ManualSource::new()),
        Err(cpc_network::Error::NoRuntime)
    ));
}
