//! The single writer: one thread owns the connection, takes every push
//! waiting in its queue, applies them in one transaction (a savepoint per
//! push, so one push's failure undoes it alone) and commits once: group
//! commit, one fsync for many requests. `seq` comes from this thread only,
//! so it is gapless and equals commit order.

use std::time::{SystemTime, UNIX_EPOCH};

use cpc_protocol::{Hex64, Limits, OpOutcome, Position, WireOp};
use rusqlite::{params, Connection};
use tokio::sync::{mpsc, oneshot, watch};

use super::apply::apply_batch;
use super::read::in_history;
use super::rules::{Head, Rules};
use super::schema::{from_sql, to_sql};
use super::StoreError;

/// Pushes committed together at most.
const MAX_GROUP: usize = 64;

/// What the writer is asked to do.
#[derive(Debug)]
pub(crate) enum Job {
    /// Apply a push (grouped with others into one commit).
    Push(PushJob),
    /// Compact the change log's prefix (docs/protocol.md §7.5).
    Compact(CompactJob),
}

/// A compaction step: rows committed before `before_ms` lose their
/// payload, as a prefix of the log, `max_rows` at most (so that pushes
/// wait for one short transaction, never for a whole compaction).
#[derive(Debug)]
pub(crate) struct CompactJob {
    pub before_ms: u64,
    pub max_rows: u64,
    /// The horizon after this step, and whether it stopped at `max_rows`.
    pub reply: oneshot::Sender<Result<(u64, bool), StoreError>>,
}

/// One push waiting for the writer.
#[derive(Debug)]
pub(crate) struct PushJob {
    pub client_id: String,
    pub ops: Vec<WireOp>,
    /// The client's highest seen position, checked against this history.
    pub known: Option<Position>,
    pub reply: oneshot::Sender<Result<(Vec<OpOutcome>, Position), StoreError>>,
    /// The store's faults (see `crate::faults`).
    #[cfg(feature = "test-faults")]
    pub faults: crate::faults::Faults,
}

