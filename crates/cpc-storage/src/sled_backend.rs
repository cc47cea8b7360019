//! `SledStorage`: the queue on sled 0.34, made honestly durable.
//!
//! Layout: one sled database in `<queue dir>/sled` with the trees described
//! in [`tx::TREE_NAMES`]. The queue rules are the shared ones of
//! [`crate::rules`], run on a write set ([`tx::SledTx`]) that is committed
//! as one multi-tree sled transaction: record, indexes and counters
//! together, so a crash never leaves an index disagreeing with its record.
//! Claiming reads the first entries of the `due` index: O(batch · log n).
//!
//! Durability: sled's `flush()` only calls `sync_file_range`, which does not
//! survive a power loss; after it the backend fdatasyncs sled's files (see
//! [`durable`]). Every write, claims included, follows the configured
//! durability.

mod durable;
mod keys;
mod meta;
mod tx;

use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cpc_core::envelope::{self, RecordKind};
use cpc_core::{ConflictRecord, HlcTimestamp, Operation, OperationId};

use crate::api::{
    Amend, Claimed, Completion, ConflictCursor, ConflictFilter, DeferredConflict, Durability,
    EpochMillis, ListFilter, LoggedConflict, Page, QuarantineNotice, QuarantinedRecord,
    QueueOptions, QueueStats, QueueStorage, Respread, StoredOperation,
};
use crate::dir::{self, FaultSlot, InjectedFault, Poison, QueueDir};
use crate::error::{Result, StorageError};
use crate::notices::Notices;
use crate::rules::{self, Tx as _};
use durable::{Committer, DataFiles, WaitError};
use tx::{
    sled_error, QuarantineEntry, SledTx, StoreState, AGING, CONFLICTS, DEFERRED, DUE, ENTS, IDS,
    LEASES, META, METAS, META_CLOCK, META_STATE, OPS, QUARANTINE, REMOTES, TIMED, TREE_NAMES,
};

/// Default sled page cache: 64 MiB.
pub const DEFAULT_SLED_CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

/// Backend name written in the queue directory's format marker.
const BACKEND: &str = "sled";
/// Layout version of this backend's trees. 2: bookkeeping records carry
/// `claimed` (coalescing); a format-1 record still reads (as claimed),
/// but a format-1 build would refuse the new records, hence the bump.
const FORMAT_VERSION: u32 = 2;

/// How a write transaction's commit is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commit {
    /// As the configured [`Durability`] says.
    Durable,
    /// A claim: flushed into the OS page cache only (survives a process
    /// crash). Losing it to a power loss only resends the operation with
    /// one fewer counted attempt; the next durable commit syncs it too.
    Claim,
}

/// Options of a [`SledStorage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SledOptions {
    /// The queue options shared by every backend.
    pub queue: QueueOptions,
    /// sled's page cache capacity in bytes (default 64 MiB; sled's own
    /// default of 1 GiB is far too much for a client-side outbox).
    pub cache_capacity: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            queue: QueueOptions::default(),
            cache_capacity: DEFAULT_SLED_CACHE_CAPACITY,
        }
    }
}

impl From<QueueOptions> for SledOptions {
    fn from(queue: QueueOptions) -> Self {
        SledOptions {
            queue,
            ..SledOptions::default()
        }
    }
}

