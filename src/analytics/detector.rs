//! The `gauge` anomaly detector: one streaming score in [0, 1] per reading, built for the
//! Numenta Anomaly Benchmark and usable on any series.
//!
//! Per reading it takes the larger of two kinds of evidence, each O(1) per update:
//! - **context novelty** (after CAD OSE): the value is quantised into bins over the range seen
//!   so far; a bin, a transition between recent bins, or a coarse level at this hour of the day
//!   never seen before is novel;
//! - **tail improbability** (extreme value theory, after SPOT): the residual of the value from
//!   an exponentially weighted mean, and the trimmed mean of the last `smooth` residuals (a
//!   sustained shift; the `trim` largest and smallest are dropped, so one spike is not counted
//!   again as a shift for `smooth` readings), each in both directions, go to a
//!   peaks-over-threshold model ([`super::tail::PeaksOverThreshold`]) that fits the series'
//!   own tail. The smaller tail probability `p` of each direction scores `ln p / ln p_floor`,
//!   so a spike that is routine for a spiky series scores low and the same spike in a calm
//!   series scores high.
//!
//! Novelty **habituates**: it is divided by `1 + habituation * r`, where `r` is an
//! exponentially weighted rate (memory about `1 / habituation_alpha` readings) of the readings
//! whose novelty alone would have alarmed. In a series where new levels and transitions are
//! routine (a volume that keeps setting records, a pattern that keeps changing), novelty stops
//! alarming after a few recent novel readings; in a series where novelty is rare, the first
//! novel reading scores in full.
//!
//! After a reading scores high, the evidence that raised it stays quiet for a while (its
//! scores are halved for `suppress` readings): one alarm per event is what an operator wants
//! and what NAB rewards. Upward tail evidence, downward tail evidence and novelty keep separate
//! quiet periods: evidence of any kind at the alarm level (even while its own period runs)
//! quiets novelty, and a novelty alarm quiets everything, but a drop soon after an upward alarm
//! (or a rise after a downward one) is a new event and still alarms.
//! State per series: a few dozen numbers, `smooth` residuals (twice: in order and sorted),
//! four tail models (640 bytes each, plus their first `tail.init` values until their
//! thresholds are set, and a second model while one re-learns its threshold after the noise
//! shrank for good), and the set of seen contexts (bounded by `max_contexts`; each packed into
//! a `u64`, 9 bytes per hash-table slot: at most about 1.1 MiB per series, at the 100,000
//! cap).

use std::collections::{HashSet, VecDeque};

use super::tail::{PeaksOverThreshold, TailParams};

/// Detector parameters: one set for every series (NAB's rules allow no per-file tuning).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DetectorParams {
    /// Readings before any score is produced (the detector learns; output 0).
    pub warmup: u64,
    /// Smoothing of the mean the residuals are taken from.
    pub alpha: f64,
    /// Readings in the mean residual (the sustained-shift evidence).
    pub smooth: usize,
    /// Residuals dropped from each end of that window before averaging (a trimmed mean).
    pub trim: usize,
    /// The tail models' parameters.
    pub tail: TailParams,
    /// Tail probability that scores 1 (smaller probabilities also score 1).
    pub p_floor: f64,
    /// Number of quantisation bins across the range seen so far (0 turns bin novelty off).
    pub bins: f64,
    /// Readings after an alarm during which the scores of the evidence that raised it are
    /// halved.
    pub suppress: u64,
    /// Score at and above which a reading counts as an alarm (starts a quiet period).
    pub alarm: f64,
    /// Cap on the number of remembered contexts.
    pub max_contexts: usize,
    /// Weight of a value never seen at this hour of the day (0 turns seasonal novelty off).
    pub w_season: f64,
    /// Readings at an hour of the day before seasonal novelty counts.
    pub season_min: u64,
    /// Seasonal contexts use bins this many times coarser.
    pub season_div: i64,
    /// Habituation of novelty: the novelty score is divided by `1 + habituation * r`, where
    /// `r` is the recent rate of readings whose novelty reached `alarm` (0 turns it off).
    pub habituation: f64,
    /// Smoothing of that rate (its memory is about `1 / habituation_alpha` readings).
    pub habituation_alpha: f64,
}

