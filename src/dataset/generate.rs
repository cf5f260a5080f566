//! Deterministic generators: the W1 benchmark workload (a CSV file) and the live sensor
//! stream the demo produces. Seeded, so the same arguments give the same bytes everywhere.
//!
//! W1: header `sensor_id,ts_ms,value`; 10,000 sensors `s00000..s09999`; `ts_ms` rises by 1 ms
//! per row from 1,700,000,000,000; each row's sensor is uniform at random; value =
//! `20 + 5 sin(2 pi ts / 1 day + phase(sensor)) + N(0,1)`, with 0.1% of rows spiking by +-30;
//! four decimals.

use std::io::Write;

use crate::record::{EventTime, Reading, Sym};

/// First timestamp of W1.
pub const W1_START_MS: i64 = 1_700_000_000_000;
/// Sensors in W1.
pub const W1_SENSORS: u32 = 10_000;
const DAY_MS: f64 = 86_400_000.0;

/// SplitMix64: a small, fast, well-distributed generator; enough for synthetic data.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: never 0, so safe under `ln` and negative powers.
    #[inline]
    pub fn next_f64_nonzero(&mut self) -> f64 {
        1.0 - self.next_f64()
    }

    /// Uniform integer in [0, n).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box-Muller; one of the pair is discarded for simplicity).
    #[inline]
    pub fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Phase of a sensor's daily cycle, fixed per sensor index.
pub fn phase(sensor: u32) -> f64 {
    let mut g = SplitMix64(0xC0FF_EE00 ^ sensor as u64);
    g.next_f64() * std::f64::consts::TAU
}

/// One W1-style value for `sensor` at `ts`.
#[inline]
pub fn sensor_value(rng: &mut SplitMix64, sensor: u32, ts: EventTime) -> f64 {
    let base = 20.0
        + 5.0 * (std::f64::consts::TAU * (ts as f64 / DAY_MS) + phase(sensor)).sin()
        + rng.normal();
    if rng.below(1000) == 0 {
        base + if rng.below(2) == 0 { 30.0 } else { -30.0 }
    } else {
        base
    }
}

/// Writes the W1 file: `rows` rows, seeded.
pub fn write_w1(out: &mut impl Write, rows: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = SplitMix64(seed);
    out.write_all(b"sensor_id,ts_ms,value\n")?;
    let phases: Vec<f64> = (0..W1_SENSORS).map(phase).collect();
    let mut line = Vec::with_capacity(64);
    for i in 0..rows {
        let ts = W1_START_MS + i as i64;
        let s = rng.below(W1_SENSORS as u64) as u32;
        let mut v = 20.0
            + 5.0 * (std::f64::consts::TAU * (ts as f64 / DAY_MS) + phases[s as usize]).sin()
            + rng.normal();
        if rng.below(1000) == 0 {
            v += if rng.below(2) == 0 { 30.0 } else { -30.0 };
        }
        line.clear();
        let _ = writeln!(line, "s{s:05},{ts},{v:.4}");
        out.write_all(&line)?;
    }
    out.flush()
}

/// The demo's live sensor stream: `sensors` sensors, one reading each per `step_ms` of event
/// time, in event-time order, values as in W1; with [`SensorStream::with_outages`], some
/// sensors stop reporting for a while, as real ones do.
#[derive(Debug)]
pub struct SensorStream {
    names: Vec<Sym>,
    rng: SplitMix64,
    /// Event time of the next round.
    pub ts: EventTime,
    start: EventTime,
    step_ms: i64,
    next_sensor: usize,
    outages: Option<Outages>,
}

/// Which sensors stop reporting, and when (see [`SensorStream::with_outages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outages {
    /// One sensor in `every` has outages: those whose index is `every / 2` modulo `every`.
    pub every: usize,
    /// The first outage of the first such sensor starts this long after the stream's start
    /// (ms of event time); the next sensor's `stagger_ms` later, and so on.
    pub first_ms: i64,
    /// Offset between consecutive affected sensors' outages, ms.
    pub stagger_ms: i64,
    /// Length of an outage, ms.
    pub length_ms: i64,
    /// An affected sensor's outages repeat with this period, ms.
    pub period_ms: i64,
}

impl Outages {
    /// The demo's: one sensor in 50 goes quiet for 40 s every 3 minutes, the first 20 s in,
    /// the others 5 s apart.
    pub const DEMO: Outages = Outages {
        every: 50,
        first_ms: 20_000,
        stagger_ms: 5_000,
        length_ms: 40_000,
        period_ms: 180_000,
    };

    /// Whether sensor `i` is quiet `since_start` ms after the stream's start.
    pub fn quiet(&self, i: usize, since_start: i64) -> bool {
        let every = self.every.max(1);
        if i % every != every / 2 {
            return false;
        }
        let t = since_start - self.first_ms - (i / every) as i64 * self.stagger_ms;
        t >= 0 && t.rem_euclid(self.period_ms.max(1)) < self.length_ms
    }
}

