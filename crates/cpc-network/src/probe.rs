//! [`ProbeSource`]: periodic TCP connect or HTTP/1.1 health check.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{ConfigError, Error};
use crate::observation::{Signal, SourceName};
use crate::source::{ObservationSink, StatusSource};
use crate::status::FailureKind;

/// Largest answer a probe may be configured to read.
pub const MAX_RESPONSE_LIMIT: usize = 1 << 20;

/// What a probe checks once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeCheck {
    /// A TCP connection is enough.
    Connect,
    /// An HTTP/1.1 `GET` whose answer is validated.
    Http(HttpCheck),
}

/// An HTTP health check: `GET path`, then the answer's status must be
/// `expect_status` and, when set, its body must contain `expect_body`.
///
/// Set `expect_body` whenever the endpoint allows it: a captive portal or a
/// LAN without internet answers `200` with a login page, and only the token
/// tells the two apart. The token is searched in the raw body bytes (a
/// chunked answer is not de-chunked), so keep it short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Request path, starting with `/`.
    pub path: String,
    /// `Host` header; `None` uses the target's `host:port`.
    pub host_header: Option<String>,
    /// Status the answer must have. Default 200.
    pub expect_status: u16,
    /// Bytes the body must contain, if any.
    pub expect_body: Option<String>,
}

impl HttpCheck {
    /// `GET path`, expecting `200` and no particular body.
    pub fn new(path: impl Into<String>) -> Self {
        HttpCheck {
            path: path.into(),
            host_header: None,
            expect_status: 200,
            expect_body: None,
        }
    }

    /// Also requires the body to contain `token`.
    pub fn expect_body(mut self, token: impl Into<String>) -> Self {
        self.expect_body = Some(token.into());
        self
    }

    /// Requires another status than 200 (a `204` endpoint, say).
    pub fn expect_status(mut self, status: u16) -> Self {
        self.expect_status = status;
        self
    }
}

/// Checks the timings every periodic probe shares (this crate's
/// [`ProbeConfig`] and `cpc-http`'s health probe): a positive `interval` and
/// `timeout`, and a `jitter` no larger than `interval`. The error names the
/// field.
pub fn check_probe_timing(
    interval: Duration,
    jitter: Duration,
    timeout: Duration,
) -> Result<(), ConfigError> {
    if interval.is_zero() {
        return Err(ConfigError::ZeroDuration { field: "interval" });
    }
    if timeout.is_zero() {
        return Err(ConfigError::ZeroDuration { field: "timeout" });
    }
    if jitter > interval {
        return Err(ConfigError::OutOfRange {
            field: "jitter",
            reason: "must not exceed interval",
        });
    }
    Ok(())
}

