//! Model-based test: random sequences of enqueue / claim / complete (ack,
//! retry, dead, defer, resend, release, drop) / revive / settle / drop /
//! recover / reopen / time advance, run against each backend and against a
//! naive reference (a `Vec` and linear scans), comparing every answer and
//! the whole visible state after every step.

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cpc_storage::QueueStorageExt;
use std::time::Duration;

use cpc_core::{
    EntityKey, HlcTimestamp, NodeId, Operation, OperationId, OperationKind, OperationPriority,
    RemoteRecord, Resolution,
};
use cpc_storage::{
    Completion, DeadHeadPolicy, Durability, EpochMillis, ListFilter, MemoryStorage, OpState,
    QueueOptions, QueueStats, QueueStorage, SqliteStorage, StorageError,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

const T0: EpochMillis = 5_000_000;
const LEASE: u64 = 3_000;
const AGING: u64 = 2_000;
const MAX_PAYLOAD: usize = 48;

#[derive(Clone, Debug)]
enum Action {
    Enqueue(Vec<(u8, u8, u8)>),
    Claim(u8),
    Complete(Vec<(u16, u8, u16)>),
    Revive(u16),
    Settle(u16, u8),
    DropOp(u16),
    DropEntity(u8),
    Recover,
    Advance(u16),
    Reopen,
}

fn action() -> impl Strategy<Value = Action> {
    let new_op = (0u8..4, 0u8..4, 0u8..56);
    prop_oneof![
        4 => prop::collection::vec(new_op, 1..4).prop_map(Action::Enqueue),
        4 => (0u8..5).prop_map(Action::Claim),
        4 => prop::collection::vec((any::<u16>(), 0u8..9, 0u16..6000), 1..4).prop_map(Action::Complete),
        1 => any::<u16>().prop_map(Action::Revive),
        1 => (any::<u16>(), 0u8..4).prop_map(|(p, k)| Action::Settle(p, k)),
        1 => any::<u16>().prop_map(Action::DropOp),
        1 => (0u8..4).prop_map(Action::DropEntity),
        1 => Just(Action::Recover),
        3 => (0u16..4000).prop_map(Action::Advance),
        1 => Just(Action::Reopen),
    ]
}

// ------------------------------------------------------------ reference

#[derive(Clone, Debug)]
struct MOp {
    op: Operation,
    seq: u64,
    state: OpState,
    ready_at: EpochMillis,
    enqueued_at: EpochMillis,
    attempts: u32,
    last_error: Option<String>,
    remote: Option<RemoteRecord>,
}

/// The queue's rules, written as plainly as possible.
#[derive(Debug)]
struct Model {
    ops: Vec<MOp>,
    next_seq: u64,
    skip_dead: bool,
    aging: bool,
    /// Entries in the acked journal.
    acked: u64,
}

impl Model {
    fn find(&self, id: OperationId) -> Option<usize> {
        self.ops.iter().position(|m| m.op.id == id)
    }

    /// Index of the head of the entity of `ops[i]`.
    fn head_of(&self, entity: &EntityKey) -> Option<usize> {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, m)| &m.op.entity == entity)
            .filter(|(_, m)| !(self.skip_dead && matches!(m.state, OpState::Dead { .. })))
            .min_by_key(|(_, m)| m.seq)
            .map(|(i, _)| i)
    }

    fn heads(&self) -> Vec<usize> {
        let mut entities: Vec<&EntityKey> = self.ops.iter().map(|m| &m.op.entity).collect();
        entities.sort();
        entities.dedup();
        entities
            .into_iter()
            .filter_map(|e| self.head_of(e))
            .collect()
    }

    fn enqueue(&mut self, ops: &[Operation], now: EpochMillis) -> Result<Vec<u64>, String> {
        for (i, o) in ops.iter().enumerate() {
            if o.payload.len() > MAX_PAYLOAD {
                return Err("too large".into());
            }
            if self.find(o.id).is_some() || ops[..i].iter().any(|p| p.id == o.id) {
                return Err("duplicate".into());
            }
        }
        let mut seqs = Vec::new();
        for o in ops {
            seqs.push(self.next_seq);
            self.ops.push(MOp {
                op: o.clone(),
                seq: self.next_seq,
                state: OpState::Ready,
                ready_at: now,
                enqueued_at: now,
                attempts: 0,
                last_error: None,
                remote: None,
            });
            self.next_seq += 1;
        }
        Ok(seqs)
    }

    fn claim(
        &mut self,
        now: EpochMillis,
        limit: usize,
    ) -> Vec<(OperationId, u32, OperationPriority)> {
        if limit == 0 {
            return Vec::new();
        }
        // Due retries and ended leases of heads become ready.
        for i in self.heads() {
            let m = &mut self.ops[i];
            match m.state {
                OpState::Waiting { until } if until <= now => {
                    m.state = OpState::Ready;
                    m.ready_at = until;
                }
                OpState::InFlight { lease_until } if lease_until <= now => {
                    m.state = OpState::Ready;
                }
                _ => {}
            }
        }
        let mut due: Vec<(OperationPriority, u64, usize)> = self
            .heads()
            .into_iter()
            .filter(|&i| self.ops[i].state == OpState::Ready)
            .map(|i| {
                let m = &self.ops[i];
                let aged = self.aging && m.ready_at + AGING <= now;
                let eff = if aged {
                    m.op.priority.promoted()
                } else {
                    m.op.priority
                };
                (eff, m.seq, i)
            })
            .collect();
        due.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        due.into_iter()
            .take(limit)
            .map(|(eff, _, i)| {
                let m = &mut self.ops[i];
                m.state = OpState::InFlight {
                    lease_until: now + LEASE,
                };
                m.attempts += 1;
                (m.op.id, m.attempts, eff)
            })
            .collect()
    }

    fn complete(&mut self, cs: &[Completion], now: EpochMillis) -> Result<(), String> {
        for c in cs {
            if let Completion::Resend {
                payload: Some(p), ..
            } = c
            {
                if p.len() > MAX_PAYLOAD {
                    return Err("too large".into());
                }
            }
        }
        for c in cs {
            let Some(i) = self.find(c.id()) else { continue };
            let m = &mut self.ops[i];
            match c {
                Completion::Ack(_) | Completion::AckAt { .. } => {
                    self.ops.remove(i);
                    self.acked += 1;
                    continue;
                }
                Completion::Drop(_) => {
                    self.ops.remove(i);
                    continue;
                }
                Completion::Retry { at, error, .. } => {
                    m.state = OpState::Waiting { until: *at };
                    m.last_error = Some(error.clone());
                }
                Completion::Dead { reason, .. } => {
                    m.state = OpState::Dead {
                        reason: reason.clone(),
                    };
                    m.last_error = Some(reason.clone());
                }
                Completion::Defer { remote, reason, .. } => {
                    m.state = OpState::Deferred;
                    m.remote = Some(remote.clone());
                    m.last_error = Some(reason.clone());
                    continue;
                }
                Completion::Postpone { at, error, .. } => {
                    if matches!(m.state, OpState::InFlight { .. }) {
                        m.attempts = m.attempts.saturating_sub(1);
                    }
                    m.state = OpState::Waiting { until: *at };
                    m.last_error = Some(error.clone());
                }
                Completion::Resend {
                    base_version,
                    payload,
                    ..
                } => {
                    m.op.base_version = *base_version;
                    if let Some(p) = payload {
                        m.op.payload = p.clone();
                    }
                    m.state = OpState::Ready;
                    m.ready_at = now;
                }
                Completion::Release(_) => {
                    if !matches!(m.state, OpState::InFlight { .. }) {
                        continue;
                    }
                    m.state = OpState::Ready;
                    m.attempts = m.attempts.saturating_sub(1);
                }
            }
            m.remote = None;
        }
        // The journal is pruned in steps: past an eighth over, back to the cap.
        let cap = cpc_storage::ACKED_IDS_KEPT;
        if self.acked > cap + cap / 8 {
            self.acked = cap;
        }
        Ok(())
    }

    fn revive(&mut self, id: OperationId, now: EpochMillis) -> bool {
        let Some(i) = self.find(id) else { return false };
        let m = &mut self.ops[i];
        if !matches!(m.state, OpState::Dead { .. } | OpState::Deferred) {
            return false;
        }
        m.state = OpState::Ready;
        m.attempts = 0;
        m.ready_at = now;
        m.remote = None;
        true
    }

    fn settle(
        &mut self,
        id: OperationId,
        r: &Resolution,
        now: EpochMillis,
    ) -> Result<bool, String> {
        if let Resolution::Merged(p) = r {
            if p.len() > MAX_PAYLOAD {
                return Err("too large".into());
            }
        }
        let Some(i) = self.find(id) else {
            return Ok(false);
        };
        if self.ops[i].state != OpState::Deferred {
            return Ok(false);
        }
        let version = self.ops[i].remote.as_ref().map(|r| r.version);
        match r {
            Resolution::Defer => {}
            Resolution::KeepRemote => {
                self.ops.remove(i);
            }
            Resolution::KeepLocal => {
                self.complete(
                    &[Completion::Resend {
                        id,
                        base_version: version,
                        payload: None,
                    }],
                    now,
                )?;
            }
            Resolution::Merged(p) => {
                self.complete(
                    &[Completion::Resend {
                        id,
                        base_version: version,
                        payload: Some(p.clone()),
                    }],
                    now,
                )?;
            }
        }
        if let Some(i) = self.find(id) {
            if !matches!(r, Resolution::Defer) {
                self.ops[i].attempts = 0;
            }
        }
        Ok(true)
    }

    fn recover(&mut self, now: EpochMillis) -> u64 {
        let mut n = 0;
        for m in &mut self.ops {
            if let OpState::InFlight { lease_until } = m.state {
                if lease_until <= now {
                    m.state = OpState::Ready;
                    n += 1;
                }
            }
        }
        n
    }

    fn next_wakeup(&self) -> Option<EpochMillis> {
        self.heads()
            .into_iter()
            .filter_map(|i| match self.ops[i].state {
                OpState::InFlight { lease_until } => Some(lease_until),
                OpState::Waiting { until } => Some(until),
                _ => None,
            })
            .min()
    }

    fn stats(&self) -> QueueStats {
        let mut s = QueueStats {
            acked_journal: self.acked,
            ..QueueStats::default()
        };
        for m in &self.ops {
            let pending = match m.state {
                OpState::Ready => {
                    s.ready += 1;
                    true
                }
                OpState::InFlight { .. } => {
                    s.in_flight += 1;
                    true
                }
                OpState::Waiting { .. } => {
                    s.waiting += 1;
                    true
                }
                OpState::Dead { .. } => {
                    s.dead += 1;
                    false
                }
                OpState::Deferred => {
                    s.deferred += 1;
                    false
                }
            };
            if pending {
                s.pending += 1;
                s.pending_by_priority[usize::from(m.op.priority.rank())] += 1;
                s.pending_bytes += m.op.payload.len() as u64;
            }
        }
        // Pending operations behind a dead (when not skipped) or deferred head.
        for m in &self.ops {
            let pending = matches!(
                m.state,
                OpState::Ready | OpState::InFlight { .. } | OpState::Waiting { .. }
            );
            let blocked = self.head_of(&m.op.entity).is_some_and(|h| {
                matches!(self.ops[h].state, OpState::Dead { .. } | OpState::Deferred)
            });
            if pending && blocked {
                s.blocked += 1;
            }
        }
        s
    }
}

