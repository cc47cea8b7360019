//! A push on PostgreSQL: one transaction at READ COMMITTED, the counter
//! row locked first (commit order is `seq` order), entity rows locked for
//! the version check, the rules of `store/rules.rs` in between. And a
//! compaction step.

use std::time::Duration;

use cpc_protocol::{EntityKey, Hex64, OpOutcome, Outcome, Position, Timestamp, WireOp};
use deadpool_postgres::Transaction;
use tokio_postgres::IsolationLevel;

use super::super::rules::{self, Batch, Current, Decision, Head, NewChange, Rules, Seen};
use super::super::schema::from_sql;
use super::super::StoreError;
use super::pg_err;

/// One client's push, ready to run.
pub(crate) struct Push<'a> {
    pub store_id: &'a str,
    pub client_id: &'a str,
    pub ops: &'a [WireOp],
    pub known: Option<&'a Position>,
    pub rules: &'a Rules,
    pub lock_timeout: Duration,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Push<'_> {
    /// Applies the push and commits; `Busy` if a lock was not granted in
    /// time (nothing applied).
    pub(crate) async fn run(
        &self,
        client: &mut deadpool_postgres::Client,
    ) -> Result<(Vec<OpOutcome>, Position), StoreError> {
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(pg_err)?;
        // A whole number of milliseconds, from our own configuration.
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            self.lock_timeout.as_millis().max(1)
        ))
        .await
        .map_err(pg_err)?;
        // The counter row: every push takes turns here, so `seq` is
        // assigned and committed in one order across instances.
        let row = tx
            .query_one(
                "SELECT head_seq, head_fp FROM cpc_meta WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg_err)?;
        let before = Head {
            seq: from_sql(row.try_get(0).map_err(pg_err)?)?,
            fp: row.try_get::<_, i64>(1).map_err(pg_err)? as u64,
        };
        let mut head = before;
        if let Some(known) = self.known {
            if !super::read::in_history(&tx, self.store_id, head.seq, known).await? {
                return Err(StoreError::HistoryDiverged {
                    head: self.position(head),
                });
            }
        }
        let now = now_ms() as i64;
        tx.execute(
            "INSERT INTO cpc_clients (client_id, first_seen_ms, last_seen_ms) VALUES ($1, $2, $2)
             ON CONFLICT (client_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
            &[&self.client_id, &now],
        )
        .await
        .map_err(pg_err)?;
        let mut outcomes = Vec::with_capacity(self.ops.len());
        let mut batch = Batch::new(self.ops.len());
        for op in self.ops {
            let outcome = self.apply_one(&tx, &mut head, op, &mut batch, now).await?;
            batch.record(op, &outcome);
            outcomes.push(OpOutcome { op: op.id, outcome });
        }
        if head != before {
            tx.execute(
                "UPDATE cpc_meta SET head_seq = $1, head_fp = $2 WHERE id = 1",
                &[&(head.seq as i64), &(head.fp as i64)],
            )
            .await
            .map_err(pg_err)?;
            // Delivered at commit, to every instance's listener: their
            // long polls wake.
            tx.execute("SELECT pg_notify('cpc_head', $1)", &[&head.seq.to_string()])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok((outcomes, self.position(head)))
    }

    fn position(&self, head: Head) -> Position {
        Position {
            store_id: self.store_id.to_owned(),
            seq: head.seq,
            fp: Hex64(head.fp),
        }
    }

    async fn apply_one<'o>(
        &self,
        tx: &Transaction<'_>,
        head: &mut Head,
        op: &'o WireOp,
        batch: &mut Batch<'o>,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        let op_text = op.id.to_string();
        let seen = tx
            .query_opt(
                "SELECT version, seq, content_hash FROM cpc_applied_ops
                 WHERE client_id = $1 AND op_id = $2",
                &[&self.client_id, &op_text],
            )
            .await
            .map_err(pg_err)?
            .map(|r| {
                Ok::<_, StoreError>(Seen {
                    version: from_sql(r.try_get(0).map_err(pg_err)?)?,
                    seq: from_sql(r.try_get(1).map_err(pg_err)?)?,
                    content_hash: r.try_get(2).map_err(pg_err)?,
                })
            })
            .transpose()?;
        if let Some(outcome) = rules::before_load(op, seen, batch, self.rules) {
            return Ok(outcome);
        }
        let current = load(tx, &op.entity).await?;
        match rules::decide(op, self.client_id, current, *head, batch, self.rules) {
            Decision::Answer(outcome) => Ok(outcome),
            Decision::Apply(change) => {
                self.write(tx, op, &change, now).await?;
                *head = change.head();
                Ok(change.applied())
            }
        }
    }

    /// Writes an applied operation: the entity, the change-log row, the
    /// idempotency row.
    async fn write(
        &self,
        tx: &Transaction<'_>,
        op: &WireOp,
        c: &NewChange<'_>,
        now: i64,
    ) -> Result<(), StoreError> {
        let ts = op.timestamp;
        let (version, seq, fp) = (c.version as i64, c.seq as i64, c.fp as i64);
        let (wall_ms, logical, node) = (ts.wall_ms as i64, i64::from(ts.logical), ts.node.0 as i64);
        tx.execute(
            "INSERT INTO cpc_entities (collection, id, version, wall_ms, logical, node, payload, deleted, last_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version,
               wall_ms = excluded.wall_ms, logical = excluded.logical, node = excluded.node,
               payload = excluded.payload, deleted = excluded.deleted, last_seq = excluded.last_seq",
            &[
                &op.entity.collection,
                &op.entity.id,
                &version,
                &wall_ms,
                &logical,
                &node,
                &c.payload,
                &c.deleted,
                &seq,
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.execute(
            "INSERT INTO cpc_changes (seq, fp, collection, id, version, deleted, kind, payload,
               wall_ms, logical, node, origin_client, origin_op, committed_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                &seq,
                &fp,
                &op.entity.collection,
                &op.entity.id,
                &version,
                &c.deleted,
                &c.kind,
                &c.payload,
                &wall_ms,
                &logical,
                &node,
                &self.client_id,
                &c.op_text,
                &now,
            ],
        )
        .await
        .map_err(pg_err)?;
        // Fault `no_dedupe`: the second application replaces the record.
        #[cfg(feature = "test-faults")]
        let on_conflict = if self.rules.faults.no_dedupe {
            "DO UPDATE SET version = excluded.version, seq = excluded.seq"
        } else {
            "DO NOTHING"
        };
        #[cfg(not(feature = "test-faults"))]
        let on_conflict = "DO NOTHING";
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO cpc_applied_ops (client_id, op_id, version, seq, content_hash)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_id, op_id) {on_conflict}"
                ),
                &[
                    &self.client_id,
                    &c.op_text,
                    &version,
                    &seq,
                    &c.content_hash.as_slice(),
                ],
            )
            .await
            .map_err(pg_err)?;
        if inserted == 0 {
            // Another transaction recorded this op since we read: cannot
            // happen under the counter lock, but if it does, nothing of
            // this push commits and its retry reads the winner's row.
            return Err(StoreError::Busy);
        }
        Ok(())
    }
}

