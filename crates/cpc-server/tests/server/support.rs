//! A server on a free loopback port, on a fresh store of the backend this
//! test binary tests (`crate::POSTGRES`), and a raw client for it.

use cpc_protocol::{check_pull_page, PullRequest, PullResponse};
use cpc_server::{PostgresConfig, RunningServer, ScratchDatabase, ServerConfig, Tokens};
use serde_json::{json, Value};

/// A fresh, empty store: a temporary data directory, or a PostgreSQL
/// database of its own (in the cluster `CPC_TEST_DATABASE_URL` names,
/// dropped with this).
pub struct Db {
    dir: tempfile::TempDir,
    pg: Option<ScratchDatabase>,
}

impl Db {
    /// A fresh store; `None` (the test skips, saying why) when this binary
    /// tests PostgreSQL and `CPC_TEST_DATABASE_URL` is not set.
    pub async fn fresh() -> Option<Db> {
        let dir = tempfile::tempdir().unwrap();
        if !crate::POSTGRES {
            return Some(Db { dir, pg: None });
        }
        let Ok(admin) = std::env::var("CPC_TEST_DATABASE_URL") else {
            // Straight to stderr: the test harness captures eprintln!.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: CPC_TEST_DATABASE_URL is not set (see CONTRIBUTING.md)"
            );
            return None;
        };
        let pg = ScratchDatabase::create(&admin).await.unwrap();
        Some(Db { dir, pg: Some(pg) })
    }

    /// Whether this store is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// The PostgreSQL database's URL (PostgreSQL-only tests).
    #[allow(dead_code)]
    pub fn url(&self) -> Option<&str> {
        self.pg.as_ref().map(ScratchDatabase::url)
    }

    /// A server configuration on this store, with the test tokens.
    pub fn config(&self) -> ServerConfig {
        match &self.pg {
            None => ServerConfig::new(self.dir.path(), tokens()),
            Some(pg) => {
                let mut config = PostgresConfig::new(pg.url());
                // Pushes queue on the head row; on a loaded machine eight of
                // them past the 2 s default made a push answer retry_later
                // and a test flake. Below the request and statement timeouts.
                config.lock_timeout = std::time::Duration::from_secs(25);
                ServerConfig::with_postgres(config, tokens())
            }
        }
    }

    /// This store opened directly (no server), named `id` if created now.
    #[allow(dead_code)]
    pub async fn open_store(&self, limits: cpc_protocol::Limits, id: &str) -> cpc_server::Store {
        match &self.pg {
            None => cpc_server::Store::open_with_id(self.dir.path(), limits, Some(id)).unwrap(),
            Some(pg) => {
                let mut config = PostgresConfig::new(pg.url());
                config.lock_timeout = std::time::Duration::from_secs(25);
                cpc_server::Store::connect(&config, limits, Some(id))
                    .await
                    .unwrap()
            }
        }
    }

    /// The committed change log, exported and parsed, line by line.
    pub async fn exported(&self) -> Vec<Value> {
        let mut out = Vec::new();
        self.export_log(&mut out).await;
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The committed change log, exported.
    pub async fn export_log(&self, out: &mut Vec<u8>) -> u64 {
        match &self.pg {
            None => cpc_server::export_log(self.dir.path(), out).unwrap(),
            Some(pg) => cpc_server::export_log_postgres(pg.url(), out)
                .await
                .unwrap(),
        }
    }
}

/// At least `MIN_SECRET_BYTES` (16): a tokens file refuses shorter ones.
pub const TOKEN: &str = "test-token-0123456789";
pub const OTHER_TOKEN: &str = "other-token-0123456789";
/// The token of `GET /metrics`, for servers configured with one.
pub const METRICS_TOKEN: &str = "metrics-token-0123456789";

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

pub async fn start(db: &Db) -> RunningServer {
    start_with(db.config()).await
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

/// Sends a pull body as is.
pub async fn pull_raw(server: &RunningServer, body: &Value) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/pull", base(server)))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

/// Pulls one page and checks it with the client's rules.
pub async fn pull(server: &RunningServer, req: &PullRequest) -> PullResponse {
    let (status, body) = pull_raw(server, &serde_json::to_value(req).unwrap()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let page: PullResponse = serde_json::from_slice(&body).unwrap();
    check_pull_page(req, &page, body.len() as u64, 1 << 20)
        .unwrap_or_else(|e| panic!("a page breaking the client's rules: {e}\n{page:?}"));
    page
}
