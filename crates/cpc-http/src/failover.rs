//! Several instances of one store (`base_url`, then `failover_urls`): which
//! one a request goes to. Each endpoint has a circuit breaker; requests go
//! to the current endpoint and stay there while it works (sticky, so a
//! device does not hop between instances); when it fails (no connection,
//! a timeout, `502`, `504`, or a bare `503`: a cpc server's own `503` is
//! its rate limit, answered as such), the same request is sent at once to
//! the next endpoint in order whose breaker is closed. Two failures in a
//! row open an endpoint's breaker for 30 s; after that, requests may try it
//! again. With every breaker open, the current endpoint is tried anyway:
//! a device is never left with nothing to try.
//!
//! Resending to another instance is safe: operation ids are the
//! idempotency key across instances of one store (a retry that reached
//! both is applied once). The endpoints must be instances of one store: a
//! different store answers `409 history_diverged`, as a restored one does.

use std::sync::Mutex;
use std::time::Duration;

use cpc_core::TransportError;
use cpc_protocol::{request_id_from, REQUEST_ID_HEADER, V1};
use reqwest::{RequestBuilder, Response, Url};
use tokio::time::Instant;

use crate::config::HttpConfig;
use crate::error::ConfigError;
use crate::status;

/// Failures in a row that open an endpoint's breaker.
const TRIP_AFTER: u32 = 2;
/// How long an open breaker keeps requests away.
const OPEN_FOR: Duration = Duration::from_secs(30);

/// An answer, and the `Cpc-Request-Id` its request carried (for the
/// caller's log line about it).
#[derive(Debug)]
pub(crate) struct Answered {
    pub response: Response,
    pub request_id: String,
}

/// A fresh `Cpc-Request-Id`: 64 random bits, 16 hex digits. Random rather
/// than counted, so that ids of many devices in one server's log do not
/// collide.
pub(crate) fn new_request_id() -> String {
    request_id_from(rand::random())
}

/// One instance's URLs.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub push: Url,
    pub pull: Url,
    pub info: Url,
}

/// An endpoint's circuit breaker.
#[derive(Debug, Clone, Copy, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    fn closed(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }
}

#[derive(Debug)]
struct State {
    current: usize,
    breakers: Vec<Breaker>,
}

/// The endpoints of a transport and their breakers.
#[derive(Debug)]
pub(crate) struct Endpoints {
    list: Vec<Endpoint>,
    state: Mutex<State>,
}

