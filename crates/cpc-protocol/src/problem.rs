//! RFC 9457 problem answers: every non-200 answer carries one, with a
//! stable machine `code`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::push::Position;

/// The media type of a problem answer.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The v1 problem codes, each with its HTTP status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemCode {
    /// 400: malformed JSON, wrong types, unknown or missing members, bad
    /// encodings, a repeated op id, an empty batch.
    BadRequest,
    /// 400: a protocol version the server does not serve.
    UnsupportedVersion,
    /// 401: missing or wrong token.
    Unauthorized,
    /// 403: the token is not bound to the `client_id`.
    ForbiddenClient,
    /// 404: unknown path.
    NotFound,
    /// 405: wrong method.
    MethodNotAllowed,
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 409: the client's `known` position is not in the server's history.
    HistoryDiverged,
    /// 413: body or batch over a limit.
    TooLarge,
    /// 415: not `application/json`, or a content coding.
    UnsupportedMediaType,
    /// 429: the token's rate limit.
    RateLimited,
    /// 429: the token's quota of operations or payload bytes per window.
    QuotaExceeded,
    /// 500: a server bug; nothing applied.
    Internal,
    /// 503: concurrency cap, store unavailable, shutting down.
    Unavailable,
}

impl ProblemCode {
    /// Every code, for tables and tests.
    pub const ALL: [ProblemCode; 14] = [
        ProblemCode::BadRequest,
        ProblemCode::UnsupportedVersion,
        ProblemCode::Unauthorized,
        ProblemCode::ForbiddenClient,
        ProblemCode::NotFound,
        ProblemCode::MethodNotAllowed,
        ProblemCode::RequestTimeout,
        ProblemCode::HistoryDiverged,
        ProblemCode::TooLarge,
        ProblemCode::UnsupportedMediaType,
        ProblemCode::RateLimited,
        ProblemCode::QuotaExceeded,
        ProblemCode::Internal,
        ProblemCode::Unavailable,
    ];

    /// The machine code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::BadRequest => "bad_request",
            ProblemCode::UnsupportedVersion => "unsupported_version",
            ProblemCode::Unauthorized => "unauthorized",
            ProblemCode::ForbiddenClient => "forbidden_client",
            ProblemCode::NotFound => "not_found",
            ProblemCode::MethodNotAllowed => "method_not_allowed",
            ProblemCode::RequestTimeout => "request_timeout",
            ProblemCode::HistoryDiverged => "history_diverged",
            ProblemCode::TooLarge => "too_large",
            ProblemCode::UnsupportedMediaType => "unsupported_media_type",
            ProblemCode::RateLimited => "rate_limited",
            ProblemCode::QuotaExceeded => "quota_exceeded",
            ProblemCode::Internal => "internal",
            ProblemCode::Unavailable => "unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ProblemCode::BadRequest | ProblemCode::UnsupportedVersion => 400,
            ProblemCode::Unauthorized => 401,
            ProblemCode::ForbiddenClient => 403,
            ProblemCode::NotFound => 404,
            ProblemCode::MethodNotAllowed => 405,
            ProblemCode::RequestTimeout => 408,
            ProblemCode::HistoryDiverged => 409,
            ProblemCode::TooLarge => 413,
            ProblemCode::UnsupportedMediaType => 415,
            ProblemCode::RateLimited | ProblemCode::QuotaExceeded => 429,
            ProblemCode::Internal => 500,
            ProblemCode::Unavailable => 503,
        }
    }

    /// The fixed title.
    pub fn title(self) -> &'static str {
        match self {
            ProblemCode::BadRequest => "Bad request",
            ProblemCode::UnsupportedVersion => "Unsupported protocol version",
            ProblemCode::Unauthorized => "Unauthorized",
            ProblemCode::ForbiddenClient => "Client not allowed for this token",
            ProblemCode::NotFound => "Not found",
            ProblemCode::MethodNotAllowed => "Method not allowed",
            ProblemCode::RequestTimeout => "Request timeout",
            ProblemCode::HistoryDiverged => "History diverged",
            ProblemCode::TooLarge => "Request too large",
            ProblemCode::UnsupportedMediaType => "Unsupported media type",
            ProblemCode::RateLimited => "Rate limited",
            ProblemCode::QuotaExceeded => "Quota exceeded",
            ProblemCode::Internal => "Internal error",
            ProblemCode::Unavailable => "Service unavailable",
        }
    }

    /// The code named by `text`, if it is a v1 code.
    pub fn parse(text: &str) -> Option<ProblemCode> {
        ProblemCode::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem answer (RFC 9457) with the v1 extension members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:cpc-sync:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The code's fixed title.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// Human text (at most 1024 bytes; never payload bytes or tokens).
    pub detail: String,
    /// The stable machine code; clients decide on `status` and `code`.
    pub code: String,
    /// `unsupported_version`: the versions served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported: Option<Vec<u32>>,
    /// `bad_request`: a JSON pointer to the first offending member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// `too_large`: which limit (`max_body_bytes` or `max_batch_ops`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// `too_large`: the limit's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// `rate_limited`, `unavailable`: the wait, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// `history_diverged`: the server's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Position>,
    /// `history_diverged`: the client's `known`, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<Position>,
}

/// Longest `detail`, in bytes.
pub const MAX_DETAIL_BYTES: usize = 1024;

impl Problem {
    /// A problem of `code` saying `detail` (cut to [`MAX_DETAIL_BYTES`]).
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Problem {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL_BYTES {
            let mut cut = MAX_DETAIL_BYTES;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        Problem {
            kind: format!("urn:cpc-sync:problem:{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status(),
            detail,
            code: code.as_str().to_owned(),
            supported: None,
            pointer: None,
            limit: None,
            max: None,
            retry_after_ms: None,
            head: None,
            known: None,
        }
    }

    /// The code, if it is a v1 one.
    pub fn problem_code(&self) -> Option<ProblemCode> {
        ProblemCode::parse(&self.code)
    }

    /// The body as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and integers cannot fail; an empty
        // object is still a valid (if unhelpful) body.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_has_a_client_or_server_error_status() {
        for code in ProblemCode::ALL {
            assert_eq!(ProblemCode::parse(code.as_str()), Some(code));
            assert!((400..600).contains(&code.status()), "{code}");
        }
    }

    #[test]
    fn a_long_detail_is_cut_on_a_character_boundary() {
        let p = Problem::new(ProblemCode::BadRequest, "é".repeat(1000));
        assert!(p.detail.len() <= MAX_DETAIL_BYTES);
        assert!(p.to_json().contains("\"code\":\"bad_request\""));
    }
}
