//! Who may push, and in which protocol version (docs/protocol.md §4, §5):
//! 401 and 403 before anything is applied, `unsupported_version` by body
//! and by path.

use cpc_protocol::{Problem, ProblemCode, PushResponse};

use crate::harness::{
    applied, context, ensure, expect_problem, fail, Checked, Ctx, NotPassed, PUSH,
};
use crate::http::{Answer, Auth, Request};

/// The `WWW-Authenticate` of a 401, checked: `Bearer realm="cpc-sync"`,
/// with `error="invalid_token"` exactly when a header was sent.
fn check_challenge(a: &Answer, header_sent: bool) -> Checked {
    let Some(challenge) = a.header("www-authenticate") else {
        fail!("401 without WWW-Authenticate");
    };
    ensure!(
        challenge.len() >= 6 && challenge[..6].eq_ignore_ascii_case("bearer"),
        "WWW-Authenticate is {challenge:?}, not a Bearer challenge"
    );
    ensure!(
        challenge.contains("realm=\"cpc-sync\""),
        "WWW-Authenticate {challenge:?} lacks realm=\"cpc-sync\""
    );
    let invalid = challenge.contains("error=\"invalid_token\"");
    ensure!(
        invalid == header_sent,
        "WWW-Authenticate {challenge:?}: error=\"invalid_token\" belongs to a sent but \
         invalid token, and only there"
    );
    Ok(())
}

/// A push without `Authorization`: 401 with a challenge, nothing applied.
pub(crate) async fn missing_token(cx: &Ctx<'_>) -> Checked {
    let op = cx.fresh_op("no-token");
    let body = serde_json::to_vec(&cx.request(std::slice::from_ref(&op))).unwrap_or_default();
    let a = cx
        .http
        .send(&Request::post_json(PUSH, Auth::None, body))
        .await?;
    expect_problem(&a, ProblemCode::Unauthorized)?;
    check_challenge(&a, false)?;
    cx.expect_nothing_applied(&[op]).await
}

/// A push with a token the server does not know, or not as a Bearer
/// token: 401 with `error="invalid_token"`, the token not quoted back,
/// nothing applied.
pub(crate) async fn wrong_token(cx: &Ctx<'_>) -> Checked {
    let wrong = format!("cpc-conformance-wrong-{:016x}", rand::random::<u64>());
    let basic = format!("Basic {wrong}");
    let token_only = cx.target.token.clone();
    let cases = [
        ("an unknown bearer token", Auth::Bearer(&wrong)),
        ("a Basic credential", Auth::Raw(&basic)),
        (
            "the token without the Bearer scheme",
            Auth::Raw(&token_only),
        ),
    ];
    let mut ops = Vec::new();
    for (label, auth) in cases {
        let op = cx.fresh_op("wrong-token");
        let body = serde_json::to_vec(&cx.request(std::slice::from_ref(&op))).unwrap_or_default();
        ops.push(op);
        let a = cx.http.send(&Request::post_json(PUSH, auth, body)).await?;
        let problem = context(label, expect_problem(&a, ProblemCode::Unauthorized))?;
        context(label, check_challenge(&a, true))?;
        // (A short real token can appear in any text by chance.)
        let quotes_real = token_only.len() >= 8 && problem.detail.contains(&token_only);
        ensure!(
            !problem.detail.contains(&wrong) && !quotes_real,
            "{label}: the problem's detail quotes the token"
        );
    }
    cx.expect_nothing_applied(&ops).await
}

