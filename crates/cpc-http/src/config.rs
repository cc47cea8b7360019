//! [`HttpConfig`]: where the server is, who this device is, and the bounds
//! of every request.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;

use crate::error::ConfigError;

/// The smallest answer cap: room for any problem answer and a small push
/// answer.
pub const MIN_RESPONSE_BYTES: usize = 1024;
/// The largest answer cap (the cap is memory held per request).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Settings of an [`HttpTransport`](crate::HttpTransport) (and of a
/// [`HealthProbe`](crate::HealthProbe), which reads `base_url` and the
/// timeouts).
///
/// [`HttpConfig::new`] fills in the defaults; change fields with struct
/// update syntax. Everything is checked by [`HttpConfig::validate`], which
/// the transport and the probe call when they are built.
///
/// ```
/// use std::time::Duration;
/// use cpc_http::HttpConfig;
///
/// let config = HttpConfig {
///     request_timeout: Duration::from_secs(10),
///     ..HttpConfig::new("https://sync.example.com", "dev-7f3a")
/// };
/// assert!(config.validate().is_ok());
///
/// // Plain http leaves the machine only when the application says so.
/// let lan = HttpConfig::new("http://192.168.1.20:8080", "dev-7f3a");
/// assert_eq!(lan.validate().map_err(|e| e.field()), Err("base_url"));
/// let lan = HttpConfig { allow_plain_http: true, ..lan };
/// assert!(lan.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// The server's root, without `/v1`: `https://host[:port][/prefix]`.
    /// No user name or password (they would end up in logs), no query, no
    /// fragment.
    pub base_url: String,
    /// More instances of the same store (PostgreSQL behind several
    /// servers), tried in order when the current one fails; same rules as
    /// `base_url`, at most 16. Default none. See the crate's failover
    /// section.
    pub failover_urls: Vec<String>,
    /// This device's `client_id` (1 to 64 characters of `A-Z a-z 0-9 . _
    /// -`), stable for the lifetime of its queue; the token must be bound to
    /// it.
    pub client_id: String,
    /// Limit for establishing a connection (DNS, TCP, TLS). Default 10 s.
    pub connect_timeout: Duration,
    /// Limit for one whole request, answer body included. Default 30 s.
    pub request_timeout: Duration,
    /// Most answer bytes read from any request; a larger answer is a
    /// protocol error (§2.6). Default 8 MiB, in `1 KiB ..= 256 MiB`.
    pub max_response_bytes: usize,
    /// The size of a pull page asked for (`max_bytes`), clamped to the
    /// server's `min_pull_bytes ..= max_pull_bytes` and to
    /// `max_response_bytes`. Default 4 MiB. Also what a client holds of one
    /// page at most.
    pub max_pull_bytes: u64,
    /// Allow plain `http://` to hosts other than loopback (`localhost`,
    /// `127.0.0.0/8`, `::1`). Default `false`: credentials and payloads
    /// would cross the network in clear text.
    pub allow_plain_http: bool,
}

impl HttpConfig {
    /// Settings for the server at `base_url`, acting as `client_id`, with
    /// the default timeouts and cap. Not checked yet: see
    /// [`validate`](Self::validate).
    pub fn new(base_url: impl Into<String>, client_id: impl Into<String>) -> Self {
        HttpConfig {
            base_url: base_url.into(),
            failover_urls: Vec::new(),
            client_id: client_id.into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 8 << 20,
            max_pull_bytes: 4 << 20,
            allow_plain_http: false,
        }
    }

