//! The `gauge` anomaly detector: one streaming score in [0, 1] per reading, built for the
//! Numenta Anomaly Benchmark and usable on any series.
//!
//! Per reading it combines two surprises, each O(1) per update:
//! - **context novelty** (after CAD OSE): the value is quantised into bins over the range seen
//!   so far; a transition between recent bins never seen before is novel;
//! - **prediction surprise**: the distance of the value from an exponentially weighted mean in
//!   units of the exponentially weighted standard deviation, turned into an anomaly
//!   likelihood (after HTM): the short-run average surprise compared with its long-run
//!   distribution. Once the value's slot of the week (by default its hour of the week) has
//!   enough history, the surprise is the smaller of that global one and the distance from the
//!   slot's own exponentially weighted mean and deviation: a value usual for its time of the
//!   week is not surprising, however far it is from the overall mean.
//!
//! After a reading scores high, the detector stays quiet for a while (`suppress` readings):
//! one alarm per event is what an operator wants and what NAB rewards.
//! State per series: a few dozen numbers, three numbers per seasonal slot (168 slots by
//! default: about 4 KiB), and the set of seen contexts (bounded by `max_contexts`).

use std::collections::HashSet;

use super::outlier::normal_tail;
use super::rolling::Ewma;

/// Detector parameters: one set for every series (NAB's rules allow no per-file tuning).
#[derive(Debug, Clone)]
pub struct DetectorParams {
    /// Readings before any score is produced (the detector learns; output 0).
    pub warmup: u64,
    /// Smoothing of the long-run mean and variance of values.
    pub alpha: f64,
    /// Readings in the short average of surprises.
    pub short: usize,
    /// Smoothing of the long-run distribution of surprises.
    pub alpha_s: f64,
    /// Number of quantisation bins across the range seen so far.
    pub bins: f64,
    /// Readings after an alarm during which scores are damped.
    pub suppress: u64,
    /// Score at and above which a reading counts as an alarm (starts suppression).
    pub alarm: f64,
    /// Weight of novelty in the combined score.
    pub w_novel: f64,
    /// Cap on the number of remembered contexts.
    pub max_contexts: usize,
    /// Weight of a value never seen at this hour of the day.
    pub w_season: f64,
    /// Readings at an hour of the day before seasonal novelty counts.
    pub season_min: u64,
    /// Seasonal contexts use bins this many times coarser.
    pub season_div: i64,
    /// Width of a seasonal slot of the prediction surprise, in minutes (0 turns slots off).
    pub slot_minutes: u32,
    /// Number of slots in a seasonal cycle (with `slot_minutes` = 60, 168 is one week).
    pub slots: u32,
    /// Smoothing of each slot's mean and variance.
    pub slot_alpha: f64,
    /// Readings a slot needs before its surprise counts.
    pub slot_min: u32,
}

impl Default for DetectorParams {
    fn default() -> Self {
        DetectorParams {
            warmup: 150,
            alpha: 0.01,
            short: 5,
            alpha_s: 0.002,
            bins: 40.0,
            suppress: 100,
            alarm: 0.9,
            w_novel: -1.0,
            max_contexts: 100_000,
            w_season: 0.95,
            season_min: 120,
            season_div: 8,
            slot_minutes: 60,
            slots: 168,
            slot_alpha: 0.02,
            slot_min: 10,
        }
    }
}

impl DetectorParams {
    /// Defaults, each overridable by an environment variable `SG_DET_<NAME>` (for tuning runs).
    pub fn from_env() -> Self {
        fn set<T: std::str::FromStr>(field: &mut T, name: &str) {
            if let Some(v) = std::env::var(format!("SG_DET_{name}"))
                .ok()
                .and_then(|v| v.parse().ok())
            {
                *field = v;
            }
        }
        let mut p = Self::default();
        set(&mut p.warmup, "WARMUP");
        set(&mut p.alpha, "ALPHA");
        set(&mut p.short, "SHORT");
        set(&mut p.alpha_s, "ALPHA_S");
        set(&mut p.bins, "BINS");
        set(&mut p.suppress, "SUPPRESS");
        set(&mut p.alarm, "ALARM");
        set(&mut p.w_season, "W_SEASON");
        set(&mut p.season_min, "SEASON_MIN");
        set(&mut p.season_div, "SEASON_DIV");
        set(&mut p.w_novel, "W_NOVEL");
        set(&mut p.slot_minutes, "SLOT_MINUTES");
        set(&mut p.slots, "SLOTS");
        set(&mut p.slot_alpha, "SLOT_ALPHA");
        set(&mut p.slot_min, "SLOT_MIN");
        p
    }
}

