//! `stock_forecast` and `trend` through the engine on 1, 2 and 4 workers: the same rows
//! whatever the worker count, equal to the kernels run sequentially per series, with the
//! trend slopes spot-checked against a batch regression.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use streamgauge::dataflows::stock_forecast::{ForecastRow, Ticker};
use streamgauge::engine::{Input, RunSpec};
use streamgauge::record::Reading;

fn run(dataflow: &str, readings: &[Reading], workers: usize, out: &Path) {
    let mut spec = RunSpec::new(dataflow, Input::memory(readings.to_vec()));
    spec.cluster.workers = workers;
    spec.output_dir = Some(out.to_path_buf());
    common::run_ok(spec);
}

fn lines(dir: &Path, stem: &str) -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    for l in common::read_lines(dir, stem) {
        assert!(v.insert(l.clone()), "{stem}: duplicate row {l}");
    }
    v
}

#[test]
fn stock_forecast_equals_its_kernels_on_1_2_4_workers() {
    let readings = common::load("stocks_gafa_tsibbledata");
    // Oracle: each ticker's models run alone, in event-time order.
    let mut by: BTreeMap<String, Vec<&Reading>> = BTreeMap::new();
    for r in &readings {
        by.entry(r.series.to_string()).or_default().push(r);
    }
    let (mut issued, mut realised) = (BTreeSet::new(), BTreeSet::new());
    let (mut covered, mut total) = (0, 0);
    for rs in by.values() {
        let mut t = Ticker::new(5);
        for r in rs {
            let price = r.values.iter().find(|(n, _)| &**n == "close").unwrap().1;
            t.update(&r.series, r.ts, price, &mut |row: ForecastRow| {
                let line = serde_json::to_string(&row).unwrap();
                if let Some(c) = row.covered {
                    covered += c as usize;
                    total += 1;
                    realised.insert(line);
                } else {
                    issued.insert(line);
                }
            });
        }
    }
    let share = covered as f64 / total as f64;
    assert!((0.93..=0.97).contains(&share), "realised coverage {share}");
    let tmp = tempfile::tempdir().unwrap();
    for w in [1, 2, 4] {
        let out = tmp.path().join(format!("w{w}"));
        run("stock_forecast", &readings, w, &out);
        assert!(
            lines(&out, "forecasts") == issued,
            "{w} workers: forecasts differ"
        );
        assert!(
            lines(&out, "forecast_errors") == realised,
            "{w} workers: errors differ"
        );
    }
}

#[test]
fn trend_equals_its_kernels_and_batch_regression_on_1_2_4_workers() {
    use streamgauge::analytics::rolling::Extent;
    use streamgauge::analytics::trend::{Crossover, Trend};
    let readings = common::load("weather_vega");
    let n = 100;
    let mut by: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for r in &readings {
        by.entry(r.series.to_string())
            .or_default()
            .push((r.ts, r.values[0].1));
    }
    // Kernel oracle: per series slope rows and crossover times; batch spot checks.
    let mut slopes: BTreeMap<(String, i64), (f64, f64)> = BTreeMap::new();
    let mut crosses: BTreeSet<(String, i64, String)> = BTreeSet::new();
    for (s, pts) in &by {
        let (mut tr, mut cr) = (Trend::new(Extent::Count(n)), Crossover::new(n / 5, n));
        for (i, &(ts, y)) in pts.iter().enumerate() {
            tr.push(ts, y);
            let fit = tr.fit();
            if let Some(c) = cr.push(ts, y) {
                crosses.insert((s.clone(), ts, if c.up { "up" } else { "down" }.into()));
            }
            if fit.n >= 3 {
                slopes.insert(
                    (s.clone(), ts),
                    (fit.slope().unwrap(), fit.t_stat().unwrap()),
                );
            }
            if i % 997 == 0 && i >= n {
                // Batch regression over the same window.
                let w = &pts[i + 1 - n..=i];
                let mx = w.iter().map(|p| p.0 as f64 / 1000.0).sum::<f64>() / n as f64;
                let my = w.iter().map(|p| p.1).sum::<f64>() / n as f64;
                let sxy: f64 = w
                    .iter()
                    .map(|p| (p.0 as f64 / 1000.0 - mx) * (p.1 - my))
                    .sum();
                let sxx: f64 = w.iter().map(|p| (p.0 as f64 / 1000.0 - mx).powi(2)).sum();
                let b = sxy / sxx;
                assert!(
                    (fit.slope().unwrap() - b).abs() <= 1e-9 * b.abs().max(1e-12),
                    "{s} at {i}"
                );
            }
        }
    }
    assert!(crosses.len() > 50);
    let tmp = tempfile::tempdir().unwrap();
    for w in [1, 2, 4] {
        let out = tmp.path().join(format!("w{w}"));
        run("trend", &readings, w, &out);
        let mut got = BTreeMap::new();
        for l in lines(&out, "trend") {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            got.insert(
                (
                    v["series"].as_str().unwrap().to_string(),
                    v["ts"].as_i64().unwrap(),
                ),
                (
                    v["slope"].as_f64().unwrap(),
                    v["t"].as_f64().unwrap_or(f64::NAN),
                ),
            );
        }
        assert_eq!(got.len(), slopes.len(), "{w} workers");
        for (k, (b, t)) in &slopes {
            let (gb, gt) = got[k];
            assert_eq!(gb, *b, "{w} workers: slope {k:?}");
            assert!(gt == *t || !t.is_finite(), "{w} workers: t {k:?}");
        }
        let got_cross: BTreeSet<(String, i64, String)> = lines(&out, "crossovers")
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["series"].as_str().unwrap().to_string(),
                    v["ts"].as_i64().unwrap(),
                    v["cross"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got_cross, crosses, "{w} workers: crossovers");
    }
}

