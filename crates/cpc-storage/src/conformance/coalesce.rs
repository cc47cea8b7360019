//! The coalescing enqueue's behaviours
//! ([`QueueStorage::enqueue_coalesced`]).

use super::*;
use crate::{Enqueued, Page, RetainAcked};
use cpc_core::{Coalesced, Coalescer, OperationId, StandardCoalescer};

fn standard() -> Arc<dyn Coalescer> {
    Arc::new(StandardCoalescer::new())
}

/// Operation `n` of entity `entity`, of `kind`, payload `p{n}`, base
/// version `n`.
fn edit(entity: &str, kind: OperationKind, n: u64) -> Operation {
    let mut o = Operation::builder(EntityKey::new("notes", entity), kind)
        .payload(format!("p{n}").into_bytes())
        .base_version(n)
        .build_at(
            HlcTimestamp::new(T0 + n, 0, NodeId(1)),
            &mut StdRng::seed_from_u64(1000 + n),
        );
    o.priority = OperationPriority::Normal;
    o
}

fn submit(env: &Env<'_>, o: &Operation) -> Enqueued {
    let mut out = env
        .s()
        .enqueue_coalesced(vec![o.clone()], T0, standard())
        .unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn queued(env: &Env<'_>, entity: &str) -> Vec<Operation> {
    entity_ops(env, entity)
}

/// Update after Update: one operation in the first one's place, with the
/// later payload and timestamp, the earlier base version and id, and the
/// higher priority; counters follow.
pub fn an_update_merges_into_the_queued_update(f: &dyn Factory) {
    let env = Env::new(f, options());
    let first = edit("a", OperationKind::Update, 1);
    let Enqueued::Stored { seq } = submit(&env, &first) else {
        panic!("the first edit is stored");
    };
    let mut second = edit("a", OperationKind::Update, 2);
    second.priority = OperationPriority::High;
    second.payload = b"a longer payload".to_vec();
    assert_eq!(
        submit(&env, &second),
        Enqueued::Merged {
            into: first.id,
            seq
        }
    );
    let q = queued(&env, "a");
    assert_eq!(q.len(), 1, "{q:?}");
    let got = &q[0];
    assert_eq!(got.id, first.id);
    assert_eq!(got.kind, OperationKind::Update);
    assert_eq!(got.payload, second.payload);
    assert_eq!(got.timestamp, second.timestamp);
    assert_eq!(got.base_version, Some(1));
    assert_eq!(got.priority, OperationPriority::High);
    let stats = env.s().stats().unwrap();
    assert_eq!(stats.pending, 1);
    assert_eq!(
        stats.pending_by_priority[usize::from(OperationPriority::High.rank())],
        1
    );
    assert_eq!(stats.pending_bytes, second.payload.len() as u64);
    // The raised priority counts for the claim order, too.
    env.s()
        .enqueue(op("b", OperationPriority::Normal, 3), T0)
        .unwrap();
    let claimed = env.s().claim_ready(T0, 1).unwrap();
    assert_eq!(claimed[0].op.id, first.id);
    assert_eq!(claimed[0].op.payload, second.payload);
}

/// Create then Delete, never sent: both vanish, the entity is empty.
pub fn a_create_then_delete_cancels_both(f: &dyn Factory) {
    let env = Env::new(f, options());
    let create = edit("a", OperationKind::Create, 1);
    let update = edit("a", OperationKind::Update, 2);
    let delete = edit("a", OperationKind::Delete, 3);
    submit(&env, &create);
    assert!(matches!(submit(&env, &update), Enqueued::Merged { into, .. } if into == create.id));
    assert_eq!(
        submit(&env, &delete),
        Enqueued::Cancelled { earlier: create.id }
    );
    assert!(queued(&env, "a").is_empty());
    assert_eq!(env.s().stats().unwrap().pending, 0);
    assert!(env.s().claim_ready(T0, 10).unwrap().is_empty());
    // The entity starts afresh: a new create is stored and claimable.
    let again = edit("a", OperationKind::Create, 4);
    assert!(matches!(submit(&env, &again), Enqueued::Stored { .. }));
    assert_eq!(env.claim_ids(T0, 10), vec![again.id]);
}

/// Update then Delete becomes a Delete in the update's place; Delete then
/// Create stays two operations.
pub fn update_delete_becomes_delete_and_delete_create_is_kept(f: &dyn Factory) {
    let env = Env::new(f, options());
    let update = edit("a", OperationKind::Update, 1);
    let delete = edit("a", OperationKind::Delete, 2);
    let create = edit("a", OperationKind::Create, 3);
    submit(&env, &update);
    submit(&env, &delete);
    assert!(matches!(submit(&env, &create), Enqueued::Stored { .. }));
    let q = queued(&env, "a");
    assert_eq!(q.len(), 2, "{q:?}");
    assert_eq!((q[0].id, &q[0].kind), (update.id, &OperationKind::Delete));
    assert_eq!(q[0].base_version, Some(1));
    assert_eq!(q[1].id, create.id);
}

/// An operation that was claimed is never merged into: not while in
/// flight, not after its claim was released (attempt given back), not
/// after a postponement; only the entity's newest operation is looked at.
pub fn a_claimed_op_is_never_merged_into(f: &dyn Factory) {
    let env = Env::new(f, options());
    let first = edit("a", OperationKind::Update, 1);
    submit(&env, &first);
    assert_eq!(env.claim_ids(T0, 1), vec![first.id]);
    let second = edit("a", OperationKind::Update, 2);
    assert!(matches!(submit(&env, &second), Enqueued::Stored { .. }));
    env.s()
        .complete(&[Completion::Release(first.id)], T0 + 1)
        .unwrap();
    let got = env.s().get(first.id).unwrap().unwrap();
    assert_eq!((got.state, got.attempts), (OpState::Ready, 0));
    // The newest (second) is mergeable; the released first is not touched.
    let third = edit("a", OperationKind::Update, 3);
    assert!(matches!(submit(&env, &third), Enqueued::Merged { into, .. } if into == second.id));
    assert_eq!(queued(&env, "a")[0].payload, first.payload);
    // Drain down to the released one alone, then edit it again.
    let other = Env::new(f, options());
    let lone = edit("b", OperationKind::Update, 4);
    submit(&other, &lone);
    other.claim_ids(T0, 1);
    other
        .s()
        .complete(&[Completion::Release(lone.id)], T0 + 1)
        .unwrap();
    let next = edit("b", OperationKind::Update, 5);
    assert!(matches!(submit(&other, &next), Enqueued::Stored { .. }));
    // Postponed (a failure that says nothing about it): also never merged.
    let p = edit("c", OperationKind::Update, 6);
    submit(&other, &p);
    other.claim_ids(T0, 5);
    other
        .s()
        .complete(
            &[Completion::Postpone {
                id: p.id,
                at: T0,
                error: "offline".into(),
            }],
            T0 + 1,
        )
        .unwrap();
    assert!(matches!(
        submit(&other, &edit("c", OperationKind::Update, 7)),
        Enqueued::Stored { .. }
    ));
}

/// The claimed mark survives a reopen (durable backends).
pub fn the_claimed_mark_survives_a_reopen(f: &dyn Factory) {
    if !f.durable() {
        return;
    }
    let mut env = Env::new(f, options());
    let first = edit("a", OperationKind::Update, 1);
    submit(&env, &first);
    env.claim_ids(T0, 1);
    env.s()
        .complete(&[Completion::Release(first.id)], T0 + 1)
        .unwrap();
    let unclaimed = edit("b", OperationKind::Update, 2);
    submit(&env, &unclaimed);
    env.reopen(T0 + 2);
    assert!(matches!(
        submit(&env, &edit("a", OperationKind::Update, 3)),
        Enqueued::Stored { .. }
    ));
    assert!(matches!(
        submit(&env, &edit("b", OperationKind::Update, 4)),
        Enqueued::Merged { into, .. } if into == unclaimed.id
    ));
}

/// Operations put back from the acked journal reached the remote once:
/// never merged into.
pub fn a_requeued_op_is_never_merged_into(f: &dyn Factory) {
    let env = Env::new(
        f,
        QueueOptions {
            retain_acked: Some(RetainAcked {
                max_count: 100,
                max_age: Duration::from_secs(3600),
            }),
            ..options()
        },
    );
    let sent = edit("a", OperationKind::Update, 1);
    submit(&env, &sent);
    env.claim_ids(T0, 1);
    env.s()
        .complete(
            &[Completion::AckAt {
                id: sent.id,
                seq: 7,
            }],
            T0 + 1,
        )
        .unwrap();
    let back = env.s().requeue_acked(0, T0 + 2, 10).unwrap();
    assert_eq!(back.requeued, 1);
    assert!(env.s().acked(&Page::ALL).unwrap().is_empty());
    assert!(matches!(
        submit(&env, &edit("a", OperationKind::Update, 2)),
        Enqueued::Stored { .. }
    ));
}

/// Imported operations (`Amend::Import`) may have reached the remote:
/// never merged into; refusals come before any write.
pub fn an_imported_op_is_never_merged_into(f: &dyn Factory) {
    let env = Env::new(f, options());
    let imported = edit("a", OperationKind::Update, 1);
    let n = env
        .s()
        .amend(crate::Amend::Import {
            ops: vec![imported.clone()],
            now: T0,
        })
        .unwrap();
    assert_eq!(n, 1);
    assert!(matches!(
        submit(&env, &edit("a", OperationKind::Update, 2)),
        Enqueued::Stored { .. }
    ));
    let again = env.s().amend(crate::Amend::Import {
        ops: vec![edit("b", OperationKind::Update, 3), imported.clone()],
        now: T0,
    });
    assert!(
        matches!(again, Err(StorageError::Duplicate(id)) if id == imported.id),
        "{again:?}"
    );
    assert!(queued(&env, "b").is_empty());
}

#[derive(Debug)]
struct Panics;

impl Coalescer for Panics {
    fn coalesce(&self, _: &Operation, _: &Operation) -> Coalesced {
        panic!("a coalescer bug");
    }
}

#[derive(Debug)]
struct Oversized;

impl Coalescer for Oversized {
    fn coalesce(&self, _: &Operation, later: &Operation) -> Coalesced {
        let mut big = later.clone();
        big.payload = vec![0; 4096];
        Coalesced::Replace(big)
    }
}

/// A coalescer that panics, or that returns more than the payload limit,
/// keeps both operations; a batch coalesces within itself, in order.
pub fn a_failing_coalescer_keeps_both_and_batches_coalesce_in_order(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a1 = edit("a", OperationKind::Update, 1);
    let a2 = edit("a", OperationKind::Update, 2);
    let a3 = edit("a", OperationKind::Update, 3);
    env.s().enqueue(a1.clone(), T0).unwrap();
    for c in [Arc::new(Panics) as Arc<dyn Coalescer>, Arc::new(Oversized)] {
        let out = env.s().enqueue_coalesced(vec![a2.clone()], T0, c).unwrap();
        assert!(matches!(out[0], Enqueued::Stored { .. }), "{out:?}");
        env.s().drop_op(a2.id).unwrap();
    }
    assert_eq!(queued(&env, "a").len(), 1);
    let b: Vec<Operation> = (4..=6)
        .map(|n| edit("b", OperationKind::Update, n))
        .collect();
    let out = env
        .s()
        .enqueue_coalesced(
            vec![
                a2.clone(),
                b[0].clone(),
                a3.clone(),
                b[1].clone(),
                b[2].clone(),
            ],
            T0,
            standard(),
        )
        .unwrap();
    let into = |id: OperationId| move |e: &Enqueued| matches!(e, Enqueued::Merged { into, .. } if *into == id);
    assert!(into(a1.id)(&out[0]), "{out:?}");
    assert!(matches!(out[1], Enqueued::Stored { .. }), "{out:?}");
    assert!(into(a1.id)(&out[2]), "{out:?}");
    assert!(into(b[0].id)(&out[3]) && into(b[0].id)(&out[4]), "{out:?}");
    assert_eq!(queued(&env, "a")[0].payload, a3.payload);
    assert_eq!(queued(&env, "b")[0].payload, b[2].payload);
    // Refusals come first and leave nothing: a duplicate id in the batch.
    let dup = env.s().enqueue_coalesced(
        vec![edit("c", OperationKind::Update, 9), a1.clone()],
        T0,
        standard(),
    );
    assert!(
        matches!(dup, Err(StorageError::Duplicate(id)) if id == a1.id),
        "{dup:?}"
    );
    assert!(queued(&env, "c").is_empty());
}
