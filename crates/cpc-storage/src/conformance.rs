//! The conformance suite every [`QueueStorage`] implementation must pass.
//!
//! One function per behaviour, each taking a [`Factory`] that opens a store
//! on a directory; [`run_all`] runs them all, and [`conformance_tests!`](crate::conformance_tests!)
//! (exported at the crate root) expands to one `#[test]` per behaviour so a
//! test runner reports them one by one:
//!
//! ```text
//! cpc_storage::conformance_tests!(cpc_storage::conformance::SqliteFactory);
//! ```
//!
//! Behaviours that need a reopen (durability, lease recovery at open, the
//! directory lock) run only for factories whose [`Factory::durable`] is
//! true. Failures panic with the behaviour's name in the message; this
//! module is test code, compiled only with the `conformance` feature.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cpc_core::{
    ConflictRecord, EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, OperationPriority,
    RemoteRecord, Resolution,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::{
    Completion, ConflictFilter, DeadHeadPolicy, Durability, EpochMillis, ListFilter, MemoryStorage,
    OpState, QueueOptions, QueueStorage, QueueStorageExt, Result, SqliteStorage, StorageError,
};

mod coalesce;
mod journal;
pub use coalesce::*;
pub use journal::*;

/// Opens stores for the suite.
pub trait Factory: Sync {
    /// Backend name, for messages.
    fn name(&self) -> &str;
    /// True if reopening a directory finds what was written there.
    fn durable(&self) -> bool;
    /// Opens (creating if needed) a store in `dir`, recovering leases ended
    /// at `now`.
    fn open(
        &self,
        dir: &Path,
        options: QueueOptions,
        now: EpochMillis,
    ) -> Result<Box<dyn QueueStorage>>;
}

/// [`MemoryStorage`] for the suite (not durable: `dir` is ignored).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryFactory;

impl Factory for MemoryFactory {
    fn name(&self) -> &str {
        "memory"
    }
    fn durable(&self) -> bool {
        false
    }
    fn open(
        &self,
        _: &Path,
        options: QueueOptions,
        now: EpochMillis,
    ) -> Result<Box<dyn QueueStorage>> {
        let s = MemoryStorage::new(options);
        s.recover(now)?;
        Ok(Box::new(s))
    }
}

/// [`SqliteStorage`] for the suite.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteFactory;

impl Factory for SqliteFactory {
    fn name(&self) -> &str {
        "sqlite"
    }
    fn durable(&self) -> bool {
        true
    }
    fn open(
        &self,
        dir: &Path,
        options: QueueOptions,
        now: EpochMillis,
    ) -> Result<Box<dyn QueueStorage>> {
        Ok(Box::new(SqliteStorage::open_at(dir, options, now)?))
    }
}

/// [`SledStorage`](crate::SledStorage) for the suite.
#[cfg(feature = "sled")]
#[derive(Debug, Clone, Copy, Default)]
pub struct SledFactory;

#[cfg(feature = "sled")]
impl Factory for SledFactory {
    fn name(&self) -> &str {
        "sled"
    }
    fn durable(&self) -> bool {
        true
    }
    fn open(
        &self,
        dir: &Path,
        options: QueueOptions,
        now: EpochMillis,
    ) -> Result<Box<dyn QueueStorage>> {
        Ok(Box::new(crate::SledStorage::open_at(dir, options, now)?))
    }
}

macro_rules! suite {
    ($d:tt $($name:ident),* $(,)?) => {
        /// Every behaviour of the suite, by name.
        pub const ALL: &[(&str, fn(&dyn Factory))] = &[$((stringify!($name), $name as fn(&dyn Factory))),*];

        /// Expands to one `#[test]` per conformance behaviour, run against
        /// the [`conformance::Factory`](crate::conformance::Factory) given.
        #[macro_export]
        macro_rules! conformance_tests {
            ($d factory:expr) => {
                $(
                    #[test]
                    fn $name() {
                        $d crate::conformance::$name(&$d factory)
                    }
                )*
            };
        }
    };
}

suite!($
    enqueue_then_get_round_trips,
    seqs_strictly_increase,
    oversized_payload_is_refused_and_nothing_is_stored,
    duplicate_ids_are_refused_and_a_batch_is_atomic,
    claim_takes_highest_priority_first_then_fifo,
    only_the_entity_head_is_claimable,
    claim_persists_attempts_and_lease,
    an_expired_lease_is_claimable_again_with_attempts_kept,
    recover_returns_only_expired_leases,
    a_retry_waits_until_due_and_next_wakeup_reports_it,
    aging_promotes_one_level,
    priority_is_strict_without_aging,
    a_dead_head_blocks_its_entity_until_revived,
    a_dead_head_is_skipped_under_skip_policy,
    drop_op_and_drop_entity_remove_work,
    complete_applies_a_mixed_batch_and_skips_unknown_ids,
    release_gives_the_attempt_back,
    postpone_waits_and_gives_the_attempt_back,
    respread_moves_only_waiting_ops_due_before_their_slot,
    listings_read_page_by_page_after_a_cursor,
    deferred_and_conflict_log_read_page_by_page,
    blocked_counts_what_waits_behind_a_parked_head,
    resend_replaces_payload_and_base_version,
    deferred_conflicts_are_listed_and_settled,
    conflict_log_is_bounded_by_count_and_age,
    conflict_log_is_bounded_by_bytes,
    clock_mark_never_goes_down,
    sync_state_is_replaced_and_kept,
    a_healthy_store_has_nothing_quarantined,
    stats_count_by_state_and_priority,
    list_filters_by_entity_dead_and_limit,
    claim_limit_is_respected,
    concurrent_enqueues_are_all_stored,
    every_durability_mode_stores_and_flushes,
    reopen_keeps_every_state,
    reopen_returns_expired_leases,
    a_second_open_is_locked,
    acks_are_journaled_with_their_remote_seq,
    requeue_puts_retained_ops_back_ahead_of_later_ones,
    without_retention_requeue_counts_what_was_lost,
    the_journal_is_pruned_by_count_and_age,
    requeue_is_paged_and_the_journal_survives_reopen,
    a_requeued_op_takes_its_place_between_older_and_newer_ones,
    an_update_merges_into_the_queued_update,
    a_create_then_delete_cancels_both,
    update_delete_becomes_delete_and_delete_create_is_kept,
    a_claimed_op_is_never_merged_into,
    the_claimed_mark_survives_a_reopen,
    a_requeued_op_is_never_merged_into,
    an_imported_op_is_never_merged_into,
    a_failing_coalescer_keeps_both_and_batches_coalesce_in_order,
);

/// Runs every behaviour against `factory`.
pub fn run_all(factory: &dyn Factory) {
    for (name, f) in ALL {
        eprintln!("conformance [{}]: {name}", factory.name());
        f(factory);
    }
}

// ---------------------------------------------------------------- helpers

const T0: EpochMillis = 1_000_000;
const LEASE_MS: u64 = 10_000;

fn options() -> QueueOptions {
    QueueOptions {
        durability: Durability::Immediate,
        lease_timeout: Duration::from_millis(LEASE_MS),
        aging_after: None,
        dead_head: DeadHeadPolicy::BlockEntity,
        max_payload: 1024,
        conflict_log_max_entries: 100,
        conflict_log_max_age: Duration::from_secs(3600),
        conflict_log_max_bytes: crate::DEFAULT_CONFLICT_LOG_MAX_BYTES,
        allow_shared_directory: false,
        secure_delete: true,
        retain_acked: None,
    }
}