/// Settings of a [`ProbeSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// `host:port` to probe (`[::1]:80` for an IPv6 literal).
    pub target: String,
    /// What to check once connected.
    pub check: ProbeCheck,
    /// Mean time between probes. Default 10 s.
    pub interval: Duration,
    /// Each wait is drawn uniformly in `[interval - jitter, interval +
    /// jitter]`, so that devices do not probe in lockstep. At most
    /// `interval`. Default 2 s.
    pub jitter: Duration,
    /// Limit for one whole probe (resolve, connect, answer). Default 5 s.
    pub timeout: Duration,
    /// Most bytes read from an answer (headers and body). Default 8 KiB.
    pub max_response_bytes: usize,
    /// Seed of the jitter RNG; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl ProbeConfig {
    /// A TCP connect probe of `target` with default timings.
    pub fn tcp(target: impl Into<String>) -> Self {
        ProbeConfig {
            target: target.into(),
            check: ProbeCheck::Connect,
            interval: Duration::from_secs(10),
            jitter: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_response_bytes: 8 * 1024,
            seed: None,
        }
    }

    /// An HTTP probe of `target` with `check` and default timings.
    pub fn http(target: impl Into<String>, check: HttpCheck) -> Self {
        ProbeConfig {
            check: ProbeCheck::Http(check),
            ..ProbeConfig::tcp(target)
        }
    }

    /// Checks that the settings can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let valid_target = self
            .target
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            && !self
                .target
                .chars()
                .any(|c| c.is_whitespace() || c.is_control());
        if !valid_target {
            return Err(ConfigError::InvalidTarget {
                target: self.target.clone(),
            });
        }
        check_probe_timing(self.interval, self.jitter, self.timeout)?;
        if let ProbeCheck::Http(check) = &self.check {
            if !check.path.starts_with('/') || has_space_or_control(&check.path) {
                return Err(ConfigError::InvalidPath {
                    path: check.path.clone(),
                });
            }
            if check
                .host_header
                .as_deref()
                .is_some_and(|h| h.is_empty() || has_space_or_control(h))
            {
                return Err(ConfigError::OutOfRange {
                    field: "host_header",
                    reason: "must be non-empty without whitespace or control characters",
                });
            }
            if !(100..=599).contains(&check.expect_status) {
                return Err(ConfigError::OutOfRange {
                    field: "expect_status",
                    reason: "must be an HTTP status in 100..=599",
                });
            }
            if let Some(token) = &check.expect_body {
                if token.is_empty() || token.len() >= self.max_response_bytes {
                    return Err(ConfigError::OutOfRange {
                        field: "expect_body",
                        reason: "must be non-empty and shorter than max_response_bytes",
                    });
                }
            }
        }
        if !(64..=MAX_RESPONSE_LIMIT).contains(&self.max_response_bytes) {
            return Err(ConfigError::OutOfRange {
                field: "max_response_bytes",
                reason: "must be in 64..=1048576",
            });
        }
        Ok(())
    }
}

