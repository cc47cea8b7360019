//! What every check stands on: the run's context (fresh ids and keys, the
//! server's advertised limits), pushes that check the answer's shape, the
//! problem-answer check, and the "nothing was applied" probe.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cpc_protocol::{
    check_push_answer, Applied, EntityKey, Hex64, Info, Kind, Limits, OpId, Outcome, Payload,
    Problem, ProblemCode, PushRequest, PushResponse, Timestamp, WireOp, MAX_DETAIL_BYTES,
    PROBLEM_CONTENT_TYPE,
};

use crate::error::Error;
use crate::http::{Answer, Auth, Http, Request};
use crate::target::Target;

/// The collection every entity of the suite lives in.
pub(crate) const COLLECTION: &str = "cpc-conformance";
/// The push path.
pub(crate) const PUSH: &str = "/v1/push";

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotPassed {
    /// The server broke a rule: what it did.
    Failed(String),
    /// The check could not run: why.
    Skipped(String),
}

impl From<Error> for NotPassed {
    fn from(e: Error) -> NotPassed {
        NotPassed::Failed(e.to_string())
    }
}

/// A check's result.
pub(crate) type Checked = Result<(), NotPassed>;

/// Fails the check with a formatted reason.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::harness::NotPassed::Failed(format!($($arg)*)))
    };
}
pub(crate) use fail;

/// Fails the check unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::harness::fail!($($arg)*);
        }
    };
}
pub(crate) use ensure;

/// Prefixes a failure's reason with what was being tried.
pub(crate) fn context<T>(label: &str, r: Result<T, NotPassed>) -> Result<T, NotPassed> {
    r.map_err(|e| match e {
        NotPassed::Failed(why) => NotPassed::Failed(format!("{label}: {why}")),
        skipped => skipped,
    })
}

/// One run against one server.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub target: &'a Target,
    pub http: Http,
    /// `GET /v1/info` at the start of the run, or why it could not be read.
    pub info: Result<Info, String>,
    /// Makes this run's entity keys unique.
    run: String,
    /// This run's device clock id.
    node: Hex64,
    counter: AtomicU32,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

impl<'a> Ctx<'a> {
    /// A context for `target`, reading its `/v1/info` once.
    pub(crate) async fn new(target: &'a Target, http: Http) -> Ctx<'a> {
        let info = match http.send(&Request::get("/v1/info")).await {
            Err(e) => Err(e.to_string()),
            Ok(a) if a.status != 200 => Err(format!("GET /v1/info answered {}", a.describe())),
            Ok(a) => serde_json::from_slice::<Info>(&a.body)
                .map_err(|e| format!("GET /v1/info is not an info object: {e}")),
        };
        Ctx {
            target,
            http,
            info,
            run: format!("{:012x}", rand::random::<u64>() >> 16),
            node: Hex64(rand::random::<u64>() | 1),
            counter: AtomicU32::new(0),
        }
    }

    /// The advertised limits; the checks that size requests need them.
    pub(crate) fn limits(&self) -> Result<Limits, NotPassed> {
        self.info
            .as_ref()
            .map(|i| i.limits)
            .map_err(|e| NotPassed::Failed(format!("needs the limits of /v1/info: {e}")))
    }

    fn next(&self) -> u32 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh operation id, made like cpc-sync makes them (48 bits of wall
    /// ms, a 32-bit counter, 48 random bits): unique, and increasing within
    /// a run, so a `low_water` equal to the newest id is a true promise.
    pub(crate) fn op_id(&self) -> OpId {
        let random = u128::from(rand::random::<u64>() & ((1 << 48) - 1));
        OpId(u128::from(now_ms()) << 80 | u128::from(self.next()) << 48 | random)
    }

    /// A fresh entity key, never written before by anyone.
    pub(crate) fn entity(&self, what: &str) -> EntityKey {
        EntityKey {
            collection: COLLECTION.to_owned(),
            id: format!("{}-{what}-{}", self.run, self.next()),
        }
    }

    /// A fresh operation on `entity`.
    pub(crate) fn op(
        &self,
        entity: &EntityKey,
        kind: Kind,
        payload: &[u8],
        base_version: Option<u64>,
    ) -> WireOp {
        WireOp {
            id: self.op_id(),
            entity: entity.clone(),
            kind,
            payload: Payload(payload.to_vec()),
            base_version,
            timestamp: Timestamp {
                wall_ms: now_ms(),
                logical: self.next(),
                node: self.node,
            },
        }
    }

    /// A fresh `update` of a fresh entity.
    pub(crate) fn fresh_op(&self, what: &str) -> WireOp {
        self.op(&self.entity(what), Kind::Update, what.as_bytes(), None)
    }

    /// A valid push request of `ops` from the target's client.
    pub(crate) fn request(&self, ops: &[WireOp]) -> PushRequest {
        PushRequest {
            protocol: 1,
            client_id: self.target.client_id.clone(),
            known: None,
            low_water: None,
            ops: ops.to_vec(),
        }
    }

    /// The same request as a JSON value, to be broken on purpose.
    pub(crate) fn request_value(&self, ops: &[WireOp]) -> serde_json::Value {
        serde_json::to_value(self.request(ops)).unwrap_or_default()
    }

    /// `POST /v1/push` of `body` as `application/json`, with the target's
    /// token.
    pub(crate) async fn post(&self, body: Vec<u8>) -> Result<Answer, NotPassed> {
        let request = Request::post_json(PUSH, Auth::Bearer(&self.target.token), body);
        Ok(self.http.send(&request).await?)
    }

    /// Pushes `ops` and returns the checked answer (see [`push_body`]).
    pub(crate) async fn push(&self, ops: &[WireOp]) -> Result<PushResponse, NotPassed> {
        self.push_request(&self.request(ops)).await
    }

    /// Pushes `request` and returns the checked answer.
    pub(crate) async fn push_request(
        &self,
        request: &PushRequest,
    ) -> Result<PushResponse, NotPassed> {
        let ids: Vec<OpId> = request.ops.iter().map(|o| o.id).collect();
        let body = serde_json::to_vec(request).unwrap_or_default();
        push_body(&self.http, &self.target.token, body, &ids).await
    }

    /// Probes that none of `ops` was applied by a refused request: pushing
    /// them again (same ids and content, `base_version` 0, each on an
    /// entity of its own) must apply each at version 1. A replayed id
    /// would answer `already_applied`, a written entity `conflict`.
    pub(crate) async fn expect_nothing_applied(&self, ops: &[WireOp]) -> Checked {
        let probe: Vec<WireOp> = ops
            .iter()
            .map(|o| WireOp {
                base_version: Some(0),
                ..o.clone()
            })
            .collect();
        let answer = context("the probe after the refusal", self.push(&probe).await)?;
        for op in &probe {
            match outcome(&answer, op)? {
                Outcome::Applied(Applied { version: 1, .. }) => {}
                other => fail!(
                    "the refused request was applied (at least in part): pushing its \
                     operation {} again answered {}",
                    op.id,
                    describe(other)
                ),
            }
        }
        Ok(())
    }
}

/// Pushes `body` (made for the operations `ids`) with `token` and checks
/// the answer's form: `200`, `application/json`, a push answer naming
/// each operation exactly once, versions and seqs at least 1, applied seqs
/// within the head (`check_push_answer`, the client's own door).
pub(crate) async fn push_body(
    http: &Http,
    token: &str,
    body: Vec<u8>,
    ids: &[OpId],
) -> Result<PushResponse, NotPassed> {
    let answer = http
        .send(&Request::post_json(PUSH, Auth::Bearer(token), body))
        .await?;
    ensure!(
        answer.status == 200,
        "a valid push answered {}",
        answer.describe()
    );
    ensure!(
        answer.media_type() == "application/json",
        "a push answer is application/json, not {:?}",
        answer.header("content-type").unwrap_or("")
    );
    let response: PushResponse = serde_json::from_slice(&answer.body).map_err(|e| {
        NotPassed::Failed(format!(
            "the 200 answer is not a push answer ({e}): {}",
            answer.describe()
        ))
    })?;
    check_push_answer(ids, &response).map_err(|e| NotPassed::Failed(e.to_string()))?;
    Ok(response)
}

/// The outcome naming `op`.
pub(crate) fn outcome<'r>(answer: &'r PushResponse, op: &WireOp) -> Result<&'r Outcome, NotPassed> {
    match answer.outcomes.iter().find(|o| o.op == op.id) {
        Some(o) => Ok(&o.outcome),
        None => fail!("no outcome names operation {}", op.id),
    }
}

