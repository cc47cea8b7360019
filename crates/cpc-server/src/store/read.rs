//! The embedded store's read side: pull pages (docs/protocol.md §7.3–7.5)
//! read on their own read-only connections, so a pull never waits for the
//! writer nor holds it up (WAL: readers see the last commit). Each page is
//! read in one read transaction, so its rows, its cursor and the head it
//! reports agree. Which page, and its assembly, are `store/page.rs`'s.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cpc_protocol::{Change, Cursor, EntityKey, Hex64, Position, PullRequest, ResetReason};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension};
use tokio::sync::Semaphore;

use super::page::{self, envelope_room, ChangeRow, Fill, Plan, PullPage};
use super::schema::{from_sql, to_sql, DB_FILE};
use super::StoreError;

/// Read connections kept open at most (and pulls read at once).
const READERS: usize = 8;

/// The pool of read-only connections.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    pub(crate) fn new(dir: &std::path::Path) -> Readers {
        Readers {
            path: dir.join(DB_FILE),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(READERS)),
        }
    }

    /// Runs `read` on a read connection, off the async threads.
    pub(crate) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = match this.idle.lock().ok().and_then(|mut idle| idle.pop()) {
                Some(conn) => conn,
                None => this.open()?,
            };
            let result = read(&conn);
            if let Ok(mut idle) = this.idle.lock() {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Io("reading a pull page", std::io::Error::other(e)))?
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    /// Closes the idle connections (the store is closing).
    pub(crate) fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

/// The fingerprint of this history at `seq` (0 at seq 0), if it has that
/// row. Fingerprints survive compaction (§7.5).
pub(crate) fn fp_at(conn: &Connection, seq: u64) -> Result<Option<u64>, StoreError> {
    if seq == 0 {
        return Ok(Some(0));
    }
    // A live change row, or what compaction kept of one.
    Ok(conn
        .prepare_cached(
            "SELECT fp FROM changes WHERE seq = ?1 UNION ALL SELECT fp FROM history WHERE seq = ?1",
        )?
        .query_row([to_sql(seq)], |r| r.get::<_, i64>(0))
        .optional()?
        .map(|fp| fp as u64))
}

/// Whether `p` is a position of this history: this store, at or below the
/// head, the same fingerprint at its seq (§8).
pub(crate) fn in_history(
    conn: &Connection,
    store_id: &str,
    head_seq: u64,
    p: &Position,
) -> Result<bool, StoreError> {
    cpc_remote::rules::in_history(store_id, head_seq, p, |seq| fp_at(conn, seq))
}

/// Reads the page `request` asks for, or `HistoryDiverged` when its
/// `known` is not in this history.
pub(crate) fn read_page(
    conn: &Connection,
    store_id: &str,
    request: &PullRequest,
    skip_first: bool,
) -> Result<PullPage, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let (head_seq, head_fp, compacted_through): (i64, i64, i64) = tx.query_row(
        "SELECT head_seq, head_fp, compacted_through FROM meta WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let head = Position {
        store_id: store_id.to_owned(),
        seq: from_sql(head_seq)?,
        fp: Hex64(head_fp as u64),
    };
    if let Some(known) = &request.known {
        if !in_history(&tx, store_id, head.seq, known)? {
            return Err(StoreError::HistoryDiverged { head });
        }
    }
    let cursor_in_history = match &request.cursor {
        Some(c) => in_history(&tx, store_id, head.seq, &c.position())?,
        None => false,
    };
    let page = match page::plan(
        request,
        &head,
        from_sql(compacted_through)?,
        cursor_in_history,
    ) {
        Plan::Snapshot { base, from, reset } => {
            snapshot_page(&tx, request, &head, &base, from, reset)
        }
        Plan::Changes(from) => change_page(&tx, request, &head, &from, skip_first),
    }?;
    tx.finish()?;
    Ok(page)
}

