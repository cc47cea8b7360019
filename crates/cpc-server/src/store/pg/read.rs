//! Pull pages on PostgreSQL: one REPEATABLE READ, read-only transaction
//! per page (its rows, cursor and head agree), rows streamed into the
//! shared page assembly of `store/page.rs` until the page is full. And
//! the exported log.

use std::io::Write;

use cpc_protocol::{Change, Cursor, EntityKey, Hex64, Position, PullRequest, ResetReason};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

use super::super::page::{self, envelope_room, ChangeRow, Fill, Plan, PullPage};
use super::super::schema::from_sql;
use super::super::StoreError;
use super::pg_err;

/// The fingerprint of this history at `seq` (0 at seq 0), if it has that
/// row.
async fn fp_at(
    client: &tokio_postgres::Transaction<'_>,
    seq: u64,
) -> Result<Option<u64>, StoreError> {
    if seq == 0 {
        return Ok(Some(0));
    }
    Ok(client
        // A live change row, or what compaction kept of one.
        .query_opt(
            "SELECT fp FROM cpc_changes WHERE seq = $1
             UNION ALL SELECT fp FROM cpc_history WHERE seq = $1",
            &[&(seq as i64)],
        )
        .await
        .map_err(pg_err)?
        .map(|r| r.try_get::<_, i64>(0))
        .transpose()
        .map_err(pg_err)?
        .map(|fp| fp as u64))
}

/// Whether `p` is a position of this history: this store, at or below the
/// head, the same fingerprint at its seq (§8).
pub(crate) async fn in_history(
    client: &tokio_postgres::Transaction<'_>,
    store_id: &str,
    head_seq: u64,
    p: &Position,
) -> Result<bool, StoreError> {
    let fp = match cpc_remote::rules::reachable(store_id, head_seq, p) {
        true => fp_at(client, p.seq).await?,
        false => None,
    };
    cpc_remote::rules::in_history(store_id, head_seq, p, |_| Ok(fp))
}

/// Reads the page `request` asks for, or `HistoryDiverged` when its
/// `known` is not in this history.
pub(crate) async fn read_page(
    client: &mut deadpool_postgres::Client,
    store_id: &str,
    request: &PullRequest,
    skip_first: bool,
) -> Result<PullPage, StoreError> {
    let tx = snapshot_tx(client).await?;
    let meta = tx
        .query_one(
            "SELECT head_seq, head_fp, compacted_through FROM cpc_meta WHERE id = 1",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let head = Position {
        store_id: store_id.to_owned(),
        seq: from_sql(meta.try_get(0).map_err(pg_err)?)?,
        fp: Hex64(meta.try_get::<_, i64>(1).map_err(pg_err)? as u64),
    };
    let compacted_through = from_sql(meta.try_get(2).map_err(pg_err)?)?;
    if let Some(known) = &request.known {
        if !in_history(&tx, store_id, head.seq, known).await? {
            return Err(StoreError::HistoryDiverged { head });
        }
    }
    let cursor_in_history = match &request.cursor {
        Some(c) => in_history(&tx, store_id, head.seq, &c.position()).await?,
        None => false,
    };
    let page = match page::plan(request, &head, compacted_through, cursor_in_history) {
        Plan::Snapshot { base, from, reset } => {
            snapshot_page(&tx, request, &head, &base, from, reset).await
        }
        Plan::Changes(from) => change_page(&tx, request, &head, &from, skip_first).await,
    }?;
    tx.commit().await.map_err(pg_err)?;
    Ok(page)
}

/// A row of `cpc_changes`, or of `cpc_entities` joined with its last
/// change.
fn change_from_row(r: &Row) -> Result<(Change, Option<u64>), StoreError> {
    ChangeRow {
        seq: r.try_get(0).map_err(pg_err)?,
        collection: r.try_get(1).map_err(pg_err)?,
        id: r.try_get(2).map_err(pg_err)?,
        version: r.try_get(3).map_err(pg_err)?,
        deleted: r.try_get(4).map_err(pg_err)?,
        payload: r.try_get(5).map_err(pg_err)?,
        wall_ms: r.try_get(6).map_err(pg_err)?,
        logical: r.try_get(7).map_err(pg_err)?,
        node: r.try_get(8).map_err(pg_err)?,
        origin_client: r.try_get(9).map_err(pg_err)?,
        origin_op: r.try_get(10).map_err(pg_err)?,
        fp: r.try_get(11).map_err(pg_err)?,
    }
    .into_change()
}

/// A read-only transaction on one snapshot: a page's rows, cursor and head
/// (or an export's rows) agree.
async fn snapshot_tx(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>, StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_err)?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{}ms'",
        super::STATEMENT_TIMEOUT.as_millis()
    ))
    .await
    .map_err(pg_err)?;
    Ok(tx)
}

