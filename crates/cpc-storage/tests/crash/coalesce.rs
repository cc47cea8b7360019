//! The crash loop with coalescing on: `kill -9` during coalescing enqueues
//! leaves every entity's queue either as it was before the enqueue being
//! written or as it is after it, never both operations and never neither.
//!
//! Each writer of the child owns one entity and submits its numbered
//! edits in a fixed pattern that exercises every rule of
//! `StandardCoalescer` (Create+Update merges, Create+Delete cancels,
//! Update+Delete replaces, Delete+Create and Create+Create keep both),
//! printing `ACK <n>` after each. The parent replays the acknowledged
//! edits of each entity through the same coalescer on a `MemoryStorage`
//! (the state after the last acknowledged edit) and once more with the
//! writer's next edit (its write may have committed before the kill),
//! and the reopened store must hold exactly one of the two.

use std::path::Path;
use std::sync::Arc;

use cpc_core::{
    Coalescer, EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, OperationPriority,
    StandardCoalescer,
};
use cpc_storage::{ListFilter, MemoryStorage, QueueStorage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    acks_until_killed, cycles, drain_checking_order, open, options, run_writers, say, seed,
    spawn_mode, STRIDE,
};

/// Writers (one entity each) under group commit.
const GROUP_WRITERS: u64 = 4;
/// Edits one child submits at most.
const MAX_EDITS: u64 = 2_000;
/// The kinds, by an edit's index within its writer.
const PATTERN: [OperationKind; 8] = [
    OperationKind::Create,
    OperationKind::Update,
    OperationKind::Update,
    OperationKind::Update,
    OperationKind::Delete,
    OperationKind::Update,
    OperationKind::Delete,
    OperationKind::Create,
];

fn writers(group: bool) -> u64 {
    if group {
        GROUP_WRITERS
    } else {
        1
    }
}

fn standard() -> Arc<dyn Coalescer> {
    Arc::new(StandardCoalescer::new())
}

/// Edit `n` of a child that started at `start` with `writers` writers.
fn edit(n: u64, start: u64, writers: u64) -> Operation {
    let k = n - start;
    let (w, i) = (k % writers, k / writers);
    let priority = OperationPriority::from_rank((n % 3) as u8).unwrap_or_default();
    Operation::builder(
        EntityKey::new("coalesce", format!("w{w}")),
        PATTERN[(i % PATTERN.len() as u64) as usize].clone(),
    )
    .payload(n.to_be_bytes().repeat(8))
    .priority(priority)
    .base_version(n)
    .build_at(
        HlcTimestamp::new(1_000_000 + n, 0, NodeId(7)),
        &mut StdRng::seed_from_u64(n),
    )
}

/// The child: every writer submits its entity's edits, coalescing.
pub(super) fn child(backend: &str, dir: &Path, group: bool, start: u64) {
    say("OPENING");
    let store: Arc<dyn QueueStorage> = Arc::from(open(backend, dir, options(group)).unwrap());
    say("OPEN");
    let writers = writers(group);
    run_writers(writers, MAX_EDITS, move |k| {
        let n = start + k;
        store
            .enqueue_coalesced(vec![edit(n, start, writers)], 1_000, standard())
            .unwrap();
        n
    });
}

/// An entity's queue after `edits`, coalesced in order on an empty store.
fn model(edits: &[Operation]) -> Vec<Operation> {
    let store = MemoryStorage::new(options(false));
    for e in edits {
        store
            .enqueue_coalesced(vec![e.clone()], 1_000, standard())
            .unwrap();
    }
    store
        .list(&ListFilter::default())
        .unwrap()
        .into_iter()
        .map(|s| s.op)
        .collect()
}

