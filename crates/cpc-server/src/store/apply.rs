//! The per-operation rules of a push (docs/protocol.md §6.3), inside the
//! writer's transaction: replay, size, order behind the entity, conflict,
//! apply. Each applied operation appends one change-log row with the next
//! `seq` and the running fingerprint.

use std::collections::HashSet;

use cpc_protocol::{
    reject_code, Applied, EntityKey, Hex64, Kind, Limits, OpOutcome, Outcome, Payload, RemoteState,
    Timestamp, WireOp,
};
use rusqlite::{params, Connection, OptionalExtension};

use super::fp::{self, ChangeRef};
use super::schema::{from_sql, to_sql};
use super::StoreError;

/// The change log's end, carried from batch to batch by the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: u64,
    pub fp: u64,
}

/// What the per-operation rules judge against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// The limits enforced.
    pub limits: Limits,
    /// The rules to break on purpose (see `crate::faults`).
    #[cfg(feature = "test-faults")]
    pub faults: crate::faults::Faults,
}

/// Bytes an outcome other than a conflict takes in the answer, at most.
const OUTCOME_BYTES: u64 = 160;
/// Bytes of a conflict's answer besides its payload's base64.
const CONFLICT_BYTES: u64 = 320;
/// Bytes of the answer besides its outcomes (the head, the braces).
const ANSWER_BYTES: u64 = 256;

/// An entity as stored.
struct Current {
    version: u64,
    timestamp: Timestamp,
    payload: Option<Vec<u8>>,
}

/// Applies one client's batch; the caller owns the transaction (and a
/// savepoint around this batch, so an error undoes it alone).
pub(crate) fn apply_batch(
    conn: &Connection,
    head: &mut Head,
    client_id: &str,
    ops: &[WireOp],
    rules: &Rules,
    now_ms: u64,
) -> Result<Vec<OpOutcome>, StoreError> {
    conn.prepare_cached(
        "INSERT INTO clients (client_id, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?2)
         ON CONFLICT (client_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
    )?
    .execute(params![client_id, to_sql(now_ms)])?;
    let mut outcomes = Vec::with_capacity(ops.len());
    // Entities whose earlier operation in this batch was not applied: the
    // later ones must wait (per-entity order).
    let mut blocked: HashSet<&EntityKey> = HashSet::new();
    let mut answer_bytes = ANSWER_BYTES + OUTCOME_BYTES * ops.len() as u64;
    for op in ops {
        let outcome = apply_one(
            conn,
            head,
            client_id,
            op,
            rules,
            now_ms,
            &blocked,
            &mut answer_bytes,
        )?;
        #[cfg(feature = "test-faults")]
        record_as_final(conn, rules.faults, client_id, op, &outcome)?;
        if !matches!(outcome, Outcome::Applied(_) | Outcome::AlreadyApplied(_)) {
            blocked.insert(&op.entity);
        }
        outcomes.push(OpOutcome { op: op.id, outcome });
    }
    Ok(outcomes)
}

#[allow(clippy::too_many_arguments)]
fn apply_one(
    conn: &Connection,
    head: &mut Head,
    client_id: &str,
    op: &WireOp,
    rules: &Rules,
    now_ms: u64,
    blocked: &HashSet<&EntityKey>,
    answer_bytes: &mut u64,
) -> Result<Outcome, StoreError> {
    let kind = op.kind.to_string();
    let op_text = op.id.to_string();
    let hash = fp::content_hash(&op.entity.collection, &op.entity.id, &kind, &op.payload.0);
    let seen: Option<(i64, i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT version, seq, content_hash FROM applied_ops WHERE client_id = ?1 AND op_id = ?2",
        )?
        .query_row(params![client_id, op_text], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    // Fault `no_dedupe`: a resend is applied again.
    #[cfg(feature = "test-faults")]
    let seen = seen.filter(|_| !rules.faults.no_dedupe);
    if let Some((version, seq, stored)) = seen {
        if stored.as_slice() != hash.as_slice() {
            return Ok(Outcome::Rejected {
                code: reject_code::OP_ID_REUSED.into(),
                message: "this operation id was applied before with different content".into(),
            });
        }
        return Ok(Outcome::AlreadyApplied(Applied {
            version: from_sql(version)?,
            seq: from_sql(seq)?,
        }));
    }
    let limits = &rules.limits;
    if op.payload.0.len() as u64 > limits.max_payload_bytes {
        return Ok(Outcome::Rejected {
            code: reject_code::PAYLOAD_TOO_LARGE.into(),
            message: format!(
                "payload of {} bytes exceeds max_payload_bytes ({})",
                op.payload.0.len(),
                limits.max_payload_bytes
            ),
        });
    }
    if blocked.contains(&op.entity) {
        return Ok(Outcome::RetryLater { after_ms: 0 });
    }
    let current = load(conn, &op.entity)?;
    let current_version = current.as_ref().map_or(0, |c| c.version);
    if let Some(base) = op.base_version {
        if base != current_version {
            let payload_len = current
                .as_ref()
                .and_then(|c| c.payload.as_ref())
                .map_or(0, Vec::len) as u64;
            let cost = CONFLICT_BYTES + payload_len.div_ceil(3) * 4;
            if *answer_bytes + cost > limits.max_response_bytes {
                // The answer would outgrow its limit: this one is sent
                // again, in a smaller batch.
                return Ok(Outcome::RetryLater { after_ms: 0 });
            }
            *answer_bytes += cost;
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
            return Ok(Outcome::Conflict { remote });
        }
    }
    let version = current_version + 1;
    let deleted = matches!(op.kind, Kind::Delete);
    let stored_payload: Option<&[u8]> = (!deleted).then_some(op.payload.0.as_slice());
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
            payload: stored_payload.unwrap_or(&[]),
        },
    );
    conn.prepare_cached(
        "INSERT INTO entities (collection, id, version, wall_ms, logical, node, payload, deleted, last_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version,
           wall_ms = excluded.wall_ms, logical = excluded.logical, node = excluded.node,
           payload = excluded.payload, deleted = excluded.deleted, last_seq = excluded.last_seq",
    )?
    .execute(params![
        op.entity.collection,
        op.entity.id,
        to_sql(version),
        to_sql(ts.wall_ms),
        ts.logical,
        to_sql(ts.node.0),
        stored_payload,
        deleted,
        to_sql(seq),
    ])?;
    conn.prepare_cached(
        "INSERT INTO changes (seq, fp, collection, id, version, deleted, kind, payload, wall_ms,
           logical, node, origin_client, origin_op, committed_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        to_sql(seq),
        to_sql(fp),
        op.entity.collection,
        op.entity.id,
        to_sql(version),
        deleted,
        kind,
        stored_payload,
        to_sql(ts.wall_ms),
        ts.logical,
        to_sql(ts.node.0),
        client_id,
        op_text,
        to_sql(now_ms),
    ])?;
    // Fault `no_dedupe`: the second application replaces the record.
    #[cfg(feature = "test-faults")]
    let insert = if rules.faults.no_dedupe {
        "INSERT OR REPLACE INTO applied_ops (client_id, op_id, version, seq, content_hash) VALUES (?1, ?2, ?3, ?4, ?5)"
    } else {
        "INSERT INTO applied_ops (client_id, op_id, version, seq, content_hash) VALUES (?1, ?2, ?3, ?4, ?5)"
    };
    #[cfg(not(feature = "test-faults"))]
    let insert =
        "INSERT INTO applied_ops (client_id, op_id, version, seq, content_hash) VALUES (?1, ?2, ?3, ?4, ?5)";
    conn.prepare_cached(insert)?.execute(params![
        client_id,
        op_text,
        to_sql(version),
        to_sql(seq),
        hash.as_slice()
    ])?;
    *head = Head { seq, fp };
    Ok(Outcome::Applied(Applied { version, seq }))
}

