//! [`HealthProbe`]: a `cpc_network::StatusSource` that polls `GET
//! /v1/health` over the same stack as the pushes (reqwest, rustls).
//!
//! `cpc_network::ProbeSource` speaks plain HTTP/1.1 over TCP and looks for
//! a token anywhere in the body; a cpc server behind TLS needs this one,
//! which also checks the body is exactly `cpc-sync ok\n` (§4.1).

use std::time::Duration;

use cpc_network::{next_wait, FailureKind, ObservationSink, Signal, SourceName, StatusSource};
use cpc_protocol::{HEALTH_BODY, V1};
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::{Client, Url};

use crate::body::{read_capped, BodyError};
use crate::config::HttpConfig;
use crate::error::{ConfigError, Error};

/// The most bytes read from a health answer: the real one has 12.
const MAX_HEALTH_BYTES: usize = 1024;

/// Timing of a [`HealthProbe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthProbeConfig {
    /// Mean time between probes. Default 10 s.
    pub interval: Duration,
    /// Each wait is drawn uniformly in `[interval - jitter, interval +
    /// jitter]`, so devices do not probe in step. At most `interval`.
    /// Default 2 s.
    pub jitter: Duration,
    /// Limit for one whole probe (connect, answer). Default 5 s.
    pub timeout: Duration,
    /// Seed of the jitter; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for HealthProbeConfig {
    fn default() -> Self {
        HealthProbeConfig {
            interval: Duration::from_secs(10),
            jitter: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            seed: None,
        }
    }
}

impl HealthProbeConfig {
    /// Checks that the timings can work; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The rules are cpc-network's, for every periodic probe; only the
        // error type is this crate's.
        cpc_network::check_probe_timing(self.interval, self.jitter, self.timeout).map_err(|e| {
            match e {
                cpc_network::ConfigError::ZeroDuration { field } => {
                    ConfigError::ZeroDuration { field }
                }
                cpc_network::ConfigError::OutOfRange { field, reason } => {
                    ConfigError::OutOfRange { field, reason }
                }
                _ => ConfigError::OutOfRange {
                    field: "probe",
                    reason: "timings cannot work",
                },
            }
        })
    }
}

/// Polls `GET {base}/v1/health` (each of `base_url` and the failover URLs
/// in turn, until one is healthy) and reports [`Signal::Success`] only for a
/// `200` whose body is exactly `cpc-sync ok\n`; anything else is a
/// [`Signal::Failure`] of the matching [`FailureKind`] (a captive portal's
/// `200` login page is `InvalidAnswer`, not online).
///
/// Attach it with `NetworkMonitor::attach`: the first probe runs at once,
/// then one per jittered interval, until the monitor is gone. Each probe
/// opens its own connection (no pooling), so a success means the server
/// can be reached now, not that an old connection is still open.
#[derive(Debug, Clone)]
pub struct HealthProbe {
    name: SourceName,
    client: Client,
    /// `base_url`'s health, then each failover URL's.
    urls: Vec<Url>,
    config: HealthProbeConfig,
}

impl HealthProbe {
    /// A probe named `"http-health"` of the server `http` points to.
    pub fn new(http: &HttpConfig, config: HealthProbeConfig) -> Result<Self, Error> {
        HealthProbe::named("http-health", http, config)
    }

    /// A probe with its own name.
    pub fn named(
        name: impl Into<SourceName>,
        http: &HttpConfig,
        config: HealthProbeConfig,
    ) -> Result<Self, Error> {
        http.validate()?;
        config.validate()?;
        let client = Client::builder()
            .use_rustls_tls()
            .connect_timeout(http.connect_timeout.min(config.timeout))
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .user_agent(concat!("cpc-http/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)?;
        Ok(HealthProbe {
            name: name.into(),
            client,
            urls: http
                .bases()
                .map(|base| http.endpoint_of(base, &format!("{V1}/health")))
                .collect::<Result<_, _>>()?,
            config,
        })
    }

    /// Probes once and says what was seen.
    pub async fn probe_once(&self) -> Signal {
        match self.check().await {
            Ok(()) => Signal::Success,
            Err(kind) => {
                tracing::debug!(source = %self.name, kind = kind.as_str(), "health probe failed");
                Signal::Failure(kind)
            }
        }
    }

    /// Online if any instance is healthy: a device can fail over to it.
    async fn check(&self) -> Result<(), FailureKind> {
        let mut last = FailureKind::Connect;
        for url in &self.urls {
            match self.check_one(url).await {
                Ok(()) => return Ok(()),
                Err(kind) => last = kind,
            }
        }
        Err(last)
    }

    async fn check_one(&self, url: &Url) -> Result<(), FailureKind> {
        // Like every request of this crate, with a fresh Cpc-Request-Id
        // (docs/protocol.md §2.1).
        let request_id = crate::failover::new_request_id();
        let sent = self
            .client
            .get(url.clone())
            .header(cpc_protocol::REQUEST_ID_HEADER, &request_id)
            .send()
            .await;
        tracing::trace!(request_id, ok = sent.is_ok(), "health probe answered");
        let mut response = sent.map_err(|e| network_failure(&e))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(FailureKind::Server);
        }
        if status.as_u16() != 200 {
            return Err(FailureKind::InvalidAnswer);
        }
        match read_capped(&mut response, MAX_HEALTH_BYTES).await {
            Ok(body) if body == HEALTH_BODY.as_bytes() => Ok(()),
            Ok(_) | Err(BodyError::TooLarge { .. }) => Err(FailureKind::InvalidAnswer),
            Err(BodyError::Broken(e)) => Err(network_failure(&e)),
        }
    }
}

fn network_failure(error: &reqwest::Error) -> FailureKind {
    if error.is_connect() {
        FailureKind::Connect
    } else if error.is_timeout() {
        FailureKind::Timeout
    } else {
        FailureKind::Io
    }
}

impl StatusSource for HealthProbe {
    fn name(&self) -> SourceName {
        self.name.clone()
    }

    async fn run(self, sink: ObservationSink) {
        let mut rng = match self.config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        loop {
            let signal = tokio::select! {
                biased;
                signal = self.probe_once() => signal,
                _ = sink.closed() => return,
            };
            if !sink.report(signal) {
                return;
            }
            let wait = next_wait(self.config.interval, self.config.jitter, &mut rng);
            tokio::select! {
                biased;
                _ = tokio::time::sleep(wait) => {}
                _ = sink.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_that_cannot_work_are_refused() {
        let http = HttpConfig::new("https://h", "dev-1");
        assert!(HealthProbe::new(&http, HealthProbeConfig::default()).is_ok());
        let jitter = HealthProbeConfig {
            jitter: Duration::from_secs(11),
            ..HealthProbeConfig::default()
        };
        assert_eq!(jitter.validate().map_err(|e| e.field()), Err("jitter"));
        let zero = HealthProbeConfig {
            timeout: Duration::ZERO,
            ..HealthProbeConfig::default()
        };
        assert_eq!(zero.validate().map_err(|e| e.field()), Err("timeout"));
        let plain = HttpConfig::new("http://example.com", "dev-1");
        assert!(matches!(
            HealthProbe::new(&plain, HealthProbeConfig::default()),
            Err(Error::Config(ConfigError::PlainHttp { .. }))
        ));
    }
}
