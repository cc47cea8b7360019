//! The simulated remote's change feed (docs/protocol.md §7, in memory):
//! one row per applied change with a running fingerprint, change pages and
//! snapshot pages with the reference server's rules, compaction of a
//! prefix, and a restore to an earlier position (the fault no peer
//! detects: a server brought back from a backup).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cpc_core::{
    EntityKey, HlcTimestamp, NodeId, OperationId, PullCursor, PullPage, PullQuery, PulledChange,
    RemotePosition, ResetReason, SnapshotRange, TransportError,
};

use super::{EntityState, SimulatedRemote};

/// The store id of every simulated remote.
pub(crate) const STORE_ID: &str = "simulated-remote";

/// A page's size budget: what the wire would carry (base64 payloads plus
/// a fixed cost per change), like the reference server's 4 MiB default.
const PAGE_BYTES: u64 = 4 << 20;
/// Bytes a change costs besides its payload.
const CHANGE_BYTES: u64 = 256;

/// One change-log row.
#[derive(Clone)]
pub(crate) struct Row {
    pub entity: EntityKey,
    pub version: u64,
    /// `None`: deleted; also `None` once compacted (see `compacted`).
    pub payload: Option<Vec<u8>>,
    pub deleted: bool,
    pub timestamp: HlcTimestamp,
    pub node: NodeId,
    pub op: OperationId,
    pub fp: u64,
    /// When it was applied (simulated time).
    pub at: Duration,
}

/// The change log: row `i` has `seq = i + 1`.
#[derive(Default)]
pub(crate) struct Feed {
    pub rows: Vec<Row>,
    /// Rows up to here have lost their payload.
    pub compacted_through: u64,
}

/// Why a restore could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The position is above the head.
    #[error("cannot restore to seq {to}: the head is {head}")]
    AboveHead {
        /// The position asked for.
        to: u64,
        /// The head.
        head: u64,
    },
    /// The rows needed to rebuild that state were compacted.
    #[error("cannot restore to seq {to}: rows up to {horizon} are compacted")]
    Compacted {
        /// The position asked for.
        to: u64,
        /// The compaction horizon.
        horizon: u64,
    },
}

impl Feed {
    pub fn head(&self) -> RemotePosition {
        self.position(self.rows.len() as u64)
    }

    fn fp_at(&self, seq: u64) -> Option<u64> {
        match seq {
            0 => Some(0),
            s => self.rows.get(usize::try_from(s - 1).ok()?).map(|r| r.fp),
        }
    }

    fn position(&self, seq: u64) -> RemotePosition {
        RemotePosition {
            store_id: STORE_ID.to_owned(),
            seq,
            fp: self.fp_at(seq).unwrap_or(0),
        }
    }

    pub(crate) fn in_history(&self, p: &RemotePosition) -> bool {
        p.store_id == STORE_ID && self.fp_at(p.seq) == Some(p.fp)
    }