// ---------------------------------------------------------------- driver

type Open = dyn Fn(&std::path::Path, QueueOptions, EpochMillis) -> Box<dyn QueueStorage>;

fn new_op(n: u64, entity: u8, prio: u8, len: u8) -> Operation {
    Operation::builder(
        EntityKey::new("things", format!("e{entity}")),
        OperationKind::Update,
    )
    .payload(vec![n as u8; usize::from(len)])
    .priority(OperationPriority::from_rank(prio).unwrap())
    .build_at(
        HlcTimestamp::new(T0 + n, 0, NodeId(1)),
        &mut StdRng::seed_from_u64(n),
    )
}

fn pick(model: &Model, p: u16) -> OperationId {
    let mut ids: Vec<(u64, OperationId)> = model.ops.iter().map(|m| (m.seq, m.op.id)).collect();
    ids.sort();
    // One pick in eight names an id that is not stored.
    if ids.is_empty() || p % 8 == 7 {
        return new_op(100_000 + u64::from(p), 0, 0, 0).id;
    }
    ids[usize::from(p) % ids.len()].1
}

fn remote(v: u64) -> RemoteRecord {
    RemoteRecord {
        version: v,
        timestamp: HlcTimestamp::new(T0, 0, NodeId(9)),
        payload: Some(vec![1, 2, 3]),
        node: NodeId(9),
    }
}

