//! The change log as push answers show it (docs/protocol.md §2.3, §6.5,
//! §6.6): `head` names this store and covers every applied change; `seq`
//! is gapless in commit order, so one request's changes take consecutive
//! seqs and concurrent requests never share one.
//!
//! Across requests, a gap can only be told from another client's write
//! when the suite is the server's only writer ([`crate::Target::exclusive`],
//! the default); otherwise `seq-concurrent-pushes` checks distinctness
//! only.

use std::collections::BTreeSet;

use cpc_protocol::{OpId, PushResponse, WireOp};
use tokio::task::JoinSet;

use crate::harness::{applied, ensure, fail, push_body, Checked, Ctx, NotPassed};

/// Concurrent pushes in `seq-concurrent-pushes`.
const PUSHERS: usize = 16;
/// Operations per concurrent push.
const OPS_PER_PUSH: usize = 2;

/// The seqs at which `ops` were applied, in array order.
fn seqs(answer: &PushResponse, ops: &[WireOp]) -> Result<Vec<u64>, NotPassed> {
    ops.iter()
        .map(|o| applied(answer, o).map(|a| a.seq))
        .collect()
}

/// The seqs are consecutive.
fn consecutive(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[1] == w[0] + 1)
}

/// `head.store_id` is the `store_id` of `/v1/info`, and a later push's
/// head and seqs are not below an earlier one's.
pub(crate) async fn head_position(cx: &Ctx<'_>) -> Checked {
    let store_id = match &cx.info {
        Ok(info) => info.store_id.clone(),
        Err(e) => fail!("needs the store_id of /v1/info: {e}"),
    };
    let a = cx.fresh_op("head");
    let first = cx.push(std::slice::from_ref(&a)).await?;
    ensure!(
        first.head.store_id == store_id,
        "head.store_id {:?} is not the store_id of /v1/info, {store_id:?}",
        first.head.store_id
    );
    let b = cx.fresh_op("head");
    let second = cx.push(std::slice::from_ref(&b)).await?;
    let (sa, sb) = (applied(&first, &a)?.seq, applied(&second, &b)?.seq);
    ensure!(sb > sa, "a later push applied at seq {sb}, not after {sa}");
    ensure!(
        second.head.seq >= first.head.seq && second.head.store_id == store_id,
        "the head went from {:?} to {:?}",
        first.head,
        second.head
    );
    Ok(())
}

/// One request's changes take consecutive seqs in array order (one
/// transaction, `seq` gapless in commit order), and the next request's
/// come after them.
pub(crate) async fn seq_in_batch_consecutive(cx: &Ctx<'_>) -> Checked {
    let first: Vec<WireOp> = (0..5).map(|_| cx.fresh_op("batch-seq")).collect();
    let answer = cx.push(&first).await?;
    let s1 = seqs(&answer, &first)?;
    ensure!(
        consecutive(&s1),
        "one request's changes got seqs {s1:?}: not consecutive in array order"
    );
    let second: Vec<WireOp> = (0..3).map(|_| cx.fresh_op("batch-seq")).collect();
    let answer = cx.push(&second).await?;
    let s2 = seqs(&answer, &second)?;
    ensure!(
        consecutive(&s2),
        "one request's changes got seqs {s2:?}: not consecutive in array order"
    );
    ensure!(
        s2[0] > s1[s1.len() - 1],
        "a later request's seqs {s2:?} are not after {s1:?}"
    );
    Ok(())
}

/// 16 pushes at once: every seq distinct, each request's consecutive, each
/// head covering its own. Between a push before and one after, when the
/// suite is the only writer, the seqs are gapless and the last head is the
/// last seq.
pub(crate) async fn seq_concurrent_pushes(cx: &Ctx<'_>) -> Checked {
    let before_op = cx.fresh_op("concurrent");
    let before = cx.push(std::slice::from_ref(&before_op)).await?;
    let start = applied(&before, &before_op)?.seq;
    let mut tasks = JoinSet::new();
    for _ in 0..PUSHERS {
        let ops: Vec<WireOp> = (0..OPS_PER_PUSH)
            .map(|_| cx.fresh_op("concurrent"))
            .collect();
        let ids: Vec<OpId> = ops.iter().map(|o| o.id).collect();
        let body = serde_json::to_vec(&cx.request(&ops)).unwrap_or_default();
        let (http, token) = (cx.http.clone(), cx.target.token.clone());
        tasks.spawn(async move {
            let answer = push_body(&http, &token, body, &ids).await?;
            Ok::<_, NotPassed>((seqs(&answer, &ops)?, answer.head.seq))
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (seqs, head) = match joined {
            Ok(result) => result?,
            Err(e) => fail!("a pushing task failed: {e}"),
        };
        ensure!(
            consecutive(&seqs),
            "one of the concurrent requests got seqs {seqs:?}: not consecutive"
        );
        ensure!(
            seqs.iter().all(|s| *s <= head),
            "an answer's head.seq {head} is below its own seqs {seqs:?}"
        );
        all.extend(seqs);
    }
    let after_op = cx.fresh_op("concurrent");
    let after = cx.push(std::slice::from_ref(&after_op)).await?;
    let end = applied(&after, &after_op)?.seq;
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    ensure!(
        distinct.len() == all.len(),
        "concurrent requests share seqs: {} changes, {} distinct seqs",
        all.len(),
        distinct.len()
    );
    ensure!(
        distinct.iter().all(|s| (start + 1..end).contains(s)),
        "the concurrent changes' seqs {distinct:?} are not all between the push before \
         (seq {start}) and the one after (seq {end})"
    );
    if cx.target.exclusive {
        // The suite alone writes: start..=end is exactly its changes.
        let expected = end - start - 1;
        ensure!(
            distinct.len() as u64 == expected,
            "{} changes between seq {start} and seq {end}: the change log has {} gaps \
             (assuming no other client wrote meanwhile)",
            distinct.len(),
            expected.saturating_sub(distinct.len() as u64)
        );
        ensure!(
            after.head.seq == end,
            "head.seq {} after the last push is not its seq {end}",
            after.head.seq
        );
    }
    Ok(())
}
