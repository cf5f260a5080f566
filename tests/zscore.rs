//! `zscore` (W2) against a batch oracle on 1, 2 and 4 workers: W1-generated sensors read from
//! CSV blocks, and a real NAB series with a shuffled arrival order within the lateness.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use streamgauge::engine::{Input, RunSpec};
use streamgauge::record::Reading;

/// (series, ts, value bits) -> (mean, std, z).
type Alerts = BTreeMap<(String, i64, u64), (f64, f64, f64)>;

/// Batch: per series in (ts, value) order, two-pass mean/std of the previous <= n values.
fn oracle(readings: &[Reading], n: usize, threshold: f64) -> (Alerts, Vec<(String, i64, u64)>) {
    let mut by: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for r in readings {
        by.entry(&r.series).or_default().push((r.ts, r.values[0].1));
    }
    let mut out = Alerts::new();
    let mut borderline = Vec::new();
    for (s, mut rows) in by {
        rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        for i in 1..rows.len() {
            let prev: Vec<f64> = rows[i.saturating_sub(n)..i].iter().map(|r| r.1).collect();
            let k = prev.len() as f64;
            let mean = prev.iter().sum::<f64>() / k;
            let std = (prev.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / k).sqrt();
            if std <= 1e-12 * mean.abs() {
                continue;
            }
            let z = (rows[i].1 - mean) / std;
            let key = (s.to_string(), rows[i].0, rows[i].1.to_bits());
            if (z.abs() - threshold).abs() <= 1e-9 * threshold {
                borderline.push(key);
            } else if z.abs() > threshold {
                out.insert(key, (mean, std, z));
            }
        }
    }
    (out, borderline)
}

fn read(dir: &Path) -> Alerts {
    let mut out = Alerts::new();
    for line in common::read_lines(dir, "zscore") {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let value = v["value"].as_f64().unwrap();
        let key = (
            v["series"].as_str().unwrap().to_string(),
            v["ts"].as_i64().unwrap(),
            value.to_bits(),
        );
        let val = (
            v["mean"].as_f64().unwrap(),
            v["std"].as_f64().unwrap(),
            v["z"].as_f64().unwrap(),
        );
        assert!(out.insert(key.clone(), val).is_none(), "{key:?} twice");
    }
    out
}

fn check(input: Input, readings: &[Reading], n: usize, threshold: f64, lateness_ms: u64) {
    let (want, borderline) = oracle(readings, n, threshold);
    assert!(want.len() > 50, "too few alerts to test: {}", want.len());
    for w in [1, 2, 4] {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = RunSpec::new("zscore", input.clone());
        spec.cluster.workers = w;
        spec.readings = n;
        spec.threshold = threshold;
        spec.lateness = std::time::Duration::from_millis(lateness_ms);
        spec.output_dir = Some(tmp.path().to_path_buf());
        let report = common::run_ok(spec);
        assert_eq!(report.metrics.readings_in, readings.len() as u64);
        let mut got = read(tmp.path());
        for b in &borderline {
            got.remove(b);
        }
        let missing: Vec<_> = want
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(3)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(3)
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{w} workers: missing {missing:?}, extra {extra:?}"
        );
        for (k, (m, s, z)) in &got {
            let (wm, ws, wz) = want[k];
            let scale = ws.max(1e-300);
            assert!(
                (m - wm).abs() <= 1e-9 * wm.abs().max(scale),
                "{k:?} mean {m} vs {wm}"
            );
            assert!((s - ws).abs() <= 1e-9 * ws, "{k:?} std {s} vs {ws}");
            assert!(
                (z - wz).abs() <= 1e-9 * wz.abs().max(1.0) * (1.0 + wm.abs() / ws),
                "{k:?} z {z} vs {wz}"
            );
        }
    }
}

#[test]
fn w2_on_generated_sensors_matches_batch_on_1_2_4_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec, readings) = common::w1_csv(tmp.path(), 300_000, 5);
    check(Input::Csv(spec), &readings, 100, 4.0, 5_000);
}

#[test]
fn w2_on_nab_with_disorder_matches_batch_on_1_2_4_workers() {
    let mut readings = common::load("nab:realKnownCause");
    // Arrival order shuffled within 2 hours of event time (lateness 3 hours; the series are
    // 5 to 60 minutes apart): results must not move.
    let mut rng = streamgauge::dataset::generate::SplitMix64(3);
    let mut keyed: Vec<(i64, Reading)> = readings
        .drain(..)
        .map(|r| (r.ts + rng.below(7_200_000) as i64, r))
        .collect();
    keyed.sort_by_key(|k| k.0);
    let shuffled: Vec<Reading> = keyed.into_iter().map(|k| k.1).collect();
    let disordered = shuffled.windows(2).filter(|w| w[0].ts > w[1].ts).count();
    assert!(disordered > 1000, "the shuffle must reorder readings");
    check(
        Input::memory(shuffled.clone()),
        &shuffled,
        50,
        3.0,
        3 * 3_600_000,
    );
}
