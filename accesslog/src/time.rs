//! UTC instants as FHIR `instant` text (`2026-01-05T08:13:22.123Z`), without a date-time crate:
//! the only conversions medfl needs are between milliseconds since the epoch and this one form.

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;
/// Milliseconds in a minute.
pub const MINUTE_MS: u64 = 60_000;
/// Milliseconds in an hour.
pub const HOUR_MS: u64 = 3_600_000;

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDThh:mm:ss.sssZ`.
pub fn format_instant(ms: u64) -> String {
    let days = (ms / DAY_MS) as i64;
    let rem = ms % DAY_MS;
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / HOUR_MS,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a FHIR `instant` in UTC (`Z`) or with a `+hh:mm`/`-hh:mm` offset, with 0 to 9
/// fractional digits (kept to the millisecond); `None` if malformed or before 1970.
pub fn parse_instant(s: &str) -> Option<u64> {
    let (date, rest) = s.split_once('T')?;
    let mut dp = date.split('-');
    let (y, mo, d) = (dp.next()?, dp.next()?, dp.next()?);
    if dp.next().is_some() || y.len() != 4 || mo.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, mo, d) = (digits(y)?, digits(mo)?, digits(d)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(i64::from(y), mo) {
        return None;
    }
    // Split the zone off the time of day.
    let (tod, offset_min): (&str, i64) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else {
        let pos = rest.rfind(['+', '-'])?;
        let (t, z) = rest.split_at(pos);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = z[1..].split_once(':')?;
        if zh.len() != 2 || zm.len() != 2 {
            return None;
        }
        let (zh, zm) = (digits(zh)?, digits(zm)?);
        if zh > 14 || zm > 59 {
            return None;
        }
        (t, sign * i64::from(zh * 60 + zm))
    };
    let (hms, frac) = match tod.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (tod, None),
    };
    let mut tp = hms.split(':');
    let (h, mi, sec) = (tp.next()?, tp.next()?, tp.next()?);
    if tp.next().is_some() || h.len() != 2 || mi.len() != 2 || sec.len() != 2 {
        return None;
    }
    let (h, mi, sec) = (digits(h)?, digits(mi)?, digits(sec)?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let milli = match frac {
        None => 0,
        Some(f) if (1..=9).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            let f3: String = f.chars().chain("000".chars()).take(3).collect();
            digits(&f3)?
        }
        Some(_) => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let ms = days * DAY_MS as i64
        + i64::from(h) * HOUR_MS as i64
        + i64::from(mi) * 60_000
        + i64::from(sec) * 1000
        + i64::from(milli)
        - offset_min * 60_000;
    u64::try_from(ms).ok()
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
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
            "x",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }
}
