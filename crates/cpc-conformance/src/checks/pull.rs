//! `POST /v1/pull` (docs/protocol.md §7): every page is held to the
//! client's rules (`check_pull_page`) first; then snapshots list what was
//! pushed and resume page by page, change pages continue gaplessly after a
//! cursor with each change's origin, a long poll wakes on a push, and a
//! cursor or `known` from another history gets a snapshot or a 409.
//!
//! Each check writes to a collection of its own (`conf-<run>-<n>`) and
//! pulls only that scope, so other clients' writes never reach its pages.

use std::time::{Duration, Instant};

use cpc_protocol::{
    check_pull_page, Cursor, EntityKey, Hex64, Kind, ProblemCode, PullRequest, PullResponse,
    ResetReason, WireOp,
};

use crate::harness::{applied, context, ensure, expect_problem, fail, Checked, Ctx, NotPassed};
use crate::http::{Auth, Request};

/// The pull path.
const PULL: &str = "/v1/pull";
/// The page size every check asks for (the smallest a server must accept).
const MAX_BYTES: u64 = 2 << 20;

/// A pull of `collection`'s scope from `cursor`.
fn request(cx: &Ctx<'_>, collection: &str, cursor: Option<Cursor>, limit: u64) -> PullRequest {
    PullRequest {
        protocol: 1,
        client_id: cx.target.client_id.clone(),
        known: None,
        cursor,
        limit,
        max_bytes: MAX_BYTES,
        wait_ms: 0,
        collections: Some(vec![collection.to_owned()]),
    }
}

/// Sends a pull and checks the 200 with the client's page rules.
async fn pull(cx: &Ctx<'_>, request: &PullRequest) -> Result<PullResponse, NotPassed> {
    let body = serde_json::to_vec(request).unwrap_or_default();
    let answer = cx
        .http
        .send(&Request::post_json(
            PULL,
            Auth::Bearer(&cx.target.token),
            body,
        ))
        .await?;
    ensure!(
        answer.status == 200,
        "a valid pull answered {}",
        answer.describe()
    );
    ensure!(
        answer.media_type() == "application/json",
        "a pull answer is application/json, not {:?}",
        answer.header("content-type").unwrap_or("")
    );
    let page: PullResponse = serde_json::from_slice(&answer.body).map_err(|e| {
        NotPassed::Failed(format!(
            "the 200 answer is not a pull page ({e}): {}",
            answer.describe()
        ))
    })?;
    let max_payload = cx.limits()?.max_payload_bytes;
    check_pull_page(request, &page, answer.body.len() as u64, max_payload)
        .map_err(|e| NotPassed::Failed(format!("a page breaks the client's rules: {e}")))?;
    Ok(page)
}

/// A collection of this check's own.
fn collection(cx: &Ctx<'_>, what: &str) -> String {
    let key = cx.entity(what);
    format!("conf-{}", key.id)
}

/// Pushes `n` creates into `collection`; answers the ops and their seqs.
async fn write(cx: &Ctx<'_>, collection: &str, n: usize) -> Result<Vec<(WireOp, u64)>, NotPassed> {
    let ops: Vec<WireOp> = (0..n)
        .map(|i| {
            let key = EntityKey {
                collection: collection.to_owned(),
                id: format!("e{i}-{}", cx.op_id()),
            };
            cx.op(&key, Kind::Create, format!("v{i}").as_bytes(), Some(0))
        })
        .collect();
    let answer = cx.push(&ops).await?;
    ops.into_iter()
        .map(|op| Ok((op.clone(), applied(&answer, &op)?.seq)))
        .collect()
}