/// An operation numbered `n` (ids increase with `n`).
fn op(entity: &str, priority: OperationPriority, n: u64) -> Operation {
    Operation::builder(EntityKey::new("notes", entity), OperationKind::Update)
        .payload(format!("payload {n}").into_bytes())
        .priority(priority)
        .build_at(
            HlcTimestamp::new(T0 + n, 0, NodeId(1)),
            &mut StdRng::seed_from_u64(n),
        )
}

fn normal(entity: &str, n: u64) -> Operation {
    op(entity, OperationPriority::Normal, n)
}

fn remote(version: u64) -> RemoteRecord {
    RemoteRecord {
        version,
        timestamp: HlcTimestamp::new(T0, 0, NodeId(2)),
        payload: Some(b"remote".to_vec()),
        node: NodeId(2),
    }
}

struct Env<'f> {
    factory: &'f dyn Factory,
    dir: tempfile::TempDir,
    options: QueueOptions,
    store: Option<Box<dyn QueueStorage>>,
}

impl<'f> Env<'f> {
    fn new(factory: &'f dyn Factory, options: QueueOptions) -> Self {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let store = factory
            .open(&dir.path().join("queue"), options.clone(), T0)
            .unwrap();
        Env {
            factory,
            dir,
            options,
            store: Some(store),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    fn s(&self) -> &dyn QueueStorage {
        self.store.as_deref().unwrap()
    }

    /// Closes and reopens the store (durable factories only).
    fn reopen(&mut self, now: EpochMillis) {
        self.store = None;
        self.store = Some(
            self.factory
                .open(&self.path(), self.options.clone(), now)
                .unwrap(),
        );
    }

    fn claim_ids(&self, now: EpochMillis, limit: usize) -> Vec<cpc_core::OperationId> {
        self.s()
            .claim_ready(now, limit)
            .unwrap()
            .into_iter()
            .map(|c| c.op.id)
            .collect()
    }

    fn state(&self, o: &Operation) -> OpState {
        self.s().get(o.id).unwrap().unwrap().state
    }
}

/// The operations queued for `notes/<entity>`, in its order.
fn entity_ops(env: &Env<'_>, entity: &str) -> Vec<Operation> {
    env.s()
        .list(&ListFilter {
            entity: Some(EntityKey::new("notes", entity)),
            ..ListFilter::default()
        })
        .unwrap()
        .into_iter()
        .map(|s| s.op)
        .collect()
}

fn ids(ops: &[&Operation]) -> Vec<cpc_core::OperationId> {
    ops.iter().map(|o| o.id).collect()
}

// ------------------------------------------------------------- behaviours

/// `enqueue` stores the operation exactly; `get` returns it with fresh
/// bookkeeping; an unknown id is `None`.
pub fn enqueue_then_get_round_trips(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a = op("a", OperationPriority::High, 1);
    let seq = env.s().enqueue(a.clone(), T0).unwrap();
    let got = env.s().get(a.id).unwrap().unwrap();
    assert_eq!(got.op, a);
    assert_eq!(got.seq, seq);
    assert_eq!(got.enqueued_at, T0);
    assert_eq!(got.attempts, 0);
    assert_eq!(got.last_error, None);
    assert_eq!(got.state, OpState::Ready);
    assert!(env.s().get(normal("x", 99).id).unwrap().is_none());
    assert_eq!(env.s().pending().unwrap(), 1);
}

/// Seqs strictly increase across single and batch enqueues, after the queue
/// drained, and (durable backends) across a reopen.
pub fn seqs_strictly_increase(f: &dyn Factory) {
    let mut env = Env::new(f, options());
    let s1 = env.s().enqueue(normal("a", 1), T0).unwrap();
    let batch = env
        .s()
        .enqueue_batch(vec![normal("b", 2), normal("a", 3)], T0)
        .unwrap();
    assert!(s1 < batch[0] && batch[0] < batch[1]);
    for o in [normal("a", 1), normal("b", 2), normal("a", 3)] {
        env.s().drop_op(o.id).unwrap();
    }
    assert_eq!(env.s().pending().unwrap(), 0);
    let s2 = env.s().enqueue(normal("c", 4), T0).unwrap();
    assert!(s2 > batch[1], "seq reused after a drain");
    if f.durable() {
        env.reopen(T0);
        let s3 = env.s().enqueue(normal("c", 5), T0).unwrap();
        assert!(s3 > s2, "seq reused after a reopen");
    }
    assert_eq!(
        env.s().enqueue_batch(Vec::new(), T0).unwrap(),
        Vec::<u64>::new()
    );
}

/// A payload over `max_payload` is `PayloadTooLarge`; nothing is stored,
/// also when it is one of a batch.
pub fn oversized_payload_is_refused_and_nothing_is_stored(f: &dyn Factory) {
    let env = Env::new(f, options());
    let mut big = normal("a", 1);
    big.payload = vec![0; 1025];
    match env.s().enqueue(big.clone(), T0) {
        Err(StorageError::PayloadTooLarge {
            size: 1025,
            max: 1024,
        }) => {}
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let ok = normal("b", 2);
    assert!(matches!(
        env.s().enqueue_batch(vec![ok.clone(), big], T0),
        Err(StorageError::PayloadTooLarge { .. })
    ));
    assert_eq!(env.s().pending().unwrap(), 0);
    assert!(env.s().get(ok.id).unwrap().is_none());
    let mut exact = normal("c", 3);
    exact.payload = vec![7; 1024];
    env.s().enqueue(exact, T0).unwrap();
    let mut empty_collection = normal("d", 4);
    empty_collection.entity.collection.clear();
    assert!(matches!(
        env.s().enqueue(empty_collection, T0),
        Err(StorageError::InvalidOperation(_))
    ));
}

/// Enqueuing an id already stored (or twice in one batch) is `Duplicate`,
/// and the batch stores nothing.
pub fn duplicate_ids_are_refused_and_a_batch_is_atomic(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a = normal("a", 1);
    env.s().enqueue(a.clone(), T0).unwrap();
    assert!(
        matches!(env.s().enqueue(a.clone(), T0), Err(StorageError::Duplicate(id)) if id == a.id)
    );
    let b = normal("b", 2);
    assert!(matches!(
        env.s().enqueue_batch(vec![b.clone(), a.clone()], T0),
        Err(StorageError::Duplicate(_))
    ));
    assert!(matches!(
        env.s().enqueue_batch(vec![b.clone(), b.clone()], T0),
        Err(StorageError::Duplicate(_))
    ));
    assert!(env.s().get(b.id).unwrap().is_none());
    assert_eq!(env.s().pending().unwrap(), 1);
}

/// Across entities: highest priority first, FIFO by seq within a priority.
pub fn claim_takes_highest_priority_first_then_fifo(f: &dyn Factory) {
    use OperationPriority::*;
    let env = Env::new(f, options());
    let ops = [
        op("a", Background, 1),
        op("b", Normal, 2),
        op("c", Critical, 3),
        op("d", Normal, 4),
        op("e", High, 5),
        op("f", Critical, 6),
        op("g", Background, 7),
    ];
    for o in &ops {
        env.s().enqueue(o.clone(), T0).unwrap();
    }
    let first = env.s().claim_ready(T0, 3).unwrap();
    assert_eq!(
        first.iter().map(|c| c.op.id).collect::<Vec<_>>(),
        ids(&[&ops[2], &ops[5], &ops[4]])
    );
    assert_eq!(first[0].effective_priority, Critical);
    assert_eq!(
        env.claim_ids(T0, 10),
        ids(&[&ops[1], &ops[3], &ops[0], &ops[6]])
    );
    assert!(env.s().claim_ready(T0, 10).unwrap().is_empty());
}

/// Within an entity only the oldest undelivered op is claimable, whatever
/// the priorities; acking it makes the next one claimable.
pub fn only_the_entity_head_is_claimable(f: &dyn Factory) {
    use OperationPriority::*;
    let env = Env::new(f, options());
    let create = op("x", Background, 1);
    let update = op("x", Critical, 2);
    let other = op("y", Normal, 3);
    for o in [&create, &update, &other] {
        env.s().enqueue((*o).clone(), T0).unwrap();
    }
    // The Critical update waits behind its entity's Background create.
    assert_eq!(env.claim_ids(T0, 10), ids(&[&other, &create]));
    assert!(
        env.s().claim_ready(T0, 10).unwrap().is_empty(),
        "in-flight head must block"
    );
    env.s().ack(create.id, T0 + 1).unwrap();
    let next = env.s().claim_ready(T0 + 1, 10).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].op.id, update.id);
    assert_eq!(next[0].effective_priority, Critical);
}

/// A claim marks the op in flight with a lease and persists the attempt.
pub fn claim_persists_attempts_and_lease(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a = normal("a", 1);
    let seq = env.s().enqueue(a.clone(), T0).unwrap();
    let c = env.s().claim_ready(T0 + 5, 1).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].attempt, 1);
    assert_eq!(c[0].seq, seq);
    assert_eq!(c[0].enqueued_at, T0);
    assert_eq!(c[0].op, a);
    let got = env.s().get(a.id).unwrap().unwrap();
    assert_eq!(got.attempts, 1);
    assert_eq!(
        got.state,
        OpState::InFlight {
            lease_until: T0 + 5 + LEASE_MS
        }
    );
    assert_eq!(env.s().next_wakeup().unwrap(), Some(T0 + 5 + LEASE_MS));
}

