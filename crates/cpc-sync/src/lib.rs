//! cpc-sync: an offline-first sync engine.
//!
//! An application records what its user did as [`Operation`](core::Operation)s
//! and calls [`SyncEngine::submit`]. The operation is stored durably (the
//! call returns once the chosen [`Durability`](storage::Durability) is
//! reached) and the sync worker sends it to the remote when the network
//! allows: highest priority first, strictly in order per entity, in batches,
//! retrying transient failures with backoff and jitter under a retry budget
//! and a circuit breaker, parking permanent failures as dead letters, and
//! asking a [`ConflictResolver`](conflict::ConflictResolver) when the remote
//! changed meanwhile. Everything it does is observable
//! ([`SyncEngine::subscribe`], tracing spans and events).
//!
//! Storage calls run on tokio's blocking pool by default (a durable store
//! may block on fsync); with `MemoryStorage`, or in a deterministic
//! simulation on a paused current-thread runtime, choose
//! [`StorageCalls::Inline`] with [`SyncEngineBuilder::storage_calls`].
//!
//! Main types: [`SyncEngine`] and its [`SyncEngineBuilder`],
//! [`CompositeAdapter`] (send now when safe, queue otherwise) and the one
//! [`Error`]. The building blocks are re-exported by crate:
//! [`core`], [`storage`], [`backoff`], [`network`], [`conflict`], [`worker`].
//!
//! # Example
//! ```
//! use async_trait::async_trait;
//! use cpc_sync::core::{
//!     EntityKey, OpOutcome, Operation, OperationKind, PushAnswer, PushOutcome, PushQuery, Transport, TransportError,
//! };
//! use cpc_sync::network::{ManualSource, NetworkMonitor};
//! use cpc_sync::SyncEngine;
//!
//! #[derive(Debug)]
//! struct Remote;
//! #[async_trait]
//! impl Transport for Remote {
//!     async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
//!         let outcomes: Vec<OpOutcome> = query.ops.iter()
//!             .map(|op| OpOutcome::new(op.id, PushOutcome::Applied { version: 1 }))
//!             .collect();
//!         Ok(outcomes.into())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let monitor = NetworkMonitor::default();
//! let link = ManualSource::new();
//! link.connect(monitor.sink("manual"));
//! link.set_offline();
//!
//! let engine = SyncEngine::builder()
//!     .path(dir.path().join("queue"))
//!     .transport(Remote)
//!     .network(monitor)
//!     .start()
//!     .await?;
//! engine
//!     .operation(EntityKey::new("notes", "42"), OperationKind::Update)
//!     .payload(b"groceries".to_vec())
//!     .submit()
//!     .await?;
//! assert_eq!(engine.pending().await?, 1); // offline: it waits
//!
//! link.set_online();
//! engine.drained().await?;
//! assert_eq!(engine.pending().await?, 0);
//! engine.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! None.
//!
//! # Supported Rust versions
//! The workspace's `rust-version` (1.89) and later.

mod builder;
mod coalesce;
mod composite;
mod engine;
mod error;
mod pull;

pub use builder::SyncEngineBuilder;
pub use composite::{CompositeAdapter, Delivery, QueueReason, DEFAULT_DIRECT_TIMEOUT};
/// How the engine calls its store: on the blocking pool or inline (see
/// [`SyncEngineBuilder::storage_calls`]).
#[doc(inline)]
pub use cpc_worker::StorageCalls;
pub use engine::{EngineOperation, SyncEngine, CLOCK_MARK_HEADROOM_MS};
pub use error::{ConfigError, Error, Result};

/// The operation model: operations, ids, the hybrid logical clock, the
/// transport trait and its outcomes (`cpc-core`).
pub mod core {
    #[doc(inline)]
    pub use cpc_core::*;
}

/// The durable queue: the `QueueStorage` contract and its backends (`cpc-storage`).
pub mod storage {
    #[doc(inline)]
    pub use cpc_storage::*;
}

/// Backoff strategies, the retry budget and the circuit breaker (`cpc-backoff`).
pub mod backoff {
    #[doc(inline)]
    pub use cpc_backoff::*;
}

/// Network status, the monitor and its sources (`cpc-network`).
pub mod network {
    #[doc(inline)]
    pub use cpc_network::*;
}

/// Conflict resolvers and the conflict log helpers (`cpc-conflict`).
pub mod conflict {
    #[doc(inline)]
    pub use cpc_conflict::*;
}

/// The sync worker, its events and summaries (`cpc-worker`).
pub mod worker {
    #[doc(inline)]
    pub use cpc_worker::*;
}

#[cfg(test)]
mod send_sync {
    use super::*;
    // Compile-time proofs, never run: each impl fails to compile unless
    // its type can cross threads.
    #[allow(dead_code)]
    trait SendSync: Send + Sync {}
    impl SendSync for SyncEngine {}
    impl SendSync for CompositeAdapter {}
    impl SendSync for Error {}
}

/// The README's usage example, compiled and run as a doctest so it cannot
/// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
