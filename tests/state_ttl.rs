//! `--state-ttl`: per-series state that expires in event time. The engine's results with a
//! TTL (`anomaly`, `zscore`, `trend`, `stock_forecast`) are checked against oracles that split
//! each series where it was silent too long and start each part afresh, on 1, 2 and 4
//! workers, as are the `silent` rows (one per part, at its expiry) of `anomaly`, `trend` and
//! `stock_forecast`; and an expired outlier leaves the outlier set (and top-k) while the
//! input still runs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use streamgauge::analytics::detector::{Detector, DetectorParams};
use streamgauge::dataset::generate::SplitMix64;
use streamgauge::engine::{Input, RunSpec};
use streamgauge::record::{Reading, Sym};

const TTL_MS: i64 = 60_000;

/// The rule, written out independently of the engine: a state whose latest reading is at
/// `last` is gone by the first multiple of TTL/4 after `last + TTL`; a reading at or after
/// that point starts afresh.
fn starts_afresh(last: i64, ts: i64) -> bool {
    ts >= gone_at(last)
}

/// When a state whose latest reading is at `last` is gone.
fn gone_at(last: i64) -> i64 {
    let grain = TTL_MS / 4;
    ((last + TTL_MS) / grain + 1) * grain
}

/// (series, field, last_ts, time) of a silence.
type Silence = (String, String, i64, i64);

/// The silences the TTL must report: every part of every series ends in one, at the expiry of
/// its last reading (the last part's after the end of the input), under value name `field`.
fn want_silent(parts: &BTreeMap<String, Vec<Vec<(i64, f64)>>>, field: &str) -> BTreeSet<Silence> {
    let mut want = BTreeSet::new();
    for (s, ps) in parts {
        for p in ps {
            let last = p.last().unwrap().0;
            want.insert((s.clone(), field.to_string(), last, gone_at(last)));
        }
    }
    want
}

