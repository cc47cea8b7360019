//! Own operations the pull feed showed applied while their push was still
//! out: each is reported once, by whichever side settles it.
//!
//! The server wakes long polls as soon as a push commits, before the
//! push's answer reaches the device, so the puller usually sees this
//! device's own operation in the feed while its batch is in flight. Both
//! sides used to report it: the puller an `Applied { replay: true }`
//! (completing it from the feed), then the push's answer an `Applied` again.
//! On a fault-free run of `examples/http_sync` that was 33–44 spurious
//! "replays" in 600 edits, and the example counted 318 applied of 300.
//!
//! Now the puller leaves an operation that is in flight to its batch and
//! notes what the feed said of it here. The batch's answer settles it as
//! usual; if the push fails instead (its answer lost), the note turns the
//! failure into the acknowledgement the feed already proved: no re-push,
//! one `Applied { replay: true }`.
//!
//! A note is taken by the first of the two to look: the puller notes before
//! it reads the operation's state and withdraws the note if the operation
//! is not in flight after all; the worker takes it when it plans the
//! batch's outcome. Bounded by [`MAX_NOTES`] (past it the notes are dropped:
//! a lost-answer operation is then pushed again and answered
//! `already_applied`, nothing is lost).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use cpc_core::OperationId;

/// Most notes kept at once.
pub const MAX_NOTES: usize = 65_536;

/// What the feed said of an own operation: applied at `seq`, as `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FeedAck {
    pub(crate) version: u64,
    pub(crate) seq: u64,
}

/// Own operations seen applied in the pull feed while in flight; shared by
/// a worker ([`SyncWorker::feed_acks`](crate::SyncWorker::feed_acks)) and
/// its puller ([`Puller::feed_acks`](crate::Puller::feed_acks)).
#[derive(Default)]
pub struct FeedAcks {
    notes: Mutex<HashMap<OperationId, FeedAck>>,
}

impl fmt::Debug for FeedAcks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedAcks")
            .field("notes", &self.lock().len())
            .finish()
    }
}

impl FeedAcks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OperationId, FeedAck>> {
        // Plain bookkeeping: a poisoned lock leaves nothing inconsistent.
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The feed shows `id` applied.
    pub(crate) fn note(&self, id: OperationId, ack: FeedAck) {
        let mut notes = self.lock();
        if notes.len() >= MAX_NOTES && !notes.contains_key(&id) {
            notes.clear();
        }
        notes.insert(id, ack);
    }

    /// Takes the note on `id`, if any (the one who takes it settles `id`).
    pub(crate) fn take(&self, id: OperationId) -> Option<FeedAck> {
        let mut notes = self.lock();
        if notes.is_empty() {
            return None;
        }
        notes.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_taken_once_and_the_notes_are_bounded() {
        let acks = FeedAcks::default();
        let id = OperationId::from_u128(1);
        acks.note(id, FeedAck { version: 3, seq: 9 });
        assert_eq!(acks.take(id), Some(FeedAck { version: 3, seq: 9 }));
        assert_eq!(acks.take(id), None);
        for i in 0..(MAX_NOTES as u128 + 10) {
            acks.note(OperationId::from_u128(i), FeedAck { version: 1, seq: 1 });
        }
        assert!(acks.lock().len() <= MAX_NOTES);
    }
}