/// The operation queue on sled 0.34 (feature `sled`).
///
/// sled's `flush()` alone does not survive a power loss (it only calls
/// `sync_file_range`); this backend follows it with an fdatasync of sled's
/// files, so [`Durability::Immediate`] means what it says. Writes are
/// serialized by one writer lock; under [`Durability::GroupCommit`]
/// concurrent writers share one flush + fdatasync. See `docs/durability.md`
/// for what it costs, and why SQLite is the default backend.
///
/// A disk-full error or a failed sync poisons the handle (sled keeps the
/// failure as a global error and refuses further writes); reopen the store
/// once space is freed.
pub struct SledStorage {
    options: QueueOptions,
    db: sled::Db,
    trees: Vec<sled::Tree>,
    files: DataFiles,
    committer: Committer,
    /// The single writer lock; holds the store state (sequence, counters).
    write: Mutex<StoreState>,
    poison: Poison,
    fault: FaultSlot,
    /// The latest `now` seen, for the calls that take none.
    now_hint: AtomicU64,
    /// A claim was committed (flushed, not synced) since the last `flush`.
    claims_unsynced: std::sync::atomic::AtomicBool,
    /// What committed transactions quarantined, until the worker asks.
    notices: Notices,
    /// Bytes of the conflict log's entries (`None` until first counted).
    conflict_bytes: Mutex<Option<u64>>,
    // Dropped last: the lock is released after sled's files are closed.
    dir: QueueDir,
}

impl fmt::Debug for SledStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStorage")
            .field("dir", &self.dir.path())
            .field("durability", &self.options.durability)
            .field("poisoned", &self.poison.is_set())
            .finish_non_exhaustive()
    }
}

impl SledStorage {
    /// Opens (creating if needed) the queue in `dir` with the default sled
    /// cache.
    pub fn open(dir: impl AsRef<Path>, options: QueueOptions) -> Result<Self> {
        Self::open_with(dir, SledOptions::from(options))
    }

    /// Opens (creating if needed) the queue in `dir`. The directory is
    /// locked for the life of the handle (a second open gets
    /// [`StorageError::Locked`]); ended leases are returned to ready.
    pub fn open_with(dir: impl AsRef<Path>, options: SledOptions) -> Result<Self> {
        Self::open_with_at(dir, options, dir::system_now())
    }

    /// Opens the queue in `dir` with `now` as the recovery instant (leases
    /// ended at or before it return to ready).
    pub fn open_at(dir: impl AsRef<Path>, options: QueueOptions, now: EpochMillis) -> Result<Self> {
        Self::open_with_at(dir, SledOptions::from(options), now)
    }

    /// [`open_with`](Self::open_with) with an explicit recovery instant.
    pub fn open_with_at(
        dir: impl AsRef<Path>,
        options: SledOptions,
        now: EpochMillis,
    ) -> Result<Self> {
        options.queue.validate()?;
        let mut qdir = QueueDir::open(
            dir.as_ref(),
            BACKEND,
            FORMAT_VERSION,
            options.queue.allow_shared_directory,
        )?;
        let sled_dir = qdir.path().join("sled");
        let relaxed = matches!(options.queue.durability, Durability::Relaxed);
        let config = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(options.cache_capacity)
            // The durable modes sync explicitly; sled's background flusher
            // would only add fsyncs whose errors nobody sees. Relaxed keeps
            // it as its interval sync.
            .flush_every_ms(if relaxed { Some(500) } else { None });
        let db = open_sled(&config)?;
        dir::restrict_tree(&sled_dir)?;
        let mut trees = Vec::with_capacity(TREE_NAMES.len());
        for name in TREE_NAMES {
            trees.push(db.open_tree(name).map_err(|e| sled_error("open", e))?);
        }
        // After sled opened it: a refused store keeps its old marker.
        qdir.upgrade_marker(BACKEND, FORMAT_VERSION)?;
        let files = DataFiles::open(&sled_dir).map_err(|e| dir::io_error("open", e))?;
        let (state, fresh) = match trees[META]
            .get(META_STATE)
            .map_err(|e| sled_error("open", e))?
        {
            Some(raw) => (
                envelope::decode::<StoreState>(RecordKind::Meta, &raw, 64 * 1024).map_err(
                    |source| StorageError::Corrupt {
                        key: "meta/state".into(),
                        source,
                    },
                )?,
                false,
            ),
            None => (
                StoreState {
                    next_seq: 1,
                    ..StoreState::default()
                },
                true,
            ),
        };
        let store = SledStorage {
            options: options.queue,
            db,
            trees,
            files,
            committer: Committer::default(),
            write: Mutex::new(state),
            poison: Poison::default(),
            fault: FaultSlot::default(),
            now_hint: AtomicU64::new(0),
            claims_unsynced: std::sync::atomic::AtomicBool::new(false),
            notices: Notices::default(),
            conflict_bytes: Mutex::new(None),
            dir: qdir,
        };
        if fresh {
            store.write_tx(|tx| {
                tx.touch_state();
                Ok(())
            })?;
        }
        store.recover(now)?;
        tracing::debug!(
            pending = store.lock().counters().pending(),
            "sled queue opened"
        );
        Ok(store)
    }

