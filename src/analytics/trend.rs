//! Trends over sliding windows: the least-squares slope of value on event time with its
//! standard error and t statistic (O(1) per reading), the linear-trend forecast with a 95%
//! prediction interval, and moving-average crossover signals.
//!
//! Sums are compensated and shifted (see `rolling`), rebuilt from the window at most once per
//! window length of evictions, so results stay within 1e-9 relative of a batch regression.

use std::collections::VecDeque;

use super::forecast::{t_quantile_975, Forecast};
use super::rolling::{neumaier, Extent, Rolling};

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Sums {
    kx: f64,
    ky: f64,
    s: [f64; 5],
    c: [f64; 5],
}

impl Sums {
    #[inline]
    fn add(&mut self, x: f64, y: f64, sign: f64) {
        let (dx, dy) = (x - self.kx, y - self.ky);
        for (i, v) in [dx, dy, dx * dx, dx * dy, dy * dy].into_iter().enumerate() {
            neumaier(&mut self.s[i], &mut self.c[i], sign * v);
        }
    }
    fn get(&self, i: usize) -> f64 {
        self.s[i] + self.c[i]
    }
}

/// Least-squares line of value on time (seconds) over a sliding window.
/// Memory per series: the window's readings (16 bytes each) and ten numbers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Trend {
    extent: Extent,
    buf: VecDeque<(i64, f64)>,
    sums: Sums,
    evicted: usize,
}

/// The centred sums of a regression: n, means and Sxx, Sxy, Syy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Points.
    pub n: usize,
    /// Mean time (seconds since the epoch).
    pub mean_x: f64,
    /// Mean value.
    pub mean_y: f64,
    /// Sum of squared time deviations.
    pub sxx: f64,
    /// Sum of cross deviations.
    pub sxy: f64,
    /// Sum of squared value deviations.
    pub syy: f64,
}

impl Fit {
    /// Slope in value units per second (None with fewer than two distinct times).
    pub fn slope(&self) -> Option<f64> {
        (self.n >= 2 && self.sxx > 0.0).then(|| self.sxy / self.sxx)
    }

    /// Residual variance `SSE / (n - 2)` (None with fewer than three points).
    pub fn residual_variance(&self) -> Option<f64> {
        let b = self.slope()?;
        (self.n >= 3).then(|| ((self.syy - b * self.sxy) / (self.n - 2) as f64).max(0.0))
    }

    /// Standard error of the slope.
    pub fn slope_stderr(&self) -> Option<f64> {
        Some((self.residual_variance()? / self.sxx).sqrt())
    }

    /// t statistic of the slope (infinite for a perfect, non-flat fit).
    pub fn t_stat(&self) -> Option<f64> {
        let se = self.slope_stderr()?;
        let b = self.slope()?;
        Some(if se > 0.0 {
            b / se
        } else if b == 0.0 {
            0.0
        } else {
            b.signum() * f64::INFINITY
        })
    }

    /// Forecast at time `ts_ms` with a 95% prediction interval.
    pub fn forecast(&self, ts_ms: i64) -> Option<Forecast> {
        let b = self.slope()?;
        let s2 = self.residual_variance()?;
        let x0 = ts_ms as f64 / 1000.0;
        let point = self.mean_y + b * (x0 - self.mean_x);
        let n = self.n as f64;
        let se = (s2 * (1.0 + 1.0 / n + (x0 - self.mean_x).powi(2) / self.sxx)).sqrt();
        Some(Forecast::with_std(
            point,
            se,
            t_quantile_975((self.n - 2) as f64),
        ))
    }
}

impl Trend {
    /// A trend over the given window.
    pub fn new(extent: Extent) -> Self {
        Trend {
            extent,
            buf: VecDeque::new(),
            sums: Sums::default(),
            evicted: 0,
        }
    }

