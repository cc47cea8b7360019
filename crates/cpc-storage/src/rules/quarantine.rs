//! Damaged records: loading an operation or quarantining it in place as
//! a dead letter, and repairing it.

use super::*;

/// Loads the operation of `meta`; a record that fails its checksum or
/// decoding (or whose id disagrees with its index) is quarantined and `None`
/// returned. One already quarantined (dead for that reason) is not again.
pub(super) fn load_or_quarantine<T: Tx + ?Sized>(
    tx: &mut T,
    meta: &OpMeta,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<Option<Operation>> {
    match tx.load_op(meta)? {
        Loaded::Ok(op) if op.id == meta.id => Ok(Some(op)),
        _ if is_quarantined(meta) => Ok(None),
        Loaded::Ok(_) => {
            let error = EnvelopeError::Malformed("stored id differs from the index".into());
            quarantine(tx, meta, error, "operation", now, options)?;
            Ok(None)
        }
        Loaded::Corrupt { raw, error } => {
            quarantine_raw(tx, meta, raw, &error, "operation", now, options)?;
            Ok(None)
        }
    }
}

/// The reason prefix of an operation parked by the quarantine.
pub(crate) const QUARANTINED: &str = "quarantined: ";

/// Whether `meta` is an operation the quarantine parked (dead, with the
/// quarantine's reason).
pub(super) fn is_quarantined(meta: &OpMeta) -> bool {
    matches!(&meta.state, OpState::Dead { reason } if reason.starts_with(QUARANTINED))
}

pub(super) fn quarantine<T: Tx + ?Sized>(
    tx: &mut T,
    meta: &OpMeta,
    error: EnvelopeError,
    what: &str,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<()> {
    let raw = tx.raw_op(meta)?;
    quarantine_raw(tx, meta, raw, &error, what, now, options)
}

/// Keeps `raw` aside in the quarantine set and parks the operation as a
/// dead letter in its place: its entity waits behind it (under
/// `BlockEntity`) until the application repairs or drops it, so a damaged
/// record never lets a later edit of the same record overtake it.
pub(super) fn quarantine_raw<T: Tx + ?Sized>(
    tx: &mut T,
    meta: &OpMeta,
    raw: Vec<u8>,
    error: &EnvelopeError,
    what: &str,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<()> {
    tracing::warn!(
        seq = meta.seq,
        id = %meta.id,
        raw_len = raw.len(),
        error = %error,
        "quarantining a corrupt record; its operation is parked as a dead letter"
    );
    let reason = format!("{what}: {error}");
    tx.quarantine(meta, raw, reason.clone(), now)?;
    let dead = format!("{QUARANTINED}{reason}");
    let mut new = meta.clone();
    new.state = OpState::Dead {
        reason: dead.clone(),
    };
    new.last_error = Some(dead);
    change_state(tx, meta, new, options)?;
    tx.notices().push(QuarantineNotice {
        id: Some(meta.id),
        entity: cpc_core::EntityKey::from_key_bytes(&meta.entity),
        reason,
    });
    Ok(())
}

/// Replaces a dead operation with a fixed version (same id and entity)
/// and makes it ready in its place; `false` if no dead operation has the id.
pub(crate) fn repair<T: Tx + ?Sized>(
    tx: &mut T,
    fixed: &Operation,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<bool> {
    validate(fixed, options.max_payload)?;
    let Some(meta) = tx.meta_by_id(fixed.id)? else {
        return Ok(false);
    };
    if !matches!(meta.state, OpState::Dead { .. }) {
        return Ok(false);
    }
    if fixed.entity.to_key_bytes() != meta.entity {
        return Err(StorageError::RepairMismatch {
            id: fixed.id,
            reason: "the fixed operation belongs to another entity",
        });
    }
    let mut new = meta.clone();
    new.payload_len = fixed.payload.len() as u64;
    new.state = OpState::Ready;
    new.attempts = 0;
    new.ready_at = now;
    new.last_error = None;
    // The priority is part of the row's bookkeeping and indexes: the
    // stored one is kept.
    let mut op = fixed.clone();
    op.priority = meta.priority;
    tx.update_op(&new, &op)?;
    change_state(tx, &meta, new, options)?;
    Ok(true)
}
