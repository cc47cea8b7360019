//! The single writer: one thread owns the connection, takes every push
//! waiting in its queue, applies them in one transaction (a savepoint per
//! push, so one push's failure undoes it alone) and commits once: group
//! commit, one fsync for many requests. `seq` comes from this thread only,
//! so it is gapless and equals commit order.

use std::time::{SystemTime, UNIX_EPOCH};

use cpc_protocol::{Hex64, Limits, OpId, OpOutcome, Position, WireOp};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, watch};

use super::apply::apply_batch;
use super::read::in_history;
use super::schema::{from_sql, to_sql};
use super::StoreError;
use cpc_remote::rules::{Head, Rules};

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
    /// The client's promise: it never sends an operation below this id
    /// again; its idempotency rows below it are pruned (§6.7).
    pub low_water: Option<OpId>,
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
    /// Told the head's seq after each commit that moved it: long polls
    /// wait on it.
    pub head_tx: watch::Sender<u64>,
    /// The in-memory head may not be the file's (a group failed and the
    /// head could not be read back yet): read it before the next group.
    pub head_stale: bool,
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

    /// Applies a group of pushes in one transaction and answers them only
    /// once it committed.
    ///
    /// SQLite may roll the whole transaction back by itself when a
    /// statement fails (a full disk, an I/O error, out of memory: "might
    /// roll back the entire transaction", lang_transaction.html), dropping
    /// every savepoint. Nothing may then run as if the group were still
    /// open: the statements of the next pushes would each commit on their
    /// own (autocommit), at `seq`s computed from rows that were undone.
    /// Outside testing saw exactly that on a full disk: a push answered
    /// `503` and committed anyway, a gap and a broken `fp` chain, and then
    /// `UNIQUE constraint failed: changes.seq` for ever. So after any
    /// failure the writer asks SQLite whether the transaction is still
    /// there; if not, the whole group fails (every push answered `503`,
    /// none committed) and the head is read back from the file.
    fn commit_group(&mut self, group: Vec<PushJob>) {
        let started = std::time::Instant::now();
        let before = self.head;
        let now = now_ms();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return self.fail_group(group, e.into());
        }
        if self.head_stale {
            if let Err(e) = self.reload_head() {
                return self.fail_group(group, e);
            }
        }
        let mut results: Vec<(PushJob, Result<Vec<OpOutcome>, StoreError>)> =
            Vec::with_capacity(group.len());
        let mut rest = group.into_iter();
        while let Some(job) = rest.next() {
            match self.apply_job(&job, now) {
                Step::Done(result) => results.push((job, result)),
                Step::Lost(e) => {
                    let all = results
                        .into_iter()
                        .map(|(j, _)| j)
                        .chain(std::iter::once(job))
                        .chain(rest)
                        .collect();
                    return self.fail_group(all, e);
                }
            }
        }
        let jobs = |results: Vec<(PushJob, _)>| results.into_iter().map(|(j, _)| j).collect();
        if self.conn.is_autocommit() {
            // Belt and braces: never write the head outside the group.
            let lost = StoreError::Unavailable("the group's transaction was lost".into());
            return self.fail_group(jobs(results), lost);
        }
        let committed = self
            .conn
            .execute(
                "UPDATE meta SET head_seq = ?1, head_fp = ?2 WHERE id = 1",
                params![to_sql(self.head.seq), to_sql(self.head.fp)],
            )
            .and_then(|_| self.conn.execute_batch("COMMIT"));
        if let Err(e) = committed {
            // Nothing was answered yet: every push of the group fails.
            return self.fail_group(jobs(results), e.into());
        }
        let position = Position {
            store_id: self.store_id.clone(),
            seq: self.head.seq,
            fp: Hex64(self.head.fp),
        };
        // Long polls wake only when the head moved: a group that committed
        // nothing new (replays, conflicts, refusals, a 409) must not turn
        // every waiting long poll into an empty answer.
        if self.head != before {
            self.head_tx.send_replace(self.head.seq);
        }
        let pushes = results.len();
        for (job, result) in results {
            // A caller that gave up (its connection closed) is fine: the
            // commit stands and a replay answers already_applied.
            let _ = job.reply.send(result.map(|o| (o, position.clone())));
        }
        tracing::debug!(target: "cpc_server", pushes, seq = self.head.seq, elapsed_us = started.elapsed().as_micros() as u64, "group committed");
    }

    /// Fails every push of a group that did not commit, leaves no
    /// transaction open, and reads the head back from the file.
    fn fail_group(&mut self, jobs: Vec<PushJob>, cause: StoreError) {
        tracing::error!(target: "cpc_server", error = %cause, pushes = jobs.len(), "group failed; nothing of it committed");
        if !self.conn.is_autocommit() {
            // Still open (a COMMIT refused as busy): undo it ourselves.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.head_stale = true;
        if let Err(e) = self.reload_head() {
            // Read again at the next group, before anything uses it.
            tracing::error!(target: "cpc_server", error = %e, "could not read the head back; the next group will");
        }
        for job in jobs {
            let _ = job.reply.send(Err(cause.unavailable_copy()));
        }
    }

    /// The head as the file holds it, checked against the change log's last
    /// row (a store left inconsistent is refused, not written on).
    pub(crate) fn reload_head(&mut self) -> Result<(), StoreError> {
        self.head = stored_head(&self.conn)?;
        self.head_stale = false;
        Ok(())
    }

    /// The rules a job is judged by: this store's limits, and the job's
    /// faults (feature `test-faults`).
    fn rules(&self, #[allow(unused_variables)] job: &PushJob) -> Rules {
        #[allow(unused_mut)]
        let mut rules = Rules::new(self.limits);
        #[cfg(feature = "test-faults")]
        {
            rules.faults = job.faults;
        }
        rules
    }

    fn apply_job(&mut self, job: &PushJob, now: u64) -> Step {
        #[cfg(feature = "test-faults")]
        let check = !job.faults.ignore_known;
        #[cfg(not(feature = "test-faults"))]
        let check = true;
        if let Some(known) = job.known.as_ref().filter(|_| check) {
            if let Err(e) = self.check_known(known) {
                // A read can lose the transaction too (an I/O error).
                return self.after_failure(e);
            }
        }
        let saved = self.head;
        if let Err(e) = self.conn.execute_batch("SAVEPOINT push") {
            self.head = saved;
            return Step::Lost(e.into());
        }
        let rules = self.rules(job);
        match apply_batch(
            &self.conn,
            &mut self.head,
            &job.client_id,
            &job.ops,
            &rules,
            now,
        ) {
            Ok(outcomes) => match self
                .prune_below(job)
                .and_then(|()| Ok(self.conn.execute_batch("RELEASE push")?))
            {
                Ok(()) => Step::Done(Ok(outcomes)),
                // The group's transaction is rolled back whole.
                Err(e) => {
                    self.head = saved;
                    Step::Lost(e)
                }
            },
            Err(e) => {
                tracing::error!(target: "cpc_server", error = %e, "push failed; its changes are rolled back");
                self.head = saved;
                if self.conn.is_autocommit() {
                    return Step::Lost(e);
                }
                match self.conn.execute_batch("ROLLBACK TO push; RELEASE push") {
                    Ok(()) => Step::Done(Err(e)),
                    Err(undo) => Step::Lost(undo.into()),
                }
            }
        }
    }

    /// §6.7: the idempotency rows of the pushing client below its
    /// `low_water`, deleted in the push's own savepoint (so only a push
    /// answered 200 prunes).
    fn prune_below(&self, job: &PushJob) -> Result<(), StoreError> {
        let Some(low_water) = job.low_water else {
            return Ok(());
        };
        // Canonical op ids are fixed-width Crockford text: they sort as
        // the 128-bit numbers they are.
        let pruned = self
            .conn
            .prepare_cached("DELETE FROM applied_ops WHERE client_id = ?1 AND op_id < ?2")?
            .execute(params![job.client_id, low_water.to_string()])?;
        if pruned > 0 {
            tracing::debug!(target: "cpc_server", pruned, "idempotency rows below low_water pruned");
        }
        Ok(())
    }

    /// A push failed before its savepoint: its own error if the group's
    /// transaction still stands, the whole group's failure if not.
    fn after_failure(&self, e: StoreError) -> Step {
        if self.conn.is_autocommit() {
            Step::Lost(e)
        } else {
            Step::Done(Err(e))
        }
    }
}

