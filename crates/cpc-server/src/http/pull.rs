//! `POST /v1/pull` (docs/protocol.md §7): the checks of §6.2 (shared with
//! push), then `known` and the page from the store, and the long poll: an
//! empty change page waits until the head moves, `wait_ms` passes or the
//! server shuts down, then is read once more.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use cpc_protocol::{parse_pull, PullRequest};

use super::held::{HeldBody, Taken};
use super::share::Slot;
use super::{admit, at_capacity, reply, store_failure, unbound, App, Cap, PeerAddr};
use crate::store::PullPage;

/// `POST /v1/pull`.
pub(crate) async fn pull(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer = peer.map(|Extension(p)| p);
    let response = pull_checked(&app, peer.as_ref(), &headers, body).await;
    app.metrics.request("pull", response.status().as_u16());
    response
}

async fn pull_checked(
    app: &App,
    peer: Option<&PeerAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    // 2–6. Pulls have a cap of their own, so that long polls never starve
    // pushes; the slot is held until the answer is sent (http/held.rs).
    let (token, bytes, slot) = match admit(app, peer, headers, body, Cap::Pull).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    // 7–8. Version, schema, ranges.
    let request = match parse_pull(&bytes, &app.pull_limits) {
        Ok(request) => request,
        Err(problem) => return reply::problem(*problem),
    };
    drop(bytes);
    if let Some(refused) = unbound(app, token, &request.client_id) {
        return refused;
    }
    let wait = Duration::from_millis(request.wait_ms);
    // Watch the head before the first read, so a commit between the read
    // and the wait is not missed.
    let mut head = app.store.head();
    head.borrow_and_update();
    let (page, taken) = match read_page(app, &request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let idle = page.listed == 0 && !page.snapshot && !page.has_more;
    if !idle || wait.is_zero() {
        return answer(page, (slot, taken));
    }
    let mut closing = app.closing.clone();
    if *closing.borrow_and_update() {
        return answer(page, (slot, taken));
    }
    // Until something for this page lands, or the wait is over: a wake-up
    // that brings nothing new (a late notification of a change already
    // read, a commit outside the scope) goes back to waiting instead of
    // answering an empty page early, which would turn long polls into
    // polling.
    let deadline = tokio::time::Instant::now() + wait;
    let (mut page, mut taken) = (page, taken);
    loop {
        let moved = tokio::select! {
            changed = head.changed() => changed.is_ok(),
            _ = closing.changed() => false,
            _ = tokio::time::sleep_until(deadline) => false,
        };
        if !moved {
            return answer(page, (slot, taken));
        }
        head.borrow_and_update();
        (page, taken) = match read_page(app, &request).await {
            Ok(read) => read,
            Err(response) => return response,
        };
        if page.listed != 0 || page.snapshot || page.has_more {
            return answer(page, (slot, taken));
        }
    }
}

/// Reads a page within the server's budget of pull bytes in flight: a page
/// is built whole in memory, so the request's `max_bytes` is taken before
/// and what the page does not use is given back after. Over the budget:
/// `503`, as for the other caps.
async fn read_page(app: &App, request: &PullRequest) -> Result<(PullPage, Taken), Response> {
    let Some(mut taken) = app.pull_bytes.try_take(request.max_bytes) else {
        return Err(at_capacity("too many pull bytes in flight"));
    };
    match app.store.pull(request.clone()).await {
        Ok(page) => {
            taken.keep(page.body.len() as u64);
            Ok((page, taken))
        }
        Err(e) => Err(store_failure(e, request.known.clone(), "pull")),
    }
}

/// The page as a `200`, holding `held` until it is sent.
fn answer(page: PullPage, held: (Slot, Taken)) -> Response {
    tracing::debug!(
        target: "cpc_server",
        listed = page.listed,
        snapshot = page.snapshot,
        cursor = page.cursor_seq,
        head = page.head_seq,
        "pull answered"
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::new(HeldBody::new(page.body, held)),
    )
        .into_response()
}
