//! The status table of §9.2, over real sockets: rate limits with their
//! hint, 503 with and without a problem body, timeouts, versions, and a
//! server that is not there.

use std::sync::Arc;
use std::time::Duration;

use cpc_core::TransportError;
use cpc_http::{HttpConfig, HttpTransport, StaticToken};
use wiremock::ResponseTemplate;

use crate::support::PushOps as _;
use crate::support::{self, on_push, ops, problem, pushes, transport, CLIENT, TOKEN};

async fn push_answered(
    response: ResponseTemplate,
) -> Result<Vec<cpc_core::OpOutcome>, TransportError> {
    let server = support::server().await;
    on_push(&server, response).await;
    let result = transport(&server).push_ops(&ops(2)).await;
    assert_eq!(
        pushes(&server).await.len(),
        1,
        "no retry inside the transport"
    );
    result
}

fn rate_limited(secs_or_ms: Duration) -> Result<Vec<cpc_core::OpOutcome>, TransportError> {
    Err(TransportError::RateLimited {
        retry_after: Some(secs_or_ms),
    })
}

#[tokio::test]
async fn a_429_with_retry_after_seconds_is_rate_limited_with_that_hint() {
    let answer = problem(429, "rate_limited").insert_header("retry-after", "7");
    assert_eq!(
        push_answered(answer).await,
        rate_limited(Duration::from_secs(7))
    );
}

#[tokio::test]
async fn a_429_with_the_millisecond_header_uses_it() {
    let answer = problem(429, "rate_limited")
        .insert_header("retry-after", "2")
        .insert_header("cpc-retry-after-ms", "1500");
    assert_eq!(
        push_answered(answer).await,
        rate_limited(Duration::from_millis(1500))
    );
}

#[tokio::test]
async fn a_huge_retry_after_is_clamped_to_an_hour() {
    let answer = problem(429, "rate_limited").insert_header("retry-after", "86400000");
    assert_eq!(
        push_answered(answer).await,
        rate_limited(Duration::from_secs(3600))
    );
}

#[tokio::test]
async fn a_429_without_a_hint_is_rate_limited_without_one() {
    // A proxy's bare 429: still a rate limit, the backoff decides alone.
    let answer = ResponseTemplate::new(429);
    assert_eq!(
        push_answered(answer).await,
        Err(TransportError::RateLimited { retry_after: None })
    );
}

#[tokio::test]
async fn a_503_with_a_problem_body_is_rate_limited() {
    let answer = problem(503, "unavailable")
        .insert_header("retry-after", "2")
        .insert_header("cpc-retry-after-ms", "1312");
    assert_eq!(
        push_answered(answer).await,
        rate_limited(Duration::from_millis(1312))
    );
}

#[tokio::test]
async fn a_plain_503_is_a_server_error_unless_it_says_when_to_come_back() {
    let answer =
        ResponseTemplate::new(503).set_body_raw("<html>Service Unavailable</html>", "text/html");
    assert_eq!(
        push_answered(answer).await,
        Err(TransportError::Server { status: 503 })
    );
    // A load balancer's maintenance page with Retry-After: its hint is
    // honoured (never counted against an operation either way).
    let answer = ResponseTemplate::new(503)
        .insert_header("retry-after", "2")
        .set_body_raw("<html>Down for maintenance</html>", "text/html");
    assert_eq!(
        push_answered(answer).await,
        Err(TransportError::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(2))
        })
    );
}

#[tokio::test]
async fn other_statuses_are_server_errors_and_408_a_timeout() {
    for status in [400, 404, 405, 409, 415, 500, 502] {
        assert_eq!(
            push_answered(problem(status, "whatever")).await,
            Err(TransportError::Server { status }),
            "{status}"
        );
    }
    assert_eq!(
        push_answered(problem(408, "request_timeout")).await,
        Err(TransportError::Timeout)
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let answer = ResponseTemplate::new(302).insert_header("location", "http://127.0.0.1:1/login");
    assert_eq!(
        push_answered(answer).await,
        Err(TransportError::Server { status: 302 })
    );
}

#[tokio::test]
async fn unsupported_version_is_incompatible_naming_v1() {
    match push_answered(problem(400, "unsupported_version")).await {
        Err(TransportError::Incompatible(text)) => assert!(text.contains("protocol v1"), "{text}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_does_not_list_v1_gets_no_push() {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/v1/info"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "protocols": [2], "store_id": "s", "server": "future/2",
            "limits": cpc_protocol::Limits::default(),
        })))
        .mount(&server)
        .await;
    on_push(&server, problem(500, "internal")).await;
    match transport(&server).push_ops(&ops(1)).await {
        Err(TransportError::Incompatible(text)) => assert!(text.contains("protocol v1"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert!(pushes(&server).await.is_empty());
}

#[tokio::test]
async fn a_server_that_is_not_there_is_a_connect_error() {
    // Bind then drop: the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = HttpConfig::new(format!("http://127.0.0.1:{port}"), CLIENT);
    let transport = HttpTransport::new(config, Arc::new(StaticToken::new(TOKEN))).unwrap();
    match transport.push_ops(&ops(1)).await {
        Err(TransportError::Connect(text)) => {
            assert!(
                !text.contains(TOKEN) && !text.contains("secret-payload"),
                "{text}"
            )
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn no_answer_in_time_is_a_timeout() {
    let server = support::server().await;
    on_push(
        &server,
        ResponseTemplate::new(200).set_delay(Duration::from_secs(5)),
    )
    .await;
    let config = HttpConfig {
        request_timeout: Duration::from_millis(300),
        ..HttpConfig::new(server.uri(), CLIENT)
    };
    let transport = HttpTransport::new(config, Arc::new(StaticToken::new(TOKEN))).unwrap();
    assert_eq!(
        transport.push_ops(&ops(1)).await,
        Err(TransportError::Timeout)
    );
}