/// Not claimable while the lease runs; claimable again when it ends, with
/// the attempt count carried on.
pub fn an_expired_lease_is_claimable_again_with_attempts_kept(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a = normal("a", 1);
    env.s().enqueue(a.clone(), T0).unwrap();
    env.s().claim_ready(T0, 1).unwrap();
    assert!(env
        .s()
        .claim_ready(T0 + LEASE_MS - 1, 1)
        .unwrap()
        .is_empty());
    let again = env.s().claim_ready(T0 + LEASE_MS, 1).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(env.s().get(a.id).unwrap().unwrap().attempts, 2);
}

/// `recover(now)` returns ended leases (and only those) to ready; idempotent.
pub fn recover_returns_only_expired_leases(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a = normal("a", 1);
    let b = normal("b", 2);
    env.s().enqueue(a.clone(), T0).unwrap();
    env.s().claim_ready(T0, 1).unwrap();
    env.s().enqueue(b.clone(), T0 + 100).unwrap();
    env.s().claim_ready(T0 + 100, 1).unwrap();
    assert_eq!(env.s().recover(T0 + LEASE_MS).unwrap(), 1);
    assert_eq!(env.state(&a), OpState::Ready);
    assert!(matches!(env.state(&b), OpState::InFlight { .. }));
    assert_eq!(env.s().recover(T0 + LEASE_MS).unwrap(), 0);
    assert_eq!(env.s().get(a.id).unwrap().unwrap().attempts, 1);
    let stats = env.s().stats().unwrap();
    assert_eq!((stats.ready, stats.in_flight), (1, 1));
    assert_eq!(env.claim_ids(T0 + LEASE_MS, 5), ids(&[&a]));
}

/// A retry is not claimable before its time, records the error, and is
/// reported by `next_wakeup`; the entity's later ops wait for it.
pub fn a_retry_waits_until_due_and_next_wakeup_reports_it(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a = normal("a", 1);
    let a2 = normal("a", 2);
    env.s()
        .enqueue_batch(vec![a.clone(), a2.clone()], T0)
        .unwrap();
    assert_eq!(env.s().next_wakeup().unwrap(), None);
    env.s().claim_ready(T0, 1).unwrap();
    env.s()
        .schedule_retry(a.id, T0 + 500, "timeout", T0 + 1)
        .unwrap();
    let got = env.s().get(a.id).unwrap().unwrap();
    assert_eq!(got.state, OpState::Waiting { until: T0 + 500 });
    assert_eq!(got.last_error.as_deref(), Some("timeout"));
    assert_eq!(env.s().next_wakeup().unwrap(), Some(T0 + 500));
    assert!(env.s().claim_ready(T0 + 499, 5).unwrap().is_empty());
    let c = env.s().claim_ready(T0 + 500, 5).unwrap();
    assert_eq!(c.iter().map(|c| c.op.id).collect::<Vec<_>>(), vec![a.id]);
    assert_eq!(c[0].attempt, 2);
    // Via complete(), too.
    env.s()
        .complete(
            &[Completion::Retry {
                id: a.id,
                at: T0 + 900,
                error: "503".into(),
            }],
            T0 + 600,
        )
        .unwrap();
    assert_eq!(env.s().next_wakeup().unwrap(), Some(T0 + 900));
    assert_eq!(env.s().stats().unwrap().waiting, 1);
    assert_eq!(env.s().pending().unwrap(), 2);
}

/// An op ready for longer than `aging_after` is claimed one level higher
/// (FIFO by seq among equals); Critical stays Critical.
pub fn aging_promotes_one_level(f: &dyn Factory) {
    use OperationPriority::*;
    let mut o = options();
    o.aging_after = Some(Duration::from_millis(1_000));
    let env = Env::new(f, o);
    let old_bg = op("a", Background, 1);
    env.s().enqueue(old_bg.clone(), T0).unwrap();
    let normal_new = op("b", Normal, 2);
    let high_new = op("c", High, 3);
    env.s()
        .enqueue_batch(vec![normal_new.clone(), high_new.clone()], T0 + 600)
        .unwrap();
    // At T0+999 nothing has aged: strict priority.
    let c = env.s().claim_ready(T0 + 999, 1).unwrap();
    assert_eq!(c[0].op.id, high_new.id);
    env.s()
        .complete(&[Completion::Release(high_new.id)], T0 + 999)
        .unwrap();
    // At T0+1000 the Background op aged to Normal; it is older than the
    // Normal one, so it goes first among Normal.
    let c = env.s().claim_ready(T0 + 1_000, 3).unwrap();
    assert_eq!(
        c.iter().map(|c| c.op.id).collect::<Vec<_>>(),
        ids(&[&high_new, &old_bg, &normal_new])
    );
    assert_eq!(c[1].effective_priority, Normal);
    assert_eq!(c[2].effective_priority, Normal);
    for c in &c {
        env.s().ack(c.op.id, T0 + 1_000).unwrap();
    }
    // Promotion is one level only, however long it waits.
    let late = op("d", Background, 4);
    let crit = op("e", Critical, 5);
    env.s()
        .enqueue_batch(vec![late.clone(), crit.clone()], T0 + 2_000)
        .unwrap();
    let c = env.s().claim_ready(T0 + 1_000_000, 2).unwrap();
    assert_eq!(c[0].op.id, crit.id);
    assert_eq!(c[0].effective_priority, Critical);
    assert_eq!(c[1].effective_priority, Normal);
}

/// Without aging, a Background op waits as long as higher work is ready.
pub fn priority_is_strict_without_aging(f: &dyn Factory) {
    use OperationPriority::*;
    let env = Env::new(f, options());
    let bg = op("a", Background, 1);
    let n = op("b", Normal, 2);
    env.s().enqueue(bg.clone(), T0).unwrap();
    env.s().enqueue(n.clone(), T0 + 1).unwrap();
    let c = env.s().claim_ready(T0 + 100_000_000, 1).unwrap();
    assert_eq!(c[0].op.id, n.id);
    assert_eq!(c[0].effective_priority, Normal);
}

