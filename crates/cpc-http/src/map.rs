//! Between the engine's types (`cpc_core`) and the wire's
//! (`cpc_protocol`): operations out, outcomes back. Pure functions.

use std::time::Duration;

use cpc_core::{
    HlcTimestamp, NodeId, OpOutcome, Operation, OperationId, OperationKind, PushOutcome,
    RemoteRecord,
};
use cpc_protocol::{
    EntityKey, Hex64, Kind, OpId, Outcome, Payload, Position, PushRequest, Timestamp, WireOp,
};

/// The protocol version sent in every body; the path says the same
/// ([`cpc_protocol::V1`]), and a server checks that both agree.
pub(crate) const PROTOCOL: u32 = 1;

/// The longest rejection reason handed to the engine, in bytes (`code: `
/// plus the message the protocol bounds to 1024 bytes).
pub(crate) const MAX_REASON_BYTES: usize = 1024 + 64;

/// The wire id of an operation (same 128 bits, same Crockford text).
pub(crate) fn op_id(id: OperationId) -> OpId {
    OpId(id.as_u128())
}

/// The push body for `ops`, carrying `known` (§8). `low_water` is not sent
/// (the server would prune nothing with it yet).
pub(crate) fn push_request(
    client_id: &str,
    ops: &[Operation],
    known: Option<Position>,
) -> PushRequest {
    PushRequest {
        protocol: PROTOCOL,
        client_id: client_id.to_owned(),
        known,
        low_water: None,
        ops: ops.iter().map(wire_op).collect(),
    }
}

fn wire_op(op: &Operation) -> WireOp {
    let kind = match &op.kind {
        OperationKind::Create => Kind::Create,
        OperationKind::Update => Kind::Update,
        OperationKind::Delete => Kind::Delete,
        OperationKind::Custom(name) => Kind::Custom(name.clone()),
    };
    // §6.1: a delete sends an empty payload (a server would count a
    // non-empty one against its limits and not store it).
    let payload = if kind == Kind::Delete {
        Payload::default()
    } else {
        Payload(op.payload.clone())
    };
    WireOp {
        id: op_id(op.id),
        entity: EntityKey {
            collection: op.entity.collection.clone(),
            id: op.entity.id.clone(),
        },
        kind,
        payload,
        base_version: op.base_version,
        timestamp: wire_timestamp(op.timestamp),
    }
}

fn wire_timestamp(ts: HlcTimestamp) -> Timestamp {
    Timestamp {
        wall_ms: ts.wall_ms,
        logical: ts.logical,
        node: Hex64(ts.node.0),
    }
}

/// A wire position as the engine's.
pub(crate) fn position(p: Position) -> cpc_core::RemotePosition {
    cpc_core::RemotePosition {
        store_id: p.store_id,
        seq: p.seq,
        fp: p.fp.0,
    }
}

/// The engine's position as the wire's.
pub(crate) fn wire_position(p: &cpc_core::RemotePosition) -> Position {
    Position {
        store_id: p.store_id.clone(),
        seq: p.seq,
        fp: Hex64(p.fp),
    }
}

pub(crate) fn timestamp(ts: Timestamp) -> HlcTimestamp {
    HlcTimestamp::new(ts.wall_ms, ts.logical, NodeId(ts.node.0))
}

