//! What every test of the suite shares: operations, transports, stand-in
//! servers on loopback and a credentials provider that counts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cpc_core::{EntityKey, HybridClock, ManualWallClock, NodeId, Operation, OperationKind};
use cpc_http::{CredentialsProvider, HttpConfig, HttpTransport, StaticToken, Token};
use cpc_protocol::{
    parse_push, Applied, Hex64, Limits, OpOutcome, Outcome, Position, PushRequest, PushResponse,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TOKEN: &str = "tok-dev-7f3a-3d9f1c2b8e";
pub const CLIENT: &str = "dev-7f3a";

/// `n` operations on distinct entities, each with a payload naming it.
pub fn ops(n: usize) -> Vec<Operation> {
    let clock = HybridClock::with_wall_clock(
        NodeId(0x7f3a_0000_0000_0001),
        Arc::new(ManualWallClock::new(1_767_229_200_000)),
    );
    (0..n)
        .map(|i| {
            Operation::builder(
                EntityKey::new("notes", format!("n{i}")),
                OperationKind::Update,
            )
            .payload(format!("{{\"title\":\"secret-payload-{i}\"}}").into_bytes())
            .base_version(u64::try_from(i).unwrap())
            .build(&clock)
            .unwrap()
        })
        .collect()
}

/// A transport to `server` with a fixed token.
pub fn transport(server: &MockServer) -> HttpTransport {
    transport_with(server, Arc::new(StaticToken::new(TOKEN)))
}

/// A transport to `server` with `credentials`.
pub fn transport_with(
    server: &MockServer,
    credentials: Arc<dyn CredentialsProvider>,
) -> HttpTransport {
    HttpTransport::new(HttpConfig::new(server.uri(), CLIENT), credentials).unwrap()
}

/// A stand-in server whose `/v1/info` advertises `limits`.
pub async fn server_with(limits: Limits) -> MockServer {
    let server = MockServer::start().await;
    let info = serde_json::json!({
        "protocols": [1],
        "store_id": "5f0c2a9e7b3d4c18a6e2f1d09b8c7a64",
        "server": "stand-in/0",
        "limits": limits,
        "an_unknown_member": "answers are extensible",
    });
    Mock::given(method("GET"))
        .and(path("/v1/info"))
        .respond_with(ResponseTemplate::new(200).set_body_json(info))
        .mount(&server)
        .await;
    server
}

/// A stand-in server with the default limits.
pub async fn server() -> MockServer {
    server_with(Limits::default()).await
}

/// The push requests `server` received, parsed as a server would.
pub async fn pushes(server: &MockServer) -> Vec<(Request, PushRequest)> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/v1/push")
        .map(|r| {
            let parsed = parse_push(&r.body, &Limits::default()).unwrap();
            (r, parsed)
        })
        .collect()
}

/// How many `GET /v1/info` `server` received.
pub async fn info_requests(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v1/info")
        .count()
}

/// The answer a server gives `request` when it applies every operation:
/// outcomes in reverse order (clients match by id, not position), each at
/// version `base_version + 1`.
pub fn applied_answer(request: &PushRequest) -> PushResponse {
    let outcomes: Vec<OpOutcome> = request
        .ops
        .iter()
        .enumerate()
        .rev()
        .map(|(i, op)| OpOutcome {
            op: op.id,
            outcome: Outcome::Applied(Applied {
                version: op.base_version.unwrap_or(0) + 1,
                seq: u64::try_from(i).unwrap() + 1,
            }),
        })
        .collect();
    PushResponse {
        head: Position {
            store_id: "s1".into(),
            seq: u64::try_from(outcomes.len()).unwrap(),
            fp: Hex64(1),
        },
        outcomes,
    }
}

/// A responder that applies every operation it is sent, and answers `413`
/// to a request of more than `max_ops` operations.
pub struct Applier {
    pub max_ops: usize,
}

impl Respond for Applier {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let push = parse_push(&request.body, &Limits::default()).unwrap();
        if push.ops.len() > self.max_ops {
            return problem(413, "too_large");
        }
        let body = serde_json::to_vec(&applied_answer(&push)).unwrap();
        ResponseTemplate::new(200).set_body_raw(body, "application/json")
    }
}

/// A problem answer of `status` and `code`.
pub fn problem(status: u16, code: &str) -> ResponseTemplate {
    let body = serde_json::json!({
        "type": format!("urn:cpc-sync:problem:{code}"),
        "title": code,
        "status": status,
        "detail": "stand-in",
        "code": code,
    });
    ResponseTemplate::new(status).set_body_raw(
        serde_json::to_vec(&body).unwrap(),
        "application/problem+json",
    )
}

/// Mounts `response` for every `POST /v1/push`.
pub async fn on_push(server: &MockServer, response: impl Respond + 'static) {
    Mock::given(method("POST"))
        .and(path("/v1/push"))
        .respond_with(response)
        .mount(server)
        .await;
}

/// A provider handing out `tokens` in turn: each `invalidate` of the
/// current one moves to the next; past the last there is none.
#[derive(Debug, Default)]
pub struct Rotating {
    tokens: Mutex<Vec<String>>,
    pub invalidated: AtomicUsize,
    pub asked: AtomicUsize,
}

impl Rotating {
    pub fn new(tokens: &[&str]) -> Arc<Self> {
        Arc::new(Rotating {
            tokens: Mutex::new(tokens.iter().map(|t| t.to_string()).collect()),
            ..Rotating::default()
        })
    }

    pub fn invalidations(&self) -> usize {
        self.invalidated.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl CredentialsProvider for Rotating {
    async fn token(&self) -> Option<Token> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.tokens.lock().unwrap().first().cloned().map(Token::new)
    }

    fn invalidate(&self, token: &Token) {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
        let mut tokens = self.tokens.lock().unwrap();
        if tokens.first().map(String::as_str) == Some(token.secret()) {
            tokens.remove(0);
        }
    }
}

/// A push with no `known` position, answering the outcomes alone: what
/// most of these tests look at.
#[allow(async_fn_in_trait)]
pub trait PushOps {
    /// Pushes `ops` and answers their outcomes.
    async fn push_ops(
        &self,
        ops: &[cpc_core::Operation],
    ) -> Result<Vec<cpc_core::OpOutcome>, cpc_core::TransportError>;
}

impl<T: cpc_core::Transport + ?Sized> PushOps for T {
    async fn push_ops(
        &self,
        ops: &[cpc_core::Operation],
    ) -> Result<Vec<cpc_core::OpOutcome>, cpc_core::TransportError> {
        self.push(&cpc_core::PushQuery::new(ops))
            .await
            .map(|a| a.outcomes)
    }
}
