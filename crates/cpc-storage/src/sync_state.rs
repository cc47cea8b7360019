//! The device's sync state, typed: what the puller and the worker keep
//! beside the queue under [`QueueStorage::sync_state`] keys, and how it is
//! encoded. One definition, read by the worker (which writes it) and by
//! tools that inspect a queue (`cpc-sync status`), so neither decodes bytes
//! it does not own.
//!
//! Three keys, each an envelope (postcard with a CRC, read back with a
//! length bound):
//! - [`PULL_KEY`]: the puller's [`PullState`] (its scope, cursor, and
//!   `known`, the highest remote position seen);
//! - [`PENDING_REGRESSION_KEY`]: a [`Regression`] reported but not yet
//!   handled (empty once handled), so a crash in between handles it at the
//!   next start;
//! - [`REGRESSION_HISTORY_KEY`]: the last [`HISTORY_KEPT`]
//!   [`HandledRegression`]s.
//!
//! The field order of each type is its stored format: add fields only at
//! the end, with a default.

use cpc_core::envelope::{self, RecordKind};
use cpc_core::{PullCursor, RemotePosition};
use serde::{Deserialize, Serialize};

use crate::api::{EpochMillis, QueueStorage};
use crate::error::Result;

/// The key of the puller's [`PullState`].
pub const PULL_KEY: &str = "pull";

/// The key of a reported [`Regression`] not yet handled.
pub const PENDING_REGRESSION_KEY: &str = "regressed";

/// The key of the handled regressions' history.
pub const REGRESSION_HISTORY_KEY: &str = "regressions";

/// Handled regressions the history keeps.
pub const HISTORY_KEPT: usize = 16;

/// The largest pull state read back (a cursor holds two keys of ≤ 1 KiB).
const MAX_PULL_BYTES: u32 = 16 * 1024;
/// The largest stored report read back (two positions with their store ids).
const MAX_PENDING_BYTES: u32 = 4 * 1024;
/// The largest stored history read back.
const MAX_HISTORY_BYTES: u32 = 32 * 1024;

/// What the puller keeps: where it is in the remote's feed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullState {
    /// The scope (collections) the cursor belongs to; another scope starts
    /// over.
    pub scope: Option<Vec<String>>,
    /// Where the next page starts.
    pub cursor: Option<PullCursor>,
    /// The highest remote position seen (protocol §8 `known`).
    pub known: Option<RemotePosition>,
}

impl PullState {
    /// The stored form.
    pub fn encode(&self) -> Option<Vec<u8>> {
        envelope::encode(RecordKind::Meta, self).ok()
    }

    /// Reads a stored state; `None` if it does not decode.
    pub fn decode(raw: &[u8]) -> Option<PullState> {
        envelope::decode(RecordKind::Meta, raw, MAX_PULL_BYTES).ok()
    }
}

/// One regression (protocol §8): what the device had seen, where the
/// remote stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regression {
    /// The highest position this device had seen (when the reporter
    /// knows it).
    pub known: Option<RemotePosition>,
    /// The remote's head in its `409`.
    pub head: RemotePosition,
}

impl Regression {
    /// The stored form (an envelope, CRC-checked when read back).
    pub fn encode(&self) -> Option<Vec<u8>> {
        envelope::encode(RecordKind::Meta, self).ok()
    }

    /// Reads a stored report ([`PENDING_REGRESSION_KEY`]); `None` for an
    /// empty or damaged value.
    pub fn decode(raw: &[u8]) -> Option<Regression> {
        if raw.is_empty() {
            return None;
        }
        envelope::decode(RecordKind::Meta, raw, MAX_PENDING_BYTES).ok()
    }
}

/// A regression the worker handled, as its history keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandledRegression {
    /// What was reported.
    pub regression: Regression,
    /// Acknowledged operations put back in the queue.
    pub requeued: u64,
    /// Acknowledged operations that could not be.
    pub unrecoverable: u64,
    /// When it was handled.
    pub at: EpochMillis,
}