/// A dead head blocks its entity (default policy) until revived (attempts
/// reset) or dropped.
pub fn a_dead_head_blocks_its_entity_until_revived(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a1 = normal("a", 1);
    let a2 = normal("a", 2);
    env.s()
        .enqueue_batch(vec![a1.clone(), a2.clone()], T0)
        .unwrap();
    env.s().claim_ready(T0, 1).unwrap();
    env.s().dead_letter(a1.id, "rejected: 422", T0 + 1).unwrap();
    assert_eq!(
        env.state(&a1),
        OpState::Dead {
            reason: "rejected: 422".into()
        }
    );
    assert!(env.s().claim_ready(T0 + 1, 5).unwrap().is_empty());
    let st = env.s().stats().unwrap();
    assert_eq!((st.dead, st.pending), (1, 1));
    assert!(env.s().revive(a1.id, T0 + 2).unwrap());
    assert!(
        !env.s().revive(a1.id, T0 + 2).unwrap(),
        "revive of a ready op"
    );
    assert!(!env.s().revive(normal("zz", 99).id, T0).unwrap());
    let got = env.s().get(a1.id).unwrap().unwrap();
    assert_eq!((got.attempts, got.state), (0, OpState::Ready));
    assert_eq!(env.claim_ids(T0 + 3, 5), ids(&[&a1]));
    env.s()
        .complete(
            &[Completion::Dead {
                id: a1.id,
                reason: "again".into(),
            }],
            T0 + 4,
        )
        .unwrap();
    assert!(env.s().drop_op(a1.id).unwrap());
    assert_eq!(env.claim_ids(T0 + 5, 5), ids(&[&a2]));
}

/// Under `SkipEntityHead` the next op of an entity proceeds past a dead one.
pub fn a_dead_head_is_skipped_under_skip_policy(f: &dyn Factory) {
    let mut o = options();
    o.dead_head = DeadHeadPolicy::SkipEntityHead;
    let env = Env::new(f, o);
    let a1 = normal("a", 1);
    let a2 = normal("a", 2);
    let a3 = normal("a", 3);
    env.s()
        .enqueue_batch(vec![a1.clone(), a2.clone(), a3.clone()], T0)
        .unwrap();
    env.s().claim_ready(T0, 1).unwrap();
    env.s().dead_letter(a1.id, "rejected", T0 + 1).unwrap();
    assert_eq!(env.claim_ids(T0 + 1, 5), ids(&[&a2]));
    // Still strict FIFO among the live ones: a3 waits for a2.
    env.s().ack(a2.id, T0 + 1).unwrap();
    assert_eq!(env.claim_ids(T0 + 2, 5), ids(&[&a3]));
    env.s().ack(a3.id, T0 + 1).unwrap();
    assert!(env.s().claim_ready(T0 + 3, 5).unwrap().is_empty());
    // A new op of the entity is claimable while the dead one stays parked.
    let a4 = normal("a", 4);
    env.s().enqueue(a4.clone(), T0 + 4).unwrap();
    assert_eq!(env.claim_ids(T0 + 4, 5), ids(&[&a4]));
    assert_eq!(env.s().stats().unwrap().dead, 1);
}

/// `drop_op` removes one op in any state; `drop_entity` every op of one
/// entity (dead and deferred included) and nothing else.
pub fn drop_op_and_drop_entity_remove_work(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a1 = normal("a", 1);
    let a2 = normal("a", 2);
    let a3 = normal("a", 3);
    let b1 = normal("b", 4);
    env.s()
        .enqueue_batch(vec![a1.clone(), a2.clone(), a3.clone(), b1.clone()], T0)
        .unwrap();
    assert!(env.s().drop_op(a2.id).unwrap());
    assert!(!env.s().drop_op(a2.id).unwrap());
    env.s().claim_ready(T0, 5).unwrap();
    env.s().dead_letter(a1.id, "x", T0 + 1).unwrap();
    assert_eq!(
        env.s().drop_entity(&EntityKey::new("notes", "a")).unwrap(),
        2
    );
    assert_eq!(
        env.s().drop_entity(&EntityKey::new("notes", "a")).unwrap(),
        0
    );
    assert!(env.s().get(a3.id).unwrap().is_none());
    assert!(env.s().get(b1.id).unwrap().is_some());
    let st = env.s().stats().unwrap();
    assert_eq!((st.pending, st.dead, st.in_flight), (1, 0, 1));
    // The entity is usable again.
    let a4 = normal("a", 5);
    env.s().enqueue(a4.clone(), T0).unwrap();
    assert_eq!(env.claim_ids(T0, 5), ids(&[&a4]));
}

/// One `complete` applies every kind of outcome; unknown ids are skipped.
pub fn complete_applies_a_mixed_batch_and_skips_unknown_ids(f: &dyn Factory) {
    let env = Env::new(f, options());
    let ops: Vec<Operation> = (1..=7).map(|n| normal(&format!("e{n}"), n)).collect();
    env.s().enqueue_batch(ops.clone(), T0).unwrap();
    assert_eq!(env.s().claim_ready(T0, 10).unwrap().len(), 7);
    let unknown = normal("zz", 99).id;
    env.s()
        .complete(
            &[
                Completion::Ack(ops[0].id),
                Completion::Retry {
                    id: ops[1].id,
                    at: T0 + 50,
                    error: "e".into(),
                },
                Completion::Dead {
                    id: ops[2].id,
                    reason: "r".into(),
                },
                Completion::Defer {
                    id: ops[3].id,
                    remote: remote(7),
                    reason: "deferred by the resolver".into(),
                },
                Completion::Resend {
                    id: ops[4].id,
                    base_version: Some(8),
                    payload: None,
                },
                Completion::Release(ops[5].id),
                Completion::Drop(ops[6].id),
                Completion::Ack(unknown),
            ],
            T0 + 10,
        )
        .unwrap();
    assert!(env.s().get(ops[0].id).unwrap().is_none());
    assert_eq!(env.state(&ops[1]), OpState::Waiting { until: T0 + 50 });
    assert_eq!(env.state(&ops[2]), OpState::Dead { reason: "r".into() });
    assert_eq!(env.state(&ops[3]), OpState::Deferred);
    assert_eq!(env.state(&ops[4]), OpState::Ready);
    assert_eq!(env.state(&ops[5]), OpState::Ready);
    assert!(env.s().get(ops[6].id).unwrap().is_none());
    let st = env.s().stats().unwrap();
    assert_eq!(
        (
            st.pending,
            st.ready,
            st.waiting,
            st.dead,
            st.deferred,
            st.in_flight
        ),
        (3, 2, 1, 1, 1, 0)
    );
    env.s().complete(&[], T0 + 11).unwrap();
}

