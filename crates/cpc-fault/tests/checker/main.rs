//! The checker is shown to fail: hand-made logs with known defects are
//! reported with the op ids involved, and a clean log passes.

// Test helpers outside #[test] functions may unwrap too: a failure is a
// test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod renders_every_section_of_a_report;
mod reports_each_known_defect_with_its_op_ids;

use std::time::Duration;

use cpc_core::{EntityKey, NodeId, OperationId, OperationPriority};
use cpc_fault::{ApplyRecord, SubmitOutcome, SubmittedRecord};

/// Operation id `n`.
pub fn id(n: u128) -> OperationId {
    OperationId::from_u128(n)
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A submitted record by hand: op `n` on `entity` of device 1.
pub fn sub(n: u128, entity: &str, priority: OperationPriority, at_ms: u64) -> SubmittedRecord {
    SubmittedRecord {
        op_id: id(n),
        entity: EntityKey::new("notes", entity),
        priority,
        node: NodeId(1),
        submitted_at: ms(at_ms),
        ready_at: ms(at_ms),
        outcome: SubmitOutcome::Acknowledged,
        first_attempt_at: None,
        acked_at: None,
        abandoned: None,
        left_in_queue: None,
        merged: false,
    }
}

/// An apply log built from (op, at_ms) pairs, taking entity and priority
/// from the submitted records (or a stranger's entity if unknown).
pub fn log(submitted: &[SubmittedRecord], applies: &[(u128, u64)]) -> Vec<ApplyRecord> {
    applies
        .iter()
        .enumerate()
        .map(|(i, &(n, at))| {
            let rec = submitted.iter().find(|r| r.op_id == id(n));
            ApplyRecord {
                seq: i as u64 + 1,
                request: i as u64 + 1,
                at: ms(at),
                op_id: id(n),
                entity: rec.map_or(EntityKey::new("notes", "stranger"), |r| r.entity.clone()),
                priority: rec.map_or(OperationPriority::Normal, |r| r.priority),
                node: NodeId(1),
                version: 1,
            }
        })
        .collect()
}
