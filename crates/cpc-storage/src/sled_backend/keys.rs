//! Key layouts of the sled trees. Every multi-part key is fixed-width or
//! length-prefixed, so byte order is the intended order and no two logical
//! keys share bytes.

use cpc_core::OperationId;

/// Length of a `seq` key.
pub(super) const SEQ_LEN: usize = 8;

/// `seq` as a big-endian key: byte order is submission order.
pub(super) fn seq_key(seq: u64) -> [u8; SEQ_LEN] {
    seq.to_be_bytes()
}

/// Reads a big-endian `u64` from exactly eight bytes.
pub(super) fn read_u64(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

/// Reads the trailing eight bytes of a key as a big-endian `u64`.
pub(super) fn trailing_seq(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(SEQ_LEN)?;
    read_u64(&key[start..])
}

/// `id` → `seq` index key.
pub(super) fn id_key(id: OperationId) -> [u8; 16] {
    id.to_be_bytes()
}

/// The per-entity prefix: the entity's key bytes, length-prefixed so that
/// no entity's prefix is a prefix of another's (`EntityKey::to_key_bytes`
/// leaves the id part unprefixed).
pub(super) fn entity_prefix(entity: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entity.len() + SEQ_LEN);
    out.extend_from_slice(
        &u32::try_from(entity.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(entity);
    out
}

/// Entity index key: entity prefix then `seq`.
pub(super) fn entity_seq_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + SEQ_LEN);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&seq_key(seq));
    out
}

/// Claim index key: effective priority, highest first, then `seq`.
pub(super) fn due_key(eff_rank: u8, seq: u64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = u8::MAX - eff_rank;
    out[1..].copy_from_slice(&seq_key(seq));
    out
}

/// Time index key (aging clock, wake-ups, lease ends): instant then `seq`.
pub(super) fn time_key(at: u64, seq: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&at.to_be_bytes());
    out[8..].copy_from_slice(&seq_key(seq));
    out
}

/// Splits a time index key into (instant, seq).
pub(super) fn parse_time_key(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 16 {
        return None;
    }
    Some((read_u64(&key[..8])?, read_u64(&key[8..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_prefixes_are_unambiguous() {
        let a = entity_prefix(b"\0\0\0\x01ab");
        let b = entity_prefix(b"\0\0\0\x01a");
        assert!(
            !a.starts_with(&b),
            "one entity's prefix must not prefix another's"
        );
    }

    #[test]
    fn keys_sort_like_their_parts() {
        assert!(seq_key(1) < seq_key(256));
        assert!(
            due_key(3, u64::MAX) < due_key(2, 0),
            "higher priority first"
        );
        assert!(due_key(1, 5) < due_key(1, 6));
        assert!(time_key(5, 1) < time_key(6, 0));
        assert_eq!(parse_time_key(&time_key(7, 8)), Some((7, 8)));
        assert_eq!(trailing_seq(&entity_seq_key(b"xyz", 42)), Some(42));
    }
}