/// The `applied` outcome of `op`, or a failure saying what came instead.
pub(crate) fn applied(answer: &PushResponse, op: &WireOp) -> Result<Applied, NotPassed> {
    match outcome(answer, op)? {
        Outcome::Applied(a) => Ok(*a),
        other => fail!(
            "operation {} expected applied, got {}",
            op.id,
            describe(other)
        ),
    }
}

/// An outcome as its JSON text (payloads are the suite's own).
pub(crate) fn describe(o: &Outcome) -> String {
    serde_json::to_string(o).unwrap_or_else(|_| format!("{o:?}"))
}

/// Checks that `answer` is the problem answer of `code` (docs/protocol.md
/// §2.4, §9.1): its status, `application/problem+json`, and a problem
/// object whose `type`, `title`, `status` and `code` agree with the code
/// and whose `detail` is at most 1024 bytes.
pub(crate) fn expect_problem(answer: &Answer, code: ProblemCode) -> Result<Problem, NotPassed> {
    ensure!(
        answer.status == code.status(),
        "expected {} {code}, got {}",
        code.status(),
        answer.describe()
    );
    ensure!(
        answer.media_type() == PROBLEM_CONTENT_TYPE,
        "a {} answer is {PROBLEM_CONTENT_TYPE}, not {:?}",
        answer.status,
        answer.header("content-type").unwrap_or("")
    );
    let problem: Problem = serde_json::from_slice(&answer.body).map_err(|e| {
        NotPassed::Failed(format!("not a problem object ({e}): {}", answer.describe()))
    })?;
    ensure!(
        problem.code == code.as_str(),
        "expected code {code}, got {:?}",
        problem.code
    );
    let kind = format!("urn:cpc-sync:problem:{code}");
    ensure!(
        problem.kind == kind,
        "type is {:?}, not {kind:?}",
        problem.kind
    );
    ensure!(
        problem.status == answer.status,
        "status member {} differs from the HTTP status {}",
        problem.status,
        answer.status
    );
    ensure!(
        problem.title == code.title(),
        "title is {:?}, not the title of {code}, {:?}",
        problem.title,
        code.title()
    );
    ensure!(
        problem.detail.len() <= MAX_DETAIL_BYTES,
        "detail is {} bytes, over {MAX_DETAIL_BYTES}",
        problem.detail.len()
    );
    Ok(problem)
}
