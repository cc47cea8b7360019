//! The error types of `cpc-network`.

use std::time::Duration;

use crate::status::FailureKind;

/// Errors of `cpc-network`: invalid configuration and failed probes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration was refused.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// A source was attached outside a tokio runtime.
    #[error("no tokio runtime to run the source on")]
    NoRuntime,
    /// The probe target's name did not resolve to any address.
    #[error("could not resolve probe target {target:?}")]
    Resolve {
        /// The `host:port` that was looked up.
        target: String,
        /// The resolver's error, if it gave one (none when it answered with
        /// no address).
        #[source]
        source: Option<std::io::Error>,
    },
    /// The TCP connection to the probe target failed.
    #[error("could not connect to probe target {target:?}")]
    Connect {
        /// The `host:port` probed.
        target: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The probe did not complete within its timeout.
    #[error("probe of {target:?} timed out after {timeout:?}")]
    Timeout {
        /// The `host:port` probed.
        target: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// Reading or writing the probe's connection failed.
    #[error("probe connection to {target:?} broke")]
    Io {
        /// The `host:port` probed.
        target: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP answer had another status than the expected one.
    #[error("probe answered status {got}, expected {expected}")]
    UnexpectedStatus {
        /// The expected status code.
        expected: u16,
        /// The status code received.
        got: u16,
    },
    /// The HTTP answer had the expected status but its body lacked the
    /// expected token (typically a captive portal's login page).
    #[error("probe answer lacks the expected body token ({body_bytes} body bytes read)")]
    MissingBodyToken {
        /// How many body bytes were inspected.
        body_bytes: usize,
    },
    /// The answer was not a well-formed HTTP/1.x response.
    #[error("malformed probe answer: {reason}")]
    MalformedResponse {
        /// What was wrong.
        reason: &'static str,
    },
    /// The answer's header section did not fit in the configured limit.
    #[error("probe answer headers exceed {limit} bytes")]
    ResponseTooLarge {
        /// The configured limit.
        limit: usize,
    },
}

impl Error {
    /// The reachability failure this error stands for, or `None` for errors
    /// that are not about the network (configuration).
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            Error::Config(_) | Error::NoRuntime => None,
            Error::Resolve { .. } => Some(FailureKind::Dns),
            Error::Connect { .. } => Some(FailureKind::Connect),
            Error::Timeout { .. } => Some(FailureKind::Timeout),
            Error::Io { .. } => Some(FailureKind::Io),
            Error::UnexpectedStatus { got, .. } if (500..600).contains(got) => {
                Some(FailureKind::Server)
            }
            Error::UnexpectedStatus { .. }
            | Error::MissingBodyToken { .. }
            | Error::MalformedResponse { .. }
            | Error::ResponseTooLarge { .. } => Some(FailureKind::InvalidAnswer),
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count that must be at least 1 was 0.
    #[error("{field} must be at least 1")]
    ZeroCount {
        /// The field name.
        field: &'static str,
    },
    /// A duration that must be positive was zero.
    #[error("{field} must be greater than zero")]
    ZeroDuration {
        /// The field name.
        field: &'static str,
    },
    /// A ratio was outside `(0, 1]`.
    #[error("{field} must be in (0, 1], got {value}")]
    RatioOutOfRange {
        /// The field name.
        field: &'static str,
        /// The refused value, as text (ratios are floats).
        value: String,
    },
    /// The probe target is not of the form `host:port`.
    #[error("probe target {target:?} is not host:port")]
    InvalidTarget {
        /// The refused target.
        target: String,
    },
    /// The HTTP path does not start with `/` or contains whitespace or
    /// control characters.
    #[error("probe path {path:?} must start with '/' and contain no whitespace")]
    InvalidPath {
        /// The refused path.
        path: String,
    },
    /// A value is outside its allowed bounds.
    #[error("{field} is out of range: {reason}")]
    OutOfRange {
        /// The field name.
        field: &'static str,
        /// The bound that was violated.
        reason: &'static str,
    },
}

/// The result type of `cpc-network`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
