//! What an answer other than 200, or the lack of one, means (protocol
//! §9.2). Pure: a status, the headers and the (capped) body in, a decision
//! out; tested without HTTP.

use std::time::SystemTime;

use cpc_core::TransportError;
use cpc_protocol::{ProblemCode, PROBLEM_CONTENT_TYPE, RETRY_AFTER_MS_HEADER};
use reqwest::header::{HeaderMap, CONTENT_TYPE, DATE, RETRY_AFTER};

/// The most bytes read from a non-200 answer: problem objects are small,
/// and a larger body (a proxy's page) is handled by its status alone.
pub(crate) const MAX_PROBLEM_BYTES: usize = 64 * 1024;

/// What a push answer other than 200 asks the transport to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 401: invalidate the token, ask once more, resend once (§5.1).
    Unauthorized,
    /// 413: split the batch (§6.9); a single operation fails with
    /// `Server { status: 413 }`.
    TooLarge,
    /// 400 `unsupported_version`: the server does not serve v1 (§4); the
    /// push fails with [`unsupported_version`] and discovery starts over.
    Incompatible,
    /// Anything else: the push fails with this error.
    Failed(TransportError),
}

/// The decision for a non-200 push answer.
///
/// `body` is the answer's body if it was read within [`MAX_PROBLEM_BYTES`];
/// it only matters when it is a problem object (by `Content-Type`).
pub(crate) fn refusal(status: u16, headers: &HeaderMap, body: Option<&[u8]>) -> Refusal {
    let problem = || problem_code(headers, body);
    match status {
        401 => Refusal::Unauthorized,
        403 => Refusal::Failed(TransportError::Unauthorized),
        408 => Refusal::Failed(TransportError::Timeout),
        413 => Refusal::TooLarge,
        429 => Refusal::Failed(rate_limited(headers)),
        // A 503 from a cpc server is its concurrency cap or a store that is
        // briefly unavailable: a rate limit with a hint. A bare 503 comes
        // from a proxy or a load balancer: a server error, backed off as one.
        503 if problem().is_some() => Refusal::Failed(rate_limited(headers)),
        // A bare 503 that says when to come back (a maintenance page behind
        // a load balancer): its hint is honoured, as a 429's.
        503 if headers.contains_key(RETRY_AFTER) => Refusal::Failed(rate_limited(headers)),
        400 if problem().as_deref() == Some(ProblemCode::UnsupportedVersion.as_str()) => {
            Refusal::Incompatible
        }
        status => Refusal::Failed(TransportError::Server { status }),
    }
}

/// The error for a server that does not serve protocol v1 (§4).
///
/// `TransportError::Incompatible`: the worker pauses (`UpgradeRequired`),
/// drops nothing and counts no attempt, as for `Unauthorized` (Appendix B).
pub(crate) fn unsupported_version() -> TransportError {
    TransportError::Incompatible(
        "server does not serve protocol v1 (unsupported_version): upgrade the client".to_owned(),
    )
}

/// The error for a request that got no (complete) answer. A failure to
/// connect (DNS, TCP, TLS, or its timeout) is `Connect`: nothing was sent.
/// A timeout after that is `Timeout`: the batch may or may not have been
/// applied. A connection that broke mid-exchange is `Connect` too: like a
/// timeout it says nothing about any operation, and it must not count
/// against one (a `Protocol` error would, when sent alone).
pub(crate) fn request_error(error: &reqwest::Error) -> TransportError {
    if error.is_connect() {
        TransportError::Connect(describe(error))
    } else if error.is_timeout() {
        TransportError::Timeout
    } else if error.is_builder() {
        // The URL and the headers are checked before any request is built,
        // so this is a bug of this crate, not of the network.
        TransportError::Protocol(format!("could not build the request: {}", describe(error)))
    } else {
        TransportError::Connect(describe(error))
    }
}

/// The most bytes of an error text; reqwest's chains can be long.
const MAX_ERROR_TEXT: usize = 256;

/// An error and its causes, `: `-separated, cut to [`MAX_ERROR_TEXT`]. The
/// text names the URL (checked to carry no credentials) and the network's
/// complaint; reqwest never puts headers or bodies in it.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    crate::map::cut(text, MAX_ERROR_TEXT)
}

/// `RateLimited` with the hint of §2.5: `Cpc-Retry-After-Ms`, else
/// `Retry-After` as seconds or as an HTTP-date relative to the answer's
/// `Date` (the local clock without one), clamped to one hour.
pub(crate) fn rate_limited(headers: &HeaderMap) -> TransportError {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = text(DATE.as_str())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or_else(SystemTime::now);
    TransportError::RateLimited {
        retry_after: cpc_protocol::parse_retry_after(
            text(RETRY_AFTER.as_str()),
            text(RETRY_AFTER_MS_HEADER),
            now,
        ),
    }
}

