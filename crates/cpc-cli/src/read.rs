//! The reading commands: `status`, `list`, `watch`, `verify`, `export`.
//! Each opens the queue read-only, beside a running engine if there is
//! one, and prints no payload unless asked to.

use std::io::Write;
use std::path::Path;

use cpc_core::{EntityKey, RemotePosition};
use cpc_storage::sync_state::{HandledRegression, Regression};
use cpc_storage::{ListFilter, OpState, QueueStats, SqliteInspector};
use serde_json::json;

use crate::args::StateFilter;
use crate::lines::{kind_name, priority_name, Line};
use crate::open::read_only;
use crate::render::{age, clean, now_ms, payload, relative, size, Style, Table};
use crate::{io_failure, Failure, EXIT_DAMAGED, EXIT_INPUT};

/// Operations read per page (whole bodies: bounded, so a queue of large
/// payloads is read in small snapshots that never hold the engine up).
const PAGE: usize = 64;

/// Everything `status` shows.
struct Status {
    stats: QueueStats,
    oldest: Option<u64>,
    files: cpc_storage::StoreFiles,
    format: u32,
    cursor: Option<cpc_core::PullCursor>,
    known: Option<RemotePosition>,
    pending_regression: Option<Regression>,
    regressions: Vec<HandledRegression>,
}

fn read_status(q: &SqliteInspector) -> Result<Status, Failure> {
    let stats = q.stats().map_err(storage)?;
    // Advisory: a state that cannot be read shows as none, as before.
    let sync = q.sync_record().unwrap_or_default();
    let (cursor, known) = (sync.pull.cursor, sync.pull.known);
    let pending_regression = sync.pending_regression;
    let regressions = sync.regressions;
    Ok(Status {
        stats,
        oldest: q.oldest_pending().map_err(storage)?,
        files: q.files(),
        format: q.format_version(),
        cursor,
        known,
        pending_regression,
        regressions,
    })
}

fn storage(e: cpc_storage::StorageError) -> Failure {
    Failure {
        code: EXIT_INPUT,
        message: e.to_string(),
    }
}

fn position(p: &RemotePosition) -> String {
    format!("seq {} (store {})", p.seq, clean(&p.store_id))
}

/// The counts as two tables (by state, by priority).
fn counts(stats: &QueueStats, out: &mut dyn Write, style: &Style) -> std::io::Result<()> {
    let mut t = Table::new(&["state", "count"]);
    let flag = |n: u64| {
        if n > 0 {
            style.alert(&n.to_string())
        } else {
            n.to_string()
        }
    };
    t.row(vec!["ready".into(), stats.ready.to_string()]);
    t.row(vec!["in flight".into(), stats.in_flight.to_string()]);
    t.row(vec!["waiting".into(), stats.waiting.to_string()]);
    t.row(vec!["dead".into(), flag(stats.dead)]);
    t.row(vec!["deferred".into(), flag(stats.deferred)]);
    t.row(vec!["quarantined".into(), flag(stats.quarantined)]);
    t.row(vec!["blocked".into(), flag(stats.blocked)]);
    t.write(out, style)?;
    writeln!(out)?;
    let mut p = Table::new(&["priority", "pending"]);
    for (name, rank) in [
        ("critical", 3),
        ("high", 2),
        ("normal", 1),
        ("background", 0),
    ] {
        p.row(vec![
            name.into(),
            stats.pending_by_priority[rank].to_string(),
        ]);
    }
    p.write(out, style)
}

