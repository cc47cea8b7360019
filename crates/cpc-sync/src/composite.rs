//! `CompositeAdapter`: send at once when it is safe, queue otherwise.

use cpc_storage::QueueStorageExt;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cpc_core::{
    match_outcomes, Operation, OperationId, PushOutcome, PushQuery, Transport, TransportError,
};
use cpc_network::NetworkStatus;
use cpc_storage::ListFilter;

use crate::engine::SyncEngine;
use crate::error::{invalid, Result};

/// Default timeout of a direct send.
pub const DEFAULT_DIRECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What became of an operation given to [`CompositeAdapter::send`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Sent directly and applied by the remote; nothing was queued.
    Sent {
        /// The operation.
        id: OperationId,
        /// The record's version at the remote.
        version: u64,
        /// True if the remote had applied it before (idempotent replay).
        replay: bool,
    },
    /// Stored in the queue; the worker sends it.
    Queued {
        /// The operation.
        id: OperationId,
        /// Why it was not sent directly.
        reason: QueueReason,
    },
}

impl Delivery {
    /// The operation's id.
    pub fn id(&self) -> OperationId {
        match self {
            Delivery::Sent { id, .. } | Delivery::Queued { id, .. } => *id,
        }
    }
}

/// Why [`CompositeAdapter::send`] queued an operation instead of sending it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueReason {
    /// The network monitor does not say Online.
    NotOnline(NetworkStatus),
    /// The entity has queued operations; this one must go after them.
    EntityPending,
    /// The direct send did not answer within the timeout (it may still have
    /// been applied: the queued copy has the same id, so the remote dedupes).
    Timeout,
    /// The direct send failed as a whole.
    Failed(TransportError),
    /// The remote answered something other than applied (`conflict`,
    /// `rejected`, `retry_later`): the queue's worker handles it, with the
    /// resolver, the dead letters and the backoff.
    Answered(&'static str),
}

/// Fronts a remote for code that wants "send now if possible": when the
/// network monitor says Online and the entity has nothing queued, the
/// operation is pushed at once with a short timeout; otherwise, or on any
/// failure, it is queued in the engine.
///
/// Ordering is the same either way: sends and enqueues of one entity are
/// serialised through the engine's entity locks (also taken by
/// [`SyncEngine::submit`]), and an entity with anything in the queue (even
/// a dead letter or a deferred conflict) always queues.
///
/// Without a network monitor the adapter tries the direct send whenever the
/// entity has nothing queued.
#[derive(Clone)]
pub struct CompositeAdapter {
    engine: SyncEngine,
    transport: Arc<dyn Transport>,
    timeout: Duration,
}

impl fmt::Debug for CompositeAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompositeAdapter")
            .field("engine", &self.engine)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CompositeAdapter {
    /// An adapter over `engine`, sending directly through the engine's own
    /// transport with [`DEFAULT_DIRECT_TIMEOUT`].
    pub fn new(engine: &SyncEngine) -> Self {
        CompositeAdapter {
            engine: engine.clone(),
            transport: Arc::clone(&engine.inner.transport),
            timeout: DEFAULT_DIRECT_TIMEOUT,
        }
    }

    /// Sets the timeout of a direct send.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `op` now if it is safe, else queues it; see the type's docs.
    /// Errors only when queueing fails (or the operation is invalid).
    pub async fn send(&self, op: Operation) -> Result<Delivery> {
        let inner = &self.engine.inner;
        op.validate(inner.max_payload).map_err(invalid)?;
        let id = op.id;
        let stripe = inner.stripe(&op.entity);
        let _entity = inner.stripes[stripe].lock().await;

        let status = self.engine.network_status();
        if inner.network.is_some() && status != NetworkStatus::Online {
            return self.queue(op, QueueReason::NotOnline(status)).await;
        }
        let filter = ListFilter {
            entity: Some(op.entity.clone()),
            dead: None,
            limit: Some(1),
            after_seq: None,
        };
        let queued = inner.blocking(move |s| s.list(&filter)).await?;
        if !queued.is_empty() {
            return self.queue(op, QueueReason::EntityPending).await;
        }
        // The op reaches the remote without being stored: its timestamp must
        // be covered by the persisted clock mark first.
        if let Some(mark) = inner.mark_needed(op.timestamp) {
            inner.blocking(move |s| s.store_clock_mark(mark)).await?;
        }

        // With the engine's `known` (§8), as the worker's pushes: a remote
        // restored meanwhile refuses it, and it is queued behind what the
        // restore lost.
        let known = inner.worker.regressions().known();
        let sent_known = known.get();
        let query = PushQuery::new(std::slice::from_ref(&op)).known(sent_known.as_ref());
        let pushed = tokio::time::timeout(self.timeout, self.transport.push(&query)).await;
        if let Ok(Ok(answer)) = &pushed {
            if let Some(head) = &answer.head {
                known.raise(head);
            }
        }
        let reason = match pushed {
            Err(_) => QueueReason::Timeout,
            Ok(Err(e)) => QueueReason::Failed(e),
            Ok(Ok(answer)) => match match_outcomes(std::slice::from_ref(&op), answer.outcomes) {
                Err(e) => QueueReason::Failed(e),
                Ok(outcomes) => match outcomes.into_iter().next() {
                    Some(PushOutcome::Applied { version }) => {
                        self.report_success();
                        tracing::debug!(target: "cpc_sync", op_id = %id, "sent directly");
                        return Ok(Delivery::Sent {
                            id,
                            version,
                            replay: false,
                        });
                    }
                    Some(PushOutcome::AlreadyApplied { version }) => {
                        self.report_success();
                        return Ok(Delivery::Sent {
                            id,
                            version,
                            replay: true,
                        });
                    }
                    Some(other) => {
                        self.report_success();
                        QueueReason::Answered(other.name())
                    }
                    None => QueueReason::Failed(TransportError::Protocol("empty answer".into())),
                },
            },
        };
        tracing::debug!(target: "cpc_sync", op_id = %id, reason = ?reason, "direct send failed; queued");
        // The direct send may have been applied: queued as possibly sent,
        // so coalescing never merges a later edit into it (the remote
        // would answer already_applied for the merged one).
        self.engine.inner.enqueue_possibly_sent(op).await?;
        Ok(Delivery::Queued { id, reason })
    }

    fn report_success(&self) {
        if let Some(m) = &self.engine.inner.network {
            m.report_success();
        }
    }

    /// Queues `op`, never sent (the caller holds the entity's stripe).
    async fn queue(&self, op: Operation, reason: QueueReason) -> Result<Delivery> {
        let mut id = op.id;
        // Coalesced: the queued operation that now carries it is the one
        // that will be delivered.
        if let Some((to_send, _)) = self.engine.inner.enqueue(vec![op]).await?.pop() {
            id = to_send;
        }
        Ok(Delivery::Queued { id, reason })
    }
}
