//! The background thread: checkpoints (PASSIVE while there is work,
//! incremental vacuum and TRUNCATE once the queue is empty), the relaxed
//! WAL sync, and the checkpoint of a large WAL left at open.

use super::*;

/// The background thread: checkpoints (PASSIVE while there is work,
/// incremental vacuum + TRUNCATE once the queue is empty) and, under
/// `Relaxed`, the periodic WAL sync. It uses its own connection so a
/// checkpoint's copying and syncing never happens inside a commit.
pub(super) fn background(shared: &Shared, conn: Connection) {
    let relaxed = shared.options.durability == Durability::Relaxed;
    let interval = if relaxed {
        CHECKPOINT_INTERVAL.min(RELAXED_SYNC_INTERVAL)
    } else {
        CHECKPOINT_INTERVAL
    };
    let mut last_sync = Instant::now();
    let mut vacuumed_empty = false;
    // The first pass comes at once, and counts as having commits to copy:
    // the previous process may have left frames in the WAL. It catches up
    // with the writer (see `checkpoint_busy`) whatever the WAL's length, so
    // the WAL restarts at the next commit even in a short life.
    let mut wait = FIRST_PASS_DELAY;
    let mut first_pass = true;
    lock(&shared.bg).commits += 1;
    loop {
        let (commits, empty, dirty) = {
            let mut bg = lock(&shared.bg);
            let work_waiting =
                bg.stop || bg.commits >= CHECKPOINT_AFTER_COMMITS || (bg.empty && !vacuumed_empty);
            if !work_waiting {
                bg = shared
                    .bg_cv
                    .wait_timeout(bg, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            wait = interval;
            if bg.stop {
                // A queue closed empty gives its space back now rather than
                // at the next open.
                let final_vacuum = bg.empty && !vacuumed_empty;
                drop(bg);
                if final_vacuum && !shared.poison.is_set() {
                    if let Err(e) = checkpoint_empty(&conn) {
                        let e = classify(&shared.path, "checkpoint", e);
                        tracing::warn!(error = %e, "final vacuum of an empty queue failed");
                    }
                }
                return;
            }
            let out = (bg.commits, bg.empty, bg.dirty);
            bg.commits = 0;
            if relaxed && last_sync.elapsed() >= RELAXED_SYNC_INTERVAL {
                bg.dirty = false;
            }
            out
        };
        if shared.poison.is_set() {
            continue;
        }
        if relaxed && dirty && last_sync.elapsed() >= RELAXED_SYNC_INTERVAL {
            last_sync = Instant::now();
            if let Err(e) = shared.sync_wal() {
                tracing::error!(error = %e, "relaxed wal sync failed");
                continue;
            }
        }
        if commits > 0 {
            vacuumed_empty = false;
        }
        let result = if empty && !vacuumed_empty {
            vacuumed_empty = true;
            checkpoint_empty(&conn)
        } else if commits > 0 {
            checkpoint_busy(shared, &conn, std::mem::take(&mut first_pass))
        } else {
            Ok(())
        };
        if let Err(e) = result {
            match classify(&shared.path, "checkpoint", e) {
                StorageError::Locked { .. } => {}
                StorageError::Io { .. } => {
                    tracing::error!("background checkpoint failed with an i/o error");
                    shared.poison.set();
                }
                other => tracing::warn!(error = %other, "background checkpoint failed"),
            }
        }
    }
}

/// Checkpoints and truncates a WAL the previous process left larger than
/// [`OPEN_CHECKPOINT_BYTES`] (copying it back is crash-safe: SQLite's
/// checkpoint protocol), so a loop of short-lived processes, each killed
/// before its background pass, cannot grow the WAL and the next open's
/// recovery without bound.
pub(super) fn checkpoint_leftover_wal(conn: &Connection, dir: &Path, wal: &Path) -> Result<()> {
    let len = match std::fs::metadata(wal) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(dir::io_error("inspect wal", e)),
    };
    if len <= OPEN_CHECKPOINT_BYTES {
        return Ok(());
    }
    let started = Instant::now();
    let (frames, copied) =
        wal_checkpoint(conn, "TRUNCATE").map_err(|e| classify(dir, "checkpoint at open", e))?;
    tracing::debug!(
        wal_bytes = len,
        frames,
        copied,
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "leftover WAL checkpointed at open"
    );
    Ok(())
}

/// `PRAGMA wal_checkpoint(mode)`: (frames in the WAL, frames copied).
pub(super) fn wal_checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// A PASSIVE checkpoint copies the frames that were in the WAL when it
/// started while the writer keeps appending, and the WAL is restarted from
/// its beginning only by a write that begins when every frame has been
/// copied. Under a steady stream of commits that moment never comes: the
/// WAL grew to 9.3 GB while draining 1,000,000 ops, and every commit that
/// extends the file pays for a file-system metadata sync on top of its
/// fdatasync. So once a pass has copied [`CATCH_UP_FRAMES`] or more, the
/// few frames appended meanwhile are copied with the writer held off (the
/// main mutex): one short pause for the writer every
/// `CATCH_UP_FRAMES` pages written (and once after open: `catch_up`),
/// after which the next commit restarts the WAL and reuses its
/// already-allocated blocks.
pub(super) fn checkpoint_busy(
    shared: &Shared,
    conn: &Connection,
    catch_up: bool,
) -> rusqlite::Result<()> {
    let (log, _) = wal_checkpoint(conn, "PASSIVE")?;
    if catch_up {
        // After open: also cut the file the previous process left back to
        // nothing, so a crash loop does not keep a WAL of its high-water
        // mark beside a small database.
        let _writer = shared.lock_main();
        wal_checkpoint(conn, "TRUNCATE")?;
    } else if log >= CATCH_UP_FRAMES {
        let _writer = shared.lock_main();
        wal_checkpoint(conn, "PASSIVE")?;
    }
    // Return space while draining once a quarter of the file is free.
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    if free >= VACUUM_STEP_PAGES && free * 4 >= pages {
        incremental_vacuum(conn, Some(VACUUM_STEP_PAGES))?;
    }
    Ok(())
}

/// Runs `PRAGMA incremental_vacuum` to completion: it frees one page per
/// step, so a single step (as `execute_batch` does) returns one page only.
pub(super) fn incremental_vacuum(conn: &Connection, pages: Option<i64>) -> rusqlite::Result<()> {
    let sql = match pages {
        Some(n) => format!("PRAGMA incremental_vacuum({n})"),
        None => "PRAGMA incremental_vacuum".to_owned(),
    };
    let mut st = conn.prepare(&sql)?;
    let mut rows = st.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

pub(super) fn checkpoint_empty(conn: &Connection) -> rusqlite::Result<()> {
    incremental_vacuum(conn, None)?;
    wal_checkpoint(conn, "TRUNCATE")?;
    Ok(())
}
