//! The acked journal's rules over [`Tx`]: journaling an acknowledgement in
//! the write that removes the operation, pruning, listing, and putting
//! journaled operations back after a restore of the remote. See
//! [`crate::journal`].

use cpc_core::envelope::{self, RecordKind};
use cpc_core::EntityKey;

use super::{body_limit, fix_head, skip_dead, OpMeta, Tx};
use crate::api::{EpochMillis, OpState, Page, QueueOptions};
use crate::error::{Result, StorageError};
use crate::journal::{AckedOp, JournalRecord, Requeued, ACKED_IDS_AGE, ACKED_IDS_KEPT};

/// Journal entries one pruning pass looks at for age (the front is pruned
/// a little at every acknowledgement, so it never falls far behind).
const AGE_PRUNE_WINDOW: usize = 64;

/// The most journal entries one write prunes by count: entries may hold
/// whole operations, and one acknowledgement must not pay for deleting
/// thousands of them. The next writes go on while it is over.
const COUNT_PRUNE_MAX: u64 = 1024;

/// One journal row as a backend hands it over.
#[derive(Debug)]
pub(crate) struct JournalRow {
    /// Its place (1, 2, …).
    pub n: u64,
    /// When it was acknowledged.
    pub at: EpochMillis,
    /// The envelope (`RecordKind::Acked`); empty when not asked for.
    pub body: Vec<u8>,
}

/// The journal's appends of one completion write: the next `n` is read
/// once, the pruning done once at the end.
#[derive(Debug, Default)]
pub(crate) struct JournalAppends {
    last: Option<u64>,
    appended: bool,
}

impl JournalAppends {
    /// Journals `meta` (about to be removed), acknowledged at `now` at the
    /// remote's `remote_seq`; the whole operation too under retention.
    pub(crate) fn add<T: Tx + ?Sized>(
        &mut self,
        tx: &mut T,
        meta: &OpMeta,
        remote_seq: Option<u64>,
        now: EpochMillis,
        options: &QueueOptions,
    ) -> Result<()> {
        let last = match self.last {
            Some(last) => last,
            None => tx.journal_last()?,
        };
        let op = match options.retain_acked {
            // A damaged record cannot be kept whole: its id still is, so a
            // restore reports it instead of forgetting it.
            Some(_) => match tx.load_op(meta)? {
                super::Loaded::Ok(op) if op.id == meta.id => Some(op),
                _ => None,
            },
            None => None,
        };
        let record = JournalRecord {
            id: meta.id,
            entity: EntityKey::from_key_bytes(&meta.entity)
                .unwrap_or_else(|| EntityKey::new("", "")),
            queue_seq: meta.seq,
            remote_seq,
            enqueued_at: meta.enqueued_at,
            acked_at: now,
            op,
        };
        let body = envelope::encode(RecordKind::Acked, &record).map_err(StorageError::Encode)?;
        let n = last.saturating_add(1);
        tx.journal_put(n, now, body)?;
        self.last = Some(n);
        self.appended = true;
        Ok(())
    }

    /// Prunes the journal's front by age and count, once per write. By
    /// count in steps: only past `max_count` plus an eighth, then back to
    /// `max_count`, so a full journal costs one range delete every
    /// `max_count / 8` acknowledgements instead of a small one per write.
    pub(crate) fn finish<T: Tx + ?Sized>(
        self,
        tx: &mut T,
        now: EpochMillis,
        options: &QueueOptions,
    ) -> Result<()> {
        let (Some(last), true) = (self.last, self.appended) else {
            return Ok(());
        };
        let (max_count, max_age) = match &options.retain_acked {
            Some(r) => (r.max_count, r.max_age),
            None => (ACKED_IDS_KEPT, ACKED_IDS_AGE),
        };
        let Some(first) = tx.journal_scan(0, 1, false)?.into_iter().next() else {
            return Ok(());
        };
        let len = last.saturating_sub(first.n).saturating_add(1);
        let mut upto = 0;
        if len > max_count.saturating_add((max_count / 8).max(1)) {
            upto = last
                .saturating_sub(max_count)
                .min(first.n.saturating_add(COUNT_PRUNE_MAX - 1));
        }
        let cutoff = now.saturating_sub(super::millis(max_age));
        if first.at < cutoff {
            for row in tx.journal_scan(upto.max(first.n - 1), AGE_PRUNE_WINDOW, false)? {
                if row.at >= cutoff {
                    break;
                }
                upto = row.n;
            }
        }
        if upto > 0 {
            tx.journal_remove_upto(upto)?;
        }
        Ok(())
    }
}