/// `SQL IN (?, ?, …)` over the scope's collections, numbered from `first`.
fn scope_clause(column: &str, request: &PullRequest, first: usize) -> (String, Vec<SqlValue>) {
    match &request.collections {
        None => (String::new(), Vec::new()),
        Some(names) => {
            let marks: Vec<String> = (0..names.len())
                .map(|i| format!("?{}", first + i))
                .collect();
            (
                format!(" AND {column} IN ({})", marks.join(", ")),
                names.iter().map(|n| SqlValue::Text(n.clone())).collect(),
            )
        }
    }
}

/// A row of `changes` or of `entities` joined with its last change.
fn change_from_row(r: &rusqlite::Row<'_>) -> Result<(Change, Option<u64>), StoreError> {
    ChangeRow {
        seq: r.get(0)?,
        collection: r.get(1)?,
        id: r.get(2)?,
        version: r.get(3)?,
        deleted: r.get(4)?,
        payload: r.get(5)?,
        wall_ms: r.get(6)?,
        logical: r.get(7)?,
        node: r.get(8)?,
        origin_client: r.get(9)?,
        origin_op: r.get(10)?,
        fp: r.get(11)?,
    }
    .into_change()
}

/// §7.3: the change-log rows above the cursor, in `seq` order.
fn change_page(
    conn: &Connection,
    request: &PullRequest,
    head: &Position,
    from: &Cursor,
    skip_first: bool,
) -> Result<PullPage, StoreError> {
    let upper = page::change_window(request, from, head);
    let (scope, mut args) = scope_clause("collection", request, 4);
    let sql = format!(
        "SELECT seq, collection, id, version, deleted, payload, wall_ms, logical, node,
                origin_client, origin_op, fp
         FROM changes WHERE seq > ?1 AND seq <= ?2{scope} ORDER BY seq LIMIT ?3"
    );
    let mut all = vec![
        SqlValue::Integer(to_sql(from.seq)),
        SqlValue::Integer(to_sql(upper)),
        SqlValue::Integer(to_sql(request.limit)),
    ];
    all.append(&mut args);
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(all))?;
    let room = envelope_room(request.max_bytes);
    let mut fill = Fill::new();
    let mut cut = false;
    while let Some(r) = rows.next()? {
        let (change, fp) = change_from_row(r)?;
        if !fill.push(&change, fp, room)? {
            cut = true;
            break;
        }
    }
    drop(rows);
    let upper_fp = if request.collections.is_some() {
        fp_at(conn, upper)?
    } else {
        None
    };
    page::finish_changes(fill, cut, request, from, upper, upper_fp, head, skip_first)
}

/// §7.4: the scope's live entities after `from`, in key order, against the
/// base position `base`.
fn snapshot_page(
    conn: &Connection,
    request: &PullRequest,
    head: &Position,
    base: &Position,
    from: Option<EntityKey>,
    reset: Option<ResetReason>,
) -> Result<PullPage, StoreError> {
    let (after, mut args) = match &from {
        None => (String::new(), Vec::new()),
        Some(k) => (
            " AND (e.collection, e.id) > (?2, ?3)".to_owned(),
            vec![
                SqlValue::Text(k.collection.clone()),
                SqlValue::Text(k.id.clone()),
            ],
        ),
    };
    let (scope, mut scope_args) = scope_clause("e.collection", request, 2 + args.len());
    let sql = format!(
        "SELECT e.last_seq, e.collection, e.id, e.version, e.deleted, e.payload, e.wall_ms,
                e.logical, e.node, c.origin_client, c.origin_op, c.fp
         FROM entities e LEFT JOIN changes c ON c.seq = e.last_seq
         WHERE e.deleted = 0{after}{scope} ORDER BY e.collection, e.id LIMIT ?1"
    );
    let mut all = vec![SqlValue::Integer(to_sql(request.limit.saturating_add(1)))];
    all.append(&mut args);
    all.append(&mut scope_args);
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(all))?;
    let room = envelope_room(request.max_bytes);
    let mut fill = Fill::new();
    let mut more = false;
    while let Some(r) = rows.next()? {
        if fill.len() as u64 == request.limit {
            more = true;
            break;
        }
        let (change, _) = change_from_row(r)?;
        if !fill.push(&change, None, room)? {
            more = true;
            break;
        }
    }
    drop(rows);
    page::finish_snapshot(fill, more, request, base, from, reset, head)
}
