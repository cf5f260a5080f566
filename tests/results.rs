//! Kafka result topics: every row of a run's output reaches its topic, and the rows Kafka
//! does not take (one partition's leader is down for longer than `message.timeout.ms`) are
//! kept in the undelivered file, counted, and sent by `streamgauge redeliver` once Kafka is
//! back, so the topic ends with exactly the rows of the output file; and a run killed
//! outright the moment it wrote a checkpoint has had every row before it acknowledged.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::producer::partition_for;
use streamgauge::kafka::results::UndeliveredRow;
use streamgauge::kafka::ClientSettings;
use streamgauge::record::{Reading, Sym};

/// Counts of (key, payload) pairs: a multiset of rows.
type Rows = BTreeMap<(String, String), usize>;

fn add(rows: &mut Rows, key: String, payload: String) {
    *rows.entry((key, payload)).or_default() += 1;
}

/// The rows of the `series_stats` output file, keyed by their series.
fn file_rows(dir: &Path) -> Rows {
    let mut rows = Rows::new();
    for line in read_lines(dir, "series_stats") {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let key = v["series"].as_str().expect("a series field").to_string();
        add(&mut rows, key, line);
    }
    rows
}

fn topic_rows(brokers: &str, topic: &str) -> Rows {
    let mut rows = Rows::new();
    for (_, key, payload) in read_messages(&ClientSettings::new(brokers), topic) {
        add(&mut rows, key, String::from_utf8(payload).unwrap());
    }
    rows
}

/// Creates `topic` with `parts` partitions, every one led by broker `leader`.
fn topic_led_by(broker: &EmbeddedBroker, topic: &str, parts: i32, leader: i32) {
    broker.create_topic(topic, parts).unwrap();
    for p in 0..parts {
        broker.partition_leader(topic, p, leader).unwrap();
    }
}

/// Creates `series_stats`' result topics under `prefix` (`series_stats` with `parts`
/// partitions, `late` and `quarantine` with one), every partition led by broker `leader`.
fn result_topics(broker: &EmbeddedBroker, prefix: &str, parts: i32, leader: i32) {
    for (o, n) in [("series_stats", parts), ("late", 1), ("quarantine", 1)] {
        topic_led_by(broker, &format!("{prefix}.{o}"), n, leader);
    }
}

