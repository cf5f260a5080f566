//! Analytics kernels against from-scratch batch computations over long random streams
//! (10 million updates each, checked at many points; 1e-9 relative), and forecast intervals
//! against the coverage they promise on processes where the truth is known.

use streamgauge::analytics::forecast::{HoltWinters, LogReturns, RlsAr};
use streamgauge::analytics::outlier::{RobustZ, RollingZ};
use streamgauge::analytics::rolling::{Ewma, Extent, Rolling};
use streamgauge::analytics::sketch::DEFAULT_BITS;
use streamgauge::analytics::trend::{Crossover, Trend};
use streamgauge::dataset::generate::SplitMix64;

const N: usize = 10_000_000;

/// A hostile stream: level jumps (up to 1e6), noise whose scale changes by 1e4, ties,
/// spikes, flat stretches.
struct Hostile {
    rng: SplitMix64,
    level: f64,
    scale: f64,
    ts: i64,
    i: usize,
}

impl Hostile {
    fn new(seed: u64) -> Self {
        Hostile {
            rng: SplitMix64(seed),
            level: 1e6,
            scale: 1.0,
            ts: 1_700_000_000_000,
            i: 0,
        }
    }
    fn next(&mut self) -> (i64, f64) {
        self.i += 1;
        self.ts += self.rng.below(2000) as i64;
        if self.i % 250_000 == 0 {
            self.level = (self.rng.next_f64() - 0.5) * 2e6;
            self.scale = 10f64.powf(self.rng.next_f64() * 4.0 - 2.0);
        }
        let r = self.rng.below(100);
        let x = if r == 0 {
            self.level + 1000.0 * self.scale // spike
        } else if r < 10 {
            self.level.round() // ties
        } else if (self.i / 5000) % 37 == 0 {
            self.level // flat stretch
        } else {
            self.level + self.scale * self.rng.normal()
        };
        (self.ts, x)
    }
}

fn close(got: f64, want: f64, scale: f64, what: &str, at: usize) {
    let tol = 1e-9 * want.abs().max(scale);
    assert!(
        (got - want).abs() <= tol,
        "{what} at update {at}: got {got:e}, batch {want:e} (diff {:e}, tol {tol:e})",
        (got - want).abs()
    );
}

/// Two-pass batch statistics of a slice.
fn batch(values: &[f64]) -> (f64, f64, f64, f64, f64) {
    let n = values.len() as f64;
    let mut s = 0.0;
    let mut c = 0.0;
    for &v in values {
        streamgauge::analytics::rolling::neumaier(&mut s, &mut c, v);
    }
    let sum = s + c;
    let mean = sum / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (sum, mean, var, min, max)
}

fn check_rolling(extent: Extent, quantiles: bool, updates: usize, every: usize, seed: u64) {
    let mut r = Rolling::new(extent, quantiles);
    let mut g = Hostile::new(seed);
    let mut checks = 0;
    for i in 1..=updates {
        let (ts, x) = g.next();
        r.push(ts, x);
        if i % every == 0 || i == updates {
            checks += 1;
            let vals: Vec<f64> = r.values().collect();
            if let Extent::Count(n) = extent {
                assert_eq!(vals.len(), n.min(i));
            }
            let (sum, mean, var, min, max) = batch(&vals);
            let sd = var.sqrt();
            assert_eq!(r.count(), vals.len());
            close(r.sum(), sum, sd * vals.len() as f64, "sum", i);
            close(r.mean(), mean, sd, "mean", i);
            close(r.variance(), var, 0.0, "variance", i);
            let n = vals.len() as f64;
            close(
                r.sample_variance(),
                var * n / (n - 1.0),
                0.0,
                "sample variance",
                i,
            );
            assert_eq!(r.min(), Some(min), "min at {i}");
            assert_eq!(r.max(), Some(max), "max at {i}");
            if quantiles {
                let mut sorted = vals.clone();
                sorted.sort_by(f64::total_cmp);
                for q in [0.5, 0.9, 0.99] {
                    let h = (sorted.len() - 1) as f64 * q;
                    let lo = h.floor() as usize;
                    let want = if lo + 1 < sorted.len() {
                        sorted[lo] + (h - lo as f64) * (sorted[lo + 1] - sorted[lo])
                    } else {
                        sorted[lo]
                    };
                    assert_eq!(r.quantile(q), Some(want), "p{q} at {i}");
                }
                let k = sorted.len();
                let med = if k % 2 == 1 {
                    sorted[k / 2]
                } else {
                    0.5 * (sorted[k / 2 - 1] + sorted[k / 2])
                };
                let mut dev: Vec<f64> = sorted.iter().map(|v| (v - med).abs()).collect();
                dev.sort_by(f64::total_cmp);
                let mad = if k % 2 == 1 {
                    dev[k / 2]
                } else {
                    0.5 * (dev[k / 2 - 1] + dev[k / 2])
                };
                assert_eq!(r.median(), Some(med), "median at {i}");
                assert_eq!(r.mad(), Some(mad), "MAD at {i}");
            }
        }
    }
    assert!(checks >= 10);
}