/// Faults `record_conflicts` and `record_retry_later`: records a conflict
/// or a retry-later in the idempotency table as if it were final (the
/// entity's version and last seq standing for the result), the bug §6.4
/// forbids: a resend of the same id then answers `already_applied`.
#[cfg(feature = "test-faults")]
fn record_as_final(
    conn: &Connection,
    faults: crate::faults::Faults,
    client_id: &str,
    op: &WireOp,
    outcome: &Outcome,
) -> Result<(), StoreError> {
    let record = match outcome {
        Outcome::Conflict { .. } => faults.record_conflicts,
        Outcome::RetryLater { .. } => faults.record_retry_later,
        _ => false,
    };
    if !record {
        return Ok(());
    }
    let (version, seq): (i64, i64) = conn
        .prepare_cached("SELECT version, last_seq FROM entities WHERE collection = ?1 AND id = ?2")?
        .query_row(params![op.entity.collection, op.entity.id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
        .unwrap_or((0, 0));
    let kind = op.kind.to_string();
    let hash = fp::content_hash(&op.entity.collection, &op.entity.id, &kind, &op.payload.0);
    conn.prepare_cached(
        "INSERT OR REPLACE INTO applied_ops (client_id, op_id, version, seq, content_hash)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        client_id,
        op.id.to_string(),
        version,
        seq,
        hash.as_slice()
    ])?;
    Ok(())
}

/// An `entities` row: version, wall_ms, logical, node, payload.
type EntityRow = (i64, i64, u32, i64, Option<Vec<u8>>);

fn load(conn: &Connection, key: &EntityKey) -> Result<Option<Current>, StoreError> {
    let row: Option<EntityRow> = conn
        .prepare_cached(
            "SELECT version, wall_ms, logical, node, payload FROM entities WHERE collection = ?1 AND id = ?2",
        )?
        .query_row(params![key.collection, key.id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    row.map(|(version, wall_ms, logical, node, payload)| {
        Ok(Current {
            version: from_sql(version)?,
            timestamp: Timestamp {
                wall_ms: from_sql(wall_ms)?,
                logical,
                node: Hex64(node as u64),
            },
            payload,
        })
    })
    .transpose()
}
