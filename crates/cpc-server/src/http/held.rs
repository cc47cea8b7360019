//! What a pull answer holds until it is sent: its slot under
//! `max_concurrent_pulls` and its bytes of the server's budget of pull
//! pages in flight. Released when a handler returns, they would bound the
//! pages being built and nothing else: answers that a client never reads
//! piled up in memory (120 of ~7 MiB: 1 GiB).
//!
//! A page is built whole in memory (its `max_bytes` at most), so its bytes
//! are taken from the budget before it is built and what it does not use is
//! given back at once; the rest stay taken until the connection has been
//! handed the last chunk ([`HeldBody`]), or is dropped (the send timeout
//! drops a connection whose client stops reading).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget counts KiB, so that a `u32` of permits (what a semaphore
/// takes at once) covers any page.
const UNIT: u64 = 1024;

/// The chunks a body is handed over in: hyper asks for the next one only
/// when its write buffer has room, so the page leaves memory as the client
/// reads it, and no more than a few chunks are copied out at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// The server's budget of pull page bytes in flight (built, or being sent).
#[derive(Debug)]
pub(crate) struct ByteBudget {
    units: Arc<Semaphore>,
}

impl ByteBudget {
    /// A budget of `bytes` (rounded up to whole KiB).
    pub(crate) fn new(bytes: u64) -> ByteBudget {
        let units = usize::try_from(units(bytes)).unwrap_or(usize::MAX);
        ByteBudget {
            units: Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Takes `bytes` now, or `None` if the budget does not have them.
    pub(crate) fn try_take(&self, bytes: u64) -> Option<Taken> {
        let n = u32::try_from(units(bytes)).unwrap_or(u32::MAX);
        Arc::clone(&self.units)
            .try_acquire_many_owned(n)
            .ok()
            .map(Taken)
    }
}

/// Bytes taken from a [`ByteBudget`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Taken(OwnedSemaphorePermit);

impl Taken {
    /// Gives back all but `bytes` (a page smaller than the bytes taken for
    /// it). Never takes more.
    pub(crate) fn keep(&mut self, bytes: u64) {
        let keep = usize::try_from(units(bytes)).unwrap_or(usize::MAX);
        let excess = self.0.num_permits().saturating_sub(keep);
        drop(self.0.split(excess));
    }
}

fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT)
}

/// A response body that hands `page` over in chunks and holds `held`
/// (permits) until the last chunk is handed over, or until the body is
/// dropped with its connection.
#[derive(Debug)]
pub(crate) struct HeldBody<H> {
    page: Vec<u8>,
    sent: usize,
    held: Option<H>,
}

impl<H> HeldBody<H> {
    pub(crate) fn new(page: Vec<u8>, held: H) -> HeldBody<H> {
        HeldBody {
            page,
            sent: 0,
            held: Some(held),
        }
    }

    fn remaining(&self) -> &[u8] {
        self.page.get(self.sent..).unwrap_or_default()
    }
}

impl<H: Send + Unpin + 'static> http_body::Body for HeldBody<H> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let remaining = this.remaining();
        if remaining.is_empty() {
            this.held = None;
            return Poll::Ready(None);
        }
        // Copied rather than sliced: a slice would keep the whole page
        // allocated until hyper wrote it, after its bytes were given back.
        let (chunk, rest) = remaining.split_at(remaining.len().min(CHUNK_BYTES));
        let chunk = Bytes::copy_from_slice(chunk);
        if rest.is_empty() {
            this.page = Vec::new();
            this.sent = 0;
            this.held = None;
        } else {
            this.sent += chunk.len();
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining().is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining().len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt as _;

    #[test]
    fn a_budget_gives_back_what_a_page_does_not_use() {
        let budget = ByteBudget::new(10 * UNIT);
        let mut a = budget.try_take(8 * UNIT).unwrap();
        assert!(budget.try_take(3 * UNIT).is_none(), "8 of 10 KiB taken");
        a.keep(UNIT + 1);
        let b = budget.try_take(8 * UNIT).unwrap();
        assert!(budget.try_take(1).is_none(), "2 + 8 of 10 KiB taken");
        drop((a, b));
        assert!(budget.try_take(10 * UNIT).is_some());
    }

    #[tokio::test]
    async fn a_body_holds_its_permits_until_its_last_chunk_is_taken() {
        let budget = ByteBudget::new(1 << 20);
        let page: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let held = budget.try_take(page.len() as u64).unwrap();
        let mut body = HeldBody::new(page.clone(), held);
        assert_eq!(body.size_hint().exact(), Some(page.len() as u64));
        let mut got = Vec::new();
        while !body.is_end_stream() {
            assert!(
                budget.try_take(1 << 20).is_none(),
                "the page's bytes are held while any of it is unsent"
            );
            let frame = body.frame().await.unwrap().unwrap();
            let data = frame.into_data().unwrap();
            assert!(data.len() <= CHUNK_BYTES);
            got.extend_from_slice(&data);
        }
        assert_eq!(got, page);
        assert!(
            budget.try_take(1 << 20).is_some(),
            "given back with the last chunk"
        );
        assert!(body.frame().await.is_none());
    }

    #[test]
    fn a_dropped_body_gives_its_permits_back() {
        let budget = ByteBudget::new(4 * UNIT);
        let body = HeldBody::new(vec![0; 4096], budget.try_take(4096).unwrap());
        assert!(budget.try_take(1).is_none());
        drop(body);
        assert!(budget.try_take(4096).is_some());
    }
}