/// Random input (60 series, random walks with spikes, irregular times) arriving out of order
/// within the lateness: every keyed dataflow gives the same records on 1, 2 and 4 workers as on
/// the same readings in order.
#[test]
fn keyed_dataflows_are_order_and_worker_independent_on_random_input() {
    use streamgauge::dataset::generate::SplitMix64;
    let mut rng = SplitMix64(99);
    let mut readings = Vec::new();
    for s in 0..60 {
        let series: streamgauge::record::Sym = format!("rand/{s:02}").into();
        let (mut ts, mut x) = (1_700_000_000_000i64 + rng.below(1000) as i64, 100.0);
        for _ in 0..400 {
            ts += 500 + rng.below(1500) as i64;
            x += rng.normal();
            let v = if rng.below(200) == 0 {
                x + 40.0
            } else {
                x.max(1.0)
            };
            readings.push(Reading::single(series, ts, v));
        }
    }
    readings.sort_by_key(|r| r.ts);
    // Arrival order: shuffled within 3 s of event time (lateness is 5 s).
    let mut keyed: Vec<(i64, Reading)> = readings
        .iter()
        .map(|r| (r.ts + rng.below(3000) as i64, r.clone()))
        .collect();
    keyed.sort_by_key(|k| k.0);
    let shuffled: Vec<Reading> = keyed.into_iter().map(|k| k.1).collect();
    assert!(shuffled.windows(2).filter(|w| w[0].ts > w[1].ts).count() > 1000);

    let tmp = tempfile::tempdir().unwrap();
    let outputs: &[(&str, &[&str])] = &[
        ("zscore", &["zscore"]),
        ("sensor_outliers", &["outlier_scores"]),
        ("trend", &["trend", "crossovers"]),
        ("stock_forecast", &["forecasts", "forecast_errors"]),
        ("anomaly", &["anomaly"]),
    ];
    for (dataflow, stems) in outputs {
        let want_dir = tmp.path().join(format!("{dataflow}-ordered"));
        run(dataflow, &readings, 1, &want_dir);
        for w in [1, 2, 4] {
            let dir = tmp.path().join(format!("{dataflow}-{w}"));
            let mut spec = RunSpec::new(dataflow, Input::memory(shuffled.clone()));
            spec.cluster.workers = w;
            spec.output_dir = Some(dir.clone());
            let report = common::run_ok(spec);
            assert_eq!(report.metrics.late, 0, "{dataflow}: nothing is late");
            for stem in *stems {
                let (want, got) = (lines(&want_dir, stem), lines(&dir, stem));
                assert!(
                    !want.is_empty() || *stem == "zscore" || *stem == "crossovers",
                    "{dataflow}/{stem} empty"
                );
                assert!(
                    want == got,
                    "{dataflow}/{stem} on {w} workers differs from in-order input"
                );
            }
        }
    }
}