/// Per-series detector state.
#[derive(Debug, Clone)]
pub struct Detector {
    p: DetectorParams,
    n: u64,
    values: Ewma,
    min: f64,
    max: f64,
    recent: std::collections::VecDeque<f64>,
    recent_sum: f64,
    s_mean: f64,
    s_var: f64,
    prev_bins: [i64; 2],
    contexts: HashSet<(i64, i64, i64)>,
    quiet: u64,
    hour_seen: [u64; 24],
    /// Per seasonal slot: readings seen, and the exponentially weighted mean and variance.
    slot_stats: Vec<Slot>,
}

/// One seasonal slot of the prediction surprise.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    n: u32,
    mean: f64,
    var: f64,
}

impl Slot {
    /// The surprise of `x` in this slot (`None` until it has `min` readings and a spread),
    /// then learns `x`.
    fn surprise_then_learn(&mut self, x: f64, alpha: f64, min: u32) -> Option<f64> {
        let sd = self.var.sqrt();
        let s = (self.n >= min && sd > 0.0).then(|| ((x - self.mean).abs() / sd).min(10.0));
        if self.n == 0 {
            self.mean = x;
        } else {
            let d = x - self.mean;
            self.mean += alpha * d;
            self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        }
        self.n = self.n.saturating_add(1);
        s
    }
}

impl Detector {
    /// A fresh detector.
    pub fn new(p: DetectorParams) -> Self {
        Detector {
            n: 0,
            values: Ewma::new(p.alpha),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            recent: std::collections::VecDeque::with_capacity(p.short + 1),
            recent_sum: 0.0,
            s_mean: 0.0,
            s_var: 0.0,
            prev_bins: [i64::MIN; 2],
            contexts: HashSet::new(),
            quiet: 0,
            hour_seen: [0; 24],
            slot_stats: if p.slot_minutes > 0 {
                vec![Slot::default(); p.slots.max(1) as usize]
            } else {
                Vec::new()
            },
            p,
        }
    }