/// `status`.
pub fn status(dir: &Path, json: bool, out: &mut dyn Write, style: &Style) -> Result<i32, Failure> {
    let q = read_only(dir)?;
    let s = read_status(&q)?;
    let now = now_ms();
    if json {
        let doc = json!({
            "queue": dir.display().to_string(),
            "format": s.format,
            "backend": "sqlite",
            "database_bytes": s.files.database,
            "wal_bytes": s.files.wal,
            "counts": {
                "pending": s.stats.pending,
                "ready": s.stats.ready,
                "in_flight": s.stats.in_flight,
                "waiting": s.stats.waiting,
                "dead": s.stats.dead,
                "deferred": s.stats.deferred,
                "quarantined": s.stats.quarantined,
                "blocked": s.stats.blocked,
            },
            "pending_by_priority": {
                "critical": s.stats.pending_by_priority[3],
                "high": s.stats.pending_by_priority[2],
                "normal": s.stats.pending_by_priority[1],
                "background": s.stats.pending_by_priority[0],
            },
            "pending_bytes": s.stats.pending_bytes,
            "oldest_pending_age_ms": s.oldest.map(|t| now.saturating_sub(t)),
            "acked_journal": s.stats.acked_journal,
            "pull_cursor": s.cursor.as_ref().map(|c| json!({
                "store_id": c.position.store_id, "seq": c.position.seq, "in_snapshot": c.after.is_some(),
            })),
            "known": s.known.as_ref().map(|k| json!({"store_id": k.store_id, "seq": k.seq})),
            "regression_pending": s.pending_regression.as_ref().map(|r| json!({"head_seq": r.head.seq})),
            "regressions": s.regressions.iter().map(|r| json!({
                "known_seq": r.regression.known.as_ref().map(|k| k.seq),
                "head_seq": r.regression.head.seq,
                "requeued": r.requeued,
                "unrecoverable": r.unrecoverable,
                "at_ms": r.at,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{doc:#}").map_err(io_failure)?;
        return Ok(0);
    }
    let w = |out: &mut dyn Write| -> std::io::Result<()> {
        let mut head = Table::new(&["queue", &dir.display().to_string()]);
        head.row(vec!["format".into(), format!("{} (sqlite)", s.format)]);
        head.row(vec![
            "size".into(),
            format!(
                "{} (database {}, wal {})",
                size(s.files.database + s.files.wal),
                size(s.files.database),
                size(s.files.wal)
            ),
        ]);
        head.write(out, style)?;
        writeln!(out)?;
        counts(&s.stats, out, style)?;
        writeln!(out)?;
        let mut more = Table::new(&["sync", ""]);
        more.row(vec![
            "oldest pending".into(),
            s.oldest.map_or("-".into(), |t| relative(t, now)),
        ]);
        more.row(vec!["pending bytes".into(), size(s.stats.pending_bytes)]);
        more.row(vec![
            "acked journal".into(),
            format!("{} entries", s.stats.acked_journal),
        ]);
        more.row(vec![
            "pull cursor".into(),
            s.cursor.as_ref().map_or("- (no pull yet)".into(), |c| {
                let snapshot = if c.after.is_some() {
                    ", in a snapshot"
                } else {
                    ""
                };
                format!("{}{snapshot}", position(&c.position))
            }),
        ]);
        more.row(vec![
            "known position".into(),
            s.known.as_ref().map_or("-".into(), position),
        ]);
        let regressions = match (&s.pending_regression, s.regressions.last()) {
            (Some(p), _) => style.alert(&format!(
                "pending: the server went back to seq {}; not yet re-queued",
                p.head.seq
            )),
            (None, Some(last)) => format!(
                "{} (last: back to seq {} {}, {} re-queued, {} unrecoverable)",
                s.regressions.len(),
                last.regression.head.seq,
                relative(last.at, now),
                last.requeued,
                last.unrecoverable
            ),
            (None, None) => "none".into(),
        };
        more.row(vec!["regressions".into(), regressions]);
        more.write(out, style)
    };
    w(out).map_err(io_failure)?;
    Ok(0)
}

fn matches(state: &OpState, filter: Option<StateFilter>) -> bool {
    let quarantined =
        matches!(state, OpState::Dead { reason } if reason.starts_with("quarantined: "));
    match filter {
        None => true,
        Some(StateFilter::Ready) => matches!(state, OpState::Ready),
        Some(StateFilter::InFlight) => matches!(state, OpState::InFlight { .. }),
        Some(StateFilter::Waiting) => matches!(state, OpState::Waiting { .. }),
        Some(StateFilter::Dead) => matches!(state, OpState::Dead { .. }),
        Some(StateFilter::Deferred) => matches!(state, OpState::Deferred),
        Some(StateFilter::Quarantined) => quarantined,
    }
}

/// `COLLECTION/ID` as an entity key.
pub fn parse_entity(text: &str) -> Result<EntityKey, Failure> {
    match text.split_once('/') {
        Some((c, id)) if !c.is_empty() && !id.is_empty() => Ok(EntityKey::new(c, id)),
        _ => Err(Failure {
            code: EXIT_INPUT,
            message: format!("--entity {text:?}: expected COLLECTION/ID"),
        }),
    }
}

/// `list`.
#[allow(clippy::too_many_arguments)]
pub fn list(
    dir: &Path,
    state: Option<StateFilter>,
    entity: Option<&str>,
    limit: usize,
    json: bool,
    show_payload: bool,
    out: &mut dyn Write,
    style: &Style,
) -> Result<i32, Failure> {
    let entity = entity.map(parse_entity).transpose()?;
    let q = read_only(dir)?;
    let dead = match state {
        Some(StateFilter::Dead | StateFilter::Quarantined) => Some(true),
        Some(_) => Some(false),
        None => None,
    };
    let mut found = Vec::new();
    let mut after = None;
    let mut more = false;
    'pages: loop {
        let page = q
            .list(&ListFilter {
                entity: entity.clone(),
                dead,
                limit: Some(PAGE),
                after_seq: after,
            })
            .map_err(storage)?;
        for op in &page {
            if !matches(&op.state, state) {
                continue;
            }
            if found.len() == limit {
                more = true;
                break 'pages;
            }
            found.push(op.clone());
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.seq),
            _ => break,
        }
    }
    let now = now_ms();
    let entity_text = |e: &Option<EntityKey>| {
        e.as_ref().map_or("<damaged key>".into(), |e| {
            format!("{}/{}", e.collection, e.id)
        })
    };
    let next = |op: &cpc_storage::InspectedOp| match (&op.state, op.wake_at) {
        (OpState::Ready, _) => "now".to_owned(),
        (_, Some(at)) => relative(at, now),
        _ => "-".to_owned(),
    };
    if json {
        let items: Vec<_> = found
            .iter()
            .map(|op| {
                let mut v = json!({
                    "seq": op.seq,
                    "id": op.id.to_string(),
                    "entity": op.entity.as_ref().map(|e| json!({"collection": e.collection, "id": e.id})),
                    "kind": op.op.as_ref().ok().map(|o| kind_name(&o.kind)),
                    "priority": priority_name(op.priority),
                    "state": op.state.name(),
                    "attempts": op.attempts,
                    "next_attempt_ms": op.wake_at,
                    "last_error": op.last_error,
                    "payload_bytes": op.payload_len,
                    "damaged": op.op.as_ref().err(),
                });
                if show_payload {
                    if let (Ok(o), Some(map)) = (&op.op, v.as_object_mut()) {
                        map.insert("payload".into(), json!(payload(&o.payload)));
                    }
                }
                v
            })
            .collect();
        let doc = json!({"operations": items, "more": more});
        writeln!(out, "{doc:#}").map_err(io_failure)?;
        return Ok(0);
    }
    let mut header = vec![
        "seq",
        "id",
        "entity",
        "kind",
        "priority",
        "state",
        "attempts",
        "next",
        "last error",
        "size",
    ];
    if show_payload {
        header.push("payload");
    }
    let mut t = Table::new(&header);
    for op in &found {
        let mut row = vec![
            op.seq.to_string(),
            op.id.to_string(),
            entity_text(&op.entity),
            match &op.op {
                Ok(o) => clean(&kind_name(&o.kind)),
                Err(_) => style.alert("damaged"),
            },
            priority_name(op.priority).into(),
            op.state.name().into(),
            op.attempts.to_string(),
            next(op),
            op.last_error.as_deref().map_or("-".into(), clean),
            size(op.payload_len),
        ];
        if show_payload {
            row.push(op.op.as_ref().map_or("-".into(), |o| payload(&o.payload)));
        }
        t.row(row);
    }
    t.write(out, style).map_err(io_failure)?;
    if more {
        writeln!(out, "… more (raise --limit)").map_err(io_failure)?;
    }
    Ok(0)
}

/// `watch`: the counts, redrawn every `interval_ms` (the screen cleared
/// on a terminal), `count` times or until interrupted.
pub fn watch(
    dir: &Path,
    interval_ms: u64,
    count: Option<u64>,
    out: &mut dyn Write,
    style: &Style,
) -> Result<i32, Failure> {
    let q = read_only(dir)?;
    let mut shown = 0u64;
    loop {
        let s = read_status(&q)?;
        let mut frame = Vec::new();
        if style.terminal {
            // Home and clear: the table is redrawn in place, like `top`.
            frame.extend_from_slice(b"\x1b[H\x1b[2J");
        }
        let now = now_ms();
        let w = |f: &mut Vec<u8>| -> std::io::Result<()> {
            writeln!(
                f,
                "{}  (every {}; Ctrl-C to stop)",
                style.bold(&format!("cpc-sync watch {}", dir.display())),
                age(interval_ms)
            )?;
            writeln!(f)?;
            counts(&s.stats, f, style)?;
            writeln!(f)?;
            writeln!(
                f,
                "oldest pending {}   acked journal {}   wal {}",
                s.oldest.map_or("-".into(), |t| relative(t, now)),
                s.stats.acked_journal,
                size(s.files.wal)
            )
        };
        w(&mut frame).map_err(io_failure)?;
        out.write_all(&frame).map_err(io_failure)?;
        out.flush().map_err(io_failure)?;
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(interval_ms));
    }
}

/// `verify`.
pub fn verify(dir: &Path, out: &mut dyn Write, style: &Style) -> Result<i32, Failure> {
    let q = read_only(dir)?;
    let v = q.verify().map_err(storage)?;
    let w = |out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            out,
            "checked {} operations, {} acked journal entries",
            v.operations, v.journal
        )?;
        for (what, why) in &v.damaged {
            writeln!(out, "{}: {what}: {}", style.alert("damaged"), clean(why))?;
        }
        if v.quarantined > 0 {
            writeln!(
                out,
                "{}: {} records were quarantined earlier (their operations are dead letters; `list --state quarantined`)",
                style.alert("quarantined"),
                v.quarantined
            )?;
        }
        if v.damaged.is_empty() && v.quarantined == 0 {
            writeln!(out, "ok: every record decodes")?;
        }
        Ok(())
    };
    w(out).map_err(io_failure)?;
    Ok(if v.damaged.is_empty() && v.quarantined == 0 {
        0
    } else {
        EXIT_DAMAGED
    })
}

/// `export`: every stored operation that decodes, as JSON lines on
/// `out`; the damaged ones are named on `err` (exit 1).
pub fn export(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Failure> {
    let q = read_only(dir)?;
    let mut after = None;
    let mut skipped = 0u64;
    loop {
        let page = q
            .list(&ListFilter {
                limit: Some(PAGE),
                after_seq: after,
                ..ListFilter::default()
            })
            .map_err(storage)?;
        for op in &page {
            match &op.op {
                Ok(o) => {
                    let line = serde_json::to_string(&Line::of(o)).map_err(|e| Failure {
                        code: EXIT_INPUT,
                        message: e.to_string(),
                    })?;
                    writeln!(out, "{line}").map_err(io_failure)?;
                }
                Err(why) => {
                    skipped += 1;
                    writeln!(
                        err,
                        "not exported: operation {} (seq {}): {why}",
                        op.id, op.seq
                    )
                    .map_err(io_failure)?;
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.seq),
            _ => break,
        }
    }
    Ok(if skipped == 0 { 0 } else { EXIT_DAMAGED })
}
