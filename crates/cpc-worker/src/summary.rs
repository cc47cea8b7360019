//! The account of one processed batch.

use std::fmt;
use std::time::Duration;

use cpc_core::OperationPriority;

/// How the conflicts of a batch were resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConflictCounts {
    /// Resent on the remote's version.
    pub keep_local: usize,
    /// Dropped in favour of the remote (logged).
    pub keep_remote: usize,
    /// Resent with a merged payload.
    pub merged: usize,
    /// Parked for the application.
    pub deferred: usize,
}

impl ConflictCounts {
    /// All conflicts.
    pub fn total(&self) -> usize {
        self.keep_local + self.keep_remote + self.merged + self.deferred
    }
}

/// What one batch did; returned by
/// [`process_once`](crate::SyncWorker::process_once) and carried by
/// [`WorkerEvent::BatchCompleted`](crate::WorkerEvent::BatchCompleted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessingSummary {
    /// Operations claimed and sent (or attempted).
    pub attempted: usize,
    /// Applied by the remote.
    pub applied: usize,
    /// Already applied before (idempotent replays, e.g. after a lost ack).
    pub already_applied: usize,
    /// Scheduled for another attempt.
    pub retried: usize,
    /// Conflicts, by resolution.
    pub conflicts: ConflictCounts,
    /// Parked in the dead letters.
    pub dead_lettered: usize,
    /// Given back without counting the attempt (credentials, shutdown).
    pub released: usize,
    /// Attempted operations per effective priority, indexed by
    /// `OperationPriority::rank()` (0 = Background ... 3 = Critical).
    pub by_priority: [usize; 4],
    /// The error that failed the whole batch, if one did.
    pub batch_error: Option<cpc_core::TransportError>,
    /// Wall time spent (on tokio's clock).
    pub elapsed: Duration,
}

impl ProcessingSummary {
    /// True if nothing was claimed.
    pub fn is_empty(&self) -> bool {
        self.attempted == 0
    }

    /// Attempted operations of one priority.
    pub fn attempted_at(&self, priority: OperationPriority) -> usize {
        self.by_priority[usize::from(priority.rank())]
    }

    /// Adds another summary into this one (elapsed times add up).
    pub fn merge(&mut self, other: &ProcessingSummary) {
        self.attempted += other.attempted;
        self.applied += other.applied;
        self.already_applied += other.already_applied;
        self.retried += other.retried;
        self.conflicts.keep_local += other.conflicts.keep_local;
        self.conflicts.keep_remote += other.conflicts.keep_remote;
        self.conflicts.merged += other.conflicts.merged;
        self.conflicts.deferred += other.conflicts.deferred;
        self.dead_lettered += other.dead_lettered;
        self.released += other.released;
        for (a, b) in self.by_priority.iter_mut().zip(other.by_priority) {
            *a += b;
        }
        if other.batch_error.is_some() {
            self.batch_error.clone_from(&other.batch_error);
        }
        self.elapsed += other.elapsed;
    }
}

impl fmt::Display for ProcessingSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attempted {} applied {} already_applied {} retried {} conflicts {} (keep_local {} keep_remote {} merged {} deferred {}) dead {} released {} in {:?}",
            self.attempted,
            self.applied,
            self.already_applied,
            self.retried,
            self.conflicts.total(),
            self.conflicts.keep_local,
            self.conflicts.keep_remote,
            self.conflicts.merged,
            self.conflicts.deferred,
            self.dead_lettered,
            self.released,
            self.elapsed
        )?;
        if let Some(e) = &self.batch_error {
            write!(f, " batch error: {}", e.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_fields() {
        let mut a = ProcessingSummary {
            attempted: 2,
            applied: 1,
            by_priority: [0, 2, 0, 0],
            ..Default::default()
        };
        let b = ProcessingSummary {
            attempted: 3,
            retried: 3,
            by_priority: [0, 0, 0, 3],
            conflicts: ConflictCounts {
                merged: 1,
                ..Default::default()
            },
            elapsed: Duration::from_millis(5),
            ..Default::default()
        };
        a.merge(&b);
        assert_eq!(a.attempted, 5);
        assert_eq!(a.retried, 3);
        assert_eq!(a.by_priority, [0, 2, 0, 3]);
        assert_eq!(a.attempted_at(OperationPriority::Critical), 3);
        assert_eq!(a.conflicts.total(), 1);
        assert!(a.to_string().contains("attempted 5"));
    }
}
