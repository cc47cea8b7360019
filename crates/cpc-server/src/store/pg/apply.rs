//! A push on PostgreSQL: one transaction at READ COMMITTED, the counter
//! row locked first (commit order is `seq` order), the rows the rules of
//! the shared rules (`cpc_remote::rules`) judge read in one query each (entity rows `FOR
//! UPDATE`), the rules run in memory, and what they decide written in one
//! multi-row statement per table: a dozen round trips per push whatever
//! its size, so the counter row is held briefly. And a compaction step.

use std::collections::HashMap;
use std::time::Duration;

use cpc_protocol::{Hex64, OpId, OpOutcome, Position, Timestamp, WireOp};
use deadpool_postgres::Transaction;
use tokio_postgres::IsolationLevel;

use super::super::schema::from_sql;
use super::super::StoreError;
use super::pg_err;
use cpc_remote::rules::{self, Batch, Current, Decision, Head, Rules, Seen};

/// One client's push, ready to run.
pub(crate) struct Push<'a> {
    pub store_id: &'a str,
    pub client_id: &'a str,
    pub ops: &'a [WireOp],
    pub known: Option<&'a Position>,
    /// The client's promise: it never sends an operation below this id
    /// again; its idempotency rows below it are pruned (§6.7).
    pub low_water: Option<OpId>,
    pub rules: &'a Rules,
    pub lock_timeout: Duration,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An entity's key as stored.
type Key = (String, String);

