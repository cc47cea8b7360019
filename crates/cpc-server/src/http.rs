//! The HTTP face: routes, the order of a request's checks (docs/protocol.md
//! §6.2), push, and the headers every answer carries. Pull is in
//! `http/pull.rs`; answers are built in `http/reply.rs`; the rate limit and
//! concurrency cap are in `http/guard.rs`, a token's share of the caps in
//! `http/share.rs`, the failed-authentication limit per address in
//! `http/peer.rs`, `/metrics` in `http/scrape.rs`.

mod guard;
mod held;
mod peer;
mod pull;
mod quota;
mod reply;
mod scrape;
mod share;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use cpc_protocol::{
    parse_push, request_id_from, valid_request_id, Info, Limits, Outcome, Problem, ProblemCode,
    PullLimits, PushResponse, HEALTH_BODY, PROTOCOLS, REQUEST_ID_HEADER,
};
use http_body_util::BodyExt;
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

pub use self::guard::RateLimit;
use self::guard::RateLimiter;
pub(crate) use self::held::ByteBudget;
pub(crate) use self::peer::{AuthFailures, PeerAddr};
pub use self::quota::Quota;
use self::quota::{OverQuota, Quotas};
pub(crate) use self::scrape::StoreSize;
pub(crate) use self::share::Shares;
use self::share::Slot;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::tokens::{MetricsToken, TokenId, Tokens};

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct App {
    pub store: Arc<Store>,
    pub tokens: Tokens,
    pub limits: Limits,
    pub pull_limits: PullLimits,
    pub rate: RateLimit,
    pub limiter: RateLimiter,
    pub pushes: Arc<Semaphore>,
    pub pulls: Arc<Semaphore>,
    /// Each token's share of `pushes`.
    pub push_shares: Shares,
    /// Each token's share of `pulls`.
    pub pull_shares: Shares,
    /// Pull page bytes built or being sent (`max_pull_bytes_in_flight`).
    pub pull_bytes: ByteBudget,
    /// Failed authentications per client address.
    pub auth_failures: AuthFailures,
    /// Set when the server shuts down: long polls answer at once.
    pub closing: watch::Receiver<bool>,
    pub request_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// The token of `GET /metrics`; `None`: `/metrics` is off (404).
    pub metrics_token: Option<MetricsToken>,
    /// The store's size, read at most once per scrape interval.
    pub store_size: StoreSize,
    /// Each token's quota of operations and payload bytes per window.
    pub quota: Quota,
    pub quotas: Quotas,
}

/// The router of protocol v1.
pub(crate) fn router(app: Arc<App>) -> Router {
    let routes = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/info", get(info))
        .route("/v1/push", post(push))
        .route("/v1/pull", post(pull::pull))
        .route("/metrics", get(scrape::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // Fault `no_cache_header`: answers without `Cache-Control: no-store`.
    #[cfg(feature = "test-faults")]
    let no_store_header = !app.store.faults().no_cache_header;
    #[cfg(not(feature = "test-faults"))]
    let no_store_header = true;
    let routes = if no_store_header {
        routes.layer(middleware::from_fn(no_store))
    } else {
        routes
    };
    routes
        .layer(middleware::from_fn(request_id))
        .with_state(app)
}

/// `Cpc-Request-Id` (docs/protocol.md §2.1): the client's id when it is
/// well formed, else one made here, so that every answer carries one and
/// a device's log and this server's can be matched. Every log line of the
/// request is in a `request{id=…}` span (ids are not secrets), and one
/// line at DEBUG tells how it was answered.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(|| request_id_from(rand::random()), str::to_owned);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let span = tracing::info_span!(target: "cpc_server", "request", id = %id);
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            target: "cpc_server",
            %method,
            // Debug-formatted (quoted, escaped): a path is the client's
            // text and may hold anything.
            path = ?path,
            status = response.status().as_u16(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "answered"
        );
    });
    // Always valid (checked above, or hex digits): the `if` only keeps a
    // would-be panic out of the server.
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// `Cache-Control: no-store` on every answer, errors included: a cached
/// answer to a sync request is a wrong answer.
async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn health() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        HEALTH_BODY,
    )
        .into_response()
}

async fn info(State(app): State<Arc<App>>) -> Response {
    reply::json(&Info {
        protocols: PROTOCOLS.to_vec(),
        store_id: app.store.store_id().to_owned(),
        server: concat!("cpc-server/", env!("CARGO_PKG_VERSION")).to_owned(),
        limits: app.limits,
        pull_limits: app.pull_limits,
    })
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    // /v2/... and friends: tell an old or new client the versions served.
    let segment = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if segment.len() > 1
        && segment.starts_with('v')
        && segment[1..].bytes().all(|b| b.is_ascii_digit())
        && segment != "v1"
    {
        return reply::problem(cpc_protocol::unsupported_version(format!(
            "path version {segment} is not served"
        )));
    }
    reply::problem(Problem::new(ProblemCode::NotFound, "no such path"))
}

async fn method_not_allowed() -> Response {
    reply::problem(Problem::new(
        ProblemCode::MethodNotAllowed,
        "this path does not take that method",
    ))
}

