//! Humane durations for scenario files: `"500ms"`, `"10m"`, `"1h30m"`.
//!
//! Scenario files are written by hand, so every duration in them is a string
//! of one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h` (and `us`
//! for the rare sub-millisecond latency). Bare integers are refused: `600`
//! could mean seconds or milliseconds, and a scenario that silently waits a
//! thousand times too long is worse than an error. Clock skews are signed
//! (`"-10m"`, `"+90s"`).
//!
//! The serde helpers in this module are used with `#[serde(with = ...)]`;
//! [`parse`] and [`format()`] are public so tools can reuse them.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing to parse.
    #[error("empty duration: write e.g. \"500ms\", \"10s\", \"5m\" or \"1h30m\"")]
    Empty,
    /// A part lacks its number (`"ms"`) or its unit (`"10"`).
    #[error("malformed duration {text:?}: expected <integer><unit> parts with units us, ms, s, m, h (e.g. \"1h30m\")")]
    Malformed {
        /// The refused text.
        text: String,
    },
    /// An unknown unit.
    #[error("unknown unit {unit:?} in duration {text:?}: use us, ms, s, m or h")]
    UnknownUnit {
        /// The refused text.
        text: String,
        /// The unit found.
        unit: String,
    },
    /// The value does not fit.
    #[error("duration {text:?} is too large")]
    Overflow {
        /// The refused text.
        text: String,
    },
    /// A sign where durations cannot be negative.
    #[error("duration {text:?} must not be negative")]
    Negative {
        /// The refused text.
        text: String,
    },
}

/// Parses an unsigned humane duration (`"1h30m"`, `"250ms"`, `"0s"`).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let (negative, magnitude) = parse_signed_parts(text)?;
    if negative {
        return Err(DurationError::Negative {
            text: text.to_owned(),
        });
    }
    Ok(magnitude)
}

/// Parses a signed humane duration (`"-10m"`, `"+90s"`, `"0s"`) into
/// signed milliseconds (sub-millisecond parts are truncated).
pub fn parse_signed_ms(text: &str) -> Result<i64, DurationError> {
    let (negative, magnitude) = parse_signed_parts(text)?;
    let ms = i64::try_from(magnitude.as_millis()).map_err(|_| DurationError::Overflow {
        text: text.to_owned(),
    })?;
    Ok(if negative { -ms } else { ms })
}

fn parse_signed_parts(text: &str) -> Result<(bool, Duration), DurationError> {
    let trimmed = text.trim();
    let (negative, body) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        Some(_) => (false, trimmed),
        None => return Err(DurationError::Empty),
    };
    if body.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed {
        text: text.to_owned(),
    };
    let overflow = || DurationError::Overflow {
        text: text.to_owned(),
    };
    let mut total_us: u64 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(malformed());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| overflow())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        if unit_len == 0 {
            return Err(malformed());
        }
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u64 = match unit {
            "us" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_owned(),
                    unit: other.to_owned(),
                })
            }
        };
        let part = value.checked_mul(scale).ok_or_else(overflow)?;
        total_us = total_us.checked_add(part).ok_or_else(overflow)?;
    }
    Ok((negative, Duration::from_micros(total_us)))
}

/// Formats a duration in the canonical humane form [`parse`] reads back:
/// hours, minutes, seconds, milliseconds, microseconds, largest first, zero
/// parts left out (`"1h30m"`, `"2s500ms"`, `"0s"`).
pub fn format(duration: Duration) -> String {
    let mut us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    if us == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (scale, unit) in [
        (3_600_000_000u64, "h"),
        (60_000_000, "m"),
        (1_000_000, "s"),
        (1_000, "ms"),
        (1, "us"),
    ] {
        let n = us / scale;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            us -= n * scale;
        }
    }
    out
}

/// Formats signed milliseconds (`"-10m"`, `"0s"`).
pub fn format_signed_ms(ms: i64) -> String {
    let magnitude = format(Duration::from_millis(ms.unsigned_abs()));
    if ms < 0 {
        format!("-{magnitude}")
    } else {
        magnitude
    }
}

struct HumaneVisitor {
    signed: bool,
}

impl Visitor<'_> for HumaneVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.signed {
            f.write_str("a signed duration string such as \"-10m\" or \"+90s\"")
        } else {
            f.write_str("a duration string such as \"500ms\", \"10s\", \"5m\" or \"1h30m\"")
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Err(E::custom(format!(
            "bare number {v} is ambiguous: write a duration string with a unit, e.g. \"{v}ms\" or \"{v}s\""
        )))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Err(E::custom(format!(
            "bare number {v} is ambiguous: write a duration string with a unit, e.g. \"{v}ms\" or \"{v}s\""
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Err(E::custom(format!(
            "bare number {v} is ambiguous: write a duration string with a unit, e.g. \"1500ms\""
        )))
    }
}

/// Serde helper for `Duration` fields (`#[serde(with = "crate::duration::humane")]`).
pub mod humane {
    use super::*;

    /// Serializes as the canonical humane string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Deserializes from a humane string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = d.deserialize_any(HumaneVisitor { signed: false })?;
        parse(&text).map_err(de::Error::custom)
    }
}

/// Serde helper for `Option<Duration>` fields; use with `#[serde(default)]`.
pub mod humane_opt {
    use super::*;
    use serde::Deserialize;

    /// Serializes `Some` as the canonical humane string, `None` as none.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format(*d)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from a humane string (JSON `null` reads as `None`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Humane>::deserialize(d)?.map(|h| h.0))
    }

    struct Humane(Duration);

    impl<'de> Deserialize<'de> for Humane {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::humane::deserialize(d).map(Humane)
        }
    }
}

