//! The live dashboard (the browser test is in `tests/dashboard_browser.rs`):
//! - the hub against the dataflow's own output files on 1, 2 and 4 workers and on two
//!   processes of 1 and 2 workers, whose one dashboard shows the whole cluster (outlier set,
//!   per-series history, latest forecast, top-k, counters, workers), and the REST API and
//!   `/metrics` shapes, with a token;
//! - the series that went silent (`--state-ttl`) against the `silent` output on 1, 2 and 4
//!   workers: shown until they report again, and not for the end of the input;
//! - the closed sessions of `sessions` against its output on 1, 2 and 4 workers;
//! - a non-loopback bind without a token refuses to start;
//! - the notebook reads the API with pandas and plots a series.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use streamgauge::dashboard::{Dashboard, DashboardOptions, Hub, HubConfig};
use streamgauge::engine::{Input, RunSpec};

/// A plain HTTP/1.1 GET: (status, body).
fn get(addr: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    common::http_get(addr, path, bearer)
        .unwrap_or_else(|| panic!("GET {path} from {addr}: no answer"))
}

fn get_json(addr: &str, path: &str, token: &str) -> Value {
    let (status, body) = get(addr, path, Some(token));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// A forecast step as bits: (ts, point, lower, upper).
type Step = (i64, u64, u64, u64);

/// What the hub showed after one run.
struct Observed {
    outliers: BTreeSet<String>,
    top: Vec<(String, u64, i64)>,
    history: BTreeMap<String, Vec<(i64, u64)>>,
    forecast: BTreeMap<String, Vec<Step>>,
}

/// Runs the specs `make(p)` as the processes `p` of one cluster on loopback (threads of this
/// test, each its own timely cluster member), and waits for all of them.
fn run_cluster(processes: usize, tmp: &Path, make: impl Fn(usize) -> RunSpec) {
    if processes == 1 {
        common::run_ok(make(0));
        return;
    }
    let hostfile = common::hostfile(tmp, processes);
    let handles: Vec<_> = (0..processes)
        .map(|p| {
            let mut spec = make(p);
            spec.cluster.processes = processes;
            spec.cluster.process = p;
            spec.cluster.hostfile = Some(hostfile.clone());
            std::thread::spawn(move || common::run_ok(spec))
        })
        .collect();
    for h in handles {
        h.join().expect("a process of the cluster failed");
    }
}

/// Lines in the output files of `sensor_outliers`' rows it counts as results (scores and
/// forecasts), every process's.
fn result_rows(dir: &Path) -> u64 {
    ["outlier_scores", "forecasts"]
        .iter()
        .map(|o| common::read_lines(dir, o).len() as u64)
        .sum()
}

#[test]
fn hub_matches_the_dataflow_outputs_and_the_api_has_its_shapes_on_1_2_4_workers_and_2_processes() {
    let mut readings = common::load("nab:realKnownCause");
    readings.sort_by_key(|r| r.ts);
    let history = 50;
    let tmp = tempfile::tempdir().unwrap();
    let mut views = Vec::new();
    // (processes, workers per process): with two processes, process 0's dashboard shows the
    // whole cluster.
    for (n, w) in [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2)] {
        let out = tmp.path().join(format!("n{n}w{w}"));
        let what = format!("{n} x {w} workers");
        let hub = Hub::new(HubConfig {
            history,
            ..HubConfig::default()
        });
        let token = "s3cret";
        let dash = common::dashboard(&hub, token);
        let addr = dash.addr().to_string();
        run_cluster(n, tmp.path(), |p| {
            let mut spec = RunSpec::new("sensor_outliers", Input::memory(readings.clone()));
            spec.cluster.workers = w;
            spec.output_dir = Some(out.clone());
            // Fewer than the series, so that the top-k leaves some out.
            spec.top = 4;
            if p == 0 {
                spec.hub = Some((hub.clone(), String::new()));
            }
            spec
        });

        // What the outputs say: the accumulated outlier set, the last `history` rows of
        // every series, the last forecast path issued per series.
        // Also each key's latest entry time: the hub's `since`.
        let mut set: BTreeMap<String, i64> = BTreeMap::new();
        let mut entered: BTreeMap<String, i64> = BTreeMap::new();
        for line in common::read_lines(&out, "outliers") {
            let v: Value = serde_json::from_str(&line).unwrap();
            let key = format!(
                "{}/{}",
                v["series"].as_str().unwrap(),
                v["field"].as_str().unwrap()
            );
            let diff = v["diff"].as_i64().unwrap();
            if diff > 0 {
                let t = v["time"].as_i64().unwrap();
                let e = entered.entry(key.clone()).or_insert(t);
                *e = (*e).max(t);
            }
            *set.entry(key).or_default() += diff;
        }
        let want_set: BTreeSet<String> = set
            .into_iter()
            .filter(|(_, c)| *c == 1)
            .map(|(k, _)| k)
            .collect();
        // The top-k: the records (key, score) whose rows sum to 1, each with the snapshot time
        // of its latest +1, highest score first.
        let mut top: BTreeMap<(String, u64), (i64, i64)> = BTreeMap::new();
        for line in common::read_lines(&out, "outliers_top") {
            let v: Value = serde_json::from_str(&line).unwrap();
            let score = v["score"].as_f64().unwrap().to_bits();
            let e = top.entry((row_key(&v), score)).or_insert((0, i64::MIN));
            let diff = v["diff"].as_i64().unwrap();
            e.0 += diff;
            if diff > 0 {
                e.1 = e.1.max(v["time"].as_i64().unwrap());
            }
        }
        let mut want_top: Vec<(String, u64, i64)> = top
            .into_iter()
            .filter(|(_, (n, _))| *n > 0)
            .map(|((k, score), (n, since))| {
                assert_eq!(n, 1, "a top-k record is in the set once");
                (k, score, since)
            })
            .collect();
        want_top.sort_by(|a, b| {
            f64::from_bits(b.1)
                .total_cmp(&f64::from_bits(a.1))
                .then_with(|| a.0.cmp(&b.0))
        });
        let mut rows: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
        for line in common::read_lines(&out, "outlier_scores") {
            let v: Value = serde_json::from_str(&line).unwrap();
            let key = format!(
                "{}/{}",
                v["series"].as_str().unwrap(),
                v["field"].as_str().unwrap()
            );
            rows.entry(key).or_default().push((
                v["ts"].as_i64().unwrap(),
                v["value"].as_f64().unwrap().to_bits(),
            ));
        }
        let mut paths: BTreeMap<String, (i64, Vec<Step>)> = BTreeMap::new();
        for line in common::read_lines(&out, "forecasts") {
            let v: Value = serde_json::from_str(&line).unwrap();
            let key = format!(
                "{}/{}",
                v["series"].as_str().unwrap(),
                v["field"].as_str().unwrap()
            );
            let issued = v["issued_ts"].as_i64().unwrap();
            let steps: Vec<Step> = v["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s[0].as_i64().unwrap(),
                        s[1].as_f64().unwrap().to_bits(),
                        s[2].as_f64().unwrap().to_bits(),
                        s[3].as_f64().unwrap().to_bits(),
                    )
                })
                .collect();
            let e = paths.entry(key).or_insert((issued, Vec::new()));
            if issued >= e.0 {
                *e = (issued, steps);
            }
        }

        // The hub, through the API.
        let (status, _) = get(&addr, "/api/outliers", None);
        assert_eq!(status, 401, "the API needs the token");
        let (status, _) = get(&addr, "/metrics", Some("wrong"));
        assert_eq!(status, 401);
        let (status, page) = get(&addr, "/", None);
        assert!(
            status == 200 && page.contains("plotly.min.js"),
            "the page is public"
        );
        let (status, js) = get(&addr, "/plotly.min.js", None);
        assert!(
            status == 200 && js.len() > 1_000_000,
            "Plotly.js is served from the binary"
        );

        let o = get_json(&addr, &format!("/api/outliers?token={token}"), token);
        let got_set: BTreeSet<String> = o["set"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                for f in ["key", "series", "field", "since", "pipeline"] {
                    assert!(!e[f].is_null(), "outlier entry lacks {f}: {e}");
                }
                let key = e["key"].as_str().unwrap().to_string();
                assert_eq!(
                    e["since"].as_i64(),
                    entered.get(&key).copied(),
                    "{what}: since = the event time it entered: {e}"
                );
                key
            })
            .collect();
        assert_eq!(got_set, want_set, "{what}: the hub's outlier set");
        assert!(!want_set.is_empty(), "NAB must leave some series anomalous");
        for c in o["changes"].as_array().unwrap() {
            assert!(
                c["diff"].as_i64().unwrap().abs() == 1
                    && c["time"].is_i64()
                    && c["pipeline"] == "dataset/sensor_outliers",
                "{c}"
            );
        }

        let list = get_json(&addr, "/api/series?limit=1000", token);
        let list = list.as_array().unwrap();
        assert_eq!(
            list.len(),
            rows.len(),
            "{what}: one series per (series, field)"
        );
        assert!(
            want_top.len() == 4 && rows.len() > 4,
            "{what}: the top 4 of {} series: {want_top:?}",
            rows.len()
        );
        let t = get_json(&addr, "/api/top", token);
        let got_top: Vec<(String, u64, i64)> = t["set"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["pipeline"], "dataset/sensor_outliers");
                (
                    e["key"].as_str().unwrap().to_string(),
                    e["score"].as_f64().unwrap().to_bits(),
                    e["since"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got_top, want_top, "{what}: the hub's top-k, in order");
        let mut observed = Observed {
            outliers: got_set,
            top: got_top,
            history: BTreeMap::new(),
            forecast: BTreeMap::new(),
        };
        for s in list {
            let key = s["key"].as_str().unwrap();
            assert_eq!(
                s["outlier"].as_bool().unwrap(),
                want_set.contains(key),
                "{key}"
            );
            let h = get_json(
                &addr,
                &format!("/api/history?key={}", key.replace('/', "%2F")),
                token,
            );
            let got: Vec<(i64, u64)> = h["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    for f in ["ts", "value", "mean", "std", "score", "anomalous"] {
                        assert!(p.get(f).is_some(), "point lacks {f}: {p}");
                    }
                    (
                        p["ts"].as_i64().unwrap(),
                        p["value"].as_f64().unwrap().to_bits(),
                    )
                })
                .collect();
            let mut want = rows[key].clone();
            want.sort_by_key(|r| r.0);
            let want = want[want.len().saturating_sub(history)..].to_vec();
            assert_eq!(got, want, "{what}: history of {key}");
            let f = &h["forecast"];
            let got_f: Vec<Step> = f["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let s = s.as_array().unwrap();
                    (
                        s[0].as_i64().unwrap(),
                        s[1].as_f64().unwrap().to_bits(),
                        s[2].as_f64().unwrap().to_bits(),
                        s[3].as_f64().unwrap().to_bits(),
                    )
                })
                .collect();
            let (issued, want_f) = &paths[key];
            assert_eq!(f["issued"].as_i64().unwrap(), *issued, "{key}");
            assert_eq!(&got_f, want_f, "{what}: forecast of {key}");
            observed.history.insert(key.to_string(), got);
            observed.forecast.insert(key.to_string(), got_f);
        }
        let (status, _) = get(&addr, "/api/history?key=nope", Some(token));
        assert_eq!(status, 404);

        let f = get_json(&addr, "/api/forecasts?limit=1000", token);
        assert_eq!(f.as_array().unwrap().len(), rows.len());
        let ov = get_json(&addr, "/api/overview", token);
        let p = &ov["pipelines"][0];
        assert_eq!(p["name"], "dataset/sensor_outliers");
        assert_eq!(p["status"], "finished");
        assert_eq!(p["readings_in"].as_u64().unwrap(), readings.len() as u64);
        assert_eq!(
            p["workers"].as_array().unwrap().len(),
            n * w,
            "{what}: one status per worker of the cluster"
        );
        assert_eq!(
            p["rows_out"].as_u64().unwrap(),
            result_rows(&out),
            "{what}: rows out, every process's"
        );
        let ops = p["operators"].as_object().unwrap();
        assert!(
            ops.keys().any(|k| k == "sensor_outliers")
                && ops.values().all(|t| t["seconds"].as_f64().unwrap() >= 0.0),
            "operator timings: {ops:?}"
        );
        let d = get_json(&addr, "/api/delta?since=0&key=nope", token);
        assert!(d["seq"].as_u64().unwrap() > 0 && d["changes"].is_array());

        let (status, metrics) = get(&addr, "/metrics", Some(token));
        assert_eq!(status, 200);
        let want_line = format!(
            "streamgauge_readings_in_total{{pipeline=\"dataset/sensor_outliers\",dataflow=\"sensor_outliers\"}} {}",
            readings.len()
        );
        assert!(metrics.contains(&want_line), "{metrics}");
        assert!(metrics.contains(&format!("streamgauge_outliers {}", want_set.len())));
        assert!(metrics.contains("streamgauge_operator_seconds_total{pipeline=\"dataset/sensor_outliers\",operator=\"sensor_outliers\"}"));
        for line in metrics
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
        drop(dash);
        views.push(observed);
    }
    for v in &views[1..] {
        assert_eq!(
            v.outliers, views[0].outliers,
            "same outlier set whatever the workers"
        );
        assert_eq!(v.top, views[0].top, "same top-k whatever the workers");
        assert_eq!(
            v.history, views[0].history,
            "same histories whatever the workers"
        );
        assert_eq!(
            v.forecast, views[0].forecast,
            "same forecasts whatever the workers"
        );
    }
}

