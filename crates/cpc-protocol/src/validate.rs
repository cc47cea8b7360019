//! Validation at both doors: a server turns a request body into a checked
//! [`PushRequest`] or the [`Problem`] to answer; a client checks a push
//! answer against the batch it sent before acknowledging anything.

use std::collections::HashSet;

use serde::Deserialize;

use crate::encoding::MAX_SAFE_INTEGER;
use crate::info::{
    Limits, MAX_CLIENT_ID_LEN, MAX_KEY_BYTES, MAX_STORE_ID_LEN, MAX_WALL_MS, PROTOCOLS,
};
use crate::problem::{Problem, ProblemCode};
use crate::push::{Kind, Outcome, Position, PushRequest, PushResponse};
use crate::OpId;

/// Whether `id` is a valid `client_id`: 1 to 64 characters of
/// `A-Z a-z 0-9 . _ -`.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The answer to a body whose `protocol` is not served.
pub fn unsupported_version(detail: impl Into<String>) -> Problem {
    let mut p = Problem::new(ProblemCode::UnsupportedVersion, detail);
    p.supported = Some(PROTOCOLS.to_vec());
    p
}

pub(crate) fn bad_request(pointer: impl Into<String>, detail: impl Into<String>) -> Box<Problem> {
    let mut p = Problem::new(ProblemCode::BadRequest, detail);
    p.pointer = Some(pointer.into());
    Box::new(p)
}

/// Parses and checks a push body (its size already checked against
/// `max_body_bytes`). The `protocol` member is read first, so a body of
/// another version is told so rather than that it is malformed. On
/// success every rule of the request schema holds: encodings, integer
/// ranges, key lengths, a non-empty batch of at most `max_batch_ops`
/// operations with unique ids. Payload sizes are per-operation outcomes,
/// not checked here.
pub fn parse_push(body: &[u8], limits: &Limits) -> Result<PushRequest, Box<Problem>> {
    let request: PushRequest = parse_json(body)?;
    check_protocol(request.protocol)?;
    check_push(&request, limits)?;
    Ok(request)
}

/// Reads a request body as `T`: a problem with a JSON pointer when it does
/// not fit, told `unsupported_version` first when its `protocol` is not
/// served (a body of another version need not fit this one's schema).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Problem>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => value,
        Err(e) => {
            check_version_only(body)?;
            return Err(bad_request(json_pointer(e.path()), e.inner().to_string()));
        }
    };
    // Trailing bytes after the object are malformed too.
    if let Err(e) = de.end() {
        return Err(bad_request("", e.to_string()));
    }
    Ok(value)
}

/// `unsupported_version` unless `protocol` is served.
pub(crate) fn check_protocol(protocol: u32) -> Result<(), Box<Problem>> {
    if PROTOCOLS.contains(&protocol) {
        return Ok(());
    }
    Err(Box::new(unsupported_version(format!(
        "protocol {protocol} is not served"
    ))))
}

/// Reads only the `protocol` member of a body that did not parse as a v1
/// push: an integer other than a served version is `unsupported_version`.
fn check_version_only(body: &[u8]) -> Result<(), Box<Problem>> {
    #[derive(Deserialize)]
    struct Probe {
        protocol: Option<serde_json::Value>,
    }
    if let Ok(Probe {
        protocol: Some(serde_json::Value::Number(n)),
    }) = serde_json::from_slice::<Probe>(body)
    {
        if let Some(v) = n.as_u64() {
            if !PROTOCOLS.iter().any(|p| u64::from(*p) == v) {
                return Err(Box::new(unsupported_version(format!(
                    "protocol {v} is not served"
                ))));
            }
        }
    }
    Ok(())
}

