//! §5.1: on a 401 the token is invalidated, a fresh one asked for once and
//! the request sent once more; a second 401 is `Unauthorized`. A 403 is
//! `Unauthorized` at once. Never a loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cpc_core::{PushOutcome, TransportError};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::PushOps as _;
use crate::support::{
    self, on_push, ops, problem, pushes, transport, transport_with, Applier, Rotating,
};

fn unauthorized() -> ResponseTemplate {
    problem(401, "unauthorized").insert_header(
        "www-authenticate",
        "Bearer realm=\"cpc-sync\", error=\"invalid_token\"",
    )
}

#[tokio::test]
async fn a_401_then_a_200_invalidates_once_and_the_push_succeeds() {
    let server = support::server().await;
    Mock::given(method("POST"))
        .and(path("/v1/push"))
        .and(header("authorization", "Bearer tok-expired"))
        .respond_with(unauthorized())
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/push"))
        .and(header("authorization", "Bearer tok-fresh"))
        .respond_with(Applier { max_ops: 1000 })
        .mount(&server)
        .await;
    let provider = Rotating::new(&["tok-expired", "tok-fresh"]);
    let outcomes = transport_with(&server, provider.clone())
        .push_ops(&ops(2))
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o.outcome, PushOutcome::Applied { .. })));
    assert_eq!(provider.invalidations(), 1);
    assert_eq!(provider.asked.load(Ordering::SeqCst), 2);
    let sent = pushes(&server).await;
    assert_eq!(sent.len(), 2);
    // The same request both times: same ids.
    assert_eq!(sent[0].1.ops, sent[1].1.ops);
}

#[tokio::test]
async fn two_401s_are_unauthorized_after_exactly_two_requests() {
    let server = support::server().await;
    on_push(&server, unauthorized()).await;
    let provider = Rotating::new(&["tok-a", "tok-b", "tok-c"]);
    let result = transport_with(&server, provider.clone())
        .push_ops(&ops(3))
        .await;
    assert_eq!(result, Err(TransportError::Unauthorized));
    assert_eq!(pushes(&server).await.len(), 2, "one resend, no loop");
    // Both refused tokens are discarded; the third is never asked for.
    assert_eq!(provider.invalidations(), 2);
    assert_eq!(provider.asked.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_static_token_is_resent_once_then_reported() {
    let server = support::server().await;
    on_push(&server, unauthorized()).await;
    let result = transport(&server).push_ops(&ops(1)).await;
    assert_eq!(result, Err(TransportError::Unauthorized));
    assert_eq!(pushes(&server).await.len(), 2);
}

#[tokio::test]
async fn a_403_is_unauthorized_after_one_request() {
    let server = support::server().await;
    on_push(&server, problem(403, "forbidden_client")).await;
    let provider = Rotating::new(&["tok-a", "tok-b"]);
    let result = transport_with(&server, provider.clone())
        .push_ops(&ops(2))
        .await;
    assert_eq!(result, Err(TransportError::Unauthorized));
    assert_eq!(pushes(&server).await.len(), 1);
    assert_eq!(provider.invalidations(), 0, "a refresh would not help");
}

#[tokio::test]
async fn no_token_is_unauthorized_without_a_request() {
    let server = support::server().await;
    on_push(&server, Applier { max_ops: 1000 }).await;
    let provider = Rotating::new(&[]);
    let result = transport_with(&server, provider).push_ops(&ops(1)).await;
    assert_eq!(result, Err(TransportError::Unauthorized));
    assert_eq!(pushes(&server).await.len(), 0);
}

#[tokio::test]
async fn a_malformed_token_is_never_sent() {
    let server = support::server().await;
    on_push(&server, Applier { max_ops: 1000 }).await;
    let provider = Arc::new(cpc_http::StaticToken::new("tok\r\nX-Injected: 1"));
    let result = transport_with(&server, provider).push_ops(&ops(1)).await;
    assert_eq!(result, Err(TransportError::Unauthorized));
    assert_eq!(pushes(&server).await.len(), 0);
}