/// `Postpone` makes the op wait like `Retry` but gives the claim's attempt
/// back (a failure that says nothing about the operation), and a deferred
/// conflict keeps its reason.
pub fn postpone_waits_and_gives_the_attempt_back(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a = normal("a", 1);
    let b = normal("b", 2);
    env.s()
        .enqueue_batch(vec![a.clone(), b.clone()], T0)
        .unwrap();
    for round in 0..3u64 {
        let now = T0 + round * 100;
        assert_eq!(env.s().claim_ready(now, 1).unwrap()[0].attempt, 1);
        env.s()
            .complete(
                &[Completion::Postpone {
                    id: a.id,
                    at: now + 50,
                    error: "offline".into(),
                }],
                now,
            )
            .unwrap();
        let got = env.s().get(a.id).unwrap().unwrap();
        assert_eq!(got.attempts, 0);
        assert_eq!(got.state, OpState::Waiting { until: now + 50 });
        assert_eq!(got.last_error.as_deref(), Some("offline"));
    }
    // Postponing an op that is not in flight does not lower its count.
    env.s().claim_ready(T0 + 1_000, 2).unwrap();
    env.s()
        .complete(
            &[Completion::Retry {
                id: b.id,
                at: T0 + 1_100,
                error: "e".into(),
            }],
            T0 + 1_000,
        )
        .unwrap();
    env.s()
        .complete(
            &[Completion::Postpone {
                id: b.id,
                at: T0 + 1_200,
                error: "p".into(),
            }],
            T0 + 1_001,
        )
        .unwrap();
    assert_eq!(env.s().get(b.id).unwrap().unwrap().attempts, 1);
    let stats = env.s().stats().unwrap();
    assert_eq!((stats.pending, stats.in_flight), (2, 1));
}

/// `ListFilter::after_seq` with `limit` reads a listing page by page, in
/// submission order, each operation once, with every filter.
pub fn listings_read_page_by_page_after_a_cursor(f: &dyn Factory) {
    let env = Env::new(f, options());
    let ops: Vec<_> = (0..10)
        .map(|n| normal(if n % 2 == 0 { "even" } else { "odd" }, n))
        .collect();
    env.s().enqueue_batch(ops.clone(), T0).unwrap();
    let dead: Vec<Completion> = [0usize, 3, 4, 7, 8]
        .iter()
        .map(|i| Completion::Dead {
            id: ops[*i].id,
            reason: "r".into(),
        })
        .collect();
    env.s().complete(&dead, T0).unwrap();
    let pages = |entity: Option<EntityKey>, dead: Option<bool>| {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = env
                .s()
                .list(&ListFilter {
                    entity: entity.clone(),
                    dead,
                    limit: Some(2),
                    after_seq: after,
                })
                .unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            out.extend(page.into_iter().map(|s| s.op.id));
        }
        out
    };
    let ids = |idx: &[usize]| idx.iter().map(|i| ops[*i].id).collect::<Vec<_>>();
    assert_eq!(pages(None, None), ids(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    assert_eq!(pages(None, Some(true)), ids(&[0, 3, 4, 7, 8]));
    assert_eq!(pages(None, Some(false)), ids(&[1, 2, 5, 6, 9]));
    assert_eq!(
        pages(Some(EntityKey::new("notes", "even")), None),
        ids(&[0, 2, 4, 6, 8])
    );
}

/// `list_deferred` pages by `seq` and the conflict log by its cursor
/// (newest first, with the entity filter): each item once, pages bounded.
pub fn deferred_and_conflict_log_read_page_by_page(f: &dyn Factory) {
    let env = Env::new(f, options());
    let ops: Vec<Operation> = (0..7).map(|n| normal(&format!("e{n}"), n)).collect();
    env.s().enqueue_batch(ops.clone(), T0).unwrap();
    env.s().claim_ready(T0, 10).unwrap();
    for (i, o) in ops.iter().enumerate() {
        env.s().defer(o.id, remote(i as u64), T0 + 1).unwrap();
    }
    let mut listed = Vec::new();
    let mut page = crate::Page::first(3);
    loop {
        let got = env.s().list_deferred(&page).unwrap();
        assert!(got.len() <= 3);
        let Some(last) = got.last() else { break };
        page = crate::Page::after(last.seq, 3);
        listed.extend(got.into_iter().map(|d| d.op.id));
    }
    assert_eq!(listed, ops.iter().map(|o| o.id).collect::<Vec<_>>());

    for n in 0..9 {
        let entity = if n % 3 == 0 { "third" } else { "other" };
        env.s().log_conflict(&conflict(entity, n, T0 + n)).unwrap();
    }
    let read = |entity: Option<EntityKey>| {
        let mut versions = Vec::new();
        let mut before = None;
        loop {
            let got = env
                .s()
                .conflict_entries(&ConflictFilter {
                    entity: entity.clone(),
                    limit: Some(2),
                    before,
                    ..ConflictFilter::default()
                })
                .unwrap();
            assert!(got.len() <= 2);
            let Some(last) = got.last() else { break };
            before = Some(last.cursor);
            versions.extend(got.into_iter().map(|e| e.entry.remote.version));
        }
        versions
    };
    assert_eq!(read(None), vec![8, 7, 6, 5, 4, 3, 2, 1, 0]);
    assert_eq!(read(Some(EntityKey::new("notes", "third"))), vec![6, 3, 0]);
}

/// `respread_waiting` moves each waiting operation due before its slot
/// (`base + respread_offset(seq, ..)`) to that slot, leaves later ones,
/// ready and in-flight ones alone, and agrees with `respread_offset` in
/// every backend (SQLite computes it in SQL).
pub fn respread_moves_only_waiting_ops_due_before_their_slot(f: &dyn Factory) {
    let env = Env::new(f, options());
    let ops: Vec<_> = (0..6).map(|n| normal(&format!("e{n}"), n)).collect();
    let seqs = env.s().enqueue_batch(ops.clone(), T0).unwrap();
    env.s().claim_ready(T0, 5).unwrap();
    // ops 0..4 wait: two due soon, two due far later; op 4 stays in flight;
    // op 5 stays ready.
    let untils = [T0 + 1, T0 + 2, T0 + 1_000_000, T0 + 2_000_000];
    let retries: Vec<Completion> = untils
        .iter()
        .enumerate()
        .map(|(i, at)| Completion::Retry {
            id: ops[i].id,
            at: *at,
            error: "offline".into(),
        })
        .collect();
    env.s().complete(&retries, T0).unwrap();
    let (base, spread, salt) = (T0 + 10_000, 5_000, 77);
    // Page by page (two operations a page), as the worker does it.
    let mut page = crate::Page::first(2);
    let mut moved = 0;
    let mut pages = 0;
    loop {
        let r = env.s().respread_waiting(base, spread, salt, &page).unwrap();
        moved += r.moved;
        pages += 1;
        assert!(pages <= 4, "six live operations are three full pages");
        match r.next {
            Some(next) => page = crate::Page::after(next, 2),
            None => break,
        }
    }
    assert_eq!(moved, 2);
    for (i, until) in untils.iter().enumerate() {
        let slot = base + crate::respread_offset(seqs[i], spread, salt);
        let want = if *until < slot { slot } else { *until };
        assert_eq!(
            env.state(&ops[i]),
            OpState::Waiting { until: want },
            "op {i}"
        );
        assert!(want >= base);
    }
    assert!(matches!(env.state(&ops[4]), OpState::InFlight { .. }));
    assert_eq!(env.state(&ops[5]), OpState::Ready);
    // Idempotent: a second pass moves nothing.
    let again = env
        .s()
        .respread_waiting(base, spread, salt, &crate::Page::ALL)
        .unwrap();
    assert_eq!(again, crate::Respread::default());
    let st = env.s().stats().unwrap();
    assert_eq!((st.waiting, st.in_flight, st.ready), (4, 1, 1));
}

/// `stats().blocked` counts the pending operations held behind a dead or
/// deferred head, which no claim can reach until the application acts.
pub fn blocked_counts_what_waits_behind_a_parked_head(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a1 = normal("a", 1);
    let a2 = normal("a", 2);
    let a3 = normal("a", 3);
    let b1 = normal("b", 4);
    let b2 = normal("b", 5);
    let c1 = normal("c", 6);
    for o in [&a1, &a2, &a3, &b1, &b2, &c1] {
        env.s().enqueue(o.clone(), T0).unwrap();
    }
    assert_eq!(env.s().stats().unwrap().blocked, 0);
    env.s().claim_ready(T0, 10).unwrap();
    env.s()
        .complete(
            &[
                Completion::Defer {
                    id: a1.id,
                    remote: remote(3),
                    reason: "r".into(),
                },
                Completion::Dead {
                    id: b1.id,
                    reason: "r".into(),
                },
                Completion::Ack(c1.id),
            ],
            T0 + 1,
        )
        .unwrap();
    let st = env.s().stats().unwrap();
    // a2, a3 wait behind the deferred a1; b2 behind the dead b1.
    assert_eq!((st.pending, st.blocked), (3, 3), "{st:?}");
    assert!(env.s().claim_ready(T0 + 2, 10).unwrap().is_empty());
    assert!(env.s().revive(b1.id, T0 + 3).unwrap());
    let st = env.s().stats().unwrap();
    assert_eq!((st.pending, st.blocked), (4, 2), "{st:?}");
}

/// `Release` makes the op ready at once and gives the attempt back.
pub fn release_gives_the_attempt_back(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a = normal("a", 1);
    env.s().enqueue(a.clone(), T0).unwrap();
    env.s().claim_ready(T0, 1).unwrap();
    env.s()
        .complete(&[Completion::Release(a.id)], T0 + 1)
        .unwrap();
    let got = env.s().get(a.id).unwrap().unwrap();
    assert_eq!((got.attempts, got.state), (0, OpState::Ready));
    // Releasing an op that is not in flight changes nothing.
    env.s()
        .complete(&[Completion::Release(a.id)], T0 + 2)
        .unwrap();
    assert_eq!(env.s().get(a.id).unwrap().unwrap().attempts, 0);
    let c = env.s().claim_ready(T0 + 2, 1).unwrap();
    assert_eq!(c[0].attempt, 1);
}

/// `Resend` makes the op ready now with the given base version and payload;
/// an oversized replacement refuses the whole batch.
pub fn resend_replaces_payload_and_base_version(f: &dyn Factory) {
    let env = Env::new(f, options());
    let a = normal("a", 1);
    let b = normal("b", 2);
    env.s()
        .enqueue_batch(vec![a.clone(), b.clone()], T0)
        .unwrap();
    env.s().claim_ready(T0, 2).unwrap();
    env.s()
        .complete(
            &[Completion::Resend {
                id: a.id,
                base_version: Some(42),
                payload: Some(b"merged".to_vec()),
            }],
            T0 + 1,
        )
        .unwrap();
    let got = env.s().get(a.id).unwrap().unwrap();
    assert_eq!(got.op.payload, b"merged");
    assert_eq!(got.op.base_version, Some(42));
    assert_eq!(got.state, OpState::Ready);
    assert_eq!(
        env.s().stats().unwrap().pending_bytes,
        6 + b.payload.len() as u64
    );
    let refused = env.s().complete(
        &[
            Completion::Ack(b.id),
            Completion::Resend {
                id: a.id,
                base_version: None,
                payload: Some(vec![0; 1025]),
            },
        ],
        T0 + 2,
    );
    assert!(matches!(refused, Err(StorageError::PayloadTooLarge { .. })));
    assert!(
        env.s().get(b.id).unwrap().is_some(),
        "a refused batch applied an ack"
    );
    let c = env.s().claim_ready(T0 + 3, 5).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].op.payload, b"merged");
}

