use std::time::Duration;

use cpc_network::{FailureKind, MonitorConfig, NetworkStatus, Observation};

use crate::common::*;

const MINUTE: Duration = Duration::from_secs(60);
const FLAP: Duration = Duration::from_millis(500);

/// Upper bound the issue sets: 60 s / min_dwell.
fn bound() -> u64 {
    MINUTE.as_secs() / DWELL.as_secs()
}

#[tokio::test(start_paused = true)]
async fn a_link_flapping_every_500ms_for_a_minute_changes_at_most_60s_over_dwell_times() {
    let monitor = monitor();
    let (log, _h) = record(&monitor);
    go_online(&monitor);
    let mut up = true;
    let mut elapsed = Duration::ZERO;
    while elapsed < MINUTE {
        step(FLAP).await;
        elapsed += FLAP;
        up = !up;
        // The worker keeps reporting successes while the link is up.
        if up {
            monitor.apply(Observation::link_up("linux-link"));
            monitor.report_success();
            monitor.report_success();
        } else {
            monitor.apply(Observation::link_down("linux-link"));
        }
    }
    let transitions = monitor.stats().transitions;
    assert!(
        transitions <= bound(),
        "{transitions} transitions in a minute"
    );
    assert_eq!(log.lock().unwrap().len() as u64, transitions);
    // A link that never stays up is useless for sync: it holds Offline.
    assert_eq!(monitor.status(), NetworkStatus::Offline);
}

#[tokio::test(start_paused = true)]
async fn checks_flipping_every_500ms_for_a_minute_change_at_most_60s_over_dwell_times() {
    // The most eager settings: one check flips the wanted status.
    let monitor = monitor_with(MonitorConfig {
        offline_after: 1,
        online_after: 1,
        ..MonitorConfig::default()
    });
    let mut ok = true;
    let mut elapsed = Duration::ZERO;
    while elapsed < MINUTE {
        if ok {
            monitor.report_success();
        } else {
            monitor.report_failure(FailureKind::Connect);
        }
        ok = !ok;
        step(FLAP).await;
        elapsed += FLAP;
    }
    let transitions = monitor.stats().transitions;
    assert!(transitions >= 2, "the checker must see changes at all");
    assert!(
        transitions <= bound(),
        "{transitions} transitions in a minute"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_dwell_time_the_same_flapping_would_thrash() {
    // Shows the bound above is a property of min_dwell, not of the test.
    let monitor = monitor_with(MonitorConfig {
        offline_after: 1,
        online_after: 1,
        min_dwell: Duration::ZERO,
        degraded_min_samples: u32::MAX,
        ..MonitorConfig::default()
    });
    let mut ok = true;
    let mut elapsed = Duration::ZERO;
    while elapsed < MINUTE {
        if ok {
            monitor.report_success();
        } else {
            monitor.report_failure(FailureKind::Connect);
        }
        ok = !ok;
        step(FLAP).await;
        elapsed += FLAP;
    }
    assert!(monitor.stats().transitions > bound());
}