#[test]
fn rolling_count_window_matches_batch_over_10m_updates() {
    check_rolling(Extent::Count(1000), false, N, 97_001, 1);
}

#[test]
fn rolling_time_window_matches_batch_over_10m_updates() {
    // Mean gap 1 s, so a 10-minute window holds about 600 readings.
    check_rolling(Extent::Time(600_000), false, N, 99_991, 2);
}

#[test]
fn rolling_quantiles_and_mad_are_exact_over_10m_updates() {
    check_rolling(Extent::Count(501), true, N, 199_999, 3);
}

/// The sketched window against the exact order statistics of the same window: every
/// quantile, the median and the MAD within the bounds `analytics::sketch` documents.
fn check_sketch(extent: Extent, updates: usize, every: usize, seed: u64) {
    let mut r = Rolling::sketched(extent, DEFAULT_BITS);
    let mut g = Hostile::new(seed);
    let (mut checks, mut rel_mad) = (0, Vec::new());
    for i in 1..=updates {
        let (ts, x) = g.next();
        r.push(ts, x);
        if i % every != 0 && i != updates {
            continue;
        }
        checks += 1;
        let sk = r.sketch().expect("sketched");
        let mut sorted: Vec<f64> = r.values().collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        // A few ulps of the center and the value for the subtraction and the interpolation.
        let ulps = |x: f64| 8.0 * f64::EPSILON * (sk.center().abs() + x.abs());
        let bound = |a: f64, b: f64| sk.width(a).max(sk.width(b)) + ulps(a).max(ulps(b));
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0] {
            let h = (n - 1) as f64 * q;
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let want = sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]);
            let got = r.quantile(q).expect("non-empty");
            let tol = bound(sorted[lo], sorted[hi]);
            assert!(
                (got - want).abs() <= tol,
                "p{q} at {i}: sketch {got}, exact {want}, bound {tol}"
            );
        }
        let (a, b) = (sorted[(n - 1) / 2], sorted[n / 2]);
        let med = 0.5 * (a + b);
        let got = r.median().expect("non-empty");
        assert!(
            (got - med).abs() <= bound(a, b),
            "median at {i}: {got} vs {med}"
        );
        let mut dev: Vec<f64> = sorted.iter().map(|v| (v - med).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let mad = 0.5 * (dev[(n - 1) / 2] + dev[n / 2]);
        let w = sorted
            .iter()
            .map(|&v| sk.width(v) + ulps(v))
            .fold(0.0, f64::max);
        let got = r.mad().expect("non-empty");
        assert!(
            (got - mad).abs() <= 2.0 * w,
            "MAD at {i}: sketch {got}, exact {mad}, bound {}",
            2.0 * w
        );
        if mad > 0.0 {
            rel_mad.push((got - mad).abs() / mad);
        }
    }
    assert!(checks >= 10);
    rel_mad.sort_by(f64::total_cmp);
    let p50 = rel_mad[rel_mad.len() / 2];
    eprintln!(
        "{extent:?}: {checks} checks; MAD relative error p50 {p50:.2e}, max {:.2e}",
        rel_mad[rel_mad.len() - 1]
    );
    // The bound is loose (it allows for the widest bucket); typical errors are a small
    // fraction of a bucket near the MAD.
    assert!(p50 < 2f64.powi(-(DEFAULT_BITS as i32)), "p50 {p50}");
}