/// The engine's outcome for a checked wire outcome.
pub(crate) fn outcome(wire: cpc_protocol::OpOutcome) -> OpOutcome {
    let seq = match &wire.outcome {
        Outcome::Applied(a) | Outcome::AlreadyApplied(a) => Some(a.seq),
        _ => None,
    };
    let outcome = match wire.outcome {
        Outcome::Applied(a) => PushOutcome::Applied { version: a.version },
        Outcome::AlreadyApplied(a) => PushOutcome::AlreadyApplied { version: a.version },
        Outcome::Conflict { remote } => PushOutcome::Conflict {
            remote: RemoteRecord {
                version: remote.version,
                timestamp: timestamp(remote.timestamp),
                payload: remote.payload.map(|p| p.0),
                node: NodeId(remote.node.0),
            },
        },
        Outcome::Rejected { code, message } => PushOutcome::Rejected {
            reason: cut(format!("{code}: {message}"), MAX_REASON_BYTES),
        },
        // §6.4: a client clamps a larger wait to the hour.
        Outcome::RetryLater { after_ms } => PushOutcome::RetryLater {
            after: Some(Duration::from_millis(
                after_ms.min(cpc_core::millis(cpc_protocol::MAX_RETRY_AFTER)),
            )),
        },
    };
    let mut mapped = OpOutcome::new(OperationId::from_u128(wire.op.0), outcome);
    mapped.seq = seq;
    mapped
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_core::EntityKey as CoreKey;
    use cpc_protocol::{Applied, RemoteState};

    fn op(kind: OperationKind, payload: &[u8]) -> Operation {
        Operation {
            id: OperationId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            entity: CoreKey::new("notes", "n1"),
            kind,
            payload: payload.to_vec(),
            priority: Default::default(),
            timestamp: HlcTimestamp::new(1_767_229_200_000, 3, NodeId(0x7f3a_0000_0000_0001)),
            base_version: Some(2),
        }
    }

    #[test]
    fn an_operation_keeps_its_id_key_kind_payload_and_clock() {
        let op = op(OperationKind::Custom("archive".into()), b"hi");
        let request = push_request("dev-7f3a", std::slice::from_ref(&op), None);
        let wire = &request.ops[0];
        // Same 128 bits, so the same 26-character text.
        assert_eq!(wire.id.to_string(), op.id.to_string());
        assert_eq!(
            (wire.entity.collection.as_str(), wire.entity.id.as_str()),
            ("notes", "n1")
        );
        assert_eq!(wire.kind, Kind::Custom("archive".into()));
        assert_eq!(wire.payload.0, b"hi");
        assert_eq!(wire.base_version, Some(2));
        assert_eq!(wire.timestamp.node.to_string(), "7f3a000000000001");
        assert_eq!(
            (wire.timestamp.wall_ms, wire.timestamp.logical),
            (1_767_229_200_000, 3)
        );
        assert_eq!((request.protocol, request.known.is_none()), (1, true));
    }

    #[test]
    fn a_delete_sends_an_empty_payload() {
        let request = push_request("d", &[op(OperationKind::Delete, b"left over")], None);
        assert!(request.ops[0].payload.0.is_empty());
    }

    #[test]
    fn outcomes_map_to_the_engines_vocabulary() {
        let op = OpId(7);
        let conflict = outcome(cpc_protocol::OpOutcome {
            op,
            outcome: Outcome::Conflict {
                remote: RemoteState {
                    version: 4,
                    timestamp: Timestamp {
                        wall_ms: 9,
                        logical: 1,
                        node: Hex64(5),
                    },
                    node: Hex64(5),
                    payload: Some(Payload(b"theirs".to_vec())),
                },
            },
        });
        assert_eq!(conflict.op, OperationId::from_u128(7));
        assert_eq!(
            conflict.outcome,
            PushOutcome::Conflict {
                remote: RemoteRecord {
                    version: 4,
                    timestamp: HlcTimestamp::new(9, 1, NodeId(5)),
                    payload: Some(b"theirs".to_vec()),
                    node: NodeId(5),
                }
            }
        );
        let replay = outcome(cpc_protocol::OpOutcome {
            op,
            outcome: Outcome::AlreadyApplied(Applied { version: 3, seq: 9 }),
        });
        assert_eq!(replay.outcome, PushOutcome::AlreadyApplied { version: 3 });
        let rejected = outcome(cpc_protocol::OpOutcome {
            op,
            outcome: Outcome::Rejected {
                code: "forbidden".into(),
                message: "é".repeat(2000),
            },
        });
        match rejected.outcome {
            PushOutcome::Rejected { reason } => {
                assert!(reason.starts_with("forbidden: é"));
                assert!(reason.len() <= MAX_REASON_BYTES);
            }
            other => panic!("{other:?}"),
        }
        let later = outcome(cpc_protocol::OpOutcome {
            op,
            outcome: Outcome::RetryLater { after_ms: u64::MAX },
        });
        assert_eq!(
            later.outcome,
            PushOutcome::RetryLater {
                after: Some(Duration::from_secs(3600))
            }
        );
    }
}