impl Endpoints {
    /// The endpoints `config` names, checked.
    pub(crate) fn new(config: &HttpConfig) -> Result<Endpoints, ConfigError> {
        let list = config
            .bases()
            .map(|base| {
                Ok(Endpoint {
                    push: config.endpoint_of(base, &format!("{V1}/push"))?,
                    pull: config.endpoint_of(base, &format!("{V1}/pull"))?,
                    info: config.endpoint_of(base, &format!("{V1}/info"))?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let breakers = vec![Breaker::default(); list.len()];
        Ok(Endpoints {
            list,
            state: Mutex::new(State {
                current: 0,
                breakers,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The order in which one request tries the endpoints: the current one
    /// if its breaker is closed, then the others in list order whose
    /// breakers are closed; the current one alone if every breaker is open.
    pub(crate) fn order(&self) -> Vec<usize> {
        let state = self.state();
        let now = Instant::now();
        let n = self.list.len();
        let order: Vec<usize> = (0..n)
            .map(|k| (state.current + k) % n)
            .filter(|&i| state.breakers[i].closed(now))
            .collect();
        if order.is_empty() {
            vec![state.current]
        } else {
            order
        }
    }

    /// Endpoint `i`.
    pub(crate) fn get(&self, i: usize) -> &Endpoint {
        &self.list[i.min(self.list.len() - 1)]
    }

    /// Endpoint `i` answered: its breaker closes and requests stay there.
    pub(crate) fn succeeded(&self, i: usize) {
        let mut state = self.state();
        state.breakers[i] = Breaker::default();
        if state.current != i {
            tracing::info!(endpoint = i, "failed over to another endpoint");
        }
        state.current = i;
    }

    /// Endpoint `i` failed: counted; the breaker opens after
    /// [`TRIP_AFTER`] failures in a row.
    pub(crate) fn failed(&self, i: usize) {
        let mut state = self.state();
        let now = Instant::now();
        let breaker = &mut state.breakers[i];
        breaker.failures += 1;
        if breaker.failures >= TRIP_AFTER {
            breaker.open_until = Some(now + OPEN_FOR);
            tracing::debug!(endpoint = i, "endpoint breaker open");
        }
    }

    /// Sends the request `build` makes for each endpoint, in
    /// [`order`](Self::order), until one answers with something else than
    /// a failure of that instance (no connection, a timeout, `502`, `503`,
    /// `504`); the last failure if none does. With one endpoint, exactly
    /// one request. Each request sent carries a fresh `Cpc-Request-Id`
    /// (docs/protocol.md §2.1): a resend to another instance is another
    /// HTTP request, and each server's log must name its own.
    pub(crate) async fn send(
        &self,
        build: impl Fn(&Endpoint) -> Result<RequestBuilder, TransportError>,
    ) -> Result<Answered, TransportError> {
        let order = self.order();
        let last = order.len() - 1;
        for (k, i) in order.into_iter().enumerate() {
            let request_id = new_request_id();
            let sent = build(self.get(i))?
                .header(REQUEST_ID_HEADER, &request_id)
                .send()
                .await;
            match sent {
                Ok(response) if !instance_down(&response) || k == last => {
                    if instance_down(&response) {
                        self.failed(i);
                    } else {
                        self.succeeded(i);
                    }
                    return Ok(Answered {
                        response,
                        request_id,
                    });
                }
                Ok(response) => {
                    tracing::debug!(
                        endpoint = i,
                        request_id,
                        status = response.status().as_u16(),
                        "endpoint failed; trying the next"
                    );
                    self.failed(i);
                }
                Err(e) => {
                    let error = status::request_error(&e);
                    tracing::debug!(endpoint = i, request_id, error = %error, "request failed");
                    if matches!(error, TransportError::Protocol(_)) {
                        return Err(error);
                    }
                    self.failed(i);
                    if k == last {
                        return Err(error);
                    }
                    tracing::debug!(endpoint = i, "endpoint failed; trying the next");
                }
            }
        }
        // `order` is never empty.
        Err(TransportError::Connect("no endpoint to try".into()))
    }

    /// How many endpoints there are.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

/// An answer that says this instance cannot serve now (another may): a
/// proxy's `502`/`504`, or a bare `503`. A cpc server's own `503` (a
/// problem body: its concurrency cap, a store briefly unavailable) is not:
/// it is a rate limit with a hint, and sending the same load to every
/// other instance at once would only spread the overload.
fn instance_down(response: &Response) -> bool {
    down_status(
        response.status().as_u16(),
        status::has_media_type(response.headers(), "application/problem+json"),
    )
}

fn down_status(status: u16, problem: bool) -> bool {
    matches!(status, 502 | 504) || (status == 503 && !problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Endpoints {
        let mut config = HttpConfig::new("http://127.0.0.1:1", "dev-1");
        config.failover_urls = (2..=n).map(|p| format!("http://127.0.0.1:{p}")).collect();
        Endpoints::new(&config).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_stick_to_the_endpoint_that_works_and_skip_open_breakers() {
        let e = endpoints(3);
        assert_eq!(e.order(), vec![0, 1, 2]);
        // The first fails once: still tried first (one failure is not a
        // trip), but the second answered, so requests stay there.
        e.failed(0);
        e.succeeded(1);
        assert_eq!(e.order(), vec![1, 2, 0]);
        // The second fails twice: its breaker opens, it is skipped.
        e.failed(1);
        e.failed(1);
        assert_eq!(e.order(), vec![2, 0]);
        e.failed(0);
        assert_eq!(e.order(), vec![2], "0 failed twice in a row too");
        // 30 s later both may be tried again, the current one first.
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(e.order(), vec![1, 2, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_breaker_open_the_current_endpoint_is_tried_anyway() {
        let e = endpoints(2);
        for i in [0, 0, 1, 1] {
            e.failed(i);
        }
        assert_eq!(e.order(), vec![0]);
        assert_eq!(endpoints(1).order(), vec![0]);
    }

    #[test]
    fn only_bad_gateway_a_bare_unavailable_and_gateway_timeout_move_a_request() {
        assert!(down_status(502, false) && down_status(503, false) && down_status(504, false));
        assert!(
            !down_status(503, true),
            "a cpc server's own 503 is a rate limit"
        );
        for other in [200, 400, 401, 409, 413, 429, 500] {
            assert!(!down_status(other, false), "{other}");
        }
    }
}
