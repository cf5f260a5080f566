//! Peaks over threshold: a streaming estimate of how improbable a large value is, from
//! extreme value theory.
//!
//! Above a high threshold `t`, the excesses `y = x - t` of most distributions met in practice
//! approach a generalised Pareto distribution (GPD) with shape `xi` and scale `sigma`
//! (Pickands-Balkema-de Haan). So `P(X > t + y) = rate * (1 + xi y / sigma)^(-1/xi)`, where
//! `rate` is the share of values above `t`. Unlike a normal tail, this fits each series' own
//! tail: light (`xi < 0`, with an end point), exponential (`xi = 0`) or heavy (`xi > 0`), so a
//! spike that is routine for a spiky series gets a modest probability and the same spike in a
//! calm series a tiny one.
//!
//! [`PeaksOverThreshold`] sets `t` at a quantile of the first `init` values, then learns every
//! excess. The GPD is fitted by maximum likelihood in O(grid) per excess without storing the
//! excesses: for a fixed grid of `theta = xi / sigma`, the profile likelihood needs only
//! `S(theta) = sum ln(1 + theta y)` (then `xi = S / k` and `sigma = xi / theta`), and those sums
//! are kept incrementally, with exponential forgetting so the fit follows a changing tail.
//! Values at or below `t` cost a comparison and the update of one running share.
//!
//! A threshold set once from the first values goes stale when a series' spread shrinks for
//! good (a noisy sensor replaced, a load that went away): values stop passing it and the old,
//! wide tail keeps answering, so the `gauge` detector scores a spike of 30 new standard
//! deviations but 3 old ones below its alarm for tens of thousands of values, and does not see
//! one below the old threshold at all. So the model watches the recent share of values above
//! `t` (over about `drift_window` values); when it falls `drift` times below the share the
//! quantile promises, a new model learns from the values that follow and replaces the old one
//! once it has `relearn_excesses` excesses (until then the old one answers). A spread that
//! grows is left to the fit, which forgets old excesses: re-learning on a rise as well raised
//! more false alarms in a trial (144 against 76 over 5 series, in the 40,000 values after their
//! spread grew tenfold).
//!
//! State per model: the first `init` values until the threshold is set, then 40 pairs of
//! numbers (640 bytes); while re-learning, a second model.

/// Parameters of a [`PeaksOverThreshold`] model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TailParams {
    /// Values used to set the threshold (no probabilities before them).
    pub init: usize,
    /// Quantile of the first values at which the threshold is set.
    pub quantile: f64,
    /// Forgetting factor per excess of the tail fit (1 keeps every excess).
    pub forget: f64,
    /// Excesses needed before probabilities are given.
    pub min_excesses: f64,
    /// Re-learn when the recent share of values above the threshold falls below
    /// `(1 - quantile) / drift` (0 never re-learns).
    pub drift: f64,
    /// Memory, in values, of that recent share; also the least number of values between
    /// re-learnings.
    pub drift_window: f64,
    /// Excesses (forgetful count) the new model needs before it replaces the old one.
    pub relearn_excesses: f64,
}

impl Default for TailParams {
    fn default() -> Self {
        TailParams {
            init: 150,
            quantile: 0.95,
            forget: 0.999,
            min_excesses: 5.0,
            drift: 5.0,
            drift_window: 2_000.0,
            relearn_excesses: 300.0,
        }
    }
}

/// Grid of `theta` for the profile likelihood, relative to the mean of the first excesses
/// (log-spaced): heavy and exponential-like tails (positive, 1e-4 to 1e3 over that mean), then
/// light tails with an end point (negative, end points 2 to 1000 times that mean).
/// 40 points in all. Finer grids fit more exactly, cost proportionally more, and score about
/// 2 points lower on NAB (session 11: 68.8-69.3 standard against 71.05; the README's NAB
/// section).
const POSITIVE_THETAS: usize = 30;
/// Negative points of the grid (see [`POSITIVE_THETAS`]).
const NEGATIVE_THETAS: usize = 10;

