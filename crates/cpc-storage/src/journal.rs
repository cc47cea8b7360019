//! The acked journal: what the queue remembers of operations the remote
//! acknowledged, so that a remote restored from a backup (§8 of the
//! protocol) neither silently loses them nor leaves the device guessing.
//!
//! Every acknowledgement adds one entry (in the write that removes the
//! operation from the queue): its id, its entity, its submission seq and
//! the remote's change-log seq when known. Under
//! [`QueueOptions::retain_acked`](crate::QueueOptions::retain_acked) the
//! entry also keeps the operation whole, so
//! [`QueueStorage::requeue_acked`](crate::QueueStorage::requeue_acked) can
//! put it back in the queue with its id (the remote answers
//! `already_applied` for those it still has). Entries are pruned oldest
//! first, by count and by age.

use std::time::Duration;

use cpc_core::{EntityKey, Operation, OperationId};
use serde::{Deserialize, Serialize};

use crate::api::EpochMillis;

/// Entries the journal keeps without [`RetainAcked`] (ids and positions
/// only, about 100 bytes each), and for at most [`ACKED_IDS_AGE`]. Counts
/// are pruned in steps: up to an eighth more are kept between two
/// prunings.
pub const ACKED_IDS_KEPT: u64 = 10_000;

/// How long the journal keeps an id-only entry: 7 days.
pub const ACKED_IDS_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest [`RetainAcked::max_count`].
pub(crate) const MAX_RETAINED: u64 = 10_000_000;

/// How long acknowledged operations are kept whole (opt-in, see
/// [`QueueOptions::retain_acked`](crate::QueueOptions::retain_acked)):
/// an entry goes when it is older than `max_age` or when more than
/// `max_count` are kept. Size it to cover the remote's backup interval:
/// what was acknowledged since the last backup is what a restore loses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainAcked {
    /// At least this many entries are kept, and at most an eighth more
    /// (pruned in steps; 1 to 10,000,000).
    pub max_count: u64,
    /// Entries older than this are pruned (at most 365 days).
    pub max_age: Duration,
}

impl Default for RetainAcked {
    /// 100,000 operations, 24 hours.
    fn default() -> Self {
        RetainAcked {
            max_count: 100_000,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// One entry of the acked journal, as listed (never a payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckedOp {
    /// Its place in the journal (1, 2, …, in acknowledgement order): the
    /// cursor of the next [`Page`](crate::Page).
    pub n: u64,
    /// The operation.
    pub id: OperationId,
    /// Its entity.
    pub entity: EntityKey,
    /// Its submission seq in this queue.
    pub queue_seq: u64,
    /// Where the remote's change log holds it, if the remote said.
    pub remote_seq: Option<u64>,
    /// When it was acknowledged.
    pub acked_at: EpochMillis,
    /// Whether the operation is kept whole (it can be re-queued).
    pub retained: bool,
}

/// What one [`QueueStorage::requeue_acked`](crate::QueueStorage::requeue_acked)
/// call did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requeued {
    /// Operations put back in the queue, ready, with their ids.
    pub requeued: u64,
    /// Acknowledged operations the remote certainly or possibly lost
    /// (applied above its head, or at an unknown position) that could not
    /// be put back: only their id was kept, or their record is damaged.
    pub unrecoverable: u64,
    /// The journal holds more: call again.
    pub more: bool,
}

/// A journal entry as stored (an envelope of kind `Acked`, CRC-checked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JournalRecord {
    pub id: OperationId,
    pub entity: EntityKey,
    pub queue_seq: u64,
    pub remote_seq: Option<u64>,
    pub enqueued_at: EpochMillis,
    pub acked_at: EpochMillis,
    /// The operation whole, under retention.
    pub op: Option<Operation>,
}

impl JournalRecord {
    pub(crate) fn listed(&self, n: u64) -> AckedOp {
        AckedOp {
            n,
            id: self.id,
            entity: self.entity.clone(),
            queue_seq: self.queue_seq,
            remote_seq: self.remote_seq,
            acked_at: self.acked_at,
            retained: self.op.is_some(),
        }
    }
}
