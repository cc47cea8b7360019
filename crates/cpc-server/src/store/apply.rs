//! A push applied to the embedded store, inside the writer's transaction:
//! the shared driver (`cpc_remote::apply_batch`) judges each operation by
//! the shared rules; this file reads the rows they judge and writes what
//! they decide ([`PushStore`] over the writer's connection). Each applied
//! operation appends one change-log row with the next `seq` and the
//! running fingerprint.

use cpc_protocol::{EntityKey, Hex64, OpOutcome, Timestamp, WireOp};
use cpc_remote::rules::{Current, Head, NewChange, Rules, Seen};
use cpc_remote::PushStore;
use rusqlite::{params, Connection, OptionalExtension};

use super::schema::{from_sql, to_sql};
use super::StoreError;

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
    let mut rows = Rows {
        conn,
        now_ms,
        #[cfg(feature = "test-faults")]
        no_dedupe: rules.faults.no_dedupe,
    };
    cpc_remote::apply_batch(&mut rows, head, client_id, ops, rules)
}

/// The rows the rules judge, in the writer's transaction.
struct Rows<'c> {
    conn: &'c Connection,
    now_ms: u64,
    /// Fault `no_dedupe`: the second application replaces the record.
    #[cfg(feature = "test-faults")]
    no_dedupe: bool,
}

impl PushStore for Rows<'_> {
    type Error = StoreError;

    fn seen(&mut self, client_id: &str, op: &WireOp) -> Result<Option<Seen>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT version, seq, content_hash FROM applied_ops WHERE client_id = ?1 AND op_id = ?2",
            )?
            .query_row(params![client_id, op.id.to_string()], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get(2)?))
            })
            .optional()?
            .map(|(version, seq, content_hash)| {
                Ok(Seen {
                    version: from_sql(version)?,
                    seq: from_sql(seq)?,
                    content_hash,
                })
            })
            .transpose()
    }

    fn current(&mut self, entity: &EntityKey) -> Result<Option<Current>, StoreError> {
        load(self.conn, entity)
    }

    fn write(
        &mut self,
        client_id: &str,
        op: &WireOp,
        change: &NewChange<'_>,
    ) -> Result<(), StoreError> {
        #[cfg(feature = "test-faults")]
        let no_dedupe = self.no_dedupe;
        #[cfg(not(feature = "test-faults"))]
        let no_dedupe = false;
        write(self.conn, client_id, op, change, no_dedupe, self.now_ms)
    }

    #[cfg(feature = "test-faults")]
    fn record_as_final(
        &mut self,
        client_id: &str,
        op: &WireOp,
        _outcome: &cpc_protocol::Outcome,
    ) -> Result<(), StoreError> {
        record_as_final(self.conn, client_id, op)
    }
}

/// Writes an applied operation: the entity, the change-log row, the
/// idempotency row.
fn write(
    conn: &Connection,
    client_id: &str,
    op: &WireOp,
    c: &NewChange<'_>,
    no_dedupe: bool,
    now_ms: u64,
) -> Result<(), StoreError> {
    let ts = op.timestamp;
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
        to_sql(c.version),
        to_sql(ts.wall_ms),
        ts.logical,
        to_sql(ts.node.0),
        c.payload,
        c.deleted,
        to_sql(c.seq),
    ])?;
    conn.prepare_cached(
        "INSERT INTO changes (seq, fp, collection, id, version, deleted, kind, payload, wall_ms,
           logical, node, origin_client, origin_op, committed_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        to_sql(c.seq),
        to_sql(c.fp),
        op.entity.collection,
        op.entity.id,
        to_sql(c.version),
        c.deleted,
        c.kind,
        c.payload,
        to_sql(ts.wall_ms),
        ts.logical,
        to_sql(ts.node.0),
        client_id,
        c.op_text,
        to_sql(now_ms),
    ])?;
    // Fault `no_dedupe`: the second application replaces the record.
    let insert = if no_dedupe {
        "INSERT OR REPLACE INTO applied_ops (client_id, op_id, version, seq, content_hash) VALUES (?1, ?2, ?3, ?4, ?5)"
    } else {
        "INSERT INTO applied_ops (client_id, op_id, version, seq, content_hash) VALUES (?1, ?2, ?3, ?4, ?5)"
    };
    conn.prepare_cached(insert)?.execute(params![
        client_id,
        c.op_text,
        to_sql(c.version),
        to_sql(c.seq),
        c.content_hash.as_slice()
    ])?;
    Ok(())
}

/// Faults `record_conflicts` and `record_retry_later`: records a conflict
/// or a retry-later in the idempotency table as if it were final (the
/// entity's version and last seq standing for the result), the bug §6.4
/// forbids: a resend of the same id then answers `already_applied`.
#[cfg(feature = "test-faults")]
fn record_as_final(conn: &Connection, client_id: &str, op: &WireOp) -> Result<(), StoreError> {
    let (version, seq): (i64, i64) = conn
        .prepare_cached("SELECT version, last_seq FROM entities WHERE collection = ?1 AND id = ?2")?
        .query_row(params![op.entity.collection, op.entity.id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
        .unwrap_or((0, 0));
    let hash = cpc_remote::rules::content_hash(op);
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