/// What became of one push inside a group.
enum Step {
    /// Applied under its savepoint, or refused with that savepoint undone:
    /// the group goes on.
    Done(Result<Vec<OpOutcome>, StoreError>),
    /// The group's transaction is gone (or could not be kept whole): the
    /// whole group fails.
    Lost(StoreError),
}

/// The head the meta row holds, checked against the change log's last row.
pub(crate) fn stored_head(conn: &Connection) -> Result<Head, StoreError> {
    let (_, seq, fp) = super::schema::read_head(conn)?;
    let last: Option<(i64, i64)> = conn
        .query_row(
            "SELECT seq, fp FROM (
               SELECT seq, fp FROM (SELECT seq, fp FROM changes ORDER BY seq DESC LIMIT 1)
               UNION ALL
               SELECT seq, fp FROM (SELECT seq, fp FROM history ORDER BY seq DESC LIMIT 1))
             ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((last_seq, last_fp)) = last {
        if (from_sql(last_seq)?, last_fp as u64) != (seq, fp) {
            return Err(StoreError::Corrupt(
                "the stored head is not the change log's last change",
            ));
        }
    }
    Ok(Head { seq, fp })
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
            // Below the horizon a change is never served again (a cursor
            // there gets a snapshot): only its fingerprint is kept, for the
            // history check (§8).
            tx.execute(
                "INSERT OR REPLACE INTO history (seq, fp)
                 SELECT seq, fp FROM changes WHERE seq > ?1 AND seq <= ?2",
                params![horizon, last],
            )?;
            tx.execute(
                "DELETE FROM changes WHERE seq > ?1 AND seq <= ?2",
                params![horizon, last],
            )?;
            tx.execute(
                "UPDATE meta SET compacted_through = ?1 WHERE id = 1",
                params![last],
            )?;
        }
        tx.commit()?;
        if last > horizon {
            // Give the freed pages back (a no-op for a file created before
            // schema 3, which keeps them for reuse).
            // A passive checkpoint then moves the shrink into the file
            // (it never waits for readers).
            // Each step of the pragma frees one page: step it to the end.
            {
                let mut st = self.conn.prepare_cached("PRAGMA incremental_vacuum")?;
                let mut freed = st.query([])?;
                while freed.next()?.is_some() {}
            }
            let _: (i64, i64, i64) =
                self.conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?;
            tracing::info!(target: "cpc_server", compacted_through = last, rows = examined, "change log compacted");
        }
        Ok((from_sql(last)?, examined == max_rows))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use cpc_protocol::{EntityKey, Kind, OpId, Payload, Timestamp};
    use rusqlite::ErrorCode;

    fn op(n: u128, len: usize) -> WireOp {
        WireOp {
            id: OpId(n),
            entity: EntityKey {
                collection: "notes".into(),
                id: format!("n{n}"),
            },
            kind: Kind::Update,
            payload: Payload(vec![b'x'; len]),
            base_version: None,
            timestamp: Timestamp {
                wall_ms: 1_700_000_000_000,
                logical: 0,
                node: Hex64(1),
            },
        }
    }

    type Reply = oneshot::Receiver<Result<(Vec<OpOutcome>, Position), StoreError>>;

    fn push(ops: Vec<WireOp>) -> (PushJob, Reply) {
        let (reply, rx) = oneshot::channel();
        let job = PushJob {
            client_id: "dev-1".into(),
            ops,
            known: None,
            low_water: None,
            reply,
            #[cfg(feature = "test-faults")]
            faults: crate::faults::Faults::default(),
        };
        (job, rx)
    }

    fn writer(dir: &std::path::Path) -> (Writer, watch::Receiver<u64>) {
        let conn = super::super::schema::open(dir, 1, Some("store-1")).unwrap();
        let head = stored_head(&conn).unwrap();
        let (head_tx, head_rx) = watch::channel(head.seq);
        let limits = Limits {
            max_payload_bytes: 1 << 20,
            ..Limits::default()
        };
        let w = Writer {
            conn,
            head,
            store_id: "store-1".into(),
            limits,
            head_tx,
            head_stale: false,
        };
        (w, head_rx)
    }

    fn rows(w: &Writer) -> Vec<(u64, u64)> {
        let mut st = w
            .conn
            .prepare("SELECT seq, fp FROM changes ORDER BY seq")
            .unwrap();
        st.query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// Gapless from 1, and the meta row's head is the last row.
    fn consistent(w: &Writer) -> u64 {
        let rows = rows(w);
        for (i, (seq, _)) in rows.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "a gap in the change log: {rows:?}");
        }
        let head = stored_head(&w.conn).expect("meta agrees with the last row");
        assert_eq!(w.head, head, "the writer's head is the file's");
        head.seq
    }

    /// The database may grow by 16 pages more: a full disk, for SQLite.
    fn nearly_full(w: &Writer) {
        let pages: i64 = w
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        w.conn
            .pragma_update(None, "max_page_count", pages + 16)
            .unwrap();
    }

    #[test]
    fn sqlite_drops_the_whole_transaction_on_a_full_database() {
        // What the writer's check relies on: the statement that meets the
        // full file takes every earlier statement of the transaction with
        // it, and leaves no transaction open.
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = writer(dir.path());
        nearly_full(&w);
        w.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        w.conn.execute_batch("SAVEPOINT push").unwrap();
        let mut head = w.head;
        let rules = Rules::new(w.limits);
        apply_batch(&w.conn, &mut head, "dev-1", &[op(1, 10)], &rules, 1).unwrap();
        let big = apply_batch(&w.conn, &mut head, "dev-1", &[op(2, 512 * 1024)], &rules, 1);
        let Err(StoreError::Sqlite(e)) = big else {
            panic!("expected a full database: {big:?}");
        };
        assert_eq!(e.sqlite_error_code(), Some(ErrorCode::DiskFull));
        assert!(w.conn.is_autocommit(), "the transaction is gone");
    }

    #[test]
    fn a_full_disk_in_a_group_fails_the_whole_group_and_nothing_runs_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, head_rx) = writer(dir.path());
        let (first, rx) = push(vec![op(1, 10)]);
        w.commit_group(vec![first]);
        assert!(rx.blocking_recv().unwrap().is_ok());
        let before = w.head;
        assert_eq!(consistent(&w), 1);

        nearly_full(&w);
        // A group: two small pushes, one that meets the full file, and two
        // more after it (which, before, each committed on their own).
        let mut group = Vec::new();
        let mut replies = Vec::new();
        for (n, len) in [(2, 10), (3, 10), (4, 512 * 1024), (5, 10), (6, 10)] {
            let (job, rx) = push(vec![op(n, len)]);
            group.push(job);
            replies.push(rx);
        }
        w.commit_group(group);
        for (i, rx) in replies.into_iter().enumerate() {
            let answer = rx.blocking_recv().unwrap();
            assert!(
                matches!(answer, Err(StoreError::Unavailable(_))),
                "push {i} of the failed group: {answer:?}"
            );
        }
        assert!(w.conn.is_autocommit(), "no transaction left open");
        assert_eq!(w.head, before);
        assert_eq!(consistent(&w), 1, "nothing of the group committed");
        assert_eq!(*head_rx.borrow(), 1, "long polls not woken");

        // Room again: the next push lands right after the last change.
        w.conn
            .pragma_update(None, "max_page_count", 1_073_741_823i64)
            .unwrap();
        let (next, rx) = push(vec![op(7, 10)]);
        w.commit_group(vec![next]);
        let (_, position) = rx.blocking_recv().unwrap().unwrap();
        assert_eq!(position.seq, 2);
        assert_eq!(consistent(&w), 2);
        assert_eq!(*head_rx.borrow(), 2);

        // And after a restart.
        drop(w);
        let (mut w, _) = writer(dir.path());
        let (again, rx) = push(vec![op(8, 10)]);
        w.commit_group(vec![again]);
        assert_eq!(rx.blocking_recv().unwrap().unwrap().1.seq, 3);
        assert_eq!(consistent(&w), 3);
    }

    #[test]
    fn a_group_that_commits_nothing_new_wakes_no_long_poll() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, mut head_rx) = writer(dir.path());
        let (first, rx) = push(vec![op(1, 10)]);
        w.commit_group(vec![first]);
        rx.blocking_recv().unwrap().unwrap();
        head_rx.borrow_and_update();
        // A replay: already_applied, the head does not move.
        let (replay, rx) = push(vec![op(1, 10)]);
        w.commit_group(vec![replay]);
        rx.blocking_recv().unwrap().unwrap();
        assert!(!head_rx.has_changed().unwrap(), "woken for nothing");
    }

    #[test]
    fn a_store_whose_head_is_not_its_last_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = writer(dir.path());
        let (first, rx) = push(vec![op(1, 10), op(2, 10)]);
        w.commit_group(vec![first]);
        rx.blocking_recv().unwrap().unwrap();
        w.conn
            .execute("UPDATE meta SET head_seq = 1 WHERE id = 1", [])
            .unwrap();
        assert!(matches!(stored_head(&w.conn), Err(StoreError::Corrupt(_))));
    }
}