/// Deferred conflicts block their entity, are listed with the remote
/// record, and are settled by each resolution.
pub fn deferred_conflicts_are_listed_and_settled(f: &dyn Factory) {
    let env = Env::new(f, options());
    let ops: Vec<Operation> = (1..=4).map(|n| normal(&format!("e{n}"), n)).collect();
    let later = normal("e1", 10);
    env.s().enqueue_batch(ops.clone(), T0).unwrap();
    env.s().enqueue(later.clone(), T0).unwrap();
    env.s().claim_ready(T0, 10).unwrap();
    for (i, o) in ops.iter().enumerate() {
        env.s().defer(o.id, remote(100 + i as u64), T0 + 1).unwrap();
    }
    assert!(
        env.s().claim_ready(T0 + 1, 10).unwrap().is_empty(),
        "deferred head must block"
    );
    let listed = env.s().list_deferred(&crate::Page::ALL).unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0].op, ops[0]);
    assert_eq!(listed[0].remote, remote(100));
    assert_eq!(listed[3].remote.version, 103);
    assert_eq!(
        listed[0].reason.as_deref(),
        Some("conflict with remote version 100")
    );
    let st = env.s().stats().unwrap();
    assert_eq!((st.deferred, st.pending), (4, 1));

    assert!(env
        .s()
        .settle(ops[0].id, Resolution::KeepLocal, T0 + 2)
        .unwrap());
    assert!(env
        .s()
        .settle(ops[1].id, Resolution::Merged(b"m".to_vec()), T0 + 2)
        .unwrap());
    assert!(env
        .s()
        .settle(ops[2].id, Resolution::KeepRemote, T0 + 2)
        .unwrap());
    assert!(env
        .s()
        .settle(ops[3].id, Resolution::Defer, T0 + 2)
        .unwrap());
    assert!(!env
        .s()
        .settle(ops[0].id, Resolution::KeepLocal, T0 + 2)
        .unwrap());
    assert!(!env
        .s()
        .settle(normal("zz", 99).id, Resolution::KeepLocal, T0)
        .unwrap());
    assert!(matches!(
        env.s()
            .settle(ops[3].id, Resolution::Merged(vec![0; 1025]), T0 + 2),
        Err(StorageError::PayloadTooLarge { .. })
    ));

    let kept = env.s().get(ops[0].id).unwrap().unwrap();
    assert_eq!(
        (kept.state, kept.op.base_version),
        (OpState::Ready, Some(100))
    );
    let merged = env.s().get(ops[1].id).unwrap().unwrap();
    assert_eq!(merged.op.payload, b"m");
    assert_eq!(merged.op.base_version, Some(101));
    assert!(env.s().get(ops[2].id).unwrap().is_none());
    assert_eq!(env.state(&ops[3]), OpState::Deferred);
    assert_eq!(env.s().list_deferred(&crate::Page::ALL).unwrap().len(), 1);
    assert_eq!(env.claim_ids(T0 + 3, 10), ids(&[&ops[0], &ops[1]]));
    // Revive also brings a deferred op back.
    assert!(env.s().revive(ops[3].id, T0 + 4).unwrap());
    assert!(env.s().list_deferred(&crate::Page::ALL).unwrap().is_empty());
}

fn conflict(entity: &str, n: u64, at: EpochMillis) -> ConflictRecord {
    let o = normal(entity, n);
    ConflictRecord {
        op_id: o.id,
        entity: o.entity.clone(),
        local_timestamp: o.timestamp,
        local_payload: o.payload.clone(),
        remote: remote(n),
        resolution: Resolution::KeepRemote,
        losing_payload: Some(o.payload),
        resolved_at_ms: at,
    }
}