fn completion(model: &Model, (p, kind, arg): (u16, u8, u16), now: EpochMillis) -> Completion {
    let id = pick(model, p);
    match kind {
        0 => Completion::Ack(id),
        1 => Completion::Retry {
            id,
            at: now + u64::from(arg),
            error: format!("e{arg}"),
        },
        2 => Completion::Dead {
            id,
            reason: format!("r{arg}"),
        },
        3 => Completion::Defer {
            id,
            remote: remote(u64::from(arg)),
            reason: format!("d{arg}"),
        },
        7 => Completion::Postpone {
            id,
            at: now + u64::from(arg),
            error: format!("p{arg}"),
        },
        4 => Completion::Resend {
            id,
            base_version: Some(u64::from(arg)),
            payload: (arg % 2 == 0).then(|| vec![9; usize::from(arg % 60)]),
        },
        5 => Completion::Release(id),
        6 => Completion::Drop(id),
        _ => Completion::Resend {
            id,
            base_version: None,
            payload: None,
        },
    }
}

fn check_state(store: &dyn QueueStorage, model: &Model, step: usize) -> Result<(), TestCaseError> {
    let mut expected: Vec<&MOp> = model.ops.iter().collect();
    expected.sort_by_key(|m| m.seq);
    let got = store.list(&ListFilter::default()).unwrap();
    prop_assert_eq!(got.len(), expected.len(), "step {}: op count", step);
    for (g, m) in got.iter().zip(expected) {
        prop_assert_eq!(&g.op, &m.op, "step {}", step);
        prop_assert_eq!(g.seq, m.seq, "step {}", step);
        prop_assert_eq!(&g.state, &m.state, "step {}: state of seq {}", step, m.seq);
        prop_assert_eq!(
            g.attempts,
            m.attempts,
            "step {}: attempts of seq {}",
            step,
            m.seq
        );
        prop_assert_eq!(&g.last_error, &m.last_error, "step {}", step);
        prop_assert_eq!(g.enqueued_at, m.enqueued_at, "step {}", step);
    }
    prop_assert_eq!(
        store.stats().unwrap(),
        model.stats(),
        "step {}: stats",
        step
    );
    prop_assert_eq!(
        store.pending().unwrap(),
        model.stats().pending,
        "step {}",
        step
    );
    prop_assert_eq!(
        store.next_wakeup().unwrap(),
        model.next_wakeup(),
        "step {}: next wakeup",
        step
    );
    let deferred: Vec<(OperationId, RemoteRecord)> = store
        .list_deferred(&cpc_storage::Page::ALL)
        .unwrap()
        .into_iter()
        .map(|d| (d.op.id, d.remote))
        .collect();
    let mut want: Vec<&MOp> = model
        .ops
        .iter()
        .filter(|m| m.state == OpState::Deferred)
        .collect();
    want.sort_by_key(|m| m.seq);
    let want: Vec<(OperationId, RemoteRecord)> = want
        .into_iter()
        .map(|m| (m.op.id, m.remote.clone().unwrap()))
        .collect();
    prop_assert_eq!(deferred, want, "step {}: deferred", step);
    Ok(())
}