#[test]
fn rolling_sketch_quantiles_and_mad_stay_within_their_bounds_over_10m_updates() {
    check_sketch(Extent::Count(1000), N, 9_973, 4);
    check_sketch(Extent::Time(600_000), N, 10_007, 5);
}

#[test]
fn ewma_matches_its_weighted_batch_definition() {
    let a = 0.001;
    let mut e = Ewma::new(a);
    let mut g = Hostile::new(4);
    let mut xs = Vec::with_capacity(N);
    for i in 1..=N {
        let (_, x) = g.next();
        e.update(x);
        xs.push(x);
        if i % 1_999_993 == 0 || i == 10 || i == N {
            // Weights (1-a)^(t-1) for the first value, a (1-a)^(t-k) for value k > 1.
            let t = xs.len();
            let mut w = vec![0.0; t];
            let mut f = 1.0;
            for k in (1..t).rev() {
                w[k] = a * f;
                f *= 1.0 - a;
            }
            w[0] = f;
            let mean: f64 = xs.iter().zip(&w).map(|(x, w)| x * w).sum();
            let var: f64 = xs
                .iter()
                .zip(&w)
                .map(|(x, w)| w * (x - mean) * (x - mean))
                .sum();
            close(e.mean, mean, var.sqrt(), "ewma mean", i);
            // Below (|mean| * 1e-11)^2 a variance is rounding noise of the batch sum itself.
            close(e.var, var, (mean * 1e-11).powi(2), "ewma variance", i);
        }
    }
}

fn batch_fit(points: &[(i64, f64)]) -> (f64, f64, f64) {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0 as f64 / 1000.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for &(t, y) in points {
        let dx = t as f64 / 1000.0 - mx;
        sxx += dx * dx;
        sxy += dx * (y - my);
        syy += (y - my) * (y - my);
    }
    let b = sxy / sxx;
    let s2 = (syy - b * sxy) / (n - 2.0);
    let se = (s2 / sxx).sqrt();
    (b, se, b / se)
}

#[test]
fn trend_slope_stderr_and_t_match_batch_regression_over_10m_updates() {
    for (extent, seed) in [(Extent::Count(700), 5u64), (Extent::Time(900_000), 6)] {
        let mut tr = Trend::new(extent);
        let mut g = Hostile::new(seed);
        for i in 1..=N {
            let (ts, mut x) = g.next();
            x += (i % 20_000) as f64 * 0.01; // a drift that keeps changing
            tr.push(ts, x);
            if i % 333_331 == 0 || i == N {
                let pts: Vec<(i64, f64)> = tr.points().collect();
                let f = tr.fit();
                let (b, se, t) = batch_fit(&pts);
                if se.is_nan() || se <= 0.0 {
                    continue; // a flat stretch: nothing to compare
                }
                close(f.slope().unwrap(), b, se, "slope", i);
                close(f.slope_stderr().unwrap(), se, 0.0, "slope stderr", i);
                close(f.t_stat().unwrap(), t, 1.0, "t", i);
            }
        }
    }
}

#[test]
fn crossovers_fire_exactly_when_batch_moving_averages_cross() {
    let (short, long) = (10usize, 100usize);
    let mut c = Crossover::new(short, long);
    let mut rng = SplitMix64(7);
    // Integer random walk: batch sums are exact, so the oracle's comparisons are exact.
    let mut x: i64 = 1_000;
    let mut xs: Vec<i64> = Vec::with_capacity(N);
    let mut prefix: Vec<i64> = vec![0];
    let mut side = 0i8;
    let mut fired = 0;
    for i in 0..N {
        x += rng.below(7) as i64 - 3;
        xs.push(x);
        prefix.push(prefix[i] + x);
        let got = c.push(i as i64, x as f64);
        let mut want = None;
        if i + 1 >= long {
            let s = prefix[i + 1] - prefix[i + 1 - short];
            let l = prefix[i + 1] - prefix[i + 1 - long];
            let d = (s as i128) * long as i128 - (l as i128) * short as i128;
            let now = d.signum() as i8;
            if now != 0 {
                if side != 0 && side != now {
                    want = Some(now > 0);
                }
                side = now;
            }
        }
        assert_eq!(got.map(|g| g.up), want, "update {i}");
        if let Some(g) = got {
            assert_eq!(g.ts, i as i64);
            fired += 1;
        }
    }
    assert!(fired > 10_000, "{fired} crossovers");
}