/// An RFC 6901 pointer from a serde path (`ops[3].payload` →
/// `/ops/3/payload`).
fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        out.push('/');
        match segment {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

fn check_push(request: &PushRequest, limits: &Limits) -> Result<(), Box<Problem>> {
    if !valid_client_id(&request.client_id) {
        return Err(bad_request(
            "/client_id",
            "client_id must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    if request.ops.is_empty() {
        return Err(bad_request("/ops", "a push carries at least one operation"));
    }
    if request.ops.len() as u64 > limits.max_batch_ops {
        let mut p = Problem::new(
            ProblemCode::TooLarge,
            format!(
                "{} operations exceed max_batch_ops ({})",
                request.ops.len(),
                limits.max_batch_ops
            ),
        );
        p.limit = Some("max_batch_ops".into());
        p.max = Some(limits.max_batch_ops);
        return Err(Box::new(p));
    }
    check_position(request.known.as_ref(), "/known")?;
    let mut seen: HashSet<OpId> = HashSet::with_capacity(request.ops.len());
    for (i, op) in request.ops.iter().enumerate() {
        let at = |member: &str| format!("/ops/{i}/{member}");
        if !seen.insert(op.id) {
            return Err(bad_request(
                at("id"),
                format!("operation id {} is repeated", op.id),
            ));
        }
        // U+0000 is refused everywhere a name is stored: not every store
        // can hold it (PostgreSQL's text cannot), and every store must
        // answer alike.
        if op.entity.collection.is_empty()
            || op.entity.collection.len() > MAX_KEY_BYTES
            || op.entity.collection.contains('\0')
        {
            return Err(bad_request(
                format!("/ops/{i}/entity/collection"),
                "collection must be 1 to 1024 bytes, without U+0000",
            ));
        }
        if op.entity.id.len() > MAX_KEY_BYTES || op.entity.id.contains('\0') {
            return Err(bad_request(
                format!("/ops/{i}/entity/id"),
                "entity id must be at most 1024 bytes, without U+0000",
            ));
        }
        if let Kind::Custom(name) = &op.kind {
            if name.len() > MAX_KEY_BYTES || name.contains('\0') {
                return Err(bad_request(
                    at("kind"),
                    "a custom kind name is at most 1024 bytes, without U+0000",
                ));
            }
        }
        if op.base_version.is_some_and(|v| v > MAX_SAFE_INTEGER) {
            return Err(bad_request(
                at("base_version"),
                "base_version exceeds 2^53 - 1",
            ));
        }
        if op.timestamp.wall_ms > MAX_WALL_MS {
            return Err(bad_request(
                format!("/ops/{i}/timestamp/wall_ms"),
                "wall_ms exceeds 2^48 - 1",
            ));
        }
    }
    Ok(())
}

/// Whether `id` is a valid `store_id`: 1 to 64 ASCII characters
/// (docs/protocol.md §3.1).
pub fn valid_store_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_STORE_ID_LEN && id.is_ascii()
}

/// A position's store id 1 to 64 ASCII characters and its seq within the
/// safe integers. The problem's pointer names the offending member
/// (`{at}/store_id`, `{at}/seq`), not the whole position: a client
/// fixing its request needs to know which one is wrong.
pub(crate) fn check_position(p: Option<&Position>, at: &str) -> Result<(), Box<Problem>> {
    let Some(p) = p else {
        return Ok(());
    };
    if !valid_store_id(&p.store_id) {
        return Err(bad_request(
            format!("{at}/store_id"),
            "store_id must be 1 to 64 ASCII characters",
        ));
    }
    if p.seq > MAX_SAFE_INTEGER {
        return Err(bad_request(format!("{at}/seq"), "seq exceeds 2^53 - 1"));
    }
    Ok(())
}

/// Why a push answer or a pull page cannot be trusted (the client
/// acknowledges or applies nothing of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("answer refused: {0}")]
pub struct AnswerError(pub String);

/// Checks a 200 push answer against the ids sent, in order: exactly one
/// outcome per operation (none unknown, repeated or missing), versions and
/// seqs of applied operations at least 1 and within the head.
pub fn check_push_answer(sent: &[OpId], answer: &PushResponse) -> Result<(), AnswerError> {
    if answer.outcomes.len() != sent.len() {
        return Err(AnswerError(format!(
            "{} outcomes for {} operations",
            answer.outcomes.len(),
            sent.len()
        )));
    }
    let expected: HashSet<OpId> = sent.iter().copied().collect();
    let mut named: HashSet<OpId> = HashSet::with_capacity(sent.len());
    for o in &answer.outcomes {
        if !expected.contains(&o.op) {
            return Err(AnswerError(format!("an outcome names {} not sent", o.op)));
        }
        if !named.insert(o.op) {
            return Err(AnswerError(format!("{} is answered twice", o.op)));
        }
        if let Outcome::Applied(a) | Outcome::AlreadyApplied(a) = &o.outcome {
            if a.version == 0 || a.seq == 0 {
                return Err(AnswerError(format!("{} applied at version or seq 0", o.op)));
            }
            if matches!(o.outcome, Outcome::Applied(_)) && a.seq > answer.head.seq {
                return Err(AnswerError(format!(
                    "{} applied at seq {} beyond the head {}",
                    o.op, a.seq, answer.head.seq
                )));
            }
        }
    }
    Ok(())
}
