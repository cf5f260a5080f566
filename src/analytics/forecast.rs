//! Forecasters, each giving a point forecast and a 95% prediction interval whose width comes
//! from the model's own residual variance:
//! - [`crate::analytics::trend::Fit::forecast`]: linear trend over a window (Student t);
//! - [`RlsAr`]: recursive least squares with a forgetting factor on an AR(p) model with
//!   intercept, O(p²) per reading; [`LogReturns`] runs it on log returns for prices;
//! - [`HoltWinters`]: additive trend and additive seasonality (period in readings), O(1) per
//!   reading.

use smallvec::SmallVec;

/// A model's small per-reading vectors (regressors, gains), on the stack up to 8 terms.
type Small = SmallVec<[f64; 8]>;

/// A point forecast with its 95% prediction interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Point forecast.
    pub point: f64,
    /// Lower end of the 95% interval.
    pub lower: f64,
    /// Upper end of the 95% interval.
    pub upper: f64,
    /// Standard deviation of the forecast error.
    pub std: f64,
}

impl Forecast {
    /// `point ± q * std`.
    pub fn with_std(point: f64, std: f64, q: f64) -> Self {
        Forecast {
            point,
            lower: point - q * std,
            upper: point + q * std,
            std,
        }
    }

    /// True when `x` lies inside the interval.
    pub fn covers(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }
}

/// The 97.5% quantile of the standard normal.
pub const Z_975: f64 = 1.959_963_984_540_054;

/// The 97.5% quantile of Student's t with `dof` degrees of freedom (Cornish-Fisher expansion;
/// error below 1e-3 for dof >= 3, exact limit 1.96 as dof grows).
pub fn t_quantile_975(dof: f64) -> f64 {
    if dof <= 0.0 {
        return f64::INFINITY;
    }
    let z = Z_975;
    let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
    z + (z3 + z) / (4.0 * dof)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * dof * dof)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * dof.powi(3))
}

/// Recursive least squares on `y_t = c + a_1 y_{t-l_1} + ... + a_p y_{t-l_p} + e_t` (lags
/// `1..=p` by default, or any lag set, e.g. `[1, 2, 24, 25]` for an hourly seasonal model) with
/// forgetting factor `lambda` (1 = no forgetting) and prior `P_0 = I / delta`.
///
/// At every step the coefficients equal the minimiser of
/// `sum_i lambda^(t-i) e_i^2 + lambda^t delta |theta|^2` (the batch oracle of the tests).
/// Memory per series: `(p+1)^2 + 2(p+1)` numbers plus the last `max lag` values.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RlsAr {
    p: usize,
    lag_set: Vec<usize>,
    max_lag: usize,
    lambda: f64,
    theta: Vec<f64>,
    pm: Vec<f64>,
    hist: std::collections::VecDeque<f64>,
    err_num: f64,
    err_den: f64,
    n: u64,
}

impl RlsAr {
    /// An AR(`p`) model (lags 1..=p) with forgetting `lambda` and prior strength `delta`.
    pub fn new(p: usize, lambda: f64, delta: f64) -> Self {
        Self::with_lags(&(1..=p).collect::<Vec<_>>(), lambda, delta)
    }

    /// A model on the given lags (each >= 1).
    pub fn with_lags(lags: &[usize], lambda: f64, delta: f64) -> Self {
        let lag_set: Vec<usize> = lags.iter().map(|&l| l.max(1)).collect();
        let p = lag_set.len();
        let d = p + 1;
        let mut pm = vec![0.0; d * d];
        for i in 0..d {
            pm[i * d + i] = 1.0 / delta;
        }
        let max_lag = lag_set.iter().copied().max().unwrap_or(0);
        RlsAr {
            p,
            lag_set,
            max_lag,
            lambda,
            theta: vec![0.0; d],
            pm,
            hist: std::collections::VecDeque::with_capacity(max_lag + 1),
            err_num: 0.0,
            err_den: 0.0,
            n: 0,
        }
    }

    /// `[1, y_{t-l} for each lag l]` once `max lag` values have been seen (on the stack for
    /// up to 7 lags: this runs per reading).
    fn regressors(&self) -> Option<Small> {
        (self.hist.len() == self.max_lag).then(|| {
            let mut phi = Small::new();
            phi.push(1.0);
            let n = self.hist.len();
            phi.extend(self.lag_set.iter().map(|&l| self.hist[n - l]));
            phi
        })
    }