/// The conflict log keeps the newest entries whose sizes add up to its
/// byte bound (the newest always), and says how many it dropped.
pub fn conflict_log_is_bounded_by_bytes(f: &dyn Factory) {
    let mut o = options();
    o.conflict_log_max_bytes = 3_000;
    let env = Env::new(f, o);
    let big = |n: u64| {
        let mut c = conflict("big", n, T0 + n);
        c.local_payload = vec![1; 400];
        c.losing_payload = Some(vec![1; 400]);
        c
    };
    let mut dropped = 0;
    for n in 0..10 {
        dropped += env.s().log_conflict(&big(n)).unwrap();
    }
    let kept = env.s().conflict_log(&ConflictFilter::default()).unwrap();
    // Each entry holds about 800 bytes of payloads: a 3,000-byte log keeps
    // two to three of the newest, and said it dropped the rest.
    assert!((2..=3).contains(&kept.len()), "{} entries kept", kept.len());
    assert_eq!(kept[0].remote.version, 9, "the newest stays");
    assert_eq!(dropped, 10 - kept.len() as u64);
    // One entry larger than the whole bound is still kept (alone).
    let mut huge = big(10);
    huge.local_payload = vec![2; 1024];
    huge.losing_payload = Some(vec![2; 1024]);
    huge.remote.payload = Some(vec![3; 1024]);
    env.s().log_conflict(&huge).unwrap();
    let kept = env.s().conflict_log(&ConflictFilter::default()).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0], huge);
}

/// The conflict log keeps the newest entries within its count and age
/// bounds, newest first, filtered by entity, since and limit.
pub fn conflict_log_is_bounded_by_count_and_age(f: &dyn Factory) {
    let mut o = options();
    o.conflict_log_max_entries = 5;
    o.conflict_log_max_age = Duration::from_millis(10_000);
    let env = Env::new(f, o);
    for n in 0..8 {
        let entity = if n % 2 == 0 { "even" } else { "odd" };
        env.s().log_conflict(&conflict(entity, n, T0 + n)).unwrap();
    }
    let all = env.s().conflict_log(&ConflictFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|e| e.remote.version).collect::<Vec<_>>(),
        vec![7, 6, 5, 4, 3]
    );
    assert_eq!(all[0], conflict("odd", 7, T0 + 7));
    let even = env
        .s()
        .conflict_log(&ConflictFilter {
            entity: Some(EntityKey::new("notes", "even")),
            ..ConflictFilter::default()
        })
        .unwrap();
    assert_eq!(
        even.iter().map(|e| e.remote.version).collect::<Vec<_>>(),
        vec![6, 4]
    );
    let recent = env
        .s()
        .conflict_log(&ConflictFilter {
            entity: None,
            since: Some(T0 + 5),
            limit: Some(2),
            ..ConflictFilter::default()
        })
        .unwrap();
    assert_eq!(
        recent.iter().map(|e| e.remote.version).collect::<Vec<_>>(),
        vec![7, 6]
    );
    // An entry 10 s newer than the rest ages them all out.
    env.s()
        .log_conflict(&conflict("odd", 20, T0 + 20_000))
        .unwrap();
    let all = env.s().conflict_log(&ConflictFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|e| e.remote.version).collect::<Vec<_>>(),
        vec![20]
    );
}

/// The clock mark starts empty, is stored, and never goes down.
pub fn clock_mark_never_goes_down(f: &dyn Factory) {
    let mut env = Env::new(f, options());
    assert_eq!(env.s().load_clock_mark().unwrap(), None);
    let hi = HlcTimestamp::new(T0 + 10, 3, NodeId(1));
    env.s().store_clock_mark(hi).unwrap();
    env.s()
        .store_clock_mark(HlcTimestamp::new(T0 + 9, 99, NodeId(1)))
        .unwrap();
    assert_eq!(env.s().load_clock_mark().unwrap(), Some(hi));
    let higher = HlcTimestamp::new(T0 + 10, 4, NodeId(1));
    env.s().store_clock_mark(higher).unwrap();
    assert_eq!(env.s().load_clock_mark().unwrap(), Some(higher));
    if f.durable() {
        env.reopen(T0);
        assert_eq!(env.s().load_clock_mark().unwrap(), Some(higher));
    }
}

/// A sync state value reads back, is replaced whole, survives a reopen;
/// bad keys and oversized values are refused without changing anything.
pub fn sync_state_is_replaced_and_kept(f: &dyn Factory) {
    let mut env = Env::new(f, options());
    assert_eq!(env.s().sync_state("pull", None).unwrap(), None);
    assert_eq!(
        env.s().sync_state("pull", Some(vec![1, 2, 3])).unwrap(),
        Some(vec![1, 2, 3])
    );
    env.s().sync_state("pull", Some(vec![9])).unwrap();
    env.s().sync_state("other", Some(Vec::new())).unwrap();
    assert_eq!(env.s().sync_state("pull", None).unwrap(), Some(vec![9]));
    let big = vec![7u8; crate::MAX_SYNC_STATE_BYTES + 1];
    for (key, value) in [
        ("", None),
        (&"k".repeat(65) as &str, None),
        ("pull", Some(big)),
    ] {
        assert!(
            matches!(
                env.s().sync_state(key, value),
                Err(StorageError::InvalidOption { .. })
            ),
            "key {key:?} must be refused"
        );
    }
    let max = vec![5u8; crate::MAX_SYNC_STATE_BYTES];
    env.s().sync_state("max", Some(max.clone())).unwrap();
    if f.durable() {
        env.reopen(T0);
        assert_eq!(env.s().sync_state("pull", None).unwrap(), Some(vec![9]));
        assert_eq!(env.s().sync_state("other", None).unwrap(), Some(Vec::new()));
        assert_eq!(env.s().sync_state("max", None).unwrap(), Some(max));
    }
}

/// Nothing is quarantined in a healthy store; purging an empty set is 0.
pub fn a_healthy_store_has_nothing_quarantined(f: &dyn Factory) {
    let env = Env::new(f, options());
    env.s().enqueue(normal("a", 1), T0).unwrap();
    env.s().claim_ready(T0, 1).unwrap();
    assert!(env
        .s()
        .list_quarantined(&crate::Page::ALL)
        .unwrap()
        .is_empty());
    assert_eq!(env.s().purge_quarantined().unwrap(), 0);
    assert_eq!(env.s().stats().unwrap().quarantined, 0);
}

/// `stats` counts by state, pending by priority and pending payload bytes.
pub fn stats_count_by_state_and_priority(f: &dyn Factory) {
    use OperationPriority::*;
    let env = Env::new(f, options());
    let ops = [
        op("a", Critical, 1),
        op("b", High, 2),
        op("c", Normal, 3),
        op("d", Background, 4),
        op("e", Background, 5),
        op("e", Normal, 6),
    ];
    env.s().enqueue_batch(ops.to_vec(), T0).unwrap();
    env.s().claim_ready(T0, 2).unwrap(); // a, b in flight
    env.s().dead_letter(ops[0].id, "x", T0 + 1).unwrap();
    env.s()
        .schedule_retry(ops[1].id, T0 + 10, "y", T0 + 1)
        .unwrap();
    let st = env.s().stats().unwrap();
    assert_eq!(st.pending, 5);
    assert_eq!(env.s().pending().unwrap(), 5);
    assert_eq!(
        (st.ready, st.in_flight, st.waiting, st.dead, st.deferred),
        (4, 0, 1, 1, 0)
    );
    assert_eq!(st.pending_by_priority, [2, 2, 1, 0]);
    let bytes: u64 = ops[1..].iter().map(|o| o.payload.len() as u64).sum();
    assert_eq!(st.pending_bytes, bytes);
    assert_eq!(st.quarantined, 0);
}

