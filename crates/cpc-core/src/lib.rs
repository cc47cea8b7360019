//! The operation model of cpc-sync: what every other crate stands on.
//!
//! `cpc-core` defines what an application records ([`Operation`] with its
//! [`OperationId`], [`EntityKey`], [`OperationKind`] and
//! [`OperationPriority`]), the [`HybridClock`] that stamps operations with
//! causally ordered [`HlcTimestamp`]s, the [`Transport`] trait through which
//! batches reach a remote and the [`PushOutcome`]s it answers, and the
//! versioned, checksummed [`envelope`] that wraps the records the stores
//! keep beside operations (conflicts, remote records, bookkeeping; the
//! SQLite backend's format 3 stores operations themselves in a compact body
//! of its own, with its own CRC).
//!
//! It does no I/O: storage, networking and time sources live in other crates
//! (the clock reads time through the [`WallClock`] trait).
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use cpc_core::{envelope, EntityKey, HybridClock, ManualWallClock, NodeId, Operation,
//!                OperationKind, OperationPriority};
//!
//! let clock = HybridClock::with_wall_clock(NodeId(1), Arc::new(ManualWallClock::new(1_000)));
//! let op = Operation::builder(EntityKey::new("notes", "42"), OperationKind::Update)
//!     .payload(b"{\"title\":\"groceries\"}".to_vec())
//!     .priority(OperationPriority::High)
//!     .build(&clock)?;
//! let later = Operation::builder(EntityKey::new("notes", "42"), OperationKind::Delete).build(&clock)?;
//! assert!(later.id > op.id && later.timestamp > op.timestamp);
//!
//! let bytes = envelope::encode_operation(&op)?;
//! assert_eq!(envelope::decode_operation(&bytes)?, op);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//! None.

mod coalesce;
pub mod envelope;
mod error;
mod hlc;
mod id;
mod operation;
mod pull;
pub mod time;
mod transport;

pub use coalesce::{combine, Coalesced, Coalescer, PayloadMerge, StandardCoalescer};
pub use error::{error_chain, EnvelopeError, Error, Result};
pub use hlc::{HlcTimestamp, HybridClock, NodeId, DEFAULT_MAX_DRIFT};
pub use id::{OperationId, ID_TEXT_LEN};
pub use operation::{
    EntityKey, Operation, OperationBuilder, OperationKind, OperationPriority, DEFAULT_MAX_PAYLOAD,
    MAX_KEY_LEN,
};
pub use pull::{
    HeldEntity, MemorySink, PullCursor, PullPage, PullQuery, PulledChange, RemotePosition,
    RemoteSink, ResetReason, SinkChange, SinkError, SinkPage, SnapshotRange,
};
pub use time::{
    millis, EpochMillis, ManualWallClock, MonotonicClock, SimClock, SystemWallClock, TokioClock,
    TokioWallClock, WallClock,
};
pub use transport::{
    match_answer, match_outcomes, ConflictRecord, OpOutcome, PushAnswer, PushOutcome, PushQuery,
    RemoteRecord, Resolution, Transport, TransportError,
};

#[cfg(test)]
mod object_safety {
    use super::*;
    // Compile-time proofs, checked by the compiler and never run (so they
    // are items, not functions): the traits stay object safe and the
    // public types can cross threads.
    const _: Option<&dyn Transport> = None;
    const _: Option<&dyn RemoteSink> = None;
    const _: Option<&dyn Coalescer> = None;
    // Each impl fails to compile unless its type is Send + Sync.
    #[allow(dead_code)]
    trait SendSync: Send + Sync {}
    impl SendSync for Operation {}
    impl SendSync for HybridClock {}
    impl SendSync for TokioWallClock {}
    impl SendSync for SimClock {}
    impl SendSync for PushOutcome {}
    impl SendSync for TransportError {}
}