fn has_space_or_control(text: &str) -> bool {
    text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A source that probes a `host:port` every `interval` (jittered) and
/// reports a success or a typed failure.
///
/// The first probe runs as soon as the source starts. Use
/// [`probe_once`](Self::probe_once) to probe without the loop.
#[derive(Debug, Clone)]
pub struct ProbeSource {
    name: SourceName,
    config: ProbeConfig,
}

impl ProbeSource {
    /// A probe named `"probe"`.
    pub fn new(config: ProbeConfig) -> Result<Self, ConfigError> {
        ProbeSource::named("probe", config)
    }

    /// A probe with its own name.
    pub fn named(name: impl Into<SourceName>, config: ProbeConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(ProbeSource {
            name: name.into(),
            config,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// Probes once: resolves, connects and (for HTTP) validates the answer,
    /// all within the timeout. Returns how long it took.
    pub async fn probe_once(&self) -> Result<Duration, Error> {
        let started = Instant::now();
        match tokio::time::timeout(self.config.timeout, self.exchange()).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Timeout {
                target: self.config.target.clone(),
                timeout: self.config.timeout,
            }),
        }
    }

    /// Probes once and turns the outcome into a [`Signal`], logging failures.
    pub async fn probe_signal(&self) -> Signal {
        match self.probe_once().await {
            Ok(latency) => {
                tracing::debug!(
                    source = %self.name,
                    latency_ms = cpc_core::millis(latency),
                    "probe succeeded"
                );
                Signal::Success
            }
            Err(err) => {
                let kind = err.failure_kind().unwrap_or(FailureKind::Other);
                tracing::debug!(source = %self.name, kind = kind.as_str(), error = %err, "probe failed");
                Signal::Failure(kind)
            }
        }
    }

    async fn exchange(&self) -> Result<(), Error> {
        let target = &self.config.target;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target.as_str())
            .await
            .map_err(|source| Error::Resolve {
                target: target.clone(),
                source: Some(source),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::Resolve {
                target: target.clone(),
                source: None,
            });
        }
        let mut stream = TcpStream::connect(addrs.as_slice())
            .await
            .map_err(|source| Error::Connect {
                target: target.clone(),
                source,
            })?;
        match &self.config.check {
            ProbeCheck::Connect => Ok(()),
            ProbeCheck::Http(check) => {
                http_exchange(&mut stream, target, check, self.config.max_response_bytes).await
            }
        }
    }
}

impl StatusSource for ProbeSource {
    fn name(&self) -> SourceName {
        self.name.clone()
    }

    async fn run(self, sink: ObservationSink) {
        let mut rng = match self.config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let (interval, jitter) = (self.config.interval, self.config.jitter);
        drive(
            &sink,
            move || next_wait(interval, jitter, &mut rng),
            || self.probe_signal(),
        )
        .await;
    }
}

/// The probe loop: probe, report, wait; until the monitor is gone. Generic
/// over the probe so the schedule is tested without sockets.
pub(crate) async fn drive<W, P, F>(sink: &ObservationSink, mut wait: W, mut probe: P)
where
    W: FnMut() -> Duration,
    P: FnMut() -> F,
    F: Future<Output = Signal>,
{
    loop {
        let signal = tokio::select! {
            biased;
            signal = probe() => signal,
            _ = sink.closed() => return,
        };
        if !sink.report(signal) {
            return;
        }
        tokio::select! {
            biased;
            _ = tokio::time::sleep(wait()) => {}
            _ = sink.closed() => return,
        }
    }
}

/// The wait before the next probe: uniform in `[interval - jitter, interval
/// + jitter]` (jitter is at most interval, so never negative).
pub fn next_wait(interval: Duration, jitter: Duration, rng: &mut impl Rng) -> Duration {
    if jitter.is_zero() {
        return interval;
    }
    let low = interval.saturating_sub(jitter);
    let high = interval.saturating_add(jitter);
    rng.gen_range(low..=high)
}

async fn http_exchange(
    stream: &mut TcpStream,
    target: &str,
    check: &HttpCheck,
    limit: usize,
) -> Result<(), Error> {
    let io_err = |source| Error::Io {
        target: target.to_owned(),
        source,
    };
    let host = check.host_header.as_deref().unwrap_or(target);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cpc-network\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        check.path
    );
    stream.write_all(request.as_bytes()).await.map_err(io_err)?;
    stream.flush().await.map_err(io_err)?;

    let mut answer = Vec::with_capacity(limit.min(2048));
    let mut chunk = [0u8; 2048];
    loop {
        let room = limit - answer.len();
        let complete = if room == 0 {
            true
        } else {
            let want = room.min(chunk.len());
            let read = stream
                .read(chunk.get_mut(..want).unwrap_or(&mut []))
                .await
                .map_err(io_err)?;
            answer.extend_from_slice(chunk.get(..read).unwrap_or(&[]));
            read == 0 || answer.len() >= limit
        };
        match validate_answer(&answer, check, complete, limit) {
            Verdict::Pass => return Ok(()),
            Verdict::Fail(err) => return Err(err),
            Verdict::NeedMore if complete => {
                // `validate_answer` never asks for more of a complete answer;
                // treat it as malformed rather than loop.
                return Err(Error::MalformedResponse {
                    reason: "answer ended early",
                });
            }
            Verdict::NeedMore => {}
        }
    }
}

/// What [`validate_answer`] concluded.
#[derive(Debug)]
pub enum Verdict {
    /// The answer is valid.
    Pass,
    /// The answer is invalid.
    Fail(Error),
    /// Not enough bytes to tell yet.
    NeedMore,
}