/// Pulls `collection` from nothing to the end of the snapshot, `limit` per
/// page: the entities listed, the final cursor.
async fn snapshot(
    cx: &Ctx<'_>,
    collection: &str,
    limit: u64,
) -> Result<(Vec<EntityKey>, Cursor, usize), NotPassed> {
    let mut listed = Vec::new();
    let mut req = request(cx, collection, None, limit);
    for pages in 1..=1000 {
        let page = pull(cx, &req).await?;
        ensure!(
            page.snapshot.is_some(),
            "a pull with cursor {:?} answered a change page; a snapshot was due",
            req.cursor.as_ref().map(|c| c.seq)
        );
        if pages == 1 {
            ensure!(
                page.reset.map(|r| r.reason) == Some(ResetReason::Initial),
                "the first page of a first pull has reset {:?}, not initial",
                page.reset
            );
        }
        listed.extend(page.changes.iter().map(|c| c.entity.clone()));
        if page.cursor.after.is_none() {
            return Ok((listed, page.cursor, pages));
        }
        req.cursor = Some(page.cursor);
    }
    fail!("a snapshot of a handful of entities did not end in 1000 pages")
}

/// A first pull is a snapshot of the scope in key order, page by page,
/// resumable from each page's cursor, listing every live entity once.
pub(crate) async fn pull_snapshot(cx: &Ctx<'_>) -> Checked {
    let c = collection(cx, "pull-snapshot");
    let written = write(cx, &c, 5).await?;
    let (listed, _, pages) = snapshot(cx, &c, 2).await?;
    let mut want: Vec<EntityKey> = written.iter().map(|(o, _)| o.entity.clone()).collect();
    want.sort_by(|a, b| (&a.collection, &a.id).cmp(&(&b.collection, &b.id)));
    ensure!(
        listed == want,
        "the snapshot listed {listed:?}, not the five entities written, in key order"
    );
    ensure!(
        pages >= 3,
        "five entities in pages of two took {pages} pages"
    );
    Ok(())
}

/// After a snapshot, change pages list the next writes in `seq` order,
/// above the cursor, each with the seq its push answered and this
/// client's origin; the cursor advances while `has_more`.
pub(crate) async fn pull_changes_after_cursor(cx: &Ctx<'_>) -> Checked {
    let c = collection(cx, "pull-changes");
    write(cx, &c, 1).await?;
    let (_, cursor, _) = snapshot(cx, &c, 100).await?;
    let written = write(cx, &c, 3).await?;
    let mut req = request(cx, &c, Some(cursor), 1);
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = pull(cx, &req).await?;
        ensure!(
            page.snapshot.is_none(),
            "a change cursor got a snapshot page"
        );
        seen.extend(page.changes.iter().cloned());
        if !page.has_more {
            break;
        }
        req.cursor = Some(page.cursor);
    }
    ensure!(
        seen.len() == written.len(),
        "three writes after the cursor, {} changes pulled",
        seen.len()
    );
    for (change, (op, seq)) in seen.iter().zip(&written) {
        ensure!(
            change.seq == *seq && change.entity == op.entity && change.version == 1,
            "change at seq {} ({:?} v{}) is not the write answered at seq {seq}",
            change.seq,
            change.entity,
            change.version
        );
        ensure!(
            change
                .origin
                .as_ref()
                .is_some_and(|o| o.client_id == cx.target.client_id && o.op == op.id),
            "change at seq {} does not name its origin (this client, op {})",
            change.seq,
            op.id
        );
        ensure!(
            change.payload.as_ref().map(|p| p.0.as_slice()) == Some(op.payload.0.as_slice()),
            "change at seq {} does not carry the payload written",
            change.seq
        );
    }
    Ok(())
}