impl HandledRegression {
    /// Reads the stored history ([`REGRESSION_HISTORY_KEY`]), oldest
    /// first; empty for a missing or damaged value.
    pub fn decode_history(raw: &[u8]) -> Vec<HandledRegression> {
        envelope::decode(RecordKind::Meta, raw, MAX_HISTORY_BYTES).unwrap_or_default()
    }

    /// `history` with `self` appended, the oldest dropped past
    /// [`HISTORY_KEPT`], encoded for storing.
    pub fn append_to(self, mut history: Vec<HandledRegression>) -> Option<Vec<u8>> {
        history.push(self);
        let excess = history.len().saturating_sub(HISTORY_KEPT);
        history.drain(..excess);
        envelope::encode(RecordKind::Meta, &history).ok()
    }
}

/// The whole sync state of a queue, as one record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// The puller's state (default when none is stored or it is damaged).
    pub pull: PullState,
    /// A regression reported and not yet handled.
    pub pending_regression: Option<Regression>,
    /// The regressions handled, oldest first.
    pub regressions: Vec<HandledRegression>,
}

impl SyncState {
    /// Reads the three keys through `get` (a key's raw value, if stored).
    /// A damaged value reads as absent: the state is advisory to a reader,
    /// and the worker rewrites it.
    pub fn read_with(mut get: impl FnMut(&str) -> Result<Option<Vec<u8>>>) -> Result<SyncState> {
        Ok(SyncState {
            pull: get(PULL_KEY)?
                .and_then(|raw| PullState::decode(&raw))
                .unwrap_or_default(),
            pending_regression: get(PENDING_REGRESSION_KEY)?
                .and_then(|raw| Regression::decode(&raw)),
            regressions: get(REGRESSION_HISTORY_KEY)?
                .map(|raw| HandledRegression::decode_history(&raw))
                .unwrap_or_default(),
        })
    }

    /// Reads the sync state of an open queue.
    pub fn read(storage: &(impl QueueStorage + ?Sized)) -> Result<SyncState> {
        SyncState::read_with(|key| storage.sync_state(key, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStorage;

    fn position(seq: u64) -> RemotePosition {
        RemotePosition {
            store_id: "s".into(),
            seq,
            fp: seq * 7,
        }
    }

    #[test]
    fn the_three_keys_read_back_as_one_record_and_damage_reads_as_absent() {
        let storage = MemoryStorage::new(crate::QueueOptions::default());
        assert_eq!(SyncState::read(&storage).unwrap(), SyncState::default());

        let pull = PullState {
            scope: Some(vec!["notes".into()]),
            cursor: None,
            known: Some(position(9)),
        };
        let regression = Regression {
            known: Some(position(9)),
            head: position(4),
        };
        let handled = HandledRegression {
            regression: regression.clone(),
            requeued: 3,
            unrecoverable: 1,
            at: 1_000,
        };
        storage.sync_state(PULL_KEY, pull.encode()).unwrap();
        storage
            .sync_state(PENDING_REGRESSION_KEY, regression.encode())
            .unwrap();
        storage
            .sync_state(
                REGRESSION_HISTORY_KEY,
                handled.clone().append_to(Vec::new()),
            )
            .unwrap();
        let read = SyncState::read(&storage).unwrap();
        assert_eq!(read.pull, pull);
        assert_eq!(read.pending_regression, Some(regression));
        assert_eq!(read.regressions, vec![handled.clone()]);

        // Handled: the pending report is emptied, and reads as none.
        storage
            .sync_state(PENDING_REGRESSION_KEY, Some(Vec::new()))
            .unwrap();
        storage.sync_state(PULL_KEY, Some(vec![1, 2, 3])).unwrap();
        let read = SyncState::read(&storage).unwrap();
        assert_eq!(read.pending_regression, None);
        assert_eq!(read.pull, PullState::default(), "damaged reads as absent");

        // The history keeps the newest HISTORY_KEPT.
        let mut history = Vec::new();
        for i in 0..(HISTORY_KEPT as u64 + 3) {
            let mut h = handled.clone();
            h.at = i;
            history = HandledRegression::decode_history(&h.append_to(history).unwrap());
        }
        assert_eq!(history.len(), HISTORY_KEPT);
        assert_eq!(history[0].at, 3);
    }
}
