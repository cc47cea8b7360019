//! Pulling the remote's changes down: server positions, cursors, pages, and
//! the [`RemoteSink`] the application implements to apply them.
//!
//! A transport turns a [`PullQuery`] into a checked [`PullPage`]; the
//! engine hands the page to the sink and persists the page's cursor only
//! after the sink returned `Ok` (at-least-once delivery; the sink makes the
//! effect exactly-once by `(entity, version)`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::hlc::HlcTimestamp;
use crate::id::OperationId;
use crate::operation::EntityKey;

/// A position in a remote's history: its store, a change-log `seq` and the
/// history's fingerprint there (two stores that share a position's `seq`
/// but not its `fp` have different histories).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemotePosition {
    /// The remote store's identity.
    pub store_id: String,
    /// The change-log position.
    pub seq: u64,
    /// The history's fingerprint at `seq`.
    pub fp: u64,
}

/// Where a scope's feed stands: a position, plus the last key covered while
/// a snapshot is in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullCursor {
    /// The position the feed continues from (during a snapshot: its base).
    pub position: RemotePosition,
    /// During a snapshot: the last key the pages so far covered.
    pub after: Option<EntityKey>,
}

/// What the engine asks a transport for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullQuery {
    /// The scope's cursor; `None`: never pulled (a snapshot follows).
    pub cursor: Option<PullCursor>,
    /// The highest server position this device has seen.
    pub known: Option<RemotePosition>,
    /// Long-poll time when there is nothing new (zero: answer at once).
    pub wait: Duration,
    /// Most changes in the page.
    pub limit: u32,
    /// The scope: only these collections; `None`: all.
    pub collections: Option<Vec<String>>,
}

/// One entity state pulled from the remote.
#[derive(Clone, PartialEq, Eq)]
pub struct PulledChange {
    /// The change-log position that wrote this state.
    pub seq: u64,
    /// The entity.
    pub entity: EntityKey,
    /// Its version at `seq`.
    pub version: u64,
    /// The content; `None`: deleted.
    pub payload: Option<Vec<u8>>,
    /// The writer's timestamp.
    pub timestamp: HlcTimestamp,
    /// Set when this device wrote it: the operation that did.
    pub own_op: Option<OperationId>,
}

impl fmt::Debug for PulledChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PulledChange")
            .field("seq", &self.seq)
            .field("entity", &self.entity)
            .field("version", &self.version)
            .field("payload_len", &self.payload.as_ref().map(Vec::len))
            .field("timestamp", &self.timestamp)
            .field("own_op", &self.own_op)
            .finish()
    }
}

/// Why a remote answered with a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetReason {
    /// A first sync.
    Initial,
    /// The cursor named another store.
    UnknownStore,
    /// The cursor was below the remote's compaction horizon.
    Compacted,
    /// The remote's history differs from the cursor's (a restore).
    Diverged,
}

/// The key range a snapshot page covers, `(from, through]`: the sink's
/// copy of the scope in that range becomes exactly the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRange {
    /// Exclusive lower bound; `None`: the start of the key space.
    pub from: Option<EntityKey>,
    /// Inclusive upper bound; `None`: the end of the key space.
    pub through: Option<EntityKey>,
    /// Set on a snapshot's first page.
    pub reset: Option<ResetReason>,
}

impl SnapshotRange {
    /// Whether `key` lies in `(from, through]` (keys order by collection
    /// bytes, then id bytes).
    pub fn contains(&self, key: &EntityKey) -> bool {
        self.from.as_ref().is_none_or(|f| key > f) && self.through.as_ref().is_none_or(|t| key <= t)
    }
}

/// A checked page of a pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullPage {
    /// Changes (in `seq` order) or, on a snapshot page, current states (in
    /// key order).
    pub changes: Vec<PulledChange>,
    /// The cursor to persist once the page is applied.
    pub cursor: PullCursor,
    /// Pull again now.
    pub has_more: bool,
    /// Set on snapshot pages.
    pub snapshot: Option<SnapshotRange>,
    /// The remote's head when it read the page.
    pub head: RemotePosition,
    /// Bytes the page took on the wire.
    pub bytes: u64,
}

/// A change as handed to the sink, with this device's operations still
/// pending on its entity (oldest first): while any is pending, the
/// application keeps showing its optimistic value on top of this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkChange {
    /// The remote's state.
    pub change: PulledChange,
    /// Local operations on this entity not yet acknowledged.
    pub pending: Vec<OperationId>,
}

