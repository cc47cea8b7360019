//! A pull page, the same for every backend (docs/protocol.md §7.3–7.5):
//! which page a request gets (a reset, a snapshot, the change feed), the
//! rows filled while they fit, the cursor, and the answer serialized with
//! its size measured exactly. The backends read the rows, in order, and
//! feed them here.

use cpc_protocol::{
    Change, Cursor, EntityKey, Hex64, OpId, Origin, Payload, Position, PullRequest, Reset,
    ResetReason, SnapshotRange, Timestamp,
};
use serde::Serialize;
use serde_json::value::RawValue;

use super::schema::from_sql;
use super::StoreError;

/// With a collection filter, change-log rows examined per page at most: a
/// scope whose collections are rare must not make one pull scan the whole
/// log. The page's cursor then advances to the end of the window.
pub(crate) const SCAN_WINDOW: u64 = 100_000;

/// A page, serialized, with what the HTTP layer needs to decide on a long
/// poll.
#[derive(Debug)]
pub struct PullPage {
    /// The answer body (`application/json`).
    pub body: Vec<u8>,
    /// Changes or entities listed.
    pub listed: usize,
    /// A snapshot page (never waits).
    pub snapshot: bool,
    /// The answer's `has_more`.
    pub has_more: bool,
    /// The answer cursor's seq.
    pub cursor_seq: u64,
    /// The head the page was read at.
    pub head_seq: u64,
}

/// A row of the change log, or of the entities joined with its last
/// change, as a backend reads it (columns in the queries' order), before
/// it is a [`Change`].
pub(crate) struct ChangeRow {
    pub seq: i64,
    pub collection: String,
    pub id: String,
    pub version: i64,
    pub deleted: bool,
    pub payload: Option<Vec<u8>>,
    pub wall_ms: i64,
    pub logical: i64,
    pub node: i64,
    pub origin_client: Option<String>,
    pub origin_op: Option<String>,
    pub fp: Option<i64>,
}

impl ChangeRow {
    /// The change, and its fingerprint (change-log rows).
    pub(crate) fn into_change(self) -> Result<(Change, Option<u64>), StoreError> {
        let origin = match (
            self.origin_client,
            self.origin_op.and_then(|o| o.parse::<OpId>().ok()),
        ) {
            (Some(client_id), Some(op)) => Some(Origin { client_id, op }),
            _ => None,
        };
        let node = Hex64(self.node as u64);
        Ok((
            Change {
                seq: from_sql(self.seq)?,
                entity: EntityKey {
                    collection: self.collection,
                    id: self.id,
                },
                version: from_sql(self.version)?,
                deleted: self.deleted,
                payload: if self.deleted {
                    None
                } else {
                    Some(Payload(self.payload.unwrap_or_default()))
                },
                timestamp: Timestamp {
                    wall_ms: from_sql(self.wall_ms)?,
                    logical: u32::try_from(self.logical)
                        .map_err(|_| StoreError::Corrupt("a logical clock out of range"))?,
                    node,
                },
                node,
                origin,
            },
            self.fp.map(|fp| fp as u64),
        ))
    }
}

/// The page a request gets.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Snapshot entities after `from`, against the base position `base`;
    /// `reset` on the first page of a new snapshot.
    Snapshot {
        base: Position,
        from: Option<EntityKey>,
        reset: Option<ResetReason>,
    },
    /// The change log after the cursor.
    Changes(Cursor),
}

/// Decides the page: a reset when the cursor is none, of another store,
/// below the compaction horizon, or not in this history (`in_history`
/// tells whether the cursor's position is); a snapshot's next page; or
/// the change feed.
pub(crate) fn plan(
    request: &PullRequest,
    head: &Position,
    compacted_through: u64,
    in_history: bool,
) -> Plan {
    let reset = match &request.cursor {
        None => Some(ResetReason::Initial),
        Some(c) if c.store_id != head.store_id => Some(ResetReason::UnknownStore),
        Some(c) if c.seq < compacted_through => Some(ResetReason::Compacted),
        Some(_) if !in_history => Some(ResetReason::Diverged),
        Some(_) => None,
    };
    match (reset, &request.cursor) {
        (None, Some(c)) if c.after.is_some() => Plan::Snapshot {
            base: c.position(),
            from: c.after.clone(),
            reset: None,
        },
        (None, Some(c)) => Plan::Changes(c.clone()),
        // A cursor of none always resets (`Initial`).
        (reason, _) => Plan::Snapshot {
            base: head.clone(),
            from: None,
            reset: Some(reason.unwrap_or(ResetReason::Initial)),
        },
    }
}

/// The change log's rows a change page examines: above the cursor, up to
/// this seq (the head, or the end of the scan window with a filter).
pub(crate) fn change_window(request: &PullRequest, from: &Cursor, head: &Position) -> u64 {
    if request.collections.is_some() {
        head.seq.min(from.seq.saturating_add(SCAN_WINDOW))
    } else {
        head.seq
    }
}

/// The answer as written: `changes` already serialized, once, so that the
/// page's size is known exactly while it is filled.
#[derive(Serialize)]
struct Body<'a> {
    changes: &'a [&'a RawValue],
    cursor: &'a Cursor,
    has_more: bool,
    reset: Option<Reset>,
    snapshot: Option<&'a SnapshotRange>,
    head: &'a Position,
}

/// A row listed: its JSON, its seq, its fingerprint (change pages),
/// its key.
type Row = (Box<RawValue>, u64, Option<u64>, EntityKey);