/// A streaming generalised Pareto model of the values above a threshold.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PeaksOverThreshold {
    p: TailParams,
    /// The first values, until the threshold is set (then emptied).
    first: Vec<f64>,
    threshold: f64,
    /// Values seen since the threshold was set, including the first ones.
    n: f64,
    /// Excesses seen (the rate's numerator).
    excesses: f64,
    /// `(theta, S(theta))`; `S` is `-inf` once an excess passes a negative theta's end point.
    grid: Vec<(f64, f64)>,
    /// Forgetful count and sum of excesses.
    k: f64,
    sum: f64,
    /// Fitted `(xi, sigma)`.
    fit: Option<(f64, f64)>,
    /// Exponentially weighted share of recent values above the threshold.
    recent_share: f64,
    /// Its smoothing, `1 / drift_window`.
    share_alpha: f64,
    /// The model learning a new threshold, while the recent share is too low.
    successor: Option<Box<PeaksOverThreshold>>,
    /// Times this model was replaced by a re-learned one.
    relearned: u32,
}

impl PeaksOverThreshold {
    /// A model that has seen nothing.
    pub fn new(p: TailParams) -> Self {
        let share_alpha = 1.0 / p.drift_window.max(1.0);
        PeaksOverThreshold {
            first: Vec::with_capacity(p.init),
            p,
            threshold: f64::NAN,
            n: 0.0,
            excesses: 0.0,
            grid: Vec::new(),
            k: 0.0,
            sum: 0.0,
            fit: None,
            recent_share: 0.0,
            share_alpha,
            successor: None,
            relearned: 0,
        }
    }

    /// The threshold, once set.
    pub fn threshold(&self) -> Option<f64> {
        (!self.threshold.is_nan()).then_some(self.threshold)
    }

    /// The fitted `(xi, sigma)`, once there are enough excesses.
    pub fn fit(&self) -> Option<(f64, f64)> {
        self.fit
    }

    /// How many times the model re-learned its threshold because values stopped passing it.
    pub fn relearned(&self) -> u32 {
        self.relearned
    }

    /// The probability of a value above `x` under the model so far (1 when `x` is at or below
    /// the threshold or the model is still learning), then learns `x`. Non-finite values are
    /// ignored (probability 1).
    pub fn surprise_then_learn(&mut self, x: f64) -> f64 {
        if !x.is_finite() {
            return 1.0;
        }
        if self.threshold.is_nan() {
            self.first.push(x);
            if self.first.len() >= self.p.init.max(1) {
                self.set_threshold();
            }
            return 1.0;
        }
        self.n += 1.0;
        let ready = self.watch_drift(x);
        let p = if x <= self.threshold {
            1.0
        } else {
            let y = x - self.threshold;
            let p = self.probability_of_excess(y);
            self.learn(y);
            p
        };
        if ready {
            if let Some(successor) = self.successor.take() {
                let relearned = self.relearned + 1;
                *self = *successor;
                self.relearned = relearned;
            }
        }
        p
    }

    /// Follows the recent share of values above the threshold, starts a successor when it is
    /// too low and feeds it; true when the successor is ready to take over.
    fn watch_drift(&mut self, x: f64) -> bool {
        if self.p.drift <= 0.0 {
            return false;
        }
        let above = if x > self.threshold { 1.0 } else { 0.0 };
        self.recent_share += self.share_alpha * (above - self.recent_share);
        if let Some(successor) = &mut self.successor {
            successor.surprise_then_learn(x);
            return successor.fit.is_some() && successor.k >= self.p.relearn_excesses;
        }
        // `n` counts the first values too: those after them are `n - init`.
        let since_threshold = self.n - self.p.init.max(1) as f64;
        if since_threshold >= self.p.drift_window
            && self.recent_share < (1.0 - self.p.quantile) / self.p.drift
        {
            self.successor = Some(Box::new(PeaksOverThreshold::new(self.p.clone())));
        }
        false
    }

