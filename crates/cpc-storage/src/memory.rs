//! `MemoryStorage`: the queue's full semantics in memory, without
//! durability. For tests, simulations and caches.

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use cpc_core::{envelope, ConflictRecord, HlcTimestamp, Operation, OperationId, RemoteRecord};

use crate::api::{
    Amend, Claimed, Completion, ConflictCursor, ConflictFilter, DeferredConflict, EpochMillis,
    ListFilter, LoggedConflict, OpState, Page, QuarantineNotice, QuarantinedRecord, QueueOptions,
    QueueStats, QueueStorage, Respread, StoredOperation,
};
use crate::error::Result;
use crate::journal::{AckedOp, Requeued};
use crate::rules::{self, Counters, Head, JournalRow, Loaded, MetaFilter, OpMeta, Tx};

/// The queue in memory: same ordering rules, leases, dead letters, deferred
/// set and conflict log as the durable backends, nothing survives a drop.
///
/// Claiming reads the first entries of ordered indexes (`BTreeSet`s), so it
/// costs O(batch · log n) like the durable backends. An entity's operations
/// are found through a hash map of per-entity queues, so finding an
/// entity's head does not compare entity keys along a tree path.
///
/// ```
/// use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind};
/// use cpc_storage::{Completion, MemoryStorage, QueueOptions, QueueStorage, QueueStorageExt};
/// use rand::{rngs::StdRng, SeedableRng};
///
/// let store = MemoryStorage::new(QueueOptions::default());
/// let op = Operation::builder(EntityKey::new("notes", "1"), OperationKind::Create)
///     .build_at(HlcTimestamp::new(1_000, 0, NodeId(1)), &mut StdRng::seed_from_u64(7));
/// store.enqueue(op.clone(), 1_000)?;
/// let batch = store.claim_ready(1_000, 64)?;
/// assert_eq!(batch[0].op.id, op.id);
/// store.complete(&[Completion::Ack(op.id)], 1_010)?;
/// assert_eq!(store.pending()?, 0);
/// # Ok::<(), cpc_storage::StorageError>(())
/// ```
#[derive(Debug)]
pub struct MemoryStorage {
    state: Mutex<MemState>,
    options: QueueOptions,
    /// The latest `now` seen, for the calls that take none.
    now_hint: AtomicU64,
}

impl MemoryStorage {
    /// An empty queue with `options` (durability is ignored).
    pub fn new(options: QueueOptions) -> Self {
        MemoryStorage {
            state: Mutex::new(MemState::default()),
            options,
            now_hint: AtomicU64::new(0),
        }
    }

    /// The options the queue was made with.
    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic while holding the lock cannot leave the state half
        // written: every mutation is checked before it starts.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seen(&self, now: EpochMillis) -> EpochMillis {
        self.now_hint.fetch_max(now, Ordering::Relaxed).max(now)
    }

    fn hint(&self) -> EpochMillis {
        self.now_hint.load(Ordering::Relaxed)
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        MemoryStorage::new(QueueOptions::default())
    }
}

impl QueueStorage for MemoryStorage {
    fn max_payload(&self) -> usize {
        self.options.max_payload
    }

    fn amend(&self, change: Amend) -> Result<u64> {
        if let Some(now) = change.now() {
            self.seen(now);
        }
        rules::amend(&mut *self.lock(), &change, &self.options)
    }

    fn enqueue_batch(&self, ops: Vec<Operation>, now: EpochMillis) -> Result<Vec<u64>> {
        let now = self.seen(now);
        let mut st = self.lock();
        rules::check_enqueue(&mut *st, &ops, &self.options)?;
        rules::enqueue(&mut *st, &ops, now, &self.options)
    }

    fn enqueue_coalesced(
        &self,
        ops: Vec<Operation>,
        now: EpochMillis,
        coalescer: std::sync::Arc<dyn cpc_core::Coalescer>,
    ) -> Result<Vec<crate::api::Enqueued>> {
        let now = self.seen(now);
        let mut st = self.lock();
        rules::check_enqueue(&mut *st, &ops, &self.options)?;
        rules::enqueue_coalescing(&mut *st, &ops, now, &self.options, &*coalescer)
    }