/// An entity as stored, locked for the rest of the transaction.
async fn load(tx: &Transaction<'_>, key: &EntityKey) -> Result<Option<Current>, StoreError> {
    let Some(r) = tx
        .query_opt(
            "SELECT version, wall_ms, logical, node, payload FROM cpc_entities
             WHERE collection = $1 AND id = $2 FOR UPDATE",
            &[&key.collection, &key.id],
        )
        .await
        .map_err(pg_err)?
    else {
        return Ok(None);
    };
    let logical: i64 = r.try_get(2).map_err(pg_err)?;
    Ok(Some(Current {
        version: from_sql(r.try_get(0).map_err(pg_err)?)?,
        timestamp: Timestamp {
            wall_ms: from_sql(r.try_get(1).map_err(pg_err)?)?,
            logical: u32::try_from(logical)
                .map_err(|_| StoreError::Corrupt("a logical clock out of range"))?,
            node: Hex64(r.try_get::<_, i64>(3).map_err(pg_err)? as u64),
        },
        payload: r.try_get(4).map_err(pg_err)?,
    }))
}

/// Rows one compaction step touches at most.
const COMPACT_STEP: i64 = 20_000;

/// One compaction step (as the embedded store's): the payloads of the
/// oldest rows committed before `before_ms` go, as a prefix of the log.
/// Answers the horizon and whether the step stopped at its row limit.
pub(crate) async fn compact_step(
    client: &mut deadpool_postgres::Client,
    before_ms: u64,
) -> Result<(u64, bool), StoreError> {
    let tx = client.transaction().await.map_err(pg_err)?;
    // The counter row: a step and a push do not interleave on the horizon.
    let horizon: i64 = tx
        .query_one(
            "SELECT compacted_through FROM cpc_meta WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(pg_err)?
        .try_get(0)
        .map_err(pg_err)?;
    let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            "SELECT seq, committed_at_ms FROM cpc_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&horizon, &COMPACT_STEP],
        )
        .await
        .map_err(pg_err)?;
    let mut last = horizon;
    let mut examined = 0i64;
    for r in &rows {
        let (seq, at): (i64, i64) = (r.try_get(0).map_err(pg_err)?, r.try_get(1).map_err(pg_err)?);
        if at >= before {
            break;
        }
        last = seq;
        examined += 1;
    }
    if last > horizon {
        tx.execute(
            "UPDATE cpc_changes SET payload = NULL WHERE seq > $1 AND seq <= $2",
            &[&horizon, &last],
        )
        .await
        .map_err(pg_err)?;
        tx.execute(
            "UPDATE cpc_meta SET compacted_through = $1 WHERE id = 1",
            &[&last],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    if last > horizon {
        tracing::info!(target: "cpc_server", compacted_through = last, rows = examined, "change log compacted");
    }
    Ok((from_sql(last)?, examined == COMPACT_STEP))
}
