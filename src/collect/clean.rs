//! Cleaning, common to every collector: parse (done by the collector into a [`Candidate`]),
//! then validate and normalise into a [`Reading`], or reject with a reason.
//!
//! - Required fields: a series id, an event time and at least one value.
//! - Values must be finite numbers (numbers or numeric strings); a value outside the plausible
//!   range configured for its unit is rejected.
//! - Times: numbers are epoch seconds below 10^11 (before the year 5138) and epoch
//!   milliseconds above; strings are RFC 3339 with any offset (or such numbers as text), or
//!   local times in the configured pattern and zone (`time_format`, `timezone`). All become
//!   UTC milliseconds.
//! - Units: a value given in another unit of the same dimension as its configured unit is
//!   converted (F to C, kPa to bar, mph to m/s ...; the table is [`UNITS`]).
//! - Duplicates: a reading with the same series and event time as one seen within the
//!   dedupe horizon (in event time) is dropped and counted. Readings stamped with the time
//!   of receipt (the source sent no time) are never duplicates of each other.
//!
//! - Forgetting: a series not heard from for `forget_after` of wall-clock time (default 24
//!   hours) is forgotten, its duplicate memory and latest time dropped, so the memory of
//!   series that come and go stays bounded (see [`CleanConfig::forget_after`]).
//!
//! Counters: received = produced + quarantined + duplicates, always.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::dataset::timefmt::{parse_time_after, TimeFormat, Zone};
use crate::duration::HumanDuration;
use crate::quarantine::Quarantined;
use crate::record::{EventTime, Interner, Reading, Sym};

/// A value as the source gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    /// A number.
    Number(f64),
    /// Text, expected to hold a number.
    Text(String),
    /// Anything else (null, object, bool ...), described.
    Other(String),
}

/// A time as the source gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum RawTime {
    /// Epoch seconds or milliseconds (see the module docs).
    Number(f64),
    /// RFC 3339, or a number as text.
    Text(String),
    /// Already UTC milliseconds, from the source.
    Millis(EventTime),
    /// The time the collector received the record (the source sent none). Duplicates are not
    /// looked for by it: a burst of messages can share a millisecond.
    Received(EventTime),
}

/// A value of a [`Candidate`]: name, value, the unit it is given in (None: already in the
/// configured unit).
pub type NamedValue = (String, RawValue, Option<String>);

/// A record parsed from a source, before validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    /// Series id.
    pub series: Option<String>,
    /// Event time.
    pub time: Option<RawTime>,
    /// Values: name, value, unit it is given in (None: already in the configured unit).
    pub values: Vec<NamedValue>,
    /// Tags.
    pub tags: Vec<(String, String)>,
}

/// Cleaning rules.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanConfig {
    /// Unit each value name is normalised to (`temperature = "C"`).
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// Plausible range per unit, after normalisation (`C = [-60, 90]`).
    #[serde(default)]
    pub ranges: BTreeMap<String, (f64, f64)>,
    /// Event-time horizon within which exact duplicates are dropped (default 1 hour).
    #[serde(default)]
    pub dedupe_horizon: Option<HumanDuration>,
    /// How text times with no offset are written, as a strftime pattern
    /// (`%Y-%m-%d %H:%M:%S`). RFC 3339 and epoch numbers are read whatever this says.
    #[serde(default)]
    pub time_format: Option<TimeFormat>,
    /// The zone of those local times: `UTC` (the default), a fixed offset (`+01:00`) or a tz
    /// database name (`Europe/Berlin`), whose daylight saving is followed: a time in the
    /// skipped hour is quarantined as not existing, one in the repeated hour is resolved by
    /// the series' latest reading (see [`Zone`]).
    #[serde(default)]
    pub timezone: Zone,
    /// Wall-clock time after which a series not heard from is forgotten (default 24 hours,
    /// at least 1 second): its remembered times and latest time are dropped within 1.25 times
    /// this after its last reading, and counted in `forgotten`. A reading of it after that
    /// starts afresh: it is not checked against the times seen before (a re-send of one is
    /// produced again), and a local time in a repeated hour is read as the first pass.
    ///
    /// Wall-clock, not event time: one device with a clock days ahead would otherwise make
    /// every other series look silent.
    #[serde(default)]
    pub forget_after: Option<HumanDuration>,
}

/// The default of [`CleanConfig::forget_after`].
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What happened to one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Clean: produce it.
    Reading(Reading),
    /// Rejected: produce it to the quarantine topic.
    Quarantined(Quarantined),
    /// A duplicate of a reading already produced: dropped.
    Duplicate,
}

