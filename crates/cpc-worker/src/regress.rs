//! A remote that went back in time (§8 of the protocol): whoever sees the
//! `409 history_diverged` (a push batch, or the puller) reports it here;
//! the worker loop stops claiming, lets the batches in flight finish, puts
//! the acked journal's retained operations back in the queue
//! ([`QueueStorage::requeue_acked`](cpc_storage::QueueStorage::requeue_acked))
//! and reports [`WorkerEvent::RemoteRegressed`](crate::WorkerEvent) with
//! what it re-queued and what it could not.
//!
//! A report is made durable (a `sync_state` key) before the puller moves
//! its `known` to the remote's head, so a crash in between repeats the
//! requeue at the next start instead of forgetting it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::known::KnownPosition;

// The stored forms live with the queue (`cpc_storage::sync_state`), so
// that tools read them without this crate.
pub use cpc_storage::sync_state::{HandledRegression, Regression, HISTORY_KEPT};

/// Where regressions are reported to the worker: shared by the worker and
/// the puller of one engine (`SyncWorker::regressions`).
#[derive(Debug, Default)]
pub struct Regressions {
    pending: Mutex<Option<Regression>>,
    /// Set by a report, cleared once handled: no claim, no push meanwhile
    /// (an operation put back must not go out beside a later one of its
    /// entity).
    closed: AtomicBool,
    /// The last regression handled: the same one reported again (by the
    /// puller after a push saw it: same `known`, same head) is not handled
    /// twice. A later restore to the same backup comes with another
    /// `known` (the device had moved on), so it is handled again.
    handled: Mutex<Option<Regression>>,
    wake: tokio::sync::Notify,
    /// The position the engine sends (§8 `known`): held here because the
    /// worker and the puller share this, and a handled regression moves
    /// it to the head.
    known: Arc<KnownPosition>,
}

impl Regressions {
    /// The position the engine sends with its pushes and pulls, shared by
    /// the worker and the puller (and a `CompositeAdapter`'s direct sends).
    pub fn known(&self) -> Arc<KnownPosition> {
        Arc::clone(&self.known)
    }

    /// Reports a regression; the worker handles it before its next claim.
    /// `false` when this one (same head) was handled already.
    pub fn report(&self, regression: Regression) -> bool {
        // A device whose known position is the head already adopted it: a
        // late answer to a request sent before, not a new restore.
        if regression.known.as_ref() == Some(&regression.head) {
            return false;
        }
        let seen = self
            .handled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|h| *h == regression);
        if seen {
            return false;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // A later report keeps the first `known` it has (the device's
        // position before any of them) and takes the newest head.
        let known = pending
            .as_ref()
            .and_then(|p| p.known.clone())
            .or(regression.known);
        *pending = Some(Regression {
            known,
            head: regression.head,
        });
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        true
    }

    /// Whether sending is held for a regression not yet handled.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The regression to handle, if one was reported.
    pub(crate) fn pending(&self) -> Option<Regression> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `regression` was handled: sending goes on (unless another came
    /// meanwhile).
    pub(crate) fn done(&self, regression: &Regression) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *self.handled.lock().unwrap_or_else(|e| e.into_inner()) = Some(regression.clone());
        if pending.as_ref() == Some(regression) {
            *pending = None;
            self.closed.store(false, Ordering::SeqCst);
        }
    }

    /// Resolves when a report arrives (for the loop's wait).
    pub(crate) async fn reported(&self) {
        self.wake.notified().await;
    }
}
