//! The queue's rules, written once over a small table interface ([`Tx`])
//! that each backend implements on its own indexes: the in-memory backend on
//! `BTreeMap`/`BTreeSet`, the SQLite backend on tables and partial indexes.
//!
//! # Heads
//! Every entity with undelivered work has exactly one *head*: its oldest
//! operation (by `seq`), or under [`DeadHeadPolicy::SkipEntityHead`] its
//! oldest operation that is not dead. Only heads are indexed for claiming,
//! in one of three places, kept in the same transaction as the record:
//! - *due* (`Head::Due`), ordered by (effective priority desc, seq): a
//!   `Ready` head, claimable now;
//! - *timed* (`Head::Timed`), ordered by (wake-up instant, seq): a head that
//!   is waiting for a retry or in flight; it becomes due when its instant
//!   passes (the next claim moves it, oldest first);
//! - *blocked* (`Head::Blocked`): a dead or deferred head; its entity waits.
//!
//! A due head that can still age is also in the *aging* index, ordered by
//! (ready-since, seq); a claim promotes the ones ready for longer than
//! `aging_after` by one level. So a claim costs O((batch + promotions) ·
//! log n): it reads only the first entries of ordered indexes. Moving timed
//! heads and promoting aged ones is bounded per claim by
//! [`transitions_per_claim`] so no single claim pays for a whole backlog;
//! the rest are moved by the following claims, oldest first.
//!
//! # Invariant
//! At every transaction boundary the entity's marked head is
//! `first_in_entity(entity, skip_dead)`, and its head kind matches its
//! state. Every mutation below goes through [`fix_head`] for each entity it
//! touches.

use cpc_core::envelope::{self, RecordKind};
use cpc_core::{
    EnvelopeError, Operation, OperationId, OperationPriority, RemoteRecord, Resolution,
};

use crate::api::{
    Amend, Claimed, Completion, DeadHeadPolicy, EpochMillis, ListFilter, OpState, QuarantineNotice,
    QueueOptions, QueueStats, StoredOperation,
};
use crate::error::{Result, StorageError};

mod amend;
mod coalesce;
mod counters;
mod journal;
mod limits;
mod quarantine;
mod read;

pub(crate) use self::amend::*;
pub(crate) use self::coalesce::*;
pub(crate) use self::counters::*;
pub(crate) use self::journal::*;
pub(crate) use self::limits::*;
pub(crate) use self::quarantine::*;
pub(crate) use self::read::*;

/// Upper bound on timed heads made due, and on aged heads promoted, by one
/// claim (each): `4 × limit + 64`, at most [`MAX_TRANSITIONS_PER_CLAIM`].
/// A multiple of the batch, so in steady state every due head is seen by the
/// next claim, while a backlog (a long outage ends, thousands of retries
/// fall due at once) is worked off over several claims, oldest first,
/// instead of stalling one.
pub(crate) fn transitions_per_claim(limit: usize) -> usize {
    limit
        .saturating_mul(4)
        .saturating_add(64)
        .min(MAX_TRANSITIONS_PER_CLAIM)
}

/// Cap of [`transitions_per_claim`].
pub(crate) const MAX_TRANSITIONS_PER_CLAIM: usize = 4096;

/// Where a head is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// Claimable now, at `eff`; `aging` if it may still be promoted.
    Due {
        /// Effective priority (the op's, or one above once aged).
        eff: OperationPriority,
        /// In the aging index.
        aging: bool,
    },
    /// Waiting for a retry or a lease to end (`OpMeta::wake_at`).
    Timed,
    /// Dead or deferred: its entity waits.
    Blocked,
}