impl Default for DetectorParams {
    fn default() -> Self {
        DetectorParams {
            warmup: 150,
            alpha: 0.01,
            smooth: 20,
            trim: 2,
            tail: TailParams::default(),
            p_floor: 1e-4,
            bins: 40.0,
            suppress: 100,
            alarm: 0.9,
            max_contexts: 100_000,
            w_season: 0.95,
            season_min: 120,
            season_div: 8,
            habituation: 20.0,
            habituation_alpha: 0.001,
        }
    }
}

/// Parses `value` into `field`; on failure, the name of the field's type.
fn parse_into<T: std::str::FromStr>(field: &mut T, value: &str) -> Result<(), &'static str> {
    *field = value
        .trim()
        .parse()
        .map_err(|_| std::any::type_name::<T>())?;
    Ok(())
}

/// Sets one field from text; on failure, the name of the field's type.
type Setter = fn(&mut DetectorParams, &str) -> Result<(), &'static str>;

/// Every parameter [`DetectorParams::from_env`] reads, by its name after `SG_DET_`.
const SETTERS: [(&str, Setter); 19] = [
    ("WARMUP", |p, v| parse_into(&mut p.warmup, v)),
    ("ALPHA", |p, v| parse_into(&mut p.alpha, v)),
    ("SMOOTH", |p, v| parse_into(&mut p.smooth, v)),
    ("TRIM", |p, v| parse_into(&mut p.trim, v)),
    ("TAIL_INIT", |p, v| parse_into(&mut p.tail.init, v)),
    ("TAIL_QUANTILE", |p, v| parse_into(&mut p.tail.quantile, v)),
    ("TAIL_FORGET", |p, v| parse_into(&mut p.tail.forget, v)),
    ("TAIL_DRIFT", |p, v| parse_into(&mut p.tail.drift, v)),
    ("TAIL_DRIFT_WINDOW", |p, v| {
        parse_into(&mut p.tail.drift_window, v)
    }),
    ("TAIL_RELEARN_EXCESSES", |p, v| {
        parse_into(&mut p.tail.relearn_excesses, v)
    }),
    ("P_FLOOR", |p, v| parse_into(&mut p.p_floor, v)),
    ("BINS", |p, v| parse_into(&mut p.bins, v)),
    ("SUPPRESS", |p, v| parse_into(&mut p.suppress, v)),
    ("ALARM", |p, v| parse_into(&mut p.alarm, v)),
    ("W_SEASON", |p, v| parse_into(&mut p.w_season, v)),
    ("SEASON_MIN", |p, v| parse_into(&mut p.season_min, v)),
    ("SEASON_DIV", |p, v| parse_into(&mut p.season_div, v)),
    ("HABITUATION", |p, v| parse_into(&mut p.habituation, v)),
    ("HABITUATION_ALPHA", |p, v| {
        parse_into(&mut p.habituation_alpha, v)
    }),
];

impl DetectorParams {
    /// The names [`DetectorParams::from_env`] reads, without the `SG_DET_` prefix.
    pub fn env_names() -> impl Iterator<Item = &'static str> {
        SETTERS.iter().map(|(name, _)| *name)
    }

    /// Defaults, each overridable by an environment variable `SG_DET_<NAME>` (for tuning runs).
    /// A value that does not parse as its field's type, or an `SG_DET_` variable that names
    /// no field (a typo would otherwise be ignored), is an error naming the variable.
    pub fn from_env() -> Result<Self, ParamError> {
        Self::from_vars(std::env::vars())
    }

    /// [`DetectorParams::from_env`] over the given `(name, value)` pairs; pairs whose name does
    /// not start with `SG_DET_` are ignored.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ParamError> {
        let mut p = Self::default();
        for (var, value) in vars {
            let Some(name) = var.strip_prefix("SG_DET_") else {
                continue;
            };
            let Some((_, set)) = SETTERS.iter().find(|(n, _)| *n == name) else {
                return Err(ParamError::Unknown(var.clone()));
            };
            set(&mut p, &value).map_err(|expected| ParamError::Value {
                name: var.clone(),
                value: value.clone(),
                expected,
            })?;
        }
        Ok(p)
    }
}

