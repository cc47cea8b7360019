//! The queue directory shared by every durable backend: creation with mode
//! 0700, the exclusive lock, the format marker, error mapping for I/O and the
//! poison flag.
//!
//! Order at open (each step must precede the next):
//! 1. create the directory (0700) if it does not exist, fsyncing the parent
//!    of every level created; an existing one that group or others can
//!    read or write is refused unless the caller allows a shared directory
//!    (a queue holds the user's unsent work: on a shared device nobody else
//!    may read it);
//! 2. if there is no marker, refuse a directory holding anything but our lock
//!    file, before writing anything into it (a user's directory is left
//!    untouched);
//! 3. take the exclusive lock (a second open fails with `Locked`, after
//!    waiting [`LOCK_WAIT`] for a holder that is about to let go);
//! 4. under the lock, read and check the marker, or write it (write, fsync,
//!    rename, fsync the directory) before the backend creates any file, so a
//!    directory with backend files always has a marker.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::api::EpochMillis;
use crate::error::{Result, StorageError};

/// Name of the lock file inside a queue directory.
pub(crate) const LOCK_FILE: &str = "cpc-queue.lock";
/// Name of the format marker inside a queue directory.
pub(crate) const MARKER_FILE: &str = "cpc-queue.marker";
const MARKER_TMP: &str = "cpc-queue.marker.tmp";
/// First line of every marker.
const MARKER_MAGIC: &str = "cpc-sync operation queue";

/// How long an open waits for a lock that is held before it answers
/// `Locked`. A lock is an open file description, and a process that spawns
/// a child while a queue is open hands the child a copy of it until the
/// child's `exec` closes it (`O_CLOEXEC` acts only then): a queue closed and
/// reopened at once (an account switch, a test) could find its own lock
/// still held for that instant. A real second holder is still refused,
/// this much later.
pub(crate) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes `lock`'s exclusive lock, trying again every few milliseconds for
/// up to `wait`: `Err(None)` if it is still held then, `Err(Some(e))` on an
/// I/O error.
fn lock_within(
    lock: &File,
    wait: std::time::Duration,
) -> std::result::Result<(), Option<io::Error>> {
    let started = std::time::Instant::now();
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if started.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => return Err(None),
            Err(TryLockError::Error(e)) => return Err(Some(e)),
        }
    }
}

/// An open, locked queue directory. The lock is held until this is dropped,
/// so a backend must drop it after closing its own files.
#[derive(Debug)]
pub(crate) struct QueueDir {
    path: PathBuf,
    /// The format version the marker records.
    marker_version: u32,
    // Held for its lock; released (closed) on drop.
    _lock: File,
}

impl QueueDir {
    /// Opens (creating if needed) the queue directory `path` for `backend`
    /// with the given store format version.
    pub(crate) fn open(
        path: &Path,
        backend: &str,
        format_version: u32,
        allow_shared: bool,
    ) -> Result<QueueDir> {
        let path = path.to_path_buf();
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o066 != 0 && !allow_shared {
                    return Err(StorageError::SharedDirectory { path, mode });
                }
            }
            Ok(_) => {
                return Err(format_error(&path, "it exists and is not a directory"));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_dirs(&path)?,
            Err(e) => return Err(io_error("inspect queue directory", e)),
        }

        let marker_path = path.join(MARKER_FILE);
        if !exists(&marker_path)? {
            ensure_only_our_files(&path)?;
        }

        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| io_error("open lock file", e))?;
        lock_within(&lock, LOCK_WAIT).map_err(|e| match e {
            None => StorageError::Locked { path: path.clone() },
            Some(e) => io_error("lock queue directory", e),
        })?;

        let marker_version = match fs::read_to_string(&marker_path) {
            Ok(text) => check_marker(&path, &text, backend, format_version)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Checked again under the lock: another process may have
                // created files between the first check and the lock.
                ensure_only_our_files(&path)?;
                write_marker(&path, backend, format_version)?;
                format_version
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(format_error(&path, "its marker file is not text"));
            }
            Err(e) => return Err(io_error("read format marker", e)),
        };
        Ok(QueueDir {
            path,
            marker_version,
            _lock: lock,
        })
    }

    /// Records in the marker that the store is now in `format_version`
    /// (after the backend upgraded an older store in place); a no-op when
    /// the marker says so already.
    pub(crate) fn upgrade_marker(&mut self, backend: &str, format_version: u32) -> Result<()> {
        if self.marker_version >= format_version {
            return Ok(());
        }
        write_marker(&self.path, backend, format_version)?;
        self.marker_version = format_version;
        Ok(())
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// fsyncs the directory itself (after creating or renaming files in it).
    pub(crate) fn sync(&self) -> Result<()> {
        sync_dir(&self.path)
    }
}

