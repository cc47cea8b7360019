//! Discovery (protocol §4): `GET /v1/info` before the first push, cached
//! for at most an hour, forgotten after a `413` or an `unsupported_version`.

use std::future::Future;
use std::time::Duration;

use cpc_core::TransportError;
use cpc_protocol::{Info, Limits, PullLimits, PROTOCOLS};
use reqwest::Client;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::body::read_capped;
use crate::failover::Endpoints;
use crate::status::{self, has_media_type, Refusal, MAX_PROBLEM_BYTES};

/// How long a server's advertised limits are trusted (§4: at most an hour).
pub(crate) const INFO_TTL: Duration = Duration::from_secs(3600);
/// How long the defaults stand in for an info answer that could not be
/// used (an old server or a proxy without `/v1/info`), before asking again.
/// Shorter than [`INFO_TTL`]: the server may be fixed meanwhile; not zero:
/// every push would otherwise cost two requests.
pub(crate) const FALLBACK_TTL: Duration = Duration::from_secs(300);

/// What `GET /v1/info` gave.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// A v1 server's answer.
    Info(Box<Info>),
    /// The server answered, but not with a usable info object: the
    /// protocol's default limits apply.
    Unusable,
}

/// The server's limits, fetched lazily and kept for [`INFO_TTL`].
#[derive(Debug, Default)]
pub(crate) struct InfoCache {
    // A tokio mutex held across the fetch: concurrent pushes wait for one
    // fetch instead of each sending its own.
    slot: Mutex<Option<Cached>>,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    limits: Limits,
    pull: PullLimits,
    until: Instant,
}

impl InfoCache {
    /// The cached limits, or those `fetch` gets when there are none or they
    /// are stale. A transport failure of the fetch is returned (the push
    /// would fail the same way) and nothing is cached.
    pub(crate) async fn limits<F, Fut>(
        &self,
        fetch: F,
    ) -> Result<(Limits, PullLimits), TransportError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, TransportError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = *slot {
            if Instant::now() < cached.until {
                return Ok((cached.limits, cached.pull));
            }
        }
        let (limits, pull, ttl) = match fetch().await? {
            Fetched::Info(info) => (sane(info.limits), sane_pull(info.pull_limits), INFO_TTL),
            Fetched::Unusable => (Limits::default(), PullLimits::default(), FALLBACK_TTL),
        };
        *slot = Some(Cached {
            limits,
            pull,
            until: Instant::now() + ttl,
        });
        Ok((limits, pull))
    }

    /// Forgets the cached limits: the next push asks again.
    pub(crate) async fn forget(&self) {
        *self.slot.lock().await = None;
    }
}

/// Limits a client can work with whatever a server advertised: at least one
/// operation per request.
fn sane(limits: Limits) -> Limits {
    Limits {
        max_batch_ops: limits.max_batch_ops.max(1),
        ..limits
    }
}

/// Pull limits a client can work with whatever a server advertised: a
/// page of at least one change, a byte range that is a range.
fn sane_pull(limits: PullLimits) -> PullLimits {
    PullLimits {
        max_pull_limit: limits.max_pull_limit.max(1),
        max_pull_bytes: limits.max_pull_bytes.max(limits.min_pull_bytes),
        ..limits
    }
}

/// Sends `GET /v1/info` and reads the answer (at most `cap` bytes).
///
/// A server that says it does not serve v1 (its `protocols`, or a `400
/// unsupported_version`) is an error: no push is sent to it. Any other
/// answer that is not a usable info object falls back to the defaults.
pub(crate) async fn fetch(
    endpoints: &Endpoints,
    client: &Client,
    cap: usize,
) -> Result<Fetched, TransportError> {
    let crate::failover::Answered {
        mut response,
        request_id,
    } = endpoints
        .send(|endpoint| Ok(client.get(endpoint.info.clone())))
        .await?;
    let code = response.status().as_u16();
    tracing::debug!(request_id, status = code, "GET /v1/info answered");
    if code != 200 {
        let body = crate::body::read_optional(&mut response, MAX_PROBLEM_BYTES.min(cap)).await;
        if status::refusal(code, response.headers(), body.as_deref()) == Refusal::Incompatible {
            return Err(status::unsupported_version());
        }
        tracing::warn!(
            status = code,
            "GET /v1/info failed; using the default limits"
        );
        return Ok(Fetched::Unusable);
    }
    if !has_media_type(response.headers(), "application/json") {
        tracing::warn!("GET /v1/info answered something else than JSON; using the default limits");
        return Ok(Fetched::Unusable);
    }
    let body = match read_capped(&mut response, cap).await {
        Ok(body) => body,
        Err(crate::body::BodyError::Broken(e)) => return Err(status::request_error(&e)),
        Err(crate::body::BodyError::TooLarge { cap }) => {
            tracing::warn!(
                cap,
                "GET /v1/info answer over the cap; using the default limits"
            );
            return Ok(Fetched::Unusable);
        }
    };
    let info: Info = match serde_json::from_slice(&body) {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(
                line = e.line(),
                column = e.column(),
                "GET /v1/info answer is not an info object; using the default limits"
            );
            return Ok(Fetched::Unusable);
        }
    };
    if !info.protocols.iter().any(|p| PROTOCOLS.contains(p)) {
        return Err(status::unsupported_version());
    }
    tracing::debug!(
        max_batch_ops = info.limits.max_batch_ops,
        max_body_bytes = info.limits.max_body_bytes,
        "server limits"
    );
    Ok(Fetched::Info(Box::new(info)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn info(max_batch_ops: u64) -> Fetched {
        Fetched::Info(Box::new(Info {
            protocols: vec![1],
            store_id: "s".into(),
            server: "test".into(),
            limits: Limits {
                max_batch_ops,
                ..Limits::default()
            },
            pull_limits: Default::default(),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn limits_are_cached_for_an_hour_and_forgotten_on_demand() {
        let cache = InfoCache::default();
        let fetches = AtomicU32::new(0);
        let get = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok(info(7))
        };
        assert_eq!(cache.limits(get).await.map(|l| l.0.max_batch_ops), Ok(7));
        tokio::time::advance(INFO_TTL - Duration::from_secs(1)).await;
        assert_eq!(cache.limits(get).await.map(|l| l.0.max_batch_ops), Ok(7));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        cache.limits(get).await.ok();
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "stale after an hour");
        cache.forget().await;
        cache.limits(get).await.ok();
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            3,
            "asked again after forget"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unusable_answer_gives_the_defaults_for_a_while_and_failures_nothing() {
        let cache = InfoCache::default();
        let failed = cache
            .limits(|| async { Err(TransportError::Timeout) })
            .await;
        assert_eq!(failed, Err(TransportError::Timeout));
        let fallback = cache.limits(|| async { Ok(Fetched::Unusable) }).await;
        assert_eq!(fallback, Ok((Limits::default(), PullLimits::default())));
        tokio::time::advance(FALLBACK_TTL).await;
        let zero = cache.limits(|| async { Ok(info(0)) }).await;
        assert_eq!(zero.map(|l| l.0.max_batch_ops), Ok(1), "at least one op");
    }
}