/// What the writer thread owns.
pub(crate) struct Writer {
    pub conn: Connection,
    pub head: Head,
    pub store_id: String,
    pub limits: Limits,
    /// Told the head's seq after each commit: long polls wait on it.
    pub head_tx: watch::Sender<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Writer {
    /// Runs until every sender is gone.
    pub(crate) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut next = None;
        while let Some(first) = next.take().or_else(|| jobs.blocking_recv()) {
            let first = match first {
                Job::Push(push) => push,
                Job::Compact(job) => {
                    let result = self.compact(job.before_ms, job.max_rows);
                    let _ = job.reply.send(result);
                    continue;
                }
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(Job::Push(job)) => group.push(job),
                    Ok(other) => {
                        next = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        tracing::info!(target: "cpc_server", "store writer stopped");
    }

    fn commit_group(&mut self, group: Vec<PushJob>) {
        let started = std::time::Instant::now();
        let before = self.head;
        let now = now_ms();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return fail_all(group, &e.into());
        }
        let mut results: Vec<(PushJob, Result<Vec<OpOutcome>, StoreError>)> =
            Vec::with_capacity(group.len());
        for job in group {
            let result = self.apply_job(&job, now);
            results.push((job, result));
        }
        let committed = self
            .conn
            .execute(
                "UPDATE meta SET head_seq = ?1, head_fp = ?2 WHERE id = 1",
                params![to_sql(self.head.seq), to_sql(self.head.fp)],
            )
            .and_then(|_| self.conn.execute_batch("COMMIT"));
        if let Err(e) = committed {
            tracing::error!(target: "cpc_server", error = %e, "commit failed; nothing of the group applied");
            let _ = self.conn.execute_batch("ROLLBACK");
            self.head = before;
            let err = StoreError::from(e);
            for (job, _) in results {
                let _ = job.reply.send(Err(err.unavailable_copy()));
            }
            return;
        }
        let position = Position {
            store_id: self.store_id.clone(),
            seq: self.head.seq,
            fp: Hex64(self.head.fp),
        };
        self.head_tx.send_replace(self.head.seq);
        let pushes = results.len();
        for (job, result) in results {
            // A caller that gave up (its connection closed) is fine: the
            // commit stands and a replay answers already_applied.
            let _ = job.reply.send(result.map(|o| (o, position.clone())));
        }
        tracing::debug!(target: "cpc_server", pushes, seq = self.head.seq, elapsed_us = started.elapsed().as_micros() as u64, "group committed");
    }

    fn apply_job(&mut self, job: &PushJob, now: u64) -> Result<Vec<OpOutcome>, StoreError> {
        #[cfg(feature = "test-faults")]
        let check = !job.faults.ignore_known;
        #[cfg(not(feature = "test-faults"))]
        let check = true;
        if let Some(known) = job.known.as_ref().filter(|_| check) {
            self.check_known(known)?;
        }
        let saved = self.head;
        self.conn.execute_batch("SAVEPOINT push")?;
        let rules = Rules {
            limits: self.limits,
            #[cfg(feature = "test-faults")]
            faults: job.faults,
        };
        match apply_batch(
            &self.conn,
            &mut self.head,
            &job.client_id,
            &job.ops,
            &rules,
            now,
        ) {
            Ok(outcomes) => {
                self.conn.execute_batch("RELEASE push")?;
                Ok(outcomes)
            }
            Err(e) => {
                tracing::error!(target: "cpc_server", error = %e, "push failed; its changes are rolled back");
                self.head = saved;
                self.conn.execute_batch("ROLLBACK TO push; RELEASE push")?;
                Err(e)
            }
        }
    }
}

impl Writer {
    /// `HistoryDiverged` unless `known` is a position of this history: this
    /// store, at or below the head, with the same fingerprint at its seq
    /// (docs/protocol.md §8: a restore from a backup fails here even after
    /// the restored server took new writes). Checked by the writer, so the
    /// head it compares with is the one the push would be applied on.
    fn check_known(&self, known: &Position) -> Result<(), StoreError> {
        if in_history(&self.conn, &self.store_id, self.head.seq, known)? {
            return Ok(());
        }
        Err(StoreError::HistoryDiverged {
            head: Position {
                store_id: self.store_id.clone(),
                seq: self.head.seq,
                fp: Hex64(self.head.fp),
            },
        })
    }

    /// One compaction step: drops the payloads of the oldest rows committed
    /// before `before_ms`, in `seq` order, stopping at the first newer row
    /// (so the horizon is a prefix even if the wall clock stepped back).
    fn compact(&mut self, before_ms: u64, max_rows: u64) -> Result<(u64, bool), StoreError> {
        let tx = self.conn.transaction()?;
        let horizon: i64 =
            tx.query_row("SELECT compacted_through FROM meta WHERE id = 1", [], |r| {
                r.get(0)
            })?;
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        let mut last = horizon;
        let mut examined = 0u64;
        {
            let mut st = tx.prepare(
                "SELECT seq, committed_at_ms FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = st.query(params![horizon, to_sql(max_rows)])?;
            while let Some(r) = rows.next()? {
                let (seq, at): (i64, i64) = (r.get(0)?, r.get(1)?);
                if at >= before {
                    break;
                }
                last = seq;
                examined += 1;
            }
        }
        if last > horizon {
            tx.execute(
                "UPDATE changes SET payload = NULL WHERE seq > ?1 AND seq <= ?2",
                params![horizon, last],
            )?;
            tx.execute(
                "UPDATE meta SET compacted_through = ?1 WHERE id = 1",
                params![last],
            )?;
        }
        tx.commit()?;
        if last > horizon {
            tracing::info!(target: "cpc_server", compacted_through = last, rows = examined, "change log compacted");
        }
        Ok((from_sql(last)?, examined == max_rows))
    }
}

fn fail_all(group: Vec<PushJob>, e: &StoreError) {
    tracing::error!(target: "cpc_server", error = %e, "could not begin a transaction");
    for job in group {
        let _ = job.reply.send(Err(e.unavailable_copy()));
    }
}
