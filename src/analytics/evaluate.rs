//! Forecast evaluation: runs each forecaster one step ahead over a series, in order, and
//! measures MASE against the seasonal naive forecast and the share of actual values inside
//! the forecaster's 95% interval. `streamgauge forecast-eval` runs it over the weather,
//! energy, industrial and stock datasets.
//!
//! Intervals: each forecaster's interval half-width is `q_t * σ_t`, where `σ_t` is the
//! standard deviation the model derives from its own residual variance, and `q_t` starts at
//! 1.96 and is adapted online from the misses seen so far (adaptive conformal inference,
//! Gibbs & Candès 2021: `α_{t+1} = α_t + γ (0.05 - miss_t)`, `q = Φ⁻¹(1 - α/2)`), which keeps
//! long-run coverage at 95% when residuals are heavier-tailed than normal.

use super::forecast::{HoltWinters, LogReturns, RlsAr};
use super::rolling::Extent;
use super::trend::Trend;

/// The inverse of the standard normal CDF (Acklam's rational approximation, relative error
/// below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.024_25 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.024_25 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Adaptive multiplier for 95% intervals (adaptive conformal inference).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Calibrator {
    alpha: f64,
    gamma: f64,
}

impl Default for Calibrator {
    fn default() -> Self {
        Calibrator {
            alpha: 0.05,
            gamma: 0.005,
        }
    }
}

impl Calibrator {
    /// The current multiplier of σ.
    pub fn multiplier(&self) -> f64 {
        if self.alpha <= 0.0 {
            // Every interval so far missed too rarely to shrink: a wide but finite interval.
            6.0
        } else if self.alpha >= 1.0 {
            0.0
        } else {
            normal_quantile(1.0 - self.alpha / 2.0)
        }
    }

    /// Records whether the last interval missed.
    pub fn record(&mut self, missed: bool) {
        self.alpha += self.gamma * (0.05 - if missed { 1.0 } else { 0.0 });
    }
}

/// The forecasters evaluated.
pub const FORECASTERS: [&str; 3] = ["linear_trend", "rls_ar", "holt_winters"];

/// Accumulated one-step results of one forecaster.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    /// Sum of |error|.
    pub abs_err: f64,
    /// Sum of |seasonal naive error| over the same points.
    pub naive_abs_err: f64,
    /// Actual values inside the interval.
    pub covered: u64,
    /// Points scored.
    pub n: u64,
}

impl Score {
    /// Mean absolute scaled error (NaN when the naive error is zero).
    pub fn mase(&self) -> f64 {
        self.abs_err / self.naive_abs_err
    }

    /// Share of actuals inside the 95% interval.
    pub fn coverage(&self) -> f64 {
        self.covered as f64 / self.n as f64
    }
}

/// How a series is modelled.
#[derive(Debug, Clone, Copy)]
pub struct SeriesKind {
    /// Seasonal period in readings (1 = none).
    pub period: usize,
    /// Prices: the AR model runs on log returns.
    pub prices: bool,
}

/// Runs the three forecasters one step ahead over `values` (in time order); scoring starts
/// once every forecaster and the seasonal naive can forecast and after `2 * period + 50`
/// readings of warm-up. Returns one [`Score`] per entry of [`FORECASTERS`].
pub fn evaluate(values: &[f64], kind: SeriesKind) -> [Score; 3] {
    let m = kind.period.max(1);
    let mut trend = Trend::new(Extent::Count((2 * m).max(24)));
    let mut rls = if m > 1 {
        RlsAr::with_lags(&[1, 2, 3, m, m + 1], 0.999, 1e-3)
    } else {
        RlsAr::new(3, 0.999, 1e-3)
    };
    let mut returns = LogReturns::new(RlsAr::new(1, 0.999, 1e-3));
    let mut hw = if m > 1 {
        HoltWinters::new(0.3, 0.01, 0.9, m)
    } else {
        HoltWinters::new(0.9, 0.01, 0.0, 1)
    };
    let mut cal = [Calibrator::default(); 3];
    let mut scores = [Score::default(); 3];
    let warmup = 2 * m + 50;
    for (i, &y) in values.iter().enumerate() {
        let forecasts = [
            trend
                .fit()
                .forecast(i as i64 * 1000)
                .map(|f| (f.point, f.std)),
            if kind.prices {
                returns.forecast(1).map(|f| (f.point, f.std))
            } else {
                rls.forecast(1).map(|f| (f.point, f.std))
            },
            hw.forecast(1).map(|f| (f.point, f.std)),
        ];
        if i >= warmup && i >= m && forecasts.iter().all(Option::is_some) {
            let naive = (y - values[i - m]).abs();
            for (k, f) in forecasts.iter().enumerate() {
                let (point, std) = f.expect("all forecast");
                let half = cal[k].multiplier() * std;
                let missed = !(point - half <= y && y <= point + half);
                cal[k].record(missed);
                let s = &mut scores[k];
                s.abs_err += (y - point).abs();
                s.naive_abs_err += naive;
                s.covered += u64::from(!missed);
                s.n += 1;
            }
        } else {
            // Warm-up: calibrate on the misses without scoring.
            for (k, f) in forecasts.iter().enumerate() {
                if let Some((point, std)) = f {
                    let half = cal[k].multiplier() * std;
                    cal[k].record(!(point - half <= y && y <= point + half));
                }
            }
        }
        trend.push(i as i64 * 1000, y);
        rls.update(y);
        returns.update(y);
        hw.update(y);
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_matches_tables() {
        for (p, z) in [
            (0.975, 1.959_963_984_540_054),
            (0.5, 0.0),
            (0.001, -3.090_232_306_167_813),
            (0.999_999, 4.753_424_308_822_899),
        ] {
            assert!((normal_quantile(p) - z).abs() < 1e-8, "{p}");
        }
    }

    #[test]
    fn calibrator_widens_after_misses_and_narrows_after_hits() {
        let mut c = Calibrator::default();
        let q0 = c.multiplier();
        for _ in 0..20 {
            c.record(true);
        }
        assert!(c.multiplier() > q0);
        for _ in 0..400 {
            c.record(false);
        }
        assert!(c.multiplier() < q0);
    }
}
