//! Two engines with `HttpTransport` against `cpc-server` on loopback: every
//! acknowledged operation lands in the server's change log exactly once, in
//! each entity's order; a wrong token applies nothing, pauses the engine
//! with `AuthRequired`, and a good token plus `resume` drains it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cpc_http::{CredentialsProvider, HttpConfig, HttpTransport, StaticToken, Token};
use cpc_server::{RateLimit, ServerConfig, Tokens};
use cpc_sync::core::{EntityKey, NodeId, OperationId, OperationKind};
use cpc_sync::worker::WorkerEvent;
use cpc_sync::SyncEngine;
use serde_json::Value;

const TOKEN: &str = "e2e-token";

async fn server(dir: &std::path::Path) -> cpc_server::RunningServer {
    let mut config = ServerConfig::new(dir.join("server"), Tokens::single(TOKEN, &["dev-*"]));
    config.rate = RateLimit {
        per_second: 10_000.0,
        burst: 10_000.0,
    };
    cpc_server::start(config).await.unwrap()
}

async fn engine(
    dir: &std::path::Path,
    base: &str,
    name: &str,
    node: u64,
    credentials: Arc<dyn CredentialsProvider>,
) -> SyncEngine {
    let transport = HttpTransport::new(HttpConfig::new(base, name), credentials).unwrap();
    SyncEngine::builder()
        .path(dir.join(name))
        .transport(transport)
        .node_id(NodeId(node))
        .start()
        .await
        .unwrap()
}

fn exported(dir: &std::path::Path) -> Vec<Value> {
    let mut out = Vec::new();
    cpc_server::export_log(&dir.join("server"), &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_ops_from_two_engines_land_exactly_once_in_entity_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let base = format!("http://{}", server.addr());
    let mut submitted: HashMap<String, Vec<OperationId>> = HashMap::new();
    let mut engines = Vec::new();
    for (n, name) in ["dev-a", "dev-b"].into_iter().enumerate() {
        let e = engine(
            dir.path(),
            &base,
            name,
            n as u64 + 1,
            Arc::new(StaticToken::new(TOKEN)),
        )
        .await;
        engines.push((name, e));
    }
    for i in 0..5_000usize {
        for (name, e) in &engines {
            let entity = format!("{name}-{}", i % 50);
            let id = e
                .operation(
                    EntityKey::new("notes", entity.clone()),
                    OperationKind::Update,
                )
                .payload(format!("{i}").into_bytes())
                .submit()
                .await
                .unwrap();
            submitted.entry(entity).or_default().push(id);
        }
    }
    for (_, e) in &engines {
        tokio::time::timeout(Duration::from_secs(300), e.drained())
            .await
            .expect("drains in time")
            .unwrap();
        assert_eq!(e.pending().await.unwrap(), 0);
        assert!(e.dead_letters().await.unwrap().is_empty());
    }
    for (_, e) in &engines {
        e.shutdown().await.unwrap();
    }
    server.shutdown().await.unwrap();

    let log = exported(dir.path());
    assert_eq!(log.len(), 10_000, "every acknowledged op once");
    let mut landed: HashMap<String, Vec<String>> = HashMap::new();
    for l in &log {
        landed
            .entry(l["entity"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(l["origin"]["op"].as_str().unwrap().to_owned());
    }
    assert_eq!(landed.len(), submitted.len());
    for (entity, ids) in &submitted {
        let want: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(
            landed[entity], want,
            "{entity}: the log keeps submission order"
        );
    }
}

/// A token the test can swap, like an app refreshing its credentials.
#[derive(Debug)]
struct Swappable(Mutex<String>);

#[async_trait]
impl CredentialsProvider for Swappable {
    async fn token(&self) -> Option<Token> {
        Some(Token::new(self.0.lock().unwrap().clone()))
    }
    fn invalidate(&self, _token: &Token) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_applies_nothing_pauses_and_a_good_one_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let base = format!("http://{}", server.addr());
    let credentials = Arc::new(Swappable(Mutex::new("wrong-token".into())));
    let e = engine(dir.path(), &base, "dev-c", 3, credentials.clone()).await;
    let mut events = e.subscribe();
    for i in 0..20 {
        e.operation(
            EntityKey::new("notes", format!("n{i}")),
            OperationKind::Update,
        )
        .payload(vec![1])
        .submit()
        .await
        .unwrap();
    }
    let auth_required = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(WorkerEvent::AuthRequired) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(auth_required.is_ok(), "AuthRequired is reported");
    assert_eq!(e.pending().await.unwrap(), 20, "nothing dropped");
    assert!(exported(dir.path()).is_empty(), "nothing applied");

    *credentials.0.lock().unwrap() = TOKEN.into();
    e.resume();
    tokio::time::timeout(Duration::from_secs(60), e.drained())
        .await
        .expect("drains after resume")
        .unwrap();
    assert_eq!(exported(dir.path()).len(), 20);
    e.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}