/// Per-collector counters (shared with whoever displays them).
#[derive(Debug, Default)]
pub struct Counters {
    /// Records received from the source.
    pub received: AtomicU64,
    /// Readings produced.
    pub produced: AtomicU64,
    /// Records quarantined.
    pub quarantined: AtomicU64,
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Failures of the source itself (a poll that failed, a lost connection): no record was
    /// received, so they are outside the sum above; each is also written to the quarantine
    /// topic with its reason.
    pub source_errors: AtomicU64,
    /// Series remembered now (for duplicates; a gauge, not a counter).
    pub series: AtomicU64,
    /// Series forgotten after `forget_after` without a reading.
    pub forgotten: AtomicU64,
}

/// A copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    /// See [`Counters::received`].
    pub received: u64,
    /// See [`Counters::produced`].
    pub produced: u64,
    /// See [`Counters::quarantined`].
    pub quarantined: u64,
    /// See [`Counters::duplicates`].
    pub duplicates: u64,
    /// See [`Counters::source_errors`].
    pub source_errors: u64,
    /// See [`Counters::series`].
    pub series: u64,
    /// See [`Counters::forgotten`].
    pub forgotten: u64,
}

impl std::fmt::Display for CounterSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received {} = produced {} + quarantined {} + duplicates {}; source errors {}; \
             series remembered {} (forgotten {})",
            self.received,
            self.produced,
            self.quarantined,
            self.duplicates,
            self.source_errors,
            self.series,
            self.forgotten
        )
    }
}

impl Counters {
    /// Reads them.
    pub fn snapshot(&self) -> CounterSnapshot {
        let r = Ordering::Relaxed;
        CounterSnapshot {
            received: self.received.load(r),
            produced: self.produced.load(r),
            quarantined: self.quarantined.load(r),
            duplicates: self.duplicates.load(r),
            source_errors: self.source_errors.load(r),
            series: self.series.load(r),
            forgotten: self.forgotten.load(r),
        }
    }
}

/// A unit: its dimension and how to reach the dimension's base unit (`base = v * f + o`).
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// Name (and aliases resolve to it).
    pub name: &'static str,
    /// Dimension.
    pub dimension: &'static str,
    /// Factor to the base unit.
    pub factor: f64,
    /// Offset to the base unit.
    pub offset: f64,
}

const fn u(name: &'static str, dimension: &'static str, factor: f64, offset: f64) -> Unit {
    Unit {
        name,
        dimension,
        factor,
        offset,
    }
}

/// The unit table.
pub const UNITS: &[Unit] = &[
    u("K", "temperature", 1.0, 0.0),
    u("C", "temperature", 1.0, 273.15),
    u("F", "temperature", 5.0 / 9.0, 459.67 * 5.0 / 9.0),
    u("Pa", "pressure", 1.0, 0.0),
    u("hPa", "pressure", 100.0, 0.0),
    u("mbar", "pressure", 100.0, 0.0),
    u("kPa", "pressure", 1e3, 0.0),
    u("bar", "pressure", 1e5, 0.0),
    u("MPa", "pressure", 1e6, 0.0),
    u("psi", "pressure", 6_894.757_293_168, 0.0),
    u("atm", "pressure", 101_325.0, 0.0),
    u("m/s", "speed", 1.0, 0.0),
    u("km/h", "speed", 1.0 / 3.6, 0.0),
    u("mph", "speed", 0.447_04, 0.0),
    u("kn", "speed", 1_852.0 / 3_600.0, 0.0),
    u("W", "power", 1.0, 0.0),
    u("kW", "power", 1e3, 0.0),
    u("MW", "power", 1e6, 0.0),
    u("J", "energy", 1.0, 0.0),
    u("Wh", "energy", 3_600.0, 0.0),
    u("kWh", "energy", 3.6e6, 0.0),
    u("MWh", "energy", 3.6e9, 0.0),
    u("mm", "length", 1e-3, 0.0),
    u("cm", "length", 1e-2, 0.0),
    u("m", "length", 1.0, 0.0),
    u("km", "length", 1e3, 0.0),
    u("in", "length", 0.0254, 0.0),
    u("ft", "length", 0.3048, 0.0),
    u("%", "ratio", 0.01, 0.0),
    u("ratio", "ratio", 1.0, 0.0),
];

/// Looks a unit up by name or common alias (`degC`, `°F`, `celsius`, `kph` ...).
pub fn unit(name: &str) -> Option<&'static Unit> {
    let n = name.trim();
    let canon = match n.to_ascii_lowercase().as_str() {
        "c" | "°c" | "degc" | "celsius" => "C",
        "f" | "°f" | "degf" | "fahrenheit" => "F",
        "k" | "kelvin" => "K",
        "kph" | "kmh" | "km/h" => "km/h",
        "knots" | "kt" | "kn" => "kn",
        "ms" | "m/s" | "mps" => "m/s",
        "percent" | "%" => "%",
        _ => n,
    };
    UNITS.iter().find(|u| u.name == canon)
}

