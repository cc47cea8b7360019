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
use std::sync::Mutex;

use cpc_core::envelope::{self, RecordKind};
use cpc_core::RemotePosition;
use serde::{Deserialize, Serialize};

/// The `sync_state` key of a reported regression not yet handled.
pub const PENDING_KEY: &str = "regressed";

/// The `sync_state` key of the regressions handled (the latest
/// [`HISTORY_KEPT`]), for tools that inspect a queue.
pub const HISTORY_KEY: &str = "regressions";

/// Handled regressions the history keeps.
pub const HISTORY_KEPT: usize = 16;

/// Largest stored report read back (two positions with their store ids).
pub(crate) const MAX_PENDING_BYTES: u32 = 4 * 1024;

/// One regression: what the device had seen, where the remote stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regression {
    /// The highest position this device had seen (when the reporter
    /// knows it).
    pub known: Option<RemotePosition>,
    /// The remote's head in its `409`.
    pub head: RemotePosition,
}

impl Regression {
    /// The stored form (an envelope, CRC-checked when read back).
    pub(crate) fn encode(&self) -> Option<Vec<u8>> {
        envelope::encode(RecordKind::Meta, self).ok()
    }

    /// Reads a stored report ([`PENDING_KEY`]); `None` for an empty or
    /// damaged value.
    pub fn decode(raw: &[u8]) -> Option<Regression> {
        if raw.is_empty() {
            return None;
        }
        envelope::decode(RecordKind::Meta, raw, MAX_PENDING_BYTES).ok()
    }
}

/// A regression the worker handled, as its history keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandledRegression {
    /// What was reported.
    pub regression: Regression,
    /// Acknowledged operations put back in the queue.
    pub requeued: u64,
    /// Acknowledged operations that could not be.
    pub unrecoverable: u64,
    /// When it was handled.
    pub at: cpc_storage::EpochMillis,
}

impl HandledRegression {
    /// Reads the stored history ([`HISTORY_KEY`]), oldest first; empty for
    /// a missing or damaged value.
    pub fn decode_history(raw: &[u8]) -> Vec<HandledRegression> {
        envelope::decode(RecordKind::Meta, raw, MAX_HISTORY_BYTES).unwrap_or_default()
    }

    /// `history` with `self` appended, the oldest dropped past
    /// [`HISTORY_KEPT`], encoded for storing.
    pub(crate) fn append_to(self, mut history: Vec<HandledRegression>) -> Option<Vec<u8>> {
        history.push(self);
        let excess = history.len().saturating_sub(HISTORY_KEPT);
        history.drain(..excess);
        envelope::encode(RecordKind::Meta, &history).ok()
    }
}

/// Largest stored history read back.
const MAX_HISTORY_BYTES: u32 = 32 * 1024;

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
}

impl Regressions {
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
