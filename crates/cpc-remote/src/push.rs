//! One push applied over any store that can answer the rules' reads and
//! take their writes in one transaction ([`PushStore`]): the embedded
//! SQLite store and [`MemoryRemote`](crate::MemoryRemote) run this driver,
//! so they answer alike by construction; PostgreSQL's asynchronous store
//! runs the same [`rules`](crate::rules) with its own reads (it fetches a
//! batch's rows in a few round trips, not one per operation).

use cpc_protocol::{EntityKey, OpOutcome, Outcome, WireOp};

use crate::rules::{self, Batch, Current, Decision, Head, NewChange, Rules, Seen};

/// What the push rules read and write, inside the store's transaction.
pub trait PushStore {
    /// The store's error.
    type Error;

    /// The idempotency row of `client_id`'s operation, if it was applied.
    fn seen(&mut self, client_id: &str, op: &WireOp) -> Result<Option<Seen>, Self::Error>;

    /// The entity as stored, if it ever was written.
    fn current(&mut self, entity: &EntityKey) -> Result<Option<Current>, Self::Error>;

    /// Writes an applied operation: the entity's row, one change-log row
    /// (at `change.seq`, with `change.fp`), one idempotency row.
    fn write(
        &mut self,
        client_id: &str,
        op: &WireOp,
        change: &NewChange<'_>,
    ) -> Result<(), Self::Error>;

    /// Faults `record_conflicts` / `record_retry_later` (feature
    /// `test-faults`): records a conflict or a retry-later in the
    /// idempotency table as if it were final, the bug §6.4 forbids. A
    /// store that cannot break that rule keeps the default, which does
    /// nothing.
    #[cfg(feature = "test-faults")]
    fn record_as_final(
        &mut self,
        client_id: &str,
        op: &WireOp,
        outcome: &Outcome,
    ) -> Result<(), Self::Error> {
        let _ = (client_id, op, outcome);
        Ok(())
    }
}

/// Applies one client's batch in order over `store`, moving `head` past
/// every change written; one outcome per operation. The caller owns the
/// transaction (an error leaves its writes to be rolled back).
pub fn apply_batch<S: PushStore + ?Sized>(
    store: &mut S,
    head: &mut Head,
    client_id: &str,
    ops: &[WireOp],
    rules: &Rules,
) -> Result<Vec<OpOutcome>, S::Error> {
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut batch = Batch::new(ops.len());
    for op in ops {
        let outcome = apply_one(store, head, client_id, op, rules, &mut batch)?;
        #[cfg(feature = "test-faults")]
        {
            let record = match &outcome {
                Outcome::Conflict { .. } => rules.faults.record_conflicts,
                Outcome::RetryLater { .. } => rules.faults.record_retry_later,
                _ => false,
            };
            if record {
                store.record_as_final(client_id, op, &outcome)?;
            }
        }
        batch.record(op, &outcome);
        outcomes.push(OpOutcome { op: op.id, outcome });
    }
    Ok(outcomes)
}

fn apply_one<'a, S: PushStore + ?Sized>(
    store: &mut S,
    head: &mut Head,
    client_id: &str,
    op: &'a WireOp,
    rules: &Rules,
    batch: &mut Batch<'a>,
) -> Result<Outcome, S::Error> {
    let seen = store.seen(client_id, op)?;
    if let Some(outcome) = rules::before_load(op, seen, batch, rules) {
        return Ok(outcome);
    }
    let current = store.current(&op.entity)?;
    match rules::decide(op, client_id, current, *head, batch, rules) {
        Decision::Answer(outcome) => Ok(outcome),
        Decision::Apply(change) => {
            store.write(client_id, op, &change)?;
            *head = change.head();
            Ok(change.applied())
        }
    }
}
