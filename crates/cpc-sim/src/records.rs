//! What the harness writes into the checker's records beyond what was
//! submitted: what coalescing did with each submit, the readiness the
//! engine saw, and the coalesced-state check of the coalescing devices.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use cpc_fault::{Abandoned, CoalescedState, SimulatedRemote, SubmitOutcome, SubmittedRecord};
use cpc_sync::core::{EntityKey, Operation, OperationId};
use cpc_sync::storage::Enqueued;

use crate::auth::AnswerLog;

/// The expected remote payload of each record after its last edit.
#[derive(Default)]
pub(crate) struct LastEdits {
    expected: BTreeMap<EntityKey, Option<Vec<u8>>>,
    uncertain: BTreeSet<EntityKey>,
}

impl LastEdits {
    pub(crate) fn note(&mut self, op: &Operation, outcome: SubmitOutcome) {
        match outcome {
            SubmitOutcome::Acknowledged => {
                let payload = match op.kind {
                    cpc_sync::core::OperationKind::Delete => None,
                    _ => Some(op.payload.clone()),
                };
                self.expected.insert(op.entity.clone(), payload);
            }
            SubmitOutcome::Unknown => {
                self.uncertain.insert(op.entity.clone());
            }
            SubmitOutcome::Failed => {}
        }
    }
}

impl LastEdits {
    /// Checks the remote's state of each record against its last edit, for
    /// the records of `device_records` the engine delivered in full (not a
    /// dead letter, a conflict or work left queued).
    pub(crate) fn check(
        &self,
        device_records: &[SubmittedRecord],
        remote: &SimulatedRemote,
        state: &mut CoalescedState,
    ) {
        let troubled: BTreeSet<&EntityKey> = device_records
            .iter()
            .filter(|r| {
                r.left_in_queue.is_some()
                    || r.merged
                    || matches!(r.abandoned, Some(a) if a != Abandoned::Coalesced)
            })
            .map(|r| &r.entity)
            .collect();
        for (entity, expected) in &self.expected {
            if self.uncertain.contains(entity) || troubled.contains(entity) {
                continue;
            }
            let at_remote = remote.record(entity).and_then(|r| r.payload);
            state.check(entity, at_remote == *expected);
        }
    }
}

/// Marks `record` (not yet in `records`) with what the store did with it,
/// and the earlier record a merge or a cancel touched.
pub(crate) fn note_submit(
    records: &mut [SubmittedRecord],
    record: &mut SubmittedRecord,
    done: Option<&Enqueued>,
) {
    match done {
        Some(Enqueued::Merged { into, .. }) => {
            record.abandoned = Some(Abandoned::Coalesced);
            // The merged operation takes the higher priority: the
            // checker's inversion count must see the one sent.
            if let Some(r) = records.iter_mut().rev().find(|r| r.op_id == *into) {
                r.priority = r.priority.max(record.priority);
            }
        }
        Some(Enqueued::Cancelled { earlier }) => {
            record.abandoned = Some(Abandoned::Coalesced);
            // The queued one it cancelled: never sent either.
            if let Some(r) = records.iter_mut().rev().find(|r| r.op_id == *earlier) {
                r.abandoned = Some(Abandoned::Coalesced);
            }
        }
        _ => {}
    }
}

/// Sets each record's `ready_at` to when the engine could first claim it:
/// not before the engine received the final answer for the previous
/// operation of its record (only a record's head is claimable). The checker
/// alone would use the remote's first apply of the predecessor, which the
/// engine does not know about when the answer was lost: it resends the
/// predecessor first, and the wait is no priority inversion.
pub(crate) fn engine_readiness(records: &mut [SubmittedRecord], answers: &AnswerLog) {
    let mut last: HashMap<EntityKey, OperationId> = HashMap::new();
    for rec in records.iter_mut() {
        // A coalesced operation is never sent: the one before it in the
        // queue is the one whose answer frees the next.
        if rec.outcome == SubmitOutcome::Failed
            || rec.ready_at == Duration::MAX
            || rec.abandoned == Some(Abandoned::Coalesced)
        {
            continue;
        }
        if let Some((answered, _)) = last.get(&rec.entity).and_then(|prev| answers.get(*prev)) {
            rec.ready_at = rec.ready_at.max(answered);
        }
        last.insert(rec.entity.clone(), rec.op_id);
    }
}
