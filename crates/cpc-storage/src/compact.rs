//! The compact operation body of the SQLite store (format 3): the operation
//! without the fields its row already holds in columns (id, entity, as the
//! interned `eid`, and priority), with a CRC32 that still covers them.
//!
//! Layout: `TAG (1) | VERSION (1) | crc32 (4, LE) | postcard(rest)`, where
//! the CRC runs over `TAG | VERSION`, the id's 16 bytes, the entity key's
//! length (4, BE) and bytes, the priority rank, then `rest`. So a row whose
//! id, entity or priority column was damaged, or whose body was moved to
//! another row, fails its check exactly like a damaged body. Against the
//! format-2 envelope this saves the id, the entity key, the priority and
//! the envelope header (≈ 36 B for a typical operation).
//!
//! Format-2 rows (a `cpc_core::envelope`, which starts with a different
//! byte) stay readable, so a store upgraded in place needs no rewrite.

use cpc_core::envelope::MAGIC;
use cpc_core::{EntityKey, EnvelopeError, HlcTimestamp, Operation, OperationKind};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::rules::{self, Loaded, OpMeta};

/// First byte of a compact body (an envelope starts with `MAGIC[0]`).
const TAG: u8 = 0xC6;
/// Version of the compact body layout.
const VERSION: u8 = 1;
/// Bytes before the postcard part.
const HEADER: usize = 6;

/// What the columns do not hold, borrowed for encoding.
#[derive(Serialize)]
struct RestRef<'a> {
    kind: &'a OperationKind,
    payload: &'a Vec<u8>,
    timestamp: &'a HlcTimestamp,
    base_version: &'a Option<u64>,
}

/// What the columns do not hold, decoded.
#[derive(Deserialize)]
struct Rest {
    kind: OperationKind,
    payload: Vec<u8>,
    timestamp: HlcTimestamp,
    base_version: Option<u64>,
}

