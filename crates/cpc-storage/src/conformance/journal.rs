//! The acked journal's behaviours (see [`crate::journal`]).

use super::*;
use crate::{Page, RetainAcked};

fn retaining(max_count: u64) -> QueueOptions {
    QueueOptions {
        retain_acked: Some(RetainAcked {
            max_count,
            max_age: Duration::from_secs(3600),
        }),
        ..options()
    }
}

fn ack_at(op: &Operation, seq: u64) -> Completion {
    Completion::AckAt { id: op.id, seq }
}

/// Three operations of three entities, claimed.
fn three_claimed(env: &Env<'_>) -> Vec<Operation> {
    let ops: Vec<Operation> = (1..=3).map(|n| normal(&format!("e{n}"), n)).collect();
    env.s().enqueue_batch(ops.clone(), T0).unwrap();
    env.s().claim_ready(T0, 3).unwrap();
    ops
}

fn entity_order(env: &Env<'_>, entity: &str) -> Vec<cpc_core::OperationId> {
    entity_ops(env, entity).into_iter().map(|o| o.id).collect()
}

/// Acknowledgements are journaled with the remote's seq when known (ids
/// only without retention); a dropped operation is not.
pub fn acks_are_journaled_with_their_remote_seq(f: &dyn Factory) {
    let env = Env::new(f, options());
    let ops = three_claimed(&env);
    env.s()
        .complete(
            &[
                ack_at(&ops[0], 10),
                Completion::Ack(ops[1].id),
                Completion::Drop(ops[2].id),
            ],
            T0 + 5,
        )
        .unwrap();
    let journal = env.s().acked(&Page::ALL).unwrap();
    assert_eq!(journal.len(), 2, "{journal:?}");
    assert_eq!(journal[0].id, ops[0].id);
    assert_eq!(journal[0].remote_seq, Some(10));
    assert_eq!(journal[0].entity, ops[0].entity);
    assert_eq!(journal[0].acked_at, T0 + 5);
    assert!(!journal[0].retained);
    assert_eq!(journal[1].id, ops[1].id);
    assert_eq!(journal[1].remote_seq, None);
    assert!(journal[1].n > journal[0].n);
    assert_eq!(env.s().stats().unwrap().acked_journal, 2);
    assert_eq!(env.s().stats().unwrap().pending, 0);
    // Paged by `n`.
    let rest = env.s().acked(&Page::after(journal[0].n, 10)).unwrap();
    assert_eq!(rest, journal[1..].to_vec());
}

/// Under retention a requeue puts the operation back whole, with its id,
/// ahead of what its entity got later; the journal empties.
pub fn requeue_puts_retained_ops_back_ahead_of_later_ones(f: &dyn Factory) {
    let env = Env::new(f, retaining(100));
    let a = normal("e1", 1);
    let b = normal("e1", 2);
    env.s()
        .enqueue_batch(vec![a.clone(), b.clone()], T0)
        .unwrap();
    assert_eq!(env.claim_ids(T0, 5), ids(&[&a]));
    env.s().complete(&[ack_at(&a, 5)], T0 + 1).unwrap();
    let c = normal("e1", 3);
    env.s().enqueue(c.clone(), T0 + 2).unwrap();
    let before = env.s().acked(&Page::ALL).unwrap();
    assert!(before[0].retained);

    let done = env.s().requeue_acked(3, T0 + 3, 100).unwrap();
    assert_eq!(
        done,
        crate::Requeued {
            requeued: 1,
            unrecoverable: 0,
            more: false
        }
    );
    assert_eq!(entity_order(&env, "e1"), ids(&[&a, &b, &c]));
    let back = env.s().get(a.id).unwrap().unwrap();
    assert_eq!(back.op, a);
    assert_eq!(back.state, OpState::Ready);
    assert_eq!(back.attempts, 0);
    // It is the head again: sent first, the later ones wait for it.
    assert_eq!(env.claim_ids(T0 + 3, 5), ids(&[&a]));
    assert!(env.s().acked(&Page::ALL).unwrap().is_empty());
    let stats = env.s().stats().unwrap();
    assert_eq!((stats.pending, stats.acked_journal), (3, 0));
    // A second requeue finds nothing.
    assert_eq!(
        env.s().requeue_acked(3, T0 + 4, 100).unwrap(),
        crate::Requeued::default()
    );
    // Acknowledged again, it gets a new place: an `n` is never reused, so a
    // listing cursor taken before the requeue still finds it.
    env.s().complete(&[ack_at(&a, 9)], T0 + 5).unwrap();
    let after = env.s().acked(&Page::after(before[0].n, 10)).unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].n > before[0].n);
}

