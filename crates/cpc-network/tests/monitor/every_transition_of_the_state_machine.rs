use std::time::Duration;

use cpc_network::{
    ConfigError, FailureKind, MonitorConfig, NetworkStatus, Observation, SourceName,
    TransitionReason,
};
use tokio::time::Instant;

use crate::common::*;

#[tokio::test(start_paused = true)]
async fn unknown_to_online_takes_online_after_successes() {
    let monitor = monitor();
    let (log, _h) = record(&monitor);
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
    monitor.report_success();
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
    monitor.report_success();
    assert_eq!(monitor.status(), NetworkStatus::Online);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].from, NetworkStatus::Unknown);
    assert_eq!(log[0].reason, TransitionReason::SuccessStreak { count: 2 });
    assert_eq!(
        log[0].resume_after, None,
        "only leaving Offline draws a delay"
    );
    assert_eq!(log[0].seq, 1);
}

#[tokio::test(start_paused = true)]
async fn unknown_to_offline_takes_offline_after_failures() {
    let monitor = monitor();
    monitor.report_failure(FailureKind::Dns);
    monitor.report_failure(FailureKind::Dns);
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
    monitor.report_failure(FailureKind::Dns);
    assert_eq!(monitor.status(), NetworkStatus::Offline);
}

#[tokio::test(start_paused = true)]
async fn a_success_breaks_the_failure_streak() {
    let monitor = monitor_with(MonitorConfig {
        degraded_min_samples: 100,
        ..MonitorConfig::default()
    });
    go_online(&monitor);
    step(DWELL).await;
    for _ in 0..5 {
        monitor.report_failure(FailureKind::Timeout);
        monitor.report_failure(FailureKind::Timeout);
        monitor.report_success();
    }
    assert_eq!(monitor.status(), NetworkStatus::Online);
}

#[tokio::test(start_paused = true)]
async fn online_to_offline_waits_for_the_dwell_time_then_happens_by_itself() {
    let monitor = monitor();
    let (log, _h) = record(&monitor);
    let t0 = Instant::now();
    go_online(&monitor);
    step(Duration::from_millis(500)).await;
    for _ in 0..3 {
        monitor.report_failure(FailureKind::Connect);
    }
    assert_eq!(monitor.status(), NetworkStatus::Online, "held by min_dwell");
    step(Duration::from_millis(1400)).await;
    assert_eq!(monitor.status(), NetworkStatus::Online);
    step(Duration::from_millis(100)).await;
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    let log = log.lock().unwrap();
    assert_eq!(log[1].at - t0, DWELL);
    assert_eq!(
        log[1].reason,
        TransitionReason::FailureStreak {
            count: 3,
            last: FailureKind::Connect
        }
    );
}

#[tokio::test(start_paused = true)]
async fn offline_to_online_publishes_a_seeded_jittered_resume_delay() {
    let draw = |seed| async move {
        let monitor = monitor_with(MonitorConfig {
            seed: Some(seed),
            ..MonitorConfig::default()
        });
        let (log, _h) = record(&monitor);
        for _ in 0..3 {
            monitor.report_failure(FailureKind::Timeout);
        }
        step(DWELL).await;
        monitor.report_success();
        monitor.report_success();
        assert_eq!(monitor.status(), NetworkStatus::Online);
        let change = log.lock().unwrap().last().cloned().unwrap();
        assert_eq!(change.from, NetworkStatus::Offline);
        let delay = change.resume_after.expect("leaving Offline draws a delay");
        assert!(delay <= Duration::from_secs(2));
        if delay > Duration::ZERO {
            assert_eq!(monitor.resume_at(), Some(change.at + delay));
        }
        delay
    };
    // Same seed, same delay; different seeds spread.
    let first = draw(7).await;
    assert_eq!(first, draw(7).await);
    let mut delays = vec![first];
    for seed in 1..8 {
        delays.push(draw(seed).await);
    }
    delays.sort();
    delays.dedup();
    assert!(delays.len() >= 6, "delays do not spread: {delays:?}");
}

#[tokio::test(start_paused = true)]
async fn wait_sendable_waits_out_the_resume_delay() {
    let monitor = monitor_with(MonitorConfig {
        seed: Some(11),
        ..MonitorConfig::default()
    });
    let (log, _h) = record(&monitor);
    monitor.apply(Observation::link_down("os"));
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    let waiter = tokio::spawn({
        let monitor = monitor.clone();
        async move {
            monitor.wait_sendable().await;
            Instant::now()
        }
    });
    step(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "offline: not sendable");
    monitor.apply(Observation::link_up("os"));
    let sendable_at = waiter.await.unwrap();
    let change = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(change.to, NetworkStatus::Unknown);
    let resume_at = change.at + change.resume_after.unwrap();
    // The timer wheel has millisecond ticks: the sleep ends within one.
    assert!(sendable_at >= resume_at && sendable_at - resume_at < Duration::from_millis(2));
}

#[tokio::test(start_paused = true)]
async fn a_link_loss_goes_offline_at_once_ignoring_the_dwell_time() {
    let monitor = monitor();
    let (log, _h) = record(&monitor);
    go_online(&monitor);
    step(Duration::from_millis(100)).await;
    monitor.apply(Observation::link_down("linux-link"));
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    assert_eq!(
        log.lock().unwrap()[1].reason,
        TransitionReason::LinkDown {
            source: SourceName::new("linux-link")
        }
    );
    // Successes do not lift a link loss; only the link coming back does.
    for _ in 0..5 {
        monitor.report_success();
    }
    step(DWELL * 5).await;
    assert_eq!(monitor.status(), NetworkStatus::Offline);
}