/// A detector parameter given in the environment that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// The value does not parse as the field's type.
    #[error("{name}={value:?}: expected a value of type {expected}")]
    Value {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// The field's type.
        expected: &'static str,
    },
    /// An `SG_DET_` variable that names no parameter.
    #[error("{0} names no detector parameter; known: SG_DET_ followed by one of {names}", names = DetectorParams::env_names().collect::<Vec<_>>().join(", "))]
    Unknown(String),
}

/// Per-series detector state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Detector {
    p: DetectorParams,
    n: u64,
    /// Exponentially weighted mean the residuals are taken from.
    mean: f64,
    min: f64,
    max: f64,
    /// The last `smooth` residuals, in arrival order and sorted.
    residuals: VecDeque<f64>,
    sorted: Vec<f64>,
    /// Tail models: residual up and down, trimmed mean residual up and down.
    tails: [PeaksOverThreshold; 4],
    prev_bins: [i64; 2],
    /// Seen contexts, each packed into one `u64` by [`context_key`].
    contexts: HashSet<u64, ContextHash>,
    /// Readings left in the quiet periods of upward tail evidence, downward tail evidence and
    /// novelty.
    quiet: [u64; 3],
    hour_seen: [u64; 24],
    /// Recent rate of readings (after warmup) whose novelty alone reached `alarm`.
    novelty_rate: f64,
}

impl Detector {
    /// A fresh detector.
    pub fn new(p: DetectorParams) -> Self {
        let tail = PeaksOverThreshold::new(p.tail.clone());
        Detector {
            n: 0,
            mean: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            residuals: VecDeque::with_capacity(p.smooth.max(1) + 1),
            sorted: Vec::with_capacity(p.smooth.max(1) + 1),
            tails: [tail.clone(), tail.clone(), tail.clone(), tail],
            prev_bins: [NONE; 2],
            contexts: HashSet::with_hasher(ContextHash::new()),
            quiet: [0; 3],
            hour_seen: [0; 24],
            novelty_rate: 0.0,
            p,
        }
    }

    /// Feeds the next value of the series; returns its anomaly score in [0, 1].
    pub fn update(&mut self, ts_ms: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        self.n += 1;
        let novel = self.novelty(ts_ms, x);

        // Tail improbability of the residual and of the trimmed mean residual, both directions.
        let residual = if self.n == 1 {
            self.mean = x;
            0.0
        } else {
            // A running mean until 1/alpha readings, so early residuals are not biased by the
            // first value.
            let r = x - self.mean;
            self.mean += self.p.alpha.max(1.0 / self.n as f64) * r;
            r
        };
        let shift = self.trimmed_mean_residual(residual);
        let [up, down, shift_up, shift_down] = &mut self.tails;
        let p_up = up
            .surprise_then_learn(residual)
            .min(shift_up.surprise_then_learn(shift));
        let p_down = down
            .surprise_then_learn(-residual)
            .min(shift_down.surprise_then_learn(-shift));

        if self.n <= self.p.warmup {
            return 0.0;
        }
        let novel = novel.min(1.0);
        let habituated = novel / (1.0 + self.p.habituation * self.novelty_rate);
        let a = self.p.habituation_alpha;
        let event = if novel >= self.p.alarm { 1.0 } else { 0.0 };
        self.novelty_rate = (1.0 - a) * self.novelty_rate + a * event;

        // Evidence by kind: upward tail, downward tail, novelty; each halved while quiet.
        let evidence = [
            self.improbability(p_up),
            self.improbability(p_down),
            habituated.clamp(0.0, 1.0),
        ];
        let mut score: f64 = 0.0;
        for (e, &q) in evidence.iter().zip(&self.quiet) {
            score = score.max(if q > 0 { 0.5 * e } else { *e });
        }
        // A kind's quiet period starts when its own evidence reaches the alarm level outside
        // one; novelty's also when any evidence does (quiet or not); all start on a novelty
        // alarm.
        let alarm = self.p.alarm;
        let any_alarm = evidence.iter().any(|&e| e >= alarm);
        let novelty_alarm = evidence[2] >= alarm && self.quiet[2] == 0;
        for (kind, q) in self.quiet.iter_mut().enumerate() {
            if *q > 0 {
                *q -= 1;
            } else if evidence[kind] >= alarm || (kind == 2 && any_alarm) || novelty_alarm {
                *q = self.p.suppress;
            }
        }
        score
    }