#[test]
fn rls_matches_weighted_regularised_least_squares() {
    let (p, lambda, delta) = (2usize, 0.9995, 1e-3);
    let mut m = RlsAr::new(p, lambda, delta);
    let mut rng = SplitMix64(8);
    let mut ys: Vec<f64> = Vec::with_capacity(N);
    let (mut y1, mut y2) = (0.0, 0.0);
    for i in 1..=N {
        // AR(2) whose coefficients drift slowly.
        let a1 = 0.5 + 0.3 * ((i as f64) / 1e6).sin();
        let y = 10.0 + a1 * y1 - 0.3 * y2 + rng.normal();
        m.update(y);
        ys.push(y);
        (y2, y1) = (y1, y);
        if i % 2_499_997 == 0 || i == 1000 || i == N {
            // Batch: (sum w phi phi' + lambda^t delta I) theta = sum w phi y, with t the number
            // of updates that had regressors.
            let d = p + 1;
            let mut a = vec![0.0; d * d];
            let mut b = vec![0.0; d];
            let mut w = 1.0;
            let mut t = 0i32;
            for k in (p..ys.len()).rev() {
                let phi = [1.0, ys[k - 1], ys[k - 2]];
                for r in 0..d {
                    b[r] += w * phi[r] * ys[k];
                    for s in 0..d {
                        a[r * d + s] += w * phi[r] * phi[s];
                    }
                }
                w *= lambda;
                t += 1;
                if w < 1e-30 {
                    // The rest weighs less than 1e-30 of the newest row.
                    t = (ys.len() - p) as i32;
                    break;
                }
            }
            for r in 0..d {
                a[r * d + r] += lambda.powi(t) * delta;
            }
            let theta = solve(a, b, d);
            for (k, (&got, want)) in m.coefficients().iter().zip(theta).enumerate() {
                close(got, want, 1e-3, &format!("theta[{k}]"), i);
            }
        }
    }
}

