//! The `ConflictResolver` trait and the record-level resolvers.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use cpc_core::{Operation, OperationKind, RemoteRecord, Resolution};

/// Decides what happens when the remote answered `Conflict`: the record
/// changed remotely since the local operation's `base_version`.
///
/// `resolve` must be a pure function of its two arguments (no I/O, no clock
/// reads, no randomness), so that every device that sees the same two
/// versions reaches the same decision, and it must not panic: it runs inside
/// the sync worker. It should not log payloads; the worker traces every
/// decision through [`resolve_logged`](crate::resolve_logged), so an
/// implementation need not log at all.
///
/// The trait is object safe: the engine holds an `Arc<dyn ConflictResolver>`.
pub trait ConflictResolver: Send + Sync + fmt::Debug {
    /// Decides between the local operation and the remote's current record.
    fn resolve(&self, local: &Operation, remote: &RemoteRecord) -> Resolution;

    /// A short lowercase name for traces and the conflict log (ids only, no
    /// data). Defaults to `"custom"`.
    fn name(&self) -> &str {
        "custom"
    }
}

impl<T: ConflictResolver + ?Sized> ConflictResolver for &T {
    fn resolve(&self, local: &Operation, remote: &RemoteRecord) -> Resolution {
        (**self).resolve(local, remote)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

impl<T: ConflictResolver + ?Sized> ConflictResolver for Box<T> {
    fn resolve(&self, local: &Operation, remote: &RemoteRecord) -> Resolution {
        (**self).resolve(local, remote)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

impl<T: ConflictResolver + ?Sized> ConflictResolver for Arc<T> {
    fn resolve(&self, local: &Operation, remote: &RemoteRecord) -> Resolution {
        (**self).resolve(local, remote)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

/// The default: the version with the later hybrid-logical-clock timestamp
/// wins.
///
/// Versions are ordered by `(timestamp, writer node, content)`:
/// - the HLC timestamp first (wall ms, then logical counter, then the node
///   that issued it). HLC timestamps carry causality: an edit made after
///   seeing another version has a larger timestamp than it, whatever the two
///   devices' wall clocks say;
/// - then the writer's node id (`remote.node`, and the local timestamp's
///   node), so versions from different devices never tie;
/// - then the content (a delete, `None`, sorts before any payload; payloads
///   compare bytewise). Two distinct versions with the same timestamp and
///   node cannot come from a correct HLC, but the order stays total anyway.
///
/// The order is total and the same on every device, so the decision is
/// antisymmetric: a device holding `a` and receiving `b` keeps `a` exactly
/// when the device holding `b` and receiving `a` gives `b` up.
///
/// Deletes follow the same rule: a local `Delete` operation counts as the
/// content "deleted", and so does a remote record whose payload is `None`.
/// A local delete older than a remote update loses (the record survives with
/// the remote's content); a remote delete older than a local update loses
/// (the local update is resent on the remote's version).
///
/// When both versions are identical (same timestamp, node and content) the
/// answer is `KeepRemote`: the remote already holds the value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastWriterWins;

impl LastWriterWins {
    /// Orders the local version against the remote one: `Greater` means the
    /// local version is the later writer and wins.
    pub fn compare(local: &Operation, remote: &RemoteRecord) -> Ordering {
        local
            .timestamp
            .cmp(&remote.timestamp)
            .then_with(|| local.timestamp.node.cmp(&remote.node))
            .then_with(|| local_content(local).cmp(&remote.payload.as_deref()))
    }
}

impl ConflictResolver for LastWriterWins {
    fn resolve(&self, local: &Operation, remote: &RemoteRecord) -> Resolution {
        match LastWriterWins::compare(local, remote) {
            Ordering::Greater => Resolution::KeepLocal,
            Ordering::Less | Ordering::Equal => Resolution::KeepRemote,
        }
    }
    fn name(&self) -> &str {
        "last_writer_wins"
    }
}

/// The content of the local version as LWW sees it: `None` for a delete.
pub(crate) fn local_content(local: &Operation) -> Option<&[u8]> {
    match local.kind {
        OperationKind::Delete => None,
        _ => Some(&local.payload),
    }
}

/// The remote version always wins; the local change is dropped (and kept in
/// the conflict log with its payload).
///
/// For apps where the server is the authority (prices, permissions, shared
/// settings edited by an admin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteWins;

impl ConflictResolver for RemoteWins {
    fn resolve(&self, _local: &Operation, _remote: &RemoteRecord) -> Resolution {
        Resolution::KeepRemote
    }
    fn name(&self) -> &str {
        "remote_wins"
    }
}

/// The local version always wins; it is resent on the remote's version (the
/// remote's content is kept in the conflict log).
///
/// Against a remote delete this re-creates the record with the local
/// content. Note that two devices that both use `LocalWins` do not converge:
/// each keeps its own version and the last to arrive at the remote stays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalWins;

impl ConflictResolver for LocalWins {
    fn resolve(&self, _local: &Operation, _remote: &RemoteRecord) -> Resolution {
        Resolution::KeepLocal
    }
    fn name(&self) -> &str {
        "local_wins"
    }
}

/// Defers every conflict: the worker parks the operation in the storage's
/// deferred set, its entity waits, and the application lists the deferred
/// conflicts (`QueueStorage::list_deferred`) and settles each one later
/// (`QueueStorageExt::settle`), typically after asking the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeferAll;

impl ConflictResolver for DeferAll {
    fn resolve(&self, _local: &Operation, _remote: &RemoteRecord) -> Resolution {
        Resolution::Defer
    }
    fn name(&self) -> &str {
        "defer_all"
    }
}

/// A resolver made from a closure.
///
/// The closure is called for every conflict and must follow the contract of
/// [`ConflictResolver::resolve`]: pure, no panics, no payload logging.
///
/// ```
/// use cpc_conflict::{ConflictResolver, FnResolver, LastWriterWins, Resolution};
/// use cpc_core::OperationKind;
///
/// // Never let a remote change resurrect a record deleted here; otherwise LWW.
/// let resolver = FnResolver::named("deletes_win", |local, remote| {
///     if local.kind == OperationKind::Delete {
///         Resolution::KeepLocal
///     } else {
///         LastWriterWins.resolve(local, remote)
///     }
/// });
/// assert_eq!(resolver.name(), "deletes_win");
/// ```
pub struct FnResolver<F> {
    name: &'static str,
    f: F,
}

impl<F> FnResolver<F>
where
    F: Fn(&Operation, &RemoteRecord) -> Resolution + Send + Sync,
{
    /// Wraps `f`; its name in traces is `"fn"`.
    pub fn new(f: F) -> Self {
        FnResolver { name: "fn", f }
    }

    /// Wraps `f` under a name for traces and the conflict log.
    pub fn named(name: &'static str, f: F) -> Self {
        FnResolver { name, f }
    }
}

impl<F> fmt::Debug for FnResolver<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnResolver")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F> ConflictResolver for FnResolver<F>
where
    F: Fn(&Operation, &RemoteRecord) -> Resolution + Send + Sync,
{
    fn resolve(&self, local: &Operation, remote: &RemoteRecord) -> Resolution {
        (self.f)(local, remote)
    }
    fn name(&self) -> &str {
        self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_core::{EntityKey, HlcTimestamp, NodeId, OperationId};

    fn op(kind: OperationKind, payload: &[u8], ts: HlcTimestamp) -> Operation {
        Operation {
            id: OperationId::from_u128(u128::from(ts.wall_ms) << 64 | u128::from(ts.logical)),
            entity: EntityKey::new("notes", "1"),
            kind,
            payload: payload.to_vec(),
            priority: Default::default(),
            timestamp: ts,
            base_version: Some(1),
        }
    }

    fn remote(payload: Option<&[u8]>, ts: HlcTimestamp) -> RemoteRecord {
        RemoteRecord {
            version: 2,
            timestamp: ts,
            payload: payload.map(<[u8]>::to_vec),
            node: ts.node,
        }
    }

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    #[test]
    fn later_wall_time_wins_whatever_the_side() {
        let older = HlcTimestamp::new(1_000, 5, B);
        let newer = HlcTimestamp::new(1_001, 0, A);
        let lww = LastWriterWins;
        assert_eq!(
            lww.resolve(
                &op(OperationKind::Update, b"x", newer),
                &remote(Some(b"y"), older)
            ),
            Resolution::KeepLocal
        );
        assert_eq!(
            lww.resolve(
                &op(OperationKind::Update, b"x", older),
                &remote(Some(b"y"), newer)
            ),
            Resolution::KeepRemote
        );
    }

    #[test]
    fn logical_counter_orders_within_one_millisecond() {
        let lww = LastWriterWins;
        let local = op(OperationKind::Update, b"x", HlcTimestamp::new(1_000, 3, A));
        let rem = remote(Some(b"y"), HlcTimestamp::new(1_000, 2, B));
        assert_eq!(lww.resolve(&local, &rem), Resolution::KeepLocal);
    }

    #[test]
    fn equal_clock_readings_are_broken_by_node_id() {
        let lww = LastWriterWins;
        // Contents ordered against the node order, so only the node decides.
        let local_a = op(OperationKind::Update, b"z", HlcTimestamp::new(1_000, 0, A));
        let remote_b = remote(Some(b"a"), HlcTimestamp::new(1_000, 0, B));
        assert_eq!(lww.resolve(&local_a, &remote_b), Resolution::KeepRemote);
        let local_b = op(OperationKind::Update, b"a", HlcTimestamp::new(1_000, 0, B));
        let remote_a = remote(Some(b"z"), HlcTimestamp::new(1_000, 0, A));
        assert_eq!(lww.resolve(&local_b, &remote_a), Resolution::KeepLocal);
    }

    #[test]
    fn local_delete_follows_the_timestamp_rule() {
        let lww = LastWriterWins;
        let del_old = op(OperationKind::Delete, b"", HlcTimestamp::new(1_000, 0, A));
        let upd_new = remote(Some(b"y"), HlcTimestamp::new(2_000, 0, B));
        assert_eq!(lww.resolve(&del_old, &upd_new), Resolution::KeepRemote);
        let del_new = op(OperationKind::Delete, b"", HlcTimestamp::new(3_000, 0, A));
        assert_eq!(lww.resolve(&del_new, &upd_new), Resolution::KeepLocal);
    }

    #[test]
    fn remote_delete_follows_the_timestamp_rule() {
        let lww = LastWriterWins;
        let deleted_old = remote(None, HlcTimestamp::new(1_000, 0, B));
        let deleted_new = remote(None, HlcTimestamp::new(5_000, 0, B));
        let upd = op(OperationKind::Update, b"x", HlcTimestamp::new(2_000, 0, A));
        assert_eq!(lww.resolve(&upd, &deleted_old), Resolution::KeepLocal);
        assert_eq!(lww.resolve(&upd, &deleted_new), Resolution::KeepRemote);
    }

    #[test]
    fn identical_versions_keep_remote_and_same_stamp_ties_break_on_content() {
        let lww = LastWriterWins;
        let ts = HlcTimestamp::new(1_000, 0, A);
        let same = remote(Some(b"x"), ts);
        assert_eq!(
            lww.resolve(&op(OperationKind::Update, b"x", ts), &same),
            Resolution::KeepRemote
        );
        // A delete sorts before any content, both ways round.
        assert_eq!(
            lww.resolve(&op(OperationKind::Delete, b"", ts), &same),
            Resolution::KeepRemote
        );
        assert_eq!(
            lww.resolve(&op(OperationKind::Update, b"", ts), &remote(None, ts)),
            Resolution::KeepLocal
        );
    }

    #[test]
    fn fixed_resolvers_answer_fixed_and_names_are_stable() {
        let local = op(OperationKind::Update, b"x", HlcTimestamp::new(9, 0, A));
        let rem = remote(Some(b"y"), HlcTimestamp::new(1, 0, B));
        assert_eq!(RemoteWins.resolve(&local, &rem), Resolution::KeepRemote);
        assert_eq!(LocalWins.resolve(&local, &rem), Resolution::KeepLocal);
        assert_eq!(DeferAll.resolve(&local, &rem), Resolution::Defer);
        assert_eq!(RemoteWins.name(), "remote_wins");
        assert_eq!(LocalWins.name(), "local_wins");
        assert_eq!(DeferAll.name(), "defer_all");
        assert_eq!(LastWriterWins.name(), "last_writer_wins");
    }

    #[test]
    fn fn_resolver_calls_the_closure_and_wrappers_delegate() {
        let f = FnResolver::new(|_: &Operation, r: &RemoteRecord| match r.payload {
            Some(_) => Resolution::Merged(b"m".to_vec()),
            None => Resolution::Defer,
        });
        let local = op(OperationKind::Update, b"x", HlcTimestamp::new(9, 0, A));
        assert_eq!(
            f.resolve(&local, &remote(Some(b"y"), HlcTimestamp::new(1, 0, B))),
            Resolution::Merged(b"m".to_vec())
        );
        assert_eq!(
            f.resolve(&local, &remote(None, HlcTimestamp::new(1, 0, B))),
            Resolution::Defer
        );
        assert_eq!(f.name(), "fn");
        assert!(format!("{f:?}").contains("FnResolver"));

        let shared: Arc<dyn ConflictResolver> = Arc::new(DeferAll);
        let boxed: Box<dyn ConflictResolver> = Box::new(RemoteWins);
        let rem = remote(Some(b"y"), HlcTimestamp::new(1, 0, B));
        assert_eq!(shared.resolve(&local, &rem), Resolution::Defer);
        assert_eq!(shared.name(), "defer_all");
        assert_eq!(boxed.resolve(&local, &rem), Resolution::KeepRemote);
        fn name_of<R: ConflictResolver>(r: R) -> String {
            r.name().to_owned()
        }
        assert_eq!(name_of(&boxed), "remote_wins");
    }
}
