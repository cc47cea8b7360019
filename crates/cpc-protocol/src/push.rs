//! `POST /v1/push`: the request, the per-operation outcomes and the answer.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::encoding::{Hex64, Payload};
use crate::id::OpId;
use crate::strict::objects_only;

/// A push request: a batch of one client's operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PushRequest {
    /// The protocol version of the body; `1`.
    pub protocol: u32,
    /// The pushing device; must be bound to the token.
    pub client_id: String,
    /// The highest server position this client has seen (`null` or absent:
    /// none). Checked by the pull half of the protocol; v1 servers without
    /// pull accept and ignore it.
    #[serde(default)]
    pub known: Option<Position>,
    /// Every operation this client will send again has an id ≥ this one
    /// (`null` or absent: no promise); lets the server prune its
    /// idempotency table.
    #[serde(default)]
    pub low_water: Option<OpId>,
    /// 1 to `max_batch_ops` operations, ids unique within the batch.
    pub ops: Vec<WireOp>,
}

/// One operation on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct WireOp {
    /// The idempotency key.
    pub id: OpId,
    /// The record it changes.
    pub entity: EntityKey,
    /// What it does.
    pub kind: Kind,
    /// The record's new content (empty for a delete), base64 on the wire.
    pub payload: Payload,
    /// The entity version the change was made on: `null` (or absent) for an
    /// unconditional write, `0` for "only if never written".
    #[serde(default)]
    pub base_version: Option<u64>,
    /// When the change was made, on the device's hybrid logical clock.
    pub timestamp: Timestamp,
}

/// A record's key: collection and id, compared bytewise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct EntityKey {
    /// 1 to 1024 bytes of UTF-8.
    pub collection: String,
    /// 0 to 1024 bytes of UTF-8.
    pub id: String,
}

/// A hybrid logical clock timestamp. (Unknown members are ignored: it
/// appears in answers too, which are extensible.)
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(remote = "Self")]
pub struct Timestamp {
    /// Wall clock, ms since the Unix epoch (at most 2^48 − 1).
    pub wall_ms: u64,
    /// Logical counter.
    pub logical: u32,
    /// The writing device's clock id.
    pub node: Hex64,
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `"create"`.
    Create,
    /// `"update"`.
    Update,
    /// `"delete"`: the entity becomes a tombstone.
    Delete,
    /// `"custom:<name>"`, applied as an upsert by the reference server.
    Custom(String),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Create => f.write_str("create"),
            Kind::Update => f.write_str("update"),
            Kind::Delete => f.write_str("delete"),
            Kind::Custom(name) => write!(f, "custom:{name}"),
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(match text.as_ref() {
            "create" => Kind::Create,
            "update" => Kind::Update,
            "delete" => Kind::Delete,
            other => match other.strip_prefix("custom:") {
                Some(name) => Kind::Custom(name.to_owned()),
                None => {
                    return Err(de::Error::custom(
                        "expected \"create\", \"update\", \"delete\" or \"custom:<name>\"",
                    ))
                }
            },
        })
    }
}

/// A server position: which store, how far along its change log, and the
/// running fingerprint of that history. (Unknown members are ignored:
/// it appears in answers too, which are extensible.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Position {
    /// The store's identity (1 to 64 ASCII characters).
    pub store_id: String,
    /// The change-log position, 0 for the empty log.
    pub seq: u64,
    /// The fingerprint of the history up to `seq`.
    pub fp: Hex64,
}

/// The answer to a push: one outcome per operation, and the server's head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Exactly one per operation sent, each naming its operation.
    pub outcomes: Vec<OpOutcome>,
    /// The head after this request's commit.
    pub head: Position,
}

/// The verdict on one operation, naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpOutcome {
    /// The operation.
    pub op: OpId,
    /// What happened to it.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What happened to one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Applied now.
    Applied(Applied),
    /// Applied before (a replay): a success, with the first application's
    /// version and seq.
    AlreadyApplied(Applied),
    /// The entity's version is not the operation's `base_version`.
    Conflict {
        /// The entity's current state.
        remote: RemoteState,
    },
    /// Refused for good.
    Rejected {
        /// A stable machine code (`payload_too_large`, `op_id_reused`, …).
        code: String,
        /// Human text, never quoting payload bytes.
        message: String,
    },
    /// A transient refusal: send again, not before `after_ms`.
    RetryLater {
        /// A floor for the wait, in ms.
        after_ms: u64,
    },
}

/// Where an applied operation landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The entity's new version.
    pub version: u64,
    /// The change-log position of the change.
    pub seq: u64,
}

/// An entity's current state, answered with a conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteState {
    /// Its version (0: never written).
    pub version: u64,
    /// When its last change was made.
    pub timestamp: Timestamp,
    /// The device that made it.
    pub node: Hex64,
    /// Its content; `null` when deleted or never written.
    pub payload: Option<Payload>,
}

/// The codes of [`Outcome::Rejected`] the reference server sends.
pub mod reject_code {
    /// The decoded payload is over `max_payload_bytes`.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// The id was applied before with different content.
    pub const OP_ID_REUSED: &str = "op_id_reused";
}

objects_only!(PushRequest, WireOp, EntityKey, Timestamp, Position);
