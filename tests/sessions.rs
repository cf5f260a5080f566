//! `sessions` through the engine on 1, 2 and 4 workers, against a batch oracle that sorts
//! each series' readings and cuts them plainly: random series with gaps on both sides of
//! `--gap` (exactly the gap, and a millisecond more), two values per reading in some series,
//! out-of-order arrival; excursions above a limit and inside a band; and heat spells in a
//! real weather series.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use streamgauge::dataflows::sessions::SessionParams;
use streamgauge::dataset::generate::SplitMix64;
use streamgauge::engine::{Input, RunSpec};
use streamgauge::record::{Reading, Sym};

/// (series, field, start, end) -> (count, mean, min, max, std).
type Sessions = BTreeMap<(String, String, i64, i64), (u64, [f64; 4])>;

/// The sessions of `readings` cut by `p`, from scratch: per series, readings sorted as the
/// engine hands them over (event time, ties by first value), then per value name a plain
/// walk.
fn oracle(readings: &[Reading], p: &SessionParams) -> Sessions {
    let mut by: BTreeMap<String, Vec<&Reading>> = BTreeMap::new();
    for r in readings {
        by.entry(r.series.to_string()).or_default().push(r);
    }
    let mut out = Sessions::new();
    let mut close = |s: &str, f: &str, xs: &mut Vec<(i64, f64)>| {
        if xs.is_empty() {
            return;
        }
        let n = xs.len() as f64;
        let vals: Vec<f64> = xs.iter().map(|x| x.1).collect();
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let min = vals.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let key = (s.to_string(), f.to_string(), xs[0].0, xs[xs.len() - 1].0);
        let std = if xs.len() < 2 { 0.0 } else { var.sqrt() };
        assert!(out
            .insert(key, (xs.len() as u64, [mean, min, max, std]))
            .is_none());
        xs.clear();
    };
    for (s, mut rs) in by {
        rs.sort_by(|a, b| {
            a.ts.cmp(&b.ts)
                .then_with(|| a.values[0].1.total_cmp(&b.values[0].1))
        });
        let mut open: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for r in rs {
            for (f, v) in &r.values {
                let xs = open.entry(f.to_string()).or_default();
                if !p.admits(*v) {
                    close(&s, f, xs);
                    continue;
                }
                let paused = xs.last().is_some_and(|&(last, _)| r.ts - last > p.gap_ms);
                let too_long = xs
                    .first()
                    .is_some_and(|&(first, _)| p.max_ms.is_some_and(|m| r.ts - first > m));
                if paused || too_long {
                    close(&s, f, xs);
                }
                xs.push((r.ts, *v));
            }
        }
        for (f, mut xs) in open {
            close(&s, &f, &mut xs);
        }
    }
    out
}

fn run(readings: Vec<Reading>, p: SessionParams, workers: usize, dir: &Path) -> Sessions {
    let mut spec = RunSpec::new("sessions", Input::memory(readings));
    spec.cluster.workers = workers;
    spec.sessions = p;
    spec.output_dir = Some(dir.to_path_buf());
    let report = common::run_ok(spec);
    assert_eq!(report.metrics.late, 0, "nothing is late");
    let mut got = Sessions::new();
    for l in common::read_lines(dir, "sessions") {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        let key = (
            v["series"].as_str().unwrap().to_string(),
            v["field"].as_str().unwrap().to_string(),
            v["start"].as_i64().unwrap(),
            v["end"].as_i64().unwrap(),
        );
        let stats = ["mean", "min", "max", "std"].map(|k| v[k].as_f64().unwrap());
        assert!(
            got.insert(key, (v["count"].as_u64().unwrap(), stats))
                .is_none(),
            "a session twice: {l}"
        );
    }
    got
}

fn assert_same(got: &Sessions, want: &Sessions, what: &str) {
    let (gk, wk): (Vec<_>, Vec<_>) = (got.keys().collect(), want.keys().collect());
    if gk != wk {
        let missing: Vec<_> = want
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(5)
            .collect();
        panic!(
            "{what}: {} sessions, want {}; missing {missing:?}, extra {extra:?}",
            got.len(),
            want.len()
        );
    }
    for (k, (n, g)) in got {
        let (m, w) = &want[k];
        assert_eq!(n, m, "{what}: count of {k:?}");
        for (a, b) in g.iter().zip(w) {
            assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                "{what}: {k:?}: {g:?} against {w:?}"
            );
        }
    }
}

