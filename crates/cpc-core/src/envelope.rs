//! The versioned, checksummed envelope every stored record is wrapped in.
//!
//! Layout (little endian): `magic: [u8; 2] | format_version: u8 | kind: u8 |
//! body_len: u32 | crc32: u32 | body`. The CRC covers the first eight header
//! bytes and the body, so any single bit flip anywhere is detected. The length
//! is checked against a caller-given limit and against the bytes present
//! before anything is allocated or decoded; the body is postcard.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::EnvelopeError;
use crate::operation::{Operation, DEFAULT_MAX_PAYLOAD};

/// Magic bytes that open every envelope.
pub const MAGIC: [u8; 2] = [0xC5, 0x5C];
/// The format version this build writes (and the highest it reads).
pub const FORMAT_VERSION: u8 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 12;
/// Default largest body accepted on decode: the default payload limit plus
/// room for the other fields.
pub const DEFAULT_MAX_BODY: u32 = (DEFAULT_MAX_PAYLOAD + 64 * 1024) as u32;

/// What an envelope holds; lets one store keep several record types and
/// refuse a record of the wrong type instead of misreading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// An [`Operation`].
    Operation,
    /// A conflict log entry.
    Conflict,
    /// A deferred conflict's remote record.
    Deferred,
    /// Backend-specific metadata.
    Meta,
    /// An acknowledged operation in the queue's acked journal.
    Acked,
}

impl RecordKind {
    const fn tag(self) -> u8 {
        match self {
            RecordKind::Operation => 1,
            RecordKind::Conflict => 2,
            RecordKind::Deferred => 3,
            RecordKind::Meta => 4,
            RecordKind::Acked => 5,
        }
    }
}

/// Encodes `value` as an envelope of the given kind.
pub fn encode<T: Serialize>(kind: RecordKind, value: &T) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = vec![0u8; HEADER_LEN];
    let out = postcard::to_extend(value, out.split_off(0))
        .map_err(|e| EnvelopeError::Encode(e.to_string()))?;
    finish(kind, out)
}

