//! The single writer: one thread owns the connection, takes every push
//! waiting in its queue, applies them in one transaction (a savepoint per
//! push, so one push's failure undoes it alone) and commits once: group
//! commit, one fsync for many requests. `seq` comes from this thread only,
//! so it is gapless and equals commit order.

use std::time::{SystemTime, UNIX_EPOCH};

use cpc_protocol::{Hex64, Limits, OpOutcome, Position, WireOp};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::apply::{apply_batch, Head, Rules};
use super::schema::to_sql;
use super::StoreError;

/// Pushes committed together at most.
const MAX_GROUP: usize = 64;

/// One push waiting for the writer.
#[derive(Debug)]
pub(crate) struct Job {
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
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Writer {
    /// Runs until every sender is gone.
    pub(crate) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        tracing::info!(target: "cpc_server", "store writer stopped");
    }

    fn commit_group(&mut self, group: Vec<Job>) {
        let started = std::time::Instant::now();
        let before = self.head;
        let now = now_ms();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return fail_all(group, &e.into());
        }
        let mut results: Vec<(Job, Result<Vec<OpOutcome>, StoreError>)> =
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
        let pushes = results.len();
        for (job, result) in results {
            // A caller that gave up (its connection closed) is fine: the
            // commit stands and a replay answers already_applied.
            let _ = job.reply.send(result.map(|o| (o, position.clone())));
        }
        tracing::debug!(target: "cpc_server", pushes, seq = self.head.seq, elapsed_us = started.elapsed().as_micros() as u64, "group committed");
    }

    fn apply_job(&mut self, job: &Job, now: u64) -> Result<Vec<OpOutcome>, StoreError> {
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
        let here = if known.store_id != self.store_id || known.seq > self.head.seq {
            None
        } else if known.seq == 0 {
            Some(0)
        } else {
            self.conn
                .prepare_cached("SELECT fp FROM changes WHERE seq = ?1")?
                .query_row(params![to_sql(known.seq)], |r| r.get::<_, i64>(0))
                .optional()?
                .map(|fp| fp as u64)
        };
        if here == Some(known.fp.0) {
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
}

fn fail_all(group: Vec<Job>, e: &StoreError) {
    tracing::error!(target: "cpc_server", error = %e, "could not begin a transaction");
    for job in group {
        let _ = job.reply.send(Err(e.unavailable_copy()));
    }
}
