//! Probe failures that need a misbehaving server on 127.0.0.1: one that
//! never answers (a timeout, on the paused clock) and one that resets the
//! connection in the middle of the exchange; and a probe attached to a
//! monitor, reporting under its own name.

use std::io::ErrorKind;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpc_network::{
    Error, FailureKind, HttpCheck, MonitorConfig, NetworkMonitor, NetworkStatus, ProbeConfig,
    ProbeSource, Signal, StatusChange, TransitionReason,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_times_out_after_exactly_the_configured_limit() {
    // Nothing accepts and nothing is written: the kernel completes the
    // handshake from the backlog, and the answer never comes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let timeout = Duration::from_secs(3);
    let probe = ProbeSource::new(ProbeConfig {
        timeout,
        ..ProbeConfig::http(target.clone(), HttpCheck::new("/health"))
    })
    .unwrap();

    let started = Instant::now();
    let err = probe.probe_once().await.unwrap_err();
    let waited = started.elapsed();
    match &err {
        Error::Timeout {
            target: t,
            timeout: limit,
        } => {
            assert_eq!(t, &target);
            assert_eq!(*limit, timeout);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("probe of {target:?} timed out after 3s")
    );
    assert_eq!(err.failure_kind(), Some(FailureKind::Timeout));
    // The paused clock jumps straight to the deadline (timer resolution 1 ms).
    assert!(
        waited >= timeout && waited <= timeout + Duration::from_millis(1),
        "{waited:?}"
    );

    // As a signal for the monitor it is a timeout failure.
    assert_eq!(
        probe.probe_signal().await,
        Signal::Failure(FailureKind::Timeout)
    );
    drop(listener);
}

#[tokio::test]
async fn a_connection_reset_during_the_exchange_is_an_io_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        // One byte of the request read, the rest left unread: closing then
        // makes the kernel send a reset rather than a clean end.
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"G");
        drop(stream);
    });
    let probe =
        ProbeSource::new(ProbeConfig::http(target.clone(), HttpCheck::new("/health"))).unwrap();

    let err = probe.probe_once().await.unwrap_err();
    server.await.unwrap();
    match &err {
        Error::Io { target: t, source } => {
            assert_eq!(t, &target);
            assert_eq!(source.kind(), ErrorKind::ConnectionReset, "{source}");
        }
        other => panic!("expected an I/O failure, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("probe connection to {target:?} broke")
    );
    assert!(std::error::Error::source(&err).is_some(), "keeps its cause");
    assert_eq!(err.failure_kind(), Some(FailureKind::Io));
}

#[tokio::test]
async fn an_attached_probe_probes_at_once_and_reports_under_its_name() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let monitor = NetworkMonitor::new(MonitorConfig {
        online_after: 1,
        seed: Some(5),
        ..MonitorConfig::default()
    })
    .unwrap();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&changes);
    let _observer = monitor.add_observer(Arc::new(move |c: &StatusChange| {
        log.lock().unwrap().push(c.clone());
    }));
    let probe = ProbeSource::named(
        "edge",
        ProbeConfig {
            seed: Some(11),
            ..ProbeConfig::tcp(target.clone())
        },
    )
    .unwrap();
    assert_eq!(probe.config().target, target);
    assert_eq!(probe.config().check, cpc_network::ProbeCheck::Connect);

    let mut rx = monitor.subscribe();
    let handle = monitor.attach(probe).unwrap();
    assert_eq!(handle.name().as_str(), "edge");
    tokio::time::timeout(
        Duration::from_secs(30),
        rx.wait_for(|s| *s == NetworkStatus::Online),
    )
    .await
    .expect("the first probe runs as soon as the source starts")
    .unwrap();
    // The next probe is 8 to 12 s away: exactly one so far.
    let stats = monitor.stats();
    assert_eq!((stats.successes, stats.failures), (1, 0));
    let changes = changes.lock().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].reason,
        TransitionReason::SuccessStreak { count: 1 }
    );
    handle.stop();
    drop(listener);
}