#[test]
fn with_dashboard_scope_process_each_process_shows_its_own_share() {
    let readings = common::load("nab:realKnownCause");
    let tmp = tempfile::tempdir().unwrap();
    let hubs: Vec<_> = (0..2).map(|_| Hub::new(HubConfig::default())).collect();
    run_cluster(2, tmp.path(), |p| {
        let mut spec = RunSpec::new("sensor_outliers", Input::memory(readings.clone()));
        spec.cluster.workers = 2;
        spec.hub = Some((hubs[p].clone(), String::new()));
        spec.dashboard_cluster = false;
        spec
    });
    let mut all = BTreeSet::new();
    let mut read = 0;
    for (p, hub) in hubs.iter().enumerate() {
        let keys: BTreeSet<String> = hub
            .series("", 1000)
            .into_iter()
            .map(|s| s.key.to_string())
            .collect();
        assert!(!keys.is_empty(), "process {p} shows its share");
        assert!(all.is_disjoint(&keys), "a series shows on one process");
        all.extend(keys);
        let o = hub.overview();
        let workers: Vec<usize> = o.pipelines[0].workers.iter().map(|w| w.process).collect();
        assert_eq!(workers, vec![p, p], "process {p} shows its own two workers");
        read += o.pipelines[0].readings_in;
    }
    let series: BTreeSet<String> = readings
        .iter()
        .flat_map(|r| {
            r.values
                .iter()
                .map(move |(f, _)| format!("{}/{f}", r.series))
        })
        .collect();
    assert_eq!(all, series, "together the processes show every series");
    assert_eq!(read, readings.len() as u64, "and every reading once");
}