    /// The tail probability `p` as a score in [0, 1]: `ln p / ln p_floor`.
    fn improbability(&self, p: f64) -> f64 {
        if p < 1.0 {
            (p.max(f64::MIN_POSITIVE).ln() / self.p.p_floor.ln()).clamp(0.0, 1.0)
        } else {
            0.0 // not -0.0, which ln(1) / ln(p_floor) is
        }
    }

    /// Adds `residual` to the window of the last `smooth` residuals and returns their mean
    /// without the `trim` largest and smallest (fewer while the window is short). O(smooth),
    /// and summed afresh each time, so no rounding builds up.
    fn trimmed_mean_residual(&mut self, residual: f64) -> f64 {
        self.residuals.push_back(residual);
        let i = self
            .sorted
            .partition_point(|&v| v.total_cmp(&residual).is_lt());
        self.sorted.insert(i, residual);
        if self.residuals.len() > self.p.smooth.max(1) {
            if let Some(old) = self.residuals.pop_front() {
                let i = self.sorted.partition_point(|&v| v.total_cmp(&old).is_lt());
                self.sorted.remove(i);
            }
        }
        let n = self.sorted.len();
        let k = self.p.trim.min(n.saturating_sub(1) / 2);
        let kept = &self.sorted[k..n - k];
        kept.iter().sum::<f64>() / kept.len() as f64
    }

    /// Context novelty of `x` over the range seen before it (then learns it).
    fn novelty(&mut self, ts_ms: i64, x: f64) -> f64 {
        let range = self.max - self.min;
        // Clamped, so a bin is never one of the context markers (`as` saturates far out).
        let limit = BIN_LIMIT as f64;
        let bin = if range > 0.0 {
            ((x - self.min) / range * self.p.bins)
                .floor()
                .clamp(-limit, limit) as i64
        } else {
            0
        };
        let grow = self.contexts.len() < self.p.max_contexts;
        let mut novel = 0.0;
        let hour = ts_ms.div_euclid(3_600_000).rem_euclid(24) as usize;
        self.hour_seen[hour] += 1;
        let seasonal = context_key(SEASONAL, hour as i64, bin / self.p.season_div);
        if self.hour_seen[hour] > self.p.season_min
            && self.p.w_season > 0.0
            && !self.contexts.contains(&seasonal)
        {
            novel += self.p.w_season;
        }
        if grow {
            self.contexts.insert(seasonal);
        }
        for (k, ctx) in [
            (0.5, context_key(NONE, NONE, bin)),
            (0.3, context_key(NONE, self.prev_bins[1], bin)),
            (0.2, context_key(self.prev_bins[0], self.prev_bins[1], bin)),
        ] {
            let new = if grow {
                self.contexts.insert(ctx)
            } else {
                !self.contexts.contains(&ctx)
            };
            if new {
                novel += k;
            }
        }
        self.prev_bins = [self.prev_bins[1], bin];
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        novel
    }
}

/// A slot of a context with no bin in it (no earlier reading yet, or a shorter context).
const NONE: i64 = i64::MIN;
/// The first slot of a seasonal context (hour of the day, coarse level).
const SEASONAL: i64 = i64::MIN + 1;
/// Bits per slot of a packed context.
const SLOT_BITS: u32 = 21;
/// Largest bin a slot holds exactly; bins beyond +-`BIN_LIMIT` share the edge slot value.
const BIN_LIMIT: i64 = (1 << (SLOT_BITS - 1)) - 3;

/// Packs a context (three bins, or [`NONE`] / [`SEASONAL`] markers) into one `u64`: 21 bits
/// per slot, the markers taking slot values 0 and 1 and bins `-BIN_LIMIT..=BIN_LIMIT` the
/// values above. Exact for every bin within about a million bin widths of the range seen;
/// a value further out than that falls in the edge bin (it is novel the first time either
/// way). A hash table holds one in 9 bytes per slot, against 25 for the three `i64`s.
fn context_key(a: i64, b: i64, c: i64) -> u64 {
    fn slot(v: i64) -> u64 {
        match v {
            NONE => 0,
            SEASONAL => 1,
            _ => (v.clamp(-BIN_LIMIT, BIN_LIMIT) + BIN_LIMIT + 2) as u64, // bins are clamped
        }
    }
    (slot(a) << (2 * SLOT_BITS)) | (slot(b) << SLOT_BITS) | slot(c)
}