/// Serde helper for signed millisecond fields (`i64`) written as signed
/// humane strings (`"-10m"`).
pub mod signed_ms {
    use super::*;

    /// Serializes as a signed humane string.
    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_signed_ms(*ms))
    }

    /// Deserializes from a signed humane string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = d.deserialize_any(HumaneVisitor { signed: true })?;
        parse_signed_ms(&text).map_err(de::Error::custom)
    }
}

/// Serde helper for `Vec<Duration>` fields written as lists of humane
/// strings (`["1m", "5m30s"]`).
pub mod humane_vec {
    use super::*;
    use serde::ser::SerializeSeq;
    use serde::Deserialize;

    /// Serializes as a list of canonical humane strings.
    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for d in v {
            seq.serialize_element(&format(*d))?;
        }
        seq.end()
    }

    /// Deserializes from a list of humane strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Ok(Vec::<Humane>::deserialize(d)?
            .into_iter()
            .map(|h| h.0)
            .collect())
    }

    struct Humane(Duration);

    impl<'de> Deserialize<'de> for Humane {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::humane::deserialize(d).map(Humane)
        }
    }
}

/// Serde helper for `Vec<i64>` millisecond fields written as lists of
/// signed humane strings (`["-10m", "+10m"]`).
pub mod signed_ms_vec {
    use super::*;
    use serde::ser::SerializeSeq;
    use serde::Deserialize;

    /// Serializes as a list of signed humane strings.
    pub fn serialize<S: Serializer>(v: &[i64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for ms in v {
            seq.serialize_element(&format_signed_ms(*ms))?;
        }
        seq.end()
    }

    /// Deserializes from a list of signed humane strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
        Ok(Vec::<Signed>::deserialize(d)?
            .into_iter()
            .map(|h| h.0)
            .collect())
    }

    struct Signed(i64);

    impl<'de> Deserialize<'de> for Signed {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::signed_ms::deserialize(d).map(Signed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_single_and_compound_parts() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("2s500ms").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse(" 0s ").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_ambiguous_or_malformed_text() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert!(matches!(parse("10"), Err(DurationError::Malformed { .. })));
        assert!(matches!(parse("ms"), Err(DurationError::Malformed { .. })));
        assert!(matches!(
            parse("3d"),
            Err(DurationError::UnknownUnit { ref unit, .. }) if unit == "d"
        ));
        assert!(matches!(parse("-1s"), Err(DurationError::Negative { .. })));
        assert!(matches!(
            parse("99999999999999999999h"),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn signed_skews_parse_both_ways() {
        assert_eq!(parse_signed_ms("-10m").unwrap(), -600_000);
        assert_eq!(parse_signed_ms("+90s").unwrap(), 90_000);
        assert_eq!(parse_signed_ms("1s").unwrap(), 1_000);
        assert_eq!(format_signed_ms(-600_000), "-10m");
        assert_eq!(format_signed_ms(0), "0s");
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_millis(2500)), "2s500ms");
    }

    /// The helpers that tools reuse write what they read.
    #[test]
    fn duration_helpers_write_what_they_read() {
        assert_eq!(parse("-"), Err(DurationError::Empty));
        assert_eq!(parse_signed_ms("+"), Err(DurationError::Empty));
        let json = |f: &dyn Fn(&mut serde_json::Serializer<&mut Vec<u8>>)| {
            let mut out = Vec::new();
            f(&mut serde_json::Serializer::new(&mut out));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(json(&|s| humane_opt::serialize(&None, s).unwrap()), "null");
        assert_eq!(
            json(&|s| humane_opt::serialize(&Some(Duration::from_millis(1500)), s).unwrap()),
            "\"1s500ms\""
        );
        assert_eq!(
            json(&|s| signed_ms::serialize(&-90_000, s).unwrap()),
            "\"-1m30s\""
        );
        let mut de = serde_json::Deserializer::from_str("\"-1m30s\"");
        assert_eq!(signed_ms::deserialize(&mut de).unwrap(), -90_000);
    }

    proptest! {
        #[test]
        fn format_round_trips(us in 0u64..(1u64 << 50)) {
            let d = Duration::from_micros(us);
            prop_assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
