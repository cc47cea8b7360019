//! What a monitor's handles say about it: a sink's status and name until
//! the monitor is gone, `Debug` forms that show state without payloads, a
//! manual source's last signal, and the configuration in use.

use std::sync::Arc;

use cpc_network::{
    ConfigError, ManualSource, MonitorConfig, NetworkMonitor, NetworkStatus, Signal, StatusChange,
};

use crate::common::*;

#[tokio::test(start_paused = true)]
async fn a_sink_reads_and_feeds_its_monitor_until_the_monitor_is_gone() {
    let monitor = monitor();
    let sink = monitor.sink("wifi");
    assert_eq!(sink.source().as_str(), "wifi");
    assert_eq!(sink.status(), Some(NetworkStatus::Unknown));
    assert!(sink.report(Signal::LinkDown));
    assert_eq!(sink.status(), Some(NetworkStatus::Offline));
    assert!(!sink.is_closed());
    assert_eq!(
        format!("{sink:?}"),
        "ObservationSink { source: \"wifi\", closed: false }"
    );

    drop(monitor);
    assert_eq!(sink.status(), None);
    assert!(sink.is_closed());
    assert!(!sink.report(Signal::LinkUp), "nobody to report to");
    assert_eq!(
        format!("{sink:?}"),
        "ObservationSink { source: \"wifi\", closed: true }"
    );
}

#[tokio::test(start_paused = true)]
async fn the_monitor_and_its_observer_handles_show_their_state_in_debug() {
    let config = MonitorConfig {
        offline_after: 5,
        seed: Some(21),
        ..MonitorConfig::default()
    };
    let monitor = monitor_with(config.clone());
    assert_eq!(monitor.config(), &config);
    let first = monitor.add_observer(Arc::new(|_: &StatusChange| {}));
    let second = monitor.add_observer(Arc::new(|_: &StatusChange| {}));
    assert_eq!(format!("{first:?}"), "ObserverHandle { id: 1 }");
    assert_eq!(format!("{second:?}"), "ObserverHandle { id: 2 }");

    go_online(&monitor);
    let shown = format!("{monitor:?}");
    assert!(
        shown.starts_with(
            "NetworkMonitor { status: Online, config: MonitorConfig { offline_after: 5,"
        ),
        "{shown}"
    );
    assert!(shown.ends_with(", .. }"), "{shown}");
}

#[tokio::test(start_paused = true)]
async fn a_manual_source_remembers_its_last_signal_and_replays_it_on_connect() {
    let source = ManualSource::default();
    assert_eq!(source.last(), None);
    assert_eq!(
        format!("{source:?}"),
        "ManualSource { name: \"manual\", online: None, sinks: 0 }"
    );
    source.set_offline();
    assert_eq!(source.last(), Some(false));

    // A monitor connected later gets the last signal at once.
    let monitor = monitor();
    source.connect(monitor.sink("manual"));
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    assert_eq!(
        format!("{source:?}"),
        "ManualSource { name: \"manual\", online: Some(false), sinks: 1 }"
    );
    source.set_online();
    assert_eq!(source.last(), Some(true));
}

#[test]
fn zero_counts_and_an_empty_window_are_refused_by_name() {
    let refused = |config: MonitorConfig| NetworkMonitor::new(config).unwrap_err();
    let cases = [
        (
            MonitorConfig {
                online_after: 0,
                ..MonitorConfig::default()
            },
            ConfigError::ZeroCount {
                field: "online_after",
            },
            "online_after must be at least 1",
        ),
        (
            MonitorConfig {
                degraded_min_samples: 0,
                ..MonitorConfig::default()
            },
            ConfigError::ZeroCount {
                field: "degraded_min_samples",
            },
            "degraded_min_samples must be at least 1",
        ),
        (
            MonitorConfig {
                degraded_window: std::time::Duration::ZERO,
                ..MonitorConfig::default()
            },
            ConfigError::ZeroDuration {
                field: "degraded_window",
            },
            "degraded_window must be greater than zero",
        ),
        (
            MonitorConfig {
                degraded_ratio: 0.0,
                ..MonitorConfig::default()
            },
            ConfigError::RatioOutOfRange {
                field: "degraded_ratio",
                value: "0".into(),
            },
            "degraded_ratio must be in (0, 1], got 0",
        ),
    ];
    for (config, refusal, text) in cases {
        let got = refused(config);
        assert_eq!(got, refusal);
        assert_eq!(got.to_string(), text);
    }
}