/// What a push writes, one column per vector (`UNNEST` turns them into
/// rows).
#[derive(Default)]
struct Writes {
    // cpc_changes and cpc_applied_ops: one row per applied operation.
    seq: Vec<i64>,
    fp: Vec<i64>,
    collection: Vec<String>,
    id: Vec<String>,
    version: Vec<i64>,
    deleted: Vec<bool>,
    kind: Vec<String>,
    payload: Vec<Option<Vec<u8>>>,
    wall_ms: Vec<i64>,
    logical: Vec<i64>,
    node: Vec<i64>,
    op_id: Vec<String>,
    content_hash: Vec<Vec<u8>>,
    /// cpc_entities: the last row of each entity, by index into the above.
    last_of: HashMap<Key, usize>,
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
            "SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{}ms'",
            self.lock_timeout.as_millis().max(1),
            super::STATEMENT_TIMEOUT.as_millis()
        ))
        .await
        .map_err(pg_err)?;
        // The counter row: every push takes turns here, so `seq` is
        // assigned and committed in one order across instances.
        let st = tx
            .prepare_cached("SELECT head_seq, head_fp FROM cpc_meta WHERE id = 1 FOR UPDATE")
            .await
            .map_err(pg_err)?;
        let row = tx.query_one(&st, &[]).await.map_err(pg_err)?;
        let before = Head {
            seq: from_sql(row.try_get(0).map_err(pg_err)?)?,
            fp: row.try_get::<_, i64>(1).map_err(pg_err)? as u64,
        };
        if let Some(known) = self.known {
            if !super::read::in_history(&tx, self.store_id, before.seq, known).await? {
                return Err(StoreError::HistoryDiverged {
                    head: self.position(before),
                });
            }
        }
        let now = now_ms() as i64;
        let st = tx
            .prepare_cached(
                "INSERT INTO cpc_clients (client_id, first_seen_ms, last_seen_ms) VALUES ($1, $2, $2)
                 ON CONFLICT (client_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(&st, &[&self.client_id, &now])
            .await
            .map_err(pg_err)?;
        let mut seen = self.seen(&tx).await?;
        let mut current = self.entities(&tx).await?;
        // The rules, in order, in memory: a later operation on an entity
        // sees what an earlier one of the batch wrote.
        let mut head = before;
        let mut writes = Writes::default();
        let mut outcomes = Vec::with_capacity(self.ops.len());
        let mut batch = Batch::new(self.ops.len());
        for op in self.ops {
            let key = (op.entity.collection.clone(), op.entity.id.clone());
            let outcome =
                match rules::before_load(op, seen.remove(&op.id.to_string()), &batch, self.rules) {
                    Some(outcome) => outcome,
                    None => match rules::decide(
                        op,
                        self.client_id,
                        current.get(&key).cloned(),
                        head,
                        &mut batch,
                        self.rules,
                    ) {
                        Decision::Answer(outcome) => outcome,
                        Decision::Apply(c) => {
                            let ts = op.timestamp;
                            current.insert(
                                key.clone(),
                                Current {
                                    version: c.version,
                                    timestamp: ts,
                                    payload: c.payload.map(<[u8]>::to_vec),
                                },
                            );
                            writes.last_of.insert(key, writes.seq.len());
                            writes.seq.push(c.seq as i64);
                            writes.fp.push(c.fp as i64);
                            writes.collection.push(op.entity.collection.clone());
                            writes.id.push(op.entity.id.clone());
                            writes.version.push(c.version as i64);
                            writes.deleted.push(c.deleted);
                            writes.kind.push(c.kind.clone());
                            writes.payload.push(c.payload.map(<[u8]>::to_vec));
                            writes.wall_ms.push(ts.wall_ms as i64);
                            writes.logical.push(i64::from(ts.logical));
                            writes.node.push(ts.node.0 as i64);
                            writes.op_id.push(c.op_text.clone());
                            writes.content_hash.push(c.content_hash.to_vec());
                            head = c.head();
                            c.applied()
                        }
                    },
                };
            batch.record(op, &outcome);
            outcomes.push(OpOutcome { op: op.id, outcome });
        }
        if head != before {
            self.write(&tx, &writes, now).await?;
            let st = tx
                .prepare_cached("UPDATE cpc_meta SET head_seq = $1, head_fp = $2 WHERE id = 1")
                .await
                .map_err(pg_err)?;
            tx.execute(&st, &[&(head.seq as i64), &(head.fp as i64)])
                .await
                .map_err(pg_err)?;
            // Delivered at commit, to every instance's listener: their
            // long polls wake.
            let st = tx
                .prepare_cached("SELECT pg_notify('cpc_head', $1)")
                .await
                .map_err(pg_err)?;
            tx.execute(&st, &[&head.seq.to_string()])
                .await
                .map_err(pg_err)?;
        }
        if let Some(low_water) = self.low_water {
            // In the push's transaction: only a push answered 200 prunes.
            // Canonical op ids are fixed-width Crockford text, compared
            // bytewise ("C"): they sort as the numbers they are.
            let st = tx
                .prepare_cached(
                    "DELETE FROM cpc_applied_ops WHERE client_id = $1 AND op_id < $2 COLLATE \"C\"",
                )
                .await
                .map_err(pg_err)?;
            tx.execute(&st, &[&self.client_id, &low_water.to_string()])
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

    /// The batch's operations applied before, by op id.
    async fn seen(&self, tx: &Transaction<'_>) -> Result<HashMap<String, Seen>, StoreError> {
        let ids: Vec<String> = self.ops.iter().map(|op| op.id.to_string()).collect();
        let st = tx
            .prepare_cached(
                "SELECT op_id, version, seq, content_hash FROM cpc_applied_ops
                 WHERE client_id = $1 AND op_id = ANY($2)",
            )
            .await
            .map_err(pg_err)?;
        let mut seen = HashMap::new();
        for r in tx
            .query(&st, &[&self.client_id, &ids])
            .await
            .map_err(pg_err)?
        {
            seen.insert(
                r.try_get::<_, String>(0).map_err(pg_err)?,
                Seen {
                    version: from_sql(r.try_get(1).map_err(pg_err)?)?,
                    seq: from_sql(r.try_get(2).map_err(pg_err)?)?,
                    content_hash: r.try_get(3).map_err(pg_err)?,
                },
            );
        }
        Ok(seen)
    }

    /// The batch's entities as stored, locked for the rest of the
    /// transaction (in key order: two pushes never wait on each other in a
    /// circle).
    async fn entities(&self, tx: &Transaction<'_>) -> Result<HashMap<Key, Current>, StoreError> {
        let (collections, ids): (Vec<&str>, Vec<&str>) = self
            .ops
            .iter()
            .map(|op| (op.entity.collection.as_str(), op.entity.id.as_str()))
            .unzip();
        let st = tx
            .prepare_cached(
                "SELECT e.collection, e.id, e.version, e.wall_ms, e.logical, e.node, e.payload
                 FROM cpc_entities e
                 JOIN UNNEST($1::text[], $2::text[]) AS k(collection, id)
                   ON e.collection = k.collection AND e.id = k.id
                 ORDER BY e.collection, e.id
                 FOR UPDATE OF e",
            )
            .await
            .map_err(pg_err)?;
        let mut current = HashMap::new();
        for r in tx.query(&st, &[&collections, &ids]).await.map_err(pg_err)? {
            let logical: i64 = r.try_get(4).map_err(pg_err)?;
            current.insert(
                (r.try_get(0).map_err(pg_err)?, r.try_get(1).map_err(pg_err)?),
                Current {
                    version: from_sql(r.try_get(2).map_err(pg_err)?)?,
                    timestamp: Timestamp {
                        wall_ms: from_sql(r.try_get(3).map_err(pg_err)?)?,
                        logical: u32::try_from(logical)
                            .map_err(|_| StoreError::Corrupt("a logical clock out of range"))?,
                        node: Hex64(r.try_get::<_, i64>(5).map_err(pg_err)? as u64),
                    },
                    payload: r.try_get(6).map_err(pg_err)?,
                },
            );
        }
        Ok(current)
    }

    /// Writes the applied operations: the change-log rows, the idempotency
    /// rows, each entity's last state; one statement per table.
    async fn write(&self, tx: &Transaction<'_>, w: &Writes, now: i64) -> Result<(), StoreError> {
        let st = tx
            .prepare_cached(
                "INSERT INTO cpc_changes (seq, fp, collection, id, version, deleted, kind, payload,
                   wall_ms, logical, node, origin_client, origin_op, committed_at_ms)
                 SELECT c.seq, c.fp, c.collection, c.id, c.version, c.deleted, c.kind, c.payload,
                   c.wall_ms, c.logical, c.node, $12, c.op_id, $13
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                   $6::boolean[], $7::text[], $8::bytea[], $9::bigint[], $10::bigint[],
                   $11::bigint[], $14::text[])
                   AS c(seq, fp, collection, id, version, deleted, kind, payload, wall_ms,
                        logical, node, op_id)",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(
            &st,
            &[
                &w.seq,
                &w.fp,
                &w.collection,
                &w.id,
                &w.version,
                &w.deleted,
                &w.kind,
                &w.payload,
                &w.wall_ms,
                &w.logical,
                &w.node,
                &self.client_id,
                &now,
                &w.op_id,
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
        let st = tx
            .prepare_cached(&format!(
                "INSERT INTO cpc_applied_ops (client_id, op_id, version, seq, content_hash)
                 SELECT $1, a.op_id, a.version, a.seq, a.content_hash
                 FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::bytea[])
                   AS a(op_id, version, seq, content_hash)
                 ON CONFLICT (client_id, op_id) {on_conflict}"
            ))
            .await
            .map_err(pg_err)?;
        let inserted = tx
            .execute(
                &st,
                &[
                    &self.client_id,
                    &w.op_id,
                    &w.version,
                    &w.seq,
                    &w.content_hash,
                ],
            )
            .await
            .map_err(pg_err)?;
        if inserted != w.op_id.len() as u64 {
            // Another transaction recorded one of these ops since we read:
            // cannot happen under the counter lock, but if it does, nothing
            // of this push commits and its retry reads the winner's row.
            return Err(StoreError::Busy);
        }
        // Each entity once (a statement may not update a row twice): its
        // last row of the batch.
        let mut last: Vec<usize> = w.last_of.values().copied().collect();
        last.sort_unstable();
        let pick = |v: &dyn Fn(usize) -> i64| last.iter().map(|&i| v(i)).collect::<Vec<i64>>();
        let collections: Vec<&str> = last.iter().map(|&i| w.collection[i].as_str()).collect();
        let ids: Vec<&str> = last.iter().map(|&i| w.id[i].as_str()).collect();
        let payloads: Vec<Option<&[u8]>> = last.iter().map(|&i| w.payload[i].as_deref()).collect();
        let deleted: Vec<bool> = last.iter().map(|&i| w.deleted[i]).collect();
        let st = tx
            .prepare_cached(
                "INSERT INTO cpc_entities (collection, id, version, wall_ms, logical, node, payload,
                   deleted, last_seq)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                   $5::bigint[], $6::bigint[], $7::bytea[], $8::boolean[], $9::bigint[])
                 ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version,
                   wall_ms = excluded.wall_ms, logical = excluded.logical, node = excluded.node,
                   payload = excluded.payload, deleted = excluded.deleted,
                   last_seq = excluded.last_seq",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(
            &st,
            &[
                &collections,
                &ids,
                &pick(&|i| w.version[i]),
                &pick(&|i| w.wall_ms[i]),
                &pick(&|i| w.logical[i]),
                &pick(&|i| w.node[i]),
                &payloads,
                &deleted,
                &pick(&|i| w.seq[i]),
            ],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }
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
        // Below the horizon a change is never served again (a cursor there
        // gets a snapshot): only its fingerprint is kept, for §8.
        tx.execute(
            "INSERT INTO cpc_history (seq, fp)
             SELECT seq, fp FROM cpc_changes WHERE seq > $1 AND seq <= $2
             ON CONFLICT (seq) DO NOTHING",
            &[&horizon, &last],
        )
        .await
        .map_err(pg_err)?;
        tx.execute(
            "DELETE FROM cpc_changes WHERE seq > $1 AND seq <= $2",
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