    /// Checks that the settings can work; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failover_urls.len() > MAX_FAILOVER_URLS {
            return Err(ConfigError::OutOfRange {
                field: "failover_urls",
                reason: "at most 16",
            });
        }
        for base in self.bases() {
            self.base(base)?;
        }
        if !cpc_protocol::valid_client_id(&self.client_id) {
            return Err(ConfigError::InvalidClientId {
                client_id: self.client_id.clone(),
            });
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                field: "connect_timeout",
            });
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                field: "request_timeout",
            });
        }
        if !(MIN_RESPONSE_BYTES..=MAX_RESPONSE_BYTES).contains(&self.max_response_bytes) {
            return Err(ConfigError::OutOfRange {
                field: "max_response_bytes",
                reason: "must be in 1024..=268435456",
            });
        }
        if self.max_pull_bytes == 0 {
            return Err(ConfigError::OutOfRange {
                field: "max_pull_bytes",
                reason: "must be above 0",
            });
        }
        Ok(())
    }

    /// `base_url`, then `failover_urls`.
    pub(crate) fn bases(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.base_url.as_str()).chain(self.failover_urls.iter().map(String::as_str))
    }

    /// The URL of `endpoint` (`"/v1/push"`, …) under `base_url`.
    #[cfg(test)]
    pub(crate) fn endpoint(&self, endpoint: &str) -> Result<Url, ConfigError> {
        self.endpoint_of(&self.base_url, endpoint)
    }

    /// The URL of `endpoint` (`"/v1/push"`, …) under `base`.
    pub(crate) fn endpoint_of(&self, base: &str, endpoint: &str) -> Result<Url, ConfigError> {
        let base = self.base(base)?;
        // Joined as text: `Url::join` would drop the base's last segment
        // when it has no trailing slash (`/prefix` + `v1/push` = `/v1/push`).
        let text = format!("{}{endpoint}", base.as_str().trim_end_matches('/'));
        Url::parse(&text).map_err(|e| ConfigError::InvalidBaseUrl {
            reason: e.to_string(),
        })
    }

    /// `base` parsed and checked.
    fn base(&self, base: &str) -> Result<Url, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidBaseUrl {
            reason: reason.to_owned(),
        };
        let url = Url::parse(base).map_err(|e| ConfigError::InvalidBaseUrl {
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be https (or http)"));
        }
        let Some(host) = url.host_str() else {
            return Err(invalid("it has no host"));
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "it carries a user name or password; credentials come from the provider",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("it has a query or a fragment"));
        }
        if url.scheme() == "http" && !self.allow_plain_http && !is_loopback(host) {
            return Err(ConfigError::PlainHttp {
                host: host.to_owned(),
            });
        }
        Ok(url)
    }
}

/// Endpoints besides `base_url` at most.
const MAX_FAILOVER_URLS: usize = 16;

/// `localhost`, `127.0.0.0/8`, `::1` (also as an IPv4-mapped address).
/// Other names are not resolved: what a name points to can change, and
/// `localhost` is the only one the protocol trusts.
fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    // `host_str` writes IPv6 addresses in brackets.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(base: &str) -> Result<(), ConfigError> {
        HttpConfig::new(base, "dev-1").validate()
    }

    #[test]
    fn plain_http_is_for_loopback_only_unless_opted_in() {
        for ok in [
            "https://sync.example.com",
            "http://localhost:8080",
            "http://LOCALHOST",
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for refused in [
            "http://sync.example.com",
            "http://192.168.1.20:8080",
            "http://[::2]/",
            "http://localhost.example.com",
        ] {
            assert!(
                matches!(check(refused), Err(ConfigError::PlainHttp { .. })),
                "{refused}"
            );
        }
        let opted_in = HttpConfig {
            allow_plain_http: true,
            ..HttpConfig::new("http://192.168.1.20:8080", "dev-1")
        };
        assert_eq!(opted_in.validate(), Ok(()));
    }

    #[test]
    fn unusable_urls_ids_and_bounds_name_their_field() {
        for bad in [
            "sync.example.com",
            "ftp://sync.example.com",
            "https://user:pw@sync.example.com",
            "https://sync.example.com/?a=1",
            "https://sync.example.com/#top",
        ] {
            assert_eq!(check(bad).map_err(|e| e.field()), Err("base_url"), "{bad}");
        }
        let bad_id = HttpConfig::new("https://h", "dev 1").validate();
        assert_eq!(bad_id.map_err(|e| e.field()), Err("client_id"));
        let zero = HttpConfig {
            request_timeout: Duration::ZERO,
            ..HttpConfig::new("https://h", "dev-1")
        };
        assert_eq!(
            zero.validate().map_err(|e| e.field()),
            Err("request_timeout")
        );
        let tiny = HttpConfig {
            max_response_bytes: 10,
            ..HttpConfig::new("https://h", "dev-1")
        };
        assert_eq!(
            tiny.validate().map_err(|e| e.field()),
            Err("max_response_bytes")
        );
    }

    #[test]
    fn endpoints_keep_the_base_path() -> Result<(), ConfigError> {
        let root = HttpConfig::new("https://h:8443", "dev-1");
        assert_eq!(
            root.endpoint("/v1/push")?.as_str(),
            "https://h:8443/v1/push"
        );
        let prefixed = HttpConfig::new("https://h/sync/", "dev-1");
        assert_eq!(
            prefixed.endpoint("/v1/health")?.as_str(),
            "https://h/sync/v1/health"
        );
        let bare = HttpConfig::new("https://h/sync", "dev-1");
        assert_eq!(
            bare.endpoint("/v1/info")?.as_str(),
            "https://h/sync/v1/info"
        );
        Ok(())
    }
}
