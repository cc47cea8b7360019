//! §2.1: every HTTP request carries a `Cpc-Request-Id` of its own (16 hex
//! digits here), push, pull and info alike, and a resend is a new request
//! with a new id, so that each server log line names one request.

use std::collections::HashSet;

use cpc_core::{PullCursor, PullQuery, RemotePosition, Transport};
use cpc_protocol::valid_request_id;
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::PushOps as _;
use crate::support::{self, on_push, ops, problem, transport, transport_with, Applier, Rotating};

/// The `Cpc-Request-Id` of every request `server` received, in order,
/// with the request's path.
async fn request_ids(server: &MockServer) -> Vec<(String, String)> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let id = r
                .headers
                .get("cpc-request-id")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (r.url.path().to_owned(), id)
        })
        .collect()
}

/// 16 lowercase hex digits, and well formed by the protocol's rule.
fn assert_fresh(ids: &[(String, String)]) {
    for (path, id) in ids {
        assert!(
            id.len() == 16
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && valid_request_id(id),
            "{path}: {id:?}"
        );
    }
    let distinct: HashSet<&String> = ids.iter().map(|(_, id)| id).collect();
    assert_eq!(distinct.len(), ids.len(), "an id was sent twice: {ids:?}");
}

#[tokio::test]
async fn push_pull_and_info_requests_each_carry_their_own_id() {
    let server = support::server().await;
    on_push(&server, Applier { max_ops: 1000 }).await;
    let store = "5f0c2a9e7b3d4c18a6e2f1d09b8c7a64";
    let position = json!({"store_id": store, "seq": 0, "fp": "0000000000000000"});
    let page = json!({
        "changes": [], "cursor": position, "has_more": false,
        "reset": null, "snapshot": null, "head": position,
    });
    Mock::given(method("POST"))
        .and(path("/v1/pull"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(serde_json::to_vec(&page).unwrap(), "application/json"),
        )
        .mount(&server)
        .await;
    let t = transport(&server);
    t.push_ops(&ops(2)).await.unwrap();
    t.push_ops(&ops(1)).await.unwrap();
    let query = PullQuery {
        cursor: Some(PullCursor {
            position: RemotePosition {
                store_id: store.into(),
                seq: 0,
                fp: 0,
            },
            after: None,
        }),
        known: None,
        wait: std::time::Duration::ZERO,
        limit: 10,
        collections: None,
    };
    t.pull(&query).await.unwrap();
    t.pull(&query).await.unwrap();
    let ids = request_ids(&server).await;
    let paths: Vec<&str> = ids.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["/v1/info", "/v1/push", "/v1/push", "/v1/pull", "/v1/pull"]
    );
    assert_fresh(&ids);
}

#[tokio::test]
async fn a_resend_after_a_401_is_a_new_request_with_a_new_id() {
    let server = support::server().await;
    Mock::given(method("POST"))
        .and(path("/v1/push"))
        .and(header("authorization", "Bearer tok-expired"))
        .respond_with(problem(401, "unauthorized"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/push"))
        .and(header("authorization", "Bearer tok-fresh"))
        .respond_with(Applier { max_ops: 1000 })
        .mount(&server)
        .await;
    let provider = Rotating::new(&["tok-expired", "tok-fresh"]);
    transport_with(&server, provider)
        .push_ops(&ops(1))
        .await
        .unwrap();
    let ids = request_ids(&server).await;
    let pushes: Vec<_> = ids.iter().filter(|(p, _)| p == "/v1/push").collect();
    assert_eq!(pushes.len(), 2, "{ids:?}");
    assert_fresh(&ids);
}

#[tokio::test]
async fn each_endpoint_attempt_carries_its_own_id() {
    // The first instance is down: the same request goes to the second,
    // as a new HTTP request with an id of its own.
    let down = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&down)
        .await;
    let up = support::server().await;
    on_push(&up, Applier { max_ops: 1000 }).await;
    let mut config = cpc_http::HttpConfig::new(down.uri(), support::CLIENT);
    config.failover_urls = vec![up.uri()];
    let t = cpc_http::HttpTransport::new(
        config,
        std::sync::Arc::new(cpc_http::StaticToken::new(support::TOKEN)),
    )
    .unwrap();
    t.push_ops(&ops(1)).await.unwrap();
    let mut ids = request_ids(&down).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.extend(request_ids(&up).await);
    assert_eq!(ids.len(), 3, "info on both, then the push: {ids:?}");
    assert_fresh(&ids);
}
