//! Isolating a poison operation by splitting the batches that fail with it,
//! and telling a poison operation from a remote that is down.
//!
//! A whole-batch failure that may be caused by one of its operations (a
//! 5xx, a malformed answer, a panicking transport) cannot be pinned on any
//! one of them. So the operations of such a batch are remembered as
//! *suspects* with half the batch's size as the largest batch they may be
//! sent in again; a batch built from suspects is cut to the smallest limit
//! among them. Repeated failures halve the limit down to 1, and the
//! operations that were batched with the poison one succeed in their own
//! smaller batches and leave the suspect list.
//!
//! An operation failing alone is still not proof that it is the cause: a
//! remote in maintenance fails every push, whatever it holds, for hours
//! (outside testing saw a 12-hour `503` outage bury most of a queue one op
//! at a time). So a lone failure counts towards the operation's dead letter
//! only when the remote is meanwhile accepting other operations:
//! - some other push was answered since this operation's previous failure
//!   (fresh evidence that the remote works while this operation does not);
//! - or this operation's previous lone failure counted and no other push
//!   has failed since (it stays the odd one out once the others are
//!   delivered and nothing else is left to compare it with).
//!
//! A `502`, `503` or `504` never counts: they name a gateway or a service
//! that is unavailable, never an operation (protocol §9.2). They still
//! split, so a backend that crashes on one operation behind a load
//! balancer holds up only that operation.
//!
//! In memory only: after a restart suspects are found again by the same
//! halving, and evidence is gathered again. Bounded: past [`MAX_SUSPECTS`]
//! entries the list is cleared (the halving then starts over, nothing is
//! lost).

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

/// Whether a failure may ever count towards an operation's dead letter
/// (once [`Suspects::lone_failure`] finds the remote healthy): a suspect
/// failure, but never a gateway or availability status.
pub(crate) fn may_count(error: &TransportError) -> bool {
    may_be_caused_by_an_operation(error)
        && !matches!(error, TransportError::Server { status: 502..=504 })
}

/// What is remembered of one suspect.
#[derive(Debug, Clone, Copy)]
struct Suspect {
    /// Largest batch it may be sent in.
    limit: usize,
    /// [`Suspects::answered`] when it last failed.
    answered: u64,
    /// [`Suspects::failed`] just after it last failed.
    failed: u64,
    /// Its last lone failure counted.
    counted: bool,
}

/// The suspects and their batch-size limits, and what the remote did to
/// other pushes meanwhile.
#[derive(Debug, Default)]
pub(crate) struct Suspects {
    limits: HashMap<OperationId, Suspect>,
    /// Pushes answered (per operation) so far.
    answered: u64,
    /// Pushes that failed as a whole so far.
    failed: u64,
}

impl Suspects {
    /// A push was answered per operation: the remote accepts work.
    pub(crate) fn answered(&mut self) {
        self.answered = self.answered.wrapping_add(1);
    }

    /// A batch of `ids` failed as a whole. If the failure may be caused by
    /// one of them (`suspect`) and the batch holds more than one, each may
    /// be sent again only in batches of at most half this size.
    pub(crate) fn failed(&mut self, ids: &[OperationId], suspect: bool) {
        self.failed = self.failed.wrapping_add(1);
        if !suspect || ids.len() < 2 {
            return;
        }
        if self.limits.len().saturating_add(ids.len()) > MAX_SUSPECTS {
            self.limits.clear();
        }
        let half = ids.len().div_ceil(2);
        let (answered, failed) = (self.answered, self.failed);
        for id in ids {
            let s = self.limits.entry(*id).or_insert(Suspect {
                limit: half,
                answered,
                failed,
                counted: false,
            });
            s.limit = s.limit.min(half);
            s.answered = answered;
            s.failed = failed;
            s.counted = false;
        }
    }

