use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpc_network::{
    FailureKind, MonitorConfig, NetworkMonitor, NetworkStatus, Observation, StatusChange,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::*;

#[tokio::test(start_paused = true)]
async fn observers_and_the_watch_channel_see_the_same_transitions_in_order() {
    let seed = 0x5eed_u64;
    let mut rng = StdRng::seed_from_u64(seed);
    let monitor = monitor();
    let (log, _h) = record(&monitor);
    let mut rx = monitor.subscribe();
    let mut watched = Vec::new();
    let mut poll = |rx: &mut tokio::sync::watch::Receiver<NetworkStatus>| {
        if rx.has_changed().unwrap() {
            watched.push(*rx.borrow_and_update());
        }
    };
    for _ in 0..2000 {
        let observation = match rng.gen_range(0..10) {
            0..=3 => Observation::success("probe"),
            4..=7 => Observation::failure("probe", FailureKind::Timeout),
            8 => Observation::link_down("os"),
            _ => Observation::link_up("os"),
        };
        monitor.apply(observation);
        poll(&mut rx);
        step(Duration::from_millis(rng.gen_range(0..1500))).await;
        poll(&mut rx);
    }
    let changes = log.lock().unwrap().clone();
    assert!(
        changes.len() > 50,
        "seed {seed}: too few transitions to prove anything"
    );
    assert_eq!(
        changes.iter().map(|c| c.to).collect::<Vec<_>>(),
        watched,
        "seed {seed}"
    );
    for (i, pair) in changes.windows(2).enumerate() {
        assert_eq!(pair[0].to, pair[1].from, "seed {seed}, change {i}");
        assert_eq!(pair[0].seq + 1, pair[1].seq);
        assert!(pair[0].at <= pair[1].at);
    }
}

#[test]
fn observers_see_changes_in_order_when_threads_race() {
    // No runtime at all: apply works from plain threads.
    let monitor = NetworkMonitor::new(MonitorConfig {
        min_dwell: Duration::ZERO,
        offline_after: 1,
        online_after: 1,
        degraded_min_samples: u32::MAX,
        seed: Some(1),
        ..MonitorConfig::default()
    })
    .unwrap();
    let log: Arc<Mutex<Vec<StatusChange>>> = Arc::default();
    let sink = Arc::clone(&log);
    let _h = monitor.add_observer(Arc::new(move |c: &StatusChange| {
        sink.lock().unwrap().push(c.clone());
    }));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let monitor = monitor.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    if (i + t) % 2 == 0 {
                        monitor.report_success();
                    } else {
                        monitor.report_failure(FailureKind::Io);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let log = log.lock().unwrap();
    assert_eq!(log.len() as u64, monitor.stats().transitions);
    for (i, change) in log.iter().enumerate() {
        assert_eq!(change.seq, i as u64 + 1, "delivered out of order");
    }
    for pair in log.windows(2) {
        assert_eq!(pair[0].to, pair[1].from);
    }
    assert_eq!(log.last().map(|c| c.to), Some(monitor.status()));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_observer_does_not_stop_the_next_one_or_the_monitor() {
    let monitor = monitor();
    let _boom = monitor.add_observer(Arc::new(|_: &StatusChange| panic!("observer bug")));
    let (log, _h) = record(&monitor);
    go_online(&monitor);
    monitor.apply(Observation::link_down("os"));
    assert_eq!(
        statuses(&log),
        [NetworkStatus::Online, NetworkStatus::Offline]
    );
    assert_eq!(monitor.status(), NetworkStatus::Offline);
}

#[tokio::test(start_paused = true)]
async fn observers_are_called_in_registration_order() {
    let monitor = monitor();
    let order = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..5)
        .map(|i| {
            let order = Arc::clone(&order);
            monitor.add_observer(Arc::new(move |_: &StatusChange| {
                order.lock().unwrap().push(i)
            }))
        })
        .collect();
    go_online(&monitor);
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
    drop(handles);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_unregisters_the_observer() {
    let monitor = monitor();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let handle = monitor.add_observer(Arc::new(move |_: &StatusChange| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let (kept, _h) = record(&monitor);
    go_online(&monitor);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(handle);
    monitor.apply(Observation::link_down("os"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "called after its handle was dropped"
    );
    assert_eq!(
        kept.lock().unwrap().len(),
        2,
        "the other observer still runs"
    );
}

#[tokio::test(start_paused = true)]
async fn an_observer_may_call_back_into_the_monitor() {
    let monitor = monitor();
    let inner = monitor.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let _h = monitor.add_observer(Arc::new(move |c: &StatusChange| {
        // Reads and writes from inside a delivery must not deadlock.
        log.lock().unwrap().push((c.to, inner.status()));
        if c.to == NetworkStatus::Online {
            inner.apply(Observation::link_down("os"));
        }
    }));
    monitor.report_success();
    monitor.report_success();
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            // The nested change is delivered after the current delivery
            // returns, so order holds.
            (NetworkStatus::Online, NetworkStatus::Online),
            (NetworkStatus::Offline, NetworkStatus::Offline)
        ]
    );
}
