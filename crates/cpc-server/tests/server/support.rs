//! A server on a free loopback port and a raw client for it.

use std::path::Path;

use cpc_server::{RunningServer, ServerConfig, Tokens};
use serde_json::{json, Value};

pub const TOKEN: &str = "test-token";
pub const OTHER_TOKEN: &str = "other-token";

pub fn tokens() -> Tokens {
    Tokens::parse(
        &format!(
            "[[token]]\nsecret = \"{TOKEN}\"\nclients = [\"dev-*\"]\n\
             [[token]]\nsecret = \"{OTHER_TOKEN}\"\nclients = [\"other\"]\n"
        ),
        "test",
    )
    .unwrap()
}

pub async fn start(dir: &Path) -> RunningServer {
    start_with(ServerConfig::new(dir, tokens())).await
}

pub async fn start_with(config: ServerConfig) -> RunningServer {
    cpc_server::start(config).await.unwrap()
}

pub fn base(server: &RunningServer) -> String {
    format!("http://{}", server.addr())
}

/// An operation id from a number (canonical 26-character text).
pub fn id(n: u128) -> String {
    const A: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = [0u8; 26];
    let mut v = n;
    for slot in out.iter_mut().rev() {
        *slot = A[(v & 31) as usize];
        v >>= 5;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

pub fn op(n: u128, entity: &str, payload: &str, base_version: Option<u64>) -> Value {
    use base64::Engine as _;
    json!({
        "id": id(n),
        "entity": {"collection": "notes", "id": entity},
        "kind": "update",
        "payload": base64::engine::general_purpose::STANDARD.encode(payload),
        "base_version": base_version,
        "timestamp": {"wall_ms": 1_767_229_200_000u64 + n as u64, "logical": 0, "node": "0000000000000001"}
    })
}

pub fn push_body(client: &str, ops: Vec<Value>) -> Value {
    json!({"protocol": 1, "client_id": client, "ops": ops})
}

pub async fn push(server: &RunningServer, body: &Value) -> (u16, Value) {
    push_as(server, TOKEN, body).await
}

pub async fn push_as(server: &RunningServer, token: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/push", base(server)))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The outcome member of the outcome naming `n`.
pub fn outcome_of(answer: &Value, n: u128) -> (String, Value) {
    let o = answer["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["op"] == id(n))
        .unwrap_or_else(|| panic!("no outcome for {n}: {answer}"));
    let (k, v) = o
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| *k != "op")
        .unwrap();
    (k.clone(), v.clone())
}
