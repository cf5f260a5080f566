//! Checkpoints (`run --checkpoint-every`): a run that dies loses nothing. A live run writes
//! a checkpoint at every barrier of event time; when it dies (here: its stop's savepoint is
//! thrown away, so only the checkpoints and the output files it wrote remain), the next run
//! resumes from the newest checkpoint, cuts the output files back to it, and the rows of the
//! two runs together are those of one uninterrupted computation, each once.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use streamgauge::engine::{Input, RunReport, RunSpec};
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::ClientSettings;
use streamgauge::record::Reading;

/// 12 series over 6 partitions, a reading a second each, now and then 1 s out of order (so
/// readings are held across barriers), noisy levels with spikes and a shift.
fn stream(per_series: i64) -> Vec<(i32, Reading)> {
    twelve_series("cp", per_series, 77, per_series / 2)
}

fn produce(brokers: &str, topic: &str, items: &[(i32, Reading)]) {
    produce_to(brokers, topic, items)
}

/// A run of `dataflow` with checkpoints every 100 s of event time.
fn checkpoint_spec(
    dataflow: &str,
    brokers: &str,
    topic: &str,
    workers: usize,
    out: &Path,
    live: bool,
) -> RunSpec {
    let mut s = spec(
        kafka_input(brokers, topic),
        workers,
        Duration::from_secs(10),
        out,
    );
    s.dataflow = dataflow.into();
    s.savepoint = Some(out.join("savepoint"));
    s.checkpoint_every = Some(Duration::from_secs(100));
    if let Input::Kafka(k) = &mut s.input {
        k.until_end = !live;
    }
    s
}