    /// `id`, sent alone, failed in a way it may have caused: whether the
    /// failure counts towards its dead letter (see the module docs). Call
    /// instead of [`failed`](Self::failed) for such a failure.
    pub(crate) fn lone_failure(&mut self, id: OperationId) -> bool {
        let previous = self.limits.get(&id).copied();
        let counted = previous.is_some_and(|p| {
            let others_answered = self.answered != p.answered;
            let others_failed = self.failed != p.failed;
            others_answered || (p.counted && !others_failed)
        });
        self.failed = self.failed.wrapping_add(1);
        if previous.is_none() && self.limits.len() >= MAX_SUSPECTS {
            self.limits.clear();
        }
        self.limits.insert(
            id,
            Suspect {
                limit: 1,
                answered: self.answered,
                failed: self.failed,
                counted,
            },
        );
        counted
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
            if let Some(s) = self.limits.get(id) {
                cap = cap.min(s.limit);
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
        self.limits.get(&id).map(|s| s.limit)
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
        s.failed(&batch, true);
        assert_eq!(s.allowed_prefix(&batch), 4);
        s.failed(&batch[..4], true);
        assert_eq!(s.allowed_prefix(&batch), 2);
        // The others of the first failure may still go four at a time.
        assert_eq!(s.allowed_prefix(&batch[4..]), 4);
        s.failed(&batch[..2], true);
        assert_eq!(s.allowed_prefix(&batch), 1);
        s.cleared([batch[0]]);
        assert_eq!(s.allowed_prefix(&batch[1..]), 1);
        // A single failing operation has nothing to split.
        s.lone_failure(batch[1]);
        assert_eq!(s.limit(batch[1]), Some(1));
    }

    #[test]
    fn a_failure_that_no_operation_causes_does_not_split() {
        let mut s = Suspects::default();
        s.failed(&ids(0..8), false);
        assert_eq!(s.allowed_prefix(&ids(0..8)), 8);
    }

    #[test]
    fn innocent_operations_lead_until_a_suspect_caps_the_batch() {
        let mut s = Suspects::default();
        s.failed(&ids(100..104), true); // limit 2 each
        let mut claimed = ids(0..3);
        claimed.extend(ids(100..104));
        // Three innocents, then a suspect whose limit (2) is already passed.
        assert_eq!(s.allowed_prefix(&claimed), 3);
        let mut claimed = ids(100..102);
        claimed.extend(ids(0..5));
        assert_eq!(s.allowed_prefix(&claimed), 2);
    }

    #[test]
    fn a_remote_failing_everything_never_counts_a_lone_failure() {
        let mut s = Suspects::default();
        let batch = ids(0..8);
        s.failed(&batch, true);
        s.failed(&batch[..4], true);
        s.failed(&batch[4..], true);
        for _ in 0..1000 {
            for id in &batch {
                assert!(!s.lone_failure(*id), "a remote that is down blamed {id}");
            }
        }
    }

    #[test]
    fn a_poison_operation_among_healthy_ones_counts_and_keeps_counting_alone() {
        let mut s = Suspects::default();
        let batch = ids(0..4);
        let poison = batch[0];
        s.failed(&batch, true);
        s.failed(&batch[..2], true);
        // Unknown before any evidence: the first lone failure right after
        // its batch failed, with nothing answered between, does not count.
        assert!(!s.lone_failure(poison));
        // The others are delivered: the remote works, the op does not.
        s.answered();
        s.cleared(batch[1..].iter().copied());
        assert!(s.lone_failure(poison));
        // Nothing else left to send: it stays the odd one out.
        assert!(s.lone_failure(poison));
        assert!(s.lone_failure(poison));
        // Another push fails meanwhile: the remote may be down, no blame...
        s.failed(&ids(10..11), false);
        assert!(!s.lone_failure(poison));
        assert!(!s.lone_failure(poison));
        // ...until the remote is seen accepting others again.
        s.answered();
        assert!(s.lone_failure(poison));
    }

    #[test]
    fn an_operation_never_seen_failing_before_is_not_blamed_on_its_first_lone_failure() {
        let mut s = Suspects::default();
        s.answered();
        assert!(!s.lone_failure(OperationId::from_u128(1)));
        s.answered();
        assert!(s.lone_failure(OperationId::from_u128(1)));
    }

    #[test]
    fn only_failures_an_operation_may_cause_split_and_gateways_never_count() {
        assert!(may_be_caused_by_an_operation(&TransportError::Server {
            status: 500
        }));
        assert!(may_be_caused_by_an_operation(&TransportError::Protocol(
            "x".into()
        )));
        assert!(may_be_caused_by_an_operation(&TransportError::Panicked));
        for status in [400, 413, 502, 503, 504] {
            assert!(may_be_caused_by_an_operation(&TransportError::Server {
                status
            }));
        }
        for status in [400, 413, 500, 501, 505, 599] {
            assert!(may_count(&TransportError::Server { status }), "{status}");
        }
        for status in [502, 503, 504] {
            assert!(!may_count(&TransportError::Server { status }), "{status}");
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
            assert!(!may_count(&e), "{e:?}");
        }
    }

    #[test]
    fn the_list_is_bounded() {
        let mut s = Suspects::default();
        for chunk in 0..(MAX_SUSPECTS as u128 / 1000 + 2) {
            s.failed(&ids(chunk * 1000..chunk * 1000 + 1000), true);
        }
        assert!(s.limits.len() <= MAX_SUSPECTS);
        for i in 0..(MAX_SUSPECTS as u128 + 2) {
            s.lone_failure(OperationId::from_u128(10_000_000 + i));
        }
        assert!(s.limits.len() <= MAX_SUSPECTS);
    }
}
