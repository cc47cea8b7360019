use std::time::Duration;

use cpc_network::{FailureKind, NetworkStatus, TransitionReason};

use crate::common::*;

#[tokio::test(start_paused = true)]
async fn half_failing_checks_degrade_and_a_clean_run_recovers() {
    let monitor = monitor();
    let (log, _h) = record(&monitor);
    go_online(&monitor);
    // One check a second, two of three failing: never three in a row.
    for i in 0..12 {
        step(Duration::from_secs(1)).await;
        if i % 3 == 2 {
            monitor.report_success();
        } else {
            monitor.report_failure(FailureKind::Timeout);
        }
    }
    assert_eq!(monitor.status(), NetworkStatus::Degraded);
    assert!(matches!(
        log.lock().unwrap()[1].reason,
        TransitionReason::FailureRatio { .. }
    ));
    // Successes bring the ratio under the threshold.
    for _ in 0..6 {
        step(Duration::from_secs(1)).await;
        monitor.report_success();
    }
    assert_eq!(monitor.status(), NetworkStatus::Online);
    assert!(matches!(
        log.lock().unwrap()[2].reason,
        TransitionReason::RatioRecovered { .. }
    ));
    assert_eq!(
        statuses(&log),
        [
            NetworkStatus::Online,
            NetworkStatus::Degraded,
            NetworkStatus::Online
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn total_failure_is_offline_not_degraded() {
    let monitor = monitor();
    step(Duration::from_secs(60)).await;
    for _ in 0..10 {
        step(Duration::from_secs(1)).await;
        monitor.report_failure(FailureKind::Connect);
    }
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    assert_eq!(
        monitor.stats().time_in(NetworkStatus::Degraded),
        Duration::ZERO
    );
}

#[tokio::test(start_paused = true)]
async fn degraded_ends_when_old_failures_leave_the_window_even_without_new_checks() {
    let monitor = monitor();
    let pattern = [false, false, true, false, false, true, true];
    for ok in pattern {
        step(Duration::from_millis(500)).await;
        if ok {
            monitor.report_success();
        } else {
            monitor.report_failure(FailureKind::Timeout);
        }
    }
    // 4 of 7 failed, the last two succeeded: Degraded, not Offline.
    assert_eq!(monitor.status(), NetworkStatus::Degraded);
    // Quiet: once the 30 s window has emptied, the timer recovers it
    // without any new observation.
    step(Duration::from_secs(20)).await;
    assert_eq!(monitor.status(), NetworkStatus::Degraded);
    step(Duration::from_secs(10)).await;
    assert_eq!(monitor.status(), NetworkStatus::Online);
}