    /// Number of durable syncs (flush + fdatasync) this handle ran; with
    /// group commit, fewer than the writes they covered.
    pub fn sync_count(&self) -> u64 {
        self.committer.syncs()
    }

    /// The queue directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The options the queue was opened with.
    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// Fault injection for tests: arms `fault` for the next durable commit.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: InjectedFault) {
        self.fault.arm(fault);
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        // Every mutation of the state happens after its commit succeeded,
        // so a panic elsewhere cannot leave it half written.
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seen(&self, now: EpochMillis) -> EpochMillis {
        self.now_hint.fetch_max(now, Ordering::Relaxed).max(now)
    }

    fn hint(&self) -> EpochMillis {
        self.now_hint.load(Ordering::Relaxed).max(1)
    }

    /// [`QueueStorage::clock_mark`] with a mark to raise to.
    fn raise_clock_mark(&self, mark: HlcTimestamp) -> Result<Option<HlcTimestamp>> {
        let bytes = envelope::encode(RecordKind::Meta, &mark).map_err(StorageError::Encode)?;
        self.write_tx(|tx| {
            let current = tx.get(META, META_CLOCK)?.and_then(|raw| {
                envelope::decode::<HlcTimestamp>(RecordKind::Meta, &raw, 1024).ok()
            });
            match current {
                Some(c) if c >= mark => Ok(Some(c)),
                _ => {
                    tx.put(META, META_CLOCK, bytes);
                    Ok(Some(mark))
                }
            }
        })
    }

    fn fail(&self, e: StorageError) -> StorageError {
        self.poison.set();
        self.committer.fail();
        e
    }

    /// Runs `f` on a write set under the writer lock, commits it as one
    /// sled transaction, then waits for the configured durability. Corrupt
    /// bookkeeping met on the way is quarantined afterwards.
    fn write_tx<T>(&self, f: impl FnOnce(&mut SledTx<'_>) -> Result<T>) -> Result<T> {
        self.write_tx_as(Commit::Durable, f)
    }

    fn write_tx_as<T>(
        &self,
        kind: Commit,
        f: impl FnOnce(&mut SledTx<'_>) -> Result<T>,
    ) -> Result<T> {
        self.poison.check()?;
        self.committer.begin();
        let mut guard = self.lock();
        let mut tx = SledTx::new(&self.trees, guard.clone(), self.options.max_payload);
        let out = match f(&mut tx) {
            Ok(v) => v,
            Err(e) => {
                drop(guard);
                self.committer.abandon();
                return Err(e);
            }
        };
        let corrupt = std::mem::take(&mut tx.corrupt_metas);
        if tx.is_empty() {
            drop(guard);
            self.committer.abandon();
        } else {
            match self.fault.take() {
                Some(InjectedFault::DiskFull) => {
                    drop(guard);
                    self.committer.abandon();
                    return Err(FaultSlot::error(InjectedFault::DiskFull, &self.poison));
                }
                Some(InjectedFault::SyncError) => self.files.inject_failures(1),
                _ => {}
            }
            if let Err(e) = tx.commit() {
                drop(guard);
                self.committer.abandon();
                // The in-memory trees may now disagree with the disk.
                return Err(self.fail(e));
            }
            *guard = tx.final_state();
            self.notices.extend(std::mem::take(tx.notices_mut()));
            let ticket = self.committer.ticket();
            drop(guard);
            match kind {
                Commit::Durable => self.make_durable(ticket)?,
                // A claim's ticket is still taken, so the next durable
                // commit's sync (of the whole sequential log) covers it.
                Commit::Claim => {
                    self.flush_only()?;
                    self.claims_unsynced.store(true, Ordering::SeqCst);
                }
            }
        }
        if !corrupt.is_empty() {
            self.quarantine_metas(corrupt)?;
        }
        Ok(out)
    }

    fn sync_all(&self) -> std::io::Result<()> {
        self.db.flush().map_err(|e| match e {
            sled::Error::Io(io) => io,
            other => std::io::Error::other(other),
        })?;
        self.files.sync()
    }

    /// Writes the log into the OS page cache without the extra syncs:
    /// survives a process crash, not a power loss.
    fn flush_only(&self) -> Result<()> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| self.fail(sled_error("flush", e)))
    }

