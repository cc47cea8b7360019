//! The encodings of shared values: payloads as standard padded base64,
//! node ids and fingerprints as 16 lowercase hex digits, and the integer
//! range every JSON parser reads exactly.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest integer on the wire: 2^53 − 1, the largest every JSON
/// parser (JavaScript's included) reads exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Bytes carried as standard base64 (RFC 4648 §4) with padding. Decoding is
/// strict: no whitespace, no URL-safe alphabet, canonical padding and
/// trailing bits.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Payload(pub Vec<u8>);

impl fmt::Debug for Payload {
    // Payloads are user data: never printed, only their length.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Payload)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

/// A 64-bit value as 16 lowercase hex digits (node ids, fingerprints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hex64(pub u64);

impl fmt::Display for Hex64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Hex64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hex64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let lower_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if text.len() != 16 || !text.bytes().all(lower_hex) {
            return Err(serde::de::Error::custom("expected 16 lowercase hex digits"));
        }
        u64::from_str_radix(&text, 16)
            .map(Hex64)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(json: &str) -> Result<Payload, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn base64_is_standard_padded_and_strict() {
        assert_eq!(payload("\"aGk=\"").ok(), Some(Payload(b"hi".to_vec())));
        assert_eq!(payload("\"\"").ok(), Some(Payload(Vec::new())));
        // missing padding, URL-safe alphabet, whitespace, non-zero trailing bits
        for bad in ["\"aGk\"", "\"-_8=\"", "\"aG k=\"", "\"aGl=\""] {
            assert!(payload(bad).is_err(), "{bad} must be refused");
        }
        assert_eq!(
            serde_json::to_string(&Payload(b"hi".to_vec()))
                .ok()
                .as_deref(),
            Some("\"aGk=\"")
        );
    }

    #[test]
    fn hex64_is_sixteen_lowercase_digits() {
        let ok: Result<Hex64, _> = serde_json::from_str("\"7f3a000000000001\"");
        assert_eq!(ok.ok(), Some(Hex64(0x7f3a_0000_0000_0001)));
        for bad in [
            "\"7F3A000000000001\"",
            "\"7f3a\"",
            "\"7f3a00000000000g\"",
            "1",
        ] {
            assert!(serde_json::from_str::<Hex64>(bad).is_err(), "{bad}");
        }
        assert_eq!(Hex64(1).to_string(), "0000000000000001");
    }

    #[test]
    fn a_payload_debug_shows_its_length_not_its_bytes() {
        assert_eq!(
            format!("{:?}", Payload(b"secret".to_vec())),
            "Payload(6 bytes)"
        );
    }
}