/// Random series: bursts of readings 0.1-2 s apart, pauses of 5-120 s, and pauses of exactly
/// the gap and of the gap plus 1 ms; every fifth series has a second value. Returned in
/// event-time order and shuffled within 3 s (the lateness is 5 s).
fn random_input(gap: i64) -> (Vec<Reading>, Vec<Reading>) {
    let mut rng = SplitMix64(2026);
    let mut readings = Vec::new();
    for s in 0..80 {
        let series = Sym::new(&format!("dev/{s:02}"));
        let (a, b) = (Sym::new("level"), Sym::new("rate"));
        let mut ts = 1_700_000_000_000i64 + rng.below(5_000) as i64;
        let mut x = 0.0f64;
        for _ in 0..600 {
            ts += match rng.below(40) {
                0 => gap,
                1 => gap + 1,
                2 | 3 => 5_000 + rng.below(115_000) as i64,
                4 => 0, // a tie in time (values differ)
                _ => 100 + rng.below(1_900) as i64,
            };
            x += rng.normal();
            let mut r = Reading::single(series, ts, x + rng.below(1000) as f64 * 1e-6);
            if s % 5 == 0 {
                r.values.push((b, -x));
            } else {
                r.values[0].0 = a;
            }
            readings.push(r);
        }
    }
    readings.sort_by_key(|r| r.ts);
    let mut keyed: Vec<(i64, Reading)> = readings
        .iter()
        .map(|r| (r.ts + rng.below(3_000) as i64, r.clone()))
        .collect();
    keyed.sort_by_key(|k| k.0);
    let shuffled: Vec<Reading> = keyed.into_iter().map(|k| k.1).collect();
    assert!(shuffled.windows(2).filter(|w| w[0].ts > w[1].ts).count() > 1_000);
    (readings, shuffled)
}

#[test]
fn sessions_split_by_the_gap_equal_a_batch_oracle_on_1_2_4_workers() {
    let gap = 10_000;
    let p = SessionParams {
        gap_ms: gap,
        ..SessionParams::default()
    };
    let (readings, shuffled) = random_input(gap);
    let want = oracle(&readings, &p);
    // The boundary is exercised both ways: a pause of exactly the gap joins, one of a
    // millisecond more splits.
    assert!(want.len() > 2_000, "{} sessions", want.len());
    let joined_at_gap = readings
        .windows(2)
        .filter(|w| w[0].series == w[1].series && w[1].ts - w[0].ts == gap)
        .count();
    assert!(want.values().filter(|(n, _)| *n > 1).count() > 500 && joined_at_gap > 0);
    let tmp = tempfile::tempdir().unwrap();
    for w in [1, 2, 4] {
        let got = run(shuffled.clone(), p, w, &tmp.path().join(format!("w{w}")));
        assert_same(&got, &want, &format!("{w} workers"));
    }
    // A different gap gives different sessions (the flag is used).
    let wider = SessionParams {
        gap_ms: 60_000,
        ..p
    };
    let got = run(readings.clone(), wider, 2, &tmp.path().join("wider"));
    assert_same(&got, &oracle(&readings, &wider), "gap 60s");
    assert!(got.len() < want.len());
}

#[test]
fn excursions_above_a_limit_and_inside_a_band_equal_the_oracle_on_1_2_4_workers() {
    let gap = 10_000;
    let (readings, shuffled) = random_input(gap);
    let tmp = tempfile::tempdir().unwrap();
    for (name, p) in [
        (
            "above",
            SessionParams {
                gap_ms: gap,
                above: Some(1.0),
                ..SessionParams::default()
            },
        ),
        (
            "band",
            SessionParams {
                gap_ms: gap,
                above: Some(-3.0),
                below: Some(2.5),
                ..SessionParams::default()
            },
        ),
    ] {
        let want = oracle(&readings, &p);
        assert!(want.len() > 1_000, "{name}: {} sessions", want.len());
        for (_, (_, [_, min, max, _])) in want.iter() {
            assert!(p.admits(*min) && p.admits(*max));
        }
        for w in [1, 2, 4] {
            let got = run(
                shuffled.clone(),
                p,
                w,
                &tmp.path().join(format!("{name}{w}")),
            );
            assert_same(&got, &want, &format!("{name}, {w} workers"));
        }
    }
}

#[test]
fn heat_spells_in_a_real_weather_series_equal_the_oracle() {
    // Hours over the series' 90th percentile, in runs no more than 2 hours apart.
    let readings = common::load("weather_vega");
    let mut v: Vec<f64> = readings.iter().map(|r| r.values[0].1).collect();
    v.sort_by(f64::total_cmp);
    let p = SessionParams {
        gap_ms: 2 * 3_600_000,
        above: Some(v[v.len() * 9 / 10]),
        ..SessionParams::default()
    };
    let want = oracle(&readings, &p);
    assert!(want.len() > 50, "{} spells", want.len());
    let tmp = tempfile::tempdir().unwrap();
    for w in [1, 4] {
        let got = run(readings.clone(), p, w, &tmp.path().join(format!("w{w}")));
        assert_same(&got, &want, &format!("weather, {w} workers"));
    }
}

#[test]
fn sessions_longer_than_max_session_are_cut_and_equal_the_oracle_on_1_2_4_workers() {
    // A 10 s gap with sessions of at most 20 s: long bursts give a row per 20 s or so,
    // each starting at the reading that went past the limit.
    let gap = 10_000;
    let (readings, shuffled) = random_input(gap);
    let p = SessionParams {
        gap_ms: gap,
        max_ms: Some(20_000),
        ..SessionParams::default()
    };
    let want = oracle(&readings, &p);
    let uncut = oracle(&readings, &SessionParams { max_ms: None, ..p });
    assert!(
        want.len() > uncut.len() + 500,
        "{} against {}",
        want.len(),
        uncut.len()
    );
    assert!(want.keys().all(|k| k.3 - k.2 <= 20_000));
    let tmp = tempfile::tempdir().unwrap();
    for w in [1, 2, 4] {
        let got = run(shuffled.clone(), p, w, &tmp.path().join(format!("max{w}")));
        assert_same(&got, &want, &format!("max 20 s, {w} workers"));
    }
}