/// Creates `path` and every missing ancestor with mode 0700, fsyncing the
/// parent of each level it creates (top down), so the whole chain of new
/// entries survives a power loss, not just the last one.
fn create_dirs(path: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty()) {
        match p.try_exists() {
            Ok(true) => break,
            Ok(false) => missing.push(p),
            Err(e) => return Err(io_error("inspect queue directory", e)),
        }
        at = p.parent();
    }
    for dir in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            // Created meanwhile by someone else: fine, it is checked below.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error("create queue directory", e)),
        }
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(())
}

/// Creates (or truncates) a file only this user can read, never following
/// a symlink planted in its place: a leftover file is removed first (its
/// name, not what it points to) and the new one created exclusively.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(feature = "sled")]
/// Brings every file under `root` to mode 0600 and every directory to
/// 0700 (for stores whose library creates files with the process umask).
pub(crate) fn restrict_tree(root: &Path) -> Result<()> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| io_error("list store files", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list store files", e))?;
            let kind = entry
                .file_type()
                .map_err(|e| io_error("list store files", e))?;
            let mode = if kind.is_dir() {
                pending.push(entry.path());
                0o700
            } else if kind.is_file() {
                0o600
            } else {
                continue;
            };
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode))
                .map_err(|e| io_error("restrict store file", e))?;
        }
    }
    Ok(())
}

/// fsyncs a directory, making the entries created in it durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync directory", e))
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .map_err(|e| io_error("inspect format marker", e))
}

fn ensure_only_our_files(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("list queue directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list queue directory", e))?;
        let name = entry.file_name();
        if name != LOCK_FILE && name != MARKER_TMP {
            return Err(format_error(
                dir,
                "the directory is not empty and has no queue marker",
            ));
        }
    }
    Ok(())
}

/// Reads the marker of an existing queue without locking or writing
/// anything (the read-only inspector): the backend it names and its format
/// version, refused when it is newer than `newest` for `backend`.
pub(crate) fn read_marker(dir: &Path, backend: &str, newest: u32) -> Result<u32> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format_error(dir, "it is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format_error(dir, "it does not exist"))
        }
        Err(e) => return Err(io_error("inspect queue directory", e)),
    }
    match fs::read_to_string(dir.join(MARKER_FILE)) {
        Ok(text) => check_marker(dir, &text, backend, newest),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::NotAQueue {
            path: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Err(format_error(dir, "its marker file is not text"))
        }
        Err(e) => Err(io_error("read format marker", e)),
    }
}

fn marker_text(backend: &str, format_version: u32) -> String {
    format!("{MARKER_MAGIC}\nbackend={backend}\nformat={format_version}\n")
}

fn write_marker(dir: &Path, backend: &str, format_version: u32) -> Result<()> {
    let tmp = dir.join(MARKER_TMP);
    let mut f = create_private(&tmp).map_err(|e| io_error("write format marker", e))?;
    f.write_all(marker_text(backend, format_version).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io_error("write format marker", e))?;
    drop(f);
    fs::rename(&tmp, dir.join(MARKER_FILE)).map_err(|e| io_error("write format marker", e))?;
    sync_dir(dir)
}

/// Checks the marker; returns the format version it records.
fn check_marker(dir: &Path, text: &str, backend: &str, format_version: u32) -> Result<u32> {
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_MAGIC) {
        return Err(format_error(
            dir,
            "its marker file is not a cpc-sync marker",
        ));
    }
    let mut found_backend = None;
    let mut found_version = None;
    for line in lines {
        if let Some(v) = line.strip_prefix("backend=") {
            found_backend = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("format=") {
            found_version = v.trim().parse::<u32>().ok();
        }
    }
    let (Some(found_backend), Some(found_version)) = (found_backend, found_version) else {
        return Err(format_error(dir, "its marker file is incomplete"));
    };
    if found_backend != backend {
        return Err(format_error(
            dir,
            &format!("it was written by the {found_backend} backend, not {backend}"),
        ));
    }
    if found_version > format_version {
        return Err(format_error(
            dir,
            &format!(
                "it was written in format version {found_version}, newer than this build's {format_version}"
            ),
        ));
    }
    Ok(found_version)
}

fn format_error(dir: &Path, reason: &str) -> StorageError {
    StorageError::Format {
        path: dir.to_path_buf(),
        reason: reason.to_owned(),
    }
}