    /// Feeds the next value of the series; returns its anomaly score in [0, 1].
    pub fn update(&mut self, ts_ms: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        self.n += 1;
        // Context novelty over the range seen before this value.
        let range = self.max - self.min;
        let bin = if range > 0.0 {
            ((x - self.min) / range * self.p.bins).floor() as i64
        } else {
            0
        };
        let grow = self.contexts.len() < self.p.max_contexts;
        let mut novel = 0.0;
        let hour = ts_ms.div_euclid(3_600_000).rem_euclid(24) as usize;
        self.hour_seen[hour] += 1;
        if self.hour_seen[hour] > self.p.season_min && self.p.w_season > 0.0 {
            let c = (i64::MIN + 1, hour as i64, bin / self.p.season_div);
            if !self.contexts.contains(&c) {
                novel += self.p.w_season;
            }
        }
        if grow {
            self.contexts
                .insert((i64::MIN + 1, hour as i64, bin / self.p.season_div));
        }
        for (k, ctx) in [
            (0.5, (i64::MIN, i64::MIN, bin)),
            (0.3, (i64::MIN, self.prev_bins[1], bin)),
            (0.2, (self.prev_bins[0], self.prev_bins[1], bin)),
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

        // Prediction surprise against the long-run mean and deviation.
        let sd = self.values.std();
        let mut surprise = if self.values.n > 0 && sd > 0.0 {
            ((x - self.values.mean).abs() / sd).min(10.0)
        } else {
            0.0
        };
        self.values.update(x);
        if !self.slot_stats.is_empty() {
            let width = i64::from(self.p.slot_minutes) * 60_000;
            let slot = ts_ms
                .div_euclid(width)
                .rem_euclid(self.slot_stats.len() as i64) as usize;
            if let Some(s) =
                self.slot_stats[slot].surprise_then_learn(x, self.p.slot_alpha, self.p.slot_min)
            {
                surprise = surprise.min(s);
            }
        }
        self.recent.push_back(surprise);
        self.recent_sum += surprise;
        if self.recent.len() > self.p.short {
            self.recent_sum -= self.recent.pop_front().unwrap_or(0.0);
        }
        let short = self.recent_sum / self.recent.len() as f64;
        let s_sd = self.s_var.sqrt();
        let likelihood = if s_sd > 0.0 {
            1.0 - normal_tail((short - self.s_mean) / s_sd)
        } else {
            0.0
        };
        let ds = surprise - self.s_mean;
        self.s_mean += self.p.alpha_s * ds;
        self.s_var = (1.0 - self.p.alpha_s) * (self.s_var + self.p.alpha_s * ds * ds);

        if self.n <= self.p.warmup {
            return 0.0;
        }
        let loglik = ((1.000_000_000_1 - likelihood).ln() / (1e-5f64).ln()).clamp(0.0, 1.0);
        let mut score = if self.p.w_novel >= 0.0 {
            (1.0 - self.p.w_novel) * loglik + self.p.w_novel * novel
        } else {
            loglik.max(novel)
        }
        .clamp(0.0, 1.0);
        if self.quiet > 0 {
            self.quiet -= 1;
            score *= 0.5;
        } else if score >= self.p.alarm {
            self.quiet = self.p.suppress;
        }
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MIN: i64 = 300_000;
    const WEEK: i64 = 7 * 24 * 3_600_000;

    /// A noisy level of 10 with a scheduled burst to 60 for one hour each week (Monday
    /// 10:00-11:00 UTC, after the warm-up), every five minutes for `weeks` weeks from a Sunday.
    fn weekly_job(weeks: i64) -> Vec<(i64, f64)> {
        let start = 3 * 24 * 3_600_000; // Sunday 1970-01-04 00:00 UTC
        let mut state = 0x2545_f491_u64;
        (0..weeks * WEEK / FIVE_MIN)
            .map(|i| {
                let ts = start + i * FIVE_MIN;
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state % 1000) as f64 / 1000.0 - 0.5;
                let in_week = (ts - start) % WEEK;
                let job = (34 * 3_600_000..35 * 3_600_000).contains(&in_week);
                (ts, if job { 60.0 } else { 10.0 } + noise)
            })
            .collect()
    }

    fn run(p: &DetectorParams, input: &[(i64, f64)]) -> Vec<f64> {
        let mut d = Detector::new(p.clone());
        input.iter().map(|&(ts, x)| d.update(ts, x)).collect()
    }

    /// Highest score over the scheduled hour of week `w`.
    fn job_hour_max(scores: &[f64], w: usize) -> f64 {
        let per_week = (WEEK / FIVE_MIN) as usize;
        let (from, to) = (w * per_week + 408, w * per_week + 420);
        scores[from..to].iter().cloned().fold(0.0, f64::max)
    }

    #[test]
    fn scores_are_in_range_and_non_finite_values_score_zero() {
        let mut d = Detector::new(DetectorParams::default());
        for (i, &(ts, x)) in weekly_job(2).iter().enumerate() {
            let x = if i % 997 == 0 { f64::NAN } else { x };
            let s = d.update(ts, x);
            assert!((0.0..=1.0).contains(&s), "score {s} at {i}");
            if x.is_nan() {
                assert_eq!(s, 0.0);
            }
        }
    }

    #[test]
    fn a_value_usual_for_its_slot_of_the_week_stops_alarming() {
        let input = weekly_job(5);
        let seasonal = run(&DetectorParams::default(), &input);
        let flat = run(
            &DetectorParams {
                slot_minutes: 0,
                ..DetectorParams::default()
            },
            &input,
        );
        let p = DetectorParams::default();
        // The first burst is news to both.
        assert!(job_hour_max(&seasonal, 0) >= p.alarm);
        // From the third week the slots know the burst; the global model never does.
        for w in 2..5 {
            assert!(job_hour_max(&seasonal, w) < p.alarm, "week {w}");
            assert!(job_hour_max(&flat, w) >= p.alarm, "week {w} without slots");
        }
    }

    #[test]
    fn a_spike_outside_every_slot_still_alarms() {
        let mut input = weekly_job(4);
        let at = input.len() - 500;
        input[at].1 = 500.0;
        let scores = run(&DetectorParams::default(), &input);
        assert!(scores[at] >= DetectorParams::default().alarm);
    }
}