    /// Adds a reading (in event-time order) and evicts what leaves the window.
    pub fn push(&mut self, ts: i64, y: f64) {
        let x = ts as f64 / 1000.0;
        if self.buf.is_empty() {
            self.sums = Sums {
                kx: x,
                ky: y,
                ..Sums::default()
            };
        }
        self.buf.push_back((ts, y));
        self.sums.add(x, y, 1.0);
        loop {
            let out = match (self.extent, self.buf.front()) {
                (Extent::Count(n), Some(_)) => self.buf.len() > n.max(1),
                (Extent::Time(w), Some(&(t, _))) => t <= ts - w,
                _ => false,
            };
            if !out {
                break;
            }
            let (t, v) = self.buf.pop_front().expect("non-empty");
            self.sums.add(t as f64 / 1000.0, v, -1.0);
            self.evicted += 1;
        }
        let n = self.buf.len();
        let (ox, oy) = (self.sums.get(0) / n as f64, self.sums.get(1) / n as f64);
        let f = self.fit();
        let far = ox * ox > 1e4 * (f.sxx / n as f64).max(f64::MIN_POSITIVE)
            || oy * oy > 1e4 * (f.syy / n as f64).max(f64::MIN_POSITIVE);
        if self.evicted >= n.max(16) || (far && n > 1) {
            self.sums = Sums {
                kx: self.sums.kx + ox,
                ky: self.sums.ky + oy,
                ..Sums::default()
            };
            for &(t, v) in &self.buf {
                self.sums.add(t as f64 / 1000.0, v, 1.0);
            }
            self.evicted = 0;
        }
    }

    /// The current fit.
    pub fn fit(&self) -> Fit {
        let n = self.buf.len();
        let nf = n as f64;
        let (sx, sy) = (self.sums.get(0), self.sums.get(1));
        Fit {
            n,
            mean_x: self.sums.kx + sx / nf,
            mean_y: self.sums.ky + sy / nf,
            sxx: (self.sums.get(2) - sx * sx / nf).max(0.0),
            sxy: self.sums.get(3) - sx * sy / nf,
            syy: (self.sums.get(4) - sy * sy / nf).max(0.0),
        }
    }

    /// The window's readings, oldest first.
    pub fn points(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.buf.iter().copied()
    }
}

/// A moving-average crossover signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cross {
    /// Event time of the reading that made it fire.
    pub ts: i64,
    /// True when the short average crossed above the long one, false when below.
    pub up: bool,
}

/// Short-over-long moving-average crossovers (count windows). O(short + long) memory.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Crossover {
    short: Rolling,
    long: Rolling,
    long_n: usize,
    side: i8,
}

impl Crossover {
    /// Crossovers of the `short`-reading mean over the `long`-reading mean.
    pub fn new(short: usize, long: usize) -> Self {
        Crossover {
            short: Rolling::new(Extent::Count(short), false),
            long: Rolling::new(Extent::Count(long), false),
            long_n: long,
            side: 0,
        }
    }

    /// Adds a reading; returns the signal when the short mean moves strictly to the other side
    /// of the long mean (means within 1e-12 relative count as equal and keep the previous
    /// side, so rounding never makes a signal chatter). Silent until the long window is
    /// full.
    pub fn push(&mut self, ts: i64, x: f64) -> Option<Cross> {
        self.short.push(ts, x);
        self.long.push(ts, x);
        if self.long.count() < self.long_n {
            return None;
        }
        let (s, l) = (self.short.mean(), self.long.mean());
        let d = s - l;
        let tie = 1e-12 * s.abs().max(l.abs()).max(f64::MIN_POSITIVE);
        let side = if d > tie {
            1
        } else if d < -tie {
            -1
        } else {
            return None;
        };
        let prev = std::mem::replace(&mut self.side, side);
        (prev != 0 && prev != side).then_some(Cross { ts, up: side > 0 })
    }

    /// Current short and long means.
    pub fn means(&self) -> (f64, f64) {
        (self.short.mean(), self.long.mean())
    }
}