fn run(
    open: &Open,
    durable: bool,
    actions: Vec<Action>,
    skip_dead: bool,
    aging: bool,
) -> Result<(), TestCaseError> {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let path = dir.path().join("q");
    let options = QueueOptions {
        durability: Durability::Relaxed,
        lease_timeout: Duration::from_millis(LEASE),
        aging_after: aging.then_some(Duration::from_millis(AGING)),
        dead_head: if skip_dead {
            DeadHeadPolicy::SkipEntityHead
        } else {
            DeadHeadPolicy::BlockEntity
        },
        max_payload: MAX_PAYLOAD,
        conflict_log_max_entries: 10,
        conflict_log_max_age: Duration::from_secs(60),
        conflict_log_max_bytes: cpc_storage::DEFAULT_CONFLICT_LOG_MAX_BYTES,
        allow_shared_directory: false,
        secure_delete: true,
        retain_acked: None,
    };
    let mut store = Some(open(&path, options.clone(), T0));
    let mut model = Model {
        ops: Vec::new(),
        next_seq: 1,
        skip_dead,
        aging,
        acked: 0,
    };
    let mut now = T0;
    let mut n = 0u64;
    for (step, a) in actions.into_iter().enumerate() {
        let s = store.as_deref().unwrap();
        match a {
            Action::Enqueue(specs) => {
                let ops: Vec<Operation> = specs
                    .iter()
                    .map(|&(e, p, l)| {
                        n += 1;
                        new_op(n, e, p, l)
                    })
                    .collect();
                let want = model.enqueue(&ops, now);
                let got = if ops.len() == 1 {
                    s.enqueue(ops[0].clone(), now).map(|q| vec![q])
                } else {
                    s.enqueue_batch(ops, now)
                };
                match (got, want) {
                    (Ok(g), Ok(w)) => prop_assert_eq!(g, w, "step {}", step),
                    (Err(StorageError::PayloadTooLarge { .. }), Err(_)) => {}
                    (g, w) => {
                        prop_assert!(false, "step {}: enqueue {:?} vs model {:?}", step, g, w)
                    }
                }
            }
            Action::Claim(limit) => {
                let got: Vec<(OperationId, u32, OperationPriority)> = s
                    .claim_ready(now, usize::from(limit))
                    .unwrap()
                    .into_iter()
                    .map(|c| (c.op.id, c.attempt, c.effective_priority))
                    .collect();
                prop_assert_eq!(
                    got,
                    model.claim(now, usize::from(limit)),
                    "step {}: claim",
                    step
                );
            }
            Action::Complete(specs) => {
                let cs: Vec<Completion> = specs
                    .into_iter()
                    .map(|c| completion(&model, c, now))
                    .collect();
                let want = model.complete(&cs, now);
                match (s.complete(&cs, now), want) {
                    (Ok(()), Ok(())) => {}
                    (Err(StorageError::PayloadTooLarge { .. }), Err(_)) => {}
                    (g, w) => {
                        prop_assert!(false, "step {}: complete {:?} vs model {:?}", step, g, w)
                    }
                }
            }
            Action::Revive(p) => {
                let id = pick(&model, p);
                prop_assert_eq!(
                    s.revive(id, now).unwrap(),
                    model.revive(id, now),
                    "step {}",
                    step
                );
            }
            Action::Settle(p, k) => {
                let id = pick(&model, p);
                let r = match k {
                    0 => Resolution::KeepLocal,
                    1 => Resolution::KeepRemote,
                    2 => Resolution::Merged(vec![5; usize::from(p % 60)]),
                    _ => Resolution::Defer,
                };
                let want = model.settle(id, &r, now);
                match (s.settle(id, r, now), want) {
                    (Ok(g), Ok(w)) => prop_assert_eq!(g, w, "step {}: settle", step),
                    (Err(StorageError::PayloadTooLarge { .. }), Err(_)) => {}
                    (g, w) => prop_assert!(false, "step {}: settle {:?} vs model {:?}", step, g, w),
                }
            }
            Action::DropOp(p) => {
                let id = pick(&model, p);
                let want = model.find(id).map(|i| model.ops.remove(i)).is_some();
                prop_assert_eq!(s.drop_op(id).unwrap(), want, "step {}", step);
            }
            Action::DropEntity(e) => {
                let key = EntityKey::new("things", format!("e{e}"));
                let before = model.ops.len();
                model.ops.retain(|m| m.op.entity != key);
                let want = (before - model.ops.len()) as u64;
                prop_assert_eq!(s.drop_entity(&key).unwrap(), want, "step {}", step);
            }
            Action::Recover => {
                prop_assert_eq!(s.recover(now).unwrap(), model.recover(now), "step {}", step);
            }
            Action::Advance(ms) => now += u64::from(ms),
            Action::Reopen => {
                if durable {
                    // Close before reopening: the directory is locked.
                    drop(store.take());
                    store = Some(open(&path, options.clone(), now));
                } else {
                    store.as_deref().unwrap().recover(now).unwrap();
                }
                model.recover(now);
            }
        }
        check_state(store.as_deref().unwrap(), &model, step)?;
    }
    Ok(())
}

