//! A write set over the sled trees with read-your-writes, on which the
//! shared queue rules ([`crate::rules`]) run; committed as one sled
//! transaction over every tree (atomic across trees, also across a crash:
//! sled seals a multi-tree transaction as one batch in its log).

use std::collections::BTreeMap;
use std::ops::Bound;

use cpc_core::envelope::{self, RecordKind};
use cpc_core::{EnvelopeError, Operation, OperationId, RemoteRecord};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::keys;
use super::meta::{decode_meta, StoredMeta};
use crate::api::{EpochMillis, OpState, QuarantineNotice};
use crate::error::{Result, StorageError};
use crate::rules::{self, Counters, Head, JournalRow, Loaded, MetaFilter, OpMeta};

pub(super) const OPS: usize = 0;
pub(super) const METAS: usize = 1;
pub(super) const IDS: usize = 2;
pub(super) const ENTS: usize = 3;
pub(super) const DUE: usize = 4;
pub(super) const AGING: usize = 5;
pub(super) const TIMED: usize = 6;
pub(super) const LEASES: usize = 7;
pub(super) const DEFERRED: usize = 8;
pub(super) const REMOTES: usize = 9;
pub(super) const CONFLICTS: usize = 10;
pub(super) const QUARANTINE: usize = 11;
pub(super) const META: usize = 12;
pub(super) const ACKED: usize = 13;

/// sled tree names, indexed by the constants above.
///
/// - `ops`: seq → operation envelope (the record; CRC-checked on read);
/// - `metas`: seq → bookkeeping envelope (state, attempts, head kind);
/// - `ids`: id → seq; `ents`: entity prefix + seq → ();
/// - `due`: (effective priority desc, seq) → (): the claimable heads;
/// - `aging`: (ready since, seq) → (): due heads that may still be promoted;
/// - `timed`: (wake-up, seq) → (): heads waiting for a retry or lease end;
/// - `leases`: (lease end, seq) → (): every in-flight operation;
/// - `deferred`: seq → (); `remotes`: seq → remote record envelope;
/// - `conflicts`: (resolved at, counter) → conflict envelope;
/// - `quarantine`: counter → quarantined record envelope;
/// - `meta`: the store state, the clock mark and the acked journal's last n;
/// - `acked`: n → (acknowledged at, 8 bytes) ‖ journal entry envelope.
pub(super) const TREE_NAMES: [&str; 14] = [
    "ops",
    "metas",
    "ids",
    "ents",
    "due",
    "aging",
    "timed",
    "leases",
    "deferred",
    "remotes",
    "conflicts",
    "quarantine",
    "meta",
    "acked",
];

/// Key of the acked journal's newest `n` in `meta` (n is never reused).
pub(super) const META_ACKED_LAST: &[u8] = b"acked_last";

/// Key of the store state in `meta`.
pub(super) const META_STATE: &[u8] = b"state";
/// Key of the clock high-water mark in `meta`.
pub(super) const META_CLOCK: &[u8] = b"clock";

/// Store-wide state, persisted under `meta/state` in every transaction
/// that changes it, so counters and the sequence survive a crash exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoreState {
    pub(super) ready: u64,
    pub(super) in_flight: u64,
    pub(super) waiting: u64,
    pub(super) dead: u64,
    pub(super) deferred: u64,
    pub(super) pending_by_priority: [u64; 4],
    pub(super) pending_bytes: u64,
    pub(super) next_seq: u64,
    pub(super) quarantined: u64,
    pub(super) quarantine_seq: u64,
    pub(super) conflict_seq: u64,
    pub(super) conflict_count: u64,
}

impl StoreState {
    pub(super) fn counters(&self) -> Counters {
        Counters {
            ready: self.ready,
            in_flight: self.in_flight,
            waiting: self.waiting,
            dead: self.dead,
            deferred: self.deferred,
            pending_by_priority: self.pending_by_priority,
            pending_bytes: self.pending_bytes,
            next_seq: self.next_seq,
        }
    }

    pub(super) fn set_counters(&mut self, c: &Counters) {
        self.ready = c.ready;
        self.in_flight = c.in_flight;
        self.waiting = c.waiting;
        self.dead = c.dead;
        self.deferred = c.deferred;
        self.pending_by_priority = c.pending_by_priority;
        self.pending_bytes = c.pending_bytes;
        self.next_seq = c.next_seq;
    }
}