fn finish(kind: RecordKind, mut out: Vec<u8>) -> Result<Vec<u8>, EnvelopeError> {
    let body_len = out.len() - HEADER_LEN;
    let body_len = u32::try_from(body_len)
        .map_err(|_| EnvelopeError::Encode("body larger than 4 GiB".into()))?;
    out[0..2].copy_from_slice(&MAGIC);
    out[2] = FORMAT_VERSION;
    out[3] = kind.tag();
    out[4..8].copy_from_slice(&body_len.to_le_bytes());
    let crc = checksum(&out[..8], &out[HEADER_LEN..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn checksum(header: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(body);
    h.finalize()
}

/// Checks an envelope's header, length and checksum without decoding the
/// body, and returns the body slice.
pub fn verify(kind: RecordKind, bytes: &[u8], max_body: u32) -> Result<&[u8], EnvelopeError> {
    if bytes.len() < HEADER_LEN {
        return Err(EnvelopeError::TruncatedHeader {
            got: bytes.len(),
            need: HEADER_LEN,
        });
    }
    if bytes[0..2] != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&bytes[4..8]);
    let declared = u32::from_le_bytes(len_bytes);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&bytes[8..12]);
    let stored = u32::from_le_bytes(crc_bytes);
    let body = &bytes[HEADER_LEN..];
    if declared > max_body {
        return Err(EnvelopeError::TooLarge {
            declared: u64::from(declared),
            max: u64::from(max_body),
        });
    }
    if u64::from(declared) != body.len() as u64 {
        return Err(EnvelopeError::LengthMismatch {
            declared: u64::from(declared),
            present: body.len() as u64,
        });
    }
    let computed = checksum(&bytes[..8], body);
    if computed != stored {
        return Err(EnvelopeError::Checksum { stored, computed });
    }
    // Checked after the CRC so that a flipped version byte reads as
    // corruption only when the checksum also disagrees.
    if bytes[2] != FORMAT_VERSION {
        return Err(EnvelopeError::UnsupportedVersion {
            found: bytes[2],
            supported: FORMAT_VERSION,
        });
    }
    if bytes[3] != kind.tag() {
        return Err(EnvelopeError::Malformed(format!(
            "record kind tag {} where {} was expected",
            bytes[3],
            kind.tag()
        )));
    }
    Ok(body)
}

/// Decodes an envelope of the given kind, refusing bodies over `max_body`.
pub fn decode<T: DeserializeOwned>(
    kind: RecordKind,
    bytes: &[u8],
    max_body: u32,
) -> Result<T, EnvelopeError> {
    let body = verify(kind, bytes, max_body)?;
    let (value, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(EnvelopeError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

/// Encodes an operation (the common case).
pub fn encode_operation(op: &Operation) -> Result<Vec<u8>, EnvelopeError> {
    encode(RecordKind::Operation, op)
}

/// Decodes an operation with the default size limit.
pub fn decode_operation(bytes: &[u8]) -> Result<Operation, EnvelopeError> {
    decode(RecordKind::Operation, bytes, DEFAULT_MAX_BODY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::{HlcTimestamp, NodeId};
    use crate::operation::{EntityKey, OperationKind, OperationPriority};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn op(payload: Vec<u8>, seed: u64) -> Operation {
        Operation::builder(
            EntityKey::new("notes", format!("n{seed}")),
            OperationKind::Custom("x".into()),
        )
        .payload(payload)
        .priority(OperationPriority::High)
        .base_version(seed)
        .build_at(
            HlcTimestamp::new(seed, 1, NodeId(seed)),
            &mut StdRng::seed_from_u64(seed),
        )
    }

    #[test]
    fn round_trips() {
        let o = op(b"hello".to_vec(), 3);
        let bytes = encode_operation(&o).unwrap();
        assert_eq!(decode_operation(&bytes).unwrap(), o);
    }

    #[test]
    fn a_length_claiming_4_gib_is_refused_before_allocating() {
        let mut bytes = encode_operation(&op(vec![1, 2, 3], 1)).unwrap();
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_operation(&bytes),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn wrong_kind_and_newer_version_are_refused() {
        let bytes = encode(RecordKind::Conflict, &5u32).unwrap();
        assert!(matches!(
            decode_operation(&bytes),
            Err(EnvelopeError::Malformed(_))
        ));
        // A well-formed envelope from a newer format version (valid CRC).
        let mut newer = encode(RecordKind::Meta, &5u32).unwrap();
        newer[2] = FORMAT_VERSION + 1;
        let crc = checksum(&newer[..8], &newer[HEADER_LEN..]);
        newer[8..12].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode::<u32>(RecordKind::Meta, &newer, 100),
            Err(EnvelopeError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn each_record_kind_refuses_the_others_and_trailing_bytes_are_malformed() {
        let kinds = [
            RecordKind::Operation,
            RecordKind::Conflict,
            RecordKind::Deferred,
            RecordKind::Meta,
            RecordKind::Acked,
        ];
        for (i, written) in kinds.iter().enumerate() {
            let bytes = encode(*written, &7u8).unwrap();
            for (j, read) in kinds.iter().enumerate() {
                match decode::<u8>(*read, &bytes, 100) {
                    Ok(v) if i == j => assert_eq!(v, 7),
                    Err(EnvelopeError::Malformed(text)) if i != j => assert_eq!(
                        text,
                        format!("record kind tag {} where {} was expected", i + 1, j + 1)
                    ),
                    other => panic!("{written:?} read as {read:?}: {other:?}"),
                }
            }
        }
        // Two values where one was expected.
        let bytes = encode(RecordKind::Acked, &(1u8, 2u8)).unwrap();
        assert_eq!(
            decode::<u8>(RecordKind::Acked, &bytes, 100),
            Err(EnvelopeError::Malformed("1 trailing bytes".into()))
        );
    }

    #[test]
    fn postcard_length_inside_body_cannot_force_allocation() {
        // A body that claims a 4 GiB byte string, with a valid CRC: postcard
        // must refuse it from the bytes present, not allocate.
        let mut body = Vec::new();
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let mut bytes = vec![0u8; HEADER_LEN];
        bytes.extend_from_slice(&body);
        let bytes = finish(RecordKind::Meta, bytes).unwrap();
        assert!(matches!(
            decode::<Vec<u8>>(RecordKind::Meta, &bytes, 1024),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trip_any_operation(payload in prop::collection::vec(any::<u8>(), 0..512), seed in any::<u64>()) {
            let o = op(payload, seed);
            let bytes = encode_operation(&o).unwrap();
            prop_assert_eq!(decode_operation(&bytes).unwrap(), o);
        }

        #[test]
        fn every_truncation_is_an_error(payload in prop::collection::vec(any::<u8>(), 0..64), seed in any::<u64>()) {
            let bytes = encode_operation(&op(payload, seed)).unwrap();
            for cut in 0..bytes.len() {
                prop_assert!(decode_operation(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn every_single_bit_flip_is_an_error(payload in prop::collection::vec(any::<u8>(), 0..64), seed in any::<u64>()) {
            let bytes = encode_operation(&op(payload, seed)).unwrap();
            for bit in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(decode_operation(&b).is_err(), "flip of bit {} accepted", bit);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_operation(&bytes);
        }
    }
}