fn memory(_: &std::path::Path, o: QueueOptions, now: EpochMillis) -> Box<dyn QueueStorage> {
    let s = MemoryStorage::new(o);
    s.recover(now).unwrap();
    Box::new(s)
}

fn sqlite(p: &std::path::Path, o: QueueOptions, now: EpochMillis) -> Box<dyn QueueStorage> {
    Box::new(SqliteStorage::open_at(p, o, now).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn memory_matches_the_model(
        actions in prop::collection::vec(action(), 1..60),
        skip in any::<bool>(),
        aging in any::<bool>(),
    ) {
        run(&memory, false, actions, skip, aging)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn sqlite_matches_the_model(
        actions in prop::collection::vec(action(), 1..60),
        skip in any::<bool>(),
        aging in any::<bool>(),
    ) {
        run(&sqlite, true, actions, skip, aging)?;
    }
}

/// The model test can fail: a store that forgets per-entity order (here,
/// a reference run against a model with the skip policy while the store
/// blocks) is caught.
#[test]
fn the_checker_catches_a_policy_mismatch() {
    let actions = vec![
        Action::Enqueue(vec![(0, 1, 1), (0, 1, 1)]),
        Action::Claim(1),
        Action::Complete(vec![(0, 2, 0)]),
        Action::Claim(2),
    ];
    let blocking_store = |p: &std::path::Path, mut o: QueueOptions, now| {
        o.dead_head = DeadHeadPolicy::BlockEntity;
        memory(p, o, now)
    };
    assert!(run(&blocking_store, false, actions.clone(), true, false).is_err());
    assert!(run(&memory, false, actions, true, false).is_ok());
}