/// The `code` of a problem answer: `Content-Type: application/problem+json`
/// and a JSON object with a string `code`. Other members are not needed
/// (clients decide on status and code, §2.4), so they are not checked.
pub(crate) fn problem_code(headers: &HeaderMap, body: Option<&[u8]>) -> Option<String> {
    if !has_media_type(headers, PROBLEM_CONTENT_TYPE) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body?).ok()?;
    value.get("code")?.as_str().map(str::to_owned)
}

/// The server's head from a `409 history_diverged` problem (§8); `None`
/// for any other answer, or one whose head does not read as a position.
pub(crate) fn diverged_head(
    status: u16,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> Option<cpc_protocol::Position> {
    if status != 409 || !has_media_type(headers, PROBLEM_CONTENT_TYPE) {
        return None;
    }
    let problem: cpc_protocol::Problem = serde_json::from_slice(body?).ok()?;
    if problem.problem_code() != Some(ProblemCode::HistoryDiverged) {
        return None;
    }
    problem.head
}

/// Whether `Content-Type` is `media_type` (parameters such as `charset`
/// allowed, case-insensitive).
pub(crate) fn has_media_type(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(media_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::time::Duration;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    const PROBLEM: &[(&str, &str)] = &[("content-type", "application/problem+json")];

    #[test]
    fn each_status_maps_as_the_table_says() {
        let none = HeaderMap::new();
        let failed = |status| match refusal(status, &none, None) {
            Refusal::Failed(e) => e,
            other => panic!("{status}: {other:?}"),
        };
        assert_eq!(refusal(401, &none, None), Refusal::Unauthorized);
        assert_eq!(refusal(413, &none, None), Refusal::TooLarge);
        assert_eq!(failed(403), TransportError::Unauthorized);
        assert_eq!(failed(408), TransportError::Timeout);
        assert!(matches!(failed(429), TransportError::RateLimited { .. }));
        for status in [400, 404, 405, 409, 415, 500, 502, 503, 504, 302] {
            assert_eq!(failed(status), TransportError::Server { status });
        }
    }

    #[test]
    fn a_503_is_a_rate_limit_only_with_a_problem_body_or_a_retry_after() {
        let body = br#"{"type":"urn:cpc-sync:problem:unavailable","code":"unavailable"}"#;
        let h = headers(&[
            ("content-type", "application/problem+json"),
            ("cpc-retry-after-ms", "1312"),
        ]);
        assert_eq!(
            refusal(503, &h, Some(body)),
            Refusal::Failed(TransportError::RateLimited {
                retry_after: Some(Duration::from_millis(1312))
            })
        );
        // The same body announced as HTML, or HTML announced as a problem.
        let html = headers(&[("content-type", "text/html")]);
        assert_eq!(
            refusal(503, &html, Some(body)),
            Refusal::Failed(TransportError::Server { status: 503 })
        );
        assert_eq!(
            refusal(503, &headers(PROBLEM), Some(b"<html>busy</html>")),
            Refusal::Failed(TransportError::Server { status: 503 })
        );
        assert_eq!(
            refusal(503, &headers(PROBLEM), None),
            Refusal::Failed(TransportError::Server { status: 503 })
        );
        // A bare 503 with Retry-After (maintenance behind a load balancer):
        // the hint is honoured.
        assert_eq!(
            refusal(
                503,
                &headers(&[("retry-after", "120")]),
                Some(b"<html>maintenance</html>")
            ),
            Refusal::Failed(TransportError::RateLimited {
                retry_after: Some(Duration::from_secs(120))
            })
        );
    }

    #[test]
    fn unsupported_version_is_told_apart_from_bad_request() {
        let version = br#"{"code":"unsupported_version","supported":[2]}"#;
        assert_eq!(
            refusal(400, &headers(PROBLEM), Some(version)),
            Refusal::Incompatible
        );
        match unsupported_version() {
            TransportError::Incompatible(text) => assert!(text.contains("protocol v1"), "{text}"),
            other => panic!("{other:?}"),
        }
        let bad = br#"{"code":"bad_request","pointer":"/ops/0/payload"}"#;
        assert_eq!(
            refusal(400, &headers(PROBLEM), Some(bad)),
            Refusal::Failed(TransportError::Server { status: 400 })
        );
    }

    #[test]
    fn the_hint_prefers_milliseconds_reads_dates_against_the_answer_and_is_clamped() {
        let hint = |pairs: &[(&'static str, &'static str)]| match rate_limited(&headers(pairs)) {
            TransportError::RateLimited { retry_after } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(hint(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(
            hint(&[("retry-after", "7"), ("cpc-retry-after-ms", "1500")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            hint(&[
                ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
                ("retry-after", "Thu, 01 Jan 2026 00:00:42 GMT"),
            ]),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            hint(&[("retry-after", "99999999")]),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(hint(&[("retry-after", "soon")]), None);
        assert_eq!(hint(&[]), None);
    }

    #[test]
    fn media_types_ignore_parameters_and_case() {
        let h = headers(&[("content-type", "Application/JSON; charset=utf-8")]);
        assert!(has_media_type(&h, "application/json"));
        assert!(!has_media_type(&h, "application/problem+json"));
        assert!(!has_media_type(&HeaderMap::new(), "application/json"));
    }
}
