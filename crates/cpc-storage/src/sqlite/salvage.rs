//! Salvaging rows whose bookkeeping columns are damaged.
//!
//! A row whose `hot` or `ops` columns no longer convert (a state out of
//! range, text where an integer belongs, an id of the wrong length: a
//! damaged page, a stray manual edit) would fail every query that reads
//! it, and so every claim: the whole queue would stall on one row. When a
//! transaction fails that way, the store runs this salvage in a
//! transaction of its own: each damaged row is made readable again with
//! safe values, parked as a dead letter with the quarantine's reason (its
//! entity waits behind it under `BlockEntity`), its body kept in the
//! quarantine set, and the counters are recounted. The failed call returns
//! its error; the next one finds the queue working. Rare by nature, so it
//! scans the whole table.

use cpc_core::OperationId;
use rusqlite::params;

use super::{read_row, SqlTx, STATE_DEAD};
use crate::api::{EpochMillis, QuarantineNotice, QueueOptions};
use crate::error::{Result, StorageError};
use crate::rules::{self, Tx, QUARANTINED};

/// Every operation row with the columns `read_row` reads.
const SQL_ALL_ROWS: &str = concat!("SELECT ", meta_cols!(), from_ops!(), "ORDER BY o.seq");

/// Whether a failed call failed because a row did not convert (and not
/// because of I/O, locking or a full disk).
pub(super) fn is_row_damage(e: &StorageError) -> bool {
    match e {
        StorageError::Sqlite { source, .. } => matches!(
            source.downcast_ref::<rusqlite::Error>(),
            Some(
                rusqlite::Error::FromSqlConversionFailure(..)
                    | rusqlite::Error::InvalidColumnType(..)
                    | rusqlite::Error::IntegralValueOutOfRange(..)
            )
        ),
        _ => false,
    }
}

/// Repairs and parks every damaged row; returns how many.
pub(super) fn salvage(tx: &mut SqlTx<'_>, now: EpochMillis, options: &QueueOptions) -> Result<u64> {
    let damaged: Vec<(i64, String)> = tx
        .conn
        .prepare(SQL_ALL_ROWS)
        .and_then(|mut st| {
            st.query_map([], |r| {
                let seq: i64 = r.get(0)?;
                Ok((seq, read_row(r).err().map(|e| e.to_string())))
            })?
            .filter_map(|row| match row {
                Ok((seq, Some(error))) => Some(Ok((seq, error))),
                Ok((_, None)) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
        })
        .map_err(tx.err("salvage"))?;
    let mut entities = Vec::new();
    for (seq, error) in &damaged {
        let reason = format!("bookkeeping: {error}");
        tracing::warn!(seq, error = %error, "salvaging a row with damaged bookkeeping; its operation is parked as a dead letter");
        let (id, entity, body) = repair_row(tx, *seq, &reason)?;
        let key = format!(
            "{}/{id}",
            rules::record_key(u64::try_from(*seq).unwrap_or(0))
        );
        tx.quarantine_row(&key, &reason, &body, now)?;
        tx.notices().push(QuarantineNotice {
            id: Some(id),
            entity: cpc_core::EntityKey::from_key_bytes(&entity),
            reason,
        });
        entities.push(entity);
    }
    // The repaired rows have no head mark: give each entity its head back
    // (the dead op itself under BlockEntity, its next one under Skip).
    entities.sort();
    entities.dedup();
    for entity in &entities {
        rules::fix_head(tx, entity, None, options)?;
    }
    if !damaged.is_empty() {
        // The old counters counted the damaged rows in states they no
        // longer have.
        rules::recount(tx)?;
    }
    Ok(damaged.len() as u64)
}

/// Makes the row `seq` readable with safe values and parks it as dead;
/// returns its id (a stand-in if its own is unreadable), entity key and body.
fn repair_row(
    tx: &mut SqlTx<'_>,
    seq: i64,
    reason: &str,
) -> Result<(OperationId, Vec<u8>, Vec<u8>)> {
    let c = tx.conn;
    let err = tx.err("salvage");
    let (id, entity, body): (rusqlite::types::Value, Vec<u8>, rusqlite::types::Value) = c
        .query_row(
            "SELECT o.id, e.key, o.body FROM ops o JOIN entities e ON e.eid = o.eid WHERE o.seq = ?1",
            params![seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(&err)?;
    let id = match id {
        rusqlite::types::Value::Blob(b) => <[u8; 16]>::try_from(b.as_slice()).ok(),
        _ => None,
    };
    let id = match id {
        Some(bytes) => OperationId::from_be_bytes(bytes),
        None => {
            // Unreadable: a stand-in that cannot clash with a real id
            // (real ids start with a 48-bit wall time, never all ones).
            let mut bytes = [0xFF; 16];
            bytes[8..].copy_from_slice(&seq.to_be_bytes());
            c.execute(
                "UPDATE ops SET id = ?2 WHERE seq = ?1",
                params![seq, bytes.as_slice()],
            )
            .map_err(&err)?;
            OperationId::from_be_bytes(bytes)
        }
    };
    let body = match body {
        rusqlite::types::Value::Blob(b) => b,
        rusqlite::types::Value::Text(t) => t.into_bytes(),
        _ => Vec::new(),
    };
    c.execute(
        "UPDATE ops SET \
           priority = CASE WHEN typeof(priority) = 'integer' AND priority BETWEEN 0 AND 3 \
                      THEN priority ELSE 1 END, \
           enqueued_at = CASE WHEN typeof(enqueued_at) = 'integer' THEN enqueued_at ELSE 0 END, \
           payload_len = CASE WHEN typeof(payload_len) = 'integer' THEN payload_len ELSE 0 END, \
           nxt = CASE WHEN typeof(nxt) IN ('integer', 'null') THEN nxt ELSE NULL END \
         WHERE seq = ?1",
        params![seq],
    )
    .map_err(&err)?;
    let dead = format!("{QUARANTINED}{reason}");
    c.execute(
        "INSERT OR REPLACE INTO hot \
           (seq, state, wake_at, ready_at, attempts, last_error, dead_reason, hk, eff, aging, \
            claimed) \
         VALUES (?1, ?2, NULL, 0, 0, ?3, ?3, NULL, NULL, NULL, 1)",
        params![seq, STATE_DEAD, dead],
    )
    .map_err(&err)?;
    Ok((id, entity, body))
}