fn kept_rows(path: &Path) -> Vec<UndeliveredRow> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn rows_kafka_does_not_take_are_kept_counted_and_redelivered_to_match_the_output_file() {
    // Broker 1 leads the input and partition 0 of the result topic; broker 2 leads its
    // partition 1 and is down for the whole run.
    let broker = EmbeddedBroker::start(2).unwrap();
    let b = broker.bootstrap().to_string();
    topic_led_by(&broker, "rin", 2, 1);
    result_topics(&broker, "rin", 2, 1);
    broker.partition_leader("rin.series_stats", 1, 2).unwrap();
    let series: Vec<Sym> = (0..24).map(|i| Sym::new(&format!("dev{i:02}"))).collect();
    let on = |p: i32| {
        series
            .iter()
            .filter(|s| partition_for(s.as_ref(), 2) == p)
            .count()
    };
    assert!(on(0) > 0 && on(1) > 0, "series on both result partitions");
    let items: Vec<(i32, Reading)> = (0..12_000i64)
        .map(|i| {
            let s = series[(i % 24) as usize];
            let r = Reading::single(s, 1_000_000 + i * 100, ((i * 37) % 101) as f64);
            ((i % 2) as i32, r)
        })
        .collect();
    produce_to(&b, "rin", &items);

    broker.broker_down(2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut s = spec(kafka_input(&b, "rin"), 2, Duration::from_secs(10), &out);
    let mut settings = ClientSettings::new(&b);
    settings
        .overrides
        .push(("message.timeout.ms".into(), "1500".into()));
    s.result_topics = Some((settings, "rin".into()));
    let report = run_ok(s);
    let file = file_rows(&out);
    let total: usize = file.values().sum();
    assert!(total > 1_000, "{total} windows");

    // What the file holds for the series of each result partition.
    let mut want = [Rows::new(), Rows::new()];
    for ((k, p), n) in &file {
        let part = partition_for(k, 2) as usize;
        want[part].insert((k.clone(), p.clone()), *n);
    }
    let path = out.join("undelivered.jsonl");
    assert_eq!(report.undelivered.as_deref(), Some(path.as_path()));
    let kept = kept_rows(&path);
    let mut kept_set = Rows::new();
    for r in &kept {
        assert_eq!(r.topic, "rin.series_stats");
        assert!(!r.reason.is_empty());
        add(&mut kept_set, r.key.clone(), r.payload.clone());
    }
    assert_eq!(
        report.metrics.results_undelivered,
        kept.len() as u64,
        "every kept row counted once"
    );
    assert_eq!(
        kept_set, want[1],
        "exactly the rows of the partition whose leader was down are kept"
    );

    broker.broker_up(2).unwrap();
    assert_eq!(
        topic_rows(&b, "rin.series_stats"),
        want[0],
        "the rows of the live partition reached it, each once"
    );

    // Redelivery through the binary, now that broker 2 is back.
    let o = Command::new(env!("CARGO_BIN_EXE_streamgauge"))
        .args(["redeliver", path.to_str().unwrap(), "--brokers", &b])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("{} rows delivered, 0 failed again", kept.len())),
        "{err}"
    );
    assert!(!path.exists(), "an emptied undelivered file is removed");
    assert_eq!(
        topic_rows(&b, "rin.series_stats"),
        file,
        "after the redelivery the topic holds every row of the output file once"
    );
}

#[test]
fn with_kafka_up_the_result_topic_holds_the_output_file_and_nothing_is_kept() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let b = broker.bootstrap().to_string();
    broker.create_topic("up", 3).unwrap();
    let series: Vec<Sym> = (0..10).map(|i| Sym::new(&format!("s{i}"))).collect();
    let items: Vec<(i32, Reading)> = (0..5_000i64)
        .map(|i| {
            let r = Reading::single(series[(i % 10) as usize], 5_000 + i * 250, i as f64);
            ((i % 3) as i32, r)
        })
        .collect();
    produce_to(&b, "up", &items);
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("up{workers}");
        result_topics(&broker, &prefix, 3, 1);
        let mut s = spec(
            kafka_input(&b, "up"),
            workers,
            Duration::from_secs(10),
            dir.path(),
        );
        s.result_topics = Some((ClientSettings::new(&b), prefix.clone()));
        let report = run_ok(s);
        assert_eq!(report.undelivered, None);
        assert_eq!(report.metrics.results_undelivered, 0);
        assert!(!dir.path().join("undelivered.jsonl").exists());
        let file = file_rows(dir.path());
        assert!(file.values().sum::<usize>() > 100);
        assert_eq!(
            topic_rows(&b, &format!("{prefix}.series_stats")),
            file,
            "{workers} workers: topic and file"
        );
    }
}