    fn claim_ready(&self, now: EpochMillis, limit: usize) -> Result<Vec<Claimed>> {
        self.seen(now);
        rules::claim(&mut *self.lock(), now, limit, &self.options)
    }

    fn complete(&self, completions: &[Completion], now: EpochMillis) -> Result<()> {
        self.seen(now);
        rules::check_completions(completions, &self.options)?;
        rules::complete(&mut *self.lock(), completions, now, &self.options)
    }

    fn respread_waiting(
        &self,
        base: EpochMillis,
        spread_ms: u64,
        salt: u32,
        page: &Page,
    ) -> Result<Respread> {
        rules::respread_waiting(&mut *self.lock(), base, spread_ms, salt, page)
    }

    fn take_quarantine_notices(&self) -> Vec<QuarantineNotice> {
        std::mem::take(&mut self.lock().notices)
    }

    fn stats(&self) -> Result<QueueStats> {
        let mut st = self.lock();
        let mut stats = st.counters.stats(st.quarantine.len() as u64);
        rules::count_blocked(&mut *st, &mut stats, &self.options)?;
        stats.acked_journal = rules::journal_len(&mut *st)?;
        Ok(stats)
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<StoredOperation>> {
        rules::list(&mut *self.lock(), filter, self.hint(), &self.options)
    }

    fn get(&self, id: OperationId) -> Result<Option<StoredOperation>> {
        rules::get(&mut *self.lock(), id, self.hint(), &self.options)
    }

    fn recover(&self, now: EpochMillis) -> Result<u64> {
        self.seen(now);
        rules::recover(&mut *self.lock(), now, &self.options)
    }

    fn next_wakeup(&self) -> Result<Option<EpochMillis>> {
        self.lock().min_timed()
    }

    fn list_deferred(&self, page: &Page) -> Result<Vec<DeferredConflict>> {
        rules::list_deferred(&mut *self.lock(), page, self.hint(), &self.options)
    }

    fn log_conflict(&self, entry: &ConflictRecord) -> Result<u64> {
        rules::check_conflict(entry, self.options.max_payload)?;
        let mut st = self.lock();
        let id = st.next_conflict;
        st.next_conflict += 1;
        st.conflicts.push_back((id, entry.clone()));
        Ok(rules::prune_conflicts(
            &mut st.conflicts,
            entry.resolved_at_ms,
            &self.options,
        ))
    }

    fn conflict_entries(&self, filter: &ConflictFilter) -> Result<Vec<LoggedConflict>> {
        let st = self.lock();
        let limit = filter.limit.unwrap_or(usize::MAX);
        let before = filter.before.map_or(u64::MAX, |c| c.n);
        Ok(st
            .conflicts
            .iter()
            .rev()
            .filter(|(n, _)| *n < before)
            .filter(|(_, e)| filter.entity.as_ref().is_none_or(|k| &e.entity == k))
            .filter(|(_, e)| filter.since.is_none_or(|s| e.resolved_at_ms >= s))
            .take(limit)
            .map(|(n, e)| LoggedConflict {
                cursor: ConflictCursor {
                    at: e.resolved_at_ms,
                    n: *n,
                },
                entry: e.clone(),
            })
            .collect())
    }

    fn list_quarantined(&self, page: &Page) -> Result<Vec<QuarantinedRecord>> {
        let st = self.lock();
        Ok(st
            .quarantine
            .iter()
            .filter(|q| page.after.is_none_or(|a| q.n > a))
            .take(page.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    fn clock_mark(&self, raise_to: Option<HlcTimestamp>) -> Result<Option<HlcTimestamp>> {
        let mut st = self.lock();
        if let Some(mark) = raise_to {
            if st.clock_mark.is_none_or(|m| mark > m) {
                st.clock_mark = Some(mark);
            }
        }
        Ok(st.clock_mark)
    }

    fn sync_state(&self, key: &str, set: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        crate::api::check_sync_state(key, set.as_ref())?;
        let mut st = self.lock();
        if let Some(value) = set {
            st.sync_state.insert(key.to_owned(), value);
        }
        Ok(st.sync_state.get(key).cloned())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn requeue_acked(&self, head_seq: u64, now: EpochMillis, limit: usize) -> Result<Requeued> {
        let now = self.seen(now);
        rules::requeue_acked(&mut *self.lock(), head_seq, now, limit, &self.options)
    }

    fn acked(&self, page: &Page) -> Result<Vec<AckedOp>> {
        rules::list_acked(&mut *self.lock(), page, &self.options)
    }
}

#[derive(Debug)]
struct Entry {
    meta: OpMeta,
    op: Operation,
    remote: Option<RemoteRecord>,
}

/// The records and their indexes; every index is derived from `OpMeta` by
/// [`MemState::index`], so adding and removing use the same keys.
///
/// No hash map is ever iterated, so their order cannot leak into results:
/// listing goes through `order`, an entity's operations through its queue.
#[derive(Debug, Default)]
struct MemState {
    /// Every stored operation by seq.
    ops: HashMap<u64, Entry, KeyedHash>,
    /// The seqs of `ops`, ascending (listing order).
    order: BTreeSet<u64>,
    by_id: HashMap<OperationId, u64, KeyedHash>,
    /// Seqs of each entity's stored operations, ascending; an entity with
    /// nothing stored has no key.
    by_entity: HashMap<Vec<u8>, VecDeque<u64>, KeyedHash>,
    due: BTreeSet<(Reverse<u8>, u64)>,
    timed: BTreeSet<(EpochMillis, u64)>,
    aging: BTreeSet<(EpochMillis, u64)>,
    in_flight: BTreeSet<(EpochMillis, u64)>,
    deferred: BTreeSet<u64>,
    counters: Counters,
    conflicts: VecDeque<(u64, ConflictRecord)>,
    next_conflict: u64,
    quarantine: Vec<QuarantinedRecord>,
    /// The `n` of the last quarantined record (the first is 1, as in SQLite).
    last_quarantined: u64,
    clock_mark: Option<HlcTimestamp>,
    sync_state: std::collections::HashMap<String, Vec<u8>>,
    notices: Vec<QuarantineNotice>,
    /// The acked journal: n → (acknowledged at, envelope).
    journal: std::collections::BTreeMap<u64, (EpochMillis, Vec<u8>)>,
    /// The last `n` ever stored (never reused).
    journal_last: u64,
}

impl MemState {
    fn index(&mut self, m: &OpMeta, add: bool) {
        fn apply<K: Ord>(set: &mut BTreeSet<K>, key: K, add: bool) {
            if add {
                set.insert(key);
            } else {
                set.remove(&key);
            }
        }
        match m.head {
            Some(Head::Due { eff, aging }) => {
                apply(&mut self.due, (Reverse(eff.rank()), m.seq), add);
                if aging {
                    apply(&mut self.aging, (m.ready_at, m.seq), add);
                }
            }
            Some(Head::Timed) => {
                if let Some(at) = m.wake_at() {
                    apply(&mut self.timed, (at, m.seq), add);
                }
            }
            Some(Head::Blocked) | None => {}
        }
        match m.state {
            OpState::InFlight { lease_until } => {
                apply(&mut self.in_flight, (lease_until, m.seq), add)
            }
            OpState::Deferred => apply(&mut self.deferred, m.seq, add),
            _ => {}
        }
    }

    fn metas(&self, seqs: impl Iterator<Item = u64>) -> Vec<OpMeta> {
        seqs.filter_map(|s| self.ops.get(&s).map(|e| e.meta.clone()))
            .collect()
    }

    fn entity_seqs(&self, entity: &[u8]) -> impl Iterator<Item = u64> + '_ {
        self.by_entity
            .get(entity)
            .into_iter()
            .flat_map(|q| q.iter().copied())
    }

    fn add_to_entity(&mut self, entity: &[u8], seq: u64) {
        match self.by_entity.get_mut(entity) {
            // Seqs are assigned in increasing order: an insert appends.
            Some(q) if q.back().is_none_or(|&last| last < seq) => q.push_back(seq),
            Some(q) => {
                if let Err(at) = q.binary_search(&seq) {
                    q.insert(at, seq);
                }
            }
            None => {
                self.by_entity
                    .insert(entity.to_vec(), VecDeque::from([seq]));
            }
        }
    }

    fn remove_from_entity(&mut self, entity: &[u8], seq: u64) {
        let Some(q) = self.by_entity.get_mut(entity) else {
            return;
        };
        // Acks remove the head, so this is the front in the common case;
        // `VecDeque::remove` shifts the shorter side.
        if q.front() == Some(&seq) {
            q.pop_front();
        } else if let Ok(at) = q.binary_search(&seq) {
            q.remove(at);
        }
        if q.is_empty() {
            self.by_entity.remove(entity);
        }
    }
}

/// `*dst = src.clone()` reusing `dst`'s allocations (the entity key is the
/// same for every version of an operation's meta).
fn assign_meta(dst: &mut OpMeta, src: &OpMeta) {
    // Destructured so a new field cannot be forgotten here.
    let OpMeta {
        seq,
        id,
        entity,
        priority,
        state,
        ready_at,
        enqueued_at,
        attempts,
        last_error,
        payload_len,
        head,
        claimed,
    } = src;
    dst.seq = *seq;
    dst.id = *id;
    if dst.entity != *entity {
        dst.entity.clone_from(entity);
    }
    dst.priority = *priority;
    if dst.state != *state {
        dst.state.clone_from(state);
    }
    dst.ready_at = *ready_at;
    dst.enqueued_at = *enqueued_at;
    dst.attempts = *attempts;
    if dst.last_error != *last_error {
        dst.last_error.clone_from(last_error);
    }
    dst.payload_len = *payload_len;
    dst.head = *head;
    dst.claimed = *claimed;
}

impl Tx for MemState {
    fn meta_by_id(&mut self, id: OperationId) -> Result<Option<OpMeta>> {
        Ok(self
            .by_id
            .get(&id)
            .and_then(|s| self.ops.get(s))
            .map(|e| e.meta.clone()))
    }

    fn first_in_entity(&mut self, entity: &[u8], skip_dead: bool) -> Result<Option<OpMeta>> {
        for seq in self.entity_seqs(entity) {
            if let Some(entry) = self.ops.get(&seq) {
                if !(skip_dead && matches!(entry.meta.state, OpState::Dead { .. })) {
                    return Ok(Some(entry.meta.clone()));
                }
            }
        }
        Ok(None)
    }

    fn last_in_entity(&mut self, entity: &[u8]) -> Result<Option<OpMeta>> {
        let last = self.by_entity.get(entity).and_then(|q| q.back().copied());
        Ok(last.and_then(|seq| self.ops.get(&seq).map(|e| e.meta.clone())))
    }

    fn list_metas(&mut self, f: MetaFilter<'_>) -> Result<Vec<OpMeta>> {
        let limit = f.limit.unwrap_or(usize::MAX);
        let keep = |m: &OpMeta| {
            let dead = matches!(m.state, OpState::Dead { .. });
            f.after.is_none_or(|a| m.seq > a)
                && f.dead.is_none_or(|d| d == dead)
                && (!f.deferred_only || matches!(m.state, OpState::Deferred))
        };
        let out = if f.deferred_only {
            self.metas(self.deferred.iter().copied())
        } else if let Some(entity) = f.entity {
            self.metas(self.entity_seqs(entity))
        } else {
            self.metas(self.order.iter().copied())
        };
        Ok(out.into_iter().filter(|m| keep(m)).take(limit).collect())
    }

    fn insert(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        self.by_id.insert(meta.id, meta.seq);
        self.add_to_entity(&meta.entity, meta.seq);
        self.index(meta, true);
        self.order.insert(meta.seq);
        self.ops.insert(
            meta.seq,
            Entry {
                meta: meta.clone(),
                op: op.clone(),
                remote: None,
            },
        );
        Ok(())
    }

    fn insert_in_order(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        // The entity's queue is kept sorted whatever the insert order.
        self.insert(meta, op)
    }

    fn journal_last(&mut self) -> Result<u64> {
        Ok(self.journal_last)
    }

    fn journal_put(&mut self, n: u64, at: EpochMillis, body: Vec<u8>) -> Result<()> {
        self.journal.insert(n, (at, body));
        self.journal_last = self.journal_last.max(n);
        Ok(())
    }

    fn journal_scan(&mut self, after: u64, limit: usize, bodies: bool) -> Result<Vec<JournalRow>> {
        Ok(self
            .journal
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(&n, (at, body))| JournalRow {
                n,
                at: *at,
                body: if bodies { body.clone() } else { Vec::new() },
            })
            .collect())
    }

    fn journal_remove_upto(&mut self, upto: u64) -> Result<()> {
        self.journal = self.journal.split_off(&upto.saturating_add(1));
        Ok(())
    }

    fn update(&mut self, old: &OpMeta, new: &OpMeta) -> Result<()> {
        self.index(old, false);
        self.index(new, true);
        if let Some(e) = self.ops.get_mut(&new.seq) {
            assign_meta(&mut e.meta, new);
        }
        Ok(())
    }

    fn update_op(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        if let Some(e) = self.ops.get_mut(&meta.seq) {
            e.op.clone_from(op);
        }
        Ok(())
    }

    fn set_remote(&mut self, meta: &OpMeta, remote: Option<&RemoteRecord>) -> Result<()> {
        if let Some(e) = self.ops.get_mut(&meta.seq) {
            e.remote = remote.cloned();
        }
        Ok(())
    }

    fn delete(&mut self, meta: &OpMeta) -> Result<()> {
        if let Some(e) = self.ops.remove(&meta.seq) {
            self.order.remove(&e.meta.seq);
            self.index(&e.meta, false);
            self.by_id.remove(&e.meta.id);
            self.remove_from_entity(&e.meta.entity, e.meta.seq);
        }
        Ok(())
    }

    fn load_op(&mut self, meta: &OpMeta) -> Result<Loaded<Operation>> {
        match self.ops.get(&meta.seq) {
            Some(e) => Ok(Loaded::Ok(e.op.clone())),
            None => Ok(Loaded::Corrupt {
                raw: Vec::new(),
                error: cpc_core::EnvelopeError::Malformed("record vanished".into()),
            }),
        }
    }

    fn load_remote(&mut self, meta: &OpMeta) -> Result<Option<Loaded<RemoteRecord>>> {
        Ok(self
            .ops
            .get(&meta.seq)
            .and_then(|e| e.remote.clone())
            .map(Loaded::Ok))
    }

    fn raw_op(&mut self, meta: &OpMeta) -> Result<Vec<u8>> {
        Ok(self
            .ops
            .get(&meta.seq)
            .and_then(|e| envelope::encode_operation(&e.op).ok())
            .unwrap_or_default())
    }

    fn purge_quarantine(&mut self) -> Result<u64> {
        let n = self.quarantine.len() as u64;
        self.quarantine.clear();
        Ok(n)
    }

    fn quarantine(
        &mut self,
        meta: &OpMeta,
        raw: Vec<u8>,
        reason: String,
        at: EpochMillis,
    ) -> Result<()> {
        self.last_quarantined += 1;
        self.quarantine.push(QuarantinedRecord {
            n: self.last_quarantined,
            key: rules::quarantine_key(meta),
            reason,
            raw,
            at,
        });
        Ok(())
    }

    fn due_heads(&mut self, limit: usize) -> Result<Vec<OpMeta>> {
        Ok(self.metas(self.due.iter().take(limit).map(|(_, s)| *s)))
    }

    fn timed_heads_upto(&mut self, now: EpochMillis, limit: usize) -> Result<Vec<OpMeta>> {
        Ok(self.metas(
            self.timed
                .iter()
                .take_while(|(at, _)| *at <= now)
                .take(limit)
                .map(|(_, s)| *s),
        ))
    }

    fn aging_heads_upto(&mut self, cutoff: EpochMillis, limit: usize) -> Result<Vec<OpMeta>> {
        Ok(self.metas(
            self.aging
                .iter()
                .take_while(|(at, _)| *at <= cutoff)
                .take(limit)
                .map(|(_, s)| *s),
        ))
    }

    fn min_timed(&mut self) -> Result<Option<EpochMillis>> {
        Ok(self.timed.first().map(|(at, _)| *at))
    }

    fn expired_leases(&mut self, now: EpochMillis) -> Result<Vec<OpMeta>> {
        Ok(self.metas(
            self.in_flight
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, s)| *s),
        ))
    }

    fn counters(&mut self) -> &mut Counters {
        &mut self.counters
    }

    fn notices(&mut self) -> &mut Vec<QuarantineNotice> {
        &mut self.notices
    }
}

/// The hasher of the in-memory indexes: FxHash's multiply-rotate over 8-byte
/// words (as in rustc), started from a per-store random key.
///
/// The default SipHash was a tenth of the instructions of a claim + ack
/// cycle. The keys hashed here are store-assigned seqs, operation ids and
/// entity keys; the random key keeps an application's entity names from
/// colliding the same way in every process. This is not a defence against
/// a deliberate flood, which this backend (tests, simulations, caches) does
/// not need.
#[derive(Clone, Copy, Debug)]
struct KeyedHash {
    key: u64,
}

impl Default for KeyedHash {
    fn default() -> Self {
        KeyedHash {
            key: RandomState::new().hash_one(0x6370_632d_6d65_6d00_u64),
        }
    }
}

impl BuildHasher for KeyedHash {
    type Hasher = WordHasher;