/// The bookkeeping of one stored operation (everything but the operation
/// itself, which a backend may keep encoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OpMeta {
    pub seq: u64,
    pub id: OperationId,
    /// `EntityKey::to_key_bytes` of the operation's entity.
    pub entity: Vec<u8>,
    pub priority: OperationPriority,
    pub state: OpState,
    /// Since when it is ready: the aging clock.
    pub ready_at: EpochMillis,
    pub enqueued_at: EpochMillis,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub payload_len: u64,
    /// `Some` if it is its entity's head.
    pub head: Option<Head>,
    /// It was claimed at least once (or put back from the acked journal):
    /// it may have reached the remote, so it is never coalesced into.
    /// Never cleared; a released claim keeps it.
    pub claimed: bool,
}

impl OpMeta {
    /// The instant a timed head becomes due (lease end or retry time).
    pub(crate) fn wake_at(&self) -> Option<EpochMillis> {
        match self.state {
            OpState::InFlight { lease_until } => Some(lease_until),
            OpState::Waiting { until } => Some(until),
            _ => None,
        }
    }

    fn is_pending(&self) -> bool {
        matches!(
            self.state,
            OpState::Ready | OpState::InFlight { .. } | OpState::Waiting { .. }
        )
    }
}

/// A stored value as read back: decoded, or found corrupt with its raw bytes.
#[derive(Debug)]
pub(crate) enum Loaded<T> {
    Ok(T),
    Corrupt { raw: Vec<u8>, error: EnvelopeError },
}

/// Which metas [`Tx::list_metas`] returns (in `seq` order).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MetaFilter<'a> {
    pub entity: Option<&'a [u8]>,
    pub dead: Option<bool>,
    pub deferred_only: bool,
    pub limit: Option<usize>,
    /// Only operations with a greater `seq` (a page's cursor).
    pub after: Option<u64>,
}