/// Rows fetched from a portal at a time: a page stops fetching once it is
/// full, so the database sends at most this many rows beyond it (a page's
/// `LIMIT` may be thousands of rows of up to 1 MiB each).
const FETCH: i32 = 64;

/// Runs `sql` and hands its rows to `each` in order until it answers
/// `false` or the rows run out, fetching [`FETCH`] at a time. Every row
/// is read before the next statement goes on the connection.
async fn each_row(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    each: &mut (dyn FnMut(&Row) -> Result<bool, StoreError> + Send),
) -> Result<(), StoreError> {
    let statement = tx.prepare(sql).await.map_err(pg_err)?;
    let portal = tx.bind(&statement, params).await.map_err(pg_err)?;
    loop {
        let rows = tx.query_portal(&portal, FETCH).await.map_err(pg_err)?;
        let fetched = rows.len();
        for r in &rows {
            if !each(r)? {
                return Ok(());
            }
        }
        if fetched < FETCH as usize {
            return Ok(());
        }
    }
}

/// The scope's collections as a query parameter (`= ANY($n)`).
fn scope(request: &PullRequest, column: &str, n: usize) -> String {
    match request.collections {
        None => String::new(),
        Some(_) => format!(" AND {column} = ANY(${n})"),
    }
}

/// §7.3: the change-log rows above the cursor, in `seq` order.
async fn change_page(
    tx: &tokio_postgres::Transaction<'_>,
    request: &PullRequest,
    head: &Position,
    from: &Cursor,
    skip_first: bool,
) -> Result<PullPage, StoreError> {
    let upper = page::change_window(request, from, head);
    let sql = format!(
        "SELECT seq, collection, id, version, deleted, payload, wall_ms, logical, node,
                origin_client, origin_op, fp
         FROM cpc_changes WHERE seq > $1 AND seq <= $2{} ORDER BY seq LIMIT $3",
        scope(request, "collection", 4)
    );
    let (after, upto, limit) = (from.seq as i64, upper as i64, request.limit as i64);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after, &upto, &limit];
    if let Some(names) = &request.collections {
        params.push(names);
    }
    let room = envelope_room(request.max_bytes);
    let mut fill = Fill::new();
    let mut cut = false;
    each_row(tx, &sql, &params, &mut |r| {
        let (change, fp) = change_from_row(r)?;
        cut = !fill.push(&change, fp, room)?;
        Ok(!cut)
    })
    .await?;
    let upper_fp = if request.collections.is_some() {
        fp_at(tx, upper).await?
    } else {
        None
    };
    page::finish_changes(fill, cut, request, from, upper, upper_fp, head, skip_first)
}