/// Hashes packed contexts: a multiply-rotate mix with a random key per detector (from the
/// standard library's random state), at a fraction of SipHash's cost. The contexts come from
/// data, so the key keeps one fixed set of values from colliding in every detector; it is not
/// a cryptographic defence.
#[derive(Debug, Clone)]
struct ContextHash {
    key: u64,
}

impl ContextHash {
    fn new() -> Self {
        use std::hash::BuildHasher;
        ContextHash {
            key: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1,
        }
    }
}

impl Default for ContextHash {
    /// A fresh random key (a detector read back from a savepoint hashes with a new one).
    fn default() -> Self {
        ContextHash::new()
    }
}

impl std::hash::BuildHasher for ContextHash {
    type Hasher = ContextHasher;
    fn build_hasher(&self) -> ContextHasher {
        ContextHasher(self.key)
    }
}

/// The hasher of [`ContextHash`] (for `u64` keys).
#[derive(Debug)]
struct ContextHasher(u64);

impl std::hash::Hasher for ContextHasher {
    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(31);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::generate::SplitMix64;

    const FIVE_MIN: i64 = 300_000;

    /// Five-minute readings of a level of 10 with uniform noise of +-0.5; when `spiky`, one
    /// reading in 40 on average is a spike of +5 to +35.
    fn series(n: usize, spiky: bool, seed: u64) -> Vec<(i64, f64)> {
        let mut u = SplitMix64(seed);
        (0..n)
            .map(|i| {
                let mut x = 10.0 + u.next_f64() - 0.5;
                if spiky && u.next_f64() < 1.0 / 40.0 {
                    x += 5.0 + 30.0 * u.next_f64();
                }
                (i as i64 * FIVE_MIN, x)
            })
            .collect()
    }

    /// Tail evidence only: no bin or seasonal novelty, no quiet period.
    fn tail_only() -> DetectorParams {
        DetectorParams {
            bins: 0.0,
            w_season: 0.0,
            suppress: 0,
            ..DetectorParams::default()
        }
    }

    /// False alarms expected over `n` ordinary readings from the tail evidence alone, if the
    /// tail models are calibrated: four models, each below `p_floor^alarm` with that chance.
    fn expected_false_alarms(n: usize) -> f64 {
        let p = DetectorParams::default();
        4.0 * n as f64 * p.p_floor.powf(p.alarm)
    }

    /// Readings at or above `alarm`, where alarms fewer than `gap` readings after the previous
    /// one belong to the same event.
    fn alarm_events(scores: &[f64], alarm: f64, gap: usize) -> usize {
        let mut events = 0;
        let mut last: Option<usize> = None;
        for (i, _) in scores.iter().enumerate().filter(|(_, &v)| v >= alarm) {
            if last.is_none_or(|l| i - l >= gap) {
                events += 1;
            }
            last = Some(i);
        }
        events
    }

    fn run(p: DetectorParams, input: &[(i64, f64)]) -> Vec<f64> {
        let mut d = Detector::new(p);
        input.iter().map(|&(ts, x)| d.update(ts, x)).collect()
    }

    #[test]
    fn scores_are_in_range_and_non_finite_values_score_zero() {
        let mut d = Detector::new(DetectorParams::default());
        for (i, &(ts, x)) in series(20_000, true, 7).iter().enumerate() {
            let x = if i % 997 == 0 { f64::NAN } else { x };
            let s = d.update(ts, x);
            assert!((0.0..=1.0).contains(&s), "score {s} at {i}");
            if x.is_nan() {
                assert_eq!(s, 0.0);
            }
        }
    }

