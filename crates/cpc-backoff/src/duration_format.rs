//! Human-readable durations for configuration files.
//!
//! Serialised as a string with the largest unit that represents the value
//! exactly (`"200ms"`, `"60s"`, `"1h"`). Deserialised from such a string
//! (units `ns`, `us`/`µs`, `ms`, `s`, `m`/`min`, `h`; a decimal point is
//! allowed: `"1.5s"`) or from a bare integer meaning milliseconds.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

use crate::jitter::to_ns;

const UNITS: [(&str, u128); 6] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Formats a duration with the largest exact unit.
pub(crate) fn format(d: Duration) -> String {
    let ns = u128::from(to_ns(d));
    if ns == 0 {
        return "0s".to_owned();
    }
    for (name, unit) in UNITS {
        if ns % unit == 0 {
            return format!("{}{}", ns / unit, name);
        }
    }
    format!("{ns}ns")
}

/// Parses `"<number><unit>"`; see the module docs.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    let unit_ns: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" => {
            return Err(format!(
                "duration {text:?} has no unit (ns, us, ms, s, m, h)"
            ))
        }
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    let (int, frac) = match number.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (number, ""),
    };
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_ok(int) || !digits_ok(frac) {
        return Err(format!("invalid duration {text:?}"));
    }
    let too_large = || format!("duration {text:?} is too large");
    let int_value: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_large())?
    };
    let mut ns = int_value.checked_mul(unit_ns).ok_or_else(too_large)?;
    // Fractional digits beyond nanosecond precision are truncated.
    let mut scale = unit_ns;
    for digit in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        ns += u128::from(digit - b'0') * scale;
    }
    let ns = u64::try_from(ns).map_err(|_| too_large())?;
    Ok(Duration::from_nanos(ns))
}

pub(crate) fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*d))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"200ms\", \"1.5s\", \"1h\", or an integer of milliseconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_millis)
            .map_err(|_| E::custom(format!("negative duration {v} ms")))
    }
}

/// The same format for `Option<Duration>` (absent or `null` is `None`).
pub(crate) mod option {
    use super::*;
    use serde::Deserialize;

    pub(crate) fn serialize<S: Serializer>(
        d: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serializer.serialize_some(&super::format(*d)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] Duration);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(d)| d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format(Duration::from_millis(200)), "200ms");
        assert_eq!(format(Duration::from_secs(60)), "1m");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(3600)), "1h");
        assert_eq!(format(Duration::from_nanos(1_500)), "1500ns");
        assert_eq!(format(Duration::ZERO), "0s");
    }

    #[test]
    fn parses_units_decimals_and_round_trips() {
        assert_eq!(parse("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse(" 2 min "), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse(".25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10µs"), Ok(Duration::from_micros(10)));
        for d in [
            1u64,
            999,
            1_000,
            1_500_000,
            60_000_000_000,
            7_200_000_000_000,
        ] {
            let d = Duration::from_nanos(d);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "ms",
            "5",
            "5 parsecs",
            "-1s",
            "1.2.3s",
            ".s",
            "99999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
