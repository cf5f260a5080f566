//! The oracle test against a second, independent Kafka-protocol broker: tansu
//! (`cargo install tansu --locked --features dynostore`; `.ci/run` installs it). Its high
//! watermarks lag the last batch, which `--until-end` must survive by confirming the end by
//! reading. `--from TIME` finds its start offsets on it too. Result topics hold every row
//! once, with the header that carries its time, and read back as a resumed run reads them.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use streamgauge::kafka::producer::ReadingProducer;
use streamgauge::kafka::{admin, ClientSettings};
use streamgauge::record::{Reading, Sym};

struct Tansu(Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return p.into();
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    for cand in [
        home.join(".cargo/bin/tansu"),
        PathBuf::from("/usr/local/bin/tansu"),
    ] {
        if cand.is_file() {
            return cand;
        }
    }
    panic!("tansu is not installed: run .ci/run, or `cargo install tansu --locked --features dynostore`, or set TANSU_BIN");
}

fn start_tansu() -> (Tansu, String) {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_bin())
        .args([
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tansu");
    let guard = Tansu(child);
    let addr = format!("127.0.0.1:{port}");
    let t0 = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "tansu did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, addr)
}

#[test]
fn oracle_against_tansu() {
    let (_tansu, addr) = start_tansu();
    let settings = ClientSettings::new(addr.clone());
    admin::ensure_topic(&settings, "readings", 4).unwrap();
    let mut readings = load("nab:machine_temperature_system_failure");
    // Plus a few synthetic series so every partition carries data.
    for s in 0..6 {
        let name = Sym::new(&format!("synthetic/{s}"));
        for i in 0..3000i64 {
            readings.push(Reading::single(
                name,
                1_386_000_000_000 + i * 60_000,
                ((i * 7 + s) % 23) as f64 * 0.25,
            ));
        }
    }
    readings.sort_by_key(|r| r.ts);
    let mut p = ReadingProducer::new(&settings, "readings").unwrap();
    for r in &readings {
        p.send(r).unwrap();
    }
    p.flush(Duration::from_secs(60)).unwrap();
    drop(p);
    let want = oracle(&readings, 3_600_000);
    let hour = Duration::from_secs(3600);
    assert_until_end_matches(
        &addr,
        "readings",
        readings.len(),
        &want,
        hour,
        Duration::from_secs(1),
        "tansu",
    );

    // `--from TIME` on this broker. Tansu 0.6 serves whole record batches only (a fetch at
    // an offset inside a batch returns the next batch) and its high watermark lags, so the
    // search can start a partition well before the time (at the beginning, when the
    // watermark says one record); the source's frontier, which starts at the time, makes
    // every reading before it late. What must hold: no reading at or after the time is
    // missed, and the windows are exactly those of the readings at or after it (every
    // partition is in time order: the readings were sent sorted).
    let from = readings[readings.len() / 2].ts + 1;
    let after: Vec<Reading> = readings.iter().filter(|r| r.ts >= from).cloned().collect();
    assert!(!after.is_empty() && after.len() < readings.len());
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(kafka_input(&addr, "readings"), 2, hour, dir.path());
    s.end_confirm = Duration::from_secs(1);
    if let streamgauge::engine::Input::Kafka(k) = &mut s.input {
        k.start = streamgauge::kafka::source::StartAt::Time(from);
    }
    let report = run_ok(s);
    let m = report.metrics;
    assert!(m.readings_in >= after.len() as u64, "tansu, --from: {m:?}");
    assert_eq!(
        m.readings_in - m.late,
        after.len() as u64,
        "tansu, --from: what was read early is late: {m:?}"
    );
    assert_windows_eq(
        &read_windows(dir.path()),
        &oracle(&after, 3_600_000),
        "tansu, --from",
    );
}

/// Creates the input topic `input` (`parts` partitions) and its result topics for output
/// `output` (`out_parts`), `late` and `quarantine`.
fn topics(settings: &ClientSettings, input: &str, parts: i32, output: &str, out_parts: i32) {
    admin::ensure_topic(settings, input, parts).unwrap();
    admin::ensure_topic(settings, &format!("{input}.{output}"), out_parts).unwrap();
    for o in ["late", "quarantine"] {
        admin::ensure_topic(settings, &format!("{input}.{o}"), 1).unwrap();
    }
}

/// Reads `topic` back as a resumed run reads it (every message, with its row's time) and
/// asserts it holds the output file's `rows`, each once.
fn assert_topic_holds_once(settings: &ClientSettings, topic: &str, rows: &[String]) {
    let mut from = streamgauge::kafka::results::TopicOffsets::new();
    from.insert(topic.into(), Default::default());
    let mut sent = streamgauge::kafka::results::scan_sent(
        &settings.consumer_config(),
        &from,
        i64::MIN,
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(
        sent.left(),
        rows.len(),
        "tansu: {topic} holds as many rows, each with its time, as the file"
    );
    for r in rows {
        let v: serde_json::Value = serde_json::from_str(r).unwrap();
        let key = v["series"].as_str().unwrap();
        assert!(sent.take(topic, key, r.as_bytes()), "tansu: {r} in {topic}");
    }
}

#[test]
fn result_topics_against_tansu_hold_every_row_once_with_its_time() {
    let (_tansu, addr) = start_tansu();
    let settings = ClientSettings::new(addr.clone());
    topics(&settings, "res", 3, "series_stats", 2);
    let mut p = ReadingProducer::new(&settings, "res").unwrap();
    for i in 0..12_000i64 {
        let s = Sym::new(&format!("dev{}", i % 6));
        p.send(&Reading::single(s, 1_000_000 + i * 500, (i % 17) as f64))
            .unwrap();
    }
    p.flush(Duration::from_secs(60)).unwrap();
    drop(p);
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        kafka_input(&addr, "res"),
        2,
        Duration::from_secs(10),
        dir.path(),
    );
    s.end_confirm = Duration::from_secs(1);
    s.result_topics = Some((settings.clone(), "res".into()));
    let report = run_ok(s);
    assert_eq!(report.metrics.results_undelivered, 0);
    let rows = read_lines(dir.path(), "series_stats");
    assert!(rows.len() > 500, "{} windows", rows.len());
    assert_topic_holds_once(&settings, "res.series_stats", &rows);
}

#[test]
fn a_run_resumed_after_a_crash_sends_each_result_row_to_tansu_once() {
    use std::sync::atomic::Ordering;
    let (_tansu, addr) = start_tansu();
    let settings = ClientSettings::new(addr.clone());
    topics(&settings, "cr", 6, "anomaly", 3);
    let items = twelve_series("cr", 1_000, 5, 500);
    let (first, second): (Vec<_>, Vec<_>) = items
        .iter()
        .cloned()
        .partition(|(_, r)| r.ts < T0 + 650 * 1000);
    let out = tempfile::tempdir().unwrap();
    let make = |live: bool, workers: usize| {
        let mut s = spec(
            kafka_input(&addr, "cr"),
            workers,
            Duration::from_secs(10),
            out.path(),
        );
        s.dataflow = "anomaly".into();
        s.end_confirm = Duration::from_secs(1);
        s.savepoint = Some(out.path().join("savepoint"));
        s.checkpoint_every = Some(Duration::from_secs(100));
        s.result_topics = Some((settings.clone(), "cr".into()));
        if let streamgauge::engine::Input::Kafka(k) = &mut s.input {
            k.until_end = !live;
        }
        s
    };
    // Live, fed in steps so that its frontier passes barriers one by one; then stopped, and
    // its stop's savepoint thrown away: what a crash leaves.
    let s = make(true, 2);
    let (metrics, stop) = (s.metrics.clone(), s.stop.clone());
    let run = std::thread::spawn(move || run_ok(s));
    let t0 = Instant::now();
    let mut fed = 0;
    for part in first.chunks(first.len().div_ceil(6)) {
        produce_to(&addr, "cr", part);
        fed += part.len() as u64;
        while metrics.snapshot().readings_in < fed {
            assert!(
                t0.elapsed() < Duration::from_secs(90),
                "tansu: not all read"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let a = run.join().unwrap();
    assert!(a.checkpoints.count >= 3, "tansu: {:?}", a.checkpoints);
    assert_eq!(a.metrics.results_undelivered, 0, "tansu took every row");
    std::fs::remove_dir_all(&a.savepoint.expect("a stop's savepoint").dir).unwrap();

    produce_to(&addr, "cr", &second);
    let b = run_ok(make(false, 3));
    assert!(b.resumed_from.is_some());
    assert_eq!(b.metrics.results_undelivered, 0, "tansu took every row");
    assert_eq!(
        b.results_unmatched, 0,
        "tansu: every row found was made again"
    );
    let rows = read_lines(out.path(), "anomaly");
    assert_eq!(rows.len(), items.len(), "one score per reading");
    eprintln!(
        "tansu: {} rows skipped after the resume, {} in the file",
        b.results_not_resent,
        rows.len()
    );
    assert_topic_holds_once(&settings, "cr.anomaly", &rows);
}