/// How many entries the journal holds (entries are removed only from its
/// front, or all at once, so its `n`s are contiguous).
pub(crate) fn journal_len<T: Tx + ?Sized>(tx: &mut T) -> Result<u64> {
    let last = tx.journal_last()?;
    Ok(match tx.journal_scan(0, 1, false)?.first() {
        Some(first) => last.saturating_sub(first.n).saturating_add(1),
        None => 0,
    })
}

fn decode(row: &JournalRow, options: &QueueOptions) -> std::result::Result<JournalRecord, ()> {
    envelope::decode::<JournalRecord>(
        RecordKind::Acked,
        &row.body,
        body_limit(options.max_payload),
    )
    .map_err(|_| ())
}

/// One page of the journal, listed.
pub(crate) fn list_acked<T: Tx + ?Sized>(
    tx: &mut T,
    page: &Page,
    options: &QueueOptions,
) -> Result<Vec<AckedOp>> {
    let limit = page.limit.unwrap_or(usize::MAX);
    let rows = tx.journal_scan(page.after.unwrap_or(0), limit, true)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        match decode(&row, options) {
            Ok(record) => out.push(record.listed(row.n)),
            Err(()) => {
                return Err(StorageError::Corrupt {
                    key: format!("acked/{}", row.n),
                    source: cpc_core::EnvelopeError::Malformed(
                        "acked journal entry does not decode".into(),
                    ),
                })
            }
        }
    }
    Ok(out)
}

/// See [`QueueStorage::requeue_acked`](crate::QueueStorage::requeue_acked).
pub(crate) fn requeue_acked<T: Tx + ?Sized>(
    tx: &mut T,
    head_seq: u64,
    now: EpochMillis,
    limit: usize,
    options: &QueueOptions,
) -> Result<Requeued> {
    let limit = limit.max(1);
    let rows = tx.journal_scan(0, limit.saturating_add(1), true)?;
    let more = rows.len() > limit;
    let mut out = Requeued {
        more,
        ..Requeued::default()
    };
    let mut upto = 0;
    for row in rows.into_iter().take(limit) {
        upto = row.n;
        let record = decode(&row, options).ok();
        let lost = |seq: Option<u64>| seq.is_none_or(|s| s > head_seq);
        let Some(JournalRecord {
            op: Some(op),
            queue_seq,
            enqueued_at,
            ..
        }) = record
        else {
            if record.as_ref().is_none_or(|r| lost(r.remote_seq)) {
                out.unrecoverable += 1;
            }
            continue;
        };
        // Submitted again meanwhile (or put back by an earlier call).
        if tx.contains_id(op.id)? {
            continue;
        }
        let entity = op.entity.to_key_bytes();
        let marked = tx.first_in_entity(&entity, skip_dead(options))?;
        let meta = OpMeta {
            seq: queue_seq,
            id: op.id,
            entity,
            priority: op.priority,
            state: OpState::Ready,
            ready_at: now,
            enqueued_at,
            attempts: 0,
            last_error: None,
            payload_len: op.payload.len() as u64,
            head: None,
            // It reached the remote once: never coalesced into.
            claimed: true,
        };
        tx.insert_in_order(&meta, &op)?;
        tx.counters().account(&meta, true);
        fix_head(tx, &meta.entity, marked.as_ref(), options)?;
        out.requeued += 1;
    }
    if upto > 0 {
        tx.journal_remove_upto(upto)?;
    }
    Ok(out)
}