    #[test]
    fn the_same_spike_alarms_in_a_calm_series_but_not_in_a_spiky_one() {
        let alarm = DetectorParams::default().alarm;
        let at = 5_000;
        for seed in [1, 2, 3, 4, 5, 6, 7, 8] {
            let mut calm = series(at + 200, false, seed);
            let mut spiky = series(at + 200, true, seed);
            calm[at].1 = 35.0;
            spiky[at].1 = 35.0;
            let c = run(tail_only(), &calm);
            let s = run(tail_only(), &spiky);
            assert!(c[at] >= alarm, "seed {seed}: calm {}", c[at]);
            assert!(s[at] < alarm, "seed {seed}: spiky {}", s[at]);
            // The routine spikes (about 100 here) alarm no more often than calibration
            // allows. Counted as events: with no quiet period, one cluster of spikes keeps the
            // trimmed mean residual high, or the spike-lifted mean makes the next calm
            // readings look low, for several readings in a row, and an operator sees one alarm.
            let events = alarm_events(&s[1_000..at], alarm, tail_only().smooth);
            let bound = 3.0 * expected_false_alarms(at - 1_000);
            assert!(
                events as f64 <= bound,
                "seed {seed}: {events} alarm events on routine spikes"
            );
        }
    }

    #[test]
    fn a_spike_below_the_old_noise_alarms_once_the_noise_has_shrunk_for_good() {
        // 5,000 readings of 10 with normal noise of spread 1, then 30,000 of spread 0.05 (a
        // noisy sensor replaced), then 11: 20 new spreads but one old one, inside the range
        // seen (no new bin) and below the residual thresholds set on the first values. The
        // tail models re-learn their thresholds on the calm values; with thresholds kept from
        // the first values (`drift` 0) the spike scores near 0.
        let alarm = DetectorParams::default().alarm;
        let kept = DetectorParams {
            tail: TailParams {
                drift: 0.0,
                ..TailParams::default()
            },
            ..DetectorParams::default()
        };
        for seed in 1..=5 {
            let mut u = SplitMix64(seed);
            let mut adaptive = Detector::new(DetectorParams::default());
            let mut fixed = Detector::new(kept.clone());
            let mut ts = 0;
            for i in 0..35_000 {
                let x = 10.0 + if i < 5_000 { 1.0 } else { 0.05 } * u.normal();
                adaptive.update(ts, x);
                fixed.update(ts, x);
                ts += FIVE_MIN;
            }
            assert!(
                adaptive.tails.iter().all(|t| t.relearned() >= 1),
                "seed {seed}"
            );
            // Scored outside any quiet period left by the calm readings' own alarms.
            adaptive.quiet = [0; 3];
            fixed.quiet = [0; 3];
            let (a, f) = (adaptive.update(ts, 11.0), fixed.update(ts, 11.0));
            assert!(a >= alarm, "seed {seed}: re-learned {a}");
            assert!(f < 0.5, "seed {seed}: kept {f}");
        }
    }

    #[test]
    fn a_sustained_shift_within_the_noise_alarms() {
        // After 5,000 readings of 10 +- 0.5 the level moves to 10.45 +- 0.04: every reading
        // stays inside the range seen, no single residual is unusual, but the mean of 20
        // residuals moves far into its tail.
        let alarm = DetectorParams::default().alarm;
        for seed in [4, 5, 6] {
            let mut input = series(6_000, false, seed);
            let mut u = SplitMix64(seed + 100);
            for r in &mut input[5_000..] {
                r.1 = 10.45 + 0.08 * (u.next_f64() - 0.5);
            }
            let scores = run(tail_only(), &input);
            let before = scores[1_000..5_000].iter().filter(|&&v| v >= alarm).count();
            let after = scores[5_000..5_100].iter().filter(|&&v| v >= alarm).count();
            let bound = 3.0 * expected_false_alarms(4_000);
            assert!(
                before as f64 <= bound,
                "seed {seed}: {before} alarms before the shift"
            );
            assert!(after >= 1, "seed {seed}: the shift did not alarm");
        }
    }