/// §7.4: the scope's live entities after `from`, in key order (bytewise:
/// the columns are `COLLATE "C"`), against the base position `base`.
async fn snapshot_page(
    tx: &tokio_postgres::Transaction<'_>,
    request: &PullRequest,
    head: &Position,
    base: &Position,
    from: Option<EntityKey>,
    reset: Option<ResetReason>,
) -> Result<PullPage, StoreError> {
    let limit = request.limit.saturating_add(1) as i64;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit];
    let after = match &from {
        None => String::new(),
        Some(k) => {
            params.push(&k.collection);
            params.push(&k.id);
            r#" AND (e.collection, e.id) > ($2 COLLATE "C", $3 COLLATE "C")"#.to_owned()
        }
    };
    let scope = scope(request, "e.collection", params.len() + 1);
    if let Some(names) = &request.collections {
        params.push(names);
    }
    let sql = format!(
        "SELECT e.last_seq, e.collection, e.id, e.version, e.deleted, e.payload, e.wall_ms,
                e.logical, e.node, c.origin_client, c.origin_op, c.fp
         FROM cpc_entities e LEFT JOIN cpc_changes c ON c.seq = e.last_seq
         WHERE NOT e.deleted{after}{scope} ORDER BY e.collection, e.id LIMIT $1"
    );
    let room = envelope_room(request.max_bytes);
    let mut fill = Fill::new();
    let mut more = false;
    each_row(tx, &sql, &params, &mut |r| {
        if fill.len() as u64 == request.limit {
            more = true;
            return Ok(false);
        }
        let (change, _) = change_from_row(r)?;
        more = !fill.push(&change, None, room)?;
        Ok(!more)
    })
    .await?;
    page::finish_snapshot(fill, more, request, base, from, reset, head)
}

/// Writes the committed change log of the PostgreSQL store as JSON lines,
/// in `seq` order (as [`crate::export_log`] does for the embedded store),
/// read in one snapshot, [`FETCH`] rows at a time. Answers the rows
/// written.
pub(crate) async fn export_log(
    client: &mut tokio_postgres::Client,
    out: &mut (dyn Write + Send),
) -> Result<u64, StoreError> {
    let tx = snapshot_tx(client).await?;
    let horizon: i64 = tx
        .query_one("SELECT compacted_through FROM cpc_meta WHERE id = 1", &[])
        .await
        .map_err(pg_err)?
        .try_get(0)
        .map_err(pg_err)?;
    let mut n = 0u64;
    let mut failed = None;
    // Compaction is a prefix: every reclaimed seq is below the rows left.
    each_row(
        &tx,
        "SELECT seq, fp FROM cpc_history ORDER BY seq",
        &[],
        &mut |r| {
            let seq: i64 = r.try_get(0).map_err(pg_err)?;
            let fp: i64 = r.try_get(1).map_err(pg_err)?;
            if let Err(e) = writeln!(out, "{}", super::super::compacted_line(seq, fp)?) {
                failed = Some(e);
                return Ok(false);
            }
            n += 1;
            Ok(true)
        },
    )
    .await?;
    if let Some(e) = failed.take() {
        return Err(StoreError::Io("writing the log", e));
    }
    each_row(
        &tx,
        "SELECT seq, fp, collection, id, version, deleted, kind, payload, wall_ms, logical,
                node, origin_client, origin_op, committed_at_ms
         FROM cpc_changes ORDER BY seq",
        &[],
        &mut |r| {
            let get_i = |i: usize| -> Result<i64, StoreError> { r.try_get(i).map_err(pg_err) };
            let line = super::super::LogRow {
                seq: get_i(0)?,
                fp: get_i(1)?,
                collection: r.try_get(2).map_err(pg_err)?,
                id: r.try_get(3).map_err(pg_err)?,
                version: get_i(4)?,
                deleted: r.try_get(5).map_err(pg_err)?,
                kind: r.try_get(6).map_err(pg_err)?,
                payload: r.try_get(7).map_err(pg_err)?,
                wall_ms: get_i(8)?,
                logical: get_i(9)?,
                node: get_i(10)?,
                origin_client: r.try_get(11).map_err(pg_err)?,
                origin_op: r.try_get(12).map_err(pg_err)?,
                committed_at_ms: get_i(13)?,
            }
            .to_json(horizon)?;
            if let Err(e) = writeln!(out, "{line}") {
                failed = Some(e);
                return Ok(false);
            }
            n += 1;
            Ok(true)
        },
    )
    .await?;
    if let Some(e) = failed {
        return Err(StoreError::Io("writing the log", e));
    }
    out.flush()
        .map_err(|e| StoreError::Io("writing the log", e))?;
    tx.commit().await.map_err(pg_err)?;
    Ok(n)
}