    /// Adds the next value; returns the one-step forecast error it revealed, if any.
    pub fn update(&mut self, y: f64) -> Option<f64> {
        let out = self.regressors().map(|phi| {
            let d = self.p + 1;
            let pphi: Small = (0..d)
                .map(|i| (0..d).map(|j| self.pm[i * d + j] * phi[j]).sum())
                .collect();
            let denom = self.lambda + phi.iter().zip(&pphi).map(|(a, b)| a * b).sum::<f64>();
            let e = y - self.theta.iter().zip(&phi).map(|(a, b)| a * b).sum::<f64>();
            for (t, k) in self.theta.iter_mut().zip(&pphi) {
                *t += k / denom * e;
            }
            for i in 0..d {
                for j in 0..d {
                    self.pm[i * d + j] =
                        (self.pm[i * d + j] - pphi[i] * pphi[j] / denom) / self.lambda;
                }
            }
            for i in 0..d {
                for j in 0..i {
                    let s = 0.5 * (self.pm[i * d + j] + self.pm[j * d + i]);
                    self.pm[i * d + j] = s;
                    self.pm[j * d + i] = s;
                }
            }
            self.err_num = self.lambda * self.err_num + e * e;
            self.err_den = self.lambda * self.err_den + 1.0;
            self.n += 1;
            e
        });
        if self.max_lag > 0 {
            if self.hist.len() == self.max_lag {
                self.hist.pop_front();
            }
            self.hist.push_back(y);
        }
        out
    }

    /// Coefficients `[c, a_1, ..., a_p]`.
    pub fn coefficients(&self) -> &[f64] {
        &self.theta
    }

    /// Weighted mean squared one-step error.
    pub fn residual_variance(&self) -> f64 {
        if self.err_den > 0.0 {
            self.err_num / self.err_den
        } else {
            f64::NAN
        }
    }

    /// The forecast path: calls `f(point, psi)` for steps 1..=h with the point forecast and
    /// the MA(∞) weight `psi_{step-1}` of the fitted AR. False (and no call) until `p`
    /// values and a few errors have been seen, or for `h == 0`. Without allocating for
    /// short paths and few lags (it runs per reading).
    pub fn path_each(&self, h: usize, mut f: impl FnMut(f64, f64)) -> bool {
        if self.hist.len() < self.max_lag || self.n < (self.p as u64 + 2) || h == 0 {
            return false;
        }
        let mut hist: SmallVec<[f64; 24]> = self.hist.iter().copied().collect();
        let mut psi: SmallVec<[f64; 16]> = SmallVec::new();
        psi.push(1.0);
        for step in 0..h {
            let mut y = self.theta[0];
            for (i, &l) in self.lag_set.iter().enumerate() {
                y += self.theta[i + 1] * hist[hist.len() - l];
            }
            hist.push(y);
            f(y, psi[step]);
            if step + 1 < h {
                let j = step + 1;
                let mut v = 0.0;
                for (i, &l) in self.lag_set.iter().enumerate() {
                    if l <= j {
                        v += self.theta[i + 1] * psi[j - l];
                    }
                }
                psi.push(v);
            }
        }
        true
    }

    /// Forecast `h >= 1` steps ahead with its interval: variance `σ² Σ_{j<h} psi_j²`.
    pub fn forecast(&self, h: usize) -> Option<Forecast> {
        let (mut point, mut sum_sq) = (0.0, 0.0);
        self.path_each(h, |y, w| {
            point = y;
            sum_sq += w * w;
        })
        .then(|| {
            let var = self.residual_variance() * sum_sq;
            Forecast::with_std(point, var.sqrt(), Z_975)
        })
    }
}

/// Prices forecast through an [`RlsAr`] on log returns: the interval is the exponential of
/// the cumulative return's interval, so it is asymmetric and always positive.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LogReturns {
    /// The model of returns.
    pub model: RlsAr,
    last: Option<f64>,
}

impl LogReturns {
    /// Wraps a model of returns.
    pub fn new(model: RlsAr) -> Self {
        LogReturns { model, last: None }
    }

