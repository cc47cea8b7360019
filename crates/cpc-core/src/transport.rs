//! The `Transport` trait: how batches of operations reach the remote, and
//! what the remote answers for each.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::hlc::{HlcTimestamp, NodeId};
use crate::operation::Operation;

/// The remote's current version of a record, sent back with a conflict.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRecord {
    /// The remote's version number of the record.
    pub version: u64,
    /// When the remote version was written (HLC of the writer).
    pub timestamp: HlcTimestamp,
    /// The remote payload; `None` means the record is deleted remotely.
    pub payload: Option<Vec<u8>>,
    /// The node that wrote the remote version.
    pub node: NodeId,
}

impl fmt::Debug for RemoteRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteRecord")
            .field("version", &self.version)
            .field("timestamp", &self.timestamp)
            .field("payload_len", &self.payload.as_ref().map(Vec::len))
            .field("node", &self.node)
            .finish()
    }
}

/// What the remote answered for one operation of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushOutcome {
    /// Applied; the record is now at `version`.
    Applied {
        /// The record's new version.
        version: u64,
    },
    /// Already applied earlier (idempotent replay of the same operation id).
    AlreadyApplied {
        /// The version the first application produced.
        version: u64,
    },
    /// The remote changed since `base_version`; a resolver decides.
    Conflict {
        /// The remote's current record.
        remote: RemoteRecord,
    },
    /// Refused for good (validation, permissions): goes to the dead letters.
    Rejected {
        /// The remote's reason (must not contain payload data).
        reason: String,
    },
    /// Transient refusal for this operation only; retry later, not before
    /// `after` if given.
    RetryLater {
        /// Server hint, used as a floor for the backoff delay.
        after: Option<Duration>,
    },
}

impl PushOutcome {
    /// A short lowercase name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            PushOutcome::Applied { .. } => "applied",
            PushOutcome::AlreadyApplied { .. } => "already_applied",
            PushOutcome::Conflict { .. } => "conflict",
            PushOutcome::Rejected { .. } => "rejected",
            PushOutcome::RetryLater { .. } => "retry_later",
        }
    }
}

/// A failure of a whole push: nothing in the batch is known to be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TransportError {
    /// No network: the request was not sent.
    #[error("offline")]
    Offline,
    /// No answer in time: the batch may or may not have been applied.
    #[error("timed out")]
    Timeout,
    /// Could not connect.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The server failed (5xx).
    #[error("server error (status {status})")]
    Server {
        /// HTTP-like status code.
        status: u16,
    },
    /// The server asked us to slow down (429).
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited {
        /// Server hint, clamped by the backoff before use.
        retry_after: Option<Duration>,
    },
    /// Credentials must be refreshed. Never a reason to drop work.
    #[error("unauthorized: credentials must be refreshed")]
    Unauthorized,
    /// The answer was malformed (wrong length, unknown ids, bad encoding).
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl TransportError {
    /// True if the failure says nothing about reachability of the remote
    /// beyond "try again" (used by the network monitor's passive reports).
    pub fn is_network_failure(&self) -> bool {
        matches!(
            self,
            TransportError::Offline | TransportError::Timeout | TransportError::Connect(_)
        )
    }

    /// A short lowercase name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            TransportError::Offline => "offline",
            TransportError::Timeout => "timeout",
            TransportError::Connect(_) => "connect",
            TransportError::Server { .. } => "server",
            TransportError::RateLimited { .. } => "rate_limited",
            TransportError::Unauthorized => "unauthorized",
            TransportError::Protocol(_) => "protocol",
        }
    }
}

/// Sends batches of operations to the remote.
///
/// The answer is positional: outcome `i` is for `batch[i]`. An
/// implementation that receives per-id answers maps them to positions and
/// returns `TransportError::Protocol` if an id is unknown or missing. The
/// engine additionally refuses (as `Protocol`) any answer whose length differs
/// from the batch; see [`check_response`].
#[async_trait]
pub trait Transport: Send + Sync {
    /// Pushes `batch`, in order, and returns one outcome per operation.
    async fn push(&self, batch: &[Operation]) -> Result<Vec<PushOutcome>, TransportError>;
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    async fn push(&self, batch: &[Operation]) -> Result<Vec<PushOutcome>, TransportError> {
        (**self).push(batch).await
    }
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for Box<T> {
    async fn push(&self, batch: &[Operation]) -> Result<Vec<PushOutcome>, TransportError> {
        (**self).push(batch).await
    }
}

/// Checks that a response matches its batch: one outcome per operation.
pub fn check_response(batch: &[Operation], outcomes: &[PushOutcome]) -> Result<(), TransportError> {
    if batch.len() != outcomes.len() {
        return Err(TransportError::Protocol(format!(
            "answer has {} outcomes for a batch of {}",
            outcomes.len(),
            batch.len()
        )));
    }
    Ok(())
}

/// How a conflict was settled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// Keep the local change: resend it on top of the remote's version.
    KeepLocal,
    /// Keep the remote version: drop the local change (it is logged).
    KeepRemote,
    /// Replace the local payload with a merge and resend it.
    Merged(Vec<u8>),
    /// Park the operation until the application settles it.
    Defer,
}

impl Resolution {
    /// A short lowercase name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Resolution::KeepLocal => "keep_local",
            Resolution::KeepRemote => "keep_remote",
            Resolution::Merged(_) => "merged",
            Resolution::Defer => "defer",
        }
    }
}

/// One entry of the conflict log: both versions and the losing payload, so
/// no edit is silently overwritten.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The local operation involved.
    pub op_id: crate::OperationId,
    /// The entity it touched.
    pub entity: crate::EntityKey,
    /// Local operation's timestamp.
    pub local_timestamp: HlcTimestamp,
    /// Local payload at the time of the conflict.
    pub local_payload: Vec<u8>,
    /// The remote record at the time of the conflict.
    pub remote: RemoteRecord,
    /// What was decided.
    pub resolution: Resolution,
    /// The payload that lost (`None` when nothing was lost, e.g. a merge
    /// kept both or the loser was a delete).
    pub losing_payload: Option<Vec<u8>>,
    /// When it was resolved, ms since the epoch on the local wall clock.
    pub resolved_at_ms: u64,
}

impl fmt::Debug for ConflictRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConflictRecord")
            .field("op_id", &self.op_id)
            .field("entity", &self.entity)
            .field("local_timestamp", &self.local_timestamp)
            .field("local_payload_len", &self.local_payload.len())
            .field("remote", &self.remote)
            .field("resolution", &self.resolution.name())
            .field(
                "losing_payload_len",
                &self.losing_payload.as_ref().map(Vec::len),
            )
            .field("resolved_at_ms", &self.resolved_at_ms)
            .finish()
    }
}