/// A page as handed to the sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkPage {
    /// The changes, in the page's order.
    pub changes: Vec<SinkChange>,
    /// On a snapshot page: the range the page replaces, and the scope.
    pub replace: Option<(SnapshotRange, Option<Vec<String>>)>,
}

/// Why a sink could not apply a page: the engine keeps the cursor, backs
/// off, and delivers the same page again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the sink could not apply the page: {0}")]
pub struct SinkError(pub String);

/// Where the application receives the remote's changes.
///
/// # Contract
/// - `apply` gets one page at a time, never two at once, in feed order.
/// - **Idempotent by `(entity, version)`.** Delivery is at least once: a
///   page whose cursor was not yet persisted (a crash, an error) comes
///   again. For a change page, apply a change only if its `version` is
///   greater than the one held for the entity (`payload: None` is a
///   deletion).
/// - **Replace semantics for snapshot pages** (`replace` is `Some`): for
///   every entity of the scope (`None`: every collection) whose key lies in
///   the range, set the held state to the listed one whatever the held
///   version, and delete every held entity of the scope in the range that
///   the page does not list.
/// - Return `Ok` only once the page is applied as durably as the
///   application needs: the engine then persists the cursor and never
///   delivers these changes again. An `Err` keeps the cursor.
/// - `pending` lists local operations not yet acknowledged on the entity:
///   the application usually shows its own value until they settle.
///
/// Object safe: the engine holds an `Arc<dyn RemoteSink>`.
#[async_trait]
pub trait RemoteSink: fmt::Debug + Send + Sync {
    /// Applies one page.
    async fn apply(&self, page: &SinkPage) -> Result<(), SinkError>;
}

#[async_trait]
impl<T: RemoteSink + ?Sized> RemoteSink for std::sync::Arc<T> {
    async fn apply(&self, page: &SinkPage) -> Result<(), SinkError> {
        (**self).apply(page).await
    }
}

/// One entity as a [`MemorySink`] holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct HeldEntity {
    /// The version applied.
    pub version: u64,
    /// The content; `None`: a tombstone (from a change page).
    pub payload: Option<Vec<u8>>,
}

impl fmt::Debug for HeldEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldEntity")
            .field("version", &self.version)
            .field("payload_len", &self.payload.as_ref().map(Vec::len))
            .finish()
    }
}

