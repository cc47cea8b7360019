//! The per-operation rules of a push (docs/protocol.md §6.3), the same for
//! every store: replay, size, order behind the entity, conflict, and what
//! an applied operation writes (its version, `seq` and fingerprint); and
//! whether a client's `known` position is in the history (§8). A store
//! only reads the rows these rules judge and writes what they decide, so
//! stores cannot drift apart.

use std::collections::HashSet;

use cpc_protocol::{
    reject_code, Applied, EntityKey, Hex64, Kind, Limits, Outcome, Payload, RemoteState, Timestamp,
    WireOp,
};

use crate::fp::{self, ChangeRef};

/// The change log's end, carried from operation to operation: a position
/// of this store without its store id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    /// The last change's `seq` (0: none yet).
    pub seq: u64,
    /// The fingerprint there (0 before the first change).
    pub fp: u64,
}

/// What the per-operation rules judge against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// The limits enforced.
    pub limits: Limits,
    /// The rules to break on purpose (see [`Faults`](crate::Faults)).
    #[cfg(feature = "test-faults")]
    pub faults: crate::Faults,
}

impl Rules {
    /// The rules enforcing `limits`, none broken.
    pub fn new(limits: Limits) -> Rules {
        Rules {
            limits,
            #[cfg(feature = "test-faults")]
            faults: crate::Faults::default(),
        }
    }
}

/// Bytes an outcome other than a conflict takes in the answer, at most.
const OUTCOME_BYTES: u64 = 160;
/// Bytes of a conflict's answer besides its payload's base64.
const CONFLICT_BYTES: u64 = 320;
/// Bytes of the answer besides its outcomes (the head, the braces).
const ANSWER_BYTES: u64 = 256;

/// An operation applied before, as the idempotency table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The version its application produced.
    pub version: u64,
    /// Where the change log holds it.
    pub seq: u64,
    /// Its [`content_hash`].
    pub content_hash: Vec<u8>,
}

/// An entity as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Its version (0: never written).
    pub version: u64,
    /// The timestamp of the operation that wrote it.
    pub timestamp: Timestamp,
    /// Its payload; `None` once deleted.
    pub payload: Option<Vec<u8>>,
}

/// What an applied operation writes: the entity's new row, one change-log
/// row, one idempotency row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChange<'a> {
    /// The entity's new version.
    pub version: u64,
    /// The change's `seq`.
    pub seq: u64,
    /// The fingerprint after it.
    pub fp: u64,
    /// Whether it deletes the entity.
    pub deleted: bool,
    /// `None` for a deletion.
    pub payload: Option<&'a [u8]>,
    /// The operation's kind, as stored.
    pub kind: String,
    /// The operation id, as stored.
    pub op_text: String,
    /// The operation's [`content_hash`].
    pub content_hash: [u8; 16],
}

impl NewChange<'_> {
    /// The head once it is written.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            fp: self.fp,
        }
    }

    /// The outcome once it is written.
    pub fn applied(&self) -> Outcome {
        Outcome::Applied(Applied {
            version: self.version,
            seq: self.seq,
        })
    }
}

/// What to do with an operation once its entity is read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'a> {
    /// Answer this, write nothing.
    Answer(Outcome),
    /// Write this, answer `applied`.
    Apply(NewChange<'a>),
}

/// The state of one batch while its operations are judged in order.
#[derive(Debug)]
pub struct Batch<'a> {
    /// Entities whose earlier operation in this batch was not applied: the
    /// later ones must wait (per-entity order).
    blocked: HashSet<&'a EntityKey>,
    /// The answer's size so far, at most.
    answer_bytes: u64,
}

impl<'a> Batch<'a> {
    /// A batch of `ops` operations.
    pub fn new(ops: usize) -> Batch<'a> {
        Batch {
            blocked: HashSet::new(),
            answer_bytes: ANSWER_BYTES + OUTCOME_BYTES * ops as u64,
        }
    }

    /// Takes note of an operation's outcome.
    pub fn record(&mut self, op: &'a WireOp, outcome: &Outcome) {
        if !matches!(outcome, Outcome::Applied(_) | Outcome::AlreadyApplied(_)) {
            self.blocked.insert(&op.entity);
        }
    }
}

/// The hash of an operation's content, to tell a replay from an id reused
/// for different content.
pub fn content_hash(op: &WireOp) -> [u8; 16] {
    fp::content_hash(
        &op.entity.collection,
        &op.entity.id,
        &op.kind.to_string(),
        &op.payload.0,
    )
}

