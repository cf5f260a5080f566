//! Outlier scores in [0, 1] per reading, each judged against what came before the reading
//! (never including it): rolling z-score, robust median/MAD score and forecast-residual
//! score. A score is `P(|Z| < |z|)` for the reading's standardised distance `z`, so 0.95
//! means "outside the central 95%" under the model. The `gauge` detector built for NAB lives
//! in [`crate::analytics::detector`].

use super::forecast::{HoltWinters, RlsAr};
use super::rolling::{Extent, Rolling};

/// Standard normal upper tail `P(Z > z)` (Abramowitz-Stegun 7.1.26, absolute error < 1.5e-7).
pub fn normal_tail(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = y * (-x * x).exp();
    if z >= 0.0 {
        0.5 * erfc
    } else {
        1.0 - 0.5 * erfc
    }
}

/// Maps a standardised distance to a score in [0, 1]: `P(|Z| < |z|)`.
pub fn z_to_score(z: f64) -> f64 {
    if z.is_nan() {
        return 0.0;
    }
    (1.0 - 2.0 * normal_tail(z.abs())).clamp(0.0, 1.0)
}

/// Rolling z-score against the previous `n` readings (population std).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RollingZ {
    window: Rolling,
    min: usize,
}

impl RollingZ {
    /// Against the previous `n` readings; silent (None) until `min` readings were seen.
    pub fn new(n: usize, min: usize) -> Self {
        RollingZ {
            window: Rolling::new(Extent::Count(n), false),
            min: min.max(2),
        }
    }

    /// The reading's z (None while warming up or when the window is constant), then adds it.
    pub fn z(&mut self, ts: i64, x: f64) -> Option<f64> {
        let z = (self.window.count() >= self.min && self.window.std() > 0.0)
            .then(|| (x - self.window.mean()) / self.window.std());
        self.window.push(ts, x);
        z
    }

    /// The reading's score in [0, 1] (0 while warming up), then adds it.
    pub fn score(&mut self, ts: i64, x: f64) -> f64 {
        self.z(ts, x).map_or(0.0, z_to_score)
    }

    /// The window of previous readings.
    pub fn window(&self) -> &Rolling {
        &self.window
    }
}

/// Robust score: `(x - median) / (1.4826 MAD)` over the previous `n` readings, exact.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RobustZ {
    window: Rolling,
    min: usize,
}

impl RobustZ {
    /// Against the previous `n` readings; silent until `min` were seen.
    pub fn new(n: usize, min: usize) -> Self {
        RobustZ {
            window: Rolling::new(Extent::Count(n), true),
            min: min.max(2),
        }
    }

    /// The reading's robust z (None while warming up or when MAD is 0), then adds it.
    pub fn z(&mut self, ts: i64, x: f64) -> Option<f64> {
        let z = if self.window.count() >= self.min {
            match (self.window.median(), self.window.mad()) {
                (Some(m), Some(mad)) if mad > 0.0 => Some((x - m) / (1.482_602_218_505_602 * mad)),
                _ => None,
            }
        } else {
            None
        };
        self.window.push(ts, x);
        z
    }

    /// Score in [0, 1].
    pub fn score(&mut self, ts: i64, x: f64) -> f64 {
        self.z(ts, x).map_or(0.0, z_to_score)
    }

    /// Like [`RobustZ::new`], with median and MAD from a [`QuantileSketch`] of `bits`
    /// mantissa bits (see [`Rolling::sketched`]): not exact, but as cheap for a million
    /// readings as for a hundred.
    ///
    /// [`QuantileSketch`]: crate::analytics::sketch::QuantileSketch
    pub fn sketched(n: usize, min: usize, bits: u32) -> Self {
        RobustZ {
            window: Rolling::sketched(Extent::Count(n), bits),
            min: min.max(2),
        }
    }
}

/// A one-step forecaster that residual scores can use.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Model {
    /// Holt-Winters.
    HoltWinters(HoltWinters),
    /// RLS AR(p).
    Rls(RlsAr),
}

/// Forecast-residual score: the reading's distance from the model's one-step forecast in
/// units of the forecast's standard deviation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ResidualZ {
    /// The model.
    pub model: Model,
}

impl ResidualZ {
    /// The reading's residual z (None before the model forecasts), then updates the model.
    pub fn z(&mut self, x: f64) -> Option<f64> {
        let f = match &self.model {
            Model::HoltWinters(m) => m.forecast(1),
            Model::Rls(m) => m.forecast(1),
        };
        match &mut self.model {
            Model::HoltWinters(m) => {
                m.update(x);
            }
            Model::Rls(m) => {
                m.update(x);
            }
        }
        f.filter(|f| f.std > 0.0).map(|f| (x - f.point) / f.std)
    }

    /// Score in [0, 1].
    pub fn score(&mut self, x: f64) -> f64 {
        self.z(x).map_or(0.0, z_to_score)
    }
}
