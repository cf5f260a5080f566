//! Per-reading cost of each analytics kernel at window sizes 1e2 .. 1e6 (criterion).
//!
//! Every iteration pushes one value into a window that is already full, so it pays for the
//! eviction too. `cargo bench --bench kernels`; the flat-cost goal is that 1e6 costs no more
//! than 1.5x 1e2. The exact quantile tree is O(log n) by design; `quantiles_sketch` and
//! `robust_mad_sketch` are the bounded-error kernels whose cost does not depend on n.
//! `cargo bench --bench kernels -- sketch` runs only the groups whose name matches.
//! `gauge_detector` and `tail_pot` have no window: for them n is the number of readings seen
//! before the measured ones, so flat cost means the cost does not grow with the history.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use streamgauge::analytics::detector::{Detector, DetectorParams};
use streamgauge::analytics::outlier::RobustZ;
use streamgauge::analytics::rolling::{CountWindow, Extent, Rolling};
use streamgauge::analytics::sketch::DEFAULT_BITS;
use streamgauge::analytics::tail::{PeaksOverThreshold, TailParams};
use streamgauge::analytics::trend::{Crossover, Trend};
use streamgauge::analytics::window::{PaneQueue, WindowStats};
use streamgauge::dataset::generate::SplitMix64;

const SIZES: [usize; 5] = [100, 1_000, 10_000, 100_000, 1_000_000];

/// Values to cycle through (precomputed so the generator is not measured).
fn values() -> Vec<f64> {
    let mut rng = SplitMix64(42);
    (0..1 << 16).map(|_| 20.0 + rng.normal()).collect()
}

fn bench(c: &mut Criterion) {
    let xs = values();
    let mask = xs.len() - 1;
    macro_rules! group {
        ($name:expr, $make:expr, $push:expr) => {{
            let mut g = c.benchmark_group($name);
            g.sample_size(20)
                .warm_up_time(Duration::from_millis(300))
                .measurement_time(Duration::from_millis(800));
            for &n in &SIZES {
                let mut k = $make(n);
                let mut i = 0usize;
                for _ in 0..n {
                    $push(&mut k, i as i64, xs[i & mask]);
                    i += 1;
                }
                g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                    b.iter(|| {
                        $push(&mut k, i as i64, black_box(xs[i & mask]));
                        i += 1;
                    })
                });
            }
            g.finish();
        }};
    }
    group!(
        "rolling_count",
        |n| Rolling::new(Extent::Count(n), false),
        |k: &mut Rolling, t, x| {
            k.push(t, x);
            black_box((k.mean(), k.variance(), k.min(), k.max()));
        }
    );
    group!(
        "rolling_time",
        // One reading per ms: a window of n ms holds n readings.
        |n: usize| Rolling::new(Extent::Time(n as i64), false),
        |k: &mut Rolling, t, x| {
            k.push(t, x);
            black_box((k.mean(), k.variance(), k.min(), k.max()));
        }
    );
    group!(
        "count_window",
        CountWindow::new,
        |k: &mut CountWindow, _t, x| {
            k.push(x);
            black_box(k.mean_var());
        }
    );
    group!(
        "quantiles_p50_p90_p99",
        |n| Rolling::new(Extent::Count(n), true),
        |k: &mut Rolling, t, x| {
            k.push(t, x);
            black_box((k.quantile(0.5), k.quantile(0.9), k.quantile(0.99)));
        }
    );
    group!(
        "quantiles_sketch",
        |n| Rolling::sketched(Extent::Count(n), DEFAULT_BITS),
        |k: &mut Rolling, t, x| {
            k.push(t, x);
            black_box((k.quantile(0.5), k.quantile(0.9), k.quantile(0.99)));
        }
    );
    group!(
        "robust_mad_sketch",
        |n| RobustZ::sketched(n, 2, DEFAULT_BITS),
        |k: &mut RobustZ, t, x| {
            black_box(k.z(t, x));
        }
    );
    group!(
        "robust_median_mad",
        |n| RobustZ::new(n, 2),
        |k: &mut RobustZ, t, x| {
            black_box(k.z(t, x));
        }
    );
    group!(
        "trend_slope",
        |n| Trend::new(Extent::Count(n)),
        |k: &mut Trend, t, x| {
            k.push(t, x);
            black_box(k.fit().t_stat());
        }
    );
    group!(
        "crossover",
        |n: usize| Crossover::new((n / 5).max(2), n),
        |k: &mut Crossover, t, x| {
            black_box(k.push(t, x));
        }
    );
    group!(
        "pane_queue",
        // A sliding window of n panes (hopping windows of `series_stats`): push the newest
        // pane, drop the oldest, read the window's summary.
        |n: usize| (PaneQueue::default(), n),
        |k: &mut (PaneQueue, usize), t, x| {
            let mut pane = WindowStats::default();
            pane.update(x);
            k.0.push(t, pane);
            if k.0.len() > k.1 {
                k.0.pop();
            }
            black_box(k.0.total());
        }
    );
    group!(
        "gauge_detector",
        // One reading a minute.
        |_| Detector::new(DetectorParams::default()),
        |k: &mut Detector, t: i64, x| {
            black_box(k.update(t * 60_000, x));
        }
    );
    group!(
        "tail_pot",
        |_| PeaksOverThreshold::new(TailParams::default()),
        |k: &mut PeaksOverThreshold, _t, x| {
            black_box(k.surprise_then_learn(x));
        }
    );
}

criterion_group!(kernels, bench);
criterion_main!(kernels);