/// The scheme name is case-insensitive and one or more spaces may follow
/// it (RFC 7235 §2.1, docs/protocol.md §5): `bearer <token>`,
/// `BEARER <token>` and `Bearer  <token>` each push like `Bearer <token>`.
pub(crate) async fn bearer_scheme_case_insensitive(cx: &Ctx<'_>) -> Checked {
    let token = &cx.target.token;
    let cases = [
        ("a lowercase bearer scheme", format!("bearer {token}")),
        ("an uppercase BEARER scheme", format!("BEARER {token}")),
        ("two spaces after Bearer", format!("Bearer  {token}")),
    ];
    for (label, header) in &cases {
        let op = cx.fresh_op("bearer-case");
        let body = serde_json::to_vec(&cx.request(std::slice::from_ref(&op))).unwrap_or_default();
        let a = cx
            .http
            .send(&Request::post_json(PUSH, Auth::Raw(header), body))
            .await?;
        ensure!(
            a.status == 200,
            "{label}: a valid token was answered {}",
            a.describe()
        );
        let answer: PushResponse = serde_json::from_slice(&a.body).map_err(|e| {
            NotPassed::Failed(format!(
                "{label}: the 200 answer is not a push answer ({e}): {}",
                a.describe()
            ))
        })?;
        context(label, applied(&answer, &op))?;
    }
    Ok(())
}

/// A valid token not bound to the body's `client_id`: 403
/// `forbidden_client`, nothing applied.
pub(crate) async fn forbidden_client(cx: &Ctx<'_>) -> Checked {
    let Some(foreign) = cx.target.foreign_token.as_deref() else {
        return Err(NotPassed::Skipped(
            "no foreign token (--foreign-token)".into(),
        ));
    };
    let op = cx.fresh_op("foreign");
    let body = serde_json::to_vec(&cx.request(std::slice::from_ref(&op))).unwrap_or_default();
    let a = cx
        .http
        .send(&Request::post_json(PUSH, Auth::Bearer(foreign), body))
        .await?;
    if a.status == 401 {
        fail!(
            "the foreign token was answered 401: it must be a token the server accepts, \
             bound to other client ids than {}",
            cx.target.client_id
        );
    }
    expect_problem(&a, ProblemCode::ForbiddenClient)?;
    cx.expect_nothing_applied(&[op]).await
}

/// An `unsupported_version` problem listing the versions served, 1 among
/// them (this server serves `/v1`).
fn expect_unsupported(a: &Answer) -> Result<Problem, NotPassed> {
    let p = expect_problem(a, ProblemCode::UnsupportedVersion)?;
    match &p.supported {
        Some(versions) if versions.contains(&1) => Ok(p),
        other => fail!("`supported` must list the versions served, 1 among them; got {other:?}"),
    }
}

/// `protocol: 2` in a v1-shaped body and in a body v1 cannot read:
/// `400 unsupported_version` (the version is read before the schema),
/// nothing applied.
pub(crate) async fn unsupported_version_body(cx: &Ctx<'_>) -> Checked {
    let op = cx.fresh_op("v2-body");
    let mut v1_shaped = cx.request_value(std::slice::from_ref(&op));
    v1_shaped["protocol"] = 2.into();
    let v2_shaped = serde_json::json!({
        "protocol": 2,
        "client_id": cx.target.client_id,
        "batch": [],
    });
    for (label, body) in [
        ("a v1-shaped body with protocol 2", v1_shaped),
        ("a v2 body v1 cannot read", v2_shaped),
    ] {
        let a = cx
            .post(serde_json::to_vec(&body).unwrap_or_default())
            .await?;
        context(label, expect_unsupported(&a))?;
    }
    cx.expect_nothing_applied(&[op]).await
}

/// `POST /v2/push` (and `GET /v9/info`): `400 unsupported_version` with
/// `supported`, whatever the body; nothing applied.
pub(crate) async fn unsupported_version_path(cx: &Ctx<'_>) -> Checked {
    let op = cx.fresh_op("v2-path");
    let body = serde_json::to_vec(&cx.request(std::slice::from_ref(&op))).unwrap_or_default();
    let token = Auth::Bearer(&cx.target.token);
    let a = cx
        .http
        .send(&Request::post_json("/v2/push", token, body))
        .await?;
    context("POST /v2/push", expect_unsupported(&a))?;
    let a = cx.http.send(&Request::get("/v9/info")).await?;
    context("GET /v9/info", expect_unsupported(&a))?;
    cx.expect_nothing_applied(&[op]).await
}