/// The key of a tree iterator's next entry, if any (a read error is the
/// scan's error).
fn peek_key<I>(it: &mut std::iter::Peekable<I>) -> Result<Option<Vec<u8>>>
where
    I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
{
    match it.peek() {
        Some(Ok((k, _))) => Ok(Some(k.to_vec())),
        Some(Err(_)) => match it.next() {
            Some(Err(e)) => Err(sled_error("scan", e)),
            _ => Ok(None),
        },
        None => Ok(None),
    }
}

/// A quarantined record as stored in the quarantine tree.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct QuarantineEntry {
    pub(super) key: String,
    pub(super) reason: String,
    pub(super) raw: Vec<u8>,
    pub(super) at: EpochMillis,
}

/// A bookkeeping record that failed its checksum: it cannot be handled by
/// the rules (which need the bookkeeping), so the backend quarantines it
/// after the transaction.
#[derive(Debug)]
pub(super) struct CorruptMeta {
    pub(super) seq: u64,
    pub(super) reason: String,
}

/// Maps a sled error; I/O errors go through the shared mapping (ENOSPC is
/// `StorageFull`).
pub(super) fn sled_error(context: &'static str, e: sled::Error) -> StorageError {
    match e {
        sled::Error::Io(io) => crate::dir::io_error(context, io),
        other => StorageError::Sled {
            context,
            source: Box::new(other),
        },
    }
}

/// A write set over the trees; reads see it first, then the trees.
pub(super) struct SledTx<'a> {
    trees: &'a [sled::Tree],
    writes: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>,
    pub(super) state: StoreState,
    counters: Counters,
    state_dirty: bool,
    pub(super) corrupt_metas: Vec<CorruptMeta>,
    /// Largest record body decoded ([`rules::body_limit`] of the store's
    /// `max_payload`).
    body_limit: u32,
    notices: Vec<QuarantineNotice>,
}

impl<'a> SledTx<'a> {
    pub(super) fn new(trees: &'a [sled::Tree], state: StoreState, max_payload: usize) -> Self {
        let counters = state.counters();
        SledTx {
            trees,
            writes: BTreeMap::new(),
            state,
            counters,
            state_dirty: false,
            corrupt_metas: Vec::new(),
            body_limit: rules::body_limit(max_payload),
            notices: Vec::new(),
        }
    }

    /// The notices of what this transaction quarantined.
    pub(super) fn notices_mut(&mut self) -> &mut Vec<QuarantineNotice> {
        &mut self.notices
    }

    /// True when nothing was written.
    pub(super) fn is_empty(&self) -> bool {
        self.writes.is_empty() && !self.state_dirty && self.counters == self.state.counters()
    }

    /// Marks the store state as changed (written at commit).
    pub(super) fn touch_state(&mut self) {
        self.state_dirty = true;
    }

    /// The store state with the transaction's counters.
    pub(super) fn final_state(&self) -> StoreState {
        let mut s = self.state.clone();
        s.set_counters(&self.counters);
        s
    }