/// Runs `s` live while `items` are produced in `steps` parts, each once the run has read
/// the one before (so its frontier moves in steps, past several barriers), then stops it.
fn run_live_and_stop(
    s: RunSpec,
    brokers: &str,
    items: &[(i32, Reading)],
    steps: usize,
) -> RunReport {
    let topic = match &s.input {
        Input::Kafka(k) => k.topic.clone(),
        _ => unreachable!("a Kafka run"),
    };
    let (metrics, stop) = (s.metrics.clone(), s.stop.clone());
    let run = std::thread::spawn(move || run_ok(s));
    let t0 = Instant::now();
    let per = items.len().div_ceil(steps);
    let mut sent = 0;
    for part in items.chunks(per) {
        produce(brokers, &topic, part);
        sent += part.len();
        while metrics.snapshot().readings_in < sent as u64 {
            assert!(t0.elapsed() < Duration::from_secs(60), "not all read");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Ordering::Relaxed);
    run.join().unwrap()
}

/// What a crash leaves: the stop's savepoint is gone (a crash writes none).
fn crash(a: &RunReport) {
    let stop = a.savepoint.as_ref().expect("the stop wrote a savepoint");
    std::fs::remove_dir_all(&stop.dir).unwrap();
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn a_run_restarted_after_a_crash_resumes_from_its_checkpoint_and_scores_every_reading_once() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let items = stream(2_000);
    let want = anomaly_oracle(items.iter().map(|(_, r)| r));
    let (first, second): (Vec<_>, Vec<_>) = items
        .iter()
        .cloned()
        .partition(|(_, r)| r.ts < T0 + 1_250 * 1000);
    for (a_workers, b_workers) in [(1, 2), (2, 4), (4, 1)] {
        let topic = format!("checkpoint{a_workers}{b_workers}");
        broker.create_topic(&topic, 6).unwrap();
        let out = tempfile::tempdir().unwrap();
        let what = format!("{a_workers} then {b_workers} workers");

        let s = checkpoint_spec(
            "anomaly",
            broker.bootstrap(),
            &topic,
            a_workers,
            out.path(),
            true,
        );
        let a = run_live_and_stop(s, broker.bootstrap(), &first, 8);
        // Barriers every 100 s over 1,245 s of frontier, reached in 8 steps of about 156 s:
        // a step can jump a barrier, but most steps complete one.
        assert!(a.checkpoints.count >= 5, "{what}: {:?}", a.checkpoints);
        assert_eq!(a.checkpoints.failed, 0, "{what}");
        let newest = a.checkpoints.last.clone().unwrap();
        assert!(
            newest
                .to_string_lossy()
                .ends_with(&format!("c{}", T0 + 1_200 * 1000)),
            "{what}: the newest checkpoint is at the last barrier the frontier passed: {}",
            newest.display()
        );
        crash(&a);
        let scored_before = file_len(&out.path().join("anomaly.jsonl"));
        let log = out.path().join("throughput.jsonl");
        let log_before = std::fs::read_to_string(&log).unwrap();

        produce(broker.bootstrap(), &topic, &second);
        let s = checkpoint_spec(
            "anomaly",
            broker.bootstrap(),
            &topic,
            b_workers,
            out.path(),
            false,
        );
        let b = run_ok(s);
        assert_eq!(b.resumed_from.as_ref(), Some(&newest), "{what}");
        assert_eq!(b.metrics.late, 0, "{what}");
        assert_eq!(b.metrics.skipped_offsets, 0, "{what}");
        // It reads again what the dead run read after the barrier's cut (here: nothing, as
        // the last part went out in one batch before the cut; its readings at or after the
        // barrier were held, and are in the checkpoint), and the rest.
        assert!(
            b.metrics.readings_in >= second.len() as u64,
            "{what}: {} read",
            b.metrics.readings_in
        );
        // The dead run scored readings after the barrier: the file was cut back to its
        // length at the checkpoint, and they were scored again, once.
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(newest.join("manifest.p0.json")).unwrap())
                .unwrap();
        let at_cut = manifest["outputs"]["anomaly.jsonl"].as_u64().unwrap();
        assert!(
            at_cut > 0 && at_cut < scored_before,
            "{what}: {at_cut} bytes at the checkpoint, {scored_before} at the crash"
        );
        assert_scores_eq(&read_scores(&[out.path()]), &want, &what);
        // The throughput log goes on from the dead run's, in elapsed time too.
        let log_after = std::fs::read_to_string(&log).unwrap();
        assert!(
            log_after.starts_with(&log_before) && log_after.len() > log_before.len(),
            "{what}: the resumed run appends to the throughput log"
        );
        let elapsed: Vec<f64> = log_after
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["elapsed_s"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        assert!(
            elapsed.windows(2).all(|w| w[0] <= w[1]),
            "{what}: elapsed time goes on: {elapsed:?}"
        );
    }
}

/// A topic's payloads as sorted lines.
fn topic_payloads(brokers: &str, topic: &str) -> Vec<String> {
    let mut rows: Vec<String> = read_messages(&ClientSettings::new(brokers), topic)
        .into_iter()
        .map(|(_, _, p)| String::from_utf8(p).unwrap())
        .collect();
    rows.sort();
    rows
}

#[test]
fn a_run_resumed_after_a_crash_sends_each_result_row_to_kafka_once() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let b = broker.bootstrap().to_string();
    let items = stream(2_000);
    let (first, second): (Vec<_>, Vec<_>) = items
        .iter()
        .cloned()
        .partition(|(_, r)| r.ts < T0 + 1_250 * 1000);
    for (a_workers, b_workers) in [(2, 1), (1, 4)] {
        let topic = format!("exactly{a_workers}{b_workers}");
        broker.create_topic(&topic, 6).unwrap();
        for o in ["anomaly", "late", "quarantine"] {
            broker.create_topic(&format!("{topic}.{o}"), 3).unwrap();
        }
        let what = format!("{a_workers} then {b_workers} workers");
        let out = tempfile::tempdir().unwrap();
        let results = Some((ClientSettings::new(&b), topic.clone()));
        let mut s = checkpoint_spec("anomaly", &b, &topic, a_workers, out.path(), true);
        s.result_topics = results.clone();
        let a = run_live_and_stop(s, &b, &first, 8);
        assert!(a.checkpoints.count >= 5, "{what}: {:?}", a.checkpoints);
        crash(&a);
        let sent_by_a = topic_payloads(&b, &format!("{topic}.anomaly")).len();

        produce(&b, &topic, &second);
        let mut s = checkpoint_spec("anomaly", &b, &topic, b_workers, out.path(), false);
        s.result_topics = results;
        let r = run_ok(s);
        assert!(r.resumed_from.is_some(), "{what}");
        let file = read_rows(out.path(), "anomaly");
        assert!(
            r.results_not_resent > 0 && (r.results_not_resent as usize) < sent_by_a,
            "{what}: the dead run had sent {sent_by_a} rows, some after the checkpoint; {} \
             were found and not sent again",
            r.results_not_resent
        );
        assert_eq!(
            r.results_unmatched, 0,
            "{what}: every row found was made again"
        );
        eprintln!(
            "{what}: the dead run sent {sent_by_a} rows; {} of them, after the checkpoint, were \
             not sent again; the file has {} rows",
            r.results_not_resent,
            file.len()
        );
        let topic_rows = topic_payloads(&b, &format!("{topic}.anomaly"));
        assert_eq!(
            topic_rows.len(),
            file.len(),
            "{what}: the topic holds as many rows as the output file"
        );
        assert!(
            topic_rows == file,
            "{what}: the topic holds the output file's rows, each once"
        );
        assert_scores_eq(
            &read_scores(&[out.path()]),
            &anomaly_oracle(items.iter().map(|(_, r)| r)),
            &what,
        );
    }
}

