//! The write path: the shared state behind a `SqliteStorage` handle, one
//! transaction per call, and the group commit that gathers concurrent
//! enqueues into one transaction and one sync.

use super::*;

/// What the handle and the background thread share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) main: Mutex<Main>,
    pub(super) group: Group,
    pub(super) bg: Mutex<BgState>,
    pub(super) bg_cv: Condvar,
    pub(super) poison: Poison,
    pub(super) faults: FaultSlot,
    pub(super) now_hint: AtomicU64,
    /// A claim was committed (without a sync) since the last `flush`.
    pub(super) claims_unsynced: std::sync::atomic::AtomicBool,
    /// What committed transactions quarantined, until the worker asks.
    pub(super) notices: Notices,
    pub(super) options: QueueOptions,
    pub(super) path: PathBuf,
    pub(super) db_path: PathBuf,
    pub(super) wal_path: PathBuf,
    // Last field: the directory lock is released only after the
    // connections above are closed.
    pub(super) _dir: QueueDir,
}

#[derive(Debug)]
pub(super) struct Main {
    pub(super) conn: Connection,
    /// Committed counters; a transaction works on a copy.
    pub(super) counters: Counters,
    /// What the `counters` row holds: behind `counters` by the appends of
    /// the plain enqueues since it was last written (see `lazy_counters`).
    pub(super) written: Counters,
}

/// The contexts of the transactions that only append operations (plain
/// enqueues: no coalescer). They leave the `counters` row alone: the row
/// plus the operations past its `next_seq` are the counters (format 6,
/// `open::load_counters`), and every other transaction rewrites the row.
/// One page less in each enqueue's commit.
const APPEND_ONLY: [&str; 2] = [ENQUEUE, GROUP_COMMIT];
/// The context of a plain enqueue transaction.
pub(super) const ENQUEUE: &str = "enqueue";
/// The context of a group commit of plain enqueues.
pub(super) const GROUP_COMMIT: &str = "group commit";

/// At most this many operations past the row's `next_seq` (what an open
/// reads to rebuild the counters): the row is rewritten once that many were
/// appended without it.
const MAX_LAG: u64 = 1024;

/// The context of an enqueue transaction, plain or through a coalescer.
pub(super) fn enqueue_context(coalescing: bool) -> &'static str {
    if coalescing {
        "enqueue (coalescing)"
    } else {
        ENQUEUE
    }
}

/// Whether `next` (after an append-only transaction) may leave the row at
/// `written`: `next` is `current` plus ready operations appended at the
/// end, and the row lags by fewer than [`MAX_LAG`] operations.
fn lazy_counters(context: &str, current: &Counters, next: &Counters, written: &Counters) -> bool {
    if !APPEND_ONLY.contains(&context) {
        return false;
    }
    let appended = next.next_seq.saturating_sub(current.next_seq);
    let by_priority = |c: &Counters| c.pending_by_priority.iter().sum::<u64>();
    let appends_only = next.ready == current.ready + appended
        && (next.in_flight, next.waiting, next.dead, next.deferred)
            == (
                current.in_flight,
                current.waiting,
                current.dead,
                current.deferred,
            )
        && by_priority(next) == by_priority(current) + appended
        && next.pending_bytes >= current.pending_bytes;
    appends_only && next.next_seq.saturating_sub(written.next_seq) < MAX_LAG
}

#[derive(Debug, Default)]
pub(super) struct BgState {
    pub(super) commits: u64,
    pub(super) empty: bool,
    pub(super) dirty: bool,
    pub(super) stop: bool,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected state is consistent between statements (SQLite rolls
    // back a transaction dropped by a panic), so a poisoned mutex is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn lock_main(&self) -> MutexGuard<'_, Main> {
        lock(&self.main)
    }

    pub(super) fn seen(&self, now: EpochMillis) -> EpochMillis {
        self.now_hint.fetch_max(now, Ordering::Relaxed);
        now
    }

    pub(super) fn hint(&self) -> EpochMillis {
        self.now_hint.load(Ordering::Relaxed)
    }

