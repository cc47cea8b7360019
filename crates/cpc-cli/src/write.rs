//! The writing commands: `revive`, `drop`, `settle`, `requeue-acked`,
//! `import`. Each takes the queue's lock (refused, exit 3, while an
//! engine holds it) and makes one durable change per step.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;

use cpc_core::{OperationId, Resolution};
use cpc_storage::{Amend, ListFilter, QueueStorage};

use crate::args::{Keep, WriteArgs};
use crate::lines::Line;
use crate::open::for_write;
use crate::render::now_ms;
use crate::{io_failure, Failure, EXIT_INPUT};

/// The largest import line read (a 1 GiB payload in base64, and its
/// fields): bounded, so a file without newlines cannot exhaust memory.
const MAX_LINE: usize = (cpc_storage::MAX_PAYLOAD_LIMIT / 3 + 1) * 4 + 64 * 1024;

/// The most payload bytes one import holds (it is checked whole before
/// one atomic write): split a larger file.
const MAX_IMPORT_BYTES: u64 = 1 << 30;

/// Journal entries one requeue transaction puts back.
const REQUEUE_PAGE: usize = 64;

fn input(message: String) -> Failure {
    Failure {
        code: EXIT_INPUT,
        message,
    }
}

fn storage(e: cpc_storage::StorageError) -> Failure {
    input(e.to_string())
}

/// Parses every id first: a typo changes nothing.
fn parse_ids(ids: &[String]) -> Result<Vec<OperationId>, Failure> {
    ids.iter()
        .map(|t| {
            t.parse()
                .map_err(|e| input(format!("{t:?} is not an operation id: {e}")))
        })
        .collect()
}

/// `revive`.
pub fn revive(
    dir: &Path,
    ids: &[String],
    all_dead: bool,
    write: &WriteArgs,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    let mut ids = parse_ids(ids)?;
    let store = for_write(dir, write, false)?;
    if all_dead {
        let mut after = None;
        loop {
            let page = store
                .list(&ListFilter {
                    dead: Some(true),
                    limit: Some(1024),
                    after_seq: after,
                    ..ListFilter::default()
                })
                .map_err(storage)?;
            ids.extend(page.iter().map(|s| s.op.id));
            match page.last() {
                Some(last) if page.len() == 1024 => after = Some(last.seq),
                _ => break,
            }
        }
    }
    amend_each(
        &store,
        &ids,
        |id| Amend::Revive { id, now: now_ms() },
        "revived",
        "not dead or deferred (nothing done for them)",
        out,
    )
}

/// `drop`.
pub fn drop_ops(
    dir: &Path,
    ids: &[String],
    yes: bool,
    write: &WriteArgs,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    let ids = parse_ids(ids)?;
    if !yes {
        return Err(input(format!(
            "drop removes {} operation(s) for good: they will never be sent. Pass --yes to do it",
            ids.len()
        )));
    }
    let store = for_write(dir, write, false)?;
    amend_each(
        &store,
        &ids,
        Amend::Drop,
        "dropped",
        "not in the queue",
        out,
    )
}

/// Applies `change(id)` to each id, one durable write each; reports how
/// many changed (`done N`) and fails naming the ids nothing matched.
fn amend_each(
    store: &dyn QueueStorage,
    ids: &[OperationId],
    change: impl Fn(OperationId) -> Amend,
    done: &str,
    unmatched: &str,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    let mut missing = Vec::new();
    let mut changed = 0;
    for id in ids {
        match store.amend(change(*id)).map_err(storage)? {
            0 => missing.push(id.to_string()),
            n => changed += n,
        }
    }
    writeln!(out, "{done} {changed}").map_err(io_failure)?;
    if missing.is_empty() {
        Ok(0)
    } else {
        Err(input(format!("{unmatched}: {}", missing.join(", "))))
    }
}

/// `settle`.
pub fn settle(
    dir: &Path,
    id: &str,
    keep: Keep,
    yes: bool,
    write: &WriteArgs,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    let id = parse_ids(&[id.to_owned()])?[0];
    if keep == Keep::Remote && !yes {
        return Err(input(
            "--keep remote drops the local change for good. Pass --yes to do it".into(),
        ));
    }
    let store = for_write(dir, write, false)?;
    let resolution = match keep {
        Keep::Local => Resolution::KeepLocal,
        Keep::Remote => Resolution::KeepRemote,
    };
    let changed = store
        .amend(Amend::Settle {
            id,
            resolution,
            now: now_ms(),
        })
        .map_err(storage)?;
    if changed == 0 {
        return Err(input(format!("{id} is not a deferred conflict")));
    }
    let what = match keep {
        Keep::Local => "the local change will be sent again on the remote's version",
        Keep::Remote => "the local change was dropped",
    };
    writeln!(out, "settled {id}: {what}").map_err(io_failure)?;
    Ok(0)
}