fn cycle(backend: &str, dir: &Path, cycle: u64, rng: &mut StdRng) -> (u64, u64) {
    let group = cycle % 2 == 1;
    let writers = writers(group);
    let start = cycle * STRIDE;
    let kill_after = match rng.gen_range(0..10) {
        0 => None,
        _ => Some(rng.gen_range(0..120u64)),
    };
    let mut child = spawn_mode(
        backend,
        dir,
        if group {
            "coalesce-group"
        } else {
            "coalesce-immediate"
        },
        start,
    );
    let (acked, killed) = acks_until_killed(&mut child, false, |line, acked| match kill_after {
        None => line.contains("OPENING"),
        Some(k) => acked as u64 >= k,
    });
    let status = child.wait().unwrap();
    assert!(
        killed || status.success(),
        "{backend} coalescing cycle {cycle}: the child failed on its own: {status}"
    );
    let store = open(backend, dir, options(false)).unwrap_or_else(|e| {
        panic!("{backend} coalescing cycle {cycle}: does not reopen after kill -9: {e:?}")
    });
    assert!(store
        .list_quarantined(&cpc_storage::Page::ALL)
        .unwrap()
        .is_empty());
    let mut entities_checked = 0;
    for w in 0..writers {
        let mine: Vec<Operation> = acked
            .iter()
            .filter(|n| (*n - start) % writers == w)
            .map(|&n| edit(n, start, writers))
            .collect();
        let next = mine.last().map_or(start + w, |e| {
            u64::from_be_bytes(e.payload[..8].try_into().unwrap()) + writers
        });
        let before = model(&mine);
        let after = (next < start + MAX_EDITS).then(|| {
            let mut more = mine.clone();
            more.push(edit(next, start, writers));
            model(&more)
        });
        let entity = EntityKey::new("coalesce", format!("w{w}"));
        let stored: Vec<Operation> = store
            .list(&ListFilter {
                entity: Some(entity.clone()),
                ..ListFilter::default()
            })
            .unwrap()
            .into_iter()
            .map(|s| s.op)
            .collect();
        assert!(
            stored == before || Some(&stored) == after.as_ref(),
            "{backend} coalescing cycle {cycle}: {entity} holds neither the state before nor \
             after its last write ({} acknowledged):\n stored {stored:?}\n before {before:?}\n \
             after {after:?}",
            mine.len()
        );
        entities_checked += 1;
    }
    drain_checking_order(&*store, backend, cycle);
    (acked.len() as u64, entities_checked)
}

fn coalescing_crash_loop(backend: &str) {
    let seed = seed();
    let cycles = cycles();
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("queue");
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC0A1 ^ backend.len() as u64);
    let (mut acked, mut checked) = (0, 0);
    for c in 0..cycles {
        let (a, e) = cycle(backend, &dir, c, &mut rng);
        acked += a;
        checked += e;
    }
    println!(
        "{backend}: coalescing crash loop, seed {seed}, cycles {cycles}, acknowledged {acked}, \
         entity states checked {checked}: each as before or after its last write"
    );
    assert!(
        acked > 0,
        "{backend}: the child never acknowledged anything"
    );
}

#[test]
fn coalescing_enqueues_are_all_or_nothing_under_kill_9_sqlite() {
    if super::durable_backends().contains(&"sqlite") {
        coalescing_crash_loop("sqlite");
    }
}

#[test]
fn coalescing_enqueues_are_all_or_nothing_under_kill_9_sled() {
    if super::durable_backends().contains(&"sled") {
        coalescing_crash_loop("sled");
    }
}

/// The check fails on a store that kept both operations of a merge, or
/// lost the merged one.
#[test]
fn the_coalescing_check_catches_both_and_neither() {
    let edits: Vec<Operation> = (0..3).map(|n| edit(n, 0, 1)).collect();
    let before = model(&edits[..2]);
    let after = model(&edits);
    // Create then Update merged: one operation either way.
    assert_eq!(before.len(), 1);
    assert_eq!(after.len(), 1);
    let both = vec![before[0].clone(), edits[2].clone()];
    assert!(both != before && both != after);
    let neither: Vec<Operation> = Vec::new();
    assert!(neither != before && neither != after);
}