fn solve(mut a: Vec<f64>, mut b: Vec<f64>, d: usize) -> Vec<f64> {
    for col in 0..d {
        let piv = (col..d)
            .max_by(|&i, &j| a[i * d + col].abs().total_cmp(&a[j * d + col].abs()))
            .unwrap();
        for k in 0..d {
            a.swap(col * d + k, piv * d + k);
        }
        b.swap(col, piv);
        for r in col + 1..d {
            let f = a[r * d + col] / a[col * d + col];
            for k in col..d {
                a[r * d + k] -= f * a[col * d + k];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; d];
    for r in (0..d).rev() {
        let s: f64 = (r + 1..d).map(|k| a[r * d + k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r * d + r];
    }
    x
}

/// Share of actual values inside the 95% interval, one step and `h` steps ahead.
fn coverage(
    mut step: impl FnMut() -> f64,
    mut model: impl FnMut(f64),
    forecast: impl Fn(usize) -> Option<(f64, f64)>,
    h: usize,
    n: usize,
) -> (f64, f64) {
    let mut pending: std::collections::VecDeque<Option<(f64, f64)>> = Default::default();
    let (mut in1, mut n1, mut inh, mut nh) = (0, 0, 0, 0);
    let mut next1: Option<(f64, f64)> = None;
    for _ in 0..n {
        let y = step();
        if let Some((lo, hi)) = next1 {
            n1 += 1;
            in1 += (lo <= y && y <= hi) as usize;
        }
        if pending.len() == h {
            if let Some(Some((lo, hi))) = pending.pop_front() {
                nh += 1;
                inh += (lo <= y && y <= hi) as usize;
            }
        }
        model(y);
        next1 = forecast(1);
        pending.push_back(forecast(h));
    }
    (in1 as f64 / n1 as f64, inh as f64 / nh as f64)
}

#[test]
fn forecast_intervals_cover_95_percent_where_the_model_is_true() {
    // Holt-Winters on an additive seasonal series with trend and noise.
    let period = 24;
    let hw = std::cell::RefCell::new(HoltWinters::new(0.1, 0.01, 0.1, period));
    let mut rng = SplitMix64(9);
    let mut i = 0usize;
    let (c1, ch) = coverage(
        || {
            i += 1;
            let season =
                10.0 * (2.0 * std::f64::consts::PI * (i % period) as f64 / period as f64).sin();
            50.0 + 0.01 * i as f64 + season + 2.0 * rng.normal()
        },
        |y| {
            hw.borrow_mut().update(y);
        },
        |h| hw.borrow().forecast(h).map(|f| (f.lower, f.upper)),
        5,
        400_000,
    );
    eprintln!("holt-winters coverage: h=1 {c1:.4}, h=5 {ch:.4}");
    assert!((0.94..=0.96).contains(&c1), "{c1}");
    assert!((0.93..=0.97).contains(&ch), "{ch}");

    // RLS AR(2) on a stationary AR(2).
    let m = std::cell::RefCell::new(RlsAr::new(2, 0.999, 1e-3));
    let mut rng = SplitMix64(10);
    let (mut y1, mut y2) = (0.0, 0.0);
    let (c1, ch) = coverage(
        || {
            let y = 5.0 + 0.6 * y1 - 0.2 * y2 + rng.normal();
            (y2, y1) = (y1, y);
            y
        },
        |y| {
            m.borrow_mut().update(y);
        },
        |h| m.borrow().forecast(h).map(|f| (f.lower, f.upper)),
        3,
        400_000,
    );
    eprintln!("rls coverage: h=1 {c1:.4}, h=3 {ch:.4}");
    assert!((0.94..=0.96).contains(&c1), "{c1}");
    assert!((0.93..=0.97).contains(&ch), "{ch}");

    // Prices from log returns: a geometric random walk with drift; the interval of the price
    // 5 steps ahead covers it 95% of the time.
    let lr = std::cell::RefCell::new(LogReturns::new(RlsAr::new(1, 0.999, 1e-3)));
    let mut rng = SplitMix64(11);
    let mut price = 100.0f64;
    let (c1, ch) = coverage(
        || {
            price *= (0.0002 + 0.01 * rng.normal()).exp();
            price
        },
        |y| {
            lr.borrow_mut().update(y);
        },
        |h| lr.borrow().forecast(h).map(|f| (f.lower, f.upper)),
        5,
        400_000,
    );
    eprintln!("log-return coverage: h=1 {c1:.4}, h=5 {ch:.4}");
    assert!((0.94..=0.96).contains(&c1), "{c1}");
    assert!((0.93..=0.97).contains(&ch), "{ch}");

    // Linear trend over a window, on a line plus noise: the t interval covers ~95%.
    let tr = std::cell::RefCell::new(Trend::new(Extent::Count(200)));
    let mut rng = SplitMix64(12);
    let k = std::cell::Cell::new(0i64);
    let (c1, ch) = coverage(
        || {
            k.set(k.get() + 1);
            3.0 + 0.5 * k.get() as f64 + 4.0 * rng.normal()
        },
        |y| tr.borrow_mut().push(k.get() * 1000, y),
        |h| {
            tr.borrow()
                .fit()
                .forecast((k.get() + h as i64) * 1000)
                .map(|f| (f.lower, f.upper))
        },
        10,
        200_000,
    );
    eprintln!("linear trend coverage: h=1 {c1:.4}, h=10 {ch:.4}");
    assert!((0.94..=0.96).contains(&c1), "{c1}");
    assert!((0.93..=0.97).contains(&ch), "{ch}");
}

#[test]
fn outlier_scores_use_only_the_past_and_flag_a_spike() {
    let mut z = RollingZ::new(100, 20);
    let mut r = RobustZ::new(101, 20);
    let mut rng = SplitMix64(13);
    let mut xs = Vec::new();
    for i in 0..2000 {
        let x = if i == 1500 { 50.0 } else { rng.normal() };
        let (sz, sr) = (z.score(i, x), r.score(i, x));
        assert!((0.0..=1.0).contains(&sz) && (0.0..=1.0).contains(&sr));
        if i >= 100 {
            // Batch: z against the previous 100 values.
            let prev = &xs[xs.len() - 100..];
            let (_, mean, var, _, _) = batch(prev);
            let want = streamgauge::analytics::outlier::z_to_score((x - mean) / var.sqrt());
            close(sz, want, 1e-12, "z score", i as usize);
        }
        if i == 1500 {
            assert!(sz > 0.999_999 && sr > 0.999_999, "{sz} {sr}");
        }
        xs.push(x);
    }
}
