//! [`Completion`]: what became of a sent operation, as the store applies it.

use std::fmt;

use cpc_core::{OperationId, RemoteRecord};

use super::EpochMillis;

/// The result of sending one claimed operation, applied by
/// [`QueueStorage::complete`](super::QueueStorage::complete). Completions of one batch are applied in one
/// atomic, durable write. `Debug` prints payload lengths, never bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum Completion {
    /// Delivered: remove it; the next operation of its entity becomes the head.
    /// Journaled as acknowledged at an unknown remote position (see
    /// [`AckAt`](Completion::AckAt)).
    Ack(OperationId),
    /// Delivered, and the remote's change log holds it at `seq`: removed
    /// like [`Ack`](Completion::Ack), and kept in the acked journal with
    /// its position (with the whole operation under
    /// [`QueueOptions::retain_acked`](super::QueueOptions::retain_acked)), so that after a restore of the
    /// remote it can be re-queued or reported lost
    /// ([`QueueStorage::requeue_acked`](super::QueueStorage::requeue_acked)).
    AckAt {
        /// The operation.
        id: OperationId,
        /// Its position in the remote's change log.
        seq: u64,
    },
    /// Transient failure: claimable again at `at`.
    Retry {
        /// The operation.
        id: OperationId,
        /// When it may be claimed again.
        at: EpochMillis,
        /// What went wrong (no payload data).
        error: String,
    },
    /// Permanent failure: park it in the dead letters.
    Dead {
        /// The operation.
        id: OperationId,
        /// Why (no payload data).
        reason: String,
    },
    /// Conflict parked for the application.
    Defer {
        /// The operation.
        id: OperationId,
        /// The remote's record at the time of the conflict.
        remote: RemoteRecord,
        /// Why it was parked (no payload data), kept as its `last_error`.
        reason: String,
    },
    /// A transient failure that says nothing about this operation (no
    /// network, a timeout, a whole batch refused): claimable again at `at`,
    /// and the attempt the claim counted is given back, so being offline
    /// never uses up the attempts that lead to a dead letter.
    Postpone {
        /// The operation.
        id: OperationId,
        /// When it may be claimed again.
        at: EpochMillis,
        /// What went wrong (no payload data).
        error: String,
    },
    /// Resend (conflict resolved as keep-local or merged): the operation
    /// becomes ready now with a new base version and, if given, a new payload.
    Resend {
        /// The operation.
        id: OperationId,
        /// The remote version to send it on.
        base_version: Option<u64>,
        /// Replacement payload (a merge), or `None` to keep it.
        payload: Option<Vec<u8>>,
    },
    /// Give the claim back without counting the attempt (shutdown,
    /// credentials to refresh): ready again at once, attempt count restored.
    Release(OperationId),
    /// Remove without delivering (conflict resolved as keep-remote).
    Drop(OperationId),
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Completion::Ack(id) => f.debug_tuple("Ack").field(id).finish(),
            Completion::AckAt { id, seq } => f
                .debug_struct("AckAt")
                .field("id", id)
                .field("seq", seq)
                .finish(),
            Completion::Release(id) => f.debug_tuple("Release").field(id).finish(),
            Completion::Drop(id) => f.debug_tuple("Drop").field(id).finish(),
            Completion::Retry { id, at, error } => f
                .debug_struct("Retry")
                .field("id", id)
                .field("at", at)
                .field("error", error)
                .finish(),
            Completion::Postpone { id, at, error } => f
                .debug_struct("Postpone")
                .field("id", id)
                .field("at", at)
                .field("error", error)
                .finish(),
            Completion::Dead { id, reason } => f
                .debug_struct("Dead")
                .field("id", id)
                .field("reason", reason)
                .finish(),
            Completion::Defer { id, remote, reason } => f
                .debug_struct("Defer")
                .field("id", id)
                .field("remote", remote)
                .field("reason", reason)
                .finish(),
            Completion::Resend {
                id,
                base_version,
                payload,
            } => f
                .debug_struct("Resend")
                .field("id", id)
                .field("base_version", base_version)
                .field("payload_len", &payload.as_ref().map(Vec::len))
                .finish(),
        }
    }
}

impl Completion {
    /// The operation this completion is about.
    pub fn id(&self) -> OperationId {
        match self {
            Completion::Ack(id) | Completion::Release(id) | Completion::Drop(id) => *id,
            Completion::AckAt { id, .. }
            | Completion::Retry { id, .. }
            | Completion::Dead { id, .. }
            | Completion::Defer { id, .. }
            | Completion::Postpone { id, .. }
            | Completion::Resend { id, .. } => *id,
        }
    }
}
