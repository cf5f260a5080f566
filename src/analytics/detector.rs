//! The `gauge` anomaly detector: one streaming score in [0, 1] per reading, built for the
//! Numenta Anomaly Benchmark and usable on any series.
//!
//! Per reading it combines two surprises, each O(1) per update:
//! - **context novelty** (after CAD OSE): the value is quantised into bins over the range seen
//!   so far; a transition between recent bins never seen before is novel;
//! - **prediction surprise**: the distance of the value from an exponentially weighted mean in
//!   units of the exponentially weighted standard deviation, turned into an anomaly
//!   likelihood (after HTM): the short-run average surprise compared with its long-run
//!   distribution.
//!
//! After a reading scores high, the detector stays quiet for a while (`suppress` readings):
//! one alarm per event is what an operator wants and what NAB rewards.
//! State per series: a few dozen numbers plus the set of seen contexts (bounded by
//! `max_contexts`).

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
        let surprise = if self.values.n > 0 && sd > 0.0 {
            ((x - self.values.mean).abs() / sd).min(10.0)
        } else {
            0.0
        };
        self.values.update(x);
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
        };
        if self.quiet > 0 {
            self.quiet -= 1;
            score *= 0.5;
        } else if score >= self.p.alarm {
            self.quiet = self.p.suppress;
        }
        score.clamp(0.0, 1.0)
    }
}
