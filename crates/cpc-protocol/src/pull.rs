//! `POST /v1/pull` (docs/protocol.md §7): the request, change and snapshot
//! pages, the cursor, and the reset reasons. These types and the checks in
//! `pull_check.rs` are the contract both sides build on.

use serde::{Deserialize, Serialize};

use crate::encoding::{Hex64, Payload};
use crate::push::{EntityKey, Position, Timestamp};
use crate::strict::objects_only;
use crate::OpId;

/// A pull request: the next page of one scope's feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PullRequest {
    /// The protocol version of the body; `1`.
    pub protocol: u32,
    /// The pulling device; must be bound to the token.
    pub client_id: String,
    /// The highest server position this client has seen (§8).
    #[serde(default)]
    pub known: Option<Position>,
    /// Where this scope's feed stands; `None`: never pulled (a snapshot
    /// follows).
    #[serde(default)]
    pub cursor: Option<Cursor>,
    /// Most changes in the page (1 ..= `max_pull_limit`).
    pub limit: u64,
    /// Most bytes of the whole answer body (`min_pull_bytes` ..=
    /// `max_pull_bytes`).
    pub max_bytes: u64,
    /// Long-poll time when there is nothing to send (0 ..=
    /// `max_pull_wait_ms`).
    pub wait_ms: u64,
    /// The scope: only these collections; `None`: all.
    #[serde(default)]
    pub collections: Option<Vec<String>>,
}

/// Where a scope's feed stands: a server position, plus the last key of a
/// snapshot in progress. (Unknown members are ignored: it appears in
/// answers too, which are extensible.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Cursor {
    /// The store's identity.
    pub store_id: String,
    /// The change-log position.
    pub seq: u64,
    /// The history's fingerprint at `seq`.
    pub fp: Hex64,
    /// Only in the middle of a snapshot: the last key it covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<EntityKey>,
}

impl Cursor {
    /// The cursor's position (without `after`).
    pub fn position(&self) -> Position {
        Position {
            store_id: self.store_id.clone(),
            seq: self.seq,
            fp: self.fp,
        }
    }
}

/// A page of a pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    /// The page: change-log rows (a change page) or current entity states
    /// (a snapshot page).
    pub changes: Vec<Change>,
    /// Send it back in the next pull; persist it only after the page was
    /// applied.
    pub cursor: Cursor,
    /// Pull again now: there is more.
    pub has_more: bool,
    /// Non-null exactly on the first page of a snapshot.
    pub reset: Option<Reset>,
    /// Non-null on every snapshot page: the key range it covers.
    pub snapshot: Option<SnapshotRange>,
    /// The server's head when the page was read.
    pub head: Position,
}

/// One entity state, as written at `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The change-log position that produced this state.
    pub seq: u64,
    /// The entity.
    pub entity: EntityKey,
    /// Its version at `seq` (at least 1).
    pub version: u64,
    /// A tombstone.
    pub deleted: bool,
    /// The content; `None` exactly when deleted.
    pub payload: Option<Payload>,
    /// Of the operation that wrote it.
    pub timestamp: Timestamp,
    /// `timestamp.node`.
    pub node: Hex64,
    /// The pushed operation that wrote it, if known.
    pub origin: Option<Origin>,
}

/// Which pushed operation wrote a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The pushing client.
    pub client_id: String,
    /// Its operation.
    pub op: OpId,
}

/// Why a snapshot starts (first page only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reset {
    /// The reason; an unknown one does not parse (a protocol error for a v1
    /// client).
    pub reason: ResetReason,
}

/// The v1 reset reasons (§7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The cursor was `null`: a first sync.
    Initial,
    /// The cursor names another store.
    UnknownStore,
    /// The cursor is below the compaction horizon.
    Compacted,
    /// The server has no row at the cursor's `seq`, or another `fp` there.
    Diverged,
}

/// The key range a snapshot page covers: `(from, through]`, `None` meaning
/// the start and the end of the key space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRange {
    /// Exclusive lower bound (the request cursor's `after`).
    pub from: Option<EntityKey>,
    /// Inclusive upper bound; `None`: the snapshot reached the end.
    pub through: Option<EntityKey>,
}

/// The pull limits a server enforces and advertises (§3), beside the push
/// [`Limits`](crate::Limits) in `GET /v1/info`. A limit an answer does not
/// list takes its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PullLimits {
    /// Most changes per page a request may ask for.
    pub max_pull_limit: u64,
    /// The least `max_bytes` a request may give (fits one change of the
    /// largest payload).
    pub min_pull_bytes: u64,
    /// The most `max_bytes` a request may give.
    pub max_pull_bytes: u64,
    /// The longest long poll.
    pub max_pull_wait_ms: u64,
    /// Most collections in a scope.
    pub max_pull_collections: u64,
    /// How long change-log rows are kept; a cursor below the compaction
    /// horizon gets a snapshot (`reset: compacted`).
    pub change_retention_ms: u64,
}

impl Default for PullLimits {
    fn default() -> Self {
        PullLimits {
            max_pull_limit: 10_000,
            min_pull_bytes: 2 << 20,
            max_pull_bytes: 8 << 20,
            max_pull_wait_ms: 25_000,
            max_pull_collections: 64,
            change_retention_ms: 30 * 24 * 3600 * 1000,
        }
    }
}

objects_only!(PullRequest, Cursor);
