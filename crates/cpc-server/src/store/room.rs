//! Room to write: a push is refused (`503`) before the store meets a full
//! disk, and when the store reached the size its operator allows.
//!
//! A full disk in the middle of a group commit is survivable now (the
//! writer fails the whole group cleanly), but it still fails every push of
//! the group and costs a rollback per group while the disk stays full.
//! Keeping a floor of free space refuses pushes cheaply instead, and leaves
//! room for what must still be written: checkpoints, compaction, the WAL
//! of a rollback. Checked before each push reaches the writer: one
//! `statvfs` and two `stat`s on the embedded store; the PostgreSQL
//! database's size is read at most every [`PG_SIZE_EVERY`].

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::StoreError;

/// How long a PostgreSQL size reading is used (one `pg_database_size` per
/// interval, not per push).
pub(crate) const PG_SIZE_EVERY: Duration = Duration::from_secs(10);

/// The limits, and the last size reading of a PostgreSQL store.
#[derive(Debug, Default)]
pub(crate) struct Room {
    /// Free bytes the data directory's file system keeps (embedded).
    pub min_free_bytes: u64,
    /// The store's largest size.
    pub max_store_bytes: Option<u64>,
    /// The embedded store's data directory.
    pub dir: Option<PathBuf>,
    last_size: Mutex<Option<(Instant, u64)>>,
}

impl Room {
    /// Limits for a store in `dir` (`None`: PostgreSQL).
    pub(crate) fn new(
        min_free_bytes: u64,
        max_store_bytes: Option<u64>,
        dir: Option<PathBuf>,
    ) -> Room {
        Room {
            min_free_bytes,
            max_store_bytes,
            dir,
            last_size: Mutex::new(None),
        }
    }

    /// `NoRoom` when the file system is below its floor.
    pub(crate) fn check_free(&self) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let st = rustix::fs::statvfs(dir)
            .map_err(|e| StoreError::Io("reading the free space", e.into()))?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < self.min_free_bytes {
            return Err(StoreError::NoRoom(format!(
                "{free} bytes free on the data directory's file system, below the floor of {}",
                self.min_free_bytes
            )));
        }
        Ok(())
    }

    /// `NoRoom` when `size` reached the cap.
    pub(crate) fn check_size(&self, size: u64) -> Result<(), StoreError> {
        match self.max_store_bytes {
            Some(max) if size >= max => Err(StoreError::NoRoom(format!(
                "the store is {size} bytes, at its cap of {max}"
            ))),
            _ => Ok(()),
        }
    }

    /// A size reading still fresh enough to use, or `None`.
    pub(crate) fn cached_size(&self) -> Option<u64> {
        let last = self.last_size.lock().unwrap_or_else(|e| e.into_inner());
        last.filter(|(at, _)| at.elapsed() < PG_SIZE_EVERY)
            .map(|(_, size)| size)
    }

    /// Remembers a size reading.
    pub(crate) fn remember_size(&self, size: u64) {
        *self.last_size.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), size));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_free_space_refuses_and_one_below_passes() {
        let dir = tempfile::tempdir().unwrap();
        let free = rustix::fs::statvfs(dir.path()).unwrap();
        let free = free.f_bavail * free.f_frsize;
        let room = Room::new(free.saturating_mul(2).max(1), None, Some(dir.path().into()));
        assert!(matches!(room.check_free(), Err(StoreError::NoRoom(_))));
        let room = Room::new(1, None, Some(dir.path().into()));
        assert!(room.check_free().is_ok());
        // No floor on PostgreSQL: its disk is not ours to read.
        assert!(Room::new(u64::MAX, None, None).check_free().is_ok());
    }

    #[test]
    fn the_size_cap_refuses_at_the_cap() {
        let room = Room::new(0, Some(1000), None);
        assert!(room.check_size(999).is_ok());
        assert!(matches!(room.check_size(1000), Err(StoreError::NoRoom(_))));
        assert!(Room::new(0, None, None).check_size(u64::MAX).is_ok());
    }
}
