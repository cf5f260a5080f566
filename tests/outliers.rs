//! `sensor_outliers` against a from-scratch oracle on 1, 2 and 4 workers: per-reading
//! statistics and scores, and the differential outputs (outlier set, top-k, reference join)
//! accumulated over time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use streamgauge::analytics::forecast::RlsAr;
use streamgauge::analytics::outlier::z_to_score;
use streamgauge::engine::{Input, RunSpec};
use streamgauge::record::Reading;

const N: usize = 100;
const THRESHOLD: f64 = 4.0;
const TOP: usize = 5;

#[derive(Debug, Clone)]
struct Want {
    z: f64,
    robust_z: f64,
    score: f64,
    anomalous: bool,
}

/// Rows by (series, ts, value bits).
type Rows = BTreeMap<(String, i64, u64), Want>;
/// Forecast steps by (series, issued_ts, step): (ts, point, lower, upper).
type Steps = BTreeMap<(String, i64, usize), (i64, f64, f64, f64)>;
const HORIZON: usize = 5;
/// Each series' last (score, anomalous).
type Last = BTreeMap<String, (f64, bool)>;
/// A collection's history: the net diff per (record, event time), zeros left out.
type History = BTreeMap<(String, i64), i64>;

fn median(sorted: &[f64]) -> f64 {
    let k = sorted.len();
    if k % 2 == 1 {
        sorted[k / 2]
    } else {
        0.5 * (sorted[k / 2 - 1] + sorted[k / 2])
    }
}

/// Per (series, ts, value bits): the batch statistics; plus each series' last score and
/// state, and the outlier set's history (a series enters at the time of a reading that is
/// anomalous after one that was not, and leaves at the time of the next one that is not).
fn oracle(readings: &[Reading]) -> (Rows, Last, Steps, History) {
    let mut steps = Steps::new();
    let mut history = History::new();
    let mut by: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for r in readings {
        by.entry(&r.series).or_default().push((r.ts, r.values[0].1));
    }
    let mut rows = BTreeMap::new();
    let mut last = BTreeMap::new();
    let enter = z_to_score(THRESHOLD);
    for (s, mut v) in by {
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut rls = RlsAr::new(2, 0.995, 1e-3);
        let mut state = (0.0, false);
        for i in 0..v.len() {
            let x = v[i].1;
            let prev: Vec<f64> = v[i.saturating_sub(N)..i].iter().map(|p| p.1).collect();
            let k = prev.len() as f64;
            let (mut z, mut robust_z) = (0.0, 0.0);
            if prev.len() >= 10 {
                let mean = prev.iter().sum::<f64>() / k;
                let std = (prev.iter().map(|p| (p - mean) * (p - mean)).sum::<f64>() / k).sqrt();
                if std > 0.0 {
                    z = (x - mean) / std;
                }
                let mut sorted = prev.clone();
                sorted.sort_by(f64::total_cmp);
                let m = median(&sorted);
                let mut dev: Vec<f64> = sorted.iter().map(|p| (p - m).abs()).collect();
                dev.sort_by(f64::total_cmp);
                let mad = median(&dev);
                if mad > 0.0 {
                    robust_z = (x - m) / (1.482_602_218_505_602 * mad);
                }
            }
            // The residual model is a recursion; its kernel is checked against batch least
            // squares in tests/kernels.rs, so the oracle runs it from scratch per series.
            let f = rls.forecast(1);
            rls.update(x);
            // The forecast path issued after this reading, at the latest spacing: step h's
            // interval is the model's own h-step forecast (σ² Σ_{j<h} ψ_j²).
            if i > 0 && v[i].0 > v[i - 1].0 {
                let gap = v[i].0 - v[i - 1].0;
                for h in 1..=HORIZON {
                    if let Some(f) = rls.forecast(h) {
                        steps.insert(
                            (s.to_string(), v[i].0, h),
                            (v[i].0 + gap * h as i64, f.point, f.lower, f.upper),
                        );
                    }
                }
            }
            let residual_z = f
                .filter(|f| f.std > 0.0)
                .map_or(0.0, |f| (x - f.point) / f.std);
            let score = z_to_score(z)
                .max(z_to_score(robust_z))
                .max(z_to_score(residual_z));
            let anomalous = score >= enter;
            if anomalous != state.1 {
                *history.entry((s.to_string(), v[i].0)).or_insert(0) +=
                    if anomalous { 1 } else { -1 };
            }
            state = (score, anomalous);
            rows.insert(
                (s.to_string(), v[i].0, x.to_bits()),
                Want {
                    z,
                    robust_z,
                    score,
                    anomalous,
                },
            );
        }
        last.insert(s.to_string(), state);
    }
    history.retain(|_, d| *d != 0);
    (rows, last, steps, history)
}