#[test]
fn every_checkpointing_dataflow_resumes_after_a_crash_as_one_uninterrupted_run() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let items = stream(1_000);
    let (first, second): (Vec<_>, Vec<_>) = items
        .iter()
        .cloned()
        .partition(|(_, r)| r.ts < T0 + 650 * 1000);
    for (case, output) in [
        ("zscore", "zscore"),
        ("trend", "trend"),
        ("stock_forecast", "forecasts"),
        ("sessions", "sessions"),
        ("series_stats", "series_stats"),
        ("series_stats-hopping", "series_stats"),
    ] {
        let dataflow = case.split('-').next().unwrap();
        let tune = |s: &mut RunSpec| tune(s, case);
        let topic = format!("cp-{case}");
        broker.create_topic(&topic, 6).unwrap();
        produce(broker.bootstrap(), &topic, &items);
        let whole = tempfile::tempdir().unwrap();
        let mut s = checkpoint_spec(dataflow, broker.bootstrap(), &topic, 2, whole.path(), false);
        s.savepoint = None;
        s.checkpoint_every = None;
        tune(&mut s);
        run_ok(s);
        let want = read_rows(whole.path(), output);
        assert!(want.len() > 100, "{case}: {} rows", want.len());

        let topic = format!("cp2-{case}");
        broker.create_topic(&topic, 6).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut s = checkpoint_spec(dataflow, broker.bootstrap(), &topic, 2, out.path(), true);
        tune(&mut s);
        let a = run_live_and_stop(s, broker.bootstrap(), &first, 5);
        assert!(a.checkpoints.count >= 3, "{case}: {:?}", a.checkpoints);
        crash(&a);
        produce(broker.bootstrap(), &topic, &second);
        let mut s = checkpoint_spec(dataflow, broker.bootstrap(), &topic, 3, out.path(), false);
        tune(&mut s);
        let b = run_ok(s);
        assert!(
            b.resumed_from
                .as_ref()
                .is_some_and(|d| d.to_string_lossy().contains('c')),
            "{case}: resumed from a checkpoint: {:?}",
            b.resumed_from
        );
        let got = read_rows(out.path(), output);
        assert_eq!(got.len(), want.len(), "{case}: every row once");
        assert_eq!(got, want, "{case}: the rows of one uninterrupted run");
    }
}

/// Sessions cut every 30 s at most (so some close at every barrier); z-scores alert at 2.5
/// (so a few hundred rows); windows of 10 s (some end at a barrier), hopping ones of 30 s
/// every 10 s.
fn tune(s: &mut RunSpec, case: &str) {
    if case == "series_stats-hopping" {
        s.window = Duration::from_secs(30);
        s.slide = Some(Duration::from_secs(10));
    }
    if s.dataflow == "sessions" {
        s.sessions.gap_ms = 1_000;
        s.sessions.max_ms = Some(30_000);
    }
    s.threshold = 2.5;
}

/// The rows of output `name` as sorted lines.
fn read_rows(dir: &Path, name: &str) -> Vec<String> {
    let mut rows = read_lines(dir, name);
    rows.sort();
    rows
}