/// Converts `v` from one unit to another of the same dimension.
pub fn convert(v: f64, from: &str, to: &str) -> Result<f64, String> {
    let f = unit(from).ok_or_else(|| format!("unknown unit {from:?}"))?;
    let t = unit(to).ok_or_else(|| format!("unknown unit {to:?}"))?;
    if f.dimension != t.dimension {
        return Err(format!(
            "cannot convert {from} ({}) to {to} ({})",
            f.dimension, t.dimension
        ));
    }
    if f.name == t.name {
        return Ok(v);
    }
    Ok((v * f.factor + f.offset - t.offset) / t.factor)
}

/// Seconds below this, milliseconds above.
const SECONDS_BELOW: f64 = 1e11;

fn event_time(t: &RawTime) -> Result<EventTime, String> {
    let from_number = |n: f64| -> Result<EventTime, String> {
        if !n.is_finite() || !(0.0..=1e16).contains(&n) {
            return Err(format!("time {n} is out of range"));
        }
        Ok(if n < SECONDS_BELOW {
            (n * 1000.0).round() as i64
        } else {
            n.round() as i64
        })
    };
    match t {
        RawTime::Millis(ms) | RawTime::Received(ms) => Ok(*ms),
        RawTime::Number(n) => from_number(*n),
        RawTime::Text(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<f64>() {
                return from_number(n);
            }
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|d| d.timestamp_millis())
                .map_err(|e| {
                    format!("unparseable time {s:?} ({e}); expected RFC 3339 or epoch seconds/ms (for local times, set clean.time_format and clean.timezone)")
                })
        }
    }
}

/// What the cleaner remembers of one series.
#[derive(Debug)]
struct Memory {
    /// Its latest event time.
    latest: EventTime,
    /// The times seen within the horizon of `latest`, in ascending order (8 bytes a time;
    /// readings mostly arrive in order, so a time is appended and the oldest dropped from the
    /// front, O(1), and looked up by binary search). A `BTreeSet` took about 20 bytes a time:
    /// 71 MB for 1,000 series of 1 Hz readings under the default 1-hour horizon.
    times: VecDeque<EventTime>,
    /// The sweep generation of its last reading (see [`Forget`]).
    heard: u32,
}

/// When series are forgotten: the wall clock is cut into periods of a quarter of
/// `forget_after` from the cleaner's start, numbered by `generation`. The first record of a
/// period sweeps: it drops the series last heard [`Forget::AGE`] periods before or more, so
/// between 1 and 1.25 times `forget_after` after their last reading (at the first record
/// received after that). A sweep is O(series remembered), at most once a period; the clock
/// is read once a record (a few tens of nanoseconds).
#[derive(Debug)]
struct Forget {
    period: Duration,
    /// The period the clock is in (wrapping; only differences of a few are compared).
    generation: u32,
    /// The start of the next period.
    next_sweep: Instant,
}

impl Forget {
    /// Periods without a reading after which a series is dropped.
    const AGE: u32 = 5;
}

/// The cleaner of one collector: rules, duplicate memory, counters.
#[derive(Debug)]
pub struct Cleaner {
    cfg: CleanConfig,
    horizon_ms: i64,
    /// Per series, what is remembered of it.
    seen: HashMap<Sym, Memory>,
    forget: Forget,
    interner: Interner,
    /// Counters.
    pub counters: Arc<Counters>,
}

