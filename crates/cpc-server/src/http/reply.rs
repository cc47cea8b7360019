//! Answers: JSON bodies and problem bodies, with the headers every answer
//! carries.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cpc_protocol::{Problem, ProblemCode, PROBLEM_CONTENT_TYPE, RETRY_AFTER_MS_HEADER};

/// A JSON answer with status 200.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(_) => problem(Problem::new(
            ProblemCode::Internal,
            "the answer could not be encoded",
        )),
    }
}

/// A problem answer: its status, `application/problem+json`, and the
/// headers its code needs (`Retry-After` for 429 and 503).
pub(crate) fn problem(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        )],
        p.to_json(),
    )
        .into_response();
    if let Some(ms) = p.retry_after_ms {
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        headers.insert(RETRY_AFTER_MS_HEADER, HeaderValue::from(ms));
    }
    response
}

/// `401`, saying why in `WWW-Authenticate`.
pub(crate) fn unauthorized(header_present: bool) -> Response {
    let mut response = problem(Problem::new(
        ProblemCode::Unauthorized,
        if header_present {
            "the bearer token is not valid"
        } else {
            "a bearer token is required"
        },
    ));
    let value = if header_present {
        "Bearer realm=\"cpc-sync\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"cpc-sync\""
    };
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
    response
}

/// A `429` or `503` with the wait to announce.
pub(crate) fn busy(code: ProblemCode, wait_ms: u64, detail: &str) -> Response {
    let mut p = Problem::new(code, detail);
    p.retry_after_ms = Some(wait_ms);
    problem(p)
}
