//! Media type and sizes (docs/protocol.md §2.1, §2.6, §3, §6.3 rule 2):
//! 415 for anything but JSON, 413 before parsing and above
//! `max_batch_ops`, and a too-large payload rejecting its operation alone.

use cpc_protocol::{reject_code, Kind, Outcome, ProblemCode, WireOp};

use crate::harness::{
    applied, context, describe, ensure, expect_problem, fail, outcome, Checked, Ctx, NotPassed,
    PUSH,
};
use crate::http::{Answer, Auth, Request};
use crate::raw;

/// The largest body the suite sends on purpose: a limit above it is not
/// exercised (skipped).
const MAX_SENT_BYTES: u64 = 64 << 20;

/// A body that is not `application/json` (or is compressed): `415
/// unsupported_media_type`, nothing applied.
pub(crate) async fn unsupported_media_type(cx: &Ctx<'_>) -> Checked {
    let op = cx.fresh_op("media-type");
    let body = serde_json::to_vec(&cx.request(std::slice::from_ref(&op))).unwrap_or_default();
    let base = Request::post_json(PUSH, Auth::Bearer(&cx.target.token), body);
    let cases = [
        ("text/plain", base.clone().content_type(Some("text/plain"))),
        ("no Content-Type", base.clone().content_type(None)),
        (
            "charset=iso-8859-1",
            base.clone()
                .content_type(Some("application/json; charset=iso-8859-1")),
        ),
        (
            "Content-Encoding: gzip",
            base.clone().header("content-encoding", "gzip"),
        ),
    ];
    for (label, request) in &cases {
        let a = cx.http.send(request).await?;
        context(label, expect_problem(&a, ProblemCode::UnsupportedMediaType))?;
    }
    cx.expect_nothing_applied(&[op]).await
}

/// `application/json; charset=utf-8` is JSON: the push is applied.
pub(crate) async fn json_charset_accepted(cx: &Ctx<'_>) -> Checked {
    let op = cx.fresh_op("charset");
    let body = serde_json::to_vec(&cx.request(std::slice::from_ref(&op))).unwrap_or_default();
    let request = Request::post_json(PUSH, Auth::Bearer(&cx.target.token), body)
        .content_type(Some("application/json; charset=utf-8"));
    let a = cx.http.send(&request).await?;
    ensure!(
        a.status == 200,
        "a push with charset=utf-8 answered {}",
        a.describe()
    );
    // The operation was applied: a replay says so.
    let again = cx.push(std::slice::from_ref(&op)).await?;
    match outcome(&again, &op)? {
        Outcome::AlreadyApplied(_) => Ok(()),
        other => fail!(
            "the operation of the 200 was not applied: its replay answered {}",
            describe(other)
        ),
    }
}