impl Cleaner {
    /// A cleaner with these rules; checks that every configured unit is known.
    pub fn new(cfg: CleanConfig) -> Result<Self, String> {
        for (field, u) in &cfg.units {
            if unit(u).is_none() {
                return Err(format!(
                    "units.{field} = {u:?}: unknown unit; known: {}",
                    UNITS.iter().map(|u| u.name).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        for (u, (lo, hi)) in &cfg.ranges {
            if lo.partial_cmp(hi) != Some(std::cmp::Ordering::Less) {
                return Err(format!(
                    "ranges.{u} = [{lo}, {hi}]: the low end must be below the high end"
                ));
            }
        }
        let horizon_ms = cfg
            .dedupe_horizon
            .map_or(Duration::from_secs(3600), |d| d.0)
            .as_millis() as i64;
        let forget_after = cfg.forget_after.map_or(DEFAULT_FORGET_AFTER, |d| d.0);
        if forget_after < Duration::from_secs(1) {
            return Err(format!(
                "forget_after = {}: must be at least 1s (it is how long a silent series' \
                 duplicate memory is kept; the default is 24h)",
                HumanDuration(forget_after)
            ));
        }
        let period = forget_after / 4;
        Ok(Cleaner {
            cfg,
            horizon_ms,
            seen: HashMap::new(),
            forget: Forget {
                period,
                generation: 0,
                next_sweep: Instant::now() + period,
            },
            interner: Interner::default(),
            counters: Arc::default(),
        })
    }

    /// Validates and normalises one record from `source`; `payload` is what the source sent
    /// (kept with a rejection). Counts it.
    pub fn clean(
        &mut self,
        source: &str,
        payload: &[u8],
        parsed: Result<Candidate, String>,
    ) -> Outcome {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        // First, so that a series heard now is stamped with the period it is heard in.
        self.forget_idle(Instant::now());
        let stamped_here = matches!(
            parsed.as_ref().map(|c| &c.time),
            Ok(Some(RawTime::Received(_)))
        );
        let out = match parsed.and_then(|c| self.validate(c)) {
            Ok(r) => {
                if !stamped_here && self.duplicate(&r) {
                    Outcome::Duplicate
                } else {
                    Outcome::Reading(r)
                }
            }
            Err(reason) => Outcome::Quarantined(Quarantined::new(source, reason, payload)),
        };
        let c = match &out {
            Outcome::Reading(_) => &self.counters.produced,
            Outcome::Quarantined(_) => &self.counters.quarantined,
            Outcome::Duplicate => &self.counters.duplicates,
        };
        c.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Forgets the series not heard from for `forget_after` as of `now` (see
    /// [`CleanConfig::forget_after`]); [`clean`](Self::clean) calls it on every record with
    /// the wall clock. Does nothing until the current period is over.
    pub fn forget_idle(&mut self, now: Instant) {
        let f = &mut self.forget;
        if now < f.next_sweep {
            return;
        }
        // Every period that passed counts, however long nothing was received; the periods
        // stay on their grid.
        let passed = (now - f.next_sweep).as_nanos() / f.period.as_nanos() + 1;
        f.next_sweep += f.period * u32::try_from(passed).unwrap_or(u32::MAX);
        f.generation = f
            .generation
            .wrapping_add(u32::try_from(passed).unwrap_or(u32::MAX).min(Forget::AGE));
        let generation = f.generation;
        let before = self.seen.len();
        self.seen
            .retain(|_, m| generation.wrapping_sub(m.heard) < Forget::AGE);
        let dropped = before - self.seen.len();
        if dropped > 0 {
            if self.seen.capacity() > 4 * self.seen.len().max(1024) {
                self.seen.shrink_to_fit();
            }
            self.counters
                .forgotten
                .fetch_add(dropped as u64, Ordering::Relaxed);
            self.counters
                .series
                .store(self.seen.len() as u64, Ordering::Relaxed);
        }
    }

    /// Series remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    fn validate(&mut self, c: Candidate) -> Result<Reading, String> {
        let series = c
            .series
            .filter(|s| !s.trim().is_empty())
            .ok_or("missing series id")?;
        let series = self.interner.intern(series.trim());
        let time = c.time.as_ref().ok_or("missing time")?;
        // A text time that is neither a number nor RFC 3339 is read with the configured
        // pattern and zone, a repeated hour resolved by the series' latest reading.
        let ts = match (event_time(time), time, &self.cfg.time_format) {
            (Ok(ts), _, _) => ts,
            (Err(_), RawTime::Text(t), Some(fmt)) => {
                let prev = self.seen.get(&series).map(|m| m.latest);
                parse_time_after(t.trim(), fmt, &self.cfg.timezone, prev)?
            }
            (Err(why), _, _) => return Err(why),
        };
        if c.values.is_empty() {
            return Err("no values".into());
        }
        let mut values = smallvec::SmallVec::new();
        let mut tags: Vec<(Sym, Sym)> = Vec::new();
        let single = c.values.len() == 1;
        for (name, raw, given_unit) in c.values {
            let v = match raw {
                RawValue::Number(v) => v,
                RawValue::Text(t) => t
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("value {name} = {t:?} is not a number"))?,
                RawValue::Other(what) => {
                    return Err(format!("value {name} is {what}, not a number"))
                }
            };
            if !v.is_finite() {
                return Err(format!("value {name} = {v} is not finite"));
            }
            let target = self.cfg.units.get(&name).cloned();
            let (v, unit_name) = match (&given_unit, &target) {
                (Some(g), Some(t)) => (
                    convert(v, g, t).map_err(|e| format!("value {name}: {e}"))?,
                    Some(t.clone()),
                ),
                (None, Some(t)) => (v, Some(t.clone())),
                (Some(g), None) => (v, Some(g.clone())),
                (None, None) => (v, None),
            };
            if let Some(un) = &unit_name {
                let canon = unit(un).map_or(un.as_str(), |u| u.name);
                if let Some((lo, hi)) = self
                    .cfg
                    .ranges
                    .get(canon)
                    .or_else(|| self.cfg.ranges.get(un))
                {
                    if v < *lo || v > *hi {
                        return Err(format!(
                            "value {name} = {v} {canon} is outside the plausible range [{lo}, {hi}]"
                        ));
                    }
                }
                let key = if single {
                    "unit".to_string()
                } else {
                    format!("unit.{name}")
                };
                tags.push((self.interner.intern(&key), self.interner.intern(canon)));
            }
            values.push((self.interner.intern(&name), v));
        }
        for (k, v) in c.tags {
            tags.push((self.interner.intern(&k), self.interner.intern(&v)));
        }
        Ok(Reading {
            series,
            ts,
            values,
            tags,
        })
    }

    /// Whether the same series and event time was produced within the horizon (and remembers it).
    fn duplicate(&mut self, r: &Reading) -> bool {
        let horizon = self.horizon_ms;
        let remembered = self.seen.len() as u64;
        let m = match self.seen.entry(r.series) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                // Set, not added: the counters may outlive this cleaner (a restarted source).
                self.counters
                    .series
                    .store(remembered + 1, Ordering::Relaxed);
                e.insert(Memory {
                    latest: EventTime::MIN,
                    times: VecDeque::new(),
                    heard: 0,
                })
            }
        };
        m.heard = self.forget.generation;
        let (latest, times) = (&mut m.latest, &mut m.times);
        let at = match times.binary_search(&r.ts) {
            Ok(_) => return true,
            Err(i) => i,
        };
        if r.ts > *latest {
            *latest = r.ts;
            let cut = latest.saturating_sub(horizon);
            while times.front().is_some_and(|&t| t < cut) {
                times.pop_front();
            }
            times.push_back(r.ts); // the newest, so the last
        } else if r.ts >= latest.saturating_sub(horizon) {
            // Out of order, within the horizon: nothing before `at` was dropped.
            times.insert(at, r.ts);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(series: &str, time: RawTime, values: Vec<(&str, RawValue, Option<&str>)>) -> Candidate {
        Candidate {
            series: Some(series.into()),
            time: Some(time),
            values: values
                .into_iter()
                .map(|(n, v, u)| (n.to_string(), v, u.map(String::from)))
                .collect(),
            tags: vec![],
        }
    }

    #[test]
    fn units_convert_within_a_dimension_only() {
        assert!((convert(212.0, "F", "C").unwrap() - 100.0).abs() < 1e-9);
        assert!((convert(-40.0, "°F", "degC").unwrap() + 40.0).abs() < 1e-9);
        assert!((convert(0.0, "C", "K").unwrap() - 273.15).abs() < 1e-9);
        assert!((convert(250.0, "kPa", "bar").unwrap() - 2.5).abs() < 1e-12);
        assert!((convert(36.0, "km/h", "m/s").unwrap() - 10.0).abs() < 1e-12);
        assert!((convert(1.0, "kWh", "J").unwrap() - 3.6e6).abs() < 1e-6);
        assert!(convert(1.0, "C", "bar")
            .unwrap_err()
            .contains("cannot convert"));
        assert!(convert(1.0, "furlong", "m")
            .unwrap_err()
            .contains("unknown unit"));
        // Round trips.
        for u in UNITS {
            for t in UNITS.iter().filter(|t| t.dimension == u.dimension) {
                let x = 12.345;
                let back = convert(convert(x, u.name, t.name).unwrap(), t.name, u.name).unwrap();
                assert!(
                    (back - x).abs() < 1e-9,
                    "{} -> {} -> {}",
                    u.name,
                    t.name,
                    u.name
                );
            }
        }
    }

    #[test]
    fn times_in_seconds_millis_and_rfc3339_become_utc_ms() {
        let want = 1_700_000_000_000;
        for t in [
            RawTime::Number(1_700_000_000.0),
            RawTime::Number(1_700_000_000_000.0),
            RawTime::Text("1700000000".into()),
            RawTime::Text("2023-11-14T22:13:20Z".into()),
            RawTime::Text("2023-11-15T00:13:20+02:00".into()),
            RawTime::Text("2023-11-14T17:13:20.000-05:00".into()),
            RawTime::Millis(want),
        ] {
            assert_eq!(event_time(&t).unwrap(), want, "{t:?}");
        }
        assert!(event_time(&RawTime::Text("yesterday".into()))
            .unwrap_err()
            .contains("RFC 3339"));
        assert!(event_time(&RawTime::Number(f64::NAN)).is_err());
    }

    #[test]
    fn local_times_follow_the_configured_zone_through_daylight_saving() {
        let cfg: CleanConfig = toml::from_str(
            r#"
time_format = "%Y-%m-%d %H:%M:%S"
timezone = "Europe/Berlin"
"#,
        )
        .unwrap();
        let mut c = Cleaner::new(cfg).unwrap();
        let mut at = |series: &str, local: &str| {
            let cand = cand(
                series,
                RawTime::Text(local.into()),
                vec![("v", RawValue::Number(1.0), None)],
            );
            match c.clean("src", local.as_bytes(), Ok(cand)) {
                Outcome::Reading(r) => Ok(r.ts),
                Outcome::Quarantined(q) => Err(q.reason),
                Outcome::Duplicate => Err("duplicate".into()),
            }
        };
        let utc = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        // Winter is UTC+1, summer UTC+2; RFC 3339 and epoch times are read as before.
        assert_eq!(
            at("a", "2024-01-10 12:00:00"),
            Ok(utc("2024-01-10T11:00:00Z"))
        );
        assert_eq!(
            at("a", "2024-07-10 12:00:00"),
            Ok(utc("2024-07-10T10:00:00Z"))
        );
        assert_eq!(
            at("a", "2024-07-10T12:00:01+02:00"),
            Ok(utc("2024-07-10T10:00:01Z"))
        );
        // 2024-03-31: 02:00 -> 03:00. 02:30 does not exist.
        let gap = at("b", "2024-03-31 02:30:00").unwrap_err();
        assert!(gap.contains("does not exist in Europe/Berlin"), "{gap}");
        // 2024-10-27: 03:00 -> 02:00. 02:30 twice: first pass, second pass; a third copy is
        // a duplicate of the second.
        assert_eq!(
            at("b", "2024-10-27 02:30:00"),
            Ok(utc("2024-10-27T00:30:00Z"))
        );
        assert_eq!(
            at("b", "2024-10-27 02:30:00"),
            Ok(utc("2024-10-27T01:30:00Z"))
        );
        assert_eq!(at("b", "2024-10-27 02:30:00"), Err("duplicate".into()));
        // Another series is resolved by its own readings.
        assert_eq!(
            at("c", "2024-10-27 02:30:00"),
            Ok(utc("2024-10-27T00:30:00Z"))
        );
        // Without a pattern, a local time is unreadable, and the reason says what to set.
        let mut plain = Cleaner::new(CleanConfig::default()).unwrap();
        let out = plain.clean(
            "src",
            b"",
            Ok(cand(
                "a",
                RawTime::Text("2024-01-10 12:00:00".into()),
                vec![("v", RawValue::Number(1.0), None)],
            )),
        );
        let Outcome::Quarantined(q) = out else {
            panic!("{out:?}")
        };
        assert!(q.reason.contains("clean.time_format"), "{}", q.reason);
    }

    #[test]
    fn bad_records_are_quarantined_with_reasons_and_counted() {
        let mut c = Cleaner::new(CleanConfig {
            units: [("temperature".to_string(), "C".to_string())].into(),
            ranges: [("C".to_string(), (-60.0, 90.0))].into(),
            dedupe_horizon: Some(HumanDuration(Duration::from_secs(60))),
            ..CleanConfig::default()
        })
        .unwrap();
        let t = RawTime::Number(1_700_000_000.0);
        let ok = c.clean(
            "src",
            b"{}",
            Ok(cand(
                "a",
                t.clone(),
                vec![("temperature", RawValue::Number(68.0), Some("F"))],
            )),
        );
        let Outcome::Reading(r) = ok else {
            panic!("{ok:?}")
        };
        assert!((r.values[0].1 - 20.0).abs() < 1e-9);
        assert_eq!(&*r.tags[0].1, "C");
        let cases: Vec<(Result<Candidate, String>, &str)> = vec![
            (Err("not JSON: expected value".into()), "not JSON"),
            (
                Ok(Candidate {
                    series: None,
                    ..cand("a", t.clone(), vec![("x", RawValue::Number(1.0), None)])
                }),
                "missing series",
            ),
            (
                Ok(Candidate {
                    time: None,
                    ..cand("a", t.clone(), vec![("x", RawValue::Number(1.0), None)])
                }),
                "missing time",
            ),
            (Ok(cand("a", t.clone(), vec![])), "no values"),
            (
                Ok(cand(
                    "a",
                    t.clone(),
                    vec![("x", RawValue::Text("abc".into()), None)],
                )),
                "not a number",
            ),
            (
                Ok(cand(
                    "a",
                    t.clone(),
                    vec![("x", RawValue::Number(f64::INFINITY), None)],
                )),
                "not finite",
            ),
            (
                Ok(cand(
                    "a",
                    t.clone(),
                    vec![("x", RawValue::Other("null".into()), None)],
                )),
                "null",
            ),
            (
                Ok(cand(
                    "a",
                    t.clone(),
                    vec![("temperature", RawValue::Number(500.0), Some("F"))],
                )),
                "plausible range",
            ),
            (
                Ok(cand(
                    "a",
                    t.clone(),
                    vec![("temperature", RawValue::Number(5.0), Some("bar"))],
                )),
                "cannot convert",
            ),
            (
                Ok(cand(
                    "a",
                    RawTime::Text("soon".into()),
                    vec![("x", RawValue::Number(1.0), None)],
                )),
                "unparseable time",
            ),
        ];
        for (input, why) in cases {
            match c.clean("src", b"raw", input) {
                Outcome::Quarantined(q) => {
                    assert!(q.reason.contains(why), "{} vs {why}", q.reason);
                    assert_eq!(q.payload, "raw");
                    assert_eq!(q.source, "src");
                }
                other => panic!("{why}: {other:?}"),
            }
        }
        // Duplicates: same series and time within the horizon.
        let again = c.clean(
            "src",
            b"{}",
            Ok(cand(
                "a",
                t.clone(),
                vec![("temperature", RawValue::Number(20.0), None)],
            )),
        );
        assert_eq!(again, Outcome::Duplicate);
        let s = c.counters.snapshot();
        assert_eq!(
            (s.received, s.produced, s.quarantined, s.duplicates),
            (12, 1, 10, 1)
        );
        assert_eq!(s.received, s.produced + s.quarantined + s.duplicates);
    }

    #[test]
    fn duplicates_match_a_set_of_the_times_within_the_horizon_on_random_input() {
        // Mostly in order, with re-sent and late readings, against the rule kept plainly: a
        // set of the times at or after (latest - horizon), as of each reading.
        let horizon = 10_000i64;
        let mut c = Cleaner::new(CleanConfig {
            dedupe_horizon: Some(HumanDuration(Duration::from_millis(horizon as u64))),
            ..CleanConfig::default()
        })
        .unwrap();
        let mut model: HashMap<&str, (i64, std::collections::BTreeSet<i64>)> = HashMap::new();
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut clock = [0i64; 3];
        let mut sent: [Vec<i64>; 3] = Default::default();
        let (mut dups, mut late) = (0, 0);
        for _ in 0..200_000 {
            let k = (next() % 3) as usize;
            let series = ["a", "b", "c"][k];
            let ts = match next() % 10 {
                // A reading re-sent: one of the last 64 of the series (some beyond the horizon).
                0 if !sent[k].is_empty() => {
                    let back = (next() as usize % 64).min(sent[k].len() - 1);
                    sent[k][sent[k].len() - 1 - back]
                }
                1 => clock[k] - (next() % 15_000) as i64, // late, maybe within the horizon
                _ => {
                    clock[k] += (next() % 700) as i64;
                    sent[k].push(clock[k]);
                    clock[k]
                }
            };
            let (latest, times) = model
                .entry(series)
                .or_insert((i64::MIN, Default::default()));
            let want_dup = times.contains(&ts);
            if !want_dup {
                if ts > *latest {
                    *latest = ts;
                    *times = times.split_off(&(ts - horizon));
                }
                if ts >= *latest - horizon {
                    times.insert(ts);
                }
            }
            let out = c.clean(
                "s",
                b"",
                Ok(cand(
                    series,
                    RawTime::Millis(ts),
                    vec![("x", RawValue::Number(1.0), None)],
                )),
            );
            assert_eq!(out == Outcome::Duplicate, want_dup, "{series} at {ts}");
            dups += usize::from(want_dup);
            late += usize::from(!want_dup && ts < *latest);
        }
        assert!(
            dups > 1_000 && late > 1_000,
            "{dups} duplicates, {late} late"
        );
    }

    #[test]
    fn duplicates_are_remembered_within_the_horizon_only() {
        let mut c = Cleaner::new(CleanConfig {
            dedupe_horizon: Some(HumanDuration(Duration::from_secs(10))),
            ..CleanConfig::default()
        })
        .unwrap();
        let mut at = |ms: i64| {
            c.clean(
                "s",
                b"",
                Ok(cand(
                    "a",
                    RawTime::Millis(ms),
                    vec![("x", RawValue::Number(1.0), None)],
                )),
            )
        };
        assert!(matches!(at(1_000), Outcome::Reading(_)));
        assert!(matches!(at(5_000), Outcome::Reading(_)));
        assert_eq!(at(1_000), Outcome::Duplicate);
        assert!(matches!(at(30_000), Outcome::Reading(_)));
        // 1,000 is now beyond the horizon of the latest (30,000): no longer remembered.
        assert!(matches!(at(1_000), Outcome::Reading(_)));
        assert_eq!(at(30_000), Outcome::Duplicate);
        // Times of receipt: a burst within one millisecond is not a run of duplicates.
        for _ in 0..3 {
            let r = c.clean(
                "s",
                b"",
                Ok(cand(
                    "b",
                    RawTime::Received(7),
                    vec![("x", RawValue::Number(1.0), None)],
                )),
            );
            assert!(matches!(r, Outcome::Reading(_)), "{r:?}");
        }
    }

    #[test]
    fn silent_series_are_forgotten_after_forget_after_and_start_afresh() {
        // An hour, so the real clock (read on every record) never reaches a sweep here;
        // the test moves its own clock, in quarters of an hour.
        let mut c = Cleaner::new(CleanConfig {
            forget_after: Some(HumanDuration(Duration::from_secs(3600))),
            ..CleanConfig::default()
        })
        .unwrap();
        let t0 = Instant::now();
        let quarter = Duration::from_secs(900);
        let send = |c: &mut Cleaner, series: &str, ms: i64| {
            c.clean(
                "s",
                b"",
                Ok(cand(
                    series,
                    RawTime::Millis(ms),
                    vec![("x", RawValue::Number(1.0), None)],
                )),
            )
        };
        for i in 0..1_000 {
            assert!(matches!(
                send(&mut c, &format!("gone-{i}"), 1_000),
                Outcome::Reading(_)
            ));
        }
        assert!(matches!(send(&mut c, "alive", 1_000), Outcome::Reading(_)));
        assert_eq!(c.remembered(), 1_001);
        // Four quarters later "gone-*" are still remembered (their re-sends are duplicates);
        // "alive" reports every quarter, and a duplicate keeps "gone-1" too.
        for q in 1..=4u32 {
            c.forget_idle(t0 + quarter * q);
            assert!(matches!(
                send(&mut c, "alive", 1_000 + i64::from(q)),
                Outcome::Reading(_)
            ));
            assert_eq!(send(&mut c, "gone-1", 1_000), Outcome::Duplicate);
            assert_eq!(c.remembered(), 1_001, "quarter {q}");
        }
        assert_eq!(c.counters.snapshot().forgotten, 0);
        // The fifth: the silent ones go, the others stay.
        c.forget_idle(t0 + quarter * 5);
        assert_eq!(c.remembered(), 2);
        let s = c.counters.snapshot();
        assert_eq!((s.series, s.forgotten), (2, 999));
        assert_eq!(send(&mut c, "gone-1", 1_000), Outcome::Duplicate);
        assert_eq!(send(&mut c, "alive", 1_004), Outcome::Duplicate);
        // A forgotten series starts afresh: a re-send of its old reading is produced again,
        // then remembered.
        assert!(matches!(send(&mut c, "gone-7", 1_000), Outcome::Reading(_)));
        assert_eq!(send(&mut c, "gone-7", 1_000), Outcome::Duplicate);
        assert_eq!(c.counters.snapshot().series, 3);
        // A sweep within the period does nothing.
        c.forget_idle(t0 + quarter * 5 + Duration::from_secs(60));
        assert_eq!(c.remembered(), 3);
        // A collector that received nothing for days forgets everything at its next sweep,
        // however many periods passed.
        c.forget_idle(t0 + Duration::from_secs(10 * 86_400));
        assert_eq!(c.remembered(), 0);
        assert_eq!(c.counters.snapshot().forgotten, 1_002);
        assert!(matches!(send(&mut c, "alive", 1_004), Outcome::Reading(_)));
        let s = c.counters.snapshot();
        assert_eq!(s.received, s.produced + s.quarantined + s.duplicates);
        // Below a second is refused with a message.
        let e = Cleaner::new(CleanConfig {
            forget_after: Some(HumanDuration(Duration::from_millis(500))),
            ..CleanConfig::default()
        })
        .unwrap_err();
        assert!(
            e.contains("forget_after") && e.contains("at least 1s"),
            "{e}"
        );
    }

    #[test]
    fn unknown_configured_units_are_an_error() {
        let e = Cleaner::new(CleanConfig {
            units: [("t".to_string(), "furlongs".to_string())].into(),
            ..CleanConfig::default()
        })
        .unwrap_err();
        assert!(e.contains("units.t") && e.contains("known:"), "{e}");
    }
}