/// A page being filled.
pub(crate) struct Fill {
    rows: Vec<Row>,
    bytes: usize,
}

impl Fill {
    pub(crate) fn new() -> Fill {
        Fill {
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a row unless it would take the page over `room` bytes (the
    /// first row always goes in: `min_pull_bytes` fits the largest one).
    /// Rows listed so far.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn push(
        &mut self,
        change: &Change,
        fp: Option<u64>,
        room: usize,
    ) -> Result<bool, StoreError> {
        let raw = serde_json::value::to_raw_value(change)
            .map_err(|_| StoreError::Corrupt("a change that does not serialize"))?;
        let cost = raw.get().len() + 1;
        if !self.rows.is_empty() && self.bytes + cost > room {
            return Ok(false);
        }
        self.bytes += cost;
        self.rows.push((raw, change.seq, fp, change.entity.clone()));
        Ok(true)
    }
}

/// Serializes a page; `None` if it is over `max_bytes` (the caller drops
/// its last row and tries again).
fn render(
    raws: &[&RawValue],
    cursor: &Cursor,
    has_more: bool,
    reset: Option<ResetReason>,
    snapshot: Option<&SnapshotRange>,
    head: &Position,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let body = serde_json::to_vec(&Body {
        changes: raws,
        cursor,
        has_more,
        reset: reset.map(|reason| Reset { reason }),
        snapshot,
        head,
    })
    .map_err(|_| StoreError::Corrupt("a page that does not serialize"))?;
    Ok((body.len() as u64 <= max_bytes || raws.len() <= 1).then_some(body))
}

/// Bytes of a page besides its changes, at most: two positions (one with
/// a key of up to 2 × 1024 bytes, escaped), the range, the other members.
pub(crate) fn envelope_room(max_bytes: u64) -> usize {
    const ENVELOPE: usize = 2 * 1024 * 6 * 2 + 1024;
    usize::try_from(max_bytes)
        .unwrap_or(usize::MAX)
        .saturating_sub(ENVELOPE)
        .max(1)
}

/// Finishes a change page (§7.3) from the rows filled (`cut`: one did not
/// fit). `upper` is [`change_window`]'s end and `upper_fp` its fingerprint
/// (needed with a filter only).
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_changes(
    mut fill: Fill,
    cut: bool,
    request: &PullRequest,
    from: &Cursor,
    upper: u64,
    upper_fp: Option<u64>,
    head: &Position,
    skip_first: bool,
) -> Result<PullPage, StoreError> {
    let filtered = request.collections.is_some();
    let full = cut || fill.rows.len() as u64 == request.limit;
    loop {
        // Unfiltered, or the page stopped early: the cursor is the last
        // row listed. Filtered and not full: every row up to `upper` was
        // examined.
        let (seq, fp) = match fill.rows.last() {
            Some((_, seq, fp, _)) if !filtered || full => (
                *seq,
                fp.ok_or(StoreError::Corrupt("a change without its fp"))?,
            ),
            _ if filtered => (
                upper,
                upper_fp.ok_or(StoreError::Corrupt("a gap in the change log"))?,
            ),
            _ => (from.seq, from.fp.0),
        };
        let cursor = Cursor {
            store_id: head.store_id.clone(),
            seq,
            fp: Hex64(fp),
            after: None,
        };
        let has_more = seq < head.seq;
        // Fault `pull_skip_change` (feature test-faults): the first change
        // goes missing while the cursor still passes it.
        let raws: Vec<&RawValue> = fill
            .rows
            .iter()
            .skip(usize::from(skip_first))
            .map(|r| &*r.0)
            .collect();
        match render(
            &raws,
            &cursor,
            has_more,
            None,
            None,
            head,
            request.max_bytes,
        )? {
            Some(body) => {
                return Ok(PullPage {
                    body,
                    listed: raws.len(),
                    snapshot: false,
                    has_more,
                    cursor_seq: seq,
                    head_seq: head.seq,
                })
            }
            None => {
                fill.rows.pop();
            }
        }
    }
}

/// Finishes a snapshot page (§7.4) from the rows filled (`more`: there
/// are entities after them).
pub(crate) fn finish_snapshot(
    mut fill: Fill,
    mut more: bool,
    request: &PullRequest,
    base: &Position,
    from: Option<EntityKey>,
    reset: Option<ResetReason>,
    head: &Position,
) -> Result<PullPage, StoreError> {
    loop {
        let through = if more {
            fill.rows.last().map(|r| r.3.clone())
        } else {
            None
        };
        let cursor = Cursor {
            store_id: base.store_id.clone(),
            seq: base.seq,
            fp: base.fp,
            after: through.clone(),
        };
        let has_more = through.is_some() || head.seq > base.seq;
        let range = SnapshotRange {
            from: from.clone(),
            through,
        };
        let raws: Vec<&RawValue> = fill.rows.iter().map(|r| &*r.0).collect();
        match render(
            &raws,
            &cursor,
            has_more,
            reset,
            Some(&range),
            head,
            request.max_bytes,
        )? {
            Some(body) => {
                return Ok(PullPage {
                    body,
                    listed: raws.len(),
                    snapshot: true,
                    has_more,
                    cursor_seq: base.seq,
                    head_seq: head.seq,
                })
            }
            None => {
                fill.rows.pop();
                more = true;
            }
        }
    }
}