/// A [`RemoteSink`] that keeps the remote state in memory, following the
/// contract to the letter: for tests, simulations, benchmarks, and as the
/// reference an application's own sink can be compared with.
#[derive(Debug, Default)]
pub struct MemorySink {
    held: Mutex<BTreeMap<EntityKey, HeldEntity>>,
    pages: Mutex<u64>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// The live entities (tombstones left out) and their versions and
    /// payloads.
    pub fn live(&self) -> BTreeMap<EntityKey, HeldEntity> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, h)| h.payload.is_some())
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect()
    }

    /// A sink that holds `held` already, tombstones included: an
    /// application's saved state, restored at start beside the cursor it
    /// was saved with.
    pub fn with_held(held: BTreeMap<EntityKey, HeldEntity>) -> MemorySink {
        MemorySink {
            held: Mutex::new(held),
            pages: Mutex::new(0),
        }
    }

    /// Everything held, tombstones included: what to save so that
    /// [`MemorySink::with_held`] can restore it.
    pub fn held(&self) -> BTreeMap<EntityKey, HeldEntity> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Pages applied so far.
    pub fn pages(&self) -> u64 {
        *self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl RemoteSink for MemorySink {
    async fn apply(&self, page: &SinkPage) -> Result<(), SinkError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((range, scope)) = &page.replace {
            let in_scope = |k: &EntityKey| scope.as_ref().is_none_or(|s| s.contains(&k.collection));
            held.retain(|k, _| !(range.contains(k) && in_scope(k)));
            for c in &page.changes {
                held.insert(
                    c.change.entity.clone(),
                    HeldEntity {
                        version: c.change.version,
                        payload: c.change.payload.clone(),
                    },
                );
            }
        } else {
            for c in &page.changes {
                let newer = held
                    .get(&c.change.entity)
                    .is_none_or(|h| c.change.version > h.version);
                if newer {
                    held.insert(
                        c.change.entity.clone(),
                        HeldEntity {
                            version: c.change.version,
                            payload: c.change.payload.clone(),
                        },
                    );
                }
            }
        }
        *self.pages.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::NodeId;

    fn change(id: &str, version: u64, payload: Option<&str>) -> SinkChange {
        SinkChange {
            change: PulledChange {
                seq: version,
                entity: EntityKey::new("notes", id),
                version,
                payload: payload.map(|p| p.as_bytes().to_vec()),
                timestamp: HlcTimestamp::new(1, 0, NodeId(1)),
                own_op: None,
            },
            pending: Vec::new(),
        }
    }

    fn page(changes: Vec<SinkChange>, replace: Option<SnapshotRange>) -> SinkPage {
        SinkPage {
            changes,
            replace: replace.map(|r| (r, None)),
        }
    }

    #[tokio::test]
    async fn change_pages_apply_only_newer_versions_and_snapshots_replace_their_range() {
        let sink = MemorySink::new();
        let p = page(
            vec![change("a", 2, Some("a2")), change("b", 1, Some("b1"))],
            None,
        );
        sink.apply(&p).await.unwrap();
        // Delivered again, and an older version: no effect.
        sink.apply(&p).await.unwrap();
        sink.apply(&page(vec![change("a", 1, Some("old"))], None))
            .await
            .unwrap();
        assert_eq!(sink.live()[&EntityKey::new("notes", "a")].version, 2);
        // A snapshot of (None, "b"] listing only "b" at a lower version:
        // "a" is gone, "b" is the listed state whatever its version.
        let range = SnapshotRange {
            from: None,
            through: Some(EntityKey::new("notes", "b")),
            reset: Some(ResetReason::Diverged),
        };
        sink.apply(&page(vec![change("b", 1, Some("b-restored"))], Some(range)))
            .await
            .unwrap();
        let live = sink.live();
        assert_eq!(live.len(), 1);
        assert_eq!(
            live[&EntityKey::new("notes", "b")].payload.as_deref(),
            Some(&b"b-restored"[..])
        );
        // A deletion on a change page.
        sink.apply(&page(vec![change("b", 5, None)], None))
            .await
            .unwrap();
        assert!(sink.live().is_empty());
        assert_eq!(sink.pages(), 5);
    }

    #[tokio::test]
    async fn a_sink_restored_with_its_held_state_keeps_tombstones_through_an_arc() {
        let a = EntityKey::new("notes", "a");
        let b = EntityKey::new("notes", "b");
        let mut saved = BTreeMap::new();
        saved.insert(
            a.clone(),
            HeldEntity {
                version: 4,
                payload: None,
            },
        );
        saved.insert(
            b.clone(),
            HeldEntity {
                version: 1,
                payload: Some(b"b1".to_vec()),
            },
        );
        let sink = std::sync::Arc::new(MemorySink::with_held(saved.clone()));
        assert_eq!(sink.held(), saved);
        assert_eq!(sink.live().keys().collect::<Vec<_>>(), vec![&b]);
        assert_eq!(sink.pages(), 0);
        // Applied through the `Arc` forwarding impl: a change older than
        // the tombstone leaves "a" deleted, a newer one of "b" lands.
        let p = page(
            vec![change("a", 3, Some("old")), change("b", 2, Some("b2"))],
            None,
        );
        <std::sync::Arc<MemorySink> as RemoteSink>::apply(&sink, &p)
            .await
            .unwrap();
        let held = sink.held();
        assert_eq!(held[&a].payload, None);
        assert_eq!(held[&a].version, 4);
        assert_eq!(held[&b].payload.as_deref(), Some(&b"b2"[..]));
        assert_eq!(sink.pages(), 1);
        let text = format!("{:?}", held[&b]);
        assert!(!text.contains("b2"), "{text}");
        assert_eq!(text, "HeldEntity { version: 2, payload_len: Some(2) }");
    }

    #[test]
    fn a_range_is_open_below_and_closed_above() {
        let r = SnapshotRange {
            from: Some(EntityKey::new("a", "1")),
            through: Some(EntityKey::new("a", "3")),
            reset: None,
        };
        assert!(!r.contains(&EntityKey::new("a", "1")));
        assert!(r.contains(&EntityKey::new("a", "2")));
        assert!(r.contains(&EntityKey::new("a", "3")));
        assert!(!r.contains(&EntityKey::new("b", "0")));
    }

    #[test]
    fn debug_of_a_change_shows_its_payload_length_only() {
        let c = change("a", 1, Some("secret"));
        assert!(!format!("{:?}", c.change).contains("secret"));
    }
}
