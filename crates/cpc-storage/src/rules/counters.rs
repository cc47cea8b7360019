//! The queue's counters by state and priority, kept in the transaction
//! that changes what they count.

use super::OpMeta;
use crate::api::{OpState, QueueStats};

/// Counters kept beside the records (in the same transaction), so `pending`
/// and `stats` never scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counters {
    pub ready: u64,
    pub in_flight: u64,
    pub waiting: u64,
    pub dead: u64,
    pub deferred: u64,
    pub pending_by_priority: [u64; 4],
    pub pending_bytes: u64,
    /// The next `seq` to assign.
    pub next_seq: u64,
}

impl Default for Counters {
    /// Empty; seqs start at 1.
    fn default() -> Self {
        Counters {
            ready: 0,
            in_flight: 0,
            waiting: 0,
            dead: 0,
            deferred: 0,
            pending_by_priority: [0; 4],
            pending_bytes: 0,
            next_seq: 1,
        }
    }
}

impl Counters {
    /// Adds (`add`) or removes one operation in `meta`'s state.
    pub(crate) fn account(&mut self, meta: &OpMeta, add: bool) {
        let bump = |v: &mut u64, by: u64| {
            *v = if add {
                v.saturating_add(by)
            } else {
                v.saturating_sub(by)
            }
        };
        match meta.state {
            OpState::Ready => bump(&mut self.ready, 1),
            OpState::InFlight { .. } => bump(&mut self.in_flight, 1),
            OpState::Waiting { .. } => bump(&mut self.waiting, 1),
            OpState::Dead { .. } => bump(&mut self.dead, 1),
            OpState::Deferred => bump(&mut self.deferred, 1),
        }
        if meta.is_pending() {
            bump(
                &mut self.pending_by_priority[usize::from(meta.priority.rank())],
                1,
            );
            bump(&mut self.pending_bytes, meta.payload_len);
        }
    }

    /// Undelivered operations (ready, in flight, waiting).
    pub(crate) fn pending(&self) -> u64 {
        self.ready + self.in_flight + self.waiting
    }

    /// Every stored operation (pending, dead, deferred).
    pub(crate) fn stored(&self) -> u64 {
        self.pending() + self.dead + self.deferred
    }

    pub(crate) fn stats(&self, quarantined: u64) -> QueueStats {
        QueueStats {
            pending: self.pending(),
            blocked: 0,
            ready: self.ready,
            in_flight: self.in_flight,
            waiting: self.waiting,
            dead: self.dead,
            deferred: self.deferred,
            quarantined,
            pending_by_priority: self.pending_by_priority,
            pending_bytes: self.pending_bytes,
            acked_journal: 0,
        }
    }
}