    /// `P(X > threshold + y)` under the current fit (1 without one).
    fn probability_of_excess(&self, y: f64) -> f64 {
        let Some((xi, sigma)) = self.fit else {
            return 1.0;
        };
        let rate = self.excesses / self.n;
        let tail = if xi == 0.0 {
            (-y / sigma).exp()
        } else {
            let base = 1.0 + xi * y / sigma;
            if base <= 0.0 {
                0.0
            } else {
                base.powf(-1.0 / xi)
            }
        };
        (rate * tail).min(1.0)
    }

    fn set_threshold(&mut self) {
        let first = std::mem::take(&mut self.first);
        let mut sorted = first.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        let i = ((sorted.len() as f64 * self.p.quantile) as usize).min(sorted.len() - 1);
        self.threshold = sorted[i];
        self.n = first.len() as f64;
        self.recent_share = 1.0 - self.p.quantile;
        let ys: Vec<f64> = first
            .iter()
            .filter(|&&x| x > self.threshold)
            .map(|&x| x - self.threshold)
            .collect();
        if !ys.is_empty() {
            self.make_grid(ys.iter().sum::<f64>() / ys.len() as f64);
        }
        for y in ys {
            self.learn(y);
        }
    }

    /// The grid of `theta`, spread around the scale of the first excesses.
    fn make_grid(&mut self, scale: f64) {
        let scale = scale.max(f64::MIN_POSITIVE);
        let (pos, neg) = (POSITIVE_THETAS, NEGATIVE_THETAS);
        self.grid = (0..pos)
            .map(|i| {
                let e = -4.0 + 7.0 * i as f64 / (pos - 1) as f64;
                (10f64.powf(e) / scale, 0.0)
            })
            .chain((0..neg).map(|i| {
                let e = -3.0 + 2.7 * i as f64 / (neg - 1) as f64;
                (-(10f64.powf(e)) / scale, 0.0)
            }))
            .collect();
    }

    fn learn(&mut self, y: f64) {
        if self.grid.is_empty() {
            self.make_grid(y);
        }
        let f = self.p.forget;
        self.excesses += 1.0;
        self.k = f * self.k + 1.0;
        self.sum = f * self.sum + y;
        for (theta, s) in &mut self.grid {
            let a = *theta * y;
            *s = if a <= -1.0 || *s == f64::NEG_INFINITY {
                f64::NEG_INFINITY
            } else {
                f * *s + a.ln_1p()
            };
        }
        if self.k >= self.p.min_excesses {
            self.fit = Some(self.best_fit());
        }
    }

    /// The maximum of the profile likelihood over the grid, against the exponential tail.
    fn best_fit(&self) -> (f64, f64) {
        profile_best(self.k, self.sum / self.k, self.grid.iter().copied())
    }
}

