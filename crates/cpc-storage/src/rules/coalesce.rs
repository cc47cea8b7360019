//! The coalescing enqueue ([`QueueStorage::enqueue_coalesced`](crate::QueueStorage::enqueue_coalesced)):
//! a new operation meets its entity's newest queued one, if the remote
//! cannot have seen that one, and the coalescer's decision is applied in
//! the same transaction as the enqueue.

use std::panic::{catch_unwind, AssertUnwindSafe};

use cpc_core::{combine, Coalesced, Coalescer, Operation};

use super::{due_head, enqueue_one, remove, validate, write_meta, Head, Loaded, OpMeta, Tx};
use crate::api::{Enqueued, EpochMillis, OpState, QueueOptions};
use crate::error::Result;

/// Stores `ops` (already checked by [`check_enqueue`](super::check_enqueue)),
/// each first offered to `coalescer` with its entity's newest operation.
pub(crate) fn enqueue_coalescing<T: Tx + ?Sized>(
    tx: &mut T,
    ops: &[Operation],
    now: EpochMillis,
    options: &QueueOptions,
    coalescer: &dyn Coalescer,
) -> Result<Vec<Enqueued>> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let done = match coalesce_one(tx, op, options, coalescer)? {
            Some(done) => done,
            None => Enqueued::Stored {
                seq: enqueue_one(tx, op, now, options)?,
            },
        };
        out.push(done);
    }
    Ok(out)
}

/// Whether `meta` may be rewritten: ready, and never handed to a worker
/// (a claim given back keeps `claimed`), never tried, never failed.
fn mergeable(meta: &OpMeta) -> bool {
    meta.state == OpState::Ready && !meta.claimed && meta.attempts == 0 && meta.last_error.is_none()
}

/// Applies the coalescer to `later` and its entity's newest operation;
/// `None` when both are to be kept (the caller stores `later`).
fn coalesce_one<T: Tx + ?Sized>(
    tx: &mut T,
    later: &Operation,
    options: &QueueOptions,
    coalescer: &dyn Coalescer,
) -> Result<Option<Enqueued>> {
    if !coalescer.wants(later) {
        return Ok(None);
    }
    let entity = later.entity.to_key_bytes();
    let Some(last) = tx.last_in_entity(&entity)? else {
        return Ok(None);
    };
    if !mergeable(&last) {
        return Ok(None);
    }
    // A damaged record, or one whose body belongs to another operation,
    // is left for the claim path to quarantine.
    let earlier = match tx.load_op(&last)? {
        Loaded::Ok(op) if op.id == last.id && op.entity.to_key_bytes() == last.entity => op,
        _ => return Ok(None),
    };
    let decision = match catch_unwind(AssertUnwindSafe(|| coalescer.coalesce(&earlier, later))) {
        Ok(d) => d,
        Err(_) => {
            tracing::warn!(
                target: "cpc_storage",
                seq = last.seq,
                "the coalescer panicked; both operations kept"
            );
            Coalesced::Keep
        }
    };
    match decision {
        Coalesced::Keep => Ok(None),
        Coalesced::Cancel => {
            remove(tx, &last, options)?;
            Ok(Some(Enqueued::Cancelled {
                earlier: earlier.id,
            }))
        }
        Coalesced::Replace(replacement) => {
            let merged = combine(&earlier, later, replacement);
            // A result the store would refuse keeps both: nothing is lost.
            if validate(&merged, options.max_payload).is_err() {
                return Ok(None);
            }
            let mut new = last.clone();
            new.priority = merged.priority;
            new.payload_len = merged.payload.len() as u64;
            // A head whose priority rises to its effective level or above
            // is due as a fresh head of the new priority (and may age from
            // there); one already promoted above it stays.
            if let Some(Head::Due { eff, .. }) = last.head {
                if merged.priority > last.priority && merged.priority >= eff {
                    new.head = Some(due_head(merged.priority, options));
                }
            }
            tx.update_op(&new, &merged)?;
            write_meta(tx, &last, &new)?;
            Ok(Some(Enqueued::Merged {
                into: merged.id,
                seq: last.seq,
            }))
        }
    }
}
