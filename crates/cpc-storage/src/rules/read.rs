//! Reading the queue: listings page by page, one operation, deferred
//! conflicts, and the count of what waits behind a parked head.

use super::*;

/// Operations matching `filter`, in seq order (corrupt ones quarantined).
pub(crate) fn list<T: Tx + ?Sized>(
    tx: &mut T,
    filter: &ListFilter,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<Vec<StoredOperation>> {
    let entity = filter.entity.as_ref().map(|e| e.to_key_bytes());
    let metas = tx.list_metas(MetaFilter::listing(filter, entity.as_deref()))?;
    let mut out = Vec::with_capacity(metas.len());
    for meta in metas {
        if let Some(op) = load_or_quarantine(tx, &meta, now, options)? {
            out.push(stored(meta, op));
        }
    }
    Ok(out)
}

/// One operation by id; a corrupt one is quarantined and reported as
/// [`StorageError::Corrupt`].
pub(crate) fn get<T: Tx + ?Sized>(
    tx: &mut T,
    id: OperationId,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<Option<StoredOperation>> {
    let Some(meta) = tx.meta_by_id(id)? else {
        return Ok(None);
    };
    match tx.load_op(&meta)? {
        Loaded::Ok(op) if op.id == meta.id => Ok(Some(stored(meta, op))),
        Loaded::Ok(_) | Loaded::Corrupt { .. } if is_quarantined(&meta) => Err(corrupt(
            &meta,
            EnvelopeError::Malformed("the operation is quarantined".into()),
        )),
        Loaded::Ok(_) => {
            let error = EnvelopeError::Malformed("stored id differs from the index".into());
            quarantine(tx, &meta, error.clone(), "operation", now, options)?;
            Err(corrupt(&meta, error))
        }
        Loaded::Corrupt { raw, error } => {
            quarantine_raw(tx, &meta, raw, &error, "operation", now, options)?;
            Err(corrupt(&meta, error))
        }
    }
}

/// One page of deferred conflicts in seq order. Corrupt ones are
/// quarantined (they become dead letters) and the page is filled from
/// further on, so a short page always means the listing's end.
pub(crate) fn list_deferred<T: Tx + ?Sized>(
    tx: &mut T,
    page: &crate::api::Page,
    now: EpochMillis,
    options: &QueueOptions,
) -> Result<Vec<crate::api::DeferredConflict>> {
    let limit = page.limit.unwrap_or(usize::MAX);
    let mut after = page.after;
    let mut out = Vec::new();
    while out.len() < limit {
        let want = limit - out.len();
        let metas = tx.list_metas(MetaFilter {
            entity: None,
            dead: None,
            deferred_only: true,
            limit: page.limit.map(|_| want),
            after,
        })?;
        let exhausted = metas.len() < want;
        for meta in metas {
            after = Some(meta.seq);
            let remote = match tx.load_remote(&meta)? {
                Some(Loaded::Ok(r)) => r,
                Some(Loaded::Corrupt { error, .. }) => {
                    quarantine(tx, &meta, error, "deferred remote record", now, options)?;
                    continue;
                }
                None => continue,
            };
            if let Some(op) = load_or_quarantine(tx, &meta, now, options)? {
                out.push(crate::api::DeferredConflict {
                    op,
                    seq: meta.seq,
                    remote,
                    reason: meta.last_error,
                });
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(out)
}

/// Fills `stats.blocked`: the pending operations of entities whose head
/// is dead (under `BlockEntity`) or deferred. Costs nothing when nothing is
/// parked; otherwise a look at each parked operation's entity.
pub(crate) fn count_blocked<T: Tx + ?Sized>(
    tx: &mut T,
    stats: &mut QueueStats,
    options: &QueueOptions,
) -> Result<()> {
    stats.blocked = 0;
    if stats.pending == 0 || stats.dead + stats.deferred == 0 {
        return Ok(());
    }
    let skip = skip_dead(options);
    let mut entities = std::collections::BTreeSet::new();
    for filter in [
        MetaFilter {
            entity: None,
            dead: Some(true),
            deferred_only: false,
            limit: None,
            after: None,
        },
        MetaFilter {
            entity: None,
            dead: None,
            deferred_only: true,
            limit: None,
            after: None,
        },
    ] {
        if filter.dead.is_some() && skip {
            // Dead heads are skipped: they block nothing.
            continue;
        }
        for meta in tx.list_metas(filter)? {
            entities.insert(meta.entity);
        }
    }
    for entity in entities {
        let head = tx.first_in_entity(&entity, skip)?;
        if head.is_some_and(|h| matches!(h.state, OpState::Dead { .. } | OpState::Deferred)) {
            let metas = tx.list_metas(MetaFilter {
                entity: Some(&entity),
                dead: None,
                deferred_only: false,
                limit: None,
                after: None,
            })?;
            stats.blocked += metas.iter().filter(|m| m.is_pending()).count() as u64;
        }
    }
    stats.blocked = stats.blocked.min(stats.pending);
    Ok(())
}
