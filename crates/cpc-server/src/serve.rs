//! The accept loop and each connection's life, in place of `axum::serve`,
//! which sets none of the limits a server facing the open network needs:
//! it builds hyper without a timer (so no header-read timeout), has no
//! connection cap and no send timeout, and its graceful shutdown waits for
//! every connection, however stuck.
//!
//! Here, as in mini-redis:
//! - a connection takes a slot of a [`Semaphore`] when it is accepted and
//!   gives it back when its task ends; over the cap it is answered `503`
//!   and closed at once (see [`serve`]);
//! - shutdown is broadcast on a `watch` channel, and completion is an
//!   `mpsc` channel that closes when the last connection task drops its
//!   sender. Unlike mini-redis, shutdown has a deadline: a connection still
//!   open then is dropped (a half-sent request, an answer nobody reads).
//!
//! Each connection is hyper's HTTP/1.1 with a timer, so that
//! `header_read_timeout` bounds both a request's headers and an idle
//! keep-alive connection (hyper arms it again when a connection goes idle
//! after an answer: `State::idle` in hyper's `proto/h1/conn.rs`), over a
//! [`SendTimeout`] stream, so that a client that stops reading is dropped
//! with the answer it holds.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use cpc_protocol::{
    request_id_from, Problem, ProblemCode, PROBLEM_CONTENT_TYPE, REQUEST_ID_HEADER,
    RETRY_AFTER_MS_HEADER,
};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use crate::metrics::Metrics;

/// The limits every connection is held to (from `ServerConfig`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub send_timeout: Duration,
    pub shutdown_deadline: Duration,
}

/// Where the server is in its life; connection tasks watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Finish the request in progress, then close.
    Draining,
    /// The shutdown deadline passed: close now.
    Closing,
}

/// How long the accept loop pauses after an error that is not about one
/// connection (`EMFILE`, `ENFILE`, `ENOBUFS`): the failing connection stays
/// in the backlog, so retrying at once would spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// At most one log line per this interval for each kind of repeated event
/// (refusals at the cap, accept errors): a flood must not become a flood of
/// log lines.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts and serves connections until `stop` resolves (or its sender is
/// dropped), then shuts down: stops accepting, lets each connection finish
/// the request it is on, and after `shutdown_deadline` drops those still
/// open.
///
/// Over `max_connections`, a new connection is accepted, sent a `503
/// unavailable` problem in one non-blocking write, and closed, without
/// waiting for its request: it costs a descriptor for a moment and no
/// task. Not left in the kernel's backlog, where it would wait unseen (a
/// health check behind it would hang instead of failing fast); not just
/// closed, because a device fails over to another instance on a closed
/// connection but backs off on a cpc `503` (docs/deploy.md), which is what
/// an overloaded deployment needs. Best effort: a client that has already
/// sent its request may see the connection reset instead.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let cap = crate::fd_limit::connection_cap(limits.max_connections);
    let slots = Arc::new(Semaphore::new(cap));
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let (done, all_done) = mpsc::channel::<()>(1);
    let mut stop = pin!(stop);
    let mut refused = Throttled::default();
    let mut failed = Throttled::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_about_one_connection(&e) => continue,
            Err(e) => {
                if let Some(repeats) = failed.due() {
                    tracing::error!(target: "cpc_server", error = %e, repeats, "accepting a connection failed; pausing");
                }
                tokio::select! {
                    _ = &mut stop => break,
                    () = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                }
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if let Some(repeats) = refused.due() {
                tracing::warn!(target: "cpc_server", max_connections = cap, repeats, "at the connection cap: answering new connections 503");
            }
            let _ = stream.try_write(&at_capacity());
            metrics.request("connection", 503);
            drop(stream);
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            limits,
            Lifetime {
                phase: phase_rx.clone(),
                _slot: slot,
                _done: done.clone(),
            },
        ));
    }
    // New connections are refused by the kernel from here on.
    drop(listener);
    drop(done);
    drain(phase, all_done, limits.shutdown_deadline, || {
        cap.saturating_sub(slots.available_permits())
    })
    .await;
    Ok(())
}

/// Tells every connection to finish the request it is on, waits for them
/// up to `deadline`, then tells those still open to close, and waits for
/// that (`open` counts them, for the log).
async fn drain(
    phase: watch::Sender<Phase>,
    mut all_done: mpsc::Receiver<()>,
    deadline: Duration,
    open: impl Fn() -> usize,
) {
    phase.send_replace(Phase::Draining);
    if tokio::time::timeout(deadline, all_done.recv())
        .await
        .is_ok()
    {
        return;
    }
    tracing::warn!(
        target: "cpc_server",
        open = open(),
        deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        "connections still open at the shutdown deadline: closing them"
    );
    phase.send_replace(Phase::Closing);
    // Prompt: each task drops its connection as soon as it sees `Closing`,
    // and dropping a connection never waits on the client.
    let _ = all_done.recv().await;
}