/// Validates the bytes of an HTTP/1.x answer read so far, against `check`.
///
/// `complete` says no more bytes will come (end of stream or `limit`
/// reached). Pure, so it is tested on canned answers.
pub fn validate_answer(answer: &[u8], check: &HttpCheck, complete: bool, limit: usize) -> Verdict {
    let Some(line_end) = answer.iter().position(|b| *b == b'\n') else {
        return if complete {
            Verdict::Fail(incomplete(
                answer.len(),
                limit,
                "answer ended inside its status line",
            ))
        } else {
            Verdict::NeedMore
        };
    };
    let status = match parse_status_line(answer.get(..line_end).unwrap_or_default()) {
        Ok(status) => status,
        Err(reason) => return Verdict::Fail(Error::MalformedResponse { reason }),
    };
    if status != check.expect_status {
        return Verdict::Fail(Error::UnexpectedStatus {
            expected: check.expect_status,
            got: status,
        });
    }
    let Some(token) = check.expect_body.as_deref() else {
        return Verdict::Pass;
    };
    let Some((head_len, body_start)) = find_header_end(answer) else {
        return if complete {
            Verdict::Fail(incomplete(
                answer.len(),
                limit,
                "answer ended inside its headers",
            ))
        } else {
            Verdict::NeedMore
        };
    };
    let body = answer.get(body_start..).unwrap_or_default();
    if contains(body, token.as_bytes()) {
        return Verdict::Pass;
    }
    let body_done = content_length(answer.get(..head_len).unwrap_or_default())
        .is_some_and(|len| body.len() >= len);
    if complete || body_done {
        Verdict::Fail(Error::MissingBodyToken {
            body_bytes: body.len(),
        })
    } else {
        Verdict::NeedMore
    }
}

fn incomplete(read: usize, limit: usize, reason: &'static str) -> Error {
    if read >= limit {
        Error::ResponseTooLarge { limit }
    } else {
        Error::MalformedResponse { reason }
    }
}

/// `HTTP/1.x NNN reason` → `NNN`.
fn parse_status_line(line: &[u8]) -> Result<u16, &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line
        .strip_prefix(b"HTTP/1.")
        .ok_or("status line does not start with HTTP/1.")?;
    let rest = rest.get(1..).ok_or("status line too short")?;
    let rest = rest
        .strip_prefix(b" ")
        .ok_or("no space after the HTTP version")?;
    let code = rest.get(..3).ok_or("status code too short")?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|b| *b != b' ') {
        return Err("status code is not three digits");
    }
    let status = code
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err("status code out of range");
    }
    Ok(status)
}

/// (length of the head without the blank line, start of the body).
fn find_header_end(answer: &[u8]) -> Option<(usize, usize)> {
    if let Some(at) = find(answer, b"\r\n\r\n") {
        return Some((at, at + 4));
    }
    find(answer, b"\n\n").map(|at| (at, at + 2))
}

fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MonitorConfig, NetworkMonitor, NetworkStatus};
    use std::sync::{Arc, Mutex};

    fn check() -> HttpCheck {
        HttpCheck::new("/health").expect_body("cpc-ok")
    }

    #[test]
    fn a_login_page_with_status_200_fails_validation() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 32\r\n\r\n<html><form>Log in</form></html>";
        match validate_answer(answer, &check(), false, 8192) {
            Verdict::Fail(Error::MissingBodyToken { body_bytes }) => assert_eq!(body_bytes, 32),
            other => panic!("expected a missing token, got {other:?}"),
        }
    }

    #[test]
    fn the_token_passes_even_before_the_body_ends() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstatus: cpc-ok";
        assert!(matches!(
            validate_answer(answer, &check(), false, 8192),
            Verdict::Pass
        ));
    }

    #[test]
    fn a_partial_answer_asks_for_more_and_a_cut_one_fails() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Len";
        assert!(matches!(
            validate_answer(answer, &check(), false, 8192),
            Verdict::NeedMore
        ));
        assert!(matches!(
            validate_answer(answer, &check(), true, 8192),
            Verdict::Fail(Error::MalformedResponse { .. })
        ));
        assert!(matches!(
            validate_answer(answer, &check(), true, answer.len()),
            Verdict::Fail(Error::ResponseTooLarge { .. })
        ));
    }

    #[test]
    fn wrong_status_and_garbage_fail() {
        let redirect = b"HTTP/1.1 302 Found\r\nLocation: http://portal/\r\n\r\n";
        assert!(matches!(
            validate_answer(redirect, &check(), false, 8192),
            Verdict::Fail(Error::UnexpectedStatus {
                expected: 200,
                got: 302
            })
        ));
        for garbage in [
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            b"HTTP/1.1 2x0 OK\r\n",
            b"HTTP/1.1 20\r\n",
        ] {
            assert!(matches!(
                validate_answer(garbage, &check(), false, 8192),
                Verdict::Fail(Error::MalformedResponse { .. })
            ));
        }
        let unavailable = Error::UnexpectedStatus {
            expected: 200,
            got: 503,
        };
        assert_eq!(unavailable.failure_kind(), Some(FailureKind::Server));
    }

    #[test]
    fn without_a_token_the_status_line_is_enough() {
        let plain = HttpCheck::new("/").expect_status(204);
        assert!(matches!(
            validate_answer(b"HTTP/1.0 204 No Content\n", &plain, false, 8192),
            Verdict::Pass
        ));
    }

    #[test]
    fn config_validation_refuses_what_cannot_work() {
        assert!(ProbeConfig::tcp("example.org:443").validate().is_ok());
        assert!(ProbeConfig::tcp("[::1]:8080").validate().is_ok());
        for bad in ["example.org", ":80", "host:99999", "host :80"] {
            assert!(matches!(
                ProbeConfig::tcp(bad).validate(),
                Err(ConfigError::InvalidTarget { .. })
            ));
        }
        let bad_path = ProbeConfig::http("h:80", HttpCheck::new("health"));
        assert!(matches!(
            bad_path.validate(),
            Err(ConfigError::InvalidPath { .. })
        ));
        let injected = ProbeConfig::http("h:80", HttpCheck::new("/a HTTP/1.1\r\nX: y"));
        assert!(matches!(
            injected.validate(),
            Err(ConfigError::InvalidPath { .. })
        ));
        let jitter = ProbeConfig {
            jitter: Duration::from_secs(11),
            ..ProbeConfig::tcp("h:80")
        };
        assert!(jitter.validate().is_err());
    }

    #[test]
    fn waits_stay_within_the_jitter_and_are_seeded() {
        let (interval, jitter) = (Duration::from_secs(10), Duration::from_secs(2));
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..200)
                .map(|_| next_wait(interval, jitter, &mut rng))
                .collect::<Vec<_>>()
        };
        let waits = draw(42);
        assert_eq!(waits, draw(42), "same seed, same waits");
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_secs(8) && *w <= Duration::from_secs(12)));
        assert!(waits.iter().any(|w| *w < Duration::from_secs(9)));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(11)));
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(next_wait(interval, Duration::ZERO, &mut rng), interval);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_probes_on_schedule_reports_and_stops_with_the_monitor() {
        let monitor = NetworkMonitor::new(MonitorConfig {
            seed: Some(3),
            ..MonitorConfig::default()
        })
        .unwrap();
        let sink = monitor.sink("fake-probe");
        let started = Instant::now();
        let probes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&probes);
        let task = tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(9);
            drive(
                &sink,
                move || next_wait(Duration::from_secs(10), Duration::from_secs(2), &mut rng),
                || {
                    let seen = Arc::clone(&seen);
                    async move {
                        let mut seen = seen.lock().unwrap();
                        seen.push(started.elapsed());
                        // Up for three probes, then down.
                        if seen.len() <= 3 {
                            Signal::Success
                        } else {
                            Signal::Failure(FailureKind::Connect)
                        }
                    }
                },
            )
            .await;
        });
        let mut rx = monitor.subscribe();
        rx.wait_for(|s| *s == NetworkStatus::Online).await.unwrap();
        rx.wait_for(|s| *s == NetworkStatus::Offline).await.unwrap();
        {
            let at = probes.lock().unwrap().clone();
            assert_eq!(at.len(), 6, "offline after the third failure: {at:?}");
            assert_eq!(at[0], Duration::ZERO, "first probe at once");
            for pair in at.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(
                    gap >= Duration::from_secs(8) && gap <= Duration::from_secs(12),
                    "{gap:?}"
                );
            }
        }
        drop(rx);
        drop(monitor);
        // The loop notices the monitor is gone and ends by itself.
        task.await.unwrap();
    }
}
