//! The text form of a 128-bit operation id: 26 characters of Crockford's
//! base32, big-endian, so the text sorts as the number does. Written once
//! here for the device (`cpc-core`'s `OperationId`, which reads what people
//! type: lowercase and Crockford's look-alikes) and the wire
//! (`cpc-protocol`'s `OpId`, which takes the canonical form only). No
//! dependency beyond `thiserror`, so both sides of the wire can use it.
//!
//! ```
//! use cpc_base32::{decode, encode, Accept, DecodeError};
//!
//! let text = encode(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
//! assert_eq!(text.as_str(), "014D2PF2DBSQQG28T5CY4TQKFF");
//! assert_eq!(decode(text.as_str(), Accept::Canonical), Ok(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
//!
//! // What a person typed: lowercase, `o` for zero.
//! let typed = "o14d2pf2dbsqqg28t5cy4tqkff";
//! assert_eq!(decode(typed, Accept::Lenient), Ok(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
//! assert_eq!(decode(typed, Accept::Canonical), Err(DecodeError::Character('o')));
//! ```

use std::fmt;

/// Crockford's alphabet: no I, L, O or U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Length of the text form: 26 characters of 5 bits hold 128 bits (130
/// bits, so the first character is at most `7`).
pub const TEXT_LEN: usize = 26;

/// Which texts [`decode`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Uppercase alphabet only: one text per value, as the wire requires.
    Canonical,
    /// Also lowercase, and `I`/`L` read as `1`, `O` as `0` (Crockford's
    /// rule for text people type).
    Lenient,
}

/// Why a text is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not 26 characters (the count is of characters, not bytes).
    #[error("an operation id is 26 characters, got {0}")]
    Length(usize),
    /// A character outside the alphabet this decode accepts.
    #[error("character {0:?} is not in the Crockford base32 alphabet")]
    Character(char),
    /// The first character encodes more than 128 bits.
    #[error("the first character must be 0-7 (128 bits)")]
    Overflow,
}

/// The 26 ASCII characters of an id, held without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text([u8; TEXT_LEN]);

impl Text {
    /// The text as a string slice.
    pub fn as_str(&self) -> &str {
        // Every byte comes from ALPHABET, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The text form of `value`.
pub fn encode(value: u128) -> Text {
    let mut out = [0u8; TEXT_LEN];
    let mut n = value;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n & 31) as usize];
        n >>= 5;
    }
    Text(out)
}

fn digit(c: char, accept: Accept) -> Option<u8> {
    let byte = u8::try_from(c).ok()?;
    let byte = match accept {
        Accept::Canonical => byte,
        Accept::Lenient => match byte.to_ascii_uppercase() {
            b'I' | b'L' => b'1',
            b'O' => b'0',
            other => other,
        },
    };
    ALPHABET
        .iter()
        .position(|&a| a == byte)
        .and_then(|p| u8::try_from(p).ok())
}

/// The value a text encodes, or why it encodes none.
pub fn decode(text: &str, accept: Accept) -> Result<u128, DecodeError> {
    if text.len() != TEXT_LEN {
        return Err(DecodeError::Length(text.chars().count()));
    }
    let mut n: u128 = 0;
    for (i, c) in text.chars().enumerate() {
        let v = digit(c, accept).ok_or(DecodeError::Character(c))?;
        if i == 0 && v > 7 {
            return Err(DecodeError::Overflow);
        }
        n = (n << 5) | u128::from(v);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_extremes_and_every_refusal() {
        assert_eq!(encode(0).as_str(), "00000000000000000000000000");
        assert_eq!(encode(u128::MAX).as_str(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(format!("{:?}", encode(0)), "\"00000000000000000000000000\"");
        assert_eq!(encode(1).to_string(), "00000000000000000000000001");
        for accept in [Accept::Canonical, Accept::Lenient] {
            assert_eq!(
                decode("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", accept),
                Err(DecodeError::Overflow)
            );
            assert_eq!(decode("0", accept), Err(DecodeError::Length(1)));
            assert_eq!(
                decode("0000000000000000000000000U", accept),
                Err(DecodeError::Character('U'))
            );
            // 25 characters and a two-byte one: 27 bytes, 26 characters.
            assert_eq!(
                decode("0000000000000000000000000é", accept),
                Err(DecodeError::Length(26))
            );
        }
        assert_eq!(decode("0000000000000000000000000l", Accept::Lenient), Ok(1));
        assert_eq!(
            decode("0000000000000000000000000l", Accept::Canonical),
            Err(DecodeError::Character('l'))
        );
        assert_eq!(
            decode("0000000000000000000000000a", Accept::Canonical),
            Err(DecodeError::Character('a'))
        );
    }

    proptest! {
        #[test]
        fn every_value_round_trips_and_the_text_keeps_its_order(a: u128, b: u128) {
            let (ta, tb) = (encode(a), encode(b));
            prop_assert_eq!(decode(ta.as_str(), Accept::Canonical), Ok(a));
            prop_assert_eq!(decode(&ta.as_str().to_lowercase(), Accept::Lenient), Ok(a));
            prop_assert_eq!(a.cmp(&b), ta.as_str().cmp(tb.as_str()));
        }
    }
}
