//! The scripted network source and the schedule's public views.

use std::time::Duration;

use cpc_core::SimClock;
use cpc_fault::{
    Flapping, LinkCondition, LinkState, Probability, Schedule, ScriptedNetwork, Window,
};
use cpc_network::{MonitorConfig, NetworkMonitor, NetworkStatus};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

#[tokio::test(start_paused = true)]
async fn a_source_started_in_an_outage_reports_it_at_once_under_its_own_name() {
    let clock = SimClock::start_now();
    let schedule = Schedule::builder().offline(s(0), s(30)).build().unwrap();
    let net = ScriptedNetwork::new(schedule, clock)
        .named("wifi")
        .with_lag(s(2));
    assert_eq!(net.lag(), s(2));
    assert!(format!("{net:?}").contains("wifi"), "{net:?}");
    let monitor = NetworkMonitor::new(MonitorConfig::default()).unwrap();
    let handle = monitor.attach(net).unwrap();
    assert_eq!(handle.name().to_string(), "wifi");
    clock.sleep_until(s(1)).await;
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    assert_eq!(monitor.stats().link_downs, 1);
    // The outage ends at 30 s, seen 2 s late.
    clock.sleep_until(s(31)).await;
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    clock.sleep_until(s(60)).await;
    assert!(monitor.status().allows_sending(), "{}", monitor.status());
}

#[tokio::test(start_paused = true)]
async fn probes_are_silent_while_the_link_is_down_and_drawn_on_a_degraded_link() {
    let clock = SimClock::start_now();
    let schedule = Schedule::builder()
        .offline(s(0), s(10))
        .degraded(s(10), s(110), Probability::new(0.5).unwrap())
        .build()
        .unwrap();
    let monitor = NetworkMonitor::new(MonitorConfig::default()).unwrap();
    monitor
        .attach(ScriptedNetwork::new(schedule, clock).with_probes(s(1), 5))
        .unwrap();
    clock.sleep_until(s(9) + Duration::from_millis(500)).await;
    let stats = monitor.stats();
    assert_eq!((stats.successes, stats.failures), (0, 0), "{stats:?}");
    // Probes at 10 s, 11 s, ... 109 s: one hundred, each a success or a
    // failure drawn at one half.
    clock.sleep_until(s(109) + Duration::from_millis(500)).await;
    let stats = monitor.stats();
    assert_eq!(stats.successes + stats.failures, 100, "{stats:?}");
    assert!(
        (25..=75).contains(&stats.failures),
        "about half fail: {stats:?}"
    );
}

#[test]
fn the_schedule_shows_what_was_written_and_names_its_conditions() {
    let window = Window {
        from: s(10),
        to: s(20),
        state: LinkState::Degraded(Probability::new(0.3).unwrap()),
    };
    let flapping = Flapping {
        from: s(100),
        period: s(10),
        duty: Probability::new(0.5).unwrap(),
        span: s(30),
        state: LinkState::Offline,
    };
    let schedule = Schedule::builder()
        .window(window)
        .flapping(flapping)
        .evenly_spread_outages(s(0), s(100), 0, s(1))
        .build()
        .unwrap();
    assert_eq!(schedule.windows(), &[window]);
    assert_eq!(schedule.flapping(), &[flapping]);
    assert!(!schedule.is_always_online());
    assert!(Schedule::always_online().is_always_online());
    // One degraded window and three flaps of 5 s.
    assert_eq!(schedule.outage_count(), 4);
    assert_eq!(schedule.faulty_time(), s(25));
    let debug = format!("{schedule:?}");
    assert!(
        debug.contains("windows: 1") && debug.contains("flapping: 1"),
        "{debug}"
    );
    let at = |secs| schedule.condition_at(s(secs));
    assert_eq!((at(5).name(), at(5).is_faulty()), ("online", false));
    assert_eq!((at(15).name(), at(15).is_faulty()), ("degraded", true));
    assert_eq!((at(102).name(), at(102).is_faulty()), ("offline", true));
    assert_eq!(at(107), LinkCondition::Online);
}
