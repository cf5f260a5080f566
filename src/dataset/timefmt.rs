//! Event-time parsing: epoch seconds/milliseconds/microseconds, RFC 3339 with any offset, or a
//! strftime pattern in a fixed offset or a named zone with daylight saving, all converted to
//! UTC milliseconds.

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

/// The zone in which local timestamps are written: a fixed offset (`UTC`, `+10:00`,
/// `-08:00`) or a zone of the tz database (`America/Chicago`, `Australia/Melbourne`), whose
/// daylight saving rules turn each local time into the right UTC instant. The database is
/// compiled in (jiff's bundled copy), so every machine gives the same answers.
///
/// Daylight saving makes two kinds of local time special:
/// - **a gap** (clocks moved forward: `02:30` on the spring day in `America/Chicago`) names
///   no instant at all: the row is refused with that reason (a collector quarantines it);
/// - **a fold** (clocks moved back: `01:30` on the autumn day happens twice) names two. The
///   first pass through the hour is taken, unless the same series already has a reading at
///   or after that instant, in which case the second is: so a series written in order gets
///   both passes right (see [`Zone::to_utc_ms`]). A duplicated row in the fold lands in the
///   second pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Zone {
    /// A fixed offset east of UTC, in milliseconds (UTC is 0).
    Fixed(i64),
    /// A zone of the tz database.
    Named(NamedZone),
}

impl Default for Zone {
    fn default() -> Self {
        Zone::Fixed(0)
    }
}

/// A zone of the tz database, by name.
#[derive(Debug, Clone)]
pub struct NamedZone {
    name: String,
    tz: jiff::tz::TimeZone,
}

impl PartialEq for NamedZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl NamedZone {
    /// The offsets the zone gives a local time (ms since the local epoch): one, a gap or a
    /// fold; None outside the years the tz database covers.
    fn offsets(&self, local: EventTime) -> Option<jiff::tz::AmbiguousOffset> {
        let dt = jiff::Timestamp::from_millisecond(local)
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .datetime();
        Some(self.tz.to_ambiguous_timestamp(dt).offset())
    }
}

/// The UTC instant of a local time (ms since the local epoch) at `offset`.
fn at_offset(local: EventTime, offset: jiff::tz::Offset) -> EventTime {
    local - i64::from(offset.seconds()) * 1000
}

/// `-05:00` for an offset in seconds.
fn offset_text(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let m = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

impl Zone {
    /// Reads `UTC`, `Z`, `+HH:MM`, `-HH:MM`, `+HHMM`, or a tz database name
    /// (`America/Chicago`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(Zone::Fixed(0));
        }
        let bad = || {
            format!("time zone {s:?}: use UTC, a fixed offset like +10:00 / -08:00, or a tz database name like America/Chicago")
        };
        let (sign, rest) = match t.as_bytes().first() {
            Some(b'+') => (1, &t[1..]),
            Some(b'-') => (-1, &t[1..]),
            _ => {
                return match jiff::tz::db().get(t) {
                    Ok(tz) => Ok(Zone::Named(NamedZone {
                        name: t.to_string(),
                        tz,
                    })),
                    Err(_) => Err(format!("{}: {t:?} is not in the tz database", bad())),
                };
            }
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
        Ok(Zone::Fixed(sign * (h * 3600 + m * 60) * 1000))
    }

    /// Whether the zone has daylight saving or other changes of offset (a tz database zone),
    /// so that resolving a fold needs the series' previous reading.
    pub fn is_named(&self) -> bool {
        matches!(self, Zone::Named(_))
    }

    /// The UTC instant (ms) of a local time in this zone. In a fold, the first pass is taken
    /// unless `prev` (the same series' previous reading) is at or after it; in a gap there
    /// is none, and the error says so.
    pub fn to_utc_ms(
        &self,
        local: NaiveDateTime,
        prev: Option<EventTime>,
    ) -> Result<EventTime, String> {
        let naive = local.and_utc().timestamp_millis();
        let z = match self {
            Zone::Fixed(offset_ms) => return Ok(naive - offset_ms),
            Zone::Named(z) => z,
        };
        let Some(offsets) = z.offsets(naive) else {
            return Err(format!(
                "local time {local} is outside the years the tz database covers"
            ));
        };
        let at = |offset| at_offset(naive, offset);
        use jiff::tz::AmbiguousOffset;
        match offsets {
            AmbiguousOffset::Unambiguous { offset } => Ok(at(offset)),
            AmbiguousOffset::Gap { before, after } => Err(format!(
                "local time {local} does not exist in {}: the clocks moved forward from {} to {} (daylight saving)",
                z.name,
                offset_text(before.seconds()),
                offset_text(after.seconds())
            )),
            AmbiguousOffset::Fold { before, after } => {
                let (a, b) = (at(before), at(after));
                let (first, second) = (a.min(b), a.max(b));
                Ok(if prev.is_some_and(|p| p >= first) {
                    second
                } else {
                    first
                })
            }
        }
    }
}