    pub(super) fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.writes.get(&(tree, key.to_vec())) {
            return Ok(v.clone());
        }
        self.trees[tree]
            .get(key)
            .map(|v| v.map(|iv| iv.to_vec()))
            .map_err(|e| sled_error("read", e))
    }

    pub(super) fn put(&mut self, tree: usize, key: &[u8], value: Vec<u8>) {
        self.writes.insert((tree, key.to_vec()), Some(value));
    }

    pub(super) fn del(&mut self, tree: usize, key: &[u8]) {
        self.writes.insert((tree, key.to_vec()), None);
    }

    /// Live entries with `lo <= key < hi` (`hi = None`: to the end), in key
    /// order, merging the write set over the tree; stops after `limit`.
    /// Costs O(log n + returned + write-set entries skipped).
    pub(super) fn scan(
        &self,
        tree: usize,
        lo: &[u8],
        hi: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let upper_w = match hi {
            Some(h) => Bound::Excluded((tree, h.to_vec())),
            None => Bound::Excluded((tree + 1, Vec::new())),
        };
        let mut overlay = self
            .writes
            .range((Bound::Included((tree, lo.to_vec())), upper_w))
            .map(|((_, k), v)| (k.as_slice(), v.as_ref()))
            .peekable();
        let upper = match hi {
            Some(h) => Bound::Excluded(h.to_vec()),
            None => Bound::Unbounded,
        };
        let mut base = self.trees[tree]
            .range::<Vec<u8>, _>((Bound::Included(lo.to_vec()), upper))
            .peekable();
        while out.len() < limit {
            let next_base = peek_key(&mut base)?;
            let next_over = overlay.peek().map(|(k, _)| k.to_vec());
            match (next_base, next_over) {
                (None, None) => break,
                (Some(b), Some(o)) if o <= b => {
                    if o == b {
                        base.next();
                    }
                    if let Some((k, Some(v))) = overlay.next() {
                        out.push((k.to_vec(), v.clone()));
                    }
                }
                (None, Some(_)) => {
                    if let Some((k, Some(v))) = overlay.next() {
                        out.push((k.to_vec(), v.clone()));
                    }
                }
                (Some(_), _) => {
                    if let Some(Ok((k, v))) = base.next() {
                        out.push((k.to_vec(), v.to_vec()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The greatest live key with `lo <= key < hi`, merging the write set
    /// over the tree (the reverse of [`scan`](Self::scan) for one entry).
    pub(super) fn last_key(&self, tree: usize, lo: &[u8], hi: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut overlay = self
            .writes
            .range((
                Bound::Included((tree, lo.to_vec())),
                Bound::Excluded((tree, hi.to_vec())),
            ))
            .rev()
            .map(|((_, k), v)| (k.as_slice(), v.is_some()))
            .peekable();
        let mut base = self.trees[tree]
            .range::<&[u8], _>((Bound::Included(lo), Bound::Excluded(hi)))
            .rev()
            .peekable();
        loop {
            let next_base = peek_key(&mut base)?;
            match (next_base, overlay.peek().copied()) {
                (None, None) => return Ok(None),
                (Some(b), Some((o, live))) if o >= b.as_slice() => {
                    if o == b.as_slice() {
                        base.next();
                    }
                    overlay.next();
                    if live {
                        return Ok(Some(o.to_vec()));
                    }
                }
                (None, Some((o, live))) => {
                    overlay.next();
                    if live {
                        return Ok(Some(o.to_vec()));
                    }
                }
                // Greater than every key left in the write set: untouched.
                (Some(b), _) => return Ok(Some(b)),
            }
        }
    }

    /// Reads the bookkeeping of `seq`; a corrupt one reads as absent and is
    /// noted for quarantine.
    pub(super) fn meta(&mut self, seq: u64) -> Result<Option<OpMeta>> {
        let Some(raw) = self.get(METAS, &keys::seq_key(seq))? else {
            return Ok(None);
        };
        match decode_meta(&raw) {
            Ok(m) => Ok(Some(m.into_meta(seq))),
            Err(e) => {
                tracing::warn!(seq, error = %e, "corrupt bookkeeping record");
                if !self.corrupt_metas.iter().any(|c| c.seq == seq) {
                    self.corrupt_metas.push(CorruptMeta {
                        seq,
                        reason: format!("bookkeeping: {e}"),
                    });
                }
                Ok(None)
            }
        }
    }

    fn metas_of(&mut self, seqs: impl IntoIterator<Item = u64>) -> Result<Vec<OpMeta>> {
        let mut out = Vec::new();
        for s in seqs {
            if let Some(m) = self.meta(s)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    fn put_meta(&mut self, m: &OpMeta) -> Result<()> {
        let bytes = envelope::encode(RecordKind::Meta, &StoredMeta::from_meta(m))
            .map_err(StorageError::Encode)?;
        self.put(METAS, &keys::seq_key(m.seq), bytes);
        Ok(())
    }

    /// Adds or removes the index entries derived from `m` (the same keys
    /// for both, so an update removes exactly what the insert added).
    fn index(&mut self, m: &OpMeta, add: bool) {
        let mut entries: Vec<(usize, Vec<u8>)> = Vec::with_capacity(4);
        match m.head {
            Some(Head::Due { eff, aging }) => {
                entries.push((DUE, keys::due_key(eff.rank(), m.seq).to_vec()));
                if aging {
                    entries.push((AGING, keys::time_key(m.ready_at, m.seq).to_vec()));
                }
            }
            Some(Head::Timed) => {
                if let Some(at) = m.wake_at() {
                    entries.push((TIMED, keys::time_key(at, m.seq).to_vec()));
                }
            }
            Some(Head::Blocked) | None => {}
        }
        match m.state {
            OpState::InFlight { lease_until } => {
                entries.push((LEASES, keys::time_key(lease_until, m.seq).to_vec()))
            }
            OpState::Deferred => entries.push((DEFERRED, keys::seq_key(m.seq).to_vec())),
            _ => {}
        }
        for (tree, key) in entries {
            if add {
                self.put(tree, &key, Vec::new());
            } else {
                self.del(tree, &key);
            }
        }
    }

    fn seqs_in(&self, tree: usize, lo: &[u8], hi: Option<&[u8]>, limit: usize) -> Result<Vec<u64>> {
        Ok(self
            .scan(tree, lo, hi, limit)?
            .into_iter()
            .filter_map(|(k, _)| keys::trailing_seq(&k))
            .collect())
    }

    /// Applies the write set and the store state in one sled transaction.
    pub(super) fn commit(&mut self) -> Result<()> {
        if self.state_dirty || self.counters != self.state.counters() {
            let state = self.final_state();
            let bytes = envelope::encode(RecordKind::Meta, &state).map_err(StorageError::Encode)?;
            self.writes.insert((META, META_STATE.to_vec()), Some(bytes));
        }
        let writes = &self.writes;
        let result: std::result::Result<(), TransactionError<()>> =
            sled::Transactional::<()>::transaction(self.trees, |views| {
                for ((tree, key), value) in writes {
                    let view = &views[*tree];
                    match value {
                        Some(v) => {
                            view.insert(key.as_slice(), v.as_slice())?;
                        }
                        None => {
                            view.remove(key.as_slice())?;
                        }
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(sled_error("commit", e)),
            Err(TransactionError::Abort(())) => Err(StorageError::Sled {
                context: "commit",
                source: "transaction aborted".into(),
            }),
        }
    }
}

fn time_upto(at: EpochMillis) -> [u8; 16] {
    keys::time_key(at, u64::MAX)
}

impl rules::Tx for SledTx<'_> {
    fn meta_by_id(&mut self, id: OperationId) -> Result<Option<OpMeta>> {
        let Some(v) = self.get(IDS, &keys::id_key(id))? else {
            return Ok(None);
        };
        match keys::read_u64(&v) {
            Some(seq) => self.meta(seq),
            None => Ok(None),
        }
    }

    fn first_in_entity(&mut self, entity: &[u8], skip_dead: bool) -> Result<Option<OpMeta>> {
        let prefix = keys::entity_prefix(entity);
        let mut lo = keys::entity_seq_key(&prefix, 0);
        let hi = {
            let mut h = prefix.clone();
            h.extend_from_slice(&[0xff; keys::SEQ_LEN + 1]);
            h
        };
        loop {
            let batch = self.scan(ENTS, &lo, Some(&hi), 16)?;
            let Some((last, _)) = batch.last() else {
                return Ok(None);
            };
            lo = last.clone();
            lo.push(0);
            for (k, _) in &batch {
                let Some(seq) = keys::trailing_seq(k) else {
                    continue;
                };
                if let Some(m) = self.meta(seq)? {
                    if !(skip_dead && matches!(m.state, OpState::Dead { .. })) {
                        return Ok(Some(m));
                    }
                }
            }
        }
    }

    fn last_in_entity(&mut self, entity: &[u8]) -> Result<Option<OpMeta>> {
        let prefix = keys::entity_prefix(entity);
        let mut hi = prefix.clone();
        hi.extend_from_slice(&[0xff; keys::SEQ_LEN + 1]);
        match self.last_key(ENTS, &prefix, &hi)? {
            Some(k) => match keys::trailing_seq(&k) {
                Some(seq) => self.meta(seq),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    fn list_metas(&mut self, f: MetaFilter<'_>) -> Result<Vec<OpMeta>> {
        let limit = f.limit.unwrap_or(usize::MAX);
        let seqs = if f.deferred_only {
            self.seqs_in(DEFERRED, &[], None, usize::MAX)?
        } else if let Some(entity) = f.entity {
            let prefix = keys::entity_prefix(entity);
            let mut hi = prefix.clone();
            hi.extend_from_slice(&[0xff; keys::SEQ_LEN + 1]);
            self.seqs_in(ENTS, &prefix, Some(&hi), usize::MAX)?
        } else {
            self.seqs_in(METAS, &[], None, usize::MAX)?
        };
        let mut out = Vec::new();
        for seq in seqs {
            if out.len() >= limit {
                break;
            }
            if f.after.is_some_and(|a| seq <= a) {
                continue;
            }
            let Some(m) = self.meta(seq)? else {
                continue;
            };
            let dead = matches!(m.state, OpState::Dead { .. });
            if f.dead.is_none_or(|d| d == dead)
                && (!f.deferred_only || matches!(m.state, OpState::Deferred))
            {
                out.push(m);
            }
        }
        Ok(out)
    }

    fn insert(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        let bytes = envelope::encode_operation(op).map_err(StorageError::Encode)?;
        self.put(OPS, &keys::seq_key(meta.seq), bytes);
        self.put_meta(meta)?;
        self.put(
            IDS,
            &keys::id_key(meta.id),
            keys::seq_key(meta.seq).to_vec(),
        );
        let prefix = keys::entity_prefix(&meta.entity);
        self.put(ENTS, &keys::entity_seq_key(&prefix, meta.seq), Vec::new());
        self.index(meta, true);
        Ok(())
    }

    fn insert_in_order(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        // Entity keys end in the seq: the order is the key order.
        self.insert(meta, op)
    }

    fn journal_last(&mut self) -> Result<u64> {
        Ok(self
            .get(META, META_ACKED_LAST)?
            .and_then(|v| keys::read_u64(&v))
            .unwrap_or(0))
    }

    fn journal_put(&mut self, n: u64, at: EpochMillis, body: Vec<u8>) -> Result<()> {
        let mut value = Vec::with_capacity(8 + body.len());
        value.extend_from_slice(&at.to_be_bytes());
        value.extend_from_slice(&body);
        self.put(ACKED, &keys::seq_key(n), value);
        self.put(META, META_ACKED_LAST, keys::seq_key(n).to_vec());
        Ok(())
    }

    fn journal_scan(&mut self, after: u64, limit: usize, bodies: bool) -> Result<Vec<JournalRow>> {
        let from = keys::seq_key(after.saturating_add(1));
        let mut out = Vec::new();
        for (k, v) in self.scan(ACKED, &from, None, limit)? {
            let Some(n) = keys::read_u64(&k) else {
                continue;
            };
            // A value too short for its time is listed with an empty body:
            // it does not decode, so it is reported (and counted
            // unrecoverable by a requeue), never silently skipped.
            let (at, body) = match v.split_first_chunk::<8>() {
                Some((at, body)) => (u64::from_be_bytes(*at), body),
                None => (0, &[][..]),
            };
            out.push(JournalRow {
                n,
                at,
                body: if bodies { body.to_vec() } else { Vec::new() },
            });
        }
        Ok(out)
    }

    fn journal_remove_upto(&mut self, upto: u64) -> Result<()> {
        loop {
            let rows = self.journal_scan(0, 4096, false)?;
            let Some(last) = rows.last().map(|r| r.n) else {
                return Ok(());
            };
            for row in rows.iter().take_while(|r| r.n <= upto) {
                self.del(ACKED, &keys::seq_key(row.n));
            }
            if last >= upto || rows.len() < 4096 {
                return Ok(());
            }
        }
    }

    fn update(&mut self, old: &OpMeta, new: &OpMeta) -> Result<()> {
        self.index(old, false);
        self.index(new, true);
        self.put_meta(new)
    }

    fn update_op(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        let bytes = envelope::encode_operation(op).map_err(StorageError::Encode)?;
        self.put(OPS, &keys::seq_key(meta.seq), bytes);
        Ok(())
    }

    fn set_remote(&mut self, meta: &OpMeta, remote: Option<&RemoteRecord>) -> Result<()> {
        let key = keys::seq_key(meta.seq);
        match remote {
            Some(r) => {
                let bytes =
                    envelope::encode(RecordKind::Deferred, r).map_err(StorageError::Encode)?;
                self.put(REMOTES, &key, bytes);
            }
            None => self.del(REMOTES, &key),
        }
        Ok(())
    }

    fn delete(&mut self, meta: &OpMeta) -> Result<()> {
        // The stored bookkeeping is the one indexed; prefer it to the
        // caller's copy.
        let stored = self.meta(meta.seq)?.unwrap_or_else(|| meta.clone());
        self.index(&stored, false);
        let key = keys::seq_key(meta.seq);
        self.del(OPS, &key);
        self.del(METAS, &key);
        self.del(REMOTES, &key);
        self.del(IDS, &keys::id_key(stored.id));
        let prefix = keys::entity_prefix(&stored.entity);
        self.del(ENTS, &keys::entity_seq_key(&prefix, meta.seq));
        Ok(())
    }

    fn load_op(&mut self, meta: &OpMeta) -> Result<Loaded<Operation>> {
        match self.get(OPS, &keys::seq_key(meta.seq))? {
            Some(raw) => Ok(rules::decode_op(raw, self.body_limit)),
            None => Ok(Loaded::Corrupt {
                raw: Vec::new(),
                error: EnvelopeError::Malformed("operation record missing".into()),
            }),
        }
    }

    fn load_remote(&mut self, meta: &OpMeta) -> Result<Option<Loaded<RemoteRecord>>> {
        Ok(self
            .get(REMOTES, &keys::seq_key(meta.seq))?
            .map(|raw| rules::decode_remote(raw, self.body_limit)))
    }

    fn raw_op(&mut self, meta: &OpMeta) -> Result<Vec<u8>> {
        Ok(self.get(OPS, &keys::seq_key(meta.seq))?.unwrap_or_default())
    }

    fn purge_quarantine(&mut self) -> Result<u64> {
        let entries = self.scan(QUARANTINE, &[], None, usize::MAX)?;
        for (k, _) in &entries {
            self.del(QUARANTINE, k);
        }
        self.state.quarantined = 0;
        self.touch_state();
        Ok(entries.len() as u64)
    }

    fn quarantine(
        &mut self,
        meta: &OpMeta,
        raw: Vec<u8>,
        reason: String,
        at: EpochMillis,
    ) -> Result<()> {
        self.put_quarantine(rules::quarantine_key(meta), reason, raw, at)
    }

    fn due_heads(&mut self, limit: usize) -> Result<Vec<OpMeta>> {
        let seqs = self.seqs_in(DUE, &[], None, limit)?;
        self.metas_of(seqs)
    }

    fn timed_heads_upto(&mut self, now: EpochMillis, limit: usize) -> Result<Vec<OpMeta>> {
        let seqs = self.seqs_in(TIMED, &[], Some(&time_upto(now)), limit)?;
        self.metas_of(seqs)
    }

    fn aging_heads_upto(&mut self, cutoff: EpochMillis, limit: usize) -> Result<Vec<OpMeta>> {
        let seqs = self.seqs_in(AGING, &[], Some(&time_upto(cutoff)), limit)?;
        self.metas_of(seqs)
    }

    fn min_timed(&mut self) -> Result<Option<EpochMillis>> {
        Ok(self
            .scan(TIMED, &[], None, 1)?
            .first()
            .and_then(|(k, _)| keys::parse_time_key(k))
            .map(|(at, _)| at))
    }

    fn expired_leases(&mut self, now: EpochMillis) -> Result<Vec<OpMeta>> {
        let seqs = self.seqs_in(LEASES, &[], Some(&time_upto(now)), usize::MAX)?;
        self.metas_of(seqs)
    }

    fn counters(&mut self) -> &mut Counters {
        &mut self.counters
    }

    fn notices(&mut self) -> &mut Vec<QuarantineNotice> {
        &mut self.notices
    }
}

impl SledTx<'_> {
    /// Keeps `raw` in the quarantine tree.
    pub(super) fn put_quarantine(
        &mut self,
        key: String,
        reason: String,
        raw: Vec<u8>,
        at: EpochMillis,
    ) -> Result<()> {
        let entry = QuarantineEntry {
            key,
            reason,
            raw,
            at,
        };
        let bytes = envelope::encode(RecordKind::Meta, &entry).map_err(StorageError::Encode)?;
        let n = self.state.quarantine_seq;
        self.state.quarantine_seq += 1;
        self.state.quarantined += 1;
        self.state_dirty = true;
        self.put(QUARANTINE, &keys::seq_key(n), bytes);
        Ok(())
    }
}