    /// Appends the change an apply made; the running fingerprint covers
    /// its seq, entity, version, op and payload.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        entity: &EntityKey,
        version: u64,
        payload: Option<Vec<u8>>,
        timestamp: HlcTimestamp,
        op: OperationId,
        at: Duration,
    ) -> u64 {
        let seq = self.rows.len() as u64 + 1;
        let prev = self.fp_at(seq - 1).unwrap_or(0);
        let deleted = payload.is_none();
        // The protocol's fingerprint (Appendix A), from the shared rules: a
        // simulated history is told apart exactly as a server's is. The
        // origin client is the device's node, the simulation's client id.
        let origin_client = format!("{:016x}", timestamp.node.0);
        let fp = cpc_remote::fp::next(
            prev,
            &cpc_remote::fp::ChangeRef {
                seq,
                collection: &entity.collection,
                id: &entity.id,
                version,
                deleted,
                wall_ms: timestamp.wall_ms,
                logical: timestamp.logical,
                node: timestamp.node.0,
                origin_client: &origin_client,
                origin_op: op.as_u128(),
                payload: payload.as_deref().unwrap_or(&[]),
            },
        );
        self.rows.push(Row {
            entity: entity.clone(),
            version,
            payload,
            deleted,
            timestamp,
            node: timestamp.node,
            op,
            fp,
            at,
        });
        seq
    }

    /// Empties the payloads of the rows applied before `before`, as a
    /// prefix; answers the new horizon.
    pub fn compact(&mut self, before: Duration) -> u64 {
        let start = usize::try_from(self.compacted_through).unwrap_or(usize::MAX);
        for row in self.rows.iter_mut().skip(start) {
            if row.at >= before {
                break;
            }
            row.payload = None;
            self.compacted_through += 1;
        }
        self.compacted_through
    }

    /// Cuts the log back to `to_seq` and answers the entity states it
    /// leaves (rebuilt from the rows).
    pub fn restore(
        &mut self,
        to_seq: u64,
    ) -> Result<BTreeMap<EntityKey, EntityState>, RestoreError> {
        let head = self.rows.len() as u64;
        if to_seq > head {
            return Err(RestoreError::AboveHead { to: to_seq, head });
        }
        if self.compacted_through > 0 {
            return Err(RestoreError::Compacted {
                to: to_seq,
                horizon: self.compacted_through,
            });
        }
        self.rows
            .truncate(usize::try_from(to_seq).unwrap_or(usize::MAX));
        let mut entities = BTreeMap::new();
        for (i, row) in self.rows.iter().enumerate() {
            entities.insert(
                row.entity.clone(),
                EntityState {
                    seq: i as u64 + 1,
                    version: row.version,
                    timestamp: row.timestamp,
                    node: row.node,
                    payload: if row.deleted {
                        None
                    } else {
                        row.payload.clone()
                    },
                },
            );
        }
        Ok(entities)
    }

    /// The page `query` asks for (§7.3–7.5), for the device `client`
    /// (whose own changes carry their op id).
    pub fn page(
        &self,
        query: &PullQuery,
        entities: &BTreeMap<EntityKey, EntityState>,
        client: Option<NodeId>,
    ) -> Result<PullPage, TransportError> {
        let head = self.head();
        if let Some(known) = &query.known {
            if !self.in_history(known) {
                return Err(TransportError::HistoryDiverged { head });
            }
        }
        let in_scope = |k: &EntityKey| {
            query
                .collections
                .as_ref()
                .is_none_or(|c| c.contains(&k.collection))
        };
        let reset = match &query.cursor {
            None => Some(ResetReason::Initial),
            Some(c) if c.position.store_id != STORE_ID => Some(ResetReason::UnknownStore),
            Some(c) if c.position.seq < self.compacted_through => Some(ResetReason::Compacted),
            Some(c) if !self.in_history(&c.position) => Some(ResetReason::Diverged),
            Some(_) => None,
        };
        let limit = usize::try_from(query.limit.max(1)).unwrap_or(usize::MAX);
        let cost = |payload: Option<&Vec<u8>>| {
            CHANGE_BYTES + payload.map_or(0, |p| (p.len() as u64).div_ceil(3) * 4)
        };
        let snapshot_from = match (&reset, &query.cursor) {
            (Some(_), _) => Some((head.clone(), None)),
            (None, Some(c)) if c.after.is_some() => Some((c.position.clone(), c.after.clone())),
            _ => None,
        };
        if let Some((base, from)) = snapshot_from {
            let mut changes = Vec::new();
            let mut bytes = 0u64;
            let mut more = false;
            let range = match &from {
                None => entities.range::<EntityKey, _>(..),
                Some(k) => entities.range::<EntityKey, _>((
                    std::ops::Bound::Excluded(k),
                    std::ops::Bound::Unbounded,
                )),
            };
            for (key, state) in range {
                if state.payload.is_none() || !in_scope(key) {
                    continue;
                }
                let c = cost(state.payload.as_ref());
                if changes.len() == limit || (!changes.is_empty() && bytes + c > PAGE_BYTES) {
                    more = true;
                    break;
                }
                bytes += c;
                changes.push(PulledChange {
                    seq: state.seq,
                    entity: key.clone(),
                    version: state.version,
                    payload: state.payload.clone(),
                    timestamp: state.timestamp,
                    own_op: None,
                });
            }
            let through = if more {
                changes.last().map(|c: &PulledChange| c.entity.clone())
            } else {
                None
            };
            let has_more = through.is_some() || head.seq > base.seq;
            return Ok(PullPage {
                changes,
                cursor: PullCursor {
                    position: base,
                    after: through.clone(),
                },
                has_more,
                snapshot: Some(SnapshotRange {
                    from,
                    through,
                    reset,
                }),
                head,
                bytes,
            });
        }
        let from = query.cursor.as_ref().map_or(0, |c| c.position.seq);
        let mut changes = Vec::new();
        let mut bytes = 0u64;
        let mut last = from;
        let start = usize::try_from(from).unwrap_or(usize::MAX);
        for (i, row) in self.rows.iter().enumerate().skip(start) {
            let seq = i as u64 + 1;
            if !in_scope(&row.entity) {
                last = seq;
                continue;
            }
            let c = cost(row.payload.as_ref());
            if changes.len() == limit || (!changes.is_empty() && bytes + c > PAGE_BYTES) {
                break;
            }
            bytes += c;
            last = seq;
            changes.push(PulledChange {
                seq,
                entity: row.entity.clone(),
                version: row.version,
                payload: if row.deleted {
                    None
                } else {
                    row.payload.clone()
                },
                timestamp: row.timestamp,
                own_op: (Some(row.node) == client).then_some(row.op),
            });
        }
        Ok(PullPage {
            changes,
            cursor: PullCursor {
                position: self.position(last),
                after: None,
            },
            has_more: last < head.seq,
            snapshot: None,
            head,
            bytes,
        })
    }
}