/// `POST /v1/push`, its checks in the order of docs/protocol.md §6.2.
async fn push(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer = peer.map(|Extension(p)| p);
    let response = push_checked(&app, peer.as_ref(), &headers, body).await;
    app.metrics.request("push", response.status().as_u16());
    response
}

/// Which concurrency cap a request takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cap {
    /// `max_concurrent_pushes`, `max_pushes_per_token`.
    Push,
    /// `max_concurrent_pulls`, `max_pulls_per_token`.
    Pull,
}

/// A `429` for an address whose authentications failed too often.
fn too_many_failures(wait: Duration) -> Response {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    reply::busy(
        ProblemCode::RateLimited,
        ms,
        "too many failed authentications from this address",
    )
}

/// Steps 2–6 of §6.2, shared by push and pull: authentication (refused
/// before the token is compared when the address failed too often), the
/// token's rate, the concurrency cap and the token's share of it, media
/// type, and the body read within its size and time limits. The slot is
/// the caller's to hold until it has answered.
///
/// Authentication and the rate come before the cap: a slot is taken only
/// for a known token within its rate, so the share it counts against is
/// the right one, and an unknown client takes no slot at all.
async fn admit(
    app: &App,
    peer: Option<&PeerAddr>,
    headers: &HeaderMap,
    body: Body,
    cap: Cap,
) -> Result<(TokenId, Bytes, Slot), Response> {
    // 2. Authentication, before the body is read; an address that failed
    // too often is not even compared.
    if let Err(wait) = app.auth_failures.check(peer) {
        return Err(too_many_failures(wait));
    }
    let auth = headers.get(header::AUTHORIZATION);
    let Some(token) = auth
        .and_then(|v| v.to_str().ok())
        .and_then(|v| app.tokens.authenticate(v))
    else {
        app.auth_failures.fail(peer);
        return Err(reply::unauthorized(auth.is_some()));
    };
    // 3. The token's rate.
    if let Err(wait) = app.limiter.take(token, app.rate) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        return Err(reply::busy(
            ProblemCode::RateLimited,
            ms,
            "rate limit of this token",
        ));
    }
    // 4. The concurrency cap, then the token's share of it.
    let slot = match cap {
        Cap::Push => app.push_shares.take(&app.pushes, token),
        Cap::Pull => app.pull_shares.take(&app.pulls, token),
    };
    let Some(slot) = slot else {
        return Err(at_capacity(match cap {
            Cap::Push => "too many pushes at once",
            Cap::Pull => "too many pulls at once",
        }));
    };
    // 5. Media type and content coding.
    if let Some(problem) = check_media(headers) {
        return Err(reply::problem(problem));
    }
    // 6. Size, before parsing; and the time to receive it.
    match read_body(
        headers,
        body,
        app.limits.max_body_bytes,
        app.request_timeout,
    )
    .await
    {
        Ok(bytes) => Ok((token, bytes, slot)),
        Err(problem) => Err(reply::problem(*problem)),
    }
}

/// Step 10 of §6.2, push and pull: the token must be bound to the client;
/// the `403` when it is not.
fn unbound(app: &App, token: TokenId, client_id: &str) -> Option<Response> {
    (!app.tokens.allows(token, client_id)).then(|| {
        reply::problem(Problem::new(
            ProblemCode::ForbiddenClient,
            "this token may not act for that client_id",
        ))
    })
}

/// A 503 for a full concurrency cap.
fn at_capacity(what: &str) -> Response {
    let wait = 1000 + rand::random::<u64>() % 500;
    reply::busy(ProblemCode::Unavailable, wait, what)
}

async fn push_checked(
    app: &App,
    peer: Option<&PeerAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let (token, bytes, _slot) = match admit(app, peer, headers, body, Cap::Push).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    // 7–9. Version, schema, batch size.
    let request = match parse_push(&bytes, &app.limits) {
        Ok(request) => request,
        Err(problem) => return reply::problem(*problem),
    };
    drop(bytes);
    if let Some(refused) = unbound(app, token, &request.client_id) {
        return refused;
    }
    if let Some(refused) = over_quota(app, token, &request.ops) {
        return refused;
    }
    let ops = request.ops.len();
    let known = request.known.clone();
    match app
        .store
        .push(
            request.client_id,
            request.ops,
            request.known,
            request.low_water,
        )
        .await
    {
        Ok((outcomes, head)) => {
            for o in &outcomes {
                app.metrics.outcome(match o.outcome {
                    Outcome::Applied(_) => 0,
                    Outcome::AlreadyApplied(_) => 1,
                    Outcome::Conflict { .. } => 2,
                    Outcome::Rejected { .. } => 3,
                    Outcome::RetryLater { .. } => 4,
                });
            }
            app.metrics.push_latency(started.elapsed());
            tracing::debug!(target: "cpc_server", ops, seq = head.seq, "push answered");
            reply::json(&PushResponse { outcomes, head })
        }
        Err(e) => store_failure(e, known, "push"),
    }
}

