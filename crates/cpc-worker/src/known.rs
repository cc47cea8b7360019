//! The remote position this device has seen (protocol §8 `known`), held
//! by the engine rather than by the transport: the worker and the puller
//! of one engine share it, send it in every [`PushQuery`] and
//! [`PullQuery`], and raise it from every answer's head. A transport is
//! then stateless, and a wrapper around one cannot forget to forward it.
//!
//! It starts from the position the puller persisted, so the first push
//! after a restart is already checked against a remote restored meanwhile;
//! it stays put after a `409 history_diverged` until the worker has queued
//! again what the restore lost, then moves to the remote's head.
//!
//! [`PushQuery`]: cpc_core::PushQuery
//! [`PullQuery`]: cpc_core::PullQuery

use std::sync::Mutex;

use cpc_core::RemotePosition;

/// The highest remote position seen, shared by a worker and its puller.
#[derive(Debug, Default)]
pub struct KnownPosition(Mutex<Option<RemotePosition>>);

impl KnownPosition {
    /// The position to send, if any.
    pub fn get(&self) -> Option<RemotePosition> {
        self.slot().clone()
    }

    /// Raises the position to `head`: by `seq` within one store; a head of
    /// another store replaces it (the remote is another store now, and its
    /// own answers say where it stands).
    pub fn raise(&self, head: &RemotePosition) {
        let mut known = self.slot();
        let keep = known
            .as_ref()
            .is_some_and(|k| k.store_id == head.store_id && k.seq >= head.seq);
        if !keep {
            *known = Some(head.clone());
        }
    }

    /// Moves the position to `head`, lower as it may be: a regression has
    /// been handled (the retained acknowledged operations are back in the
    /// queue), so pushes may land on the restored history.
    pub fn adopt(&self, head: &RemotePosition) {
        *self.slot() = Some(head.clone());
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<RemotePosition>> {
        // A panic while holding it left a whole value: keep using it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(store: &str, seq: u64) -> RemotePosition {
        RemotePosition {
            store_id: store.into(),
            seq,
            fp: seq,
        }
    }

    #[test]
    fn it_rises_within_a_store_follows_another_store_and_adopts_a_lower_head() {
        let known = KnownPosition::default();
        assert_eq!(known.get(), None);
        known.raise(&at("a", 5));
        known.raise(&at("a", 3));
        assert_eq!(known.get(), Some(at("a", 5)), "never lowered by a raise");
        known.raise(&at("a", 8));
        assert_eq!(known.get(), Some(at("a", 8)));
        known.raise(&at("b", 2));
        assert_eq!(known.get(), Some(at("b", 2)), "another store replaces it");
        known.adopt(&at("b", 1));
        assert_eq!(known.get(), Some(at("b", 1)), "adopted, lower as it is");
    }
}