/// `list` returns ops in seq order, filtered by entity, dead and limit.
pub fn list_filters_by_entity_dead_and_limit(f: &dyn Factory) {
    let env = Env::new(f, options());
    let ops = [
        normal("a", 1),
        normal("b", 2),
        normal("a", 3),
        normal("c", 4),
    ];
    env.s().enqueue_batch(ops.to_vec(), T0).unwrap();
    env.s().claim_ready(T0, 1).unwrap();
    env.s().dead_letter(ops[0].id, "gone", T0 + 1).unwrap();
    let list = |filter: ListFilter| -> Vec<cpc_core::OperationId> {
        env.s()
            .list(&filter)
            .unwrap()
            .into_iter()
            .map(|s| s.op.id)
            .collect()
    };
    assert_eq!(
        list(ListFilter::default()),
        ids(&[&ops[0], &ops[1], &ops[2], &ops[3]])
    );
    assert_eq!(
        list(ListFilter {
            entity: Some(EntityKey::new("notes", "a")),
            ..ListFilter::default()
        }),
        ids(&[&ops[0], &ops[2]])
    );
    assert_eq!(
        list(ListFilter {
            dead: Some(true),
            ..ListFilter::default()
        }),
        ids(&[&ops[0]])
    );
    assert_eq!(
        list(ListFilter {
            dead: Some(false),
            limit: Some(2),
            ..ListFilter::default()
        }),
        ids(&[&ops[1], &ops[2]])
    );
    let full = env.s().list(&ListFilter::default()).unwrap();
    assert_eq!(full[0].last_error.as_deref(), Some("gone"));
    assert_eq!(full[0].attempts, 1);
}

/// `claim_ready` returns at most `limit` ops; 0 returns none and changes nothing.
pub fn claim_limit_is_respected(f: &dyn Factory) {
    let env = Env::new(f, options());
    let ops: Vec<Operation> = (0..20).map(|n| normal(&format!("e{n}"), n)).collect();
    env.s().enqueue_batch(ops.clone(), T0).unwrap();
    assert!(env.s().claim_ready(T0, 0).unwrap().is_empty());
    assert_eq!(env.s().stats().unwrap().in_flight, 0);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let c = env.s().claim_ready(T0, 7).unwrap();
        assert!(c.len() <= 7);
        seen.extend(c.into_iter().map(|c| c.op.id));
    }
    assert_eq!(seen, ops.iter().map(|o| o.id).collect::<Vec<_>>());
}

/// Enqueues from many threads (under each durability) are all stored once,
/// with distinct seqs, and per-thread order kept.
pub fn concurrent_enqueues_are_all_stored(f: &dyn Factory) {
    for durability in [
        Durability::Immediate,
        Durability::GroupCommit {
            max_delay: Duration::from_millis(2),
        },
    ] {
        let mut o = options();
        o.durability = durability;
        let env = Env::new(f, o);
        let store: &dyn QueueStorage = env.s();
        let seqs = Arc::new(std::sync::Mutex::new(Vec::new()));
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let seqs = Arc::clone(&seqs);
                scope.spawn(move || {
                    let mut last = 0;
                    for i in 0..10u64 {
                        let n = t * 100 + i;
                        let seq = store.enqueue(normal(&format!("t{t}"), n), T0).unwrap();
                        assert!(seq > last, "per-writer order lost");
                        last = seq;
                        seqs.lock().unwrap().push(seq);
                    }
                });
            }
        });
        let mut all = seqs.lock().unwrap().clone();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 80, "{durability:?}");
        assert_eq!(store.pending().unwrap(), 80);
        // Each writer's entity is delivered in its order.
        let claimed = store.claim_ready(T0, 100).unwrap();
        assert_eq!(claimed.len(), 8);
        let firsts: Vec<_> = (0..8u64)
            .map(|t| normal(&format!("t{t}"), t * 100).id)
            .collect();
        for c in &claimed {
            assert!(
                firsts.contains(&c.op.id),
                "a writer's later op was claimed first"
            );
        }
        assert!(matches!(
            store.enqueue(normal("t0", 0), T0),
            Err(StorageError::Duplicate(_))
        ));
    }
}

/// Every durability mode stores, claims and flushes.
pub fn every_durability_mode_stores_and_flushes(f: &dyn Factory) {
    for durability in [
        Durability::Immediate,
        Durability::GroupCommit {
            max_delay: Duration::from_millis(1),
        },
        Durability::Relaxed,
    ] {
        let mut o = options();
        o.durability = durability;
        let mut env = Env::new(f, o);
        let a = normal("a", 1);
        env.s().enqueue(a.clone(), T0).unwrap();
        env.s().flush().unwrap();
        if f.durable() {
            env.reopen(T0);
            assert_eq!(env.s().get(a.id).unwrap().unwrap().op, a, "{durability:?}");
        }
        assert_eq!(env.claim_ids(T0, 5), ids(&[&a]));
    }
}

/// Durable backends: after a reopen every op, state, attempt count, error,
/// deferred remote, dead letter and conflict entry is as it was.
pub fn reopen_keeps_every_state(f: &dyn Factory) {
    if !f.durable() {
        return;
    }
    let mut env = Env::new(f, options());
    let ops: Vec<Operation> = (1..=5).map(|n| normal(&format!("e{n}"), n)).collect();
    let tail = normal("e1", 9);
    env.s().enqueue_batch(ops.clone(), T0).unwrap();
    env.s().enqueue(tail.clone(), T0).unwrap();
    env.s().claim_ready(T0, 4).unwrap();
    env.s()
        .schedule_retry(ops[1].id, T0 + 77, "later", T0 + 1)
        .unwrap();
    env.s().dead_letter(ops[2].id, "bad", T0 + 1).unwrap();
    env.s().defer(ops[3].id, remote(5), T0 + 1).unwrap();
    env.s().log_conflict(&conflict("e4", 4, T0)).unwrap();
    let before = env.s().list(&ListFilter::default()).unwrap();
    let stats = env.s().stats().unwrap();
    // Reopen before the lease of ops[0] ends: it stays in flight.
    env.reopen(T0 + 1);
    assert_eq!(env.s().list(&ListFilter::default()).unwrap(), before);
    assert_eq!(env.s().stats().unwrap(), stats);
    assert_eq!(
        env.s().list_deferred(&crate::Page::ALL).unwrap()[0].remote,
        remote(5)
    );
    assert_eq!(
        env.s()
            .conflict_log(&ConflictFilter::default())
            .unwrap()
            .len(),
        1
    );
    assert_eq!(env.s().next_wakeup().unwrap(), Some(T0 + 77));
    // Claim order still holds after the reopen (the due retry is older).
    assert_eq!(env.claim_ids(T0 + 77, 10), ids(&[&ops[1], &ops[4]]));
}

/// Durable backends: leases that ended while closed are ready at open.
pub fn reopen_returns_expired_leases(f: &dyn Factory) {
    if !f.durable() {
        return;
    }
    let mut env = Env::new(f, options());
    let a = normal("a", 1);
    env.s().enqueue(a.clone(), T0).unwrap();
    env.s().claim_ready(T0, 1).unwrap();
    env.reopen(T0 + LEASE_MS);
    let got = env.s().get(a.id).unwrap().unwrap();
    assert_eq!((got.state, got.attempts), (OpState::Ready, 1));
    let c = env.s().claim_ready(T0 + LEASE_MS, 1).unwrap();
    assert_eq!(c[0].attempt, 2);
}

/// Durable backends: a second open of the same directory is `Locked` until
/// the first handle is dropped.
pub fn a_second_open_is_locked(f: &dyn Factory) {
    if !f.durable() {
        return;
    }
    let mut env = Env::new(f, options());
    match f.open(&env.path(), options(), T0) {
        Err(StorageError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    env.reopen(T0);
    env.s().enqueue(normal("a", 1), T0).unwrap();
}
