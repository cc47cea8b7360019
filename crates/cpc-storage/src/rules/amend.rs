//! Amendments: the changes the application (or the worker, for deferred
//! conflicts) makes to operations already queued: revive, drop, drop an
//! entity, settle a deferred conflict ([`Amend`]; repairs are in
//! `quarantine.rs`).

use super::*;

/// Applies one [`Amend`]; returns what it counts (see each variant).
pub(crate) fn amend<T: Tx + ?Sized>(
    tx: &mut T,
    change: &Amend,
    options: &QueueOptions,
) -> Result<u64> {
    let one = |changed: bool| u64::from(changed);
    Ok(match change {
        Amend::Revive { id, now } => one(revive(tx, *id, *now, options)?),
        Amend::Drop(id) => one(drop_op(tx, *id, options)?),
        Amend::DropEntity(entity) => drop_entity(tx, &entity.to_key_bytes())?,
        Amend::Settle {
            id,
            resolution,
            now,
        } => one(settle(tx, *id, resolution, *now, options)?),
        Amend::Repair { fixed, now } => one(repair(tx, fixed, *now, options)?),
        Amend::PurgeQuarantined => tx.purge_quarantine()?,
        Amend::Import { ops, now } => {
            check_enqueue(tx, ops, options)?;
            for op in ops {
                store_new(tx, op, *now, options, true)?;
            }
            ops.len() as u64
        }
    })
}

/// Dead or deferred → ready with attempts reset; `false` otherwise.
pub(crate) fn revive<T: Tx + ?Sized>(
    tx: &mut T,
    id: OperationId,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<bool> {
    let Some(meta) = tx.meta_by_id(id)? else {
        return Ok(false);
    };
    if !matches!(meta.state, OpState::Dead { .. } | OpState::Deferred) {
        return Ok(false);
    }
    let mut new = meta.clone();
    new.state = OpState::Ready;
    new.attempts = 0;
    new.ready_at = now;
    change_state(tx, &meta, new, options)?;
    Ok(true)
}

/// Removes one operation; `false` if unknown.
pub(crate) fn drop_op<T: Tx + ?Sized>(
    tx: &mut T,
    id: OperationId,
    options: &QueueOptions,
) -> Result<bool> {
    let Some(meta) = tx.meta_by_id(id)? else {
        return Ok(false);
    };
    remove(tx, &meta, options)?;
    Ok(true)
}

/// Removes every operation of an entity; returns how many.
pub(crate) fn drop_entity<T: Tx + ?Sized>(tx: &mut T, entity: &[u8]) -> Result<u64> {
    let metas = tx.list_metas(MetaFilter {
        entity: Some(entity),
        dead: None,
        deferred_only: false,
        limit: None,
        after: None,
    })?;
    for meta in &metas {
        tx.delete(meta)?;
        tx.counters().account(meta, false);
    }
    Ok(metas.len() as u64)
}

/// Settles a deferred conflict; `false` if the operation is not deferred.
pub(crate) fn settle<T: Tx + ?Sized>(
    tx: &mut T,
    id: OperationId,
    resolution: &Resolution,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<bool> {
    if let Resolution::Merged(p) = resolution {
        check_payload(p.len(), options.max_payload)?;
    }
    let Some(meta) = tx.meta_by_id(id)? else {
        return Ok(false);
    };
    if !matches!(meta.state, OpState::Deferred) {
        return Ok(false);
    }
    let payload = match resolution {
        Resolution::Defer => return Ok(true),
        Resolution::KeepRemote => {
            remove(tx, &meta, options)?;
            return Ok(true);
        }
        Resolution::KeepLocal => None,
        Resolution::Merged(p) => Some(p.clone()),
    };
    let version = match tx.load_remote(&meta)? {
        Some(Loaded::Ok(remote)) => Some(remote.version),
        Some(Loaded::Corrupt { error, .. }) => {
            quarantine(tx, &meta, error, "deferred remote record", now, options)?;
            return Ok(false);
        }
        None => None,
    };
    complete(
        tx,
        &[Completion::Resend {
            id,
            base_version: version,
            payload,
        }],
        now,
        options,
    )?;
    // The application decided: the operation starts afresh, so the limits
    // that count attempts (conflicts in a row, failures) start over too.
    if let Some(meta) = tx.meta_by_id(id)? {
        if meta.attempts != 0 {
            let mut new = meta.clone();
            new.attempts = 0;
            write_meta(tx, &meta, &new)?;
        }
    }
    Ok(true)
}
