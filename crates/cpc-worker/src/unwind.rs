//! Containing panics of user code (transports, resolvers) per batch.
//!
//! A panic inside `Transport::push` or a resolver must not take the batch's
//! bookkeeping with it: the worker catches it where the call is made and
//! turns it into a failure of that batch (or a deferral of that operation).
//! The panic's message is logged at DEBUG only, since it may quote data.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future that resolves to `Err(message)` if polling the inner one
/// panicked, instead of unwinding into the caller.
pub(crate) struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(future: F) -> Self {
        CatchUnwind {
            inner: Box::pin(future),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().inner.as_mut();
        // Unwind safety: after a panic the inner future is never polled
        // again (this future is then complete), so no broken state of it
        // is observed.
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// Runs `f`, returning `Err(message)` if it panicked.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(payload.as_ref()))
}

/// The text of a panic payload (`&str` or `String`), truncated.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    };
    text.chars().take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_future_becomes_an_error() {
        let caught = CatchUnwind::new(async {
            tokio::task::yield_now().await;
            panic!("boom {}", 7);
        })
        .await;
        assert_eq!(caught, Err("boom 7".to_owned()));
        let fine = CatchUnwind::new(async { 3 }).await;
        assert_eq!(fine, Ok(3));
    }

    #[test]
    fn a_panicking_closure_becomes_an_error() {
        assert_eq!(catch(|| -> u8 { panic!("static") }), Err("static".into()));
        assert_eq!(catch(|| 5), Ok(5));
        let long = catch(|| -> () { panic!("{}", "x".repeat(1000)) }).unwrap_err();
        assert_eq!(long.len(), 256);
    }
}