    fn make_durable(&self, ticket: u64) -> Result<()> {
        let max_delay = match self.options.durability {
            Durability::Immediate => Duration::ZERO,
            Durability::GroupCommit { max_delay } => max_delay,
            // Into the OS page cache: survives a process crash.
            Durability::Relaxed => return self.flush_only(),
        };
        match self
            .committer
            .wait_durable(ticket, max_delay, || self.sync_all())
        {
            Ok(()) => Ok(()),
            Err(WaitError::Sync(io)) => Err(self.fail(dir::io_error("sync", io))),
            Err(WaitError::Failed) => Err(StorageError::Poisoned),
        }
    }

    /// The bytes of the conflict log's entries, once counted.
    fn conflict_bytes(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        // A plain number: a poisoned lock leaves nothing inconsistent.
        self.conflict_bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Quarantines records whose bookkeeping failed its checksum: the raw
    /// bytes of both halves are kept, every index entry pointing at them is
    /// removed (a scan: this path is rare) and the counters are recounted.
    fn quarantine_metas(&self, corrupt: Vec<tx::CorruptMeta>) -> Result<()> {
        let now = self.hint();
        self.write_tx(|tx| {
            for c in &corrupt {
                let key = keys::seq_key(c.seq);
                let Some(meta_raw) = tx.get(METAS, &key)? else {
                    continue;
                };
                let op_raw = tx.get(OPS, &key)?.unwrap_or_default();
                let mut raw = Vec::with_capacity(8 + meta_raw.len() + op_raw.len());
                raw.extend_from_slice(&u64::try_from(meta_raw.len()).unwrap_or(0).to_be_bytes());
                raw.extend_from_slice(&meta_raw);
                raw.extend_from_slice(&op_raw);
                tx.put_quarantine(rules::record_key(c.seq), c.reason.clone(), raw, now)?;
                for tree in [OPS, METAS, REMOTES, DEFERRED] {
                    tx.del(tree, &key);
                }
                self.drop_orphan_entries(tx, c.seq)?;
            }
            self.recount(tx)
        })
    }

    fn drop_orphan_entries(&self, tx: &mut SledTx<'_>, seq: u64) -> Result<()> {
        for tree in [DUE, AGING, TIMED, LEASES, ENTS] {
            for (k, _) in tx.scan(tree, &[], None, usize::MAX)? {
                if keys::trailing_seq(&k) == Some(seq) {
                    tx.del(tree, &k);
                }
            }
        }
        for (k, v) in tx.scan(IDS, &[], None, usize::MAX)? {
            if keys::read_u64(&v) == Some(seq) {
                tx.del(IDS, &k);
            }
        }
        Ok(())
    }

    fn recount(&self, tx: &mut SledTx<'_>) -> Result<()> {
        rules::recount(tx)?;
        tx.touch_state();
        Ok(())
    }
}

/// Opens sled. We hold the queue directory's lock, so a conflict on sled's
/// own file lock can only be a handle of this process that was just
/// dropped: sled's I/O threads release the log file a moment after the
/// `Db` is gone (later on a loaded machine: half a second was seen to be
/// too little under a CPU hog). Retry, bounded (about two seconds), in that
/// case.
fn open_sled(config: &sled::Config) -> Result<sled::Db> {
    const ATTEMPTS: u32 = 400;
    let mut attempt = 0;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if attempt < ATTEMPTS && e.to_string().contains("could not acquire lock") =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(sled_error("open", e)),
        }
    }
}