/// The rules that need no entity: a replay (or an id reused for other
/// content), a payload over the limit, an entity blocked earlier in the
/// batch. `None`: read the entity and [`decide`].
pub fn before_load(
    op: &WireOp,
    seen: Option<Seen>,
    batch: &Batch<'_>,
    rules: &Rules,
) -> Option<Outcome> {
    // Fault `no_dedupe`: a resend is applied again.
    #[cfg(feature = "test-faults")]
    let seen = seen.filter(|_| !rules.faults.no_dedupe);
    if let Some(seen) = seen {
        if seen.content_hash.as_slice() != content_hash(op).as_slice() {
            return Some(Outcome::Rejected {
                code: reject_code::OP_ID_REUSED.into(),
                message: "this operation id was applied before with different content".into(),
            });
        }
        return Some(Outcome::AlreadyApplied(Applied {
            version: seen.version,
            seq: seen.seq,
        }));
    }
    let limits = &rules.limits;
    if op.payload.0.len() as u64 > limits.max_payload_bytes {
        return Some(Outcome::Rejected {
            code: reject_code::PAYLOAD_TOO_LARGE.into(),
            message: format!(
                "payload of {} bytes exceeds max_payload_bytes ({})",
                op.payload.0.len(),
                limits.max_payload_bytes
            ),
        });
    }
    if batch.blocked.contains(&op.entity) {
        return Some(Outcome::RetryLater { after_ms: 0 });
    }
    None
}

/// The rules against the stored entity: a conflict (its state in the
/// answer, if the answer has room), or the change to write after `head`.
pub fn decide<'a>(
    op: &'a WireOp,
    client_id: &str,
    current: Option<Current>,
    head: Head,
    batch: &mut Batch<'_>,
    rules: &Rules,
) -> Decision<'a> {
    let current_version = current.as_ref().map_or(0, |c| c.version);
    if conflicts(op.base_version, current_version) {
        let payload_len = current
            .as_ref()
            .and_then(|c| c.payload.as_ref())
            .map_or(0, Vec::len) as u64;
        let cost = CONFLICT_BYTES + payload_len.div_ceil(3) * 4;
        if batch.answer_bytes + cost > rules.limits.max_response_bytes {
            // The answer would outgrow its limit: this one is sent
            // again, in a smaller batch.
            return Decision::Answer(Outcome::RetryLater { after_ms: 0 });
        }
        batch.answer_bytes += cost;
        let remote = match current {
            Some(c) => RemoteState {
                version: c.version,
                timestamp: c.timestamp,
                node: c.timestamp.node,
                payload: c.payload.map(Payload),
            },
            None => RemoteState {
                version: 0,
                timestamp: Timestamp::default(),
                node: Hex64(0),
                payload: None,
            },
        };
        return Decision::Answer(Outcome::Conflict { remote });
    }
    let version = current_version + 1;
    let deleted = matches!(op.kind, Kind::Delete);
    let payload: Option<&[u8]> = (!deleted).then_some(op.payload.0.as_slice());
    let seq = head.seq + 1;
    // Fault `skip_seq`: a gap before every change.
    #[cfg(feature = "test-faults")]
    let seq = seq + u64::from(rules.faults.skip_seq);
    let ts = op.timestamp;
    let fp = fp::next(
        head.fp,
        &ChangeRef {
            seq,
            collection: &op.entity.collection,
            id: &op.entity.id,
            version,
            deleted,
            wall_ms: ts.wall_ms,
            logical: ts.logical,
            node: ts.node.0,
            origin_client: client_id,
            origin_op: op.id.0,
            payload: payload.unwrap_or(&[]),
        },
    );
    Decision::Apply(NewChange {
        version,
        seq,
        fp,
        deleted,
        payload,
        kind: op.kind.to_string(),
        op_text: op.id.to_string(),
        content_hash: content_hash(op),
    })
}

/// Whether an operation based on `base` conflicts with the entity as
/// stored, at `current_version` (0: never written): §6.3, any base other
/// than the stored version, older or newer (a newer one means the store
/// went back, restored from a backup). No base: a blind write.
pub fn conflicts(base: Option<u64>, current_version: u64) -> bool {
    base.is_some_and(|b| b != current_version)
}

/// Whether `p` is a position of this history (docs/protocol.md §8): this
/// store, at or below the head, with the same fingerprint at its seq.
/// `fp_at` reads the fingerprint the store holds at a seq (the change log,
/// or what compaction kept of it). A restore from a backup fails here even
/// after the restored store took new writes.
pub fn in_history<E>(
    store_id: &str,
    head_seq: u64,
    p: &cpc_protocol::Position,
    fp_at: impl FnOnce(u64) -> Result<Option<u64>, E>,
) -> Result<bool, E> {
    if !reachable(store_id, head_seq, p) {
        return Ok(false);
    }
    Ok(fp_at(p.seq)? == Some(p.fp.0))
}

/// The part of [`in_history`] that needs no read: `p` names this store and
/// a seq at or below the head. A store that reads asynchronously reads the
/// fingerprint only then, and hands it to [`in_history`].
pub fn reachable(store_id: &str, head_seq: u64, p: &cpc_protocol::Position) -> bool {
    p.store_id == store_id && p.seq <= head_seq
}
