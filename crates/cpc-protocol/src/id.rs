//! Operation ids on the wire: 26 characters of uppercase Crockford base32
//! (128 bits, big-endian), canonical form only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of the text form (the codec is `cpc-base32`, shared with the
/// device).
pub const OP_ID_LEN: usize = cpc_base32::TEXT_LEN;

/// An operation id as the wire carries it: the idempotency key of an
/// operation, unique per client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u128);

/// Why a text is not an operation id.
pub use cpc_base32::DecodeError as OpIdError;

impl FromStr for OpId {
    type Err = OpIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        cpc_base32::decode(s, cpc_base32::Accept::Canonical).map(OpId)
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(cpc_base32::encode(self.0).as_str())
    }
}

impl Serialize for OpId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OpId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_extremes_round_trip() {
        assert_eq!(OpId(0).to_string(), "00000000000000000000000000");
        assert_eq!(OpId(u128::MAX).to_string(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!("7ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse(), Ok(OpId(u128::MAX)));
    }

    #[test]
    fn only_the_canonical_form_parses() {
        assert_eq!(
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<OpId>(),
            Err(OpIdError::Overflow)
        );
        assert_eq!(
            "0000000000000000000000000a".parse::<OpId>(),
            Err(OpIdError::Character('a'))
        );
        assert_eq!(
            "0000000000000000000000000I".parse::<OpId>(),
            Err(OpIdError::Character('I'))
        );
        assert_eq!("000".parse::<OpId>(), Err(OpIdError::Length(3)));
        // 26 bytes, 13 characters: the first is named, not a byte of it.
        assert_eq!(
            "é".repeat(13).parse::<OpId>(),
            Err(OpIdError::Character('é'))
        );
    }

    proptest! {
        #[test]
        fn every_id_round_trips_and_keeps_its_order(a: u128, b: u128) {
            let (ta, tb) = (OpId(a).to_string(), OpId(b).to_string());
            prop_assert_eq!(ta.parse::<OpId>(), Ok(OpId(a)));
            prop_assert_eq!(a.cmp(&b), ta.cmp(&tb));
        }
    }
}