/// Maps an I/O error: a full disk (ENOSPC, EDQUOT) becomes
/// [`StorageError::StorageFull`], anything else [`StorageError::Io`].
pub(crate) fn io_error(context: &'static str, e: io::Error) -> StorageError {
    if is_full(&e) {
        StorageError::StorageFull(e)
    } else {
        StorageError::Io { context, source: e }
    }
}

/// True for the errors that mean "no space left" (ENOSPC, EDQUOT).
pub(crate) fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Set once a sync or commit failed: after a failed fsync the kernel may
/// have dropped the dirty pages and a retried fsync can report success with
/// the data gone, so nothing may be acknowledged through this handle again.
#[derive(Debug, Default)]
pub(crate) struct Poison(AtomicBool);

impl Poison {
    /// Marks the handle as poisoned (for good).
    pub(crate) fn set(&self) {
        if !self.0.swap(true, Ordering::SeqCst) {
            tracing::error!("storage handle poisoned by a failed sync or commit");
        }
    }

    /// True once poisoned.
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Poisoned)` once poisoned: call first in every operation.
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_set() {
            Err(StorageError::Poisoned)
        } else {
            Ok(())
        }
    }
}

/// A failure a test can inject into the next durable commit of a backend,
/// to exercise the paths real disks rarely take on demand.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InjectedFault {
    /// The next commit's sync fails with EIO: the write is not
    /// acknowledged and the handle is poisoned.
    SyncError,
    /// The next commit fails with ENOSPC: `StorageFull`, nothing stored,
    /// the handle stays usable.
    DiskFull,
}

/// Holds at most one pending [`InjectedFault`].
#[derive(Debug, Default)]
pub(crate) struct FaultSlot(AtomicU8);

impl FaultSlot {
    /// Arms `fault` for the next commit.
    pub(crate) fn arm(&self, fault: InjectedFault) {
        let v = match fault {
            InjectedFault::SyncError => 1,
            InjectedFault::DiskFull => 2,
        };
        self.0.store(v, Ordering::SeqCst);
    }

    /// Takes the armed fault, if any.
    pub(crate) fn take(&self) -> Option<InjectedFault> {
        match self.0.swap(0, Ordering::SeqCst) {
            1 => Some(InjectedFault::SyncError),
            2 => Some(InjectedFault::DiskFull),
            _ => None,
        }
    }

    /// The error a commit reports for `fault` (and poisons `poison` if the
    /// fault is a failed sync).
    pub(crate) fn error(fault: InjectedFault, poison: &Poison) -> StorageError {
        match fault {
            InjectedFault::SyncError => {
                poison.set();
                StorageError::Io {
                    context: "commit",
                    source: io::Error::other("injected sync failure"),
                }
            }
            InjectedFault::DiskFull => StorageError::StorageFull(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected disk full",
            )),
        }
    }
}

/// The system clock in ms since the Unix epoch (0 if it is before 1970).
pub(crate) fn system_now() -> EpochMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(cpc_core::millis)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private_tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
            .unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_directory_others_can_read_is_refused_naming_its_mode_unless_allowed() {
        let tmp = private_tmp();
        let path = tmp.path().join("shared");
        fs::create_dir(&path).unwrap();
        for bits in [0o755, 0o750, 0o707, 0o770] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bits)).unwrap();
            let err = QueueDir::open(&path, "x", 1, false).unwrap_err();
            assert!(
                matches!(err, StorageError::SharedDirectory { mode, .. } if mode == bits),
                "{err}"
            );
            assert!(err.to_string().contains(&format!("{bits:o}")), "{err}");
            assert!(
                fs::read_dir(&path).unwrap().next().is_none(),
                "left untouched"
            );
        }
        // Others may only traverse it: not a leak of its contents.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o711)).unwrap();
        drop(QueueDir::open(&path, "x", 1, false).unwrap());
        // The opt-out opens a shared one.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        drop(QueueDir::open(&path, "x", 1, true).unwrap());
    }

    #[test]
    fn every_created_level_is_private_and_files_are_0600() {
        let tmp = private_tmp();
        let path = tmp.path().join("a/b/queue");
        let dir = QueueDir::open(&path, "x", 1, false).unwrap();
        for level in ["a", "a/b", "a/b/queue"] {
            assert_eq!(mode(&tmp.path().join(level)), 0o700, "{level}");
        }
        assert_eq!(mode(&path.join(LOCK_FILE)), 0o600);
        assert_eq!(mode(&path.join(MARKER_FILE)), 0o600);
        drop(dir);
    }

    #[test]
    fn a_leftover_marker_temp_that_is_a_symlink_is_not_followed() {
        let tmp = private_tmp();
        let path = tmp.path().join("queue");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, path.join(MARKER_TMP)).unwrap();
        drop(QueueDir::open(&path, "x", 1, false).unwrap());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(path.join(MARKER_FILE).is_file());
    }

    #[test]
    fn a_lock_let_go_of_while_an_open_waits_is_taken_and_one_held_is_refused() {
        let tmp = private_tmp();
        let path = tmp.path().join("queue");
        let first = QueueDir::open(&path, "x", 1, false).unwrap();
        // Held for good: refused, after the wait.
        assert!(matches!(
            QueueDir::open(&path, "x", 1, false),
            Err(StorageError::Locked { .. })
        ));
        // Let go of (by another thread) while the second open waits: taken.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _ = rx.recv();
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(first);
        });
        tx.send(()).unwrap();
        let second = QueueDir::open(&path, "x", 1, false);
        holder.join().unwrap();
        assert!(second.is_ok(), "{second:?}");
    }

    #[test]
    fn creates_the_directory_with_mode_0700_and_a_marker() {
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let path = tmp.path().join("a/b/queue");
        let dir = QueueDir::open(&path, "memory", 1, false).unwrap();
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let marker = fs::read_to_string(path.join(MARKER_FILE)).unwrap();
        assert!(marker.contains("backend=memory"));
        assert!(marker.contains("format=1"));
    }

    #[test]
    fn a_second_open_is_locked_until_the_first_is_dropped() {
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let first = QueueDir::open(tmp.path(), "x", 1, false).unwrap();
        assert!(matches!(
            QueueDir::open(tmp.path(), "x", 1, false),
            Err(StorageError::Locked { .. })
        ));
        drop(first);
        QueueDir::open(tmp.path(), "x", 1, false).unwrap();
    }

    #[test]
    fn a_foreign_directory_is_refused_and_left_untouched() {
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        fs::write(tmp.path().join("thesis.tex"), b"precious").unwrap();
        let err = QueueDir::open(tmp.path(), "x", 1, false).unwrap_err();
        assert!(matches!(err, StorageError::Format { .. }), "{err:?}");
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("thesis.tex")]);
    }

    #[test]
    fn a_newer_format_or_another_backend_is_refused() {
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        drop(QueueDir::open(tmp.path(), "sqlite", 2, false).unwrap());
        let newer = QueueDir::open(tmp.path(), "sqlite", 1, false).unwrap_err();
        assert!(
            matches!(&newer, StorageError::Format { reason, .. } if reason.contains("newer")),
            "{newer:?}"
        );
        let other = QueueDir::open(tmp.path(), "sled", 2, false).unwrap_err();
        assert!(
            matches!(&other, StorageError::Format { reason, .. } if reason.contains("sqlite")),
            "{other:?}"
        );
        // An older format is accepted (the backend migrates it).
        QueueDir::open(tmp.path(), "sqlite", 3, false).unwrap();
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_refused() {
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let path = tmp.path().join("q");
        fs::write(&path, b"x").unwrap();
        assert!(matches!(
            QueueDir::open(&path, "x", 1, false),
            Err(StorageError::Format { .. })
        ));
    }

    #[test]
    fn enospc_maps_to_storage_full() {
        let e = io::Error::from_raw_os_error(28); // ENOSPC on Linux
        assert!(matches!(io_error("x", e), StorageError::StorageFull(_)));
        let e = io::Error::from_raw_os_error(5); // EIO
        assert!(matches!(io_error("x", e), StorageError::Io { .. }));
    }

    #[test]
    fn poison_is_sticky() {
        let p = Poison::default();
        p.check().unwrap();
        p.set();
        assert!(matches!(p.check(), Err(StorageError::Poisoned)));
        assert!(p.is_set());
    }

    #[test]
    fn injected_faults_are_taken_once() {
        let slot = FaultSlot::default();
        assert_eq!(slot.take(), None);
        slot.arm(InjectedFault::SyncError);
        assert_eq!(slot.take(), Some(InjectedFault::SyncError));
        assert_eq!(slot.take(), None);
        let poison = Poison::default();
        assert!(matches!(
            FaultSlot::error(InjectedFault::DiskFull, &poison),
            StorageError::StorageFull(_)
        ));
        assert!(!poison.is_set());
        assert!(matches!(
            FaultSlot::error(InjectedFault::SyncError, &poison),
            StorageError::Io { .. }
        ));
        assert!(poison.is_set());
    }
}
