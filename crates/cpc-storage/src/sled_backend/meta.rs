//! The bookkeeping record as sled stores it, and its formats: format 1
//! (no `claimed`) is still read, as claimed.

use cpc_core::envelope::{self, RecordKind};
use cpc_core::{EnvelopeError, OperationId, OperationPriority};
use serde::{Deserialize, Serialize};

use crate::api::{EpochMillis, OpState};
use crate::rules::{Head, OpMeta};

/// Largest bookkeeping body decoded (ids, entity key, error text).
pub(super) const MAX_META_BODY: u32 = 256 * 1024;

/// `OpMeta` as stored (without its seq, which is the key): the format-1
/// record, then `claimed` (format 2). postcard writes a nested struct's
/// fields in sequence, so the bytes are format 1's followed by one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredMeta {
    base: StoredMetaV1,
    claimed: bool,
}

/// The bookkeeping record as format 1 wrote it (no `claimed`). Such a
/// record is read as claimed: whether it was is unknown, and only a
/// never-claimed operation may be coalesced into. (A format-1 build would
/// refuse format-2 records, trailing bytes being corruption: the marker's
/// format 2 keeps it out.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredMetaV1 {
    id: OperationId,
    entity: Vec<u8>,
    priority: OperationPriority,
    state: OpState,
    ready_at: EpochMillis,
    enqueued_at: EpochMillis,
    attempts: u32,
    last_error: Option<String>,
    payload_len: u64,
    head: Option<StoredHead>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum StoredHead {
    Due { eff: OperationPriority, aging: bool },
    Timed,
    Blocked,
}

impl StoredMeta {
    pub(super) fn from_meta(m: &OpMeta) -> Self {
        StoredMeta {
            base: StoredMetaV1 {
                id: m.id,
                entity: m.entity.clone(),
                priority: m.priority,
                state: m.state.clone(),
                ready_at: m.ready_at,
                enqueued_at: m.enqueued_at,
                attempts: m.attempts,
                last_error: m.last_error.clone(),
                payload_len: m.payload_len,
                head: m.head.map(|h| match h {
                    Head::Due { eff, aging } => StoredHead::Due { eff, aging },
                    Head::Timed => StoredHead::Timed,
                    Head::Blocked => StoredHead::Blocked,
                }),
            },
            claimed: m.claimed,
        }
    }

    pub(super) fn into_meta(self, seq: u64) -> OpMeta {
        let b = self.base;
        OpMeta {
            seq,
            id: b.id,
            entity: b.entity,
            priority: b.priority,
            state: b.state,
            ready_at: b.ready_at,
            enqueued_at: b.enqueued_at,
            attempts: b.attempts,
            last_error: b.last_error,
            payload_len: b.payload_len,
            head: b.head.map(|h| match h {
                StoredHead::Due { eff, aging } => Head::Due { eff, aging },
                StoredHead::Timed => Head::Timed,
                StoredHead::Blocked => Head::Blocked,
            }),
            claimed: self.claimed,
        }
    }
}

/// Decodes a bookkeeping record of format 2, or of format 1 (read as
/// claimed); the error is format 2's.
pub(super) fn decode_meta(raw: &[u8]) -> std::result::Result<StoredMeta, EnvelopeError> {
    envelope::decode::<StoredMeta>(RecordKind::Meta, raw, MAX_META_BODY).or_else(|e| {
        envelope::decode::<StoredMetaV1>(RecordKind::Meta, raw, MAX_META_BODY)
            .map(|base| StoredMeta {
                base,
                claimed: true,
            })
            .map_err(|_| e)
    })
}

#[cfg(test)]
mod meta_format {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn meta(claimed: bool) -> OpMeta {
        OpMeta {
            seq: 7,
            id: OperationId::from_u128(9),
            entity: b"notes/1".to_vec(),
            priority: OperationPriority::High,
            state: OpState::Ready,
            ready_at: 5,
            enqueued_at: 5,
            attempts: 0,
            last_error: None,
            payload_len: 12,
            head: Some(Head::Due {
                eff: OperationPriority::High,
                aging: true,
            }),
            claimed,
        }
    }

    /// A format-2 record is format 1's bytes and one more; a format-1
    /// record reads as claimed (unknown history), a format-2 one as it was.
    #[test]
    fn format_1_records_read_as_claimed_and_format_2_round_trips() {
        let v2 = StoredMeta::from_meta(&meta(false));
        let new = envelope::encode(RecordKind::Meta, &v2).unwrap();
        let old = envelope::encode(RecordKind::Meta, &v2.base).unwrap();
        assert_eq!(new.len(), old.len() + 1);
        assert_eq!(decode_meta(&new).unwrap().into_meta(7), meta(false));
        assert_eq!(decode_meta(&old).unwrap().into_meta(7), meta(true));
        let mut damaged = new.clone();
        damaged[envelope::HEADER_LEN] ^= 0xFF;
        assert!(decode_meta(&damaged).is_err());
    }
}
