//! Quarantine notices: what the store quarantined since it was last asked,
//! so the worker can raise an event when it happens rather than at start.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::api::QuarantineNotice;

/// Most notices kept between two [`Notices::take`] calls; older ones are
/// dropped (the quarantine set itself keeps every record).
pub(crate) const MAX_NOTICES: usize = 1024;

/// A bounded list of notices, filled after each commit, drained by the
/// worker.
#[derive(Debug, Default)]
pub(crate) struct Notices(Mutex<VecDeque<QuarantineNotice>>);

impl Notices {
    /// Adds the notices of a committed transaction.
    pub(crate) fn extend(&self, notices: Vec<QuarantineNotice>) {
        if notices.is_empty() {
            return;
        }
        // Plain data: a poisoned lock leaves nothing inconsistent.
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.extend(notices);
        while list.len() > MAX_NOTICES {
            list.pop_front();
        }
    }

    /// Takes every notice kept so far, oldest first.
    pub(crate) fn take(&self) -> Vec<QuarantineNotice> {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_core::OperationId;

    #[test]
    fn notices_are_bounded_and_taken_once() {
        let n = Notices::default();
        n.extend(
            (0..MAX_NOTICES as u128 + 10)
                .map(|i| QuarantineNotice {
                    id: Some(OperationId::from_u128(i)),
                    entity: None,
                    reason: "r".into(),
                })
                .collect(),
        );
        let taken = n.take();
        assert_eq!(taken.len(), MAX_NOTICES);
        assert_eq!(taken[0].id, Some(OperationId::from_u128(10)));
        assert!(n.take().is_empty());
    }
}
