//! Operation ids on the wire: 26 characters of uppercase Crockford base32
//! (128 bits, big-endian), canonical form only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Crockford's alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of the text form.
pub const OP_ID_LEN: usize = 26;

/// An operation id as the wire carries it: the idempotency key of an
/// operation, unique per client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u128);

/// Why a text is not an operation id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpIdError {
    /// Not 26 characters.
    #[error("an operation id is 26 characters, got {0}")]
    Length(usize),
    /// A character outside the uppercase Crockford alphabet.
    #[error("character {0:?} is not in the uppercase Crockford base32 alphabet")]
    Character(char),
    /// The first character encodes more than 128 bits.
    #[error("the first character must be 0-7 (128 bits)")]
    Overflow,
}

fn value_of(c: u8) -> Option<u8> {
    ALPHABET
        .iter()
        .position(|&a| a == c)
        .and_then(|p| u8::try_from(p).ok())
}

impl FromStr for OpId {
    type Err = OpIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != OP_ID_LEN {
            return Err(OpIdError::Length(s.chars().count()));
        }
        let mut n: u128 = 0;
        for (i, c) in s.chars().enumerate() {
            let v = u8::try_from(c)
                .ok()
                .and_then(value_of)
                .ok_or(OpIdError::Character(c))?;
            // 26 × 5 = 130 bits: the first character carries 3.
            if i == 0 && v > 7 {
                return Err(OpIdError::Overflow);
            }
            n = (n << 5) | u128::from(v);
        }
        Ok(OpId(n))
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; OP_ID_LEN];
        let mut n = self.0;
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(n & 31) as usize];
            n >>= 5;
        }
        // The alphabet is ASCII, so this cannot fail; fall back rather than panic.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
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