    #[test]
    fn a_drop_after_an_upward_alarm_is_a_new_event_but_a_second_rise_is_not() {
        // Tail evidence with the default quiet period, on normal noise of sd 1: a spike of +25
        // alarms; 30 readings later a second +25 spike is the same kind of evidence, inside
        // its quiet period, and is halved; a drop of -25 instead is downward evidence, whose
        // quiet period has not started, and alarms. (On noise with a hard bound, such as the
        // uniform noise of `series`, the spike lifts the mean enough that the next ordinary
        // readings already alarm downward; the README's NAB section lists this.)
        let p = DetectorParams {
            bins: 0.0,
            w_season: 0.0,
            ..DetectorParams::default()
        };
        let alarm = p.alarm;
        for seed in [1, 2, 3, 4, 5] {
            let mut rng = SplitMix64(seed);
            let mut rise: Vec<(i64, f64)> = (0..5_200)
                .map(|i| (i as i64 * FIVE_MIN, 10.0 + rng.normal()))
                .collect();
            rise[5_000].1 = 35.0;
            let mut drop = rise.clone();
            rise[5_030].1 = 35.0;
            drop[5_030].1 = -15.0;
            let r = run(p.clone(), &rise);
            let d = run(p.clone(), &drop);
            assert!(
                r[5_000] >= alarm && d[5_000] >= alarm,
                "seed {seed}: first spike"
            );
            assert!(
                r[5_030] < alarm,
                "seed {seed}: second rise scored {}",
                r[5_030]
            );
            assert!(
                d[5_030] >= alarm,
                "seed {seed}: the drop scored {}",
                d[5_030]
            );
            // The quiet periods end: the same rise 150 readings on alarms again.
            let mut later = rise.clone();
            later[5_030].1 = later[5_029].1;
            later[5_150].1 = 35.0;
            assert!(
                run(p.clone(), &later)[5_150] >= alarm,
                "seed {seed}: later rise"
            );
        }
    }

    /// Novelty evidence only: the tail models never finish learning on these short inputs.
    fn novelty_only(habituation: f64) -> DetectorParams {
        DetectorParams {
            tail: TailParams {
                init: 20_000,
                ..TailParams::default()
            },
            habituation,
            ..DetectorParams::default()
        }
    }

    fn alarms(scores: &[f64]) -> usize {
        let alarm = DetectorParams::default().alarm;
        scores.iter().filter(|&&v| v >= alarm).count()
    }

    #[test]
    fn novelty_habituates_where_it_is_routine_but_not_where_it_is_rare() {
        for seed in [1, 2, 3, 4, 5] {
            let mut rng = SplitMix64(seed);
            // A daily cycle under noise whose spread keeps growing (e-fold every 2,000
            // readings): the range keeps widening, so values keep landing in bins, transitions
            // and hour-of-day levels never seen before. Novelty is routine here.
            let growing: Vec<(i64, f64)> = (0..12_000)
                .map(|i| {
                    let t = i as f64;
                    let day = (t * std::f64::consts::TAU / 288.0).sin();
                    (
                        i as i64 * FIVE_MIN,
                        10.0 + 5.0 * day + (t / 2_000.0).exp() * rng.normal(),
                    )
                })
                .collect();
            let plain = alarms(&run(novelty_only(0.0), &growing)[2_000..]);
            let habituated = alarms(&run(novelty_only(20.0), &growing)[2_000..]);
            assert!(
                plain >= 20,
                "seed {seed}: only {plain} novelty alarms to habituate to"
            );
            assert!(
                3 * habituated <= 2 * plain,
                "seed {seed}: habituation kept {habituated} of {plain} alarms"
            );
            // In a calm series, where novelty is rare, a never-seen level still alarms.
            let mut calm: Vec<(i64, f64)> = (0..6_000)
                .map(|i| (i as i64 * FIVE_MIN, 10.0 + rng.normal()))
                .collect();
            calm[5_000].1 = 30.0;
            let no_quiet = |habituation| DetectorParams {
                suppress: 0,
                ..novelty_only(habituation)
            };
            let full = run(no_quiet(0.0), &calm)[5_000];
            let score = run(no_quiet(20.0), &calm)[5_000];
            assert!(full >= 1.0, "seed {seed}: the new level scored {full}");
            assert!(
                score >= DetectorParams::default().alarm,
                "seed {seed}: habituated {score} against {full}"
            );
        }
    }