/// The best `(xi, sigma)` over grid points `(theta, S(theta))` for `k` excesses of mean
/// `mean`, against the exponential tail of that mean. A point whose `S` is `-inf` (an excess
/// passed its end point) is skipped.
fn profile_best(k: f64, mean: f64, grid: impl Iterator<Item = (f64, f64)>) -> (f64, f64) {
    let mean = mean.max(f64::MIN_POSITIVE);
    let mut best = (0.0, mean);
    let mut best_l = -k * (mean.ln() + 1.0);
    for (theta, s) in grid {
        if s == f64::NEG_INFINITY {
            continue;
        }
        let xi = s / k;
        let sigma = xi / theta;
        if sigma > 0.0 && sigma.is_finite() {
            let l = -k * (sigma.ln() + xi + 1.0);
            if l > best_l {
                best_l = l;
                best = (xi, sigma);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::generate::SplitMix64;

    fn learn_all(p: TailParams, xs: impl Iterator<Item = f64>) -> PeaksOverThreshold {
        let mut m = PeaksOverThreshold::new(p);
        for x in xs {
            m.surprise_then_learn(x);
        }
        m
    }

    fn no_forgetting() -> TailParams {
        TailParams {
            forget: 1.0,
            ..TailParams::default()
        }
    }

    #[test]
    fn fits_the_shape_of_exponential_pareto_and_bounded_tails() {
        let mut u = SplitMix64(0x9e37_79b9_7f4a_7c15);
        // Exponential: xi = 0.
        let m = learn_all(
            no_forgetting(),
            (0..200_000).map(|_| -u.next_f64_nonzero().ln()),
        );
        let (xi, sigma) = m.fit().unwrap();
        assert!(xi.abs() < 0.05, "exponential xi {xi}");
        assert!((sigma - 1.0).abs() < 0.1, "exponential sigma {sigma}");
        // Pareto with tail index 2: excesses over a threshold are GPD with xi = 0.5.
        let m = learn_all(
            no_forgetting(),
            (0..200_000).map(|_| u.next_f64_nonzero().powf(-0.5)),
        );
        let (xi, _) = m.fit().unwrap();
        assert!((xi - 0.5).abs() < 0.08, "pareto xi {xi}");
        // Uniform: a light tail with an end point, xi = -1.
        let m = learn_all(no_forgetting(), (0..200_000).map(|_| u.next_f64_nonzero()));
        let (xi, _) = m.fit().unwrap();
        assert!(xi < -0.5, "uniform xi {xi}");
    }

    /// The fit from scratch: every excess so far (forgetting applied by age), the same grid.
    fn batch_fit(m: &PeaksOverThreshold, ys: &[f64]) -> (f64, f64) {
        let f = m.p.forget;
        let n = ys.len();
        let weight = |i: usize| f.powi((n - 1 - i) as i32);
        let k: f64 = (0..n).map(weight).sum();
        let mean = (0..n).map(|i| weight(i) * ys[i]).sum::<f64>() / k;
        let sums = m.grid.iter().map(|&(theta, _)| {
            let s = if ys.iter().any(|&y| theta * y <= -1.0) {
                f64::NEG_INFINITY
            } else {
                (0..n).map(|i| weight(i) * (theta * ys[i]).ln_1p()).sum()
            };
            (theta, s)
        });
        profile_best(k, mean, sums)
    }

    #[test]
    fn the_incremental_fit_equals_a_batch_fit_over_every_excess() {
        type Draw = Box<dyn Fn(&mut SplitMix64) -> f64>;
        let draws: [(&str, Draw); 3] = [
            ("exponential", Box::new(|u| -u.next_f64_nonzero().ln())),
            ("pareto", Box::new(|u| u.next_f64_nonzero().powf(-0.4))),
            ("uniform", Box::new(|u| u.next_f64_nonzero())),
        ];
        let mut u = SplitMix64(0xdead_beef);
        for (name, draw) in draws {
            let mut m = PeaksOverThreshold::new(TailParams::default());
            let mut first = Vec::new();
            let mut ys = Vec::new();
            for i in 0..30_000 {
                let x = draw(&mut u);
                m.surprise_then_learn(x);
                if i < m.p.init {
                    first.push(x);
                    if first.len() == m.p.init {
                        let t = m.threshold().unwrap();
                        ys.extend(first.iter().filter(|&&v| v > t).map(|&v| v - t));
                    }
                } else if x > m.threshold().unwrap() {
                    ys.push(x - m.threshold().unwrap());
                }
                if i % 5_000 == 4_999 {
                    let (xi, sigma) = m.fit().unwrap();
                    let (bxi, bsigma) = batch_fit(&m, &ys);
                    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-3);
                    assert!(
                        close(xi, bxi) && close(sigma, bsigma),
                        "{name} at {i}: incremental ({xi}, {sigma}), batch ({bxi}, {bsigma})"
                    );
                }
            }
        }
    }

    #[test]
    fn probabilities_are_calibrated_in_the_tail() {
        // Student-like heavy tail: |z| / sqrt(u), many values far beyond a normal's reach.
        let mut u = SplitMix64(0x1234_5678_9abc_def1);
        let mut m = PeaksOverThreshold::new(TailParams::default());
        let (mut tested, mut below_1e3, mut below_1e2) = (0u32, 0u32, 0u32);
        for i in 0..400_000 {
            let x = -u.next_f64_nonzero().ln() / u.next_f64_nonzero().sqrt();
            let p = m.surprise_then_learn(x);
            if i >= 20_000 {
                tested += 1;
                below_1e2 += u32::from(p < 1e-2);
                below_1e3 += u32::from(p < 1e-3);
            }
        }
        let (r2, r3) = (
            f64::from(below_1e2) / f64::from(tested),
            f64::from(below_1e3) / f64::from(tested),
        );
        assert!((0.008..0.0125).contains(&r2), "P(p < 1e-2) = {r2}");
        assert!((0.0006..0.0016).contains(&r3), "P(p < 1e-3) = {r3}");
    }

    #[test]
    fn a_model_whose_values_shrink_for_good_relearns_its_threshold() {
        // Normal values of spread 1, then of spread 0.1 for good (a noisy sensor replaced).
        let mut u = SplitMix64(77);
        let mut m = PeaksOverThreshold::new(TailParams::default());
        let mut kept = PeaksOverThreshold::new(TailParams {
            drift: 0.0,
            ..TailParams::default()
        });
        for i in 0..25_000 {
            let x = if i < 5_000 { 1.0 } else { 0.1 } * u.normal();
            m.surprise_then_learn(x);
            kept.surprise_then_learn(x);
        }
        assert_eq!(m.relearned(), 1);
        assert_eq!(kept.relearned(), 0);
        // The 95% quantile of the new values is about 0.16; the old threshold about 1.6.
        let (t, old) = (m.threshold().unwrap(), kept.threshold().unwrap());
        assert!((0.1..0.25).contains(&t), "re-learned threshold {t}");
        assert!(old > 1.0, "kept threshold {old}");
        // 3.0 is 30 new spreads and 3 old ones: improbable now, not rare to the old tail.
        let p = m.clone().surprise_then_learn(3.0);
        let p_old = kept.clone().surprise_then_learn(3.0);
        assert!(p < 1e-6, "re-learned p {p}");
        assert!(p_old > 1e-4, "kept p {p_old}");
    }

    #[test]
    fn a_steady_or_growing_spread_never_relearns() {
        let mut u = SplitMix64(78);
        let mut steady = PeaksOverThreshold::new(TailParams::default());
        let mut growing = PeaksOverThreshold::new(TailParams::default());
        for i in 0..200_000 {
            let x = u.normal();
            steady.surprise_then_learn(x);
            // The spread grows tenfold over the run: values pass the threshold more often.
            growing.surprise_then_learn(x * (1.0 + 9.0 * i as f64 / 200_000.0));
        }
        assert_eq!(steady.relearned(), 0);
        assert_eq!(growing.relearned(), 0);
    }

    #[test]
    fn larger_values_are_less_probable_and_the_start_is_silent() {
        let mut u = SplitMix64(42);
        let mut m = PeaksOverThreshold::new(TailParams::default());
        for _ in 0..TailParams::default().init {
            assert_eq!(m.surprise_then_learn(-u.next_f64_nonzero().ln()), 1.0);
        }
        for _ in 0..5_000 {
            m.surprise_then_learn(-u.next_f64_nonzero().ln());
        }
        let probe = |v: f64| m.clone().surprise_then_learn(v);
        let (a, b, c) = (probe(3.0), probe(6.0), probe(12.0));
        assert!(a > b && b > c, "{a} {b} {c}");
        assert!(c < 1e-3);
        assert_eq!(m.clone().surprise_then_learn(f64::NAN), 1.0);
        assert_eq!(m.clone().surprise_then_learn(-5.0), 1.0);
    }
}