impl<'a> MetaFilter<'a> {
    /// The metas of a [`ListFilter`] listing (`entity`: its entity's key
    /// bytes).
    pub(crate) fn listing(filter: &ListFilter, entity: Option<&'a [u8]>) -> MetaFilter<'a> {
        MetaFilter {
            entity,
            dead: filter.dead,
            deferred_only: false,
            limit: filter.limit,
            after: filter.after_seq,
        }
    }
}

/// The table operations of one transaction. Every method sees the writes
/// made earlier in the same transaction. Index maintenance (due, timed,
/// aging, in-flight, parked, by entity, by id) is the implementation's job,
/// derived from the `OpMeta` it is given.
///
/// Every method is used by the rules for every backend; nothing here is
/// one backend's need (those stay in the backend's own transaction type).
pub(crate) trait Tx {
    /// The bookkeeping of one operation by id (to complete, revive, drop or
    /// repair it).
    fn meta_by_id(&mut self, id: OperationId) -> Result<Option<OpMeta>>;
    /// Whether an operation with this id is stored (a cheaper
    /// [`Tx::meta_by_id`] where only presence matters).
    fn contains_id(&mut self, id: OperationId) -> Result<bool> {
        Ok(self.meta_by_id(id)?.is_some())
    }
    /// Whether the entity has a head: any operation, or with `skip_dead`
    /// any non-dead one (a cheaper [`Tx::first_in_entity`]).
    fn has_head(&mut self, entity: &[u8], skip_dead: bool) -> Result<bool> {
        Ok(self.first_in_entity(entity, skip_dead)?.is_some())
    }
    /// The entity's oldest operation (its oldest non-dead one if `skip_dead`).
    fn first_in_entity(&mut self, entity: &[u8], skip_dead: bool) -> Result<Option<OpMeta>>;
    /// The entity's newest operation, in any state (what a coalescing
    /// enqueue looks at).
    fn last_in_entity(&mut self, entity: &[u8]) -> Result<Option<OpMeta>>;
    /// Bookkeeping in seq order, filtered (listings, recounts, re-spread):
    /// never an operation body.
    fn list_metas(&mut self, filter: MetaFilter<'_>) -> Result<Vec<OpMeta>>;
    /// Stores a new operation and its bookkeeping, last in its entity.
    fn insert(&mut self, meta: &OpMeta, op: &Operation) -> Result<()>;
    /// Stores an operation put back from the acked journal: its `seq` may
    /// be below those of its entity's stored operations, and it takes its
    /// place among them in `seq` order.
    fn insert_in_order(&mut self, meta: &OpMeta, op: &Operation) -> Result<()>;
    /// The `n` of the newest acked journal entry (0 when none).
    fn journal_last(&mut self) -> Result<u64>;
    /// Stores acked journal entry `n`, acknowledged at `at`.
    fn journal_put(&mut self, n: u64, at: EpochMillis, body: Vec<u8>) -> Result<()>;
    /// Up to `limit` journal entries with `n > after`, oldest first; their
    /// bodies only if `bodies`.
    fn journal_scan(&mut self, after: u64, limit: usize, bodies: bool) -> Result<Vec<JournalRow>>;
    /// Removes the journal entries with `n <= upto`.
    fn journal_remove_upto(&mut self, upto: u64) -> Result<()>;
    /// Replaces an operation's bookkeeping (`old` is what is stored, so a
    /// backend moves its index entries from the old state to the new).
    fn update(&mut self, old: &OpMeta, new: &OpMeta) -> Result<()>;
    /// Replaces the stored operation (payload or base version changed).
    fn update_op(&mut self, meta: &OpMeta, op: &Operation) -> Result<()>;
    /// Stores (or clears) the remote record of a deferred conflict.
    fn set_remote(&mut self, meta: &OpMeta, remote: Option<&RemoteRecord>) -> Result<()>;
    /// Removes an operation, its bookkeeping and its remote record, and
    /// unlinks it from its entity.
    fn delete(&mut self, meta: &OpMeta) -> Result<()>;
    /// The operation's body, decoded and checked, or its raw bytes when
    /// they are damaged.
    fn load_op(&mut self, meta: &OpMeta) -> Result<Loaded<Operation>>;
    /// The remote record of a deferred conflict, if one is stored.
    fn load_remote(&mut self, meta: &OpMeta) -> Result<Option<Loaded<RemoteRecord>>>;
    /// The stored bytes of the operation (for quarantine).
    fn raw_op(&mut self, meta: &OpMeta) -> Result<Vec<u8>>;
    /// Keeps `raw` in the quarantine set under `key`. The operation itself
    /// stays stored (the rules park it as dead, so its entity's order
    /// holds).
    fn quarantine(
        &mut self,
        meta: &OpMeta,
        raw: Vec<u8>,
        reason: String,
        at: EpochMillis,
    ) -> Result<()>;
    /// Deletes every quarantined record; returns how many there were.
    fn purge_quarantine(&mut self) -> Result<u64>;
    /// Due heads by (effective priority desc, seq).
    fn due_heads(&mut self, limit: usize) -> Result<Vec<OpMeta>>;
    /// Timed heads with wake-up at or before `now`, by (wake-up, seq).
    fn timed_heads_upto(&mut self, now: EpochMillis, limit: usize) -> Result<Vec<OpMeta>>;
    /// Due heads still aging with ready-since at or before `cutoff`.
    fn aging_heads_upto(&mut self, cutoff: EpochMillis, limit: usize) -> Result<Vec<OpMeta>>;
    /// The earliest wake-up of a timed head (retry due or lease end), for
    /// `next_wakeup`.
    fn min_timed(&mut self) -> Result<Option<EpochMillis>>;
    /// In-flight operations whose lease ended at or before `now`.
    fn expired_leases(&mut self, now: EpochMillis) -> Result<Vec<OpMeta>>;
    /// The queue's counters, written in the same transaction as the
    /// changes they count.
    fn counters(&mut self) -> &mut Counters;
    /// Notices of what this transaction quarantined, handed to
    /// [`QueueStorage::take_quarantine_notices`](crate::QueueStorage::take_quarantine_notices)
    /// once it commits.
    fn notices(&mut self) -> &mut Vec<QuarantineNotice>;
}

/// Maps `Operation::validate` to this crate's errors.
pub(crate) fn validate(op: &Operation, max_payload: usize) -> Result<()> {
    op.validate(max_payload).map_err(|e| match e {
        cpc_core::Error::PayloadTooLarge { size, max } => {
            StorageError::PayloadTooLarge { size, max }
        }
        other => StorageError::InvalidOperation(other),
    })
}

fn check_payload(len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(StorageError::PayloadTooLarge { size: len, max });
    }
    Ok(())
}

/// Checks everything an enqueue of `ops` can refuse before any write, so a
/// refused batch leaves nothing behind even in a backend without rollback.
pub(crate) fn check_enqueue<T: Tx + ?Sized>(
    tx: &mut T,
    ops: &[Operation],
    options: &QueueOptions,
) -> Result<()> {
    let mut ids = std::collections::HashSet::with_capacity(ops.len());
    for op in ops {
        validate(op, options.max_payload)?;
        if !ids.insert(op.id) || tx.contains_id(op.id)? {
            return Err(StorageError::Duplicate(op.id));
        }
    }
    Ok(())
}

/// Stores `ops` (already checked by [`check_enqueue`]); returns their seqs.
pub(crate) fn enqueue<T: Tx + ?Sized>(
    tx: &mut T,
    ops: &[Operation],
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<Vec<u64>> {
    let mut seqs = Vec::with_capacity(ops.len());
    for op in ops {
        seqs.push(enqueue_one(tx, op, now, options)?);
    }
    Ok(seqs)
}

/// Stores one checked operation last in its entity; returns its seq.
pub(crate) fn enqueue_one<T: Tx + ?Sized>(
    tx: &mut T,
    op: &Operation,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<u64> {
    store_new(tx, op, now, options, false)
}

/// [`enqueue_one`], marked `claimed` when the operation may already have
/// reached the remote ([`Amend::Import`]).
pub(crate) fn store_new<T: Tx + ?Sized>(
    tx: &mut T,
    op: &Operation,
    now: EpochMillis,
    options: &QueueOptions,
    claimed: bool,
) -> Result<u64> {
    {
        let seq = tx.counters().next_seq;
        tx.counters().next_seq = seq + 1;
        let entity = op.entity.to_key_bytes();
        let has_head = tx.has_head(&entity, skip_dead(options))?;
        let mut meta = OpMeta {
            seq,
            id: op.id,
            entity,
            priority: op.priority,
            state: OpState::Ready,
            ready_at: now,
            enqueued_at: now,
            attempts: 0,
            last_error: None,
            payload_len: op.payload.len() as u64,
            head: None,
            claimed,
        };
        // The first pending op of its entity is its head (written with the
        // record, not as a second update).
        if !has_head {
            meta.head = Some(due_head(op.priority, options));
        }
        tx.insert(&meta, op)?;
        tx.counters().account(&meta, true);
        Ok(seq)
    }
}

/// Leases up to `limit` due heads; see the module docs.
pub(crate) fn claim<T: Tx + ?Sized>(
    tx: &mut T,
    now: EpochMillis,
    limit: usize,
    options: &QueueOptions,
) -> Result<Vec<Claimed>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // Retries that are due and leases that ended become ready heads.
    for meta in tx.timed_heads_upto(now, transitions_per_claim(limit))? {
        let mut new = meta.clone();
        new.state = OpState::Ready;
        if let OpState::Waiting { until } = meta.state {
            new.ready_at = until;
        }
        new.head = Some(due_head(new.priority, options));
        write_meta(tx, &meta, &new)?;
    }
    if let Some(aging) = options.aging_after {
        let cutoff = now.saturating_sub(millis(aging));
        for meta in tx.aging_heads_upto(cutoff, transitions_per_claim(limit))? {
            let mut new = meta.clone();
            new.head = Some(Head::Due {
                eff: meta.priority.promoted(),
                aging: false,
            });
            write_meta(tx, &meta, &new)?;
        }
    }

    let lease_until = now
        .saturating_add(millis(options.lease_timeout))
        .min(MAX_INSTANT);
    let mut out = Vec::with_capacity(limit);
    while out.len() < limit {
        let heads = tx.due_heads(limit - out.len())?;
        if heads.is_empty() {
            break;
        }
        for meta in heads {
            let Some(op) = load_or_quarantine(tx, &meta, now, options)? else {
                continue;
            };
            let eff = match meta.head {
                Some(Head::Due { eff, .. }) => eff,
                _ => meta.priority,
            };
            let mut new = meta.clone();
            new.state = OpState::InFlight { lease_until };
            // Persisted in the same write as the lease, so a crash while
            // sending never resets the retry history.
            new.attempts = meta.attempts.saturating_add(1);
            new.head = Some(Head::Timed);
            new.claimed = true;
            write_meta(tx, &meta, &new)?;
            out.push(Claimed {
                op,
                seq: meta.seq,
                attempt: new.attempts,
                effective_priority: eff,
                enqueued_at: meta.enqueued_at,
            });
        }
    }
    Ok(out)
}

/// Checks what a batch of completions can refuse before any write: a
/// merged payload or a deferred remote record over the payload limit.
pub(crate) fn check_completions(completions: &[Completion], options: &QueueOptions) -> Result<()> {
    for c in completions {
        match c {
            Completion::Resend {
                payload: Some(p), ..
            } => check_payload(p.len(), options.max_payload)?,
            Completion::Defer { remote, .. } => {
                if let Some(p) = &remote.payload {
                    check_payload(p.len(), options.max_payload)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Applies a batch of completions (checked by [`check_completions`]).
pub(crate) fn complete<T: Tx + ?Sized>(
    tx: &mut T,
    completions: &[Completion],
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<()> {
    let mut journal = JournalAppends::default();
    for c in completions {
        let Some(meta) = tx.meta_by_id(c.id())? else {
            continue;
        };
        let mut new = meta.clone();
        match c {
            Completion::Ack(_) | Completion::AckAt { .. } => {
                let remote_seq = match c {
                    Completion::AckAt { seq, .. } => Some(*seq),
                    _ => None,
                };
                journal.add(tx, &meta, remote_seq, now, options)?;
                remove(tx, &meta, options)?;
                continue;
            }
            Completion::Drop(_) => {
                remove(tx, &meta, options)?;
                continue;
            }
            Completion::Retry { at, error, .. } => {
                new.state = OpState::Waiting { until: *at };
                new.last_error = Some(error.clone());
            }
            Completion::Dead { reason, .. } => {
                new.state = OpState::Dead {
                    reason: reason.clone(),
                };
                new.last_error = Some(reason.clone());
            }
            Completion::Defer { remote, reason, .. } => {
                new.state = OpState::Deferred;
                new.last_error = Some(reason.clone());
                tx.set_remote(&meta, Some(remote))?;
            }
            Completion::Postpone { at, error, .. } => {
                // The claim counted an attempt; a failure that says nothing
                // about the operation gives it back.
                if matches!(meta.state, OpState::InFlight { .. }) {
                    new.attempts = meta.attempts.saturating_sub(1);
                }
                new.state = OpState::Waiting { until: *at };
                new.last_error = Some(error.clone());
            }
            Completion::Resend {
                base_version,
                payload,
                ..
            } => {
                let Some(mut op) = load_or_quarantine(tx, &meta, now, options)? else {
                    continue;
                };
                op.base_version = *base_version;
                if let Some(p) = payload {
                    op.payload = p.clone();
                }
                new.payload_len = op.payload.len() as u64;
                new.state = OpState::Ready;
                new.ready_at = now;
                tx.update_op(&new, &op)?;
            }
            Completion::Release(_) => {
                if !matches!(meta.state, OpState::InFlight { .. }) {
                    continue;
                }
                new.state = OpState::Ready;
                new.attempts = meta.attempts.saturating_sub(1);
            }
        }
        change_state(tx, &meta, new, options)?;
    }
    journal.finish(tx, now, options)
}

/// Moves waiting operations due before their re-spread slot to it; see
/// [`QueueStorage::respread_waiting`](crate::QueueStorage::respread_waiting).
/// Reads bookkeeping only, never an operation body.
pub(crate) fn respread_waiting<T: Tx + ?Sized>(
    tx: &mut T,
    base: EpochMillis,
    spread_ms: u64,
    salt: u32,
    page: &crate::api::Page,
) -> Result<crate::api::Respread> {
    let metas = tx.list_metas(MetaFilter {
        entity: None,
        dead: Some(false),
        deferred_only: false,
        limit: page.limit,
        after: page.after,
    })?;
    let full = page.limit.is_some_and(|l| metas.len() >= l);
    let next = if full {
        metas.last().map(|m| m.seq)
    } else {
        None
    };
    let mut moved = 0;
    for meta in metas {
        let OpState::Waiting { until } = meta.state else {
            continue;
        };
        let at = base
            .saturating_add(crate::api::respread_offset(meta.seq, spread_ms, salt))
            .min(MAX_INSTANT);
        if until < at {
            let mut new = meta.clone();
            new.state = OpState::Waiting { until: at };
            write_meta(tx, &meta, &new)?;
            moved += 1;
        }
    }
    Ok(crate::api::Respread { moved, next })
}

/// Rebuilds the counters from the stored bookkeeping (a scan: for the rare
/// paths that remove or repair records behind the rules' back, whose
/// states the incremental counters no longer match); keeps `next_seq`.
pub(crate) fn recount<T: Tx + ?Sized>(tx: &mut T) -> Result<()> {
    let next_seq = tx.counters().next_seq;
    let metas = tx.list_metas(MetaFilter {
        entity: None,
        dead: None,
        deferred_only: false,
        limit: None,
        after: None,
    })?;
    let mut c = Counters {
        next_seq,
        ..Counters::default()
    };
    for m in &metas {
        c.account(m, true);
    }
    *tx.counters() = c;
    Ok(())
}

/// Returns ended leases to ready; returns how many.
pub(crate) fn recover<T: Tx + ?Sized>(
    tx: &mut T,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<u64> {
    let expired = tx.expired_leases(now)?;
    for meta in &expired {
        let mut new = meta.clone();
        new.state = OpState::Ready;
        change_state(tx, meta, new, options)?;
    }
    Ok(expired.len() as u64)
}

/// The display key of a record in the quarantine set and in errors.
pub(crate) fn record_key(seq: u64) -> String {
    format!("op/{seq}")
}

/// The key of a quarantined operation in the quarantine set: its record
/// key and its id (`op/{seq}/{id}`), so the application can repair or
/// drop it (see [`QuarantinedRecord::operation_id`](crate::QuarantinedRecord::operation_id)).
pub(crate) fn quarantine_key(meta: &OpMeta) -> String {
    format!("{}/{}", record_key(meta.seq), meta.id)
}

fn corrupt(meta: &OpMeta, source: EnvelopeError) -> StorageError {
    StorageError::Corrupt {
        key: record_key(meta.seq),
        source,
    }
}

fn stored(meta: OpMeta, op: Operation) -> StoredOperation {
    StoredOperation {
        op,
        seq: meta.seq,
        enqueued_at: meta.enqueued_at,
        attempts: meta.attempts,
        last_error: meta.last_error,
        state: meta.state,
    }
}

/// Latest instant the store keeps: SQLite integers are signed 64-bit, so
/// every backend clamps computed instants here to agree.
pub(crate) const MAX_INSTANT: EpochMillis = i64::MAX as u64;

/// A duration in ms, clamped to what the store keeps.
fn millis(d: std::time::Duration) -> u64 {
    cpc_core::millis(d).min(MAX_INSTANT)
}

fn skip_dead(options: &QueueOptions) -> bool {
    options.dead_head == DeadHeadPolicy::SkipEntityHead
}

fn due_head(priority: OperationPriority, options: &QueueOptions) -> Head {
    Head::Due {
        eff: priority,
        aging: options.aging_after.is_some() && priority < OperationPriority::Critical,
    }
}

/// The head kind an operation in `state` has.
fn head_for(meta: &OpMeta, options: &QueueOptions) -> Head {
    match meta.state {
        OpState::Ready => due_head(meta.priority, options),
        OpState::InFlight { .. } | OpState::Waiting { .. } => Head::Timed,
        OpState::Dead { .. } | OpState::Deferred => Head::Blocked,
    }
}

fn write_meta<T: Tx + ?Sized>(tx: &mut T, old: &OpMeta, new: &OpMeta) -> Result<()> {
    tx.update(old, new)?;
    let c = tx.counters();
    c.account(old, false);
    c.account(new, true);
    Ok(())
}

/// Writes a state change and keeps the entity's head right.
fn change_state<T: Tx + ?Sized>(
    tx: &mut T,
    old: &OpMeta,
    mut new: OpMeta,
    options: &QueueOptions,
) -> Result<()> {
    let skip = skip_dead(options);
    // Under SkipEntityHead a non-head op coming back to life may become the
    // head: remember the current head (first non-dead op, by the invariant).
    let marked_before = if skip && old.head.is_none() {
        tx.first_in_entity(&old.entity, true)?
    } else {
        None
    };
    if matches!(old.state, OpState::Deferred) && !matches!(new.state, OpState::Deferred) {
        tx.set_remote(old, None)?;
    }
    if old.head.is_some() {
        let kind = head_for(&new, options);
        // A head that stays due keeps its promotion.
        new.head = Some(match (old.head, kind) {
            (Some(Head::Due { eff, aging }), Head::Due { .. }) if old.ready_at == new.ready_at => {
                Head::Due { eff, aging }
            }
            _ => kind,
        });
    }
    write_meta(tx, old, &new)?;
    // Under SkipEntityHead, dying or coming back changes which op is head.
    if skip {
        let marked = if old.head.is_some() {
            Some(new)
        } else {
            marked_before
        };
        fix_head(tx, &old.entity, marked.as_ref(), options)?;
    }
    Ok(())
}

fn remove<T: Tx + ?Sized>(tx: &mut T, meta: &OpMeta, options: &QueueOptions) -> Result<()> {
    tx.delete(meta)?;
    tx.counters().account(meta, false);
    if meta.head.is_some() {
        fix_head(tx, &meta.entity, None, options)?;
    }
    Ok(())
}

/// Makes `first_in_entity` the marked head of `entity`. `marked` is the
/// operation currently marked as head, if the caller knows it is still
/// stored; otherwise the head is looked up.
pub(crate) fn fix_head<T: Tx + ?Sized>(
    tx: &mut T,
    entity: &[u8],
    marked: Option<&OpMeta>,
    options: &QueueOptions,
) -> Result<()> {
    let Some(first) = tx.first_in_entity(entity, skip_dead(options))? else {
        if let Some(m) = marked {
            let mut new = m.clone();
            new.head = None;
            tx.update(m, &new)?;
        }
        return Ok(());
    };
    if let Some(m) = marked {
        if m.seq == first.seq {
            return Ok(());
        }
        // The marked one is no longer first (an older op came back to life).
        let mut new = m.clone();
        new.head = None;
        tx.update(m, &new)?;
    }
    if first.head.is_none() {
        let mut new = first.clone();
        new.head = Some(head_for(&first, options));
        tx.update(&first, &new)?;
    }
    Ok(())
}
