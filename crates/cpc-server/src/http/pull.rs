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
use cpc_protocol::parse_pull;

use super::{admit, at_capacity, reply, store_failure, unbound, App};
use crate::store::PullPage;

/// `POST /v1/pull`.
pub(crate) async fn pull(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let response = pull_checked(&app, &headers, body).await;
    app.metrics.request("pull", response.status().as_u16());
    response
}

async fn pull_checked(app: &App, headers: &HeaderMap, body: Body) -> Response {
    // 2. The cap: pulls have their own, so that long polls never starve
    // pushes.
    let Ok(_permit) = Arc::clone(&app.pulls).try_acquire_owned() else {
        return at_capacity("too many pulls at once");
    };
    let (token, bytes) = match admit(app, headers, body).await {
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
    let known = request.known.clone();
    let wait = Duration::from_millis(request.wait_ms);
    // Watch the head before the first read, so a commit between the read
    // and the wait is not missed.
    let mut head = app.store.head();
    head.borrow_and_update();
    let page = match app.store.pull(request.clone()).await {
        Ok(page) => page,
        Err(e) => return store_failure(e, known, "pull"),
    };
    let idle = page.listed == 0 && !page.snapshot && !page.has_more;
    if !idle || wait.is_zero() {
        return answer(page);
    }
    let mut closing = app.closing.clone();
    if *closing.borrow_and_update() {
        return answer(page);
    }
    // Until something for this page lands, or the wait is over: a wake-up
    // that brings nothing new (a late notification of a change already
    // read, a commit outside the scope) goes back to waiting instead of
    // answering an empty page early, which would turn long polls into
    // polling.
    let deadline = tokio::time::Instant::now() + wait;
    let mut page = page;
    loop {
        let moved = tokio::select! {
            changed = head.changed() => changed.is_ok(),
            _ = closing.changed() => false,
            _ = tokio::time::sleep_until(deadline) => false,
        };
        if !moved {
            return answer(page);
        }
        head.borrow_and_update();
        page = match app.store.pull(request.clone()).await {
            Ok(page) => page,
            Err(e) => return store_failure(e, known, "pull"),
        };
        if page.listed != 0 || page.snapshot || page.has_more {
            return answer(page);
        }
    }
}

fn answer(page: PullPage) -> Response {
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
        page.body,
    )
        .into_response()
}
