//! Honest durability for sled: its `flush()` writes the log with
//! `sync_file_range`, which pushes data pages to the device but neither the
//! file's metadata nor the device cache, so a power loss can still take
//! "flushed" writes. After every flush the backend fdatasyncs the data files
//! itself, and fsyncs a directory whenever an entry appeared in it.
//!
//! [`Committer`] shares one flush + fdatasync among concurrent writers
//! (group commit): each writer takes a ticket after its transaction and
//! returns once a sync that started after its ticket has finished.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The files sled writes, and which of them are known to be synced.
#[derive(Debug)]
pub(super) struct DataFiles {
    dir: PathBuf,
    /// sled's log file, opened read-only for the life of the handle: an fd
    /// opened before a writeback error still reports it (Linux errseq), even
    /// if sled's own flusher consumed the error on its fd.
    log: File,
    /// Names seen in the sled directory and in `blobs/` at the last sync.
    known: Mutex<Known>,
    /// Test hook: fail this many upcoming syncs with an injected error.
    inject_failures: AtomicU32,
}

#[derive(Debug, Default)]
struct Known {
    top: BTreeSet<OsString>,
    blobs: BTreeSet<OsString>,
}

impl DataFiles {
    /// Opens the log read-only and makes the directory tree durable once, so
    /// a store created just before a power loss still opens afterwards.
    pub(super) fn open(dir: &Path) -> io::Result<Self> {
        let log = File::open(dir.join("db"))?;
        let files = DataFiles {
            dir: dir.to_path_buf(),
            log,
            known: Mutex::new(Known::default()),
            inject_failures: AtomicU32::new(0),
        };
        files.sync()?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(files)
    }

    /// fdatasyncs everything sled may have written since the last call:
    /// new blob files (immutable once written) first, then their directory,
    /// then the log, so no synced log entry points at an unsynced blob.
    pub(super) fn sync(&self) -> io::Result<()> {
        if self
            .inject_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::other("injected sync failure"));
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let blob_dir = self.dir.join("blobs");
        let blobs = list_dir(&blob_dir)?;
        let mut new_blob = false;
        for name in blobs.difference(&known.blobs) {
            // A blob may be garbage-collected between listing and opening.
            match File::open(blob_dir.join(name)) {
                Ok(f) => f.sync_data()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            new_blob = true;
        }
        if new_blob {
            sync_dir(&blob_dir)?;
        }
        known.blobs = blobs;
        let top = list_dir(&self.dir)?;
        if top.difference(&known.top).next().is_some() {
            // New snapshot or config files: their directory entries must
            // survive too.
            for name in top.difference(&known.top) {
                if name.to_string_lossy().starts_with("snap.") {
                    if let Ok(f) = File::open(self.dir.join(name)) {
                        f.sync_data()?;
                    }
                }
            }
            sync_dir(&self.dir)?;
        }
        known.top = top;
        self.log.sync_data()
    }

    /// Makes the next `n` syncs fail (fault injection).
    pub(super) fn inject_failures(&self, n: u32) {
        self.inject_failures.store(n, Ordering::SeqCst);
    }
}

fn list_dir(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    let mut out = BTreeSet::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                out.insert(entry?.file_name());
            }
            Ok(out)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(out),
        Err(e) => Err(e),
    }
}

/// fsyncs a directory, making the entries created in it durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Group commit: tickets for finished transactions, one sync for many.
#[derive(Debug, Default)]
pub(super) struct Committer {
    state: Mutex<CommitState>,
    changed: Condvar,
    syncs: AtomicU64,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Tickets handed out (transactions finished in memory).
    written: u64,
    /// Highest ticket known durable.
    synced: u64,
    /// A leader is syncing.
    syncing: bool,
    /// Writers that announced a write and have not taken a ticket yet.
    active: usize,
    /// A sync failed: nothing more is acknowledged.
    failed: bool,
}

/// Why a wait for durability ended without success.
#[derive(Debug)]
pub(super) enum WaitError {
    /// This caller's sync failed.
    Sync(io::Error),
    /// Another caller's sync failed earlier.
    Failed,
}

impl Committer {
    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announces a write about to start, so a group leader may wait for it.
    pub(super) fn begin(&self) {
        self.lock().active += 1;
    }

    /// Withdraws an announced write that ended without a transaction.
    pub(super) fn abandon(&self) {
        let mut st = self.lock();
        st.active = st.active.saturating_sub(1);
        drop(st);
        self.changed.notify_all();
    }

    /// Takes the ticket of a finished transaction. Must be called while the
    /// writer still holds the store's write lock, so tickets follow commit
    /// order.
    pub(super) fn ticket(&self) -> u64 {
        let mut st = self.lock();
        st.active = st.active.saturating_sub(1);
        st.written += 1;
        let t = st.written;
        drop(st);
        self.changed.notify_all();
        t
    }

    /// Number of syncs run so far.
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Marks the committer failed (the handle is poisoned).
    pub(super) fn fail(&self) {
        self.lock().failed = true;
        self.changed.notify_all();
    }

    /// Returns once a sync that started after `ticket` was taken has
    /// succeeded. The first waiter to find no sync running leads: it waits
    /// up to `max_delay` for announced writers to take their tickets, then
    /// runs `sync` for everyone; the others wait for it.
    pub(super) fn wait_durable(
        &self,
        ticket: u64,
        max_delay: Duration,
        sync: impl Fn() -> io::Result<()>,
    ) -> Result<(), WaitError> {
        let mut st = self.lock();
        loop {
            if st.failed {
                return Err(WaitError::Failed);
            }
            if st.synced >= ticket {
                return Ok(());
            }
            if st.syncing {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.syncing = true;
            if !max_delay.is_zero() {
                let deadline = Instant::now() + max_delay;
                while st.active > 0 && !st.failed {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    st = self
                        .changed
                        .wait_timeout(st, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
            let target = st.written;
            drop(st);
            let result = sync();
            self.syncs.fetch_add(1, Ordering::Relaxed);
            st = self.lock();
            st.syncing = false;
            match result {
                Ok(()) => st.synced = st.synced.max(target),
                Err(e) => {
                    st.failed = true;
                    drop(st);
                    self.changed.notify_all();
                    return Err(WaitError::Sync(e));
                }
            }
            drop(st);
            self.changed.notify_all();
            st = self.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_sync_covers_every_ticket_taken_before_it() {
        let c = Committer::default();
        c.begin();
        let t1 = c.ticket();
        c.begin();
        let t2 = c.ticket();
        let calls = AtomicU64::new(0);
        let sync = || {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        c.wait_durable(t2, Duration::ZERO, sync).unwrap();
        c.wait_durable(t1, Duration::ZERO, sync).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        c.begin();
        let t3 = c.ticket();
        c.wait_durable(t3, Duration::ZERO, sync).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_sync_fails_every_later_wait() {
        let c = Arc::new(Committer::default());
        c.begin();
        let t = c.ticket();
        let err = c.wait_durable(t, Duration::ZERO, || Err(io::Error::other("boom")));
        assert!(matches!(err, Err(WaitError::Sync(_))));
        c.begin();
        let t = c.ticket();
        assert!(matches!(
            c.wait_durable(t, Duration::ZERO, || Ok(())),
            Err(WaitError::Failed)
        ));
    }

    #[test]
    fn injected_failures_are_counted_down() {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let files = DataFiles::open(dir.path()).unwrap();
        files.inject_failures(1);
        assert!(files.sync().is_err());
        files.sync().unwrap();
    }
}