/// The token's quota of operations and payload bytes (see `quota`): a
/// `429 quota_exceeded` with the wait, or `None` when the push fits.
fn over_quota(app: &App, token: TokenId, ops: &[cpc_protocol::WireOp]) -> Option<Response> {
    let bytes = ops.iter().map(|o| o.payload.0.len() as u64).sum();
    match app.quotas.take(token, app.quota, ops.len() as u64, bytes) {
        Ok(()) => None,
        Err(OverQuota::Wait(wait)) => {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            tracing::info!(target: "cpc_server", retry_after_ms = ms, "a token is over its quota: 429");
            Some(reply::busy(
                ProblemCode::QuotaExceeded,
                ms,
                "this token's quota of operations or bytes per window",
            ))
        }
        // Unreachable with a checked configuration (a whole bucket holds
        // the largest push), kept as a refusal rather than a wait for ever.
        Err(OverQuota::Never) => Some(reply::problem(Problem::new(
            ProblemCode::TooLarge,
            "larger than this token's whole quota",
        ))),
    }
}

/// The answer to a store error: `409 history_diverged` with the head and
/// the echoed `known`, `500` for corruption, `503` otherwise.
fn store_failure(
    e: StoreError,
    known: Option<cpc_protocol::Position>,
    what: &'static str,
) -> Response {
    match e {
        StoreError::HistoryDiverged { head } => {
            tracing::info!(target: "cpc_server", head = head.seq, what, "a client's known position is not in this history: 409");
            let mut p = Problem::new(
                ProblemCode::HistoryDiverged,
                "the client has seen a position this server's history does not have",
            );
            p.head = Some(head);
            p.known = known;
            reply::problem(p)
        }
        StoreError::NoRoom(_) => {
            tracing::error!(target: "cpc_server", error = %e, what, "no room to write; refused, nothing applied");
            // A full disk does not clear in a second: a long wait, so the
            // devices do not hammer it.
            let wait = 30_000 + rand::random::<u64>() % 30_000;
            reply::busy(
                ProblemCode::Unavailable,
                wait,
                "the server's storage is full; nothing was applied",
            )
        }
        StoreError::Corrupt(_) => {
            tracing::error!(target: "cpc_server", error = %e, what, "request failed; nothing applied");
            reply::problem(Problem::new(
                ProblemCode::Internal,
                "internal error; nothing was applied",
            ))
        }
        e => {
            tracing::error!(target: "cpc_server", error = %e, what, "request failed; nothing applied");
            at_capacity("the store is unavailable; nothing was applied")
        }
    }
}

fn check_media(headers: &HeaderMap) -> Option<Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = content_type.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    let charset_ok = parts.all(|p| {
        p.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("charset")
                && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
    });
    if !media.eq_ignore_ascii_case("application/json") || !charset_ok {
        return Some(Problem::new(
            ProblemCode::UnsupportedMediaType,
            "a request body is application/json",
        ));
    }
    let coding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    if coding.is_some_and(|c| !c.trim().eq_ignore_ascii_case("identity")) {
        return Some(Problem::new(
            ProblemCode::UnsupportedMediaType,
            "content codings are not accepted",
        ));
    }
    None
}

fn too_large(max: u64) -> Box<Problem> {
    let mut p = Problem::new(
        ProblemCode::TooLarge,
        format!("body exceeds max_body_bytes ({max})"),
    );
    p.limit = Some("max_body_bytes".into());
    p.max = Some(max);
    Box::new(p)
}

/// How much of an over-limit body is read and thrown away before the 413,
/// as a multiple of the limit. A client (hyper, reqwest) that writes its
/// whole body before reading the answer would otherwise see its write fail
/// on a closed connection instead of the 413 that tells it to split its
/// batch; beyond this bound the connection is closed anyway.
const DRAIN_FACTOR: u64 = 4;

/// Reads the body with a byte limit and a deadline: a declared length over
/// the limit is refused without keeping a byte (the body is read and
/// dropped, up to a bound, so the client reads the answer); a body that
/// keeps coming stops being kept at the limit; a body that trickles stops
/// at the deadline.
async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    max: u64,
    deadline: Duration,
) -> Result<Bytes, Box<Problem>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let keep = declared.is_none_or(|n| n <= max);
    let drain_bound = max.saturating_mul(DRAIN_FACTOR);
    let read = async {
        let mut kept: Vec<u8> = Vec::new();
        let mut total: u64 = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(Box::new(Problem::new(
                    ProblemCode::BadRequest,
                    "the body could not be read",
                )));
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total = total.saturating_add(data.len() as u64);
            if keep && total <= max {
                kept.extend_from_slice(&data);
            } else {
                kept = Vec::new();
            }
            if total > drain_bound {
                break;
            }
        }
        if !keep || total > max {
            return Err(too_large(max));
        }
        Ok(Bytes::from(kept))
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => result,
        // A declared over-limit body that trickles is still a 413.
        Err(_) if !keep => Err(too_large(max)),
        Err(_) => Err(Box::new(Problem::new(
            ProblemCode::RequestTimeout,
            "the body did not arrive in time",
        ))),
    }
}
