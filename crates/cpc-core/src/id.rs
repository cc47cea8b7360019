//! Operation identifiers: 128-bit, sortable by creation, unique across devices.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::hlc::HlcTimestamp;

/// Length of the text form: 26 characters of Crockford base32 (the codec
/// is `cpc-base32`, shared with the wire).
pub const ID_TEXT_LEN: usize = cpc_base32::TEXT_LEN;

const WALL_BITS: u32 = 48;
const LOGICAL_BITS: u32 = 32;
const RANDOM_BITS: u32 = 128 - WALL_BITS - LOGICAL_BITS;

/// A 128-bit operation id: 48 bits of HLC wall time (ms), 32 bits of HLC
/// logical counter, 48 random bits.
///
/// Ids made from one [`HybridClock`](crate::HybridClock) are strictly
/// increasing, because HLC timestamps are; ids from different devices are
/// unique with overwhelming probability thanks to the random tail. The id is
/// also the idempotency key on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OperationId(u128);

impl OperationId {
    /// The smallest id (useful as a lower bound in range queries).
    pub const MIN: OperationId = OperationId(0);
    /// The largest id.
    pub const MAX: OperationId = OperationId(u128::MAX);

    /// Makes an id from a timestamp and a random source.
    pub fn new(ts: &HlcTimestamp, rng: &mut dyn RngCore) -> Self {
        let wall = u128::from(ts.wall_ms) & ((1u128 << WALL_BITS) - 1);
        let logical = u128::from(ts.logical);
        let random = u128::from(rng.next_u64()) & ((1u128 << RANDOM_BITS) - 1);
        OperationId((wall << (LOGICAL_BITS + RANDOM_BITS)) | (logical << RANDOM_BITS) | random)
    }

    /// Reinterprets a raw 128-bit value.
    pub const fn from_u128(raw: u128) -> Self {
        OperationId(raw)
    }

    /// The raw 128-bit value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// Big-endian bytes: their lexicographic order is the id order, which
    /// makes them usable as keys in ordered stores.
    pub const fn to_be_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Inverse of [`to_be_bytes`](Self::to_be_bytes).
    pub const fn from_be_bytes(bytes: [u8; 16]) -> Self {
        OperationId(u128::from_be_bytes(bytes))
    }

    /// The wall-clock milliseconds embedded at creation.
    pub const fn wall_ms(self) -> u64 {
        (self.0 >> (LOGICAL_BITS + RANDOM_BITS)) as u64
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(cpc_base32::encode(self.0).as_str())
    }
}

impl fmt::Debug for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OperationId({self})")
    }
}

impl FromStr for OperationId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| Error::InvalidId {
            text: s.chars().take(64).collect(),
            reason,
        };
        // Lenient: an id read back from a log or typed by a person may be
        // lowercase or use Crockford's look-alikes.
        let value = cpc_base32::decode(s, cpc_base32::Accept::Lenient).map_err(|e| {
            invalid(match e {
                cpc_base32::DecodeError::Length(_) => "expected 26 characters of Crockford base32",
                cpc_base32::DecodeError::Character(_) => "character outside Crockford base32",
                cpc_base32::DecodeError::Overflow => "value overflows 128 bits",
            })
        })?;
        Ok(OperationId(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::NodeId;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn text_form_is_26_chars_and_round_trips() {
        let id = OperationId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let s = id.to_string();
        assert_eq!(s.len(), ID_TEXT_LEN);
        assert_eq!(s.parse::<OperationId>().unwrap(), id);
        assert_eq!(OperationId::MAX.to_string(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(OperationId::MIN.to_string(), "00000000000000000000000000");
    }

    #[test]
    fn rejects_bad_text() {
        assert!("".parse::<OperationId>().is_err());
        assert!("8ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<OperationId>().is_err());
        assert!("0000000000000000000000000U".parse::<OperationId>().is_err());
        assert!("000000000000000000000000000"
            .parse::<OperationId>()
            .is_err());
        assert!("00000000000000000000000é".parse::<OperationId>().is_err());
    }

    #[test]
    fn lowercase_and_crockford_aliases_parse() {
        let id: OperationId = "0000000000000000000000000o".parse().unwrap();
        assert_eq!(id.as_u128(), 0);
        let id: OperationId = "0000000000000000000000000l".parse().unwrap();
        assert_eq!(id.as_u128(), 1);
    }

    proptest! {
        #[test]
        fn round_trips_any_value(raw in any::<u128>()) {
            let id = OperationId::from_u128(raw);
            prop_assert_eq!(id.to_string().parse::<OperationId>().unwrap(), id);
            prop_assert_eq!(OperationId::from_be_bytes(id.to_be_bytes()), id);
        }

        #[test]
        fn text_and_byte_order_match_id_order(a in any::<u128>(), b in any::<u128>()) {
            let (a, b) = (OperationId::from_u128(a), OperationId::from_u128(b));
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
            prop_assert_eq!(a.cmp(&b), a.to_be_bytes().cmp(&b.to_be_bytes()));
        }

        #[test]
        fn ids_follow_timestamp_order(
            w1 in 0u64..(1 << 47), l1 in any::<u32>(),
            w2 in 0u64..(1 << 47), l2 in any::<u32>(), seed in any::<u64>()
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let t1 = HlcTimestamp::new(w1, l1, NodeId(1));
            let t2 = HlcTimestamp::new(w2, l2, NodeId(1));
            let (i1, i2) = (OperationId::new(&t1, &mut rng), OperationId::new(&t2, &mut rng));
            if (w1, l1) < (w2, l2) {
                prop_assert!(i1 < i2);
            }
            prop_assert_eq!(i1.wall_ms(), w1);
        }
    }
}