#[test]
fn checkpoints_refuse_what_they_cannot_do() {
    let out = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("refuse", 1).unwrap();
    // Without a savepoint directory.
    let mut s = checkpoint_spec(
        "anomaly",
        broker.bootstrap(),
        "refuse",
        1,
        out.path(),
        false,
    );
    s.savepoint = None;
    let err = streamgauge::engine::run(s).unwrap_err().to_string();
    assert!(
        err.contains("--checkpoint-every needs --savepoint"),
        "{err}"
    );
    // An interval under a millisecond.
    let mut s = checkpoint_spec(
        "anomaly",
        broker.bootstrap(),
        "refuse",
        1,
        out.path(),
        false,
    );
    s.checkpoint_every = Some(Duration::from_micros(500));
    let err = streamgauge::engine::run(s).unwrap_err().to_string();
    assert!(err.contains("at least 1ms"), "{err}");
}

#[test]
fn the_dashboard_and_metrics_show_the_newest_checkpoint() {
    use streamgauge::dashboard::{Hub, HubConfig};
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("cp-dash", 6).unwrap();
    let items = stream(600);
    let out = tempfile::tempdir().unwrap();
    let hub = Hub::new(HubConfig::default());
    let token = "t0ken";
    let dash = dashboard(&hub, token);
    let addr = dash.addr().to_string();
    let mut s = checkpoint_spec(
        "anomaly",
        broker.bootstrap(),
        "cp-dash",
        2,
        out.path(),
        true,
    );
    s.hub = Some((hub.clone(), String::new()));
    let a = run_live_and_stop(s, broker.bootstrap(), &items, 4);
    let written = &a.checkpoints;
    assert!(written.count >= 2, "{written:?}");
    let newest = written
        .last
        .as_ref()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let barrier: i64 = newest.rsplit('c').next().unwrap().parse().unwrap();

    let get = |path: &str| {
        let (status, body) = http_get(&addr, path, Some(token)).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let ov: serde_json::Value = serde_json::from_str(&get("/api/overview")).unwrap();
    let p = &ov["pipelines"][0];
    assert_eq!(p["checkpoints"].as_u64(), Some(written.count), "{p}");
    assert_eq!(p["checkpoint_barrier"].as_i64(), Some(barrier), "{p}");
    assert_eq!(
        p["checkpoint_bytes"].as_u64(),
        Some(written.last_bytes),
        "{p}"
    );
    assert_eq!(p["checkpoints_failed"].as_u64(), Some(0), "{p}");
    let metrics = get("/metrics");
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        line("streamgauge_checkpoints_total"),
        written.count.to_string()
    );
    assert_eq!(
        line("streamgauge_checkpoint_barrier_ms"),
        barrier.to_string()
    );
    assert_eq!(line("streamgauge_checkpoints_failed_total"), "0");
}

