//! What every server answers before any push logic: health, info, the
//! headers of every answer, problem answers (docs/protocol.md §2.1, §2.4,
//! §4.1, §4.2, §9.1).

use cpc_protocol::{ProblemCode, HEALTH_BODY, MAX_KEY_BYTES};
use reqwest::Method;
use serde_json::Value;

use crate::harness::{context, ensure, expect_problem, fail, Checked, Ctx, PUSH};
use crate::http::{Auth, Request};

/// `GET /v1/health`: 200, `text/plain`, body exactly `cpc-sync ok\n`.
pub(crate) async fn health(cx: &Ctx<'_>) -> Checked {
    let a = cx.http.send(&Request::get("/v1/health")).await?;
    ensure!(a.status == 200, "GET /v1/health answered {}", a.describe());
    ensure!(
        a.body == HEALTH_BODY.as_bytes(),
        "the body is {:?}, not exactly {HEALTH_BODY:?}",
        String::from_utf8_lossy(&a.body)
    );
    ensure!(
        a.media_type() == "text/plain",
        "Content-Type is {:?}, not text/plain",
        a.header("content-type").unwrap_or("")
    );
    Ok(())
}

/// `GET /v1/info`: 200 JSON with `protocols` containing 1, a `store_id` of
/// 1 to 64 ASCII characters, a `server` string and the push limits as
/// integers (`max_key_bytes` is 1024, fixed by v1).
pub(crate) async fn info(cx: &Ctx<'_>) -> Checked {
    let a = cx.http.send(&Request::get("/v1/info")).await?;
    ensure!(a.status == 200, "GET /v1/info answered {}", a.describe());
    ensure!(
        a.media_type() == "application/json",
        "Content-Type is {:?}, not application/json",
        a.header("content-type").unwrap_or("")
    );
    let v: Value = serde_json::from_slice(&a.body)
        .map_err(|e| crate::harness::NotPassed::Failed(format!("not JSON ({e})")))?;
    let protocols = v["protocols"].as_array();
    ensure!(
        protocols.is_some_and(|p| p.iter().all(Value::is_u64)
            && p.iter().any(|n| n.as_u64() == Some(1))),
        "protocols must be an array of integers containing 1, got {}",
        v["protocols"]
    );
    let store_id = v["store_id"].as_str().unwrap_or("");
    ensure!(
        (1..=64).contains(&store_id.len()) && store_id.is_ascii(),
        "store_id must be 1 to 64 ASCII characters, got {}",
        v["store_id"]
    );
    ensure!(
        v["server"].is_string(),
        "server must be a string, got {}",
        v["server"]
    );
    for limit in [
        "max_batch_ops",
        "max_body_bytes",
        "max_payload_bytes",
        "max_key_bytes",
        "max_response_bytes",
    ] {
        ensure!(
            v["limits"][limit].is_u64(),
            "limits.{limit} must be an integer, got {}",
            v["limits"][limit]
        );
    }
    ensure!(
        v["limits"]["max_key_bytes"].as_u64() == Some(MAX_KEY_BYTES as u64),
        "limits.max_key_bytes is fixed at {MAX_KEY_BYTES} by v1, got {}",
        v["limits"]["max_key_bytes"]
    );
    Ok(())
}

/// `Cache-Control: no-store` on answers of every kind: health, info, a
/// 200 push and the errors (400, 401, 404, 405, 415, path version).
pub(crate) async fn no_store_on_every_answer(cx: &Ctx<'_>) -> Checked {
    let token = Auth::Bearer(&cx.target.token);
    let valid = serde_json::to_vec(&cx.request(&[cx.fresh_op("no-store")])).unwrap_or_default();
    let probes: Vec<(&str, Request<'_>)> = vec![
        ("GET /v1/health", Request::get("/v1/health")),
        ("GET /v1/info", Request::get("/v1/info")),
        (
            "a valid push",
            Request::post_json(PUSH, token, valid.clone()),
        ),
        (
            "a malformed push",
            Request::post_json(PUSH, token, b"{".to_vec()),
        ),
        (
            "a push without a token",
            Request::post_json(PUSH, Auth::None, valid.clone()),
        ),
        ("GET /v1/nothing", Request::get("/v1/nothing")),
        ("GET /v1/push", Request::get(PUSH)),
        (
            "a text/plain push",
            Request::post_json(PUSH, token, valid.clone()).content_type(Some("text/plain")),
        ),
        (
            "POST /v2/push",
            Request::post_json("/v2/push", token, valid),
        ),
    ];
    let mut missing = Vec::new();
    for (label, request) in &probes {
        let a = cx.http.send(request).await?;
        let no_store = a.header_all("cache-control").iter().any(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-store"))
        });
        if !no_store {
            missing.push(format!(
                "{label} (status {}, Cache-Control {:?})",
                a.status,
                a.header_all("cache-control")
            ));
        }
    }
    ensure!(
        missing.is_empty(),
        "answers without Cache-Control: no-store: {}",
        missing.join("; ")
    );
    Ok(())
}

/// Problem answers of several codes (404, 405, 400, 415) are problem
/// objects whose `type`, `title`, `status` and `code` agree.
pub(crate) async fn problem_shape(cx: &Ctx<'_>) -> Checked {
    let token = Auth::Bearer(&cx.target.token);
    let cases: Vec<(&str, Request<'_>, ProblemCode)> = vec![
        (
            "GET /v1/nothing",
            Request::get("/v1/nothing"),
            ProblemCode::NotFound,
        ),
        (
            "POST /v1/nothing",
            Request::post_json("/v1/nothing", token, b"{}".to_vec()),
            ProblemCode::NotFound,
        ),
        (
            "GET /v1/push",
            Request::get(PUSH),
            ProblemCode::MethodNotAllowed,
        ),
        (
            "a push of {}",
            Request::post_json(PUSH, token, b"{}".to_vec()),
            ProblemCode::BadRequest,
        ),
        (
            "a text/plain push",
            Request::post_json(PUSH, token, b"{}".to_vec()).content_type(Some("text/plain")),
            ProblemCode::UnsupportedMediaType,
        ),
    ];
    for (label, request, code) in &cases {
        let a = cx.http.send(request).await?;
        context(label, expect_problem(&a, *code))?;
    }
    Ok(())
}

/// A known path with the wrong method: `405 method_not_allowed` with an
/// `Allow` header naming the right method.
pub(crate) async fn method_not_allowed(cx: &Ctx<'_>) -> Checked {
    let cases = [
        (Request::get(PUSH), "GET /v1/push", "POST"),
        (
            Request::get("/v1/health").method(Method::POST),
            "POST /v1/health",
            "GET",
        ),
        (
            Request::get("/v1/info").method(Method::DELETE),
            "DELETE /v1/info",
            "GET",
        ),
    ];
    for (request, label, allowed) in &cases {
        let a = cx.http.send(request).await?;
        context(label, expect_problem(&a, ProblemCode::MethodNotAllowed))?;
        let allow = a.header_all("allow").join(",");
        let names = allow.split(',').map(str::trim);
        if !names.clone().any(|m| m.eq_ignore_ascii_case(allowed)) {
            fail!("{label}: 405 without an Allow header naming {allowed} (Allow: {allow:?})");
        }
    }
    Ok(())
}