    fn build_hasher(&self) -> WordHasher {
        WordHasher { hash: self.key }
    }
}

/// See [`KeyedHash`].
#[derive(Clone, Copy, Debug)]
struct WordHasher {
    hash: u64,
}

impl WordHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        // Truncations on purpose: the low then the high word.
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weakest and hashbrown picks the
        // bucket from them: fold the high half in.
        self.hash ^ (self.hash >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn hash_of<T: Hash>(build: &KeyedHash, value: &T) -> u64 {
        build.hash_one(value)
    }

    #[test]
    fn word_hash_separates_keys_and_depends_on_the_store_key() {
        let a = KeyedHash { key: 1 };
        let b = KeyedHash { key: 2 };
        // Sequential seqs spread over the low bits hashbrown uses.
        let low: std::collections::HashSet<u64> =
            (0..1024u64).map(|s| hash_of(&a, &s) & 1023).collect();
        assert!(low.len() > 600, "only {} distinct buckets", low.len());
        // Keys differing after the first word, or only in length, differ.
        let k1 = b"\0\0\0\x05notes-record-1".to_vec();
        let k2 = b"\0\0\0\x05notes-record-2".to_vec();
        assert_ne!(hash_of(&a, &k1), hash_of(&a, &k2));
        assert_ne!(hash_of(&a, &b"ab".to_vec()), hash_of(&a, &b"ab\0".to_vec()));
        assert_ne!(hash_of(&a, &k1), hash_of(&b, &k1));
        let id = OperationId::from_u128(7 << 64 | 9);
        assert_ne!(
            hash_of(&a, &id),
            hash_of(&a, &OperationId::from_u128(9 << 64 | 7))
        );
    }
}