#[tokio::test(start_paused = true)]
async fn a_restored_link_must_stay_up_for_the_dwell_time_then_is_unknown() {
    let monitor = monitor();
    let (log, _h) = record(&monitor);
    go_online(&monitor);
    step(DWELL).await;
    monitor.apply(Observation::link_down("os"));
    step(Duration::from_secs(10)).await;
    let up_at = Instant::now();
    monitor.apply(Observation::link_up("os"));
    step(Duration::from_millis(1900)).await;
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    step(Duration::from_millis(100)).await;
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
    {
        let log = log.lock().unwrap();
        let change = log.last().unwrap();
        assert_eq!(change.reason, TransitionReason::LinkRestored);
        assert_eq!(change.at - up_at, DWELL);
        assert!(change.resume_after.is_some());
    }
    // Reachability proven: Online after the dwell time.
    monitor.report_success();
    monitor.report_success();
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
    step(DWELL).await;
    assert_eq!(monitor.status(), NetworkStatus::Online);
}

#[tokio::test(start_paused = true)]
async fn successes_on_a_restored_link_go_straight_online() {
    let monitor = monitor();
    monitor.apply(Observation::link_down("os"));
    monitor.apply(Observation::link_up("os"));
    monitor.report_success();
    monitor.report_success();
    step(DWELL).await;
    assert_eq!(monitor.status(), NetworkStatus::Online);
}

#[tokio::test(start_paused = true)]
async fn the_link_is_up_only_when_every_link_source_says_so() {
    let monitor = monitor();
    monitor.apply(Observation::link_down("os"));
    monitor.apply(Observation::link_down("linux-link"));
    monitor.apply(Observation::link_up("os"));
    step(DWELL * 3).await;
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    monitor.apply(Observation::link_up("linux-link"));
    step(DWELL).await;
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
}

#[tokio::test(start_paused = true)]
async fn failures_on_a_restored_link_keep_it_offline_until_successes() {
    let monitor = monitor_with(MonitorConfig {
        evidence_ttl: None,
        ..MonitorConfig::default()
    });
    monitor.apply(Observation::link_down("os"));
    monitor.apply(Observation::link_up("os"));
    for _ in 0..3 {
        monitor.report_failure(FailureKind::InvalidAnswer);
    }
    step(DWELL * 10).await;
    assert_eq!(
        monitor.status(),
        NetworkStatus::Offline,
        "captive portal behind a good link"
    );
    monitor.report_success();
    monitor.report_success();
    assert_eq!(monitor.status(), NetworkStatus::Online);
}

#[tokio::test(start_paused = true)]
async fn offline_from_failures_alone_decays_to_unknown_when_evidence_expires() {
    let monitor = monitor();
    let (log, _h) = record(&monitor);
    for _ in 0..3 {
        monitor.report_failure(FailureKind::Timeout);
    }
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    step(Duration::from_secs(29)).await;
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    step(Duration::from_secs(1)).await;
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
    assert_eq!(
        log.lock().unwrap().last().unwrap().reason,
        TransitionReason::EvidenceExpired {
            silent_for: Duration::from_secs(30)
        }
    );
    // Fresh start: it takes offline_after new failures again.
    step(DWELL).await;
    monitor.report_failure(FailureKind::Timeout);
    monitor.report_failure(FailureKind::Timeout);
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
    monitor.report_failure(FailureKind::Timeout);
    assert_eq!(monitor.status(), NetworkStatus::Offline);
}

#[tokio::test(start_paused = true)]
async fn stats_count_transitions_and_time_in_each_status() {
    let monitor = monitor();
    step(Duration::from_secs(1)).await;
    go_online(&monitor);
    step(Duration::from_secs(5)).await;
    monitor.apply(Observation::link_down("os"));
    step(Duration::from_secs(3)).await;
    let stats = monitor.stats();
    assert_eq!(stats.status, NetworkStatus::Offline);
    assert_eq!(stats.transitions, 2);
    assert_eq!(stats.successes, 2);
    assert_eq!(stats.link_downs, 1);
    assert_eq!(stats.observations, 3);
    assert_eq!(
        stats.time_in(NetworkStatus::Unknown),
        Duration::from_secs(1)
    );
    assert_eq!(stats.time_in(NetworkStatus::Online), Duration::from_secs(5));
    assert_eq!(
        stats.time_in(NetworkStatus::Offline),
        Duration::from_secs(3)
    );
    assert_eq!(stats.time_in(NetworkStatus::Degraded), Duration::ZERO);
}

#[test]
fn configs_that_cannot_work_are_refused() {
    let refused = |config: MonitorConfig| cpc_network::NetworkMonitor::new(config).unwrap_err();
    assert_eq!(
        refused(MonitorConfig {
            offline_after: 0,
            ..MonitorConfig::default()
        }),
        ConfigError::ZeroCount {
            field: "offline_after"
        }
    );
    assert!(matches!(
        refused(MonitorConfig {
            degraded_ratio: f64::NAN,
            ..MonitorConfig::default()
        }),
        ConfigError::RatioOutOfRange { .. }
    ));
    assert!(matches!(
        refused(MonitorConfig {
            degraded_ratio: 1.5,
            ..MonitorConfig::default()
        }),
        ConfigError::RatioOutOfRange { .. }
    ));
    assert!(matches!(
        refused(MonitorConfig {
            evidence_ttl: Some(Duration::ZERO),
            ..MonitorConfig::default()
        }),
        ConfigError::ZeroDuration { .. }
    ));
}
