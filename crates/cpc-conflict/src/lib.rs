//! Pluggable conflict resolution for cpc-sync.
//!
//! When the remote answers a pushed operation with
//! `PushOutcome::Conflict { remote }` (the record changed remotely since the
//! operation's `base_version`), the sync worker asks a [`ConflictResolver`]
//! what to do, and the answer is a [`Resolution`]:
//! `KeepLocal` (resend the local change on the remote's version),
//! `KeepRemote` (drop the local change), `Merged(payload)` (resend a merge) or
//! `Defer` (park it until the application settles it).
//!
//! # Main types
//! - [`ConflictResolver`]: the object-safe trait (`Send + Sync + Debug`).
//! - [`LastWriterWins`] (the default): the later hybrid-logical-clock
//!   timestamp wins, ties broken by node id, so every device that sees the
//!   same two versions picks the same winner, whatever its wall clock says.
//! - [`RemoteWins`], [`LocalWins`], [`DeferAll`] and [`FnResolver`] (a closure).
//! - [`FieldMerge`]: payloads that are maps of fields, each field
//!   last-writer-wins on its own timestamp (a state-based CRDT), through a
//!   [`FieldCodec`] ([`PostcardFieldCodec`] by default).
//! - [`resolve_logged`], [`conflict_record`] and [`resolve_and_record`]: what
//!   the worker calls, so that every decision is traced (ids, timestamps and
//!   sizes, never payloads) and logged with the losing payload.
//!
//! [`RemoteRecord`], [`Resolution`] and [`ConflictRecord`] are defined in
//! `cpc-core` (storage persists them and must not depend on this crate) and
//! re-exported here.
//!
//! This crate decides; it does not store. Deferred conflicts and the conflict
//! log live in `cpc-storage` (`defer`, `list_deferred`, `settle`,
//! `log_conflict`, `conflict_log`). See `docs/conflicts.md` for the choices
//! and a worked example per resolver.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use cpc_conflict::{resolve_and_record, ConflictResolver, FieldMap, FieldMerge, FieldValue,
//!                    FieldCodec, LastWriterWins, PostcardFieldCodec, RemoteRecord, Resolution};
//! use cpc_core::{EntityKey, HybridClock, ManualWallClock, NodeId, Operation, OperationKind};
//!
//! // Device 2's wall clock runs 10 minutes ahead of device 1's.
//! let wall1 = ManualWallClock::new(1_000_000);
//! let wall2 = ManualWallClock::new(1_000_000 + 600_000);
//! let clock1 = HybridClock::with_wall_clock(NodeId(1), Arc::new(wall1.clone()));
//! let clock2 = HybridClock::with_wall_clock(NodeId(2), Arc::new(wall2.clone()));
//! let note = EntityKey::new("notes", "42");
//!
//! // Device 2 edits first; the remote now holds its version.
//! let theirs = clock2.now()?;
//! let remote = RemoteRecord { version: 2, timestamp: theirs, payload: Some(b"v2".to_vec()),
//!                             node: NodeId(2) };
//! // Device 1 sees that version (its clock observes the timestamp), then
//! // edits: its edit is causally later although its wall clock is behind.
//! wall1.set(1_000_000 + 60_000);
//! clock1.observe(theirs)?;
//! let mine = Operation::builder(note.clone(), OperationKind::Update)
//!     .payload(b"v3".to_vec()).base_version(1).build(&clock1)?;
//!
//! let (resolution, entry) = resolve_and_record(&LastWriterWins, &mine, &remote, 1_060_000);
//! assert_eq!(resolution, Resolution::KeepLocal);
//! assert_eq!(entry.losing_payload.as_deref(), Some(&b"v2"[..])); // kept in the log
//!
//! // Field merge: edits to different fields are both kept.
//! let codec = PostcardFieldCodec;
//! let t1 = clock1.now()?;
//! let local_fields = FieldMap::from([("title".to_owned(), FieldValue::set(b"Milk".to_vec(), t1))]);
//! let remote_fields = FieldMap::from([("done".to_owned(), FieldValue::set(b"yes".to_vec(), theirs))]);
//! let op = Operation::builder(note, OperationKind::Update)
//!     .payload(codec.encode(&local_fields)?).build(&clock1)?;
//! let remote = RemoteRecord { payload: Some(codec.encode(&remote_fields)?), ..remote };
//! let Resolution::Merged(bytes) = FieldMerge::new().resolve(&op, &remote) else { unreachable!() };
//! assert_eq!(codec.decode(&bytes)?.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//! None.

mod error;
mod field_merge;
mod log;
mod resolver;

pub use cpc_core::{ConflictRecord, RemoteRecord, Resolution};
pub use error::{Error, Result};
pub use field_merge::{
    merge_fields, merge_into, FieldCodec, FieldMap, FieldMerge, FieldValue, PostcardFieldCodec,
};
pub use log::{conflict_record, resolve_and_record, resolve_logged};
pub use resolver::{ConflictResolver, DeferAll, FnResolver, LastWriterWins, LocalWins, RemoteWins};

#[cfg(test)]
mod object_safety {
    use super::*;
    // Compile-time proofs: the traits stay object safe and the public types
    // can cross threads.
    fn _resolver_is_object_safe(_: &dyn ConflictResolver) {}
    fn _codec_is_object_safe(_: &dyn FieldCodec<Error = Error>) {}
    fn _assert_send_sync<T: Send + Sync>() {}
    fn _types_are_send_sync() {
        _assert_send_sync::<LastWriterWins>();
        _assert_send_sync::<RemoteWins>();
        _assert_send_sync::<LocalWins>();
        _assert_send_sync::<DeferAll>();
        _assert_send_sync::<FieldMerge>();
        _assert_send_sync::<FnResolver<fn(&cpc_core::Operation, &RemoteRecord) -> Resolution>>();
        _assert_send_sync::<std::sync::Arc<dyn ConflictResolver>>();
        _assert_send_sync::<Error>();
    }
}
