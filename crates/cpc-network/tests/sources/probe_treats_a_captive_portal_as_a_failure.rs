//! Real sockets on 127.0.0.1, no waiting: each probe completes as soon as the
//! local server answers (the timeouts are never reached).

use std::net::SocketAddr;

use cpc_network::{
    Error, FailureKind, HttpCheck, MonitorConfig, NetworkMonitor, NetworkStatus, Observation,
    ProbeConfig, ProbeSource, Signal,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LOGIN_PAGE: &str = "<!DOCTYPE html><html><head><title>Hotel WiFi</title></head>\
<body><form action=\"/login\" method=\"post\"><input name=\"room\"><button>Log in</button>\
</form></body></html>";

/// Serves `answer` to every connection, after reading the request head (so
/// the close is clean, not a reset).
async fn serve(answer: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                assert!(head.starts_with(b"GET /health HTTP/1.1\r\n"));
                let _ = stream.write_all(&answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

fn http_answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn health_probe(addr: SocketAddr) -> ProbeSource {
    ProbeSource::new(ProbeConfig::http(
        addr.to_string(),
        HttpCheck::new("/health").expect_body("cpc-health-ok"),
    ))
    .unwrap()
}

#[tokio::test]
async fn a_captive_portal_login_page_with_status_200_is_a_failure() {
    let portal = serve(http_answer("200 OK", LOGIN_PAGE)).await;
    let probe = health_probe(portal);
    let err = probe.probe_once().await.unwrap_err();
    assert!(
        matches!(err, Error::MissingBodyToken { body_bytes } if body_bytes == LOGIN_PAGE.len()),
        "{err:?}"
    );
    assert_eq!(err.failure_kind(), Some(FailureKind::InvalidAnswer));
    assert_eq!(
        probe.probe_signal().await,
        Signal::Failure(FailureKind::InvalidAnswer)
    );

    // Three such answers take a monitor Offline, never Online.
    let monitor = NetworkMonitor::new(MonitorConfig {
        seed: Some(5),
        ..MonitorConfig::default()
    })
    .unwrap();
    for _ in 0..3 {
        monitor.apply(Observation::new("probe", probe.probe_signal().await));
    }
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    assert_eq!(monitor.stats().successes, 0);
}

#[tokio::test]
async fn the_real_health_endpoint_passes() {
    let healthy = serve(http_answer("200 OK", "{\"status\":\"cpc-health-ok\"}")).await;
    assert!(health_probe(healthy).probe_once().await.is_ok());
}

#[tokio::test]
async fn a_portal_redirect_is_a_failure() {
    let redirect = serve(
        b"HTTP/1.1 302 Found\r\nLocation: http://login.portal/\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
    )
    .await;
    let err = health_probe(redirect).probe_once().await.unwrap_err();
    assert!(matches!(
        err,
        Error::UnexpectedStatus {
            expected: 200,
            got: 302
        }
    ));
}

#[tokio::test]
async fn an_endless_answer_is_read_only_up_to_the_limit() {
    // Streams a body forever without the token and never closes: the probe
    // must stop at max_response_bytes rather than read on or wait for the
    // timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 256];
        let _ = stream.read(&mut request).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
        let chunk = vec![b'a'; 4096];
        while stream.write_all(&chunk).await.is_ok() {}
    });
    let probe = ProbeSource::new(ProbeConfig {
        max_response_bytes: 4096,
        ..ProbeConfig::http(
            addr.to_string(),
            HttpCheck::new("/health").expect_body("cpc-health-ok"),
        )
    })
    .unwrap();
    let err = probe.probe_once().await.unwrap_err();
    match err {
        Error::MissingBodyToken { body_bytes } => {
            assert_eq!(body_bytes, 4096 - "HTTP/1.1 200 OK\r\n\r\n".len())
        }
        other => panic!("expected a bounded read, got {other:?}"),
    }
}