/// A long poll with nothing to send waits, and is answered soon after a
/// push to its scope, with that change.
pub(crate) async fn pull_long_poll_wakes(cx: &Ctx<'_>) -> Checked {
    let c = collection(cx, "pull-long-poll");
    write(cx, &c, 1).await?;
    let (_, cursor, _) = snapshot(cx, &c, 100).await?;
    let mut req = request(cx, &c, Some(cursor), 100);
    req.wait_ms = 15_000;
    let started = Instant::now();
    let waiting = pull(cx, &req);
    let writer = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        write(cx, &c, 1).await
    };
    let (page, written) = tokio::join!(waiting, writer);
    let (page, written) = (page?, written?);
    let took = started.elapsed();
    ensure!(
        page.changes.len() == 1 && page.changes[0].seq == written[0].1,
        "the long poll answered {} changes, not the one pushed while it waited",
        page.changes.len()
    );
    ensure!(
        took < Duration::from_secs(10),
        "the long poll took {took:?}: it did not wake on the push"
    );
    Ok(())
}

/// A cursor from another store, or from another history (a fingerprint
/// this server never had at that seq), gets a snapshot with the reason.
pub(crate) async fn pull_foreign_cursor_resets(cx: &Ctx<'_>) -> Checked {
    let c = collection(cx, "pull-reset");
    write(cx, &c, 2).await?;
    let (_, cursor, _) = snapshot(cx, &c, 100).await?;
    for (label, bad, reason) in [
        (
            "another store",
            Cursor {
                store_id: format!("not-{}", cursor.store_id),
                ..cursor.clone()
            },
            ResetReason::UnknownStore,
        ),
        (
            "another fingerprint",
            Cursor {
                fp: Hex64(cursor.fp.0 ^ 1),
                ..cursor.clone()
            },
            ResetReason::Diverged,
        ),
    ] {
        let page = context(label, pull(cx, &request(cx, &c, Some(bad), 100)).await)?;
        ensure!(
            page.snapshot.is_some() && page.reset.map(|r| r.reason) == Some(reason),
            "{label}: a snapshot with reset {reason:?} was due, got reset {:?}",
            page.reset
        );
    }
    Ok(())
}

/// A pull whose `known` is not in this history is `409
/// history_diverged` with the head (§8).
pub(crate) async fn pull_known_diverged(cx: &Ctx<'_>) -> Checked {
    let c = collection(cx, "pull-known");
    write(cx, &c, 1).await?;
    let (_, cursor, _) = snapshot(cx, &c, 100).await?;
    let mut req = request(cx, &c, Some(cursor.clone()), 100);
    req.known = Some(cpc_protocol::Position {
        seq: cursor.seq + 1_000_000,
        ..cursor.position()
    });
    let answer = cx
        .http
        .send(&Request::post_json(
            PULL,
            Auth::Bearer(&cx.target.token),
            serde_json::to_vec(&req).unwrap_or_default(),
        ))
        .await?;
    let problem = expect_problem(&answer, ProblemCode::HistoryDiverged)?;
    ensure!(
        problem
            .head
            .as_ref()
            .is_some_and(|h| h.store_id == cursor.store_id && h.seq >= cursor.seq),
        "the 409 does not carry the server's head"
    );
    Ok(())
}

/// `limit`, `max_bytes`, `wait_ms` and `collections` out of range are
/// `400 bad_request` naming the member.
pub(crate) async fn pull_out_of_range(cx: &Ctx<'_>) -> Checked {
    let c = collection(cx, "pull-range");
    let good = serde_json::to_value(request(cx, &c, None, 10)).unwrap_or_default();
    for (member, value) in [
        ("limit", serde_json::json!(0)),
        ("max_bytes", serde_json::json!(1)),
        ("wait_ms", serde_json::json!(u64::from(u32::MAX))),
        ("collections", serde_json::json!([])),
    ] {
        let mut body = good.clone();
        body[member] = value;
        let answer = cx
            .http
            .send(&Request::post_json(
                PULL,
                Auth::Bearer(&cx.target.token),
                serde_json::to_vec(&body).unwrap_or_default(),
            ))
            .await?;
        let problem = context(member, expect_problem(&answer, ProblemCode::BadRequest))?;
        ensure!(
            problem.pointer.as_deref() == Some(format!("/{member}").as_str()),
            "{member}: pointer {:?}, not /{member}",
            problem.pointer
        );
    }
    Ok(())
}