impl Drop for SledStorage {
    fn drop(&mut self) {
        // Relaxed writes are made durable on drop; in the durable modes this
        // syncs nothing new.
        if !self.poison.is_set() {
            if let Err(e) = self.sync_all() {
                tracing::error!(error = %e, "final sync of the sled queue failed");
            }
        }
    }
}

impl QueueStorage for SledStorage {
    fn max_payload(&self) -> usize {
        self.options.max_payload
    }

    fn amend(&self, change: Amend) -> Result<u64> {
        if let Some(now) = change.now() {
            self.seen(now);
        }
        self.write_tx(|tx| rules::amend(tx, &change, &self.options))
    }

    fn enqueue_batch(&self, ops: Vec<Operation>, now: EpochMillis) -> Result<Vec<u64>> {
        let now = self.seen(now);
        self.write_tx(|tx| {
            rules::check_enqueue(tx, &ops, &self.options)?;
            rules::enqueue(tx, &ops, now, &self.options)
        })
    }

    fn enqueue_coalesced(
        &self,
        ops: Vec<Operation>,
        now: EpochMillis,
        coalescer: std::sync::Arc<dyn cpc_core::Coalescer>,
    ) -> Result<Vec<crate::api::Enqueued>> {
        let now = self.seen(now);
        self.write_tx(|tx| {
            rules::check_enqueue(tx, &ops, &self.options)?;
            rules::enqueue_coalescing(tx, &ops, now, &self.options, &*coalescer)
        })
    }

    fn claim_ready(&self, now: EpochMillis, limit: usize) -> Result<Vec<Claimed>> {
        self.seen(now);
        self.write_tx_as(Commit::Claim, |tx| {
            rules::claim(tx, now, limit, &self.options)
        })
    }

    fn complete(&self, completions: &[Completion], now: EpochMillis) -> Result<()> {
        self.seen(now);
        rules::check_completions(completions, &self.options)?;
        self.write_tx(|tx| rules::complete(tx, completions, now, &self.options))
    }

    fn respread_waiting(
        &self,
        base: EpochMillis,
        spread_ms: u64,
        salt: u32,
        page: &Page,
    ) -> Result<Respread> {
        self.write_tx(|tx| rules::respread_waiting(tx, base, spread_ms, salt, page))
    }

    fn take_quarantine_notices(&self) -> Vec<QuarantineNotice> {
        self.notices.take()
    }