/// What a connection task holds for the server: the phase to watch, its
/// slot under the cap, and its part of the completion channel. Dropped
/// when the task ends, which returns the slot and, for the last task,
/// closes the completion channel.
struct Lifetime {
    phase: watch::Receiver<Phase>,
    _slot: OwnedSemaphorePermit,
    _done: mpsc::Sender<()>,
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut lifetime: Lifetime,
) {
    let io = TokioIo::new(SendTimeout::new(stream, limits.send_timeout));
    let service = TowerToHyperService::new(router.map_request(
        move |mut request: axum::http::Request<Incoming>| {
            // The failed-authentication limit counts per client address.
            request.extensions_mut().insert(crate::http::PeerAddr(peer));
            request
        },
    ));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut conn = pin!(builder.serve_connection(io, service));
    let phase = &mut lifetime.phase;
    // A sender gone (`Err`) means the server is gone: stop as for its
    // deadline.
    tokio::select! {
        result = conn.as_mut() => return finished(result, peer),
        _ = phase.wait_for(|p| *p >= Phase::Draining) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        result = conn.as_mut() => finished(result, peer),
        _ = phase.wait_for(|p| *p >= Phase::Closing) => {}
    }
}

/// A connection's end: errors are the client's doing (a timeout, a reset,
/// a malformed request), so DEBUG only.
fn finished(result: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = result {
        tracing::debug!(target: "cpc_server", %peer, error = %e, "connection closed on an error");
    }
}

/// The whole answer to a connection over the cap: the `503` of the other
/// caps (a problem with a jittered `Retry-After`), and `Connection: close`.
fn at_capacity() -> Vec<u8> {
    let wait_ms = 1000 + rand::random::<u64>() % 500;
    let mut problem = Problem::new(ProblemCode::Unavailable, "too many connections");
    problem.retry_after_ms = Some(wait_ms);
    let body = problem.to_json();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         content-type: {PROBLEM_CONTENT_TYPE}\r\n\
         content-length: {}\r\n\
         cache-control: no-store\r\n\
         retry-after: {}\r\n\
         {RETRY_AFTER_MS_HEADER}: {wait_ms}\r\n\
         {REQUEST_ID_HEADER}: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len(),
        wait_ms.div_ceil(1000),
        request_id_from(rand::random()),
    )
    .into_bytes()
}

/// Accept errors that concern one connection (gone before it was taken):
/// the next accept is unaffected.
fn is_about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A rate limit for one kind of log line.
#[derive(Debug, Default)]
struct Throttled {
    last: Option<Instant>,
    repeats: u64,
}

impl Throttled {
    /// Counts one event; `Some(events since the last line)` when a line is
    /// due.
    fn due(&mut self) -> Option<u64> {
        self.repeats += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + LOG_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.repeats))
    }
}

/// A stream whose writes fail with `TimedOut` once none has made progress
/// for `limit`: a client that stops reading is dropped, and with it the
/// answer (and permits) its connection holds, instead of holding them for
/// as long as it likes. Progress, not the whole answer, is timed, so a
/// large answer to a slow but reading client is not cut. Reads are left
/// alone (hyper's header timeout and the request timeout bound them).
#[derive(Debug)]
pub(crate) struct SendTimeout<S> {
    inner: S,
    limit: Duration,
    /// Armed at the first write that cannot proceed; reused.
    stall: Pin<Box<Sleep>>,
    stalled: bool,
}

impl<S> SendTimeout<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> SendTimeout<S> {
        SendTimeout {
            inner,
            limit,
            stall: Box::pin(tokio::time::sleep(limit)),
            stalled: false,
        }
    }

    /// Passes a write's result on, timing a write that cannot proceed.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.limit;
            self.stall.as_mut().reset(deadline);
        }
        match self.stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.timed(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_does_not_drain_fails_after_the_send_timeout() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut ours = SendTimeout::new(ours, Duration::from_secs(30));
        let started = Instant::now();
        let chunk = [7u8; 4096];
        let mut written = 0usize;
        let writes = async {
            loop {
                match ours.write(&chunk).await {
                    Ok(n) => written += n,
                    Err(e) => break e,
                }
            }
        };
        // Virtual time: without the send timeout the write would wait for
        // ever; this fails it instead of hanging.
        let error = tokio::time::timeout(Duration::from_secs(3600), writes)
            .await
            .expect("the stalled write failed");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(written, 1024, "only the pipe's capacity went through");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // Nothing is lost of what was written before.
        let mut got = vec![0u8; 1024];
        theirs.read_exact(&mut got).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_keeps_reading_is_never_timed_out() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut ours = SendTimeout::new(ours, Duration::from_secs(30));
        // The reader drains 1 KiB every 20 s: the whole transfer takes far
        // longer than the send timeout, but no write waits that long.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut total = 0usize;
            loop {
                tokio::time::sleep(Duration::from_secs(20)).await;
                match theirs.read(&mut buf).await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        });
        let data = vec![1u8; 8 * 1024];
        ours.write_all(&data).await.unwrap();
        ours.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), data.len());
    }

    #[test]
    fn a_repeated_event_is_logged_once_per_interval_with_its_count() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let mut t = Throttled::default();
            assert_eq!(t.due(), Some(1));
            assert_eq!(t.due(), None);
            assert_eq!(t.due(), None);
            tokio::time::advance(LOG_EVERY).await;
            assert_eq!(t.due(), Some(3));
        });
    }
}
