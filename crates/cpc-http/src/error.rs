//! The errors of building a transport or a probe. Failures of a push are
//! `cpc_core::TransportError`s, the vocabulary the worker understands.

/// Why an [`HttpTransport`](crate::HttpTransport) or a
/// [`HealthProbe`](crate::HealthProbe) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting cannot work.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built (its TLS backend failed to start).
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A setting of [`HttpConfig`](crate::HttpConfig) or
/// [`HealthProbeConfig`](crate::HealthProbeConfig) that cannot work. Every
/// variant names its field ([`ConfigError::field`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `base_url` is not an absolute `http(s)://host[:port][/path]` URL.
    #[error("base_url is not usable: {reason}")]
    InvalidBaseUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// `base_url` is plain `http://` to a host that is not loopback, and
    /// `allow_plain_http` is not set (protocol §2.1).
    #[error(
        "base_url: plain http to {host:?}, which is not a loopback host \
         (use https, or set allow_plain_http)"
    )]
    PlainHttp {
        /// The refused host.
        host: String,
    },
    /// `client_id` is not 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    #[error("client_id {client_id:?} is not 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    InvalidClientId {
        /// The refused id.
        client_id: String,
    },
    /// A duration that must be positive is zero.
    #[error("{field} must be greater than zero")]
    ZeroDuration {
        /// The field.
        field: &'static str,
    },
    /// A value is outside its allowed bounds.
    #[error("{field} is out of range: {reason}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The bound that was violated.
        reason: &'static str,
    },
}

impl ConfigError {
    /// The name of the refused field.
    pub fn field(&self) -> &'static str {
        match self {
            ConfigError::InvalidBaseUrl { .. } | ConfigError::PlainHttp { .. } => "base_url",
            ConfigError::InvalidClientId { .. } => "client_id",
            ConfigError::ZeroDuration { field } | ConfigError::OutOfRange { field, .. } => field,
        }
    }
}
