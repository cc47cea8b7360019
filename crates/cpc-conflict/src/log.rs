//! What the worker calls: resolve with a trace event, and build the conflict
//! log entry that keeps the losing version.

use cpc_core::{ConflictRecord, Operation, OperationKind, RemoteRecord, Resolution};

use crate::resolver::ConflictResolver;

/// Asks `resolver` and emits one `tracing` event (target `cpc_conflict`,
/// level INFO) describing the decision.
///
/// The event carries both versions' identities (operation id, entity, kind,
/// HLC timestamps, base and remote versions, writer node), payload *sizes*
/// and the decision; never payload contents. The worker calls this rather
/// than `resolve` directly, because resolvers may be user code that does not
/// trace.
pub fn resolve_logged<R: ConflictResolver + ?Sized>(
    resolver: &R,
    local: &Operation,
    remote: &RemoteRecord,
) -> Resolution {
    let resolution = resolver.resolve(local, remote);
    // Entity keys may be personal (a patient's, a customer's id): DEBUG only.
    tracing::debug!(target: "cpc_conflict", op_id = %local.id, entity = %local.entity, "conflict on entity");
    tracing::info!(
        target: "cpc_conflict",
        op_id = %local.id,
        local_kind = kind_name(&local.kind),
        local_timestamp = %local.timestamp,
        local_base_version = ?local.base_version,
        local_payload_len = local.payload.len(),
        remote_version = remote.version,
        remote_timestamp = %remote.timestamp,
        remote_node = %remote.node,
        remote_deleted = remote.payload.is_none(),
        remote_payload_len = remote.payload.as_ref().map_or(0, Vec::len),
        resolver = resolver.name(),
        resolution = resolution.name(),
        merged_len = merged_len(&resolution),
        "conflict resolved"
    );
    resolution
}

/// Builds the conflict log entry for a decision, with the payload that lost:
///
/// | resolution   | `losing_payload`                                        |
/// |--------------|---------------------------------------------------------|
/// | `KeepLocal`  | the remote payload (`None` if the remote was deleted)   |
/// | `KeepRemote` | the local payload (`None` if the local op is a delete)  |
/// | `Merged`     | `None`: both versions survive in the merge              |
/// | `Defer`      | `None`: nothing is lost until the application settles   |
///
/// Both full versions are recorded in any case (`local_payload` and
/// `remote.payload`), so the application can show "your change to X was
/// replaced" and recover either value. `now_ms` is the local wall clock in ms
/// since the epoch (the log is pruned by age against it).
pub fn conflict_record(
    local: &Operation,
    remote: &RemoteRecord,
    resolution: &Resolution,
    now_ms: u64,
) -> ConflictRecord {
    let losing_payload = match resolution {
        Resolution::KeepLocal => remote.payload.clone(),
        Resolution::KeepRemote => match local.kind {
            OperationKind::Delete => None,
            _ => Some(local.payload.clone()),
        },
        Resolution::Merged(_) | Resolution::Defer => None,
    };
    ConflictRecord {
        op_id: local.id,
        entity: local.entity.clone(),
        local_timestamp: local.timestamp,
        local_payload: local.payload.clone(),
        remote: remote.clone(),
        resolution: resolution.clone(),
        losing_payload,
        resolved_at_ms: now_ms,
    }
}

/// [`resolve_logged`] then [`conflict_record`]: the decision and its log
/// entry, so every caller records conflicts the same way.
pub fn resolve_and_record<R: ConflictResolver + ?Sized>(
    resolver: &R,
    local: &Operation,
    remote: &RemoteRecord,
    now_ms: u64,
) -> (Resolution, ConflictRecord) {
    let resolution = resolve_logged(resolver, local, remote);
    let record = conflict_record(local, remote, &resolution, now_ms);
    (resolution, record)
}

fn kind_name(kind: &OperationKind) -> &'static str {
    match kind {
        OperationKind::Create => "create",
        OperationKind::Update => "update",
        OperationKind::Delete => "delete",
        // Custom names are application-chosen; only the category is traced.
        OperationKind::Custom(_) => "custom",
    }
}

fn merged_len(resolution: &Resolution) -> usize {
    match resolution {
        Resolution::Merged(bytes) => bytes.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_core::{EntityKey, HlcTimestamp, NodeId, OperationId};

    fn op(kind: OperationKind) -> Operation {
        Operation {
            id: OperationId::from_u128(42),
            entity: EntityKey::new("notes", "n1"),
            kind,
            payload: b"local".to_vec(),
            priority: Default::default(),
            timestamp: HlcTimestamp::new(10, 0, NodeId(1)),
            base_version: Some(1),
        }
    }

    fn remote(payload: Option<&[u8]>) -> RemoteRecord {
        RemoteRecord {
            version: 2,
            timestamp: HlcTimestamp::new(20, 0, NodeId(2)),
            payload: payload.map(<[u8]>::to_vec),
            node: NodeId(2),
        }
    }

    #[test]
    fn losing_payload_is_the_side_that_lost() {
        let upd = op(OperationKind::Update);
        let rem = remote(Some(b"remote"));
        let keep_local = conflict_record(&upd, &rem, &Resolution::KeepLocal, 99);
        assert_eq!(keep_local.losing_payload.as_deref(), Some(&b"remote"[..]));
        let keep_remote = conflict_record(&upd, &rem, &Resolution::KeepRemote, 99);
        assert_eq!(keep_remote.losing_payload.as_deref(), Some(&b"local"[..]));
        let merged = conflict_record(&upd, &rem, &Resolution::Merged(b"m".to_vec()), 99);
        assert_eq!(merged.losing_payload, None);
        let deferred = conflict_record(&upd, &rem, &Resolution::Defer, 99);
        assert_eq!(deferred.losing_payload, None);
        for r in [keep_local, keep_remote, merged, deferred] {
            assert_eq!(r.op_id, upd.id);
            assert_eq!(r.entity, upd.entity);
            assert_eq!(r.local_timestamp, upd.timestamp);
            assert_eq!(r.local_payload, b"local");
            assert_eq!(r.remote, rem);
            assert_eq!(r.resolved_at_ms, 99);
        }
    }

    #[test]
    fn deletes_lose_no_payload() {
        let rec = conflict_record(
            &op(OperationKind::Delete),
            &remote(Some(b"r")),
            &Resolution::KeepRemote,
            1,
        );
        assert_eq!(rec.losing_payload, None);
        let rec = conflict_record(
            &op(OperationKind::Update),
            &remote(None),
            &Resolution::KeepLocal,
            1,
        );
        assert_eq!(rec.losing_payload, None);
    }

    #[test]
    fn resolve_and_record_agree() {
        let (res, rec) = resolve_and_record(
            &crate::LastWriterWins,
            &op(OperationKind::Update),
            &remote(Some(b"r")),
            5,
        );
        assert_eq!(res, Resolution::KeepRemote);
        assert_eq!(rec.resolution, res);
        assert_eq!(rec.losing_payload.as_deref(), Some(&b"local"[..]));
    }
}