    /// Adds a price (non-positive prices are ignored and return None).
    pub fn update(&mut self, price: f64) -> Option<f64> {
        if price <= 0.0 || !price.is_finite() {
            return None;
        }
        let r = self.last.map(|p| (price / p).ln());
        self.last = Some(price);
        r.and_then(|r| self.model.update(r))
    }

    /// Price forecast `h` steps ahead.
    pub fn forecast(&self, h: usize) -> Option<Forecast> {
        let last = self.last?;
        // Cumulative return over h steps: the sum of the return forecasts; its error is
        // sum_m e_m * (psi_0 + ... + psi_{h-m}), so var = σ² Σ_i (Σ_{j<=i} psi_j)².
        let (mut sum, mut cum, mut acc) = (0.0, 0.0, 0.0);
        if !self.model.path_each(h, |y, w| {
            sum += y;
            cum += w;
            acc += cum * cum;
        }) {
            return None;
        }
        let var = self.model.residual_variance() * acc;
        let sd = var.sqrt();
        Some(Forecast {
            point: last * sum.exp(),
            lower: last * (sum - Z_975 * sd).exp(),
            upper: last * (sum + Z_975 * sd).exp(),
            std: last * sd,
        })
    }
}

/// Holt-Winters with additive trend and additive seasonality of `period` readings.
///
/// Starts after one full period (level = its mean, trend 0, seasonal terms = deviations from
/// it). Residual variance: exponentially weighted mean of squared one-step errors (weight
/// `1/min(n, 1000)`). Interval for horizon h: `σ² (1 + Σ_{j<h} c_j²)`,
/// `c_j = α (1 + j β) + γ (1 - α) [j mod period = 0]`. Memory: `period + 6` numbers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HoltWinters {
    alpha: f64,
    beta: f64,
    gamma: f64,
    period: usize,
    level: f64,
    trend: f64,
    season: Vec<f64>,
    t: usize,
    init: Vec<f64>,
    err: f64,
    errs: u64,
}

impl HoltWinters {
    /// A model with smoothing `alpha` (level), `beta` (trend), `gamma` (season).
    pub fn new(alpha: f64, beta: f64, gamma: f64, period: usize) -> Self {
        let period = period.max(1);
        HoltWinters {
            alpha,
            beta,
            gamma,
            period,
            level: 0.0,
            trend: 0.0,
            season: vec![0.0; period],
            t: 0,
            init: Vec::with_capacity(period),
            err: 0.0,
            errs: 0,
        }
    }

    /// Adds the next value; returns the one-step error once the model has started.
    pub fn update(&mut self, y: f64) -> Option<f64> {
        if self.init.len() < self.period {
            self.init.push(y);
            if self.init.len() == self.period {
                self.level = self.init.iter().sum::<f64>() / self.period as f64;
                for (s, v) in self.season.iter_mut().zip(&self.init) {
                    *s = v - self.level;
                }
                self.t = self.period;
            }
            return None;
        }
        let k = self.t % self.period;
        let s = self.season[k];
        let e = y - (self.level + self.trend + s);
        let prev = self.level;
        self.level = self.alpha * (y - s) + (1.0 - self.alpha) * (self.level + self.trend);
        self.trend = self.beta * (self.level - prev) + (1.0 - self.beta) * self.trend;
        self.season[k] = self.gamma * (y - self.level) + (1.0 - self.gamma) * s;
        self.t += 1;
        self.errs += 1;
        let w = 1.0 / (self.errs.min(1000) as f64);
        self.err += w * (e * e - self.err);
        Some(e)
    }

    /// Forecast `h >= 1` steps ahead (None before one full period and two errors).
    pub fn forecast(&self, h: usize) -> Option<Forecast> {
        if self.errs < 2 || h == 0 {
            return None;
        }
        let point =
            self.level + h as f64 * self.trend + self.season[(self.t + h - 1) % self.period];
        let mut sum = 1.0;
        for j in 1..h {
            let mut c = self.alpha * (1.0 + j as f64 * self.beta);
            if j % self.period == 0 {
                c += self.gamma * (1.0 - self.alpha);
            }
            sum += c * c;
        }
        Some(Forecast::with_std(point, (self.err * sum).sqrt(), Z_975))
    }

    /// Level, trend and the seasonal term of the next reading.
    pub fn state(&self) -> (f64, f64, f64) {
        (self.level, self.trend, self.season[self.t % self.period])
    }
}