impl SensorStream {
    /// A stream starting at `start_ms`.
    pub fn new(sensors: u32, start_ms: EventTime, step_ms: i64, seed: u64) -> Self {
        SensorStream {
            names: (0..sensors)
                .map(|i| Sym::new(&format!("sensor/s{i:05}")))
                .collect(),
            rng: SplitMix64(seed),
            ts: start_ms,
            start: start_ms,
            step_ms: step_ms.max(1),
            next_sensor: 0,
            outages: None,
        }
    }

    /// The same stream, with sensors quiet during their outages (their readings are not
    /// produced).
    pub fn with_outages(mut self, outages: Outages) -> Self {
        self.outages = Some(outages);
        self
    }

    /// Appends the readings of the current round (one per sensor not in an outage) to `out`
    /// and moves to the next round.
    pub fn next_round(&mut self, out: &mut Vec<Reading>) {
        if self.names.is_empty() {
            return;
        }
        let round = self.ts;
        while self.ts == round {
            let quiet = self.is_quiet(self.next_sensor);
            let r = self.step();
            if !quiet {
                out.push(r);
            }
        }
    }

    fn is_quiet(&self, i: usize) -> bool {
        self.outages
            .is_some_and(|o| o.quiet(i, self.ts - self.start))
    }

    /// The next sensor's reading, quiet or not.
    fn step(&mut self) -> Reading {
        let i = self.next_sensor;
        // Spread sensors over the step so event time rises smoothly.
        let ts = self.ts + (i as i64 * self.step_ms) / self.names.len() as i64;
        let v = sensor_value(&mut self.rng, i as u32, ts);
        self.next_sensor += 1;
        if self.next_sensor == self.names.len() {
            self.next_sensor = 0;
            self.ts += self.step_ms;
        }
        Reading::single(self.names[i], ts, (v * 1e4).round() / 1e4)
    }
}

impl Iterator for SensorStream {
    type Item = Reading;
    fn next(&mut self) -> Option<Reading> {
        if self.names.is_empty() {
            return None;
        }
        // Every sensor can be quiet at once only when every sensor has outages (`every` = 1):
        // after two whole quiet rounds the iterator ends rather than spin through the outage
        // (`next_round` has no such limit).
        for _ in 0..self.names.len() * 2 {
            let quiet = self.is_quiet(self.next_sensor);
            let r = self.step();
            if !quiet {
                return Some(r);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn w1_is_deterministic_and_shaped() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_w1(&mut a, 5000, 7).unwrap();
        write_w1(&mut b, 5000, 7).unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("sensor_id,ts_ms,value"));
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), 5000);
        assert!(rows[0].starts_with("s") && rows[0].contains(",1700000000000,"));
        assert!(rows[4999].contains(",1700000004999,"));
        let v: f64 = rows[10].rsplit(',').next().unwrap().parse().unwrap();
        assert!((-20.0..60.0).contains(&v));
    }

    #[test]
    fn outages_silence_one_sensor_in_every_for_their_length_then_it_reports_again() {
        let o = Outages {
            every: 10,
            first_ms: 3_000,
            stagger_ms: 1_000,
            length_ms: 4_000,
            period_ms: 20_000,
        };
        // 20 sensors, one round per second: sensors 5 and 15 have outages, at 3-7 s and 4-8 s.
        let mut s = SensorStream::new(20, 100_000, 1_000, 3).with_outages(o);
        let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut round = Vec::new();
        for _ in 0..30 {
            round.clear();
            s.next_round(&mut round);
            assert!(round.windows(2).all(|w| w[0].ts <= w[1].ts));
            for r in &round {
                seen.entry(r.series.to_string())
                    .or_default()
                    .push((r.ts - 100_000) / 1_000);
            }
        }
        assert_eq!(s.ts, 130_000);
        let all: Vec<i64> = (0..30).collect();
        for (name, secs) in &seen {
            let want: Vec<i64> = match name.as_str() {
                "sensor/s00005" => all
                    .iter()
                    .copied()
                    .filter(|t| !(3..7).contains(t) && !(23..27).contains(t))
                    .collect(),
                "sensor/s00015" => all
                    .iter()
                    .copied()
                    .filter(|t| !(4..8).contains(t) && !(24..28).contains(t))
                    .collect(),
                _ => all.clone(),
            };
            assert_eq!(secs, &want, "{name}");
        }
        assert_eq!(seen.len(), 20);
        // Without outages, the rounds hold every sensor.
        let mut plain = SensorStream::new(20, 100_000, 1_000, 3);
        round.clear();
        plain.next_round(&mut round);
        assert_eq!(round.len(), 20);
    }

    #[test]
    fn sensor_stream_rises_in_event_time() {
        let s = SensorStream::new(10, 1_000, 1_000, 1);
        let ts: Vec<i64> = s.take(35).map(|r| r.ts).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(ts[10], 2_000);
    }
}