    #[test]
    fn the_trimmed_mean_residual_equals_a_batch_trimmed_mean_of_the_window() {
        // Residuals with many exact ties (and both zeros), so removal must find the right copy.
        for (smooth, trim) in [(20, 2), (7, 3), (1, 0), (5, 0), (10, 9)] {
            let mut d = Detector::new(DetectorParams {
                smooth,
                trim,
                ..DetectorParams::default()
            });
            let mut rng = SplitMix64(smooth as u64 * 31 + trim as u64);
            let mut all = Vec::new();
            for _ in 0..20_000 {
                let r = match rng.below(4) {
                    0 => 0.0,
                    1 => -0.0,
                    2 => rng.below(5) as f64 - 2.0,
                    _ => rng.normal() * 10f64.powi(rng.below(7) as i32 - 3),
                };
                all.push(r);
                let got = d.trimmed_mean_residual(r);
                let mut window: Vec<f64> = all[all.len().saturating_sub(smooth)..].to_vec();
                window.sort_by(f64::total_cmp);
                let k = trim.min((window.len() - 1) / 2);
                let kept = &window[k..window.len() - k];
                let want = kept.iter().sum::<f64>() / kept.len() as f64;
                assert!(
                    got == want || (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "smooth {smooth} trim {trim} after {}: {got} against {want}",
                    all.len()
                );
            }
            assert_eq!(d.sorted.len(), smooth);
        }
    }

    #[test]
    fn packed_contexts_are_distinct_exactly_when_the_contexts_are() {
        // Every slot value a context can hold: the markers where they occur, bins near the
        // range and at the clamp edges.
        let bins: Vec<i64> = (-60..100)
            .chain([-BIN_LIMIT, -BIN_LIMIT + 1, BIN_LIMIT - 1, BIN_LIMIT])
            .collect();
        let mut contexts = HashSet::new();
        let mut keys = HashSet::new();
        for &c in &bins {
            for hour in 0..24 {
                contexts.insert((SEASONAL, hour, c));
                keys.insert(context_key(SEASONAL, hour, c));
            }
            for &b in bins.iter().chain([&NONE]) {
                contexts.insert((NONE, b, c));
                keys.insert(context_key(NONE, b, c));
                for &a in bins.iter().step_by(7).chain([&NONE]) {
                    contexts.insert((a, b, c));
                    keys.insert(context_key(a, b, c));
                }
            }
        }
        assert_eq!(keys.len(), contexts.len());
        // Beyond the clamp, a bin shares the edge's key.
        assert_eq!(
            context_key(NONE, NONE, i64::MAX),
            context_key(NONE, NONE, BIN_LIMIT)
        );
        assert_eq!(
            context_key(NONE, NONE, -BIN_LIMIT - 5),
            context_key(NONE, NONE, -BIN_LIMIT)
        );
    }

    #[test]
    fn a_value_far_beyond_the_range_is_novel_and_its_bin_is_never_a_marker() {
        // Far enough out that the unclamped bin would saturate to i64::MIN (the marker of an
        // empty slot) or i64::MAX.
        for x in [-1e300, 1e300] {
            let mut d = Detector::new(novelty_only(0.0));
            for (ts, x) in series(2_000, false, 3) {
                d.update(ts, x);
            }
            let first = d.update(2_000 * FIVE_MIN, x);
            assert!(first >= 0.9, "far value {x} scores {first}");
            assert!(d.prev_bins.iter().all(|&b| b.abs() <= BIN_LIMIT));
        }
    }

    #[test]
    fn parameters_from_the_environment_are_checked() {
        let var = |n: &str, v: &str| (n.to_string(), v.to_string());
        let p = DetectorParams::from_vars([
            var("SG_DET_ALPHA", "0.02"),
            var("SG_DET_SEASON_DIV", " 6 "),
            var("PATH", "/bin"),
        ])
        .unwrap();
        assert_eq!((p.alpha, p.season_div), (0.02, 6));
        // Every listed name is read (and the list is what an unknown name's message shows).
        for name in DetectorParams::env_names() {
            let got = DetectorParams::from_vars([var(&format!("SG_DET_{name}"), "1")]);
            assert!(got.is_ok(), "SG_DET_{name}: {got:?}");
        }
        let bad = DetectorParams::from_vars([var("SG_DET_ALPHA", "0,01")]).unwrap_err();
        assert!(matches!(&bad, ParamError::Value { name, .. } if name == "SG_DET_ALPHA"));
        assert!(bad.to_string().contains("f64"), "{bad}");
        let typo = DetectorParams::from_vars([var("SG_DET_ALHPA", "0.01")]).unwrap_err();
        assert!(matches!(&typo, ParamError::Unknown(v) if v == "SG_DET_ALHPA"));
        assert!(typo.to_string().contains("HABITUATION_ALPHA"), "{typo}");
    }
}
