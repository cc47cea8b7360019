//! U+0000 in a name (docs/protocol.md §2.3): a collection, an entity id, a
//! custom kind name, in a push or in a pull's cursor (`cursor.after`) or
//! scope, is `400 bad_request` on every store. A store that cannot hold
//! U+0000 (PostgreSQL's `text`) must not be the one to find out: it would
//! answer `503` (or worse) where another answers `200`.

use cpc_protocol::{Cursor, EntityKey, Hex64, Kind, ProblemCode, PullRequest};

use crate::harness::{context, expect_problem, Checked, Ctx, NotPassed};
use crate::http::{Auth, Request};

/// The pull path.
const PULL: &str = "/v1/pull";

/// A push whose operation names U+0000 somewhere, each refused `400`; then
/// a pull whose `cursor.after` (or scope) does, each refused `400`.
pub(crate) async fn u0000_in_names(cx: &Ctx<'_>) -> Checked {
    let nul_id = EntityKey {
        id: format!("{}\u{0}", cx.entity("nul-id").id),
        ..cx.entity("nul-id")
    };
    let nul_collection = EntityKey {
        collection: "conf\u{0}nul".into(),
        ..cx.entity("nul-collection")
    };
    let pushes = [
        (
            "an entity id with U+0000",
            cx.op(&nul_id, Kind::Update, b"x", None),
        ),
        (
            "a collection with U+0000",
            cx.op(&nul_collection, Kind::Update, b"x", None),
        ),
        (
            "a custom kind name with U+0000",
            cx.op(
                &cx.entity("nul-kind"),
                Kind::Custom("ar\u{0}chive".into()),
                b"x",
                None,
            ),
        ),
    ];
    for (label, op) in pushes {
        let body = serde_json::to_vec(&cx.request(std::slice::from_ref(&op))).unwrap_or_default();
        let answer = cx.post(body).await?;
        context(label, expect_problem(&answer, ProblemCode::BadRequest))?;
    }

    let store_id = cx
        .info
        .as_ref()
        .map(|i| i.store_id.clone())
        .map_err(|e| NotPassed::Failed(format!("needs the store_id of /v1/info: {e}")))?;
    // Seq 0 is in every store's history: only `after` can be at fault.
    let cursor = |after: EntityKey| Cursor {
        store_id: store_id.clone(),
        seq: 0,
        fp: Hex64(0),
        after: Some(after),
    };
    let pull = |cursor: Option<Cursor>, collections: Option<Vec<String>>| PullRequest {
        protocol: 1,
        client_id: cx.target.client_id.clone(),
        known: None,
        cursor,
        limit: 10,
        max_bytes: 2 << 20,
        wait_ms: 0,
        collections,
    };
    let pulls = [
        (
            "cursor.after with U+0000 in its id",
            pull(Some(cursor(nul_id)), None),
        ),
        (
            "cursor.after with U+0000 in its collection",
            pull(Some(cursor(nul_collection)), None),
        ),
        (
            "a scope naming a collection with U+0000",
            pull(None, Some(vec!["conf\u{0}nul".into()])),
        ),
    ];
    for (label, request) in pulls {
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let answer = cx
            .http
            .send(&Request::post_json(
                PULL,
                Auth::Bearer(&cx.target.token),
                body,
            ))
            .await?;
        context(label, expect_problem(&answer, ProblemCode::BadRequest))?;
    }
    Ok(())
}
