//! The cpc-sync HTTP protocol v1, as types: what a client sends and a
//! server answers, the encodings of shared values, the limits, the problem
//! answers, and the checks both doors run. `docs/protocol.md` is the
//! contract; this crate is its executable form, shared by the client
//! transport (`cpc-http`) and the reference server (`cpc-server`). No I/O,
//! no dependency on the client crates: a server depends on this crate
//! only.
//!
//! ```
//! use cpc_protocol::{
//!     check_push_answer, parse_push, Applied, Limits, OpOutcome, Outcome, Position,
//!     PushResponse, Hex64,
//! };
//!
//! // The server's door: a body becomes a checked request, or a problem.
//! let body = br#"{"protocol":1,"client_id":"dev-1","ops":[
//!   {"id":"01KDVH35M00000002Y98FGS6SQ","entity":{"collection":"notes","id":"n1"},
//!    "kind":"create","payload":"aGk=","base_version":0,
//!    "timestamp":{"wall_ms":1767229200000,"logical":0,"node":"7f3a000000000001"}}]}"#;
//! let request = parse_push(body, &Limits::default()).map_err(|p| p.to_string())?;
//! assert_eq!(request.ops[0].payload.0, b"hi");
//!
//! // A bad body is a problem naming the member.
//! let problem = parse_push(br#"{"protocol":1,"client_id":"dev-1","ops":[]}"#, &Limits::default())
//!     .unwrap_err();
//! assert_eq!((problem.status, problem.code.as_str()), (400, "bad_request"));
//! assert_eq!(problem.pointer.as_deref(), Some("/ops"));
//!
//! // The client's door: an answer must name every operation once.
//! let answer = PushResponse {
//!     outcomes: vec![OpOutcome {
//!         op: request.ops[0].id,
//!         outcome: Outcome::Applied(Applied { version: 1, seq: 1 }),
//!     }],
//!     head: Position { store_id: "s".into(), seq: 1, fp: Hex64(7) },
//! };
//! check_push_answer(&[request.ops[0].id], &answer)?;
//! assert_eq!(
//!     serde_json::to_string(&answer.outcomes[0])?,
//!     r#"{"op":"01KDVH35M00000002Y98FGS6SQ","applied":{"version":1,"seq":1}}"#
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod encoding;
mod id;
mod info;
mod problem;
mod pull;
mod pull_check;
mod push;
mod request_id;
mod retry_after;
mod strict;
mod validate;

pub use encoding::{Hex64, Payload, MAX_SAFE_INTEGER};
pub use id::{OpId, OpIdError, OP_ID_LEN};
pub use info::{
    Info, Limits, HEALTH_BODY, MAX_CLIENT_ID_LEN, MAX_KEY_BYTES, MAX_STORE_ID_LEN, MAX_WALL_MS,
    OP_ENVELOPE_BYTES, PROTOCOLS,
};
pub use problem::{Problem, ProblemCode, MAX_DETAIL_BYTES, PROBLEM_CONTENT_TYPE};
pub use pull::{
    Change, Cursor, Origin, PullLimits, PullRequest, PullResponse, Reset, ResetReason,
    SnapshotRange,
};
pub use pull_check::{check_pull_page, parse_pull};
pub use push::{
    reject_code, Applied, EntityKey, Kind, OpOutcome, Outcome, Position, PushRequest, PushResponse,
    RemoteState, Timestamp, WireOp,
};
pub use request_id::{request_id_from, valid_request_id, MAX_REQUEST_ID_LEN, REQUEST_ID_HEADER};
pub use retry_after::{parse_retry_after, MAX_RETRY_AFTER, RETRY_AFTER_MS_HEADER};
pub use validate::{
    check_push_answer, parse_push, unsupported_version, valid_client_id, valid_store_id,
    AnswerError,
};

/// The path prefix of protocol v1.
pub const V1: &str = "/v1";