fn checksum(op_id: &[u8; 16], entity: &[u8], rank: u8, rest: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[TAG, VERSION]);
    h.update(op_id);
    h.update(
        &u32::try_from(entity.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    h.update(entity);
    h.update(&[rank]);
    h.update(rest);
    h.finalize()
}

/// The compact body of `op`.
pub(crate) fn encode(op: &Operation) -> Result<Vec<u8>> {
    // Serialized straight after the header into a buffer sized for the
    // payload: one allocation of about the payload's size, where a
    // growing `to_allocvec` and a copy behind the header held up to three
    // times the payload at once.
    let mut out = Vec::with_capacity(HEADER + op.payload.len() + REST_SLACK);
    out.extend_from_slice(&[TAG, VERSION, 0, 0, 0, 0]);
    let mut out = postcard::to_extend(
        &RestRef {
            kind: &op.kind,
            payload: &op.payload,
            timestamp: &op.timestamp,
            base_version: &op.base_version,
        },
        out,
    )
    .map_err(|e| StorageError::Encode(EnvelopeError::Malformed(e.to_string())))?;
    let crc = checksum(
        &op.id.to_be_bytes(),
        &op.entity.to_key_bytes(),
        op.priority.rank(),
        &out[HEADER..],
    );
    out[2..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Bytes of the body beside the payload: kind, timestamp, base version and
/// postcard's length prefixes (at most about 40; rounded up).
const REST_SLACK: usize = 64;

/// The operation of the row `meta` from its stored body: a compact body or
/// a format-2 envelope. Anything that fails a check is `Corrupt`, with the
/// bytes kept for the quarantine.
pub(crate) fn decode(raw: Vec<u8>, meta: &OpMeta, limit: u32) -> Loaded<Operation> {
    match raw.first() {
        Some(&b) if b == MAGIC[0] => rules::decode_op(raw, limit),
        _ => match decode_compact(&raw, meta, limit) {
            Ok(op) => Loaded::Ok(op),
            Err(error) => Loaded::Corrupt { raw, error },
        },
    }
}

fn decode_compact(
    raw: &[u8],
    meta: &OpMeta,
    limit: u32,
) -> std::result::Result<Operation, EnvelopeError> {
    let Some((header, rest)) = raw.split_first_chunk::<HEADER>() else {
        return Err(EnvelopeError::TruncatedHeader {
            got: raw.len(),
            need: HEADER,
        });
    };
    if header[0] != TAG {
        return Err(EnvelopeError::BadMagic);
    }
    if header[1] != VERSION {
        return Err(EnvelopeError::UnsupportedVersion {
            found: header[1],
            supported: VERSION,
        });
    }
    // Bounded before anything is decoded or allocated from it.
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    if rest.len() > max {
        return Err(EnvelopeError::Malformed(format!(
            "body of {} bytes exceeds {max}",
            rest.len()
        )));
    }
    let stored = u32::from_le_bytes([header[2], header[3], header[4], header[5]]);
    let rank = meta.priority.rank();
    if checksum(&meta.id.to_be_bytes(), &meta.entity, rank, rest) != stored {
        return Err(EnvelopeError::Malformed(
            "checksum mismatch (body or its row's id, entity or priority)".into(),
        ));
    }
    let entity = EntityKey::from_key_bytes(&meta.entity)
        .ok_or_else(|| EnvelopeError::Malformed("the row's entity key is not a key".into()))?;
    let rest: Rest =
        postcard::from_bytes(rest).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    Ok(Operation {
        id: meta.id,
        entity,
        kind: rest.kind,
        payload: rest.payload,
        priority: meta.priority,
        timestamp: rest.timestamp,
        base_version: rest.base_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OpState;
    use cpc_core::{NodeId, OperationPriority};
    use rand::{rngs::StdRng, SeedableRng};

    fn op() -> Operation {
        Operation::builder(EntityKey::new("notes", "n1"), OperationKind::Update)
            .payload(vec![7; 300])
            .priority(OperationPriority::High)
            .base_version(9)
            .build_at(
                HlcTimestamp::new(1_700_000_000_000, 3, NodeId(5)),
                &mut StdRng::seed_from_u64(1),
            )
    }

    fn meta(op: &Operation) -> OpMeta {
        OpMeta {
            seq: 1,
            id: op.id,
            entity: op.entity.to_key_bytes(),
            priority: op.priority,
            state: OpState::Ready,
            ready_at: 0,
            enqueued_at: 0,
            attempts: 0,
            last_error: None,
            payload_len: op.payload.len() as u64,
            head: None,
            claimed: false,
        }
    }

    fn decoded(raw: Vec<u8>, meta: &OpMeta) -> std::result::Result<Operation, EnvelopeError> {
        match decode(raw, meta, rules::body_limit(cpc_core::DEFAULT_MAX_PAYLOAD)) {
            Loaded::Ok(op) => Ok(op),
            Loaded::Corrupt { error, .. } => Err(error),
        }
    }

    #[test]
    fn round_trips_and_is_smaller_than_the_envelope() {
        let op = op();
        let body = encode(&op).unwrap();
        let envelope = cpc_core::envelope::encode_operation(&op).unwrap();
        assert!(
            body.len() + 30 <= envelope.len(),
            "{} vs {}",
            body.len(),
            envelope.len()
        );
        assert_eq!(decoded(body, &meta(&op)).unwrap(), op);
        // A format-2 row still reads.
        assert_eq!(decoded(envelope, &meta(&op)).unwrap(), op);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error() {
        let op = op();
        let body = encode(&op).unwrap();
        let m = meta(&op);
        for len in 0..body.len() {
            assert!(
                decoded(body[..len].to_vec(), &m).is_err(),
                "truncated to {len}"
            );
        }
        for bit in 0..body.len() * 8 {
            let mut b = body.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decoded(b, &m).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn a_body_under_another_rows_columns_is_an_error() {
        let op = op();
        let body = encode(&op).unwrap();
        let mut other = meta(&op);
        other.entity = EntityKey::new("notes", "n2").to_key_bytes();
        assert!(decoded(body.clone(), &other).is_err());
        let mut other = meta(&op);
        other.priority = OperationPriority::Background;
        assert!(decoded(body.clone(), &other).is_err());
        let mut other = meta(&op);
        let mut id = op.id.to_be_bytes();
        id[15] ^= 1;
        other.id = cpc_core::OperationId::from_be_bytes(id);
        assert!(decoded(body, &other).is_err());
    }
}