impl Zone {
    /// The local wall-clock time of a UTC instant, as milliseconds since the local epoch.
    pub fn local_ms(&self, ts: EventTime) -> EventTime {
        match self {
            Zone::Fixed(offset_ms) => ts + offset_ms,
            Zone::Named(z) => {
                let offset = jiff::Timestamp::from_millisecond(ts)
                    .map(|t| z.tz.to_offset(t).seconds())
                    .unwrap_or(0);
                ts + i64::from(offset) * 1000
            }
        }
    }

    /// The earliest UTC instant whose local time is `local` (ms since the local epoch), or
    /// the instant the clocks jumped past it when `local` falls in a gap: so local midnight
    /// is where a local day starts, whatever daylight saving does that night.
    pub fn earliest_utc(&self, local: EventTime) -> EventTime {
        let z = match self {
            Zone::Fixed(offset_ms) => return local - offset_ms,
            Zone::Named(z) => z,
        };
        let Some(offsets) = z.offsets(local) else {
            return local; // outside jiff's years: no zone rules there
        };
        let at = |offset| at_offset(local, offset);
        use jiff::tz::AmbiguousOffset;
        match offsets {
            AmbiguousOffset::Unambiguous { offset } => at(offset),
            AmbiguousOffset::Gap { before, .. } => at(before),
            AmbiguousOffset::Fold { before, after } => at(before).min(at(after)),
        }
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Zone::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Parses one time field to UTC milliseconds, or says why not (a fold in a named zone takes
/// its first pass: [`parse_time_after`] resolves it by the series' previous reading).
pub fn parse_time(field: &str, fmt: &TimeFormat, zone: &Zone) -> Result<EventTime, String> {
    parse_time_after(field, fmt, zone, None)
}

/// [`parse_time`] for a series whose previous reading was at `prev` (see [`Zone`]).
pub fn parse_time_after(
    field: &str,
    fmt: &TimeFormat,
    zone: &Zone,
    prev: Option<EventTime>,
) -> Result<EventTime, String> {
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
            zone.to_utc_ms(local, prev)
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
        assert_eq!(parse_time("1970-01-01 00:00:01", &pat, &utc), Ok(1000));
        let mel = Zone::parse("+10:00").unwrap();
        assert_eq!(parse_time("1970-01-01 10:00:00", &pat, &mel), Ok(0));
        assert_eq!(
            parse_time("2014-12-31T13:00:00Z", &TimeFormat::Rfc3339, &utc),
            Ok(1_420_030_800_000)
        );
        assert_eq!(
            parse_time("2014-12-31T23:00:00+10:00", &TimeFormat::Rfc3339, &utc),
            Ok(1_420_030_800_000)
        );
        assert_eq!(
            parse_time("1700000000", &TimeFormat::EpochS, &utc),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("1700000000123", &TimeFormat::EpochMs, &utc),
            Ok(1_700_000_000_123)
        );
        let day = TimeFormat::parse("%Y-%m-%d").unwrap();
        assert_eq!(parse_time("1970-01-02", &day, &utc), Ok(86_400_000));
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
            let got = parse_time(f, &TimeFormat::EpochMs, &utc).ok();
            assert_eq!(got, want, "{f:?}");
        }
    }

    #[test]
    fn bad_times_say_why() {
        let pat = TimeFormat::parse("%Y-%m-%d %H:%M:%S").unwrap();
        assert!(parse_time("yesterday", &pat, &Zone::default())
            .unwrap_err()
            .contains("unparseable"));
        assert!(parse_time("", &pat, &Zone::default())
            .unwrap_err()
            .contains("empty"));
        assert!(Zone::parse("Australia/Melborne")
            .unwrap_err()
            .contains("not in the tz database"));
        assert!(Zone::parse("+25:00").unwrap_err().contains("fixed offset"));
        assert!(TimeFormat::parse("dd/mm")
            .unwrap_err()
            .contains("unknown time format"));
    }

    #[test]
    fn named_zones_follow_daylight_saving() {
        let chicago = Zone::parse("America/Chicago").unwrap();
        assert!(chicago.is_named() && !Zone::parse("-06:00").unwrap().is_named());
        let pat = TimeFormat::parse("%Y-%m-%d %H:%M:%S").unwrap();
        let utc = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|d| d.timestamp_millis())
                .unwrap()
        };
        // Standard time is UTC-6, daylight time UTC-5.
        let at = |local: &str| parse_time(local, &pat, &chicago);
        assert_eq!(at("2017-01-15 12:00:00"), Ok(utc("2017-01-15T18:00:00Z")));
        assert_eq!(at("2017-07-15 12:00:00"), Ok(utc("2017-07-15T17:00:00Z")));
        // Spring forward (2017-03-12 02:00 -> 03:00): 01:59 and 03:00 are one minute apart,
        // and 02:30 does not exist.
        assert_eq!(at("2017-03-12 01:59:00"), Ok(utc("2017-03-12T07:59:00Z")));
        assert_eq!(at("2017-03-12 03:00:00"), Ok(utc("2017-03-12T08:00:00Z")));
        let gap = at("2017-03-12 02:30:00").unwrap_err();
        assert!(
            gap.contains("does not exist in America/Chicago") && gap.contains("-06:00 to -05:00"),
            "{gap}"
        );
        // Fall back (2017-11-05 02:00 -> 01:00): 01:30 happens twice. Alone, or after a reading
        // before its first pass, it is the first; after a reading at or past the first pass,
        // the second.
        let first = utc("2017-11-05T06:30:00Z");
        let second = utc("2017-11-05T07:30:00Z");
        let after = |prev| parse_time_after("2017-11-05 01:30:00", &pat, &chicago, prev);
        assert_eq!(after(None), Ok(first));
        assert_eq!(after(Some(utc("2017-11-05T06:00:00Z"))), Ok(first));
        assert_eq!(after(Some(first)), Ok(second));
        assert_eq!(after(Some(utc("2017-11-05T06:45:00Z"))), Ok(second));
        // Date-only patterns mean local midnight.
        let day = TimeFormat::parse("%Y-%m-%d").unwrap();
        assert_eq!(
            parse_time("2017-07-15", &day, &chicago),
            Ok(utc("2017-07-15T05:00:00Z"))
        );
        // Other zones: southern-hemisphere daylight saving.
        let mel = Zone::parse("Australia/Melbourne").unwrap();
        assert_eq!(
            parse_time("2015-01-15 12:00:00", &pat, &mel),
            Ok(utc("2015-01-15T01:00:00Z"))
        );
        assert_eq!(
            parse_time("2015-07-15 12:00:00", &pat, &mel),
            Ok(utc("2015-07-15T02:00:00Z"))
        );
    }
}
