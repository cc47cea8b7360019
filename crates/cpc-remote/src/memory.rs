//! [`MemoryRemote`]: a remote store in memory that runs the shared push
//! driver ([`apply_batch`](crate::apply_batch)) and the §8 history check,
//! the model the durable stores are checked against (a differential test
//! in `cpc-server` pushes the same random batches to it and to the
//! embedded SQLite store and requires the same answers).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use cpc_protocol::{EntityKey, Hex64, Limits, OpOutcome, Position, WireOp};

use crate::push::{apply_batch, PushStore};
use crate::rules::{self, Current, Head, NewChange, Rules, Seen};

/// One change-log row, as far as the rules and the history check need it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    entity: EntityKey,
    version: u64,
    fp: u64,
}

/// A push refused by the §8 history check: `known` is not a position of
/// this history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diverged {
    /// The store's head, which the client adopts once it has queued again
    /// what it retained.
    pub head: Position,
}

/// A remote store in memory: entities, a change log with the running
/// fingerprint, and the idempotency table, judged by the shared rules.
#[derive(Debug, Clone)]
pub struct MemoryRemote {
    store_id: String,
    rules: Rules,
    head: Head,
    entities: BTreeMap<EntityKey, Current>,
    /// (client id, operation id text) → its application.
    applied: HashMap<(String, String), Seen>,
    changes: Vec<Change>,
}

impl MemoryRemote {
    /// An empty store named `store_id`, enforcing `limits`.
    pub fn new(store_id: impl Into<String>, limits: Limits) -> MemoryRemote {
        MemoryRemote {
            store_id: store_id.into(),
            rules: Rules::new(limits),
            head: Head::default(),
            entities: BTreeMap::new(),
            applied: HashMap::new(),
            changes: Vec::new(),
        }
    }

    /// The rules it judges by (to break some on purpose, with the feature
    /// `test-faults`).
    pub fn rules_mut(&mut self) -> &mut Rules {
        &mut self.rules
    }

    /// Where its history stands.
    pub fn head(&self) -> Position {
        Position {
            store_id: self.store_id.clone(),
            seq: self.head.seq,
            fp: Hex64(self.head.fp),
        }
    }

    /// The entity as stored, if it ever was written.
    pub fn entity(&self, key: &EntityKey) -> Option<&Current> {
        self.entities.get(key)
    }

    /// Applies `client_id`'s batch as a server does (§6): refused whole
    /// when `known` is not in this history (§8), else one outcome per
    /// operation, and the head after it.
    pub fn push(
        &mut self,
        client_id: &str,
        ops: &[WireOp],
        known: Option<&Position>,
    ) -> Result<(Vec<OpOutcome>, Position), Diverged> {
        if let Some(known) = known {
            let changes = &self.changes;
            let fp_at = |seq: u64| -> Result<Option<u64>, Infallible> {
                Ok(match seq {
                    0 => Some(0),
                    _ => usize::try_from(seq - 1)
                        .ok()
                        .and_then(|i| changes.get(i))
                        .map(|c| c.fp),
                })
            };
            let Ok(inside) = rules::in_history(&self.store_id, self.head.seq, known, fp_at);
            if !inside {
                return Err(Diverged { head: self.head() });
            }
        }
        let mut head = self.head;
        let rules = self.rules;
        let Ok(outcomes) = apply_batch(self, &mut head, client_id, ops, &rules);
        self.head = head;
        Ok((outcomes, self.head()))
    }
}

impl PushStore for MemoryRemote {
    type Error = Infallible;

    fn seen(&mut self, client_id: &str, op: &WireOp) -> Result<Option<Seen>, Infallible> {
        Ok(self
            .applied
            .get(&(client_id.to_owned(), op.id.to_string()))
            .cloned())
    }

    fn current(&mut self, entity: &EntityKey) -> Result<Option<Current>, Infallible> {
        Ok(self.entities.get(entity).cloned())
    }

    fn write(
        &mut self,
        client_id: &str,
        op: &WireOp,
        change: &NewChange<'_>,
    ) -> Result<(), Infallible> {
        self.entities.insert(
            op.entity.clone(),
            Current {
                version: change.version,
                timestamp: op.timestamp,
                payload: change.payload.map(<[u8]>::to_vec),
            },
        );
        // Seqs are dense unless a fault skips some: pad the gap so that a
        // row's index stays its seq - 1.
        while (self.changes.len() as u64) + 1 < change.seq {
            let fp = self.changes.last().map_or(0, |c| c.fp);
            self.changes.push(Change {
                entity: op.entity.clone(),
                version: 0,
                fp,
            });
        }
        self.changes.push(Change {
            entity: op.entity.clone(),
            version: change.version,
            fp: change.fp,
        });
        let key = (client_id.to_owned(), change.op_text.clone());
        let seen = Seen {
            version: change.version,
            seq: change.seq,
            content_hash: change.content_hash.to_vec(),
        };
        // Fault `no_dedupe`: the second application replaces the record,
        // as the durable stores do.
        self.applied.insert(key, seen);
        Ok(())
    }

    #[cfg(feature = "test-faults")]
    fn record_as_final(
        &mut self,
        client_id: &str,
        op: &WireOp,
        _outcome: &cpc_protocol::Outcome,
    ) -> Result<(), Infallible> {
        let version = self.entities.get(&op.entity).map_or(0, |c| c.version);
        let seq = self
            .changes
            .iter()
            .rposition(|c| c.entity == op.entity)
            .map_or(0, |i| i as u64 + 1);
        self.applied.insert(
            (client_id.to_owned(), op.id.to_string()),
            Seen {
                version,
                seq,
                content_hash: rules::content_hash(op).to_vec(),
            },
        );
        Ok(())
    }
}
