//! `GET /metrics` (docs/deploy.md, "Metrics"): behind its own bearer token,
//! off without one, and cheap whoever asks: the store's size, the only
//! figure that costs a query (a pool connection on PostgreSQL), is read at
//! most once per [`STORE_SIZE_EVERY`], however often scrapes come.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use cpc_protocol::{Problem, ProblemCode};
use tokio::time::Instant;

use super::peer::PeerAddr;
use super::{reply, App};

/// How long a store size read is reused. Prometheus scrapes every 15 to
/// 60 s; a gauge of the store's size needs no fresher value.
pub(crate) const STORE_SIZE_EVERY: Duration = Duration::from_secs(15);

/// The store's size as last read, and when.
#[derive(Debug, Default)]
pub(crate) struct StoreSize {
    last: tokio::sync::Mutex<Option<(Instant, u64)>>,
}

impl StoreSize {
    /// The size read less than `every` ago, or `read`'s now. Scrapes that
    /// arrive during a read wait for it (the lock is held across it)
    /// rather than start their own. A failed read counts as a read (its
    /// value is the last one known, or 0): a failing database is not
    /// asked again on every scrape either.
    pub(crate) async fn get<F, E>(&self, every: Duration, read: impl FnOnce() -> F) -> u64
    where
        F: Future<Output = Result<u64, E>>,
    {
        let mut last = self.last.lock().await;
        let now = Instant::now();
        if let Some((at, bytes)) = *last {
            if now.saturating_duration_since(at) < every {
                return bytes;
            }
        }
        let known = last.map_or(0, |(_, bytes)| bytes);
        let bytes = read().await.unwrap_or(known);
        *last = Some((now, bytes));
        bytes
    }
}

/// `GET /metrics`: `404` without a metrics token configured; `401` without
/// the right one (each counted as a failed authentication of the address,
/// so the token cannot be guessed faster than the clients' tokens).
pub(crate) async fn metrics(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Response {
    let Some(expected) = &app.metrics_token else {
        return reply::problem(Problem::new(ProblemCode::NotFound, "no such path"));
    };
    let peer = peer.map(|Extension(p)| p);
    if let Err(wait) = app.auth_failures.check(peer.as_ref()) {
        return super::too_many_failures(wait);
    }
    let auth = headers.get(header::AUTHORIZATION);
    if !auth
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| expected.matches(v))
    {
        app.auth_failures.fail(peer.as_ref());
        return reply::unauthorized(auth.is_some());
    }
    let store = Arc::clone(&app.store);
    let store_bytes = app
        .store_size
        .get(STORE_SIZE_EVERY, || async move { store.size_bytes().await })
        .await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        app.metrics.render(store_bytes),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(start_paused = true)]
    async fn the_store_size_is_read_at_most_once_per_interval() {
        let size = StoreSize::default();
        let reads = AtomicU64::new(0);
        let read = || async {
            let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<u64, ()>(n * 100)
        };
        assert_eq!(size.get(STORE_SIZE_EVERY, read).await, 100);
        for _ in 0..50 {
            assert_eq!(size.get(STORE_SIZE_EVERY, read).await, 100);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        tokio::time::advance(STORE_SIZE_EVERY).await;
        assert_eq!(size.get(STORE_SIZE_EVERY, read).await, 200);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // A failed read keeps the last value and is not retried at once.
        tokio::time::advance(STORE_SIZE_EVERY).await;
        let failing = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            Err::<u64, ()>(())
        };
        assert_eq!(size.get(STORE_SIZE_EVERY, failing).await, 200);
        assert_eq!(size.get(STORE_SIZE_EVERY, failing).await, 200);
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }
}
