//! Answers of one kind in a row per operation.
//!
//! An operation whose conflict is resolved keep-local or merged is resent;
//! if the remote keeps answering `Conflict` (another device keeps its own
//! edit too) it would loop forever. The worker counts the conflicts in a
//! row of each operation and defers it for the application at
//! `max_conflicts`. Any other answer for the operation ends its streak.
//! The same count of `retry_later` answers in a row paces their retries
//! (which never lead to a dead letter) so they back off instead of
//! hammering a remote that sheds load.
//!
//! In memory: a restart starts every streak over (at most `max_conflicts`
//! more resends, each after a backoff). Bounded by [`MAX_STREAKS`]; past
//! it the counts start over, which only delays a deferral.

use std::collections::HashMap;

use cpc_core::OperationId;

/// Most streaks remembered at once.
pub(crate) const MAX_STREAKS: usize = 100_000;

/// Answers of one kind in a row, by operation.
#[derive(Debug, Default)]
pub(crate) struct Streaks {
    counts: HashMap<OperationId, u32>,
}

impl Streaks {
    /// `id` got that answer again: returns how many in a row, this one
    /// included.
    pub(crate) fn again(&mut self, id: OperationId) -> u32 {
        if self.counts.len() >= MAX_STREAKS && !self.counts.contains_key(&id) {
            self.counts.clear();
        }
        let n = self.counts.entry(id).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// `id` was answered otherwise, or left the queue: its streak ends.
    pub(crate) fn ended(&mut self, id: OperationId) {
        if !self.counts.is_empty() {
            self.counts.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaks_count_in_a_row_and_end() {
        let mut s = Streaks::default();
        let a = OperationId::from_u128(1);
        assert_eq!(s.again(a), 1);
        assert_eq!(s.again(a), 2);
        s.ended(a);
        assert_eq!(s.again(a), 1);
    }

    #[test]
    fn the_map_is_bounded() {
        let mut s = Streaks::default();
        for i in 0..(MAX_STREAKS as u128 + 5) {
            s.again(OperationId::from_u128(i));
        }
        assert!(s.counts.len() <= MAX_STREAKS);
    }
}