/// `sensor_outliers` stopped live and resumed from its stop's savepoint (2 then 3 workers),
/// or crashed and resumed from its newest checkpoint (4 then 1): every output, the
/// per-reading ones and the three collections (the set, its join with a reference table whose
/// versions change on both sides of the cut, the top-k snapshots every 7 s, so never on a
/// barrier), is the same set of rows as one uninterrupted run's. Three series fall silent for 64 s across the barrier resumed from, with a 22 s TTL,
/// so states expire (one snapshot before the barrier), leave the set and the top-k, and come
/// back fresh after the cut. The top-k ranks all 12 series, so every restated score shows.
#[test]
fn sensor_outliers_resumes_from_a_stop_or_a_checkpoint_with_every_collection_as_one_uninterrupted_run(
) {
    let broker = EmbeddedBroker::start(1).unwrap();
    let silent = |r: &Reading| {
        let s = r.series.as_str();
        (s.ends_with("/s0") || s.ends_with("/s1") || s.ends_with("/s2"))
            && (T0 + 576_000..T0 + 640_000).contains(&r.ts)
    };
    // Series s5 jumps by 50 just before the barrier at 600 s, so it is in the outlier set
    // across it while its reference row changes (at 620 s).
    let items: Vec<(i32, Reading)> = stream(1_000)
        .into_iter()
        .filter(|(_, r)| !silent(r))
        .map(|(p, mut r)| {
            if r.series.as_str().ends_with("/s5") && r.ts >= T0 + 595_000 {
                for (_, v) in r.values.iter_mut() {
                    *v += 50.0;
                }
            }
            (p, r)
        })
        .collect();
    let (first, second): (Vec<_>, Vec<_>) = items
        .iter()
        .cloned()
        .partition(|(_, r)| r.ts < T0 + 650 * 1000);
    let tables = tempfile::tempdir().unwrap();
    let reference = tables.path().join("ref.csv");
    let mut table = String::from("series,location,unit,valid_from\n");
    for s in 0..12 {
        table.push_str(&format!("cp/s{s},hall-{},kW,\n", s % 4));
    }
    for (s, at) in [(0, 310), (3, 290), (6, 640), (9, 720), (5, 620), (7, 505)] {
        table.push_str(&format!("cp/s{s},yard-{s},kW,{}\n", T0 + at * 1000));
    }
    std::fs::write(&reference, table).unwrap();
    let outputs = [
        "outlier_scores",
        "forecasts",
        "outliers",
        "outliers_top",
        "outliers_ref",
        "silent",
    ];
    let tune = |s: &mut RunSpec| {
        s.threshold = 2.5;
        s.top = 12;
        s.top_every = Duration::from_secs(7);
        s.horizon = 2;
        s.state_ttl = Some(Duration::from_secs(22));
        s.reference = Some(reference.clone());
    };

    let topic = "cp-outliers";
    broker.create_topic(topic, 6).unwrap();
    produce(broker.bootstrap(), topic, &items);
    let whole = tempfile::tempdir().unwrap();
    let mut s = checkpoint_spec(
        "sensor_outliers",
        broker.bootstrap(),
        topic,
        2,
        whole.path(),
        false,
    );
    s.savepoint = None;
    s.checkpoint_every = None;
    tune(&mut s);
    run_ok(s);
    let want: Vec<Vec<String>> = outputs.iter().map(|o| read_rows(whole.path(), o)).collect();
    for (o, rows) in outputs.iter().zip(&want) {
        assert!(rows.len() >= 15, "{o}: {} rows", rows.len());
    }

    for (a_workers, b_workers) in [(2, 3), (4, 1)] {
        let what = format!("{a_workers} then {b_workers} workers");
        let topic = format!("cp-outliers{a_workers}{b_workers}");
        broker.create_topic(&topic, 6).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut s = checkpoint_spec(
            "sensor_outliers",
            broker.bootstrap(),
            &topic,
            a_workers,
            out.path(),
            true,
        );
        tune(&mut s);
        let a = run_live_and_stop(s, broker.bootstrap(), &first, 5);
        assert!(a.checkpoints.count >= 3, "{what}: {:?}", a.checkpoints);
        let newest = if a_workers == 2 {
            a.savepoint
                .as_ref()
                .expect("the stop wrote a savepoint")
                .dir
                .clone()
        } else {
            crash(&a);
            a.checkpoints.last.clone().unwrap()
        };
        produce(broker.bootstrap(), &topic, &second);
        let mut s = checkpoint_spec(
            "sensor_outliers",
            broker.bootstrap(),
            &topic,
            b_workers,
            out.path(),
            false,
        );
        tune(&mut s);
        let b = run_ok(s);
        assert_eq!(b.resumed_from.as_ref(), Some(&newest), "{what}");
        for (o, rows) in outputs.iter().zip(&want) {
            let got = read_rows(out.path(), o);
            let (extra, missing) = (minus(&got, rows), minus(rows, &got));
            assert!(
                extra.is_empty() && missing.is_empty(),
                "{what}: {o} as one uninterrupted run: {} rows, {} wanted; extra {:?}; missing \
                 {:?}",
                got.len(),
                rows.len(),
                &extra[..extra.len().min(6)],
                &missing[..missing.len().min(6)]
            );
        }
    }
}

/// The rows of sorted `a` not in sorted `b`, as multisets.
fn minus<'a>(a: &'a [String], b: &[String]) -> Vec<&'a String> {
    let mut out = Vec::new();
    let mut j = 0;
    for x in a {
        while j < b.len() && b[j] < *x {
            j += 1;
        }
        if j < b.len() && b[j] == *x {
            j += 1;
        } else {
            out.push(x);
        }
    }
    out
}
