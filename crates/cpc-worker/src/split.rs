//! Isolating a poison operation by splitting the batches that fail with it.
//!
//! A whole-batch failure that may be caused by one of its operations (a
//! 5xx, a malformed answer, a panicking transport) cannot be pinned on any
//! one of them. So the operations of such a batch are remembered as
//! *suspects* with half the batch's size as the largest batch they may be
//! sent in again; a batch built from suspects is cut to the smallest limit
//! among them. Repeated failures halve the limit down to 1: the poison
//! operation then fails alone, which does count as its own failure (and
//! leads to a dead letter once the retry policy gives up), while the
//! operations that were batched with it succeed in their own smaller
//! batches and leave the suspect list.
//!
//! In memory only: after a restart suspects are found again by the same
//! halving. Bounded: past [`MAX_SUSPECTS`] entries the list is cleared
//! (the halving then starts over, nothing is lost).

use std::collections::HashMap;

use cpc_core::{OperationId, TransportError};

/// Most suspects remembered at once.
pub(crate) const MAX_SUSPECTS: usize = 100_000;

/// Whether a failure of a whole batch may be caused by one of its
/// operations: the remote failed (5xx), refused the request as malformed
/// (400) or too large (413), answered something that does not match the
/// batch, or the transport panicked on it. Being offline, a timeout, a rate
/// limit, a credential refusal, or another 4xx (404 wrong URL, 405, 415: a
/// configuration or a proxy, the same for every operation) say nothing
/// about the operations, and must never bury one (protocol §9.2).
pub(crate) fn may_be_caused_by_an_operation(error: &TransportError) -> bool {
    match error {
        TransportError::Server { status } => matches!(status, 400 | 413) || *status >= 500,
        TransportError::Protocol(_) | TransportError::Panicked => true,
        _ => false,
    }
}

/// The suspects and their batch-size limits.
#[derive(Debug, Default)]
pub(crate) struct Suspects {
    limits: HashMap<OperationId, usize>,
}

impl Suspects {
    /// A batch of `ids` failed in a way an operation may have caused: each
    /// may be sent again only in batches of at most half this size.
    pub(crate) fn failed(&mut self, ids: &[OperationId]) {
        if ids.len() < 2 {
            return;
        }
        if self.limits.len().saturating_add(ids.len()) > MAX_SUSPECTS {
            self.limits.clear();
        }
        let half = ids.len().div_ceil(2);
        for id in ids {
            let limit = self.limits.entry(*id).or_insert(half);
            *limit = (*limit).min(half);
        }
    }

    /// These operations were answered (or left the queue): no longer suspect.
    pub(crate) fn cleared(&mut self, ids: impl IntoIterator<Item = OperationId>) {
        if self.limits.is_empty() {
            return;
        }
        for id in ids {
            self.limits.remove(&id);
        }
    }

    /// How many of `ids` (in claim order) may go in one batch: the longest
    /// prefix whose length is within the limit of each of its members.
    pub(crate) fn allowed_prefix(&self, ids: &[OperationId]) -> usize {
        if self.limits.is_empty() {
            return ids.len();
        }
        let mut cap = usize::MAX;
        for (taken, id) in ids.iter().enumerate() {
            if let Some(limit) = self.limits.get(id) {
                cap = cap.min(*limit);
            }
            if taken + 1 > cap {
                return taken.max(1);
            }
        }
        ids.len()
    }

    /// Whether `id` is a suspect.
    #[cfg(test)]
    pub(crate) fn limit(&self, id: OperationId) -> Option<usize> {
        self.limits.get(&id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<u128>) -> Vec<OperationId> {
        range.map(OperationId::from_u128).collect()
    }

    #[test]
    fn repeated_failures_halve_down_to_one() {
        let mut s = Suspects::default();
        let batch = ids(0..8);
        assert_eq!(s.allowed_prefix(&batch), 8);
        s.failed(&batch);
        assert_eq!(s.allowed_prefix(&batch), 4);
        s.failed(&batch[..4]);
        assert_eq!(s.allowed_prefix(&batch), 2);
        // The others of the first failure may still go four at a time.
        assert_eq!(s.allowed_prefix(&batch[4..]), 4);
        s.failed(&batch[..2]);
        assert_eq!(s.allowed_prefix(&batch), 1);
        s.cleared([batch[0]]);
        assert_eq!(s.allowed_prefix(&batch[1..]), 1);
        // A single failing operation has nothing to split.
        s.failed(&batch[1..2]);
        assert_eq!(s.limit(batch[1]), Some(1));
    }

    #[test]
    fn innocent_operations_lead_until_a_suspect_caps_the_batch() {
        let mut s = Suspects::default();
        s.failed(&ids(100..104)); // limit 2 each
        let mut claimed = ids(0..3);
        claimed.extend(ids(100..104));
        // Three innocents, then a suspect whose limit (2) is already passed.
        assert_eq!(s.allowed_prefix(&claimed), 3);
        let mut claimed = ids(100..102);
        claimed.extend(ids(0..5));
        assert_eq!(s.allowed_prefix(&claimed), 2);
    }

    #[test]
    fn only_failures_an_operation_may_cause_split() {
        assert!(may_be_caused_by_an_operation(&TransportError::Server {
            status: 500
        }));
        assert!(may_be_caused_by_an_operation(&TransportError::Protocol(
            "x".into()
        )));
        assert!(may_be_caused_by_an_operation(&TransportError::Panicked));
        for status in [400, 413, 502, 503] {
            assert!(may_be_caused_by_an_operation(&TransportError::Server {
                status
            }));
        }
        for e in [
            TransportError::Offline,
            TransportError::Timeout,
            TransportError::Connect("refused".into()),
            TransportError::RateLimited { retry_after: None },
            TransportError::Unauthorized,
            TransportError::Incompatible("v2".into()),
            TransportError::Server { status: 404 },
            TransportError::Server { status: 405 },
            TransportError::Server { status: 415 },
            TransportError::Server { status: 302 },
        ] {
            assert!(!may_be_caused_by_an_operation(&e), "{e:?}");
        }
    }

    #[test]
    fn the_list_is_bounded() {
        let mut s = Suspects::default();
        for chunk in 0..(MAX_SUSPECTS as u128 / 1000 + 2) {
            s.failed(&ids(chunk * 1000..chunk * 1000 + 1000));
        }
        assert!(s.limits.len() <= MAX_SUSPECTS);
    }
}