/// Without retention nothing can be put back: what was applied above the
/// remote's head, or at an unknown position, is counted unrecoverable.
pub fn without_retention_requeue_counts_what_was_lost(f: &dyn Factory) {
    let env = Env::new(f, options());
    let ops = three_claimed(&env);
    env.s()
        .complete(
            &[
                ack_at(&ops[0], 5),
                ack_at(&ops[1], 2),
                Completion::Ack(ops[2].id),
            ],
            T0 + 1,
        )
        .unwrap();
    let done = env.s().requeue_acked(3, T0 + 2, 100).unwrap();
    assert_eq!((done.requeued, done.unrecoverable), (0, 2));
    assert_eq!(env.s().stats().unwrap().pending, 0);
    assert!(env.s().acked(&Page::ALL).unwrap().is_empty());
}

/// The journal keeps at most `max_count` entries, and none older than
/// `max_age`, oldest pruned first.
pub fn the_journal_is_pruned_by_count_and_age(f: &dyn Factory) {
    let env = Env::new(f, retaining(3));
    let ops: Vec<Operation> = (1..=5).map(|n| normal(&format!("e{n}"), n)).collect();
    env.s().enqueue_batch(ops.clone(), T0).unwrap();
    env.s().claim_ready(T0, 5).unwrap();
    let acks: Vec<Completion> = ops.iter().zip(1..).map(|(o, s)| ack_at(o, s)).collect();
    env.s().complete(&acks, T0 + 1).unwrap();
    let kept: Vec<_> = env.s().acked(&Page::ALL).unwrap();
    assert_eq!(
        kept.iter().map(|a| a.id).collect::<Vec<_>>(),
        ids(&[&ops[2], &ops[3], &ops[4]])
    );
    // Two hours later (max_age one hour) the old entries go.
    let late = normal("e9", 9);
    env.s().enqueue(late.clone(), T0 + 7_200_000).unwrap();
    env.s().claim_ready(T0 + 7_200_000, 1).unwrap();
    env.s()
        .complete(&[ack_at(&late, 9)], T0 + 7_200_000)
        .unwrap();
    let kept = env.s().acked(&Page::ALL).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].id, late.id);
}

/// A requeue goes page by page; the journal and the retained operations
/// survive a reopen.
pub fn requeue_is_paged_and_the_journal_survives_reopen(f: &dyn Factory) {
    if !f.durable() {
        return;
    }
    let mut env = Env::new(f, retaining(100));
    let ops: Vec<Operation> = (1..=5).map(|n| normal(&format!("e{n}"), n)).collect();
    env.s().enqueue_batch(ops.clone(), T0).unwrap();
    env.s().claim_ready(T0, 5).unwrap();
    let acks: Vec<Completion> = ops.iter().zip(10..).map(|(o, s)| ack_at(o, s)).collect();
    env.s().complete(&acks, T0 + 1).unwrap();
    let before = env.s().acked(&Page::ALL).unwrap();
    env.reopen(T0 + 2);
    assert_eq!(env.s().acked(&Page::ALL).unwrap(), before);
    let mut requeued = 0;
    let mut calls = 0;
    loop {
        let done = env.s().requeue_acked(0, T0 + 3, 2).unwrap();
        requeued += done.requeued;
        calls += 1;
        if !done.more {
            break;
        }
    }
    assert_eq!((requeued, calls), (5, 3));
    env.reopen(T0 + 4);
    let listed: Vec<_> = env
        .s()
        .list(&ListFilter::default())
        .unwrap()
        .into_iter()
        .map(|s| s.op)
        .collect();
    assert_eq!(listed, ops);
}

/// Put back among an entity's operations in seq order: behind an older
/// dead one that stayed (skip policy), ahead of a newer one.
pub fn a_requeued_op_takes_its_place_between_older_and_newer_ones(f: &dyn Factory) {
    let mut o = retaining(100);
    o.dead_head = DeadHeadPolicy::SkipEntityHead;
    let env = Env::new(f, o);
    let d = normal("e1", 1);
    let a = normal("e1", 2);
    env.s()
        .enqueue_batch(vec![d.clone(), a.clone()], T0)
        .unwrap();
    env.s().claim_ready(T0, 1).unwrap();
    env.s().dead_letter(d.id, "rejected", T0 + 1).unwrap();
    assert_eq!(env.claim_ids(T0 + 1, 5), ids(&[&a]));
    env.s().complete(&[ack_at(&a, 7)], T0 + 2).unwrap();
    let c = normal("e1", 3);
    env.s().enqueue(c.clone(), T0 + 3).unwrap();
    assert_eq!(env.s().requeue_acked(0, T0 + 4, 10).unwrap().requeued, 1);
    assert_eq!(entity_order(&env, "e1"), ids(&[&d, &a, &c]));
    assert_eq!(env.claim_ids(T0 + 4, 5), ids(&[&a]));
    env.s().ack(a.id, T0 + 5).unwrap();
    assert_eq!(env.claim_ids(T0 + 5, 5), ids(&[&c]));
}
