//! Limits derived from `max_payload` for decoding records, and the
//! conflict log's bounds.

use super::*;

/// Room a stored record needs beyond its payload(s): ids, the entity key
/// (at most `MAX_KEY_LEN` bytes), timestamps, the encoding's own bytes.
pub(super) const RECORD_SLACK: usize = 64 * 1024;

/// The largest body a record holding one payload of at most `max_payload`
/// bytes can have. Decoding limits come from here, from the store's own
/// `max_payload`, so that everything the store accepted it can read back,
/// whatever limit it was opened with (and nothing larger is allocated).
pub(crate) fn body_limit(max_payload: usize) -> u32 {
    u32::try_from(max_payload.saturating_add(RECORD_SLACK)).unwrap_or(u32::MAX)
}

/// The largest body of a conflict log entry: up to three payloads (local,
/// remote, losing), each within `max_payload`.
pub(crate) fn conflict_body_limit(max_payload: usize) -> u32 {
    u32::try_from(max_payload.saturating_mul(3).saturating_add(RECORD_SLACK)).unwrap_or(u32::MAX)
}

/// Checks that every payload a conflict log entry holds is within the
/// store's limit (the entry is then within [`conflict_body_limit`]).
pub(crate) fn check_conflict(entry: &cpc_core::ConflictRecord, max_payload: usize) -> Result<()> {
    check_payload(entry.local_payload.len(), max_payload)?;
    if let Some(p) = &entry.remote.payload {
        check_payload(p.len(), max_payload)?;
    }
    if let Some(p) = &entry.losing_payload {
        check_payload(p.len(), max_payload)?;
    }
    if let Resolution::Merged(p) = &entry.resolution {
        check_payload(p.len(), max_payload)?;
    }
    Ok(())
}

/// Decodes an operation envelope whose body is at most `limit` bytes.
pub(crate) fn decode_op(raw: Vec<u8>, limit: u32) -> Loaded<Operation> {
    match envelope::decode(RecordKind::Operation, &raw, limit) {
        Ok(op) => Loaded::Ok(op),
        Err(error) => Loaded::Corrupt { raw, error },
    }
}

/// Decodes a deferred remote record envelope whose body is at most `limit` bytes.
pub(crate) fn decode_remote(raw: Vec<u8>, limit: u32) -> Loaded<RemoteRecord> {
    match envelope::decode(RecordKind::Deferred, &raw, limit) {
        Ok(r) => Loaded::Ok(r),
        Err(error) => Loaded::Corrupt { raw, error },
    }
}

/// Prunes a conflict log held as `(insertion id, entry)` oldest first: by
/// age relative to the newest entry's `resolved_at_ms`, then by count, then
/// by bytes (the newest entry is kept); returns how many were pruned.
pub(crate) fn prune_conflicts(
    log: &mut std::collections::VecDeque<(u64, cpc_core::ConflictRecord)>,
    newest_at: EpochMillis,
    options: &QueueOptions,
) -> u64 {
    let before = log.len();
    let cutoff = newest_at.saturating_sub(millis(options.conflict_log_max_age));
    log.retain(|(_, e)| e.resolved_at_ms >= cutoff);
    while log.len() > options.conflict_log_max_entries {
        log.pop_front();
    }
    let mut bytes: u64 = log.iter().map(|(_, e)| conflict_size(e)).sum();
    while bytes > options.conflict_log_max_bytes && log.len() > 1 {
        if let Some((_, e)) = log.pop_front() {
            bytes = bytes.saturating_sub(conflict_size(&e));
        }
    }
    (before - log.len()) as u64
}

/// The bytes a conflict log entry holds (its payloads and a fixed
/// allowance for the rest), as the in-memory store counts them.
pub(super) fn conflict_size(e: &cpc_core::ConflictRecord) -> u64 {
    let payloads = e.local_payload.len()
        + e.remote.payload.as_ref().map_or(0, Vec::len)
        + e.losing_payload.as_ref().map_or(0, Vec::len)
        + match &e.resolution {
            Resolution::Merged(p) => p.len(),
            _ => 0,
        };
    payloads as u64 + 128
}

/// The age cutoff for the conflict log when `newest_at` was just logged.
pub(crate) fn conflict_cutoff(newest_at: EpochMillis, options: &QueueOptions) -> EpochMillis {
    newest_at.saturating_sub(millis(options.conflict_log_max_age))
}