/// The feed's side of the remote: pulling, preloading, compacting,
/// restoring.
impl SimulatedRemote {
    /// A handle on the same remote for the device `node`: the changes its
    /// operations wrote carry their op id when it pulls (`origin`), as the
    /// reference server does for the pulling client.
    pub fn as_client(&self, node: NodeId) -> SimulatedRemote {
        SimulatedRemote {
            state: Arc::clone(&self.state),
            client: Some(node),
        }
    }

    /// The page `query` asks for, as the reference server would answer it
    /// (docs/protocol.md §7; long polls are answered at once).
    pub fn pull_page(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        let mut s = self.lock();
        let page = s.feed.page(query, &s.entities, self.client);
        if let Err(TransportError::HistoryDiverged { .. }) = &page {
            s.history_refusals += 1;
        }
        page
    }

    /// Changes lost in restores so far.
    pub fn restore_losses(&self) -> u64 {
        self.lock().restore_losses
    }

    /// Pulls refused with `history_diverged` (a device had seen a position
    /// a restore took away).
    pub fn history_refusals(&self) -> u64 {
        self.lock().history_refusals
    }

    /// The feed's head: its seq is the number of changes applied (and
    /// preloaded) since the last restore.
    pub fn head(&self) -> cpc_core::RemotePosition {
        self.lock().feed.head()
    }

    /// The live records (tombstones left out): version and payload, in
    /// key order. What every device's sink must hold after quiescence.
    pub fn live_state(&self) -> BTreeMap<EntityKey, (u64, Vec<u8>)> {
        self.lock()
            .entities
            .iter()
            .filter_map(|(k, e)| e.payload.clone().map(|p| (k.clone(), (e.version, p))))
            .collect()
    }

    /// Writes records as another writer would have before the run (an
    /// initial sync's data): in the feed, not in the apply log.
    pub fn preload(&self, records: impl IntoIterator<Item = (EntityKey, Vec<u8>)>) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let now = s.clock.elapsed();
        for (i, (entity, payload)) in records.into_iter().enumerate() {
            let version = s.entities.get(&entity).map_or(0, |e| e.version) + 1;
            let timestamp = HlcTimestamp::new(1, 0, NodeId(0));
            let op = OperationId::from_u128(u128::MAX - i as u128);
            let seq = s
                .feed
                .append(&entity, version, Some(payload.clone()), timestamp, op, now);
            s.entities.insert(
                entity,
                EntityState {
                    seq,
                    version,
                    timestamp,
                    node: NodeId(0),
                    payload: Some(payload),
                },
            );
        }
    }

    /// Compacts the feed: changes applied before `before` (simulated time
    /// since the start) lose their payload, as a prefix; a cursor below
    /// the new horizon gets a snapshot. Answers the horizon.
    pub fn compact(&self, before: Duration) -> u64 {
        self.lock().feed.compact(before)
    }

    /// Brings the remote back to its state at `to_seq`, as a restore from
    /// a backup would: later changes, and the memory of the operations
    /// that made them, are gone (a device that has seen them gets `409
    /// history_diverged` and a snapshot). The apply log keeps them: it is
    /// the history of what was ever applied. Answers how many changes were
    /// lost.
    pub fn restore(&self, to_seq: u64) -> Result<u64, RestoreError> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let head = s.feed.head().seq;
        let lost_ops: Vec<OperationId> = s
            .feed
            .rows
            .iter()
            .skip(usize::try_from(to_seq).unwrap_or(usize::MAX))
            .map(|r| r.op)
            .collect();
        s.entities = s.feed.restore(to_seq)?;
        s.restore_losses += head - to_seq;
        // The apply log is what the remote holds: what the restore took
        // away is no longer applied (a device that re-pushes it applies it
        // once more, not twice; one that does not has lost it).
        let lost: std::collections::HashSet<OperationId> = lost_ops.into_iter().collect();
        s.log.retain(|r| !lost.contains(&r.op_id));
        for op in &lost {
            s.applied.remove(op);
        }
        tracing::debug!(to_seq, lost = head - to_seq, "simulated remote restored");
        Ok(head - to_seq)
    }
}

