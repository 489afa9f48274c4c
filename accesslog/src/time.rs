//! UTC instants as FHIR `instant` text (`2026-01-05T08:13:22.123Z`) and calendar dates, through
//! the `time` crate (the one date-time crate medfl uses; the ledger's timestamps use it too).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;
/// Milliseconds in a minute.
pub const MINUTE_MS: u64 = 60_000;
/// Milliseconds in an hour.
pub const HOUR_MS: u64 = 3_600_000;

/// Formats milliseconds since the epoch as a FHIR `instant`, `YYYY-MM-DDThh:mm:ss.sssZ` (years
/// past 9999 cannot be written as one and are clamped to the last representable instant).
pub fn format_instant(ms: u64) -> String {
    const LAST: i128 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let nanos = i128::from(ms).min(LAST) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        // Unreachable for the clamped range; kept total rather than panicking.
        Err(_) => "9999-12-31T23:59:59.999Z".to_string(),
    }
}

/// Parses a FHIR R4 `instant` (FHIR R4 §2.24.0.1: an RFC 3339 date-time with seconds and a
/// zone, `Z` or `±hh:mm`, 0 to 9 fractional digits, kept to the millisecond); `None` if
/// malformed or before 1970.
pub fn parse_instant(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// Parses a calendar date `YYYY-MM-DD` as its midnight UTC, in milliseconds since the epoch.
pub fn parse_date(s: &str) -> Option<u64> {
    if s.len() != 10 {
        return None;
    }
    parse_instant(&format!("{s}T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip() {
        for ms in [
            0,
            1,
            999,
            1_767_571_200_000,
            1_767_600_123_456,
            4_102_444_799_999,
        ] {
            assert_eq!(parse_instant(&format_instant(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            format_instant(1_767_571_200_000),
            "2026-01-05T00:00:00.000Z"
        );
        assert_eq!(
            parse_instant("2026-01-05T01:00:00+01:00"),
            Some(1_767_571_200_000)
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-05T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-01-05T00:00Z",
            "x",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
        assert_eq!(
            parse_instant("2026-01-05T00:00:00.1234567Z"),
            Some(1_767_571_200_123)
        );
        assert_eq!(parse_date("2026-01-05"), Some(1_767_571_200_000));
        for bad in ["2026-02-30", "2026-1-05", "2026-01-05T00:00:00Z", ""] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(format_instant(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