/// A run's `silent` rows, each once.
fn got_silent(dir: &std::path::Path) -> BTreeSet<Silence> {
    let rows = json_lines(dir, "silent");
    let got: BTreeSet<Silence> = rows
        .iter()
        .map(|v| {
            (
                v["series"].as_str().unwrap().to_string(),
                v["field"].as_str().unwrap().to_string(),
                v["last_ts"].as_i64().unwrap(),
                v["time"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), rows.len(), "a silence reported twice");
    got
}

/// 24 series of random walks with spikes, each with distinct timestamps: mostly 1-5 s apart,
/// sometimes silent for a while, with silences around the TTL (just under, at, the grid's
/// edge, and well over). Sorted by event time, as a dataset is.
fn readings() -> Vec<Reading> {
    let mut rng = SplitMix64(0x5eed_7711);
    let start = 1_700_000_000_000i64;
    let mut all = Vec::new();
    for s in 0..24 {
        let series = Sym::new(&format!("ttl/s{s:02}"));
        let mut ts = start + rng.below(5_000) as i64;
        let mut level = 10.0 * (s + 1) as f64;
        for _ in 0..3_000 {
            let gap = match rng.below(400) {
                0 => TTL_MS - 1_000,
                1 => TTL_MS,
                2 => TTL_MS + 1 + rng.below(TTL_MS as u64 / 4) as i64,
                3 => 2 * TTL_MS + rng.below(10 * TTL_MS as u64) as i64,
                4..=5 => rng.below(3 * TTL_MS as u64) as i64 + 1,
                _ => 1_000 + rng.below(4_000) as i64,
            };
            ts += gap;
            level += rng.normal() * 0.3;
            let spike = if rng.below(150) == 0 { 25.0 } else { 0.0 };
            let v = ((level + rng.normal() + spike) * 1e4).round() / 1e4;
            all.push(Reading::single(series, ts, v));
        }
    }
    all.sort_by_key(|r| r.ts);
    all
}

/// Each series' readings in the order the engine processes them, cut into the parts that
/// share a state: (series, parts of (ts, value)).
fn parts(readings: &[Reading]) -> BTreeMap<String, Vec<Vec<(i64, f64)>>> {
    let mut by: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for r in readings {
        by.entry(r.series.to_string())
            .or_default()
            .push((r.ts, r.values[0].1));
    }
    by.into_iter()
        .map(|(s, mut rows)| {
            rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let mut parts: Vec<Vec<(i64, f64)>> = Vec::new();
            for (ts, v) in rows {
                match parts.last_mut() {
                    Some(p) if !starts_afresh(p.last().unwrap().0, ts) => p.push((ts, v)),
                    _ => parts.push(vec![(ts, v)]),
                }
            }
            (s, parts)
        })
        .collect()
}

/// Runs `dataflow` over `readings` on `workers` with the TTL (or none); returns the output
/// folder.
fn run_to(
    dataflow: &str,
    readings: &[Reading],
    workers: usize,
    ttl: Option<i64>,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let out = dir.join(format!("{dataflow}-w{workers}-{}", ttl.is_some()));
    let mut spec = RunSpec::new(dataflow, Input::memory(readings.to_vec()));
    spec.cluster.workers = workers;
    spec.state_ttl = ttl.map(|t| Duration::from_millis(t as u64));
    spec.output_dir = Some(out.clone());
    common::run_ok(spec);
    out
}

/// [`run_to`], then the output folder's lines of `stem`.
fn run(
    dataflow: &str,
    readings: &[Reading],
    workers: usize,
    ttl: Option<i64>,
    stem: &str,
    dir: &std::path::Path,
) -> Vec<serde_json::Value> {
    json_lines(&run_to(dataflow, readings, workers, ttl, dir), stem)
}

/// The output folder's JSON lines of `stem`, parsed.
fn json_lines(dir: &std::path::Path, stem: &str) -> Vec<serde_json::Value> {
    common::read_lines(dir, stem)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (series, ts) -> score.
type Scores = BTreeMap<(String, i64), f64>;

fn scores(rows: &[serde_json::Value]) -> Scores {
    rows.iter()
        .map(|v| {
            (
                (
                    v["series"].as_str().unwrap().to_string(),
                    v["ts"].as_i64().unwrap(),
                ),
                v["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn expiring_detectors_and_windows_match_oracles_on_1_2_4_workers() {
    let readings = readings();
    let parts = parts(&readings);
    let restarts: usize = parts.values().map(|p| p.len() - 1).sum();
    let edge_cases = parts
        .values()
        .flat_map(|p| p.windows(2))
        .filter(|w| w[1][0].0 - w[0].last().unwrap().0 <= TTL_MS + TTL_MS / 4)
        .count();
    assert!(restarts > 50, "the data must restart series: {restarts}");
    assert!(
        edge_cases > 5,
        "silences within a grain of the TTL: {edge_cases}"
    );

    // Oracle: a fresh detector per part; the two-pass mean and std of the previous <= 100
    // values within the part for zscore.
    let mut want = Scores::new();
    let mut want_z: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for (s, ps) in &parts {
        for p in ps {
            let mut d = Detector::new(DetectorParams::default());
            for (i, &(ts, v)) in p.iter().enumerate() {
                want.insert((s.clone(), ts), d.update(ts, v));
                let prev: Vec<f64> = p[i.saturating_sub(100)..i].iter().map(|r| r.1).collect();
                if prev.is_empty() {
                    continue;
                }
                let k = prev.len() as f64;
                let mean = prev.iter().sum::<f64>() / k;
                let std = (prev.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / k).sqrt();
                let z = (v - mean) / std;
                if std > 1e-9 && z.abs() > 4.0 + 1e-9 {
                    want_z.insert((s.clone(), ts), z);
                }
            }
        }
    }
    assert!(want_z.len() > 50, "zscore alerts: {}", want_z.len());

    let tmp = tempfile::tempdir().unwrap();
    // Without a TTL every series keeps one detector: the results must differ, or this test
    // could not tell a TTL from none.
    let kept = scores(&run("anomaly", &readings, 2, None, "anomaly", tmp.path()));
    assert_eq!(kept.len(), want.len());
    let differ = want.iter().filter(|(k, v)| kept[*k] != **v).count();
    assert!(differ > 1_000, "only {differ} scores differ without a TTL");

    let silences = want_silent(&parts, "value");
    assert!(
        silences.len() > parts.len() + 50,
        "silences: {}",
        silences.len()
    );
    for w in [1, 2, 4] {
        let out = run_to("anomaly", &readings, w, Some(TTL_MS), tmp.path());
        assert_eq!(
            got_silent(&out),
            silences,
            "{w} workers: anomaly's silences"
        );
        let got = scores(&json_lines(&out, "anomaly"));
        assert_eq!(got.len(), want.len(), "{w} workers: rows");
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "{w} workers: score of {k:?}");
        }

        let rows = run("zscore", &readings, w, Some(TTL_MS), "zscore", tmp.path());
        let got_z: BTreeMap<(String, i64), f64> = rows
            .iter()
            .map(|v| {
                let key = (
                    v["series"].as_str().unwrap().to_string(),
                    v["ts"].as_i64().unwrap(),
                );
                (key, v["z"].as_f64().unwrap())
            })
            .collect();
        assert_eq!(got_z.len(), rows.len(), "{w} workers: an alert twice");
        let keys = |m: &BTreeMap<(String, i64), f64>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&got_z), keys(&want_z), "{w} workers: zscore alerts");
        for (k, z) in &want_z {
            assert!(
                (got_z[k] - z).abs() <= 1e-9 * z.abs(),
                "{w} workers: z of {k:?}"
            );
        }
    }
}

/// `trend` and `stock_forecast` with a TTL: each part of a series (cut where it was silent
/// too long) gets fresh kernels, so the rows equal the kernels run per part; and a ticker's
/// forecasts still pending when it expires are never realised.
#[test]
fn expiring_trends_and_forecasts_match_their_kernels_on_1_2_4_workers() {
    use streamgauge::analytics::rolling::Extent;
    use streamgauge::analytics::trend::{Crossover, Trend};
    use streamgauge::dataflows::stock_forecast::{ForecastRow, Ticker};
    // Prices must be positive for `stock_forecast` (it skips others, state untouched).
    let readings: Vec<Reading> = readings()
        .into_iter()
        .map(|r| Reading::single(r.series, r.ts, r.values[0].1.abs() + 1.0))
        .collect();
    let parts = parts(&readings);
    const N: usize = 100;
    // (series, ts) -> (n, slope bits); crossovers as (series, ts, up).
    let mut want_trend: BTreeMap<(String, i64), (usize, u64)> = BTreeMap::new();
    let mut want_cross: BTreeSet<(String, i64, bool)> = BTreeSet::new();
    let (mut issued, mut realised) = (BTreeSet::new(), BTreeSet::new());
    // Forecasts realised by the per-series kernels with no TTL, absent with one.
    let mut whole_realised = BTreeSet::new();
    for (s, ps) in &parts {
        let series = Sym::new(s);
        for p in ps {
            let (mut tr, mut cr) = (Trend::new(Extent::Count(N)), Crossover::new(N / 5, N));
            let mut ticker = Ticker::new(5);
            for &(ts, v) in p {
                tr.push(ts, v);
                let fit = tr.fit();
                if fit.n >= 3 {
                    let slope = fit.slope().unwrap_or(0.0);
                    want_trend.insert((s.clone(), ts), (fit.n, slope.to_bits()));
                }
                if let Some(c) = cr.push(ts, v) {
                    want_cross.insert((s.clone(), ts, c.up));
                }
                ticker.update(&series, ts, v, &mut |row: ForecastRow| {
                    let line = serde_json::to_string(&row).unwrap();
                    if row.actual.is_some() {
                        realised.insert(line);
                    } else {
                        issued.insert(line);
                    }
                });
            }
        }
        let mut ticker = Ticker::new(5);
        for &(ts, v) in ps.iter().flatten() {
            ticker.update(&series, ts, v, &mut |row: ForecastRow| {
                if row.actual.is_some() {
                    whole_realised.insert(serde_json::to_string(&row).unwrap());
                }
            });
        }
    }
    assert!(want_cross.len() > 100, "crossovers: {}", want_cross.len());
    let dropped = whole_realised.difference(&realised).count();
    assert!(dropped > 50, "forecasts a TTL should drop: {dropped}");

    let tmp = tempfile::tempdir().unwrap();
    let set = |rows: Vec<serde_json::Value>| -> BTreeSet<String> {
        rows.iter().map(|v| v.to_string()).collect()
    };
    let canonical = |lines: &BTreeSet<String>| -> BTreeSet<String> {
        lines
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let (issued, realised) = (canonical(&issued), canonical(&realised));
    for w in [1, 2, 4] {
        let ttl = Some(TTL_MS);
        let out = run_to("trend", &readings, w, ttl, tmp.path());
        assert_eq!(
            got_silent(&out),
            want_silent(&parts, "value"),
            "{w} workers: trend's silences"
        );
        let rows = json_lines(&out, "trend");
        let got: BTreeMap<(String, i64), (usize, u64)> = rows
            .iter()
            .map(|v| {
                let key = (
                    v["series"].as_str().unwrap().to_string(),
                    v["ts"].as_i64().unwrap(),
                );
                let n = v["n"].as_u64().unwrap() as usize;
                (key, (n, v["slope"].as_f64().unwrap().to_bits()))
            })
            .collect();
        assert_eq!(got.len(), rows.len(), "{w} workers: a trend row twice");
        assert_eq!(got, want_trend, "{w} workers: trend rows");
        let cross: BTreeSet<(String, i64, bool)> = json_lines(&out, "crossovers")
            .iter()
            .map(|v| {
                (
                    v["series"].as_str().unwrap().to_string(),
                    v["ts"].as_i64().unwrap(),
                    v["cross"] == "up",
                )
            })
            .collect();
        assert_eq!(cross, want_cross, "{w} workers: crossovers");

        let out = run_to("stock_forecast", &readings, w, ttl, tmp.path());
        assert_eq!(
            got_silent(&out),
            want_silent(&parts, "price"),
            "{w} workers: stock_forecast's silences"
        );
        let got_issued = set(json_lines(&out, "forecasts"));
        assert!(got_issued == issued, "{w} workers: forecasts differ");
        let got_realised = set(json_lines(&out, "forecast_errors"));
        assert!(
            got_realised == realised,
            "{w} workers: realised errors differ"
        );
    }
}

/// Running total of a differential output's `diff`s per series, in time order, with the
/// time of every change.
fn changes(rows: &[serde_json::Value], series: &str) -> Vec<(i64, i64)> {
    let mut c: Vec<(i64, i64)> = rows
        .iter()
        .filter(|v| v["series"] == series)
        .map(|v| (v["time"].as_i64().unwrap(), v["diff"].as_i64().unwrap()))
        .collect();
    c.sort();
    c
}

#[test]
fn an_expired_outlier_leaves_the_set_and_the_top_k_while_the_input_runs() {
    // s/quiet: 40 calm readings a second apart, then a spike as its last reading (it is
    // anomalous from then on). s/clock: calm readings every second for an hour, carrying event
    // time far past s/quiet's expiry.
    let t0 = 1_700_000_000_000i64;
    let (quiet, clock) = (Sym::new("s/quiet"), Sym::new("s/clock"));
    let mut rng = SplitMix64(3);
    let mut readings = Vec::new();
    for i in 0..40 {
        readings.push(Reading::single(
            quiet,
            t0 + i * 1_000,
            5.0 + rng.normal() * 0.1,
        ));
    }
    let spike_ts = t0 + 40 * 1_000;
    readings.push(Reading::single(quiet, spike_ts, 50.0));
    for i in 0..3_600 {
        readings.push(Reading::single(
            clock,
            t0 + 500 + i * 1_000,
            7.0 + rng.normal() * 0.1,
        ));
    }
    readings.sort_by_key(|r| r.ts);
    let last_ts = readings.last().unwrap().ts;
    let gone_at = ((spike_ts + TTL_MS) / (TTL_MS / 4) + 1) * (TTL_MS / 4);
    // The top-k is a snapshot every second (the default `--top-every`): the spike counts
    // from the first snapshot after it; the expiry from its own time (a whole second).
    let spike_snapshot = (spike_ts / 1_000 + 1) * 1_000;
    assert_eq!(gone_at % 1_000, 0);

    let tmp = tempfile::tempdir().unwrap();
    for w in [1, 2, 4] {
        for ttl in [None, Some(TTL_MS)] {
            let out = tmp.path().join(format!("w{w}-{}", ttl.is_some()));
            let mut spec = RunSpec::new("sensor_outliers", Input::memory(readings.clone()));
            spec.cluster.workers = w;
            spec.top = 1;
            spec.state_ttl = ttl.map(|t| Duration::from_millis(t as u64));
            spec.output_dir = Some(out.clone());
            let report = common::run_ok(spec);
            // States held at the end: both series' without a TTL; none with one (the end of
            // the input expires them all).
            let held = if ttl.is_some() { 0 } else { 2 };
            assert_eq!(
                report.metrics.series_states, held,
                "{w} workers: states held"
            );
            // Both series go silent with a TTL (s/clock at the end of the input).
            let expired = if ttl.is_some() { 2 } else { 0 };
            assert_eq!(
                report.metrics.expired, expired,
                "{w} workers: expired states"
            );
            let read = |stem| json_lines(&out, stem);
            // Silent series: each once, with its last reading, at its expiry; none without
            // a TTL.
            let silent: Vec<(String, i64, i64)> = read("silent")
                .iter()
                .map(|v| {
                    (
                        v["series"].as_str().unwrap().to_string(),
                        v["last_ts"].as_i64().unwrap(),
                        v["time"].as_i64().unwrap(),
                    )
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let want_silent = match ttl {
                None => vec![],
                Some(_) => {
                    let clock_last = t0 + 500 + 3_599 * 1_000;
                    let clock_gone = ((clock_last + TTL_MS) / (TTL_MS / 4) + 1) * (TTL_MS / 4);
                    vec![
                        ("s/clock".to_string(), clock_last, clock_gone),
                        ("s/quiet".to_string(), spike_ts, gone_at),
                    ]
                }
            };
            assert_eq!(silent, want_silent, "{w} workers: silent series");
            assert_eq!(
                read("silent").len(),
                want_silent.len(),
                "{w} workers: once each"
            );
            let set = changes(&read("outliers"), "s/quiet");
            let top = changes(&read("outliers_top"), "s/quiet");
            let clock_top = changes(&read("outliers_top"), "s/clock");
            // Membership at time t: the sum of the changes at or before it.
            let at = |c: &[(i64, i64)], t: i64| -> i64 {
                c.iter().filter(|x| x.0 <= t).map(|x| x.1).sum()
            };
            assert_eq!(
                at(&set, spike_ts),
                1,
                "{w} workers: s/quiet in the set: {set:?}"
            );
            assert_eq!(
                at(&top, spike_snapshot - 1),
                0,
                "{w} workers: s/quiet not yet the top-1: {top:?}"
            );
            assert_eq!(
                at(&top, spike_snapshot),
                1,
                "{w} workers: s/quiet the top-1: {top:?}"
            );
            match ttl {
                None => {
                    assert_eq!(set.len(), 1, "{w} workers: no TTL, s/quiet stays: {set:?}");
                    assert!(
                        top.iter().all(|c| c.0 <= spike_snapshot),
                        "{w} workers: no TTL, top-1 stays: {top:?}"
                    );
                }
                Some(_) => {
                    // It leaves at its expiry, long before the input ends, and s/clock takes
                    // the top-1 (its state expires too, at the end of the input).
                    assert!(gone_at < last_ts - 3 * TTL_MS);
                    assert_eq!(set.len(), 2, "{w} workers: {set:?}");
                    assert_eq!(set[1], (gone_at, -1), "{w} workers: the set");
                    assert_eq!(at(&top, gone_at - 1), 1, "{w} workers: {top:?}");
                    assert_eq!(at(&top, gone_at), 0, "{w} workers: {top:?}");
                    assert_eq!(at(&clock_top, gone_at), 1, "{w} workers: {clock_top:?}");
                }
            }
        }
    }
}

/// `run anomaly` from the command line: `--param` and `--state-ttl` reach the detectors.
#[test]
fn run_takes_detector_parameters_and_a_state_ttl_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    // Scores of the first 150 readings of every series (the default warm-up) by run.
    let first_scores = |name: &str, extra: &[&str]| -> Vec<f64> {
        let out = tmp.path().join(name);
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_streamgauge"))
            .args(["run", "anomaly", "--dataset", "nab:artificialWithAnomaly"])
            .args(["--no-dashboard", "--output"])
            .arg(&out)
            .args(extra)
            .env("STREAMGAUGE_DATA", common::data_dir())
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let mut by: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for v in json_lines(&out, "anomaly") {
            by.entry(v["series"].as_str().unwrap().to_string())
                .or_default()
                .push((v["ts"].as_i64().unwrap(), v["score"].as_f64().unwrap()));
        }
        assert_eq!(by.len(), 6, "{name}: series");
        by.into_values()
            .flat_map(|mut rows| {
                rows.sort_by_key(|r| r.0);
                rows.into_iter().take(150).map(|r| r.1)
            })
            .collect()
    };
    let defaults = first_scores("defaults", &[]);
    assert!(defaults.iter().all(|&s| s == 0.0), "the default warm-up");
    // A warm-up of 10 readings scores the others.
    let short = first_scores("warmup10", &["--param", "WARMUP=10"]);
    assert!(
        short.iter().any(|&s| s > 0.0),
        "--param WARMUP=10 had no effect"
    );
    // The series read every 5 minutes: with a TTL of 1 ms every reading starts a fresh
    // detector, which is still warming up.
    let fresh = first_scores("ttl", &["--param", "WARMUP=10", "--state-ttl", "1ms"]);
    assert!(
        fresh.iter().all(|&s| s == 0.0),
        "--state-ttl 1ms had no effect"
    );
}

#[test]
fn a_stopped_live_run_says_only_the_series_that_really_went_silent() {
    // Six sensors on a live topic, one reading a second each; "quiet" stops after 100 s.
    // With a 30 s TTL, "quiet" is silent well before the run stops; the other five report
    // until the stop, which ends the stream but is no silence: no `silent` row for them, and
    // `sensor_outliers`' outlier set keeps its members (no retraction at the stop). Before
    // stops were told apart from the end of the input, every series went silent there.
    use streamgauge::kafka::broker::EmbeddedBroker;
    use streamgauge::kafka::producer::ReadingProducer;
    use streamgauge::kafka::ClientSettings;
    let broker = EmbeddedBroker::start(1).unwrap();
    let t0 = 1_700_000_000_000i64;
    let mut items = Vec::new();
    for i in 0..400i64 {
        for s in ["a", "b", "c", "d", "e", "quiet"] {
            if s == "quiet" && i >= 100 {
                continue;
            }
            // "e" jumps far from its level at the end: an outlier still in the set at the stop.
            let v = if s == "e" && i >= 395 {
                1e6
            } else {
                (i % 7) as f64
            };
            items.push(Reading::single(Sym::new(s), t0 + i * 1000, v));
        }
    }
    for (w, dataflow) in [(1, "anomaly"), (2, "anomaly"), (2, "sensor_outliers")] {
        let topic = format!("stop{w}{dataflow}");
        broker.create_topic(&topic, 2).unwrap();
        let mut p = ReadingProducer::new(&ClientSettings::new(broker.bootstrap()), &topic).unwrap();
        for r in &items {
            p.send(r).unwrap();
        }
        p.flush(Duration::from_secs(30)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut spec = RunSpec::new(dataflow, common::kafka_input(broker.bootstrap(), &topic));
        if let Input::Kafka(k) = &mut spec.input {
            k.until_end = false;
        }
        spec.cluster.workers = w;
        spec.state_ttl = Some(Duration::from_secs(30));
        spec.output_dir = Some(dir.path().to_path_buf());
        let (metrics, stop) = (spec.metrics.clone(), spec.stop.clone());
        let run = std::thread::spawn(move || common::run_ok(spec));
        let started = std::time::Instant::now();
        while metrics.snapshot().readings_in < items.len() as u64 {
            assert!(started.elapsed() < Duration::from_secs(60), "not all read");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        run.join().unwrap();
        let silent: Vec<(String, i64)> = json_lines(dir.path(), "silent")
            .iter()
            .map(|v| {
                (
                    v["series"].as_str().unwrap().to_string(),
                    v["last_ts"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            silent,
            vec![("quiet".to_string(), t0 + 99_000)],
            "{dataflow} on {w} workers"
        );
        if dataflow == "sensor_outliers" {
            let rows = json_lines(dir.path(), "outliers");
            let net: i64 = rows
                .iter()
                .filter(|v| v["series"] == "e")
                .map(|v| v["diff"].as_i64().unwrap())
                .sum();
            assert_eq!(net, 1, "e is still in the outlier set: {rows:?}");
        }
    }
}
