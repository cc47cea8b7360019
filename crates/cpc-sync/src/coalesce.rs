//! The engine's coalescers, one per collection
//! ([`SyncEngineBuilder::coalesce`](crate::SyncEngineBuilder::coalesce)).

use std::collections::BTreeMap;
use std::sync::Arc;

use cpc_core::{Coalesced, Coalescer, Operation};

/// The coalescers by collection, as one [`Coalescer`] for the store: an
/// operation of a collection without one is kept as it is.
#[derive(Debug, Default)]
pub(crate) struct ByCollection {
    by: BTreeMap<String, Arc<dyn Coalescer>>,
}

impl ByCollection {
    pub(crate) fn insert(&mut self, collection: String, coalescer: Arc<dyn Coalescer>) {
        self.by.insert(collection, coalescer);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by.is_empty()
    }

    /// Whether any of `ops` belongs to a collection that coalesces (the
    /// others take the plain enqueue, which costs nothing extra).
    pub(crate) fn wanted(&self, ops: &[Operation]) -> bool {
        !self.by.is_empty()
            && ops
                .iter()
                .any(|op| self.by.contains_key(&op.entity.collection))
    }
}

impl Coalescer for ByCollection {
    fn coalesce(&self, earlier: &Operation, later: &Operation) -> Coalesced {
        match self.by.get(&later.entity.collection) {
            Some(c) => c.coalesce(earlier, later),
            None => Coalesced::Keep,
        }
    }

    fn wants(&self, later: &Operation) -> bool {
        self.by
            .get(&later.entity.collection)
            .is_some_and(|c| c.wants(later))
    }
}