/// The top-k's history, from scratch: at every snapshot time `S` (a multiple of `every`
/// after some reading), the `k` series with the highest latest score among the readings
/// before `S` (ties by name), and the rows that leave and enter against the previous
/// snapshot, keyed `series|score bits`. `scores`: (series, ts, value bits) -> score.
fn top_history(scores: &BTreeMap<(String, i64, u64), f64>, k: usize, every: i64) -> History {
    // Readings in the engine's order: by time, then value.
    let mut readings: Vec<(i64, u64, &str, f64)> = scores
        .iter()
        .map(|((s, ts, bits), score)| (*ts, *bits, s.as_str(), *score))
        .collect();
    readings.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(f64::from_bits(a.1).total_cmp(&f64::from_bits(b.1)))
    });
    let snapshot = |ts: i64| (ts.div_euclid(every) + 1) * every;
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    let mut shown: BTreeSet<String> = BTreeSet::new();
    let mut out = History::new();
    let mut i = 0;
    while i < readings.len() {
        let at = snapshot(readings[i].0);
        while i < readings.len() && readings[i].0 < at {
            latest.insert(readings[i].2, readings[i].3.max(0.0).to_bits());
            i += 1;
        }
        let mut ranked: Vec<(&str, u64)> = latest.iter().map(|(s, b)| (*s, *b)).collect();
        ranked.sort_by(|a, b| {
            f64::from_bits(b.1)
                .total_cmp(&f64::from_bits(a.1))
                .then(a.0.cmp(b.0))
        });
        let now: BTreeSet<String> = ranked
            .iter()
            .take(k)
            .map(|(s, b)| format!("{s}|{b}"))
            .collect();
        for gone in shown.difference(&now) {
            *out.entry((gone.clone(), at)).or_insert(0) -= 1;
        }
        for new in now.difference(&shown) {
            *out.entry((new.clone(), at)).or_insert(0) += 1;
        }
        shown = now;
    }
    out.retain(|_, d| *d != 0);
    out
}

/// A `outliers_top` row's key for [`top_history`].
fn top_key(v: &serde_json::Value) -> String {
    format!(
        "{}|{}",
        v["series"].as_str().unwrap(),
        v["score"].as_f64().unwrap().to_bits()
    )
}

/// An output's rows as a history keyed by `key(row)` and the row's `time`, consolidated.
fn history(dir: &Path, stem: &str, key: impl Fn(&serde_json::Value) -> String) -> History {
    let mut h = History::new();
    for line in common::read_lines(dir, stem) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        *h.entry((key(&v), v["time"].as_i64().unwrap())).or_insert(0) +=
            v["diff"].as_i64().unwrap();
    }
    h.retain(|_, d| *d != 0);
    h
}

