//! Time on the ledger: milliseconds since the Unix epoch, always passed in, never read from a
//! clock inside the crate (the core is deterministic; the caller owns time).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Parses RFC 3339 (`2027-06-30T00:00:00Z`) or a bare date (`2027-06-30`, midnight UTC).
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
        use time::format_description::well_known::Rfc3339;
        let s = s.trim();
        let full = if s.len() == 10 {
            format!("{s}T00:00:00Z")
        } else {
            s.to_string()
        };
        let t = time::OffsetDateTime::parse(&full, &Rfc3339)
            .map_err(|e| format!("{s:?} is not an RFC 3339 date-time: {e}"))?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        u64::try_from(ms)
            .map(Timestamp)
            .map_err(|_| format!("{s:?} is before 1970"))
    }

    /// Formats as RFC 3339 in UTC with milliseconds.
    pub fn to_rfc3339(self) -> String {
        use time::format_description::well_known::Rfc3339;
        let nanos = i128::from(self.0) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| format!("{}ms", self.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let t = Timestamp::parse_rfc3339("2027-06-30").unwrap();
        assert_eq!(t, Timestamp(1_814_313_600_000));
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        assert!(Timestamp::parse_rfc3339("1969-12-31").is_err());
        assert!(Timestamp::parse_rfc3339("next tuesday").is_err());
    }
}