    /// Runs `f` in one IMMEDIATE transaction and commits it.
    pub(super) fn write<R>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut SqlTx<'_>) -> Result<R>,
    ) -> Result<R> {
        self.poison.check()?;
        let mut main = self.lock_main();
        self.poison.check()?;
        let r = self.run(&mut main, context, f);
        drop(main);
        r
    }

    /// Runs a claim transaction: under `Immediate` and `GroupCommit` its
    /// commit is crash-safe but not fsynced (`synchronous=NORMAL` for this
    /// one transaction, `FULL` restored afterwards, on every path).
    ///
    /// The lease and the incremented attempt count are what "a crash while
    /// sending never resets an operation's retry history" protects; they
    /// survive a process crash (`kill -9`) because the WAL frames are in the
    /// OS page cache. Only an OS crash or power loss before the next durable
    /// commit can lose them, and then the operation is merely sent again
    /// with one fewer counted attempt, which at-least-once delivery already
    /// covers. No submitted data is at risk: enqueues and completions stay
    /// fsynced, and since the WAL is sequential the next `FULL` commit's
    /// fsync also makes the earlier claim frames durable. Under `Relaxed`
    /// every commit is `NORMAL` already.
    pub(super) fn write_claim<R>(&self, f: impl FnOnce(&mut SqlTx<'_>) -> Result<R>) -> Result<R> {
        const CONTEXT: &str = "claim";
        if self.options.durability == Durability::Relaxed {
            return self.write(CONTEXT, f);
        }
        self.poison.check()?;
        let mut main = self.lock_main();
        self.poison.check()?;
        let set = |main: &Main, level: &str| {
            let r = main
                .conn
                .pragma_update(None, "synchronous", level)
                .map_err(|e| classify(&self.path, "set synchronous", e));
            // A connection left at NORMAL would acknowledge unsynced
            // enqueues: a failure to restore FULL must stop the handle.
            if r.is_err() {
                self.poison.set();
            }
            r
        };
        set(&main, "NORMAL")?;
        let r = self.run(&mut main, CONTEXT, f);
        let restored = set(&main, "FULL");
        drop(main);
        let v = r?;
        self.claims_unsynced.store(true, Ordering::SeqCst);
        restored?;
        Ok(v)
    }

    /// Runs a read-only `f` (no commit needed, nothing written).
    pub(super) fn read<R>(&self, f: impl FnOnce(&mut SqlTx<'_>) -> Result<R>) -> Result<R> {
        self.poison.check()?;
        let mut main = self.lock_main();
        let Main { conn, counters, .. } = &mut *main;
        let mut copy = *counters;
        let limit = rules::body_limit(self.options.max_payload);
        let mut tx = SqlTx::new(conn, &self.path, &mut copy, limit);
        let r = f(&mut tx);
        self.poison_on_io(r)
    }

    pub(super) fn run<R>(
        &self,
        main: &mut Main,
        context: &'static str,
        f: impl FnOnce(&mut SqlTx<'_>) -> Result<R>,
    ) -> Result<R> {
        let Main {
            conn,
            counters,
            written,
        } = main;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&self.path, context, e));
        let tx = self.poison_on_io(tx)?;
        let mut next = *counters;
        let mut rewritten = false;
        let (r, notices) = {
            let limit = rules::body_limit(self.options.max_payload);
            let mut stx = SqlTx::new(&tx, &self.path, &mut next, limit);
            let r = f(&mut stx);
            let notices = std::mem::take(&mut stx.notices);
            let r = r.and_then(|v| {
                if next != *written && !lazy_counters(context, counters, &next, written) {
                    write_counters(&tx, &self.path, &next)?;
                    rewritten = true;
                }
                Ok(v)
            });
            (r, notices)
        };
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                // Dropping the transaction rolls it back.
                drop(tx);
                if salvage::is_row_damage(&e) && context != SALVAGE {
                    // One damaged row must not stall every call: park it
                    // (see `salvage`); this call fails, the next works.
                    self.salvage(main, context);
                }
                return self.poison_on_io(Err(e));
            }
        };
        if let Some(fault) = self.faults.take() {
            drop(tx);
            return Err(FaultSlot::error(fault, &self.poison));
        }
        let committed = tx.commit().map_err(|e| classify(&self.path, "commit", e));
        self.poison_on_io(committed)?;
        self.notices.extend(notices);
        let changed = next != *counters;
        *counters = next;
        if rewritten {
            *written = next;
        }
        if changed {
            self.after_commit(counters);
        }
        Ok(v)
    }

    /// Parks the rows whose bookkeeping no longer converts (see
    /// `salvage`). Not generic, so `run` calling it does not recurse
    /// through instantiations.
    pub(super) fn salvage(&self, main: &mut Main, context: &'static str) {
        let now = self.hint();
        match self.run(main, SALVAGE, |tx| salvage::salvage(tx, now, &self.options)) {
            Ok(rows) => tracing::warn!(rows, context, "rows with damaged bookkeeping parked"),
            Err(e) => tracing::error!(error = %e, context, "salvaging damaged rows failed"),
        }
    }

    /// An I/O error inside a transaction poisons the handle: after a failed
    /// write or sync SQLite's view and the disk's may differ, and a retried
    /// fsync may "succeed" with the pages gone.
    pub(super) fn poison_on_io<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(StorageError::Io { .. }) = &r {
            self.poison.set();
        }
        r
    }

    pub(super) fn after_commit(&self, counters: &Counters) {
        let wake = {
            let mut bg = lock(&self.bg);
            bg.commits += 1;
            bg.dirty = true;
            let was_empty = bg.empty;
            bg.empty = counters.stored() == 0;
            (bg.empty && !was_empty) || bg.commits >= CHECKPOINT_AFTER_COMMITS
        };
        if wake {
            self.bg_cv.notify_all();
        }
    }

    /// fdatasyncs the WAL (Relaxed mode): everything committed so far
    /// becomes durable.
    pub(super) fn sync_wal(&self) -> Result<()> {
        let r = match File::open(&self.wal_path) {
            Ok(f) => f.sync_data(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        r.map_err(|e| {
            self.poison.set();
            dir::io_error("sync wal", e)
        })
    }

    /// Group commit: the first writer to find no leader leads; it waits up
    /// to `max_delay` for as many writers as joined its previous group, then
    /// commits every queued request in one transaction and one sync.
    ///
    /// Each writer sleeps on its own slot and is woken once, with its
    /// result or with the leadership: with one shared condition variable
    /// every arrival and every hand-back woke all waiting writers, and
    /// with 64 writers on 2 cores those wake-ups cost more than the commit.
    pub(super) fn group_enqueue(
        &self,
        ops: Vec<Operation>,
        now: EpochMillis,
        coalescer: Option<Arc<dyn cpc_core::Coalescer>>,
        max_delay: Duration,
    ) -> Result<Vec<Enqueued>> {
        let g = &self.group;
        let slot = Arc::new(Slot::default());
        let mut st = lock(&g.state);
        st.queue.push(Request {
            ops,
            now,
            coalescer,
            slot: Arc::clone(&slot),
        });
        if st.leading {
            if st.leader_waiting {
                g.leader_cv.notify_one();
            }
            drop(st);
            match slot.wait() {
                Handed::Result(r) => return r,
                Handed::Lead => st = lock(&g.state),
            }
        } else {
            st.leading = true;
        }
        // Leading: `st.leading` is ours until it is handed on or cleared.
        loop {
            let deadline = Instant::now() + max_delay;
            let want = st.last_group.clamp(1, MAX_GROUP);
            while st.queue.len() < want {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                st.leader_waiting = true;
                st = g
                    .leader_cv
                    .wait_timeout(st, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                st.leader_waiting = false;
            }
            let take = st.queue.len().min(MAX_GROUP);
            let batch: Vec<Request> = st.queue.drain(..take).collect();
            st.last_group = batch.len();
            drop(st);
            let results = self.commit_group(&batch);
            let mut mine = None;
            for (req, r) in batch.into_iter().zip(results) {
                if Arc::ptr_eq(&req.slot, &slot) {
                    mine = Some(r);
                } else {
                    req.slot.hand(Handed::Result(r));
                }
            }
            st = lock(&g.state);
            // The leader's request is in its first group unless more than
            // MAX_GROUP were queued before it: then it leads on.
            if let Some(r) = mine {
                match st.queue.first() {
                    Some(next) => next.slot.hand(Handed::Lead),
                    None => st.leading = false,
                }
                return r;
            }
        }
    }

    /// Commits `batch` in one transaction; one result per request, in order.
    pub(super) fn commit_group(&self, batch: &[Request]) -> Vec<Result<Vec<Enqueued>>> {
        if let Err(e) = self.poison.check() {
            return batch.iter().map(|_| Err(replicate(&e))).collect();
        }
        let mut results: Vec<Result<Vec<Enqueued>>> = Vec::with_capacity(batch.len());
        let mut main = self.lock_main();
        let plain = batch.iter().all(|req| req.coalescer.is_none());
        let context = if plain {
            GROUP_COMMIT
        } else {
            "group commit (coalescing)"
        };
        let outcome = self.run(&mut main, context, |tx| {
            for req in batch {
                // Refusals (duplicate, size) are per request and happen
                // before any write; a failed write fails the whole group.
                match rules::check_enqueue(tx, &req.ops, &self.options) {
                    Ok(()) => {
                        let done = store(
                            tx,
                            &req.ops,
                            req.now,
                            req.coalescer.as_deref(),
                            &self.options,
                        )?;
                        results.push(Ok(done));
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
            Ok(())
        });
        drop(main);
        match outcome {
            Ok(()) => results,
            Err(e) => {
                let mut first = Some(e);
                batch
                    .iter()
                    .map(|_| {
                        Err(match first.take() {
                            Some(e) => e,
                            None if self.poison.is_set() => StorageError::Poisoned,
                            None => StorageError::Io {
                                context: "group commit",
                                source: io::Error::other("the group's commit failed"),
                            },
                        })
                    })
                    .collect()
            }
        }
    }
}

/// A copy of a commit failure for the other members of a failed group.
pub(super) fn replicate(e: &StorageError) -> StorageError {
    match e {
        StorageError::Poisoned => StorageError::Poisoned,
        StorageError::StorageFull(src) => {
            StorageError::StorageFull(io::Error::new(io::ErrorKind::StorageFull, src.to_string()))
        }
        other => StorageError::Io {
            context: "group commit",
            source: io::Error::other(other.to_string()),
        },
    }
}

#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) state: Mutex<GroupState>,
    /// Wakes a leader waiting for its group to fill.
    pub(super) leader_cv: Condvar,
}

#[derive(Debug, Default)]
pub(super) struct GroupState {
    pub(super) queue: Vec<Request>,
    pub(super) leading: bool,
    pub(super) leader_waiting: bool,
    pub(super) last_group: usize,
}

#[derive(Debug)]
pub(super) struct Request {
    pub(super) ops: Vec<Operation>,
    pub(super) now: EpochMillis,
    pub(super) coalescer: Option<Arc<dyn cpc_core::Coalescer>>,
    pub(super) slot: Arc<Slot>,
}

/// Stores checked operations, through the coalescer when there is one.
pub(super) fn store(
    tx: &mut SqlTx<'_>,
    ops: &[Operation],
    now: EpochMillis,
    coalescer: Option<&dyn cpc_core::Coalescer>,
    options: &QueueOptions,
) -> Result<Vec<Enqueued>> {
    match coalescer {
        Some(c) => rules::enqueue_coalescing(tx, ops, now, options, c),
        None => Ok(rules::enqueue(tx, ops, now, options)?
            .into_iter()
            .map(|seq| Enqueued::Stored { seq })
            .collect()),
    }
}

/// What a waiting writer is woken with.
#[derive(Debug)]
pub(super) enum Handed {
    /// Its request was committed (or refused).
    Result(Result<Vec<Enqueued>>),
    /// It leads the next group (its request is first in the queue).
    Lead,
}

/// Where one waiting writer sleeps until it is handed something.
#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) handed: Mutex<Option<Handed>>,
    pub(super) cv: Condvar,
}

impl Slot {
    pub(super) fn hand(&self, h: Handed) {
        *lock(&self.handed) = Some(h);
        self.cv.notify_one();
    }

    pub(super) fn wait(&self) -> Handed {
        let mut handed = lock(&self.handed);
        loop {
            if let Some(h) = handed.take() {
                return h;
            }
            handed = self.cv.wait(handed).unwrap_or_else(|e| e.into_inner());
        }
    }
}