/// The history of the outlier set joined with a reference table whose location for series
/// `s` at time `t` is `loc(s, t)` and changes only at `versions`: at every time where either
/// side changes, the joined records leaving and entering.
fn joined_history(
    set: &History,
    versions: &[(String, i64)],
    loc: impl Fn(&str, i64) -> String,
) -> History {
    let mut times: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for (s, t) in set.keys() {
        times.entry(s).or_default().insert(*t);
    }
    for (s, t) in versions {
        times.entry(s).or_default().insert(*t);
    }
    let mut out = History::new();
    for (s, ts) in times {
        let (mut member, mut was) = (0, None::<String>);
        for t in ts {
            member += set.get(&(s.to_string(), t)).copied().unwrap_or(0);
            let now = (member == 1).then(|| format!("{s}@{}", loc(s, t)));
            if now != was {
                if let Some(w) = was {
                    *out.entry((w, t)).or_insert(0) -= 1;
                }
                if let Some(n) = now.clone() {
                    *out.entry((n, t)).or_insert(0) += 1;
                }
            }
            was = now;
        }
    }
    out.retain(|_, d| *d != 0);
    out
}

/// An `outlier_scores` row's (series, ts, value bits), as the oracles key them.
fn row_key(v: &serde_json::Value) -> (String, i64, u64) {
    (
        v["series"].as_str().unwrap().to_string(),
        v["ts"].as_i64().unwrap(),
        v["value"].as_f64().unwrap().to_bits(),
    )
}

/// Accumulates `diff`s of an output by a key; asserts every time's running total is 0 or 1.
fn accumulate(
    dir: &Path,
    stem: &str,
    key: impl Fn(&serde_json::Value) -> String,
) -> BTreeSet<String> {
    let mut by_time: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    for line in common::read_lines(dir, stem) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        by_time
            .entry(v["time"].as_i64().unwrap())
            .or_default()
            .push((key(&v), v["diff"].as_i64().unwrap()));
    }
    let mut acc: BTreeMap<String, i64> = BTreeMap::new();
    for (t, changes) in by_time {
        for (k, d) in changes {
            *acc.entry(k).or_insert(0) += d;
        }
        assert!(
            acc.values().all(|c| *c == 0 || *c == 1),
            "{stem} at {t}: {acc:?}"
        );
    }
    acc.into_iter()
        .filter(|(_, c)| *c == 1)
        .map(|(k, _)| k)
        .collect()
}

