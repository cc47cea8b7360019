//! Several instances of one store (`failover_urls`): a failing instance is
//! left for the next one within the same push, requests then stay on the
//! instance that works, and the health probe is online while any instance
//! is.

use std::sync::Arc;
use std::time::Duration;

use cpc_http::{HealthProbe, HealthProbeConfig, HttpConfig, HttpTransport, StaticToken};
use cpc_network::Signal;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::PushOps as _;
use crate::support::{self, on_push, ops, pushes, Applier, CLIENT, TOKEN};

/// A transport to `first`, failing over to `then`.
fn transport(first: String, then: &MockServer) -> HttpTransport {
    let mut config = HttpConfig::new(first, CLIENT);
    config.failover_urls = vec![then.uri()];
    HttpTransport::new(config, Arc::new(StaticToken::new(TOKEN))).unwrap()
}

/// An instance that answers every request `503`.
async fn unavailable() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    server
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn an_unavailable_first_instance_is_left_once_and_requests_stay_on_the_next() {
    let down = unavailable().await;
    let up = support::server().await;
    on_push(&up, Applier { max_ops: 1000 }).await;
    let transport = transport(down.uri(), &up);
    for _ in 0..3 {
        let batch = ops(2);
        let outcomes = transport.push_ops(&batch).await.unwrap();
        assert!(cpc_core::match_outcomes(&batch, outcomes).is_ok());
    }
    assert_eq!(pushes(&up).await.len(), 3);
    // One request found the first instance down (the limits); every later
    // one went straight to the instance that answered.
    assert_eq!(requests(&down).await, 1);
}

#[tokio::test]
async fn a_dead_first_instance_fails_over_within_the_same_push() {
    // A port nothing listens on: bound, then let go.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let up = support::server().await;
    on_push(&up, Applier { max_ops: 1000 }).await;
    let transport = transport(format!("http://{dead}"), &up);
    let batch = ops(3);
    let outcomes = transport.push_ops(&batch).await.unwrap();
    assert_eq!(cpc_core::match_outcomes(&batch, outcomes).unwrap().len(), 3);
}

#[tokio::test]
async fn when_the_current_instance_goes_down_the_push_moves_to_the_next_at_once() {
    let first = support::server().await;
    // Answers one push, then is down.
    Mock::given(method("POST"))
        .and(path("/v1/push"))
        .respond_with(Applier { max_ops: 1000 })
        .up_to_n_times(1)
        .mount(&first)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/push"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&first)
        .await;
    let second = support::server().await;
    on_push(&second, Applier { max_ops: 1000 }).await;
    let transport = transport(first.uri(), &second);
    transport.push_ops(&ops(1)).await.unwrap();
    assert_eq!(
        pushes(&second).await.len(),
        0,
        "the first instance answered"
    );
    // The next push gets a 502 from the first, and is answered by the
    // second in the same call.
    transport.push_ops(&ops(1)).await.unwrap();
    assert_eq!(pushes(&second).await.len(), 1);
    assert_eq!(pushes(&first).await.len(), 2);
}

#[tokio::test]
async fn the_health_probe_is_online_while_any_instance_is_healthy() {
    let down = unavailable().await;
    let healthy = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/health"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("cpc-sync ok\n", "text/plain; charset=utf-8"),
        )
        .mount(&healthy)
        .await;
    let config = HealthProbeConfig {
        interval: Duration::from_millis(20),
        jitter: Duration::ZERO,
        timeout: Duration::from_secs(2),
        seed: Some(1),
    };
    let mut http = HttpConfig::new(down.uri(), CLIENT);
    http.failover_urls = vec![healthy.uri()];
    let probe = HealthProbe::new(&http, config.clone()).unwrap();
    assert_eq!(probe.probe_once().await, Signal::Success);
    // Both down: offline, as a single server would be.
    http.failover_urls = vec![down.uri()];
    let probe = HealthProbe::new(&http, config).unwrap();
    assert!(matches!(probe.probe_once().await, Signal::Failure(_)));
}

#[tokio::test]
async fn a_cpc_servers_own_503_is_a_rate_limit_and_does_not_move_the_request() {
    // The concurrency cap of a cpc server: a problem body and a hint.
    let busy = support::server().await;
    Mock::given(method("POST"))
        .and(path("/v1/push"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("retry-after", "2")
                .set_body_raw(
                    r#"{"type":"urn:cpc-sync:problem:at_capacity","title":"At capacity","status":503,"code":"at_capacity"}"#,
                    "application/problem+json",
                ),
        )
        .mount(&busy)
        .await;
    let other = support::server().await;
    on_push(&other, Applier { max_ops: 1000 }).await;
    let result = transport(busy.uri(), &other).push_ops(&ops(1)).await;
    assert!(
        matches!(result, Err(cpc_core::TransportError::RateLimited { .. })),
        "{result:?}"
    );
    assert_eq!(pushes(&other).await.len(), 0, "the load stays where it was");
}