/// `series/field` of a JSON row.
fn row_key(v: &Value) -> String {
    format!(
        "{}/{}",
        v["series"].as_str().unwrap(),
        v["field"].as_str().unwrap()
    )
}

#[test]
fn hub_shows_the_series_that_went_silent_on_1_2_4_workers() {
    // Seven series years apart, some with gaps of hours: with a 6-hour TTL, series go
    // silent inside their gaps and report again, stop for good when their file ends while
    // nyc_taxi goes on, and nyc_taxi itself expires only after the input's last reading.
    // A day cut out of nyc_taxi makes the last silence of one series end before the input.
    let mut readings = common::load("nab:realKnownCause");
    let taxi = |r: &streamgauge::record::Reading| r.series.contains("nyc_taxi");
    let t0 = readings
        .iter()
        .filter(|r| taxi(r))
        .map(|r| r.ts)
        .min()
        .unwrap();
    let day = 86_400_000;
    readings.retain(|r| !(taxi(r) && (t0 + 100 * day..t0 + 101 * day).contains(&r.ts)));
    readings.sort_by_key(|r| r.ts);
    let reached = readings.iter().map(|r| r.ts).max().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut views = Vec::new();
    // `anomaly` writes the same silences, but publishes no points: its pipeline shows no
    // series, so no silent ones either (the hub could not see them report again).
    for (dataflow, rows_stem, w) in [
        ("sensor_outliers", "outlier_scores", 1),
        ("sensor_outliers", "outlier_scores", 2),
        ("sensor_outliers", "outlier_scores", 4),
        ("anomaly", "anomaly", 1),
        ("anomaly", "anomaly", 2),
        ("anomaly", "anomaly", 4),
    ] {
        let out = tmp.path().join(format!("{dataflow}-w{w}"));
        let hub = Hub::new(HubConfig::default());
        let token = "t0ken";
        let dash = common::dashboard(&hub, token);
        let addr = dash.addr().to_string();
        let mut spec = RunSpec::new(dataflow, Input::memory(readings.clone()));
        spec.cluster.workers = w;
        spec.output_dir = Some(out.clone());
        spec.state_ttl = Some(Duration::from_secs(6 * 3600));
        spec.hub = Some((hub.clone(), String::new()));
        common::run_ok(spec);

        // The oracle, from the output files: a key's latest expiry up to the input's last
        // reading, unless the key read again after the reading before that expiry.
        let mut last_read: BTreeMap<String, i64> = BTreeMap::new();
        for line in common::read_lines(&out, rows_stem) {
            let v: Value = serde_json::from_str(&line).unwrap();
            let t = last_read.entry(row_key(&v)).or_insert(i64::MIN);
            *t = (*t).max(v["ts"].as_i64().unwrap());
        }
        let mut latest: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let (mut after_end, mut rows) = (0, 0);
        for line in common::read_lines(&out, "silent") {
            let v: Value = serde_json::from_str(&line).unwrap();
            let (last_ts, time) = (v["last_ts"].as_i64().unwrap(), v["time"].as_i64().unwrap());
            rows += 1;
            if time > reached {
                after_end += 1;
                continue;
            }
            let e = latest.entry(row_key(&v)).or_insert((time, last_ts));
            if time > e.0 {
                *e = (time, last_ts);
            }
        }
        let want: BTreeMap<String, (i64, i64)> = latest
            .iter()
            .filter(|(k, (_, last_ts))| last_read[k.as_str()] <= *last_ts)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let recovered = latest.len() - want.len();
        assert!(
            after_end == 1 && want.len() >= 4 && recovered == 1 && rows > latest.len() + 2,
            "{dataflow} on {w} workers: the input must exercise every rule: {rows} rows, \
             {after_end} after the end, {} silent now, {recovered} keys reported again",
            want.len()
        );
        let want = if dataflow == "sensor_outliers" {
            want
        } else {
            BTreeMap::new()
        };

        let v = get_json(&addr, "/api/silent?limit=1000", token);
        assert_eq!(v["count"].as_u64(), Some(want.len() as u64), "{v}");
        let got: BTreeMap<String, (i64, i64)> = v["set"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["pipeline"], "dataset/sensor_outliers");
                (
                    e["key"].as_str().unwrap().to_string(),
                    (e["since"].as_i64().unwrap(), e["last_ts"].as_i64().unwrap()),
                )
            })
            .collect();
        assert_eq!(
            got, want,
            "{dataflow} on {w} workers: the silent series, since and last reading"
        );
        let since: Vec<i64> = v["set"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["since"].as_i64().unwrap())
            .collect();
        assert!(
            since.windows(2).all(|p| p[0] >= p[1]),
            "most recent first: {since:?}"
        );
        for s in get_json(&addr, "/api/series?limit=1000", token)
            .as_array()
            .unwrap()
        {
            let key = s["key"].as_str().unwrap();
            assert_eq!(s["silent"].as_bool(), Some(want.contains_key(key)), "{s}");
            let h = get_json(
                &addr,
                &format!("/api/history?key={}", key.replace('/', "%2F")),
                token,
            );
            assert_eq!(
                h["silent_since"].as_i64(),
                want.get(key).map(|w| w.0),
                "{key}"
            );
        }
        assert_eq!(
            get_json(&addr, "/api/overview", token)["silent"].as_u64(),
            Some(want.len() as u64)
        );
        let (_, metrics) = get(&addr, "/metrics", Some(token));
        assert!(
            metrics.contains(&format!("streamgauge_silent_series {}", want.len())),
            "{metrics}"
        );
        drop(dash);
        if dataflow == "sensor_outliers" {
            views.push(got);
        }
    }
    assert!(
        views.iter().all(|v| *v == views[0]),
        "same silent series whatever the workers"
    );
}