/// `--quantiles sketch`: every reading's robust z equals its kernel's (`RobustZ::sketched`,
/// itself tested against exact windows), on 1, 2 and 4 workers, and stays close to the
/// exact robust z.
#[test]
fn sketched_robust_scores_equal_their_kernel_on_1_2_4_workers() {
    use streamgauge::analytics::outlier::RobustZ;
    use streamgauge::analytics::sketch::DEFAULT_BITS;
    use streamgauge::dataflows::Quantiles;
    const WINDOW: usize = 1000;
    let mut readings = common::load("nab:artificialWithAnomaly");
    readings.sort_by_key(|r| r.ts);
    let mut by: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for r in &readings {
        by.entry(r.series.to_string())
            .or_default()
            .push((r.ts, r.values[0].1));
    }
    let mut want: BTreeMap<(String, i64, u64), (f64, f64)> = BTreeMap::new();
    for (s, mut v) in by {
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut sketched = RobustZ::sketched(WINDOW, 10, DEFAULT_BITS);
        let mut exact = RobustZ::new(WINDOW, 10);
        for (ts, x) in v {
            let z = sketched.z(ts, x).unwrap_or(0.0);
            let e = exact.z(ts, x).unwrap_or(0.0);
            want.insert((s.clone(), ts, x.to_bits()), (z, e));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    for w in [1, 2, 4] {
        let out = tmp.path().join(format!("w{w}"));
        let mut spec = RunSpec::new("sensor_outliers", Input::memory(readings.clone()));
        spec.cluster.workers = w;
        spec.readings = WINDOW;
        spec.quantiles = Quantiles::Sketch;
        spec.output_dir = Some(out.clone());
        common::run_ok(spec);
        let (mut seen, mut rel) = (0, Vec::new());
        for line in common::read_lines(&out, "outlier_scores") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let key = row_key(&v);
            let (z, exact) = want[&key];
            let got = v["robust_z"].as_f64().unwrap();
            assert!(
                (got - z).abs() <= 1e-9 * z.abs().max(1.0),
                "{w} workers {key:?}: {got} vs kernel {z}"
            );
            if exact.abs() > 1.0 {
                rel.push(((got - exact) / exact).abs());
            }
            seen += 1;
        }
        assert_eq!(seen, want.len(), "{w} workers: rows");
        rel.sort_by(f64::total_cmp);
        let p50 = rel[rel.len() / 2];
        eprintln!("{w} workers: sketched robust z vs exact: median relative difference {p50:.2e}, max {:.2e}", rel[rel.len() - 1]);
        assert!(
            p50 < 0.01,
            "{w} workers: median relative error vs exact {p50}"
        );
    }
}

#[test]
fn sensor_outliers_match_oracle_and_sets_accumulate_on_1_2_4_workers() {
    let mut readings = common::load("nab:realKnownCause");
    readings.extend(common::load("nab:artificialWithAnomaly"));
    readings.sort_by_key(|r| r.ts);
    let (want, last, want_steps, want_history) = oracle(&readings);

    // Reference table: every series has a location; machine_temperature moves mid-run.
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("ref.csv");
    let mut table = String::from("series,location,unit,valid_from\n");
    let mut final_ref = BTreeMap::new();
    for s in last.keys() {
        table += &format!("{s},site-{},u,\n", s.len() % 3);
        final_ref.insert(s.clone(), format!("site-{}", s.len() % 3));
    }
    // It moves 1 ms after it first enters the outlier set, while it is in it, so the
    // joined history must swap its location at that time.
    let moved = "realKnownCause/machine_temperature_system_failure";
    let moved_at = 1 + want_history
        .iter()
        .find(|((s, _), d)| s == moved && **d == 1)
        .map(|((_, t), _)| *t)
        .expect("the moved series enters the set");
    table += &format!("{moved},site-moved,u,{moved_at}\n");
    final_ref.insert(moved.to_string(), "site-moved".into());
    std::fs::write(&reference, table).unwrap();

    let want_set: BTreeSet<String> = last
        .iter()
        .filter(|(_, s)| s.1)
        .map(|(k, _)| k.clone())
        .collect();
    let mut ranked: Vec<(&String, f64)> = last.iter().map(|(k, s)| (k, s.0)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    // Scores are compared within 1e-7 above; the ranking must leave a clear gap at k.
    assert!(ranked[TOP - 1].1 - ranked[TOP].1 > 1e-6);
    let want_top: BTreeSet<String> = ranked
        .iter()
        .take(TOP)
        .map(|(k, _)| k.to_string())
        .collect();
    let want_ref: BTreeSet<String> = want_set
        .iter()
        .map(|s| format!("{s}@{}", final_ref[s]))
        .collect();
    assert!(
        !want_set.is_empty(),
        "the data must leave some series anomalous"
    );
    let location = |s: &str, t: i64| {
        if s == moved && t >= moved_at {
            "site-moved".to_string()
        } else {
            format!("site-{}", s.len() % 3)
        }
    };
    let want_ref_history =
        joined_history(&want_history, &[(moved.to_string(), moved_at)], location);
    assert!(
        want_history.len() > 10 * want_set.len(),
        "series must enter and leave the set many times: {} changes",
        want_history.len()
    );
    assert_eq!(
        want_ref_history.get(&(format!("{moved}@site-moved"), moved_at)),
        Some(&1),
        "the move happens while the series is in the set"
    );

    let mut first_top_history = None;
    for w in [1, 2, 4] {
        let out = tmp.path().join(format!("w{w}"));
        let mut spec = RunSpec::new("sensor_outliers", Input::memory(readings.clone()));
        spec.cluster.workers = w;
        spec.readings = N;
        spec.threshold = THRESHOLD;
        spec.top = TOP;
        spec.horizon = HORIZON;
        spec.reference = Some(reference.clone());
        spec.output_dir = Some(out.clone());
        common::run_ok(spec);

        let mut seen = 0;
        let mut got_scores = BTreeMap::new();
        for line in common::read_lines(&out, "outlier_scores") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let key = row_key(&v);
            let o = want
                .get(&key)
                .unwrap_or_else(|| panic!("unexpected row {key:?}"));
            got_scores.insert(key.clone(), v["score"].as_f64().unwrap());
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-7 * b.abs().max(1.0);
            assert!(
                close(v["z"].as_f64().unwrap(), o.z),
                "{key:?} z {} vs {}",
                v["z"],
                o.z
            );
            assert!(
                close(v["robust_z"].as_f64().unwrap(), o.robust_z),
                "{key:?} robust"
            );
            assert!(
                close(v["score"].as_f64().unwrap(), o.score),
                "{key:?} score"
            );
            if (o.score - z_to_score(THRESHOLD)).abs() > 1e-12 {
                assert_eq!(v["anomalous"].as_bool().unwrap(), o.anomalous, "{key:?}");
            }
            seen += 1;
        }
        assert_eq!(seen, want.len(), "{w} workers: rows");

        // Forecast paths, step by step.
        let mut got_steps = 0;
        for line in common::read_lines(&out, "forecasts") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let series = v["series"].as_str().unwrap().to_string();
            let issued = v["issued_ts"].as_i64().unwrap();
            for (i, st) in v["steps"].as_array().unwrap().iter().enumerate() {
                let key = (series.clone(), issued, i + 1);
                let (ts, point, lower, upper) = want_steps
                    .get(&key)
                    .unwrap_or_else(|| panic!("unexpected forecast {key:?}"));
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-7 * b.abs().max(1.0);
                assert_eq!(st[0].as_i64().unwrap(), *ts, "{key:?} ts");
                assert!(close(st[1].as_f64().unwrap(), *point), "{key:?} point");
                assert!(close(st[2].as_f64().unwrap(), *lower), "{key:?} lower");
                assert!(close(st[3].as_f64().unwrap(), *upper), "{key:?} upper");
                got_steps += 1;
            }
        }
        assert!(!want_steps.is_empty());
        assert_eq!(got_steps, want_steps.len(), "{w} workers: forecast steps");

        let field = |v: &serde_json::Value| v["series"].as_str().unwrap().to_string();
        assert_eq!(
            accumulate(&out, "outliers", field),
            want_set,
            "{w} workers: outlier set"
        );
        let top = accumulate(&out, "outliers_top", field);
        assert_eq!(top, want_top, "{w} workers: top-{TOP}");
        // Snapshots every second of event time, each equal to a from-scratch ranking of
        // the run's own per-reading scores (checked against the oracle's above, within
        // 1e-7: the ranking needs their exact bits).
        let want_top_history = top_history(&got_scores, TOP, 1_000);
        assert!(
            want_top_history.len() > 100,
            "the ranking must change often: {} changes",
            want_top_history.len()
        );
        let got_top_history = history(&out, "outliers_top", top_key);
        assert_eq!(
            got_top_history, want_top_history,
            "{w} workers: top-{TOP} history"
        );
        match &first_top_history {
            None => first_top_history = Some(got_top_history),
            Some(h) => assert_eq!(&got_top_history, h, "{w} workers: top-{TOP} vs 1 worker"),
        }
        let joined = accumulate(&out, "outliers_ref", |v| {
            format!(
                "{}@{}",
                v["series"].as_str().unwrap(),
                v["location"].as_str().unwrap()
            )
        });
        assert_eq!(joined, want_ref, "{w} workers: reference join");

        // The set and the join are event-time histories: every entry and exit at the time
        // of the reading (or reference version) that made it, whatever the batching.
        assert_eq!(
            history(&out, "outliers", field),
            want_history,
            "{w} workers: outlier set history"
        );
        let at_location = |v: &serde_json::Value| {
            format!(
                "{}@{}",
                v["series"].as_str().unwrap(),
                v["location"].as_str().unwrap()
            )
        };
        assert_eq!(
            history(&out, "outliers_ref", at_location),
            want_ref_history,
            "{w} workers: reference join history"
        );
    }
}