#[test]
fn a_run_with_undelivered_rows_exits_with_an_error_that_says_where_they_are() {
    let broker = EmbeddedBroker::start(2).unwrap();
    let b = broker.bootstrap().to_string();
    topic_led_by(&broker, "gone", 1, 1);
    result_topics(&broker, "gone", 1, 2);
    let s = Sym::new("only");
    let items: Vec<(i32, Reading)> = (0..600i64)
        .map(|i| (0, Reading::single(s, 1_000 + i * 1_000, i as f64)))
        .collect();
    produce_to(&b, "gone", &items);
    broker.broker_down(2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_streamgauge"))
        .args([
            "run",
            "series_stats",
            "--topic",
            "gone",
            "--brokers",
            &b,
            "--until-end",
        ])
        .args([
            "--no-dashboard",
            "-X",
            "message.timeout.ms=1000",
            "--undelivered",
        ])
        .arg(&kept)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    let n = kept_rows(&kept).len();
    // Readings at 1 s to 600 s: the 10 s windows starting at 0 s to 600 s.
    assert_eq!(n, 61, "one row per window: {err}");
    assert!(
        err.contains(&format!("{n} result rows were not delivered to Kafka"))
            && err.contains(&format!("streamgauge redeliver {}", kept.display())),
        "{err}"
    );
}

#[test]
fn a_run_killed_the_moment_it_wrote_a_checkpoint_loses_no_result_row() {
    // The broker that leads the result topics is down for the first 11 s of the run (longer
    // than a checkpoint waits for the result partitions' end offsets), so the first rows
    // stay queued in the producer. The run is killed outright (SIGKILL) the
    // moment its first checkpoint is complete: every row before the barrier, which the
    // resumed run does not make again, must be in the topic by then. The resumed run then
    // ends with the topic holding the output file's rows, each once.
    let broker = EmbeddedBroker::start(2).unwrap();
    let b = broker.bootstrap().to_string();
    topic_led_by(&broker, "slow", 3, 1);
    result_topics(&broker, "slow", 3, 2);
    let series: Vec<Sym> = (0..10).map(|i| Sym::new(&format!("s{i}"))).collect();
    // 2,000 s of readings, ten a second: twenty barriers of 100 s.
    let items: Vec<(i32, Reading)> = (0..20_000i64)
        .map(|i| {
            let r = Reading::single(series[(i % 10) as usize], 1_000 + i * 100, i as f64);
            // A series in one partition, as the collectors key it: its readings arrive in
            // one order, so the resumed run makes the dead run's rows bit for bit.
            ((i % 10 % 3) as i32, r)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (out, sp) = (dir.path().join("out"), dir.path().join("savepoint"));
    let run = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_streamgauge"));
        c.args(["run", "series_stats", "--topic", "slow", "--brokers", &b])
            .args(["--no-dashboard", "--checkpoint-every", "100s"])
            .arg("--savepoint")
            .arg(&sp)
            .arg("--output")
            .arg(&out)
            .args(extra);
        c
    };
    let complete = || {
        std::fs::read_dir(&sp)
            .into_iter()
            .flatten()
            .any(|e| e.is_ok_and(|e| e.path().join("manifest.p0.json").exists()))
    };
    broker.broker_down(2).unwrap();
    let mut live = run(&[])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut down = true;
    // The input arrives 25 s of event time at a time, so that the run's frontier crosses
    // the barriers one by one; the run is killed as soon as one is complete.
    let mut sent = 0;
    'live: for part in items.chunks(250) {
        produce_to(&b, "slow", part);
        sent += part.len();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_millis(400) {
            if down && started.elapsed() > Duration::from_secs(11) {
                broker.broker_up(2).unwrap();
                down = false;
            }
            if complete() {
                break 'live;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    live.kill().unwrap(); // SIGKILL
    live.wait().unwrap();
    if down {
        broker.broker_up(2).unwrap();
    }
    assert!(complete(), "a checkpoint before the input ran out");
    assert!(sent < items.len(), "killed part-way");
    produce_to(&b, "slow", &items[sent..]);
    let p = run(&["--until-end"])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&p.stderr);
    assert!(
        p.status.success() && said.contains("resumed from the savepoint"),
        "{said}"
    );
    let file = file_rows(&out);
    // Readings at 1 s to 2,001 s: the 10 s windows starting at 0 s to 2,000 s, per series.
    assert_eq!(file.values().sum::<usize>(), 10 * 201, "{said}");
    let topic = topic_rows(&b, "slow.series_stats");
    let missing = file.keys().filter(|k| !topic.contains_key(*k)).count();
    assert_eq!(
        missing, 0,
        "rows of the file missing from the topic; {said}"
    );
    assert_eq!(topic, file, "the topic holds the file's rows, each once");
}