/// `requeue-acked`.
pub fn requeue_acked(
    dir: &Path,
    since: u64,
    yes: bool,
    write: &WriteArgs,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    if !yes {
        return Err(input(
            "requeue-acked empties the acked journal into the queue (the server dedupes by id). \
             Pass --yes to do it"
                .into(),
        ));
    }
    let store = for_write(dir, write, false)?;
    let in_flight = store.stats().map_err(storage)?.in_flight;
    if in_flight > 0 {
        // Leased by an engine that stopped before their lease ended: they
        // may be on the wire, and an older operation put back ahead of one
        // of them would be sent after it.
        return Err(input(format!(
            "{in_flight} operation(s) are still leased (in flight) from the last run: start the \
             app once so they complete or return, or wait for their lease to end"
        )));
    }
    let (mut requeued, mut unrecoverable) = (0, 0);
    loop {
        let page = store
            .requeue_acked(since, now_ms(), REQUEUE_PAGE)
            .map_err(storage)?;
        requeued += page.requeued;
        unrecoverable += page.unrecoverable;
        if !page.more {
            break;
        }
    }
    // Done by hand: the engine must not do it again at its next start.
    store
        .sync_state(
            cpc_storage::sync_state::PENDING_REGRESSION_KEY,
            Some(Vec::new()),
        )
        .map_err(storage)?;
    writeln!(
        out,
        "re-queued {requeued}; known by id only and applied above seq {since} (lost): {unrecoverable}"
    )
    .map_err(io_failure)?;
    Ok(0)
}

/// `import`: every line checked (JSON, fields, id, size, no repeat, not
/// in the queue) before one atomic write of them all.
pub fn import(
    dir: &Path,
    max_payload: usize,
    write: &WriteArgs,
    input_lines: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    let mut ops = Vec::new();
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut buf = Vec::new();
    let mut number = 0usize;
    loop {
        buf.clear();
        let max_line = (max_payload / 3 + 1)
            .saturating_mul(4)
            .saturating_add(64 * 1024)
            .min(MAX_LINE);
        let read = read_bounded_line(input_lines, &mut buf, max_line)
            .map_err(|e| input(format!("line {}: {e}", number + 1)))?;
        if read == 0 {
            break;
        }
        number += 1;
        let text = std::str::from_utf8(&buf)
            .map_err(|_| input(format!("line {number}: not UTF-8")))?
            .trim();
        if text.is_empty() {
            continue;
        }
        let line: Line =
            serde_json::from_str(text).map_err(|e| input(format!("line {number}: {e}")))?;
        let op = line
            .operation(max_payload)
            .map_err(|e| input(format!("line {number}: {e} (the limit is --max-payload)")))?;
        total = total.saturating_add(op.payload.len() as u64);
        if total > MAX_IMPORT_BYTES {
            return Err(input(format!(
                "line {number}: the file holds more than {MAX_IMPORT_BYTES} payload bytes; split it"
            )));
        }
        if !seen.insert(op.id) {
            return Err(input(format!(
                "line {number}: operation {} is in the file twice",
                op.id
            )));
        }
        ops.push((number, op));
    }
    let store = for_write(dir, write, true)?;
    for (number, op) in &ops {
        if store.get(op.id).map_err(storage)?.is_some() {
            return Err(input(format!(
                "line {number}: operation {} is already in the queue (nothing imported)",
                op.id
            )));
        }
    }
    let count = ops.len();
    // Exported operations may have reached the remote already: imported
    // as claimed, so the app's coalescing never merges an edit into one.
    store
        .amend(cpc_storage::Amend::Import {
            ops: ops.into_iter().map(|(_, op)| op).collect(),
            now: now_ms(),
        })
        .map_err(storage)?;
    writeln!(out, "imported {count}").map_err(io_failure)?;
    Ok(0)
}

/// Reads one line (without its newline) into `buf`, refusing one longer
/// than `max_line`; answers the bytes consumed (0 at the end).
fn read_bounded_line(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max_line: usize,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = r.fill_buf()?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if buf.len() + chunk.len() > max_line {
            return Err(std::io::Error::other(format!(
                "longer than {max_line} bytes (a payload over --max-payload?)"
            )));
        }
        buf.extend_from_slice(chunk);
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        consumed += used;
        if done.is_some() {
            return Ok(consumed);
        }
    }
}