#[cfg(test)]
mod tests {
    use crate::remote::SimulatedRemote;
    use cpc_core::{
        EntityKey, HybridClock, ManualWallClock, NodeId, Operation, OperationKind, PullQuery,
        ResetReason, TransportError,
    };
    use std::sync::Arc;
    use std::time::Duration;

    fn op(hlc: &HybridClock, id: &str) -> Operation {
        Operation::builder(EntityKey::new("notes", id), OperationKind::Update)
            .payload(id.as_bytes().to_vec())
            .build(hlc)
            .unwrap()
    }

    fn query(cursor: Option<cpc_core::PullCursor>) -> PullQuery {
        PullQuery {
            cursor,
            known: None,
            wait: Duration::ZERO,
            limit: 100,
            collections: None,
        }
    }

    #[test]
    fn pages_mark_own_writes_and_a_restore_or_compaction_resets_cursors() {
        let hlc = HybridClock::with_wall_clock(NodeId(3), Arc::new(ManualWallClock::new(1_000)));
        let remote = SimulatedRemote::default();
        let mine = remote.as_client(NodeId(3));
        let other = remote.as_client(NodeId(4));
        let ops: Vec<Operation> = ["a", "b", "c", "d"].iter().map(|i| op(&hlc, i)).collect();
        remote.apply_batch(&ops).unwrap();
        // A first pull is a snapshot of the four; then changes are empty.
        let snap = mine.pull_page(&query(None)).unwrap();
        assert_eq!(snap.changes.len(), 4);
        assert_eq!(snap.snapshot.unwrap().reset, Some(ResetReason::Initial));
        let from_zero = cpc_core::PullCursor {
            position: cpc_core::RemotePosition {
                seq: 0,
                fp: 0,
                ..snap.cursor.position.clone()
            },
            after: None,
        };
        let page = mine.pull_page(&query(Some(from_zero.clone()))).unwrap();
        assert!(page.changes.iter().all(|c| c.own_op.is_some()));
        let page = other.pull_page(&query(Some(from_zero))).unwrap();
        assert!(page.changes.iter().all(|c| c.own_op.is_none()));
        // A device that saw seq 4 after the remote lost its last two.
        let seen = page.cursor.clone();
        assert_eq!(remote.restore(2).unwrap(), 2);
        let after = mine.pull_page(&query(Some(seen.clone()))).unwrap();
        assert_eq!(after.snapshot.unwrap().reset, Some(ResetReason::Diverged));
        assert_eq!(after.changes.len(), 2);
        let mut with_known = query(Some(seen.clone()));
        with_known.known = Some(seen.position.clone());
        assert!(matches!(
            mine.pull_page(&with_known),
            Err(TransportError::HistoryDiverged { head }) if head.seq == 2
        ));
        // Compaction: a cursor below the horizon gets a snapshot.
        remote.apply_batch(&[op(&hlc, "e")]).unwrap();
        let old = after.cursor.clone();
        assert_eq!(remote.compact(Duration::MAX), 3);
        let mut at_one = old.clone();
        at_one.position = cpc_core::RemotePosition {
            seq: 1,
            fp: remote.lock().feed.rows[0].fp,
            ..old.position
        };
        let page = mine.pull_page(&query(Some(at_one))).unwrap();
        assert_eq!(page.snapshot.unwrap().reset, Some(ResetReason::Compacted));
        assert_eq!(remote.live_state().len(), 3);
    }
}