/// Sends an over-limit body the way that lets an early answer through:
/// over `http://` with `Expect: 100-continue`, the answer read while the
/// body goes out (see `raw.rs`); over `https://` with the pooled client.
/// `429`/`503` are waited out a few times.
async fn post_large(cx: &Ctx<'_>, body: Vec<u8>) -> Result<Answer, NotPassed> {
    let plain = cx
        .target
        .base_url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    if !plain {
        return cx.post(body).await.map_err(|e| match e {
            NotPassed::Failed(why) => NotPassed::Failed(format!(
                "{why} (a server that answers 413 and closes while the body is still \
                 coming looks like this to a client sending the whole body first)"
            )),
            skipped => skipped,
        });
    }
    for _ in 0..10 {
        let a = raw::post(&cx.target.base_url, PUSH, &cx.target.token, &body).await?;
        if !matches!(a.status, 429 | 503) {
            return Ok(a);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    fail!("POST {PUSH}: still rate limited after 10 tries")
}

/// A body of `max_body_bytes + 1` bytes that is not JSON: `413 too_large`
/// naming `max_body_bytes` (the size is checked before parsing, so not
/// 400).
pub(crate) async fn too_large_body(cx: &Ctx<'_>) -> Checked {
    let max = cx.limits()?.max_body_bytes;
    if max >= MAX_SENT_BYTES {
        return Err(NotPassed::Skipped(format!(
            "max_body_bytes {max} is above the {MAX_SENT_BYTES} bytes the suite sends"
        )));
    }
    let body = vec![b'x'; usize::try_from(max + 1).unwrap_or(usize::MAX)];
    let a = post_large(cx, body).await?;
    let p = expect_problem(&a, ProblemCode::TooLarge)?;
    ensure!(
        p.limit.as_deref() == Some("max_body_bytes") && p.max == Some(max),
        "413 must name limit \"max_body_bytes\" with max {max}; got limit {:?}, max {:?}",
        p.limit,
        p.max
    );
    Ok(())
}

/// `max_batch_ops + 1` operations: `413 too_large` naming
/// `max_batch_ops`, nothing applied.
pub(crate) async fn too_large_batch(cx: &Ctx<'_>) -> Checked {
    let limits = cx.limits()?;
    let n = limits.max_batch_ops.saturating_add(1);
    if n > 100_000 {
        return Err(NotPassed::Skipped(format!(
            "max_batch_ops {} is too many operations to send",
            limits.max_batch_ops
        )));
    }
    let ops: Vec<WireOp> = (0..n).map(|_| cx.fresh_op("batch")).collect();
    let body = serde_json::to_vec(&cx.request(&ops)).unwrap_or_default();
    if body.len() as u64 > limits.max_body_bytes {
        return Err(NotPassed::Skipped(format!(
            "{n} operations take {} bytes, over max_body_bytes {}",
            body.len(),
            limits.max_body_bytes
        )));
    }
    let a = cx.post(body).await?;
    let p = expect_problem(&a, ProblemCode::TooLarge)?;
    ensure!(
        p.limit.as_deref() == Some("max_batch_ops") && p.max == Some(limits.max_batch_ops),
        "413 must name limit \"max_batch_ops\" with max {}; got limit {:?}, max {:?}",
        limits.max_batch_ops,
        p.limit,
        p.max
    );
    let first_and_last = [ops[0].clone(), ops[ops.len() - 1].clone()];
    cx.expect_nothing_applied(&first_and_last).await
}

/// A payload of `max_payload_bytes + 1` bytes: that operation is rejected
/// `payload_too_large`, the rest of the batch is applied, and the
/// rejection is not recorded (the same id with a payload that fits is
/// applied later).
pub(crate) async fn payload_too_large(cx: &Ctx<'_>) -> Checked {
    let limits = cx.limits()?;
    let size = limits.max_payload_bytes.saturating_add(1);
    // base64 grows it by 4/3; the rest of the request is small.
    if size >= MAX_SENT_BYTES || size.div_ceil(3) * 4 + 4096 > limits.max_body_bytes {
        return Err(NotPassed::Skipped(format!(
            "a payload of {size} bytes does not fit a request of max_body_bytes {}",
            limits.max_body_bytes
        )));
    }
    let big_entity = cx.entity("big");
    let big = cx.op(
        &big_entity,
        Kind::Update,
        &vec![b'p'; usize::try_from(size).unwrap_or(usize::MAX)],
        None,
    );
    let small = cx.fresh_op("beside-big");
    let answer = cx.push(&[big.clone(), small.clone()]).await?;
    match outcome(&answer, &big)? {
        Outcome::Rejected { code, message } => {
            ensure!(
                code == reject_code::PAYLOAD_TOO_LARGE,
                "the big operation was rejected with code {code:?}, not payload_too_large"
            );
            ensure!(
                message.len() <= 1024 && !message.contains("pppppppp"),
                "the rejection's message is over 1024 bytes or quotes the payload"
            );
        }
        other => fail!(
            "a payload over max_payload_bytes answered {}",
            describe(other)
        ),
    }
    context("the operation beside it", applied(&answer, &small))?;
    let fits = WireOp {
        payload: cpc_protocol::Payload(b"fits".to_vec()),
        ..big
    };
    let again = cx.push(std::slice::from_ref(&fits)).await?;
    context(
        "the rejected id sent again with a payload that fits (rejections are never recorded)",
        applied(&again, &fits),
    )?;
    Ok(())
}
