//! Acknowledged means durable (docs/protocol.md §6.6, §11.1 items 3 and
//! 4): operations answered `applied` survive a restart, and their replays
//! answer `already_applied` with the first version and seq.

use std::time::{Duration, Instant};

use cpc_protocol::{Outcome, WireOp, HEALTH_BODY};

use crate::error::Error;
use crate::harness::{
    applied, describe, ensure, fail, outcome, push_body, Checked, Ctx, NotPassed,
};
use crate::http::{Http, Request};

/// How long a restarted server may take to answer health again.
const COME_BACK: Duration = Duration::from_secs(60);

/// Waits until `GET /v1/health` answers `cpc-sync ok`, each try on a new
/// connection (the old ones went with the old process).
async fn wait_for_health(base_url: &str) -> Result<Http, Error> {
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    while started.elapsed() < COME_BACK {
        let http = Http::new(base_url)?;
        match http.send(&Request::get("/v1/health")).await {
            Ok(a) if a.status == 200 && a.body == HEALTH_BODY.as_bytes() => return Ok(http),
            Ok(a) => last = a.describe(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::Restart(format!(
        "the server did not answer /v1/health within {} s: {last}",
        COME_BACK.as_secs()
    )))
}

/// Push, restart, replay: the replays answer `already_applied` with the
/// version and seq of the first answer, in the same store.
pub(crate) async fn durable_after_restart(cx: &Ctx<'_>) -> Checked {
    let Some(hook) = &cx.target.restart else {
        return Err(NotPassed::Skipped("no restart hook (--restart-cmd)".into()));
    };
    let ops: Vec<WireOp> = (0..3).map(|_| cx.fresh_op("durable")).collect();
    let first = cx.push(&ops).await?;
    let was: Vec<_> = ops
        .iter()
        .map(|o| applied(&first, o))
        .collect::<Result<_, _>>()?;
    hook.restart()
        .await
        .map_err(|e| NotPassed::Failed(Error::Restart(e).to_string()))?;
    let http = wait_for_health(&cx.target.base_url).await?;
    let ids: Vec<_> = ops.iter().map(|o| o.id).collect();
    let body = serde_json::to_vec(&cx.request(&ops)).unwrap_or_default();
    let again = push_body(&http, &cx.target.token, body, &ids).await?;
    for (op, was) in ops.iter().zip(was) {
        match outcome(&again, op)? {
            Outcome::AlreadyApplied(now) if *now == was => {}
            other => fail!(
                "after the restart, the replay of {} (applied at version {}, seq {}) \
                 answered {}",
                op.id,
                was.version,
                was.seq,
                describe(other)
            ),
        }
    }
    ensure!(
        again.head.store_id == first.head.store_id && again.head.seq >= first.head.seq,
        "the head went from {:?} before the restart to {:?} after it",
        first.head,
        again.head
    );
    Ok(())
}