    fn stats(&self) -> Result<QueueStats> {
        self.poison.check()?;
        let mut stats = {
            let st = self.lock();
            st.counters().stats(st.quarantined)
        };
        self.write_tx(|tx| {
            rules::count_blocked(tx, &mut stats, &self.options)?;
            stats.acked_journal = rules::journal_len(tx)?;
            Ok(())
        })?;
        Ok(stats)
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<StoredOperation>> {
        let now = self.hint();
        self.write_tx(|tx| rules::list(tx, filter, now, &self.options))
    }

    fn get(&self, id: OperationId) -> Result<Option<StoredOperation>> {
        let now = self.hint();
        // A corrupt record is quarantined (a write) and reported as
        // `Corrupt`: keep the quarantine even though the call fails.
        let mut failure = None;
        let found = self.write_tx(|tx| match rules::get(tx, id, now, &self.options) {
            Ok(v) => Ok(v),
            Err(e @ StorageError::Corrupt { .. }) => {
                failure = Some(e);
                Ok(None)
            }
            Err(e) => Err(e),
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    fn recover(&self, now: EpochMillis) -> Result<u64> {
        self.seen(now);
        self.write_tx(|tx| rules::recover(tx, now, &self.options))
    }

    fn next_wakeup(&self) -> Result<Option<EpochMillis>> {
        self.poison.check()?;
        let state = self.lock().clone();
        SledTx::new(&self.trees, state, self.options.max_payload).min_timed()
    }

    fn list_deferred(&self, page: &Page) -> Result<Vec<DeferredConflict>> {
        let now = self.hint();
        self.write_tx(|tx| rules::list_deferred(tx, page, now, &self.options))
    }

    fn log_conflict(&self, entry: &ConflictRecord) -> Result<u64> {
        rules::check_conflict(entry, self.options.max_payload)?;
        let bytes = envelope::encode(RecordKind::Conflict, entry).map_err(StorageError::Encode)?;
        let max_entries = self.options.conflict_log_max_entries as u64;
        let max_bytes = self.options.conflict_log_max_bytes;
        let cutoff = rules::conflict_cutoff(entry.resolved_at_ms, &self.options);
        let mut total = match *self.conflict_bytes() {
            Some(total) => total,
            // Counted once per handle (a scan), then kept up to date.
            None => self.trees[CONFLICTS]
                .iter()
                .values()
                .try_fold(0u64, |sum, v| v.map(|v| sum + v.len() as u64))
                .map_err(|e| sled_error("scan", e))?,
        };
        let (pruned, total) = self.write_tx(|tx| {
            let n = tx.state.conflict_seq;
            tx.state.conflict_seq += 1;
            tx.state.conflict_count += 1;
            tx.touch_state();
            total += bytes.len() as u64;
            tx.put(CONFLICTS, &keys::time_key(entry.resolved_at_ms, n), bytes);
            // Prune the oldest entries: by age, count and bytes (the
            // newest, just written, always stays).
            let mut pruned = 0;
            while tx.state.conflict_count > 1 {
                let first = tx.scan(CONFLICTS, &[], None, 1)?;
                let Some((k, v)) = first.first() else {
                    break;
                };
                let at = keys::parse_time_key(k).map_or(0, |(at, _)| at);
                if at >= cutoff && tx.state.conflict_count <= max_entries && total <= max_bytes {
                    break;
                }
                total = total.saturating_sub(v.len() as u64);
                tx.del(CONFLICTS, k);
                tx.state.conflict_count = tx.state.conflict_count.saturating_sub(1);
                pruned += 1;
            }
            Ok((pruned, total))
        })?;
        *self.conflict_bytes() = Some(total);
        Ok(pruned)
    }

    fn conflict_entries(&self, filter: &ConflictFilter) -> Result<Vec<LoggedConflict>> {
        self.poison.check()?;
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut corrupt = Vec::new();
        // Keys are (resolved_at, n): the log reads newest first from just
        // below the cursor.
        let end = filter
            .before
            .map_or([0xff; 16], |c| keys::time_key(c.at, c.n));
        for item in self.trees[CONFLICTS].range(..end).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(|e| sled_error("scan", e))?;
            let (at, n) = keys::parse_time_key(&k).unwrap_or((0, 0));
            if filter.since.is_some_and(|since| at < since) {
                break;
            }
            match envelope::decode::<ConflictRecord>(
                RecordKind::Conflict,
                &v,
                rules::conflict_body_limit(self.options.max_payload),
            ) {
                Ok(c) => {
                    if filter.entity.as_ref().is_none_or(|e| *e == c.entity) {
                        out.push(LoggedConflict {
                            cursor: ConflictCursor { at, n },
                            entry: c,
                        });
                    }
                }
                Err(e) => corrupt.push((k.to_vec(), v.to_vec(), e)),
            }
        }
        if !corrupt.is_empty() {
            let now = self.hint();
            self.write_tx(|tx| {
                for (k, raw, e) in corrupt {
                    tx.del(CONFLICTS, &k);
                    tx.state.conflict_count = tx.state.conflict_count.saturating_sub(1);
                    let name = format!(
                        "conflict/{}",
                        keys::parse_time_key(&k).map_or(0, |(_, n)| n)
                    );
                    tx.put_quarantine(name, format!("conflict log entry: {e}"), raw, now)?;
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    fn list_quarantined(&self, page: &Page) -> Result<Vec<QuarantinedRecord>> {
        self.poison.check()?;
        let mut out = Vec::new();
        let start = match page.after {
            Some(after) => Bound::Excluded(keys::seq_key(after)),
            None => Bound::Unbounded,
        };
        let limit = page.limit.unwrap_or(usize::MAX);
        for item in self.trees[QUARANTINE].range((start, Bound::Unbounded)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(|e| sled_error("scan", e))?;
            let n = keys::read_u64(&k).unwrap_or(0);
            match envelope::decode::<QuarantineEntry>(RecordKind::Meta, &v, u32::MAX) {
                Ok(q) => out.push(QuarantinedRecord {
                    n,
                    key: q.key,
                    reason: q.reason,
                    raw: q.raw,
                    at: q.at,
                }),
                // The quarantine entry itself is damaged: report its bytes.
                Err(e) => out.push(QuarantinedRecord {
                    n,
                    key: format!("quarantine/{n}"),
                    reason: e.to_string(),
                    raw: v.to_vec(),
                    at: 0,
                }),
            }
        }
        Ok(out)
    }

    fn clock_mark(&self, raise_to: Option<HlcTimestamp>) -> Result<Option<HlcTimestamp>> {
        if let Some(mark) = raise_to {
            return self.raise_clock_mark(mark);
        }
        self.poison.check()?;
        let raw = self.trees[META]
            .get(META_CLOCK)
            .map_err(|e| sled_error("read", e))?;
        raw.map(|raw| {
            envelope::decode::<HlcTimestamp>(RecordKind::Meta, &raw, 1024).map_err(|source| {
                StorageError::Corrupt {
                    key: "meta/clock".into(),
                    source,
                }
            })
        })
        .transpose()
    }

    fn sync_state(&self, key: &str, set: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        crate::api::check_sync_state(key, set.as_ref())?;
        let name = format!("sync/{key}").into_bytes();
        if let Some(value) = set {
            let bytes = envelope::encode(RecordKind::Meta, &value).map_err(StorageError::Encode)?;
            return self.write_tx(|tx| {
                tx.put(META, &name, bytes);
                Ok(Some(value))
            });
        }
        self.poison.check()?;
        let raw = self.trees[META]
            .get(&name)
            .map_err(|e| sled_error("read", e))?;
        raw.map(|raw| {
            envelope::decode::<Vec<u8>>(
                RecordKind::Meta,
                &raw,
                crate::api::MAX_SYNC_STATE_BYTES as u32 + 16,
            )
            .map_err(|source| StorageError::Corrupt {
                key: format!("meta/sync/{key}"),
                source,
            })
        })
        .transpose()
    }

    fn flush(&self) -> Result<()> {
        self.poison.check()?;
        // Claims are flushed to the OS, not synced, under every durability.
        let claims = self.claims_unsynced.swap(false, Ordering::SeqCst);
        if claims || matches!(self.options.durability, Durability::Relaxed) {
            self.sync_all()
                .map_err(|e| self.fail(dir::io_error("sync", e)))?;
        }
        Ok(())
    }

    fn requeue_acked(
        &self,
        head_seq: u64,
        now: EpochMillis,
        limit: usize,
    ) -> Result<crate::Requeued> {
        let now = self.seen(now);
        self.write_tx(|tx| rules::requeue_acked(tx, head_seq, now, limit, &self.options))
    }

    fn acked(&self, page: &Page) -> Result<Vec<crate::AckedOp>> {
        self.write_tx(|tx| rules::list_acked(tx, page, &self.options))
    }
}

#[cfg(test)]
mod tests;