#[test]
fn a_bad_reference_table_is_reported_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("ref.csv");
    std::fs::write(&p, "series,location,unit\na,b\n").unwrap();
    let e = streamgauge::engine::reference::load(&p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2") && e.contains("series,location,unit"),
        "{e}"
    );
    std::fs::write(&p, "series,location,unit,valid_from\na,b,c,yesterday\n").unwrap();
    let e = streamgauge::engine::reference::load(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("valid_from"), "{e}");
}

/// A reference table edited while a live run is going replaces the old one from the frontier
/// on: the joined row of an anomalous series is retracted with its old location and inserted
/// with its new one, at the same time.
#[test]
fn a_reference_table_edited_during_a_live_run_takes_effect_from_the_frontier() {
    use std::time::{Duration, Instant};
    use streamgauge::kafka::broker::EmbeddedBroker;
    use streamgauge::kafka::producer::ReadingProducer;
    use streamgauge::kafka::ClientSettings;

    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("live", 1).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("ref.csv");
    std::fs::write(
        &reference,
        "series,location,unit\ns/a,site-1,C\ns/b,site-1,C\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let mut spec = RunSpec::new(
        "sensor_outliers",
        common::kafka_input(broker.bootstrap(), "live"),
    );
    if let Input::Kafka(k) = &mut spec.input {
        k.until_end = false;
    }
    spec.readings = 20;
    spec.reference = Some(reference.clone());
    spec.output_dir = Some(out.clone());
    let (metrics, stop) = (spec.metrics.clone(), spec.stop.clone());
    let run = std::thread::spawn(move || common::run_ok(spec));

    let mut p = ReadingProducer::new(&ClientSettings::new(broker.bootstrap()), "live").unwrap();
    let t0 = 1_700_000_000_000i64;
    let mut sent = 0u64;
    let send = |p: &mut ReadingProducer, sent: &mut u64, series: &str, sec: i64, v: f64| {
        p.send(&Reading::single(series.into(), t0 + sec * 1000, v))
            .unwrap();
        *sent += 1;
    };
    // s/a: 30 calm readings, then a spike as its latest reading; s/b carries time on.
    for i in 0..30 {
        send(&mut p, &mut sent, "s/a", i, 10.0 + (i % 2) as f64);
    }
    send(&mut p, &mut sent, "s/a", 30, 1000.0);
    for i in 0..40 {
        send(&mut p, &mut sent, "s/b", i, 5.0 + (i % 3) as f64);
    }
    p.flush(Duration::from_secs(10)).unwrap();
    let wait = |n: u64| {
        let t = Instant::now();
        while metrics.snapshot().readings_in < n {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "only {} read",
                metrics.snapshot().readings_in
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(sent);
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(
        &reference,
        "series,location,unit\ns/a,site-2,C\ns/b,site-1,C\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // More time so the operators run and the frontier moves past the change.
    for i in 40..60 {
        send(&mut p, &mut sent, "s/b", i, 5.0 + (i % 3) as f64);
    }
    p.flush(Duration::from_secs(10)).unwrap();
    wait(sent);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    run.join().unwrap();

    let rows: Vec<serde_json::Value> = common::read_lines(&out, "outliers_ref")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |loc: &str, diff: i64| {
        rows.iter()
            .find(|v| v["series"] == "s/a" && v["location"] == loc && v["diff"] == diff)
            .unwrap_or_else(|| panic!("no ({loc}, {diff}) in {rows:?}"))["time"]
            .as_i64()
            .unwrap()
    };
    let inserted = find("site-1", 1);
    let retracted = find("site-1", -1);
    assert_eq!(
        find("site-2", 1),
        retracted,
        "old and new versions swap at one time"
    );
    assert!(retracted > inserted && retracted >= t0 + 30_000, "{rows:?}");
    let set = accumulate(&out, "outliers_ref", |v| {
        format!(
            "{}@{}",
            v["series"].as_str().unwrap(),
            v["location"].as_str().unwrap()
        )
    });
    assert_eq!(set, BTreeSet::from(["s/a@site-2".to_string()]));
}
