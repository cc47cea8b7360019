//! §4.1: online only on a 200 whose body is exactly `cpc-sync ok\n`.

use std::time::Duration;

use cpc_http::{HealthProbe, HealthProbeConfig, HttpConfig};
use cpc_network::{FailureKind, MonitorConfig, NetworkMonitor, NetworkStatus, Signal};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn health_server(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/health"))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

fn probe(server: &MockServer) -> HealthProbe {
    let config = HealthProbeConfig {
        interval: Duration::from_millis(20),
        jitter: Duration::ZERO,
        timeout: Duration::from_secs(2),
        seed: Some(1),
    };
    HealthProbe::new(&HttpConfig::new(server.uri(), "dev-7f3a"), config).unwrap()
}

/// The status `probe` drives a fresh monitor to (2 checks either way, no
/// dwell), waiting at most 10 s.
async fn status_reached(probe: HealthProbe, wanted: NetworkStatus) -> NetworkStatus {
    let monitor = NetworkMonitor::new(MonitorConfig {
        offline_after: 2,
        online_after: 2,
        min_dwell: Duration::ZERO,
        seed: Some(1),
        ..MonitorConfig::default()
    })
    .unwrap();
    let mut rx = monitor.subscribe();
    let handle = monitor.attach(probe).unwrap();
    let reached = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| *s == wanted))
        .await
        .map(|_| wanted)
        .unwrap_or_else(|_| monitor.status());
    handle.stop();
    reached
}

fn portal_page() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        "<html><body>Welcome! Log in to continue</body></html>",
        "text/html",
    )
}

#[tokio::test]
async fn a_200_with_the_health_body_is_online() {
    let server = health_server(
        ResponseTemplate::new(200).set_body_raw("cpc-sync ok\n", "text/plain; charset=utf-8"),
    )
    .await;
    assert_eq!(probe(&server).probe_once().await, Signal::Success);
    assert_eq!(
        status_reached(probe(&server), NetworkStatus::Online).await,
        NetworkStatus::Online
    );
}

#[tokio::test]
async fn a_200_with_a_wrong_body_is_offline() {
    let server = health_server(portal_page()).await;
    assert_eq!(
        probe(&server).probe_once().await,
        Signal::Failure(FailureKind::InvalidAnswer)
    );
    assert_eq!(
        status_reached(probe(&server), NetworkStatus::Offline).await,
        NetworkStatus::Offline
    );
}

#[tokio::test]
async fn a_body_that_only_contains_the_words_is_not_the_health_body() {
    let server =
        health_server(ResponseTemplate::new(200).set_body_raw("<p>cpc-sync ok\n</p>", "text/html"))
            .await;
    assert_eq!(
        probe(&server).probe_once().await,
        Signal::Failure(FailureKind::InvalidAnswer)
    );
}

#[tokio::test]
async fn a_5xx_is_a_server_failure() {
    let server = health_server(ResponseTemplate::new(502)).await;
    assert_eq!(
        probe(&server).probe_once().await,
        Signal::Failure(FailureKind::Server)
    );
}
