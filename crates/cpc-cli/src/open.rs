//! Opening a queue: read-only beside a running engine, or for writing
//! only when nobody else holds it (naming who does).

use std::path::Path;

use cpc_storage::{DeadHeadPolicy, QueueOptions, SqliteInspector, SqliteStorage, StorageError};

use crate::args::{DeadHead, WriteArgs};
use crate::{Failure, EXIT_INPUT, EXIT_LOCKED};

/// The queue directory's lock file (cpc-storage's name for it).
const LOCK_FILE: &str = "cpc-queue.lock";

/// Opens `dir` read-only (no lock, nothing written).
pub fn read_only(dir: &Path) -> Result<SqliteInspector, Failure> {
    SqliteInspector::open(dir).map_err(refused)
}

/// Opens `dir` for writing: it must already be a queue (unless `create`),
/// and nobody else may hold it.
pub fn for_write(dir: &Path, write: &WriteArgs, create: bool) -> Result<SqliteStorage, Failure> {
    if !create || dir.exists() {
        // A directory that is not a queue is refused before anything is
        // written into it; so is an older format, which opening for
        // writing would upgrade behind the back of the app that wrote it.
        let format = read_only(dir)?.format_version();
        if format < SqliteInspector::CURRENT_FORMAT {
            return Err(Failure {
                code: EXIT_INPUT,
                message: format!(
                    "the queue {} is format {format}, older than this tool's {}: writing would \
                     upgrade it and an app of that older format could no longer open it. \
                     Run the app's newer version on it first (reading commands work as it is)",
                    dir.display(),
                    SqliteInspector::CURRENT_FORMAT
                ),
            });
        }
    }
    let options = QueueOptions {
        // Whatever the application allowed, the tool reads it back.
        max_payload: cpc_storage::MAX_PAYLOAD_LIMIT,
        dead_head: match write.dead_head {
            DeadHead::Block => DeadHeadPolicy::BlockEntity,
            DeadHead::Skip => DeadHeadPolicy::SkipEntityHead,
        },
        ..QueueOptions::default()
    };
    SqliteStorage::open_at(dir, options, crate::render::now_ms()).map_err(|e| match e {
        StorageError::Locked { .. } => Failure {
            code: EXIT_LOCKED,
            message: format!(
                "the queue {} is in use by {}: stop it first (reading commands work beside it)",
                dir.display(),
                holder(dir).unwrap_or_else(|| "another process".into())
            ),
        },
        other => refused(other),
    })
}

fn refused(e: StorageError) -> Failure {
    Failure {
        code: EXIT_INPUT,
        message: e.to_string(),
    }
}

/// Who holds the lock on `dir`: `process PID (NAME)`, from `/proc/locks`
/// (Linux); `None` elsewhere or if it cannot be told.
pub fn holder(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let inode = std::fs::metadata(dir.join(LOCK_FILE)).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a waiting lock's
    // line has "->" after the number.
    let pid = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().filter(|f| *f != "->").collect();
        let id = fields.get(5)?;
        let ino: u64 = id.rsplit(':').next()?.parse().ok()?;
        (ino == inode).then(|| fields.get(4).map(|p| (*p).to_owned()))?
    })?;
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|n| n.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    Some(format!("process {pid} ({name})"))
}
