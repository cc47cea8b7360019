//! The server's wait hint (429, 503): `Cpc-Retry-After-Ms`, else
//! `Retry-After` as seconds or an HTTP-date, clamped.

use std::time::{Duration, SystemTime};

/// The header carrying the exact wait in milliseconds.
pub const RETRY_AFTER_MS_HEADER: &str = "cpc-retry-after-ms";
/// The longest wait a hint may ask for; longer ones are clamped to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The hint from the two headers' values: the millisecond header when it
/// is a valid integer; otherwise `Retry-After` as delta-seconds or as an
/// HTTP-date relative to `now` (a date in the past is 0). Clamped to
/// [`MAX_RETRY_AFTER`]; `None` when neither header is usable.
pub fn parse_retry_after(
    retry_after: Option<&str>,
    retry_after_ms: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    let hint = retry_after_ms
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .or_else(|| {
            let v = retry_after?.trim();
            match v.parse::<u64>() {
                Ok(secs) => Some(Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs()))),
                Err(_) => httpdate::parse_http_date(v)
                    .ok()
                    .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO)),
            }
        })?;
    Some(hint.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_millisecond_header_wins_then_seconds_then_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_retry_after(Some("5"), Some("1500"), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after(Some("5"), Some("soon"), now),
            Some(Duration::from_secs(5))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(Some(&date), None, now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(Some(&past), None, now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(Some("tomorrow"), None, now), None);
        assert_eq!(parse_retry_after(None, None, now), None);
    }

    #[test]
    fn a_huge_hint_is_clamped() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(
            parse_retry_after(Some("99999999999"), None, now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after(None, Some("99999999999999"), now),
            Some(MAX_RETRY_AFTER)
        );
    }
}