#[test]
fn hub_lists_the_closed_sessions_of_the_output_on_1_2_4_workers() {
    // Afternoons over 70 F in Seattle and San Francisco, 2010: 157 excursions, all kept.
    let readings = common::load("weather_vega");
    let tmp = tempfile::tempdir().unwrap();
    for w in [1, 2, 4] {
        let out = tmp.path().join(format!("w{w}"));
        let hub = Hub::new(HubConfig::default());
        let token = "t0ken";
        let dash = common::dashboard(&hub, token);
        let addr = dash.addr().to_string();
        let mut spec = RunSpec::new("sessions", Input::memory(readings.clone()));
        spec.cluster.workers = w;
        spec.output_dir = Some(out.clone());
        spec.sessions = streamgauge::dataflows::sessions::SessionParams {
            gap_ms: 2 * 3_600_000,
            above: Some(70.0),
            ..Default::default()
        };
        spec.hub = Some((hub.clone(), String::new()));
        common::run_ok(spec);
        let key = |v: &Value| {
            (
                format!(
                    "{}/{}",
                    v["series"].as_str().unwrap(),
                    v["field"].as_str().unwrap()
                ),
                v["start"].as_i64().unwrap(),
                v["end"].as_i64().unwrap(),
                v["count"].as_u64().unwrap(),
                v["max"].as_f64().unwrap().to_bits(),
            )
        };
        let want: BTreeSet<_> = common::read_lines(&out, "sessions")
            .iter()
            .map(|l| key(&serde_json::from_str(l).unwrap()))
            .collect();
        assert!(want.len() > 100, "{} sessions", want.len());
        let v = get_json(&addr, "/api/sessions?limit=1000", token);
        assert_eq!(v["count"].as_u64(), Some(want.len() as u64), "{w} workers");
        let set = v["set"].as_array().unwrap();
        for x in set {
            assert_eq!(x["key"].as_str().unwrap(), key(x).0);
            assert_eq!(x["pipeline"].as_str(), Some("dataset/sessions"), "{x}");
        }
        let got: BTreeSet<_> = set.iter().map(key).collect();
        assert_eq!(got, want, "{w} workers: the sessions listed");
        assert_eq!(
            get_json(&addr, "/api/sessions?limit=3", token)["set"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let o = get_json(&addr, "/api/overview", token);
        assert_eq!(o["sessions"].as_u64(), Some(want.len() as u64));
        let (_, metrics) = get(&addr, "/metrics", Some(token));
        assert!(
            metrics.contains(&format!(
                "streamgauge_sessions_closed_total {}\n",
                want.len()
            )),
            "{metrics}"
        );
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamgauge"))
}

#[test]
fn a_non_loopback_dashboard_without_a_token_refuses_to_start() {
    // `run series_stats` on a small dataset with these dashboard flags: (success, stderr).
    let run = |flags: &[&str]| {
        let out = bin()
            .args([
                "run",
                "series_stats",
                "--dataset",
                "nab:artificialNoAnomaly",
                "--data-dir",
            ])
            .arg(common::data_dir())
            .args(flags)
            .env_remove("STREAMGAUGE_DASHBOARD_TOKEN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&["--dashboard", "0.0.0.0:0"]);
    assert!(!ok);
    assert!(
        err.contains("without a token") && err.contains("--dashboard-token"),
        "{err}"
    );
    let (ok, err) = run(&["--dashboard", "not an address"]);
    assert!(!ok);
    assert!(
        err.contains("--dashboard") && err.contains("HOST:PORT"),
        "{err}"
    );
    // With a token it starts (and the run finishes as usual).
    let (ok, err) = run(&["--dashboard", "0.0.0.0:0", "--dashboard-token", "t0ken"]);
    assert!(ok, "{err}");
    assert!(err.contains("token required"), "{err}");
}

/// The notebook in `notebooks/` runs, as a user would run it, against a live dashboard: its
/// code cells in order, in one Python process (pandas and matplotlib; `.ci/run` installs
/// them), and it saves the plot it draws.
#[test]
fn the_notebook_reads_the_api_with_pandas_and_plots_a_series() {
    let readings = common::load("nab:realKnownCause");
    let hub = Hub::new(HubConfig::default());
    let token = "nb-token";
    let dash = common::dashboard(&hub, token);
    let mut spec = RunSpec::new("sensor_outliers", Input::memory(readings));
    spec.cluster.workers = 2;
    spec.hub = Some((hub, String::new()));
    common::run_ok(spec);

    let nb: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("notebooks/dashboard_api.ipynb"),
        )
        .unwrap(),
    )
    .unwrap();
    let code: String = nb["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cell_type"] == "code")
        .map(|c| {
            c["source"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect::<String>()
                + "\n"
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("series.png");
    let out = Command::new("python3")
        .arg("-c")
        .arg(&code)
        .env("STREAMGAUGE_URL", format!("http://{}", dash.addr()))
        .env("STREAMGAUGE_DASHBOARD_TOKEN", token)
        .env("SERIES_KEY", "realKnownCause/nyc_taxi/value")
        .env("NOTEBOOK_OUT", &png)
        .env("MPLBACKEND", "Agg")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "notebook failed (pandas and matplotlib are needed: .ci/run installs them):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("dataset/sensor_outliers"), "{stdout}");
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
}

/// A full hub lists a series it has no place for as not charted; a page that opens its chart
/// (follows it over `/events`) gets it charted from its next reading, while the charted
/// series keep reporting (so none of them is stale).
#[test]
fn a_page_that_follows_a_waiting_series_gets_it_charted() {
    use streamgauge::dashboard::hub::{Point, PointUpdate, Update};
    let hub = Hub::new(HubConfig {
        history: 50,
        max_series: 2,
        changes: 5,
    });
    let p = hub.register("t/flow", "flow", Default::default(), 1);
    p.declare("out");
    let d = Dashboard::start(
        &DashboardOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            explicit: true,
            token: None,
            hub: hub.config(),
        },
        hub.clone(),
    )
    .unwrap();
    let addr = d.addr().to_string();
    let tick = |t: i64| {
        let mut ups: Vec<(i64, Update)> = ["a", "b", "c"]
            .iter()
            .map(|s| {
                let point = Point {
                    ts: t,
                    value: t as f64,
                    mean: f64::NAN,
                    std: f64::NAN,
                    score: f64::NAN,
                    anomalous: false,
                    seq: 0,
                };
                let (series, field) = ((*s).into(), "value".into());
                (
                    t,
                    Update::Point(PointUpdate {
                        series,
                        field,
                        point,
                    }),
                )
            })
            .collect();
        p.offer("out", 0, &mut ups, Some(t + 1));
    };
    let get = |path: &str| -> Value {
        let (code, body) = common::http_get(&addr, path, None).unwrap();
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    for t in 0..20 {
        tick(t);
    }
    let list = get("/api/series?q=");
    let charted: Vec<(&str, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["key"].as_str().unwrap(), s["charted"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        charted,
        [("a/value", true), ("b/value", true), ("c/value", false)]
    );
    let h = get("/api/history?key=c%2Fvalue");
    assert_eq!(h["charted"], false);
    assert_eq!(h["points"].as_array().unwrap().len(), 0);
    // Unfollowed, it stays uncharted however long a and b report.
    for t in 20..60 {
        tick(t);
    }
    assert_eq!(get("/api/history?key=c%2Fvalue")["charted"], false);
    // A page opens its chart.
    let mut sse = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(
        &mut sse,
        b"GET /events?key=c%2Fvalue HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let mut t = 60;
    while get("/api/history?key=c%2Fvalue")["charted"] != true {
        assert!(t0.elapsed() < Duration::from_secs(20), "never charted");
        tick(t);
        t += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let h = get("/api/history?key=c%2Fvalue");
    let points = h["points"].as_array().unwrap();
    assert!(!points.is_empty() && points.len() <= (t - 60) as usize);
    assert_eq!(get("/api/overview")["series"], 2, "still two places");
    drop(sse);
}
