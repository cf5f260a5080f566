//! Event-time parsing: epoch seconds/milliseconds/microseconds, RFC 3339 with any offset, or a
//! strftime pattern in a fixed time zone, all converted to UTC milliseconds.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::Deserialize;

use crate::record::EventTime;

/// How a time column is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    /// Integer (or decimal) seconds since the epoch.
    EpochS,
    /// Integer milliseconds since the epoch.
    EpochMs,
    /// Integer microseconds since the epoch.
    EpochUs,
    /// RFC 3339 / ISO 8601 with an offset (`2014-12-31T13:00:00Z`).
    Rfc3339,
    /// A strftime pattern (`%Y-%m-%d %H:%M:%S`); date-only patterns mean midnight.
    Pattern(String),
}

impl TimeFormat {
    /// Reads `epoch_s`, `epoch_ms`, `epoch_us`, `rfc3339`, or a pattern containing `%`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "epoch_s" | "s" => TimeFormat::EpochS,
            "epoch_ms" | "ms" => TimeFormat::EpochMs,
            "epoch_us" | "us" => TimeFormat::EpochUs,
            "rfc3339" | "iso8601" => TimeFormat::Rfc3339,
            p if p.contains('%') => TimeFormat::Pattern(p.to_string()),
            other => {
                return Err(format!(
                    "unknown time format {other:?}: use epoch_s, epoch_ms, epoch_us, rfc3339 or a strftime pattern like %Y-%m-%d %H:%M:%S"
                ))
            }
        })
    }
}

impl<'de> Deserialize<'de> for TimeFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TimeFormat::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A fixed offset from UTC in which local timestamps are written (`UTC`, `+10:00`, `-08:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Zone {
    /// Offset east of UTC, in milliseconds.
    pub offset_ms: i64,
}

impl Zone {
    /// Reads `UTC`, `Z`, `+HH:MM`, `-HH:MM`, `+HHMM`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(Zone { offset_ms: 0 });
        }
        let bad = || {
            format!("time zone {s:?}: use UTC or a fixed offset like +10:00 / -08:00 (named zones with daylight saving are not supported: use a UTC column)")
        };
        let (sign, rest) = match t.as_bytes().first() {
            Some(b'+') => (1, &t[1..]),
            Some(b'-') => (-1, &t[1..]),
            _ => return Err(bad()),
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let h: i64 = digits[..2].parse().map_err(|_| bad())?;
        let m: i64 = digits[2..].parse().map_err(|_| bad())?;
        if h > 14 || m > 59 {
            return Err(bad());
        }
        Ok(Zone {
            offset_ms: sign * (h * 3600 + m * 60) * 1000,
        })
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Zone::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Parses one time field to UTC milliseconds, or says why not.
pub fn parse_time(field: &str, fmt: &TimeFormat, zone: Zone) -> Result<EventTime, String> {
    let f = super::num::trim(field);
    if f.is_empty() {
        return Err("empty time".into());
    }
    let bad = |what: &str| format!("unparseable time {f:?} ({what})");
    match fmt {
        TimeFormat::EpochMs => match super::num::int(f) {
            Some(ms) => Ok(ms),
            None => f
                .parse::<i64>()
                .map_err(|_| bad("expected epoch milliseconds")),
        },
        TimeFormat::EpochUs => f
            .parse::<i64>()
            .map(|us| us.div_euclid(1000))
            .map_err(|_| bad("expected epoch microseconds")),
        TimeFormat::EpochS => {
            if let Ok(s) = f.parse::<i64>() {
                s.checked_mul(1000).ok_or_else(|| bad("out of range"))
            } else {
                let s: f64 = f.parse().map_err(|_| bad("expected epoch seconds"))?;
                if !s.is_finite() || s.abs() > 1e14 {
                    return Err(bad("out of range"));
                }
                Ok((s * 1000.0).round() as i64)
            }
        }
        TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(f)
            .map(|d| d.timestamp_millis())
            .map_err(|e| bad(&e.to_string())),
        TimeFormat::Pattern(p) => {
            let local = match NaiveDateTime::parse_from_str(f, p) {
                Ok(dt) => dt,
                Err(e) => match NaiveDate::parse_from_str(f, p) {
                    Ok(d) => d.and_hms_opt(0, 0, 0).expect("midnight exists"),
                    Err(_) => return Err(bad(&format!("{e}; expected {p}"))),
                },
            };
            Ok(local.and_utc().timestamp_millis() - zone.offset_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_to_utc_ms() {
        let utc = Zone::default();
        let pat = TimeFormat::parse("%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(parse_time("1970-01-01 00:00:01", &pat, utc), Ok(1000));
        let mel = Zone::parse("+10:00").unwrap();
        assert_eq!(parse_time("1970-01-01 10:00:00", &pat, mel), Ok(0));
        assert_eq!(
            parse_time("2014-12-31T13:00:00Z", &TimeFormat::Rfc3339, utc),
            Ok(1_420_030_800_000)
        );
        assert_eq!(
            parse_time("2014-12-31T23:00:00+10:00", &TimeFormat::Rfc3339, utc),
            Ok(1_420_030_800_000)
        );
        assert_eq!(
            parse_time("1700000000", &TimeFormat::EpochS, utc),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("1700000000123", &TimeFormat::EpochMs, utc),
            Ok(1_700_000_000_123)
        );
        let day = TimeFormat::parse("%Y-%m-%d").unwrap();
        assert_eq!(parse_time("1970-01-02", &day, utc), Ok(86_400_000));
    }

    #[test]
    fn epoch_ms_fast_path_agrees_with_str_parse() {
        let utc = Zone::default();
        for f in [
            "0",
            "-0",
            "7",
            "-7",
            "1700000000123",
            "-1700000000123",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "+5",
            "--5",
            "-",
            "1e3",
            "12a",
            "0012",
            "١٢",
            " 42",
            "42 ",
            "",
        ] {
            let want = f.trim().parse::<i64>().ok();
            let got = parse_time(f, &TimeFormat::EpochMs, utc).ok();
            assert_eq!(got, want, "{f:?}");
        }
    }

    #[test]
    fn bad_times_say_why() {
        let pat = TimeFormat::parse("%Y-%m-%d %H:%M:%S").unwrap();
        assert!(parse_time("yesterday", &pat, Zone::default())
            .unwrap_err()
            .contains("unparseable"));
        assert!(parse_time("", &pat, Zone::default())
            .unwrap_err()
            .contains("empty"));
        assert!(Zone::parse("Australia/Melbourne")
            .unwrap_err()
            .contains("fixed offset"));
        assert!(TimeFormat::parse("dd/mm")
            .unwrap_err()
            .contains("unknown time format"));
    }
}
