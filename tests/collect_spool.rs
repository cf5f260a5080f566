//! Delivery with a disk spool: Kafka (the embedded broker, taken down with `broker_down`) is
//! unreachable while a file collector reads NAB's machine temperatures through a memory queue
//! of only 100 records; the rest must go to the spool on disk. (1) Kafka comes back before the
//! collector has finished: everything arrives exactly once and the spool is emptied. (2) Kafka
//! stays down until the collector has stopped: everything is kept in the spool, and the next
//! run of the collector sends it first, then its own readings; each exactly once.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::read_topic;
use streamgauge::collect::{self, spool::SpoolConfig, Collectors};
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::ClientSettings;

fn spooled_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

fn file_collector(name: &str, dataset: &str, topic: &str) -> collect::file::FileConfig {
    toml::from_str(&format!(
        "name = {name:?}\ndataset = {dataset:?}\ndata_dir = {:?}\nkafka_topic = {topic:?}\n",
        common::data_dir().display().to_string()
    ))
    .unwrap()
}

fn distinct_readings(dataset: &str) -> BTreeMap<(String, i64), f64> {
    common::load(dataset)
        .into_iter()
        .map(|r| ((r.series.to_string(), r.ts), r.values[0].1))
        .rev() // the first of a repeated time wins, as in the cleaner
        .collect()
}

fn in_topic(kafka: &ClientSettings, topic: &str) -> BTreeMap<(String, i64), f64> {
    let mut out = BTreeMap::new();
    for (k, r) in read_topic(kafka, topic) {
        let key = (k, r["ts"].as_i64().unwrap());
        let v = r["values"]["value"].as_f64().unwrap();
        assert!(out.insert(key.clone(), v).is_none(), "{key:?} twice");
    }
    out
}

#[test]
fn a_spool_holds_what_kafka_cannot_take_and_delivers_it_once_in_this_run_or_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(1).unwrap();
    let mut kafka = ClientSettings::new(broker.bootstrap());
    for t in ["temps", "temps2"] {
        broker.create_topic(t, 2).unwrap();
        broker.create_topic(&format!("{t}.quarantine"), 1).unwrap();
    }
    kafka.overrides = vec![
        ("queue.buffering.max.messages".into(), "100".into()),
        ("message.timeout.ms".into(), "600000".into()),
    ];
    let spool = SpoolConfig {
        dir: tmp.path().join("spool"),
        max_mb: 1024,
    };
    let want = distinct_readings("nab:machine_temperature");
    let rows = common::load("nab:machine_temperature").len() as u64;

    // (1) Kafka down while the file is read; back before the collector's 10 s finish is over.
    broker.broker_down(1).unwrap();
    let c = Collectors {
        file: vec![file_collector("temps", "nab:machine_temperature", "temps")],
        spool: Some(spool.clone()),
        ..Default::default()
    };
    let running = collect::start(&c, &kafka).unwrap();
    let counters = running.counters[0].1.clone();
    let t0 = Instant::now();
    while counters.snapshot().received < rows {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{:?}",
            counters.snapshot()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let dir = spool.dir.join("temps");
    let on_disk = spooled_bytes(&dir);
    // 22k readings of about 120 bytes, 100 of them in memory.
    assert!(on_disk > 1_000_000, "{on_disk} bytes spooled");
    broker.broker_up(1).unwrap();
    let t0 = Instant::now();
    while !running.should_stop() {
        assert!(t0.elapsed() < Duration::from_secs(60), "did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = running.stop().remove(0).1.expect("collector ran");
    assert_eq!(r.produced, want.len() as u64);
    let got = in_topic(&kafka, "temps");
    let diff: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), *v, got.get(k).copied()))
        .collect();
    assert!(
        diff.is_empty(),
        "{} differ: {:?}",
        diff.len(),
        &diff[..diff.len().min(5)]
    );
    assert_eq!(got.len(), want.len());
    assert_eq!(spooled_bytes(&dir), 0, "the spool is emptied");

    // (2) Kafka stays down until the collector has stopped: its readings wait on disk.
    broker.broker_down(1).unwrap();
    let c2 = Collectors {
        file: vec![file_collector(
            "temps2",
            "nab:machine_temperature",
            "temps2",
        )],
        spool: Some(spool.clone()),
        ..Default::default()
    };
    let running = collect::start(&c2, &kafka).unwrap();
    let t0 = Instant::now();
    while !running.should_stop() {
        assert!(t0.elapsed() < Duration::from_secs(60), "did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    running.stop().remove(0).1.expect("collector ran");
    let dir2 = spool.dir.join("temps2");
    assert!(spooled_bytes(&dir2) > 1_000_000, "kept for the next run");
    broker.broker_up(1).unwrap();
    // The next run (another file this time) sends the spool first, then its own readings.
    let c3 = Collectors {
        file: vec![file_collector("temps2", "weather_vega:seattle", "temps2")],
        spool: Some(spool.clone()),
        ..Default::default()
    };
    let running = collect::start(&c3, &kafka).unwrap();
    let t0 = Instant::now();
    while !running.should_stop() {
        assert!(t0.elapsed() < Duration::from_secs(60), "did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    running.stop().remove(0).1.expect("collector ran");
    assert_eq!(spooled_bytes(&dir2), 0);
    let seattle: BTreeMap<(String, i64), f64> = common::load("weather_vega:seattle")
        .into_iter()
        .map(|r| ((r.series.to_string(), r.ts), r.values[0].1))
        .collect();
    let mut all = want.clone();
    all.extend(seattle.iter().map(|(k, v)| (k.clone(), *v)));
    let got = read_topic(&kafka, "temps2");
    assert_eq!(got.len(), all.len(), "each reading once");
    let mut seen = std::collections::BTreeSet::new();
    for (k, r) in &got {
        let key = (k.clone(), r["ts"].as_i64().unwrap());
        assert!(seen.insert(key.clone()), "{key:?} twice");
        let v = r["values"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_f64()
            .unwrap();
        assert_eq!(all[&key], v);
    }
}
