//! Ingestion through Kafka: exactly once, and late data handled exactly as documented.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use streamgauge::dataset::generate::SplitMix64;
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::producer::{partition_for, ReadingProducer};
use streamgauge::kafka::ClientSettings;
use streamgauge::record::{Reading, Sym};

#[test]
fn hundred_thousand_readings_over_8_partitions_3_workers_counted_once() {
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("once", 8).unwrap();
    let mut p = ReadingProducer::new(&ClientSettings::new(broker.bootstrap()), "once").unwrap();
    let mut rng = SplitMix64(11);
    let names: Vec<Sym> = (0..500).map(|i| Sym::new(&format!("dev{i:03}"))).collect();
    let mut readings = Vec::new();
    for i in 0..100_000i64 {
        // Each reading carries its own id as its value: the windows' sums identify them.
        let r = Reading::single(names[rng.below(500) as usize], 1_000_000 + i * 3, i as f64);
        p.send(&r).unwrap();
        readings.push(r);
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = run_ok(spec(
        kafka_input(broker.bootstrap(), "once"),
        3,
        Duration::from_secs(10),
        dir.path(),
    ));
    assert_eq!(report.metrics.readings_in, 100_000);
    assert_eq!(report.metrics.late + report.metrics.quarantined, 0);
    assert_eq!(report.metrics.skipped_offsets, 0, "no offset gaps");
    assert_eq!(
        report.offsets.len(),
        8,
        "every partition owned by some worker"
    );
    assert_eq!(report.offsets.values().sum::<i64>(), 100_000);
    let got = read_windows(dir.path());
    assert_eq!(
        got.values().map(|v| v.0).sum::<u64>(),
        100_000,
        "each reading counted once"
    );
    // Sum of ids per series equals the produced one: no reading lost, none doubled.
    let mut want_sum: BTreeMap<String, f64> = BTreeMap::new();
    for r in &readings {
        *want_sum.entry(r.series.to_string()).or_default() += r.values[0].1;
    }
    let mut got_sum: BTreeMap<String, f64> = BTreeMap::new();
    for ((s, _, _), v) in &got {
        *got_sum.entry(s.clone()).or_default() += v.0 as f64 * v.1;
    }
    for (s, w) in &want_sum {
        assert!(
            (got_sum[s] - w).abs() < 1e-6 * w.max(1.0),
            "{s}: {} vs {w}",
            got_sum[s]
        );
    }
    assert_windows_eq(&got, &oracle(&readings, 10_000), "exactly once");
}

#[test]
fn batched_messages_deliver_every_reading_once_in_the_partition_librdkafka_picks() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let settings = ClientSettings::new(broker.bootstrap());
    broker.create_topic("batched", 8).unwrap();
    broker.create_topic("keyed", 8).unwrap();
    let mut rng = SplitMix64(12);
    let names: Vec<Sym> = (0..300).map(|i| Sym::new(&format!("dev{i:03}"))).collect();
    let readings: Vec<Reading> = (0..60_000i64)
        .map(|i| Reading::single(names[rng.below(300) as usize], 1_000_000 + i * 3, i as f64))
        .collect();
    let mut batched = ReadingProducer::batched(&settings, "batched", 250).unwrap();
    let mut keyed = ReadingProducer::new(&settings, "keyed").unwrap();
    for (i, r) in readings.iter().enumerate() {
        batched.send(r).unwrap();
        if i % 50 == 0 {
            keyed.send(r).unwrap();
        }
    }
    // A batch with a broken line in the middle: the other lines still count.
    let good = |s: &str, ts: i64| {
        let mut b = Vec::new();
        streamgauge::record::WireFormat::Json
            .append(&Reading::single(Sym::new(s), ts, 1.0), &mut b);
        String::from_utf8(b).unwrap()
    };
    let payload = format!(
        "{}\n{{\"series\":\"x\",\"ts\":oops}}\n{}\n",
        good("dev000", 1_180_001),
        good("dev000", 1_180_002)
    );
    batched.flush(Duration::from_secs(30)).unwrap();
    batched.send_raw("", payload.as_bytes()).unwrap();
    batched.flush(Duration::from_secs(30)).unwrap();
    keyed.flush(Duration::from_secs(30)).unwrap();

    // librdkafka's own partitioner put each keyed reading where partition_for says.
    for (part, key, _) in read_messages(&settings, "keyed") {
        assert_eq!(part, partition_for(&key, 8), "{key}");
    }
    // Batches: many readings per message, each series only in its partition.
    let messages = read_messages(&settings, "batched");
    assert!(
        messages.len() < readings.len() / 100,
        "{} messages",
        messages.len()
    );
    // (The hand-made batch went out unkeyed, to any partition.)
    for (part, _, payload) in messages
        .iter()
        .filter(|m| !m.2.windows(4).any(|w| w == b"oops"))
    {
        for line in payload.split(|&b| b == b'\n') {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let series = v["series"].as_str().unwrap();
            assert_eq!(*part, partition_for(series, 8), "{series}");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let report = run_ok(spec(
        kafka_input(broker.bootstrap(), "batched"),
        3,
        Duration::from_secs(10),
        dir.path(),
    ));
    assert_eq!(report.metrics.readings_in, 60_002);
    assert_eq!(report.metrics.quarantined, 1, "the broken line");
    assert_eq!(report.metrics.late, 0);
    let mut want = readings.clone();
    want.push(Reading::single(Sym::new("dev000"), 1_180_001, 1.0));
    want.push(Reading::single(Sym::new("dev000"), 1_180_002, 1.0));
    assert_windows_eq(&read_windows(dir.path()), &oracle(&want, 10_000), "batched");
    let q = std::fs::read_to_string(dir.path().join("quarantine.jsonl")).unwrap();
    assert!(q.contains("line 2") && q.contains("oops"), "{q}");
}

/// Readings of `series` on one partition each, event time rising 1 s per reading.
fn stream(series: usize, per_series: i64) -> Vec<(i32, Reading)> {
    let mut out = Vec::new();
    for s in 0..series {
        let name = Sym::new(&format!("s{s}"));
        for i in 0..per_series {
            out.push((
                s as i32,
                Reading::single(
                    name,
                    1_700_000_000_000 + i * 1000,
                    (i % 17) as f64 + s as f64,
                ),
            ));
        }
    }
    out
}

fn produce(broker: &EmbeddedBroker, topic: &str, parts: i32, items: &[(i32, Reading)]) {
    broker.create_topic(topic, parts).unwrap();
    let mut p = ReadingProducer::new(&ClientSettings::new(broker.bootstrap()), topic).unwrap();
    for (part, r) in items {
        p.send_to(r, *part).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn shuffles_within_lateness_change_nothing_beyond_it_go_to_late_output() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let sorted = stream(4, 2000);
    let mut rng = SplitMix64(5);

    // Within the bound: swap neighbours up to 4 s apart (lateness is 5 s).
    let mut shuffled = sorted.clone();
    for chunk in shuffled.chunks_mut(5) {
        for i in (1..chunk.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            chunk.swap(i, j);
        }
    }
    produce(&broker, "sorted", 4, &sorted);
    produce(&broker, "shuffled", 4, &shuffled);
    let readings: Vec<Reading> = sorted.iter().map(|(_, r)| r.clone()).collect();
    let want = oracle(&readings, 10_000);
    for workers in [1, 2, 4] {
        for topic in ["sorted", "shuffled"] {
            let dir = tempfile::tempdir().unwrap();
            let report = run_ok(spec(
                kafka_input(broker.bootstrap(), topic),
                workers,
                Duration::from_secs(10),
                dir.path(),
            ));
            assert_eq!(
                report.metrics.late, 0,
                "{topic}: nothing is late within the bound"
            );
            assert_windows_eq(
                &read_windows(dir.path()),
                &want,
                &format!("{topic}, {workers} workers"),
            );
        }
    }

    // Beyond the bound: move some readings 8-30 s later in their partition's order.
    let mut late_stream = sorted.clone();
    let mut moved = 0;
    let mut i = 50;
    while i + 40 < late_stream.len() {
        let shift = 8 + rng.below(23) as usize;
        if late_stream[i].0 == late_stream[i + shift].0 {
            let r = late_stream.remove(i);
            late_stream.insert(i + shift, r);
            moved += 1;
        }
        i += 97;
    }
    assert!(moved > 50);
    // Expected late set, by the documented rule: below the highest event time seen earlier
    // in its partition minus the lateness.
    let mut max_seen: BTreeMap<i32, i64> = BTreeMap::new();
    let mut want_late = BTreeSet::new();
    let mut on_time = Vec::new();
    for (p, r) in &late_stream {
        let m = max_seen.entry(*p).or_insert(i64::MIN);
        if *m != i64::MIN && r.ts < *m - 5000 {
            want_late.insert((r.series.to_string(), r.ts));
        } else {
            on_time.push(r.clone());
        }
        *m = (*m).max(r.ts);
    }
    assert!(!want_late.is_empty() && want_late.len() <= moved);
    produce(&broker, "late", 4, &late_stream);
    let want_on_time = oracle(&on_time, 10_000);
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let report = run_ok(spec(
            kafka_input(broker.bootstrap(), "late"),
            workers,
            Duration::from_secs(10),
            dir.path(),
        ));
        let got_late: BTreeSet<(String, i64)> = read_lines(dir.path(), "late")
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["series"].as_str().unwrap().to_string(),
                    v["ts"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got_late, want_late, "late output, {workers} workers");
        assert_eq!(report.metrics.late, want_late.len() as u64);
        assert_windows_eq(
            &read_windows(dir.path()),
            &want_on_time,
            &format!("on-time windows, {workers} workers"),
        );
    }
}

#[test]
fn partitions_that_appear_after_the_start_are_picked_up() {
    // Neither test broker serves CreatePartitions, so the topic itself appears late: the same
    // metadata refresh that finds added partitions finds these.
    let broker = EmbeddedBroker::start(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        kafka_input(broker.bootstrap(), "later"),
        2,
        Duration::from_secs(60),
        dir.path(),
    );
    if let streamgauge::engine::Input::Kafka(k) = &mut s.input {
        k.until_end = false;
        k.metadata_refresh = Duration::from_millis(300);
    }
    let (metrics, stop) = (s.metrics.clone(), s.stop.clone());
    let run = std::thread::spawn(move || run_ok(s));
    std::thread::sleep(Duration::from_secs(1));
    let items = stream(4, 500);
    produce(&broker, "later", 4, &items);
    let t0 = std::time::Instant::now();
    while metrics.snapshot().readings_in < 2000 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "only {} of 2000 read",
            metrics.snapshot().readings_in
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = run.join().unwrap();
    assert_eq!(
        report.offsets.len(),
        4,
        "all four partitions owned: {:?}",
        report.offsets
    );
    let readings: Vec<Reading> = items.into_iter().map(|(_, r)| r).collect();
    assert_windows_eq(
        &read_windows(dir.path()),
        &oracle(&readings, 60_000),
        "topic created after start",
    );
}

/// A series name that librdkafka's partitioner puts on `part` of `parts` partitions.
fn key_on(part: i32, parts: i32) -> String {
    (0..)
        .map(|k| format!("p{k}"))
        .find(|k| partition_for(k, parts) == part)
        .unwrap()
}

/// One partition per series, each at its own pace (series `s` every `700 (s + 1)` ms from its
/// own start). Even series send two readings a message (a batched message, which can
/// straddle a start time), odd ones one. An unreadable message follows every 97th message
/// and one comes just before the message holding each series' 1,000th reading. (partition,
/// message) in the order produced; `None` for the unreadable ones.
fn paced(series: usize, per_series: i64) -> Vec<(i32, Option<Vec<Reading>>)> {
    let mut out = Vec::new();
    for s in 0..series {
        let name = Sym::new(&key_on(s as i32, series as i32));
        let per_message = if s % 2 == 0 { 2 } else { 1 };
        let mut i = 0;
        let mut sent = 0;
        while i < per_series {
            if sent % 97 == 96 || (i..i + per_message).contains(&1_000) {
                out.push((s as i32, None));
            }
            let msg: Vec<Reading> = (i..(i + per_message).min(per_series))
                .map(|k| {
                    let ts = 1_700_000_000_000 + s as i64 * 3_333 + k * 700 * (s as i64 + 1);
                    Reading::single(name, ts, (k % 23) as f64)
                })
                .collect();
            out.push((s as i32, Some(msg)));
            i += per_message;
            sent += 1;
        }
    }
    out
}

#[test]
fn from_a_time_starts_each_partition_at_its_last_message_before_it_on_1_2_4_workers() {
    use streamgauge::kafka::source::StartAt;
    use streamgauge::record::WireFormat;
    let broker = EmbeddedBroker::start(1).unwrap();
    let items = paced(4, 3_000);
    broker.create_topic("from", 4).unwrap();
    let settings = ClientSettings::new(broker.bootstrap());
    let mut p = ReadingProducer::new(&settings, "from").unwrap();
    for (part, m) in &items {
        // Keyed like the partition's series, so every message lands in its partition.
        let key = key_on(*part, 4);
        let payload = match m {
            Some(readings) => {
                let (mut lines, mut one) = (Vec::new(), Vec::new());
                for (i, r) in readings.iter().enumerate() {
                    if i > 0 {
                        lines.push(b'\n');
                    }
                    WireFormat::Json.encode(r, &mut one);
                    lines.extend_from_slice(&one);
                }
                lines
            }
            None => b"{not json".to_vec(),
        };
        p.send_raw(&key, &payload).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let at = |s: usize, i: i64| 1_700_000_000_000 + s as i64 * 3_333 + i * 700 * (s as i64 + 1);
    // Times: series 0's 1,000th reading exactly (an unreadable message just before its
    // message), series 2's 1,235th (inside a two-reading message, which straddles it), a
    // time between two readings of series 1, before everything, after everything.
    for t in [
        at(0, 1_000),
        at(2, 1_235),
        at(1, 1_234) + 1,
        0,
        at(3, 3_000),
    ] {
        // What the search must give: per partition, every message from the last readable one
        // whose readings are all before `t` (the beginning when there is none); unreadable
        // messages after it are read, and quarantined. Readings before `t` are late.
        let (mut want, mut late, mut read, mut bad) = (Vec::new(), 0u64, 0u64, 0u64);
        for part in 0..4 {
            let msgs: Vec<&Option<Vec<Reading>>> = items
                .iter()
                .filter(|(q, _)| *q == part)
                .map(|(_, m)| m)
                .collect();
            let start = msgs
                .iter()
                .rposition(|m| m.as_ref().is_some_and(|rs| rs.iter().all(|r| r.ts < t)))
                .unwrap_or(0);
            for m in &msgs[start..] {
                match m {
                    Some(rs) => {
                        for r in rs {
                            read += 1;
                            if r.ts < t {
                                late += 1;
                            } else {
                                want.push(r.clone());
                            }
                        }
                    }
                    None => bad += 1,
                }
            }
        }
        for workers in [1, 2, 4] {
            let what = format!("from {t} on {workers} workers");
            let dir = tempfile::tempdir().unwrap();
            let mut s = spec(
                kafka_input(broker.bootstrap(), "from"),
                workers,
                Duration::from_secs(60),
                dir.path(),
            );
            if let streamgauge::engine::Input::Kafka(k) = &mut s.input {
                k.start = StartAt::Time(t);
            }
            let report = run_ok(s);
            assert_eq!(report.metrics.readings_in, read, "{what}");
            assert_eq!(report.metrics.late, late, "{what}: readings before it");
            assert_eq!(
                read_lines(dir.path(), "late").len() as u64,
                late,
                "{what}: in the late output"
            );
            assert_eq!(report.metrics.quarantined, bad, "{what}: bad messages read");
            assert_windows_eq(&read_windows(dir.path()), &oracle(&want, 60_000), &what);
        }
        assert!(
            t == 0 || want.len() < 12_000,
            "the start is past the beginning for {t}"
        );
        if t == at(2, 1_235) {
            let straddles = items.iter().any(|(_, m)| {
                m.as_ref()
                    .is_some_and(|rs| rs.iter().any(|r| r.ts < t) && rs.iter().any(|r| r.ts >= t))
            });
            assert!(straddles, "a batched message straddles {t}");
        }
    }
}

#[test]
fn from_end_reads_only_what_arrives_after_the_start() {
    use streamgauge::kafka::source::StartAt;
    let broker = EmbeddedBroker::start(1).unwrap();
    let items = stream(4, 1_000);
    let (old, new): (Vec<_>, Vec<_>) = items
        .into_iter()
        .partition(|(_, r)| r.ts < 1_700_000_000_000 + 500_000);
    produce(&broker, "end", 4, &old);
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        kafka_input(broker.bootstrap(), "end"),
        2,
        Duration::from_secs(60),
        dir.path(),
    );
    if let streamgauge::engine::Input::Kafka(k) = &mut s.input {
        k.until_end = false;
        k.start = StartAt::End;
    }
    let (metrics, stop) = (s.metrics.clone(), s.stop.clone());
    let run = std::thread::spawn(move || run_ok(s));
    // Every partition assigned (at its end) before the new readings are produced.
    let t0 = std::time::Instant::now();
    while metrics
        .workers()
        .iter()
        .map(|w| w.partitions.len())
        .sum::<usize>()
        < 4
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "partitions never assigned"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut p = ReadingProducer::new(&ClientSettings::new(broker.bootstrap()), "end").unwrap();
    for (part, r) in &new {
        p.send_to(r, *part).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    while metrics.snapshot().readings_in < new.len() as u64 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "only {} of {} read",
            metrics.snapshot().readings_in,
            new.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A moment for anything old that would (wrongly) come after the new readings.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = run.join().unwrap();
    assert_eq!(
        report.metrics.readings_in,
        new.len() as u64,
        "only the new readings"
    );
    let readings: Vec<Reading> = new.into_iter().map(|(_, r)| r).collect();
    assert_windows_eq(
        &read_windows(dir.path()),
        &oracle(&readings, 60_000),
        "from end",
    );
}

#[test]
fn a_stopped_run_says_where_it_cut_windows_short_and_resuming_there_is_exact() {
    // Half of the readings, a live run stopped once it has them all (its last windows are
    // still open: the stop cuts them short), then the other half; a run from the time the
    // stop named, to the end. The stopped run's windows before that time and the resumed
    // run's windows are every window of the whole stream, each whole, none twice.
    use streamgauge::kafka::source::StartAt;
    let broker = EmbeddedBroker::start(1).unwrap();
    let items = stream(8, 3_000);
    let readings: Vec<Reading> = items.iter().map(|(_, r)| r.clone()).collect();
    let want = oracle(&readings, 60_000);
    let (first, second): (Vec<_>, Vec<_>) = items
        .iter()
        .cloned()
        .partition(|(_, r)| r.ts < 1_700_000_000_000 + 1_500 * 1000);
    for workers in [1, 2] {
        let topic = format!("resume{workers}");
        produce(&broker, &topic, 8, &first);
        let dir_a = tempfile::tempdir().unwrap();
        let mut s = spec(
            kafka_input(broker.bootstrap(), &topic),
            workers,
            Duration::from_secs(60),
            dir_a.path(),
        );
        if let streamgauge::engine::Input::Kafka(k) = &mut s.input {
            k.until_end = false;
        }
        let (metrics, stop) = (s.metrics.clone(), s.stop.clone());
        let run = std::thread::spawn(move || run_ok(s));
        let t0 = std::time::Instant::now();
        while metrics.snapshot().readings_in < first.len() as u64 {
            assert!(t0.elapsed() < Duration::from_secs(60), "not all read");
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let a = run.join().unwrap();
        let from = a
            .cut_short_from
            .expect("the stop closed windows early and says where");
        assert_eq!(from % 60_000, 0, "a window's start");
        let mut p = ReadingProducer::new(&ClientSettings::new(broker.bootstrap()), &topic).unwrap();
        for (part, r) in &second {
            p.send_to(r, *part).unwrap();
        }
        p.flush(Duration::from_secs(30)).unwrap();

        let dir_b = tempfile::tempdir().unwrap();
        let mut s = spec(
            kafka_input(broker.bootstrap(), &topic),
            workers,
            Duration::from_secs(60),
            dir_b.path(),
        );
        if let streamgauge::engine::Input::Kafka(k) = &mut s.input {
            k.start = StartAt::Time(from);
        }
        let b = run_ok(s);
        assert!(
            b.cut_short_from.is_none(),
            "an input read to its end cuts nothing"
        );
        let got_a = read_windows(dir_a.path());
        let got_b = read_windows(dir_b.path());
        assert!(got_b.keys().all(|k| k.2 >= from));
        // What the stop wrote from there on is cut short: not what the whole stream gives.
        assert!(
            got_a
                .iter()
                .any(|(k, v)| k.2 >= from && want.get(k).is_none_or(|w| w.0 != v.0)),
            "{workers} workers: the stop cut nothing short from {from}"
        );
        let mut union: BTreeMap<_, _> = got_a.into_iter().filter(|(k, _)| k.2 < from).collect();
        for (k, v) in got_b {
            assert!(union.insert(k.clone(), v).is_none(), "{k:?} twice");
        }
        assert_windows_eq(
            &union,
            &want,
            &format!("stopped and resumed, {workers} workers"),
        );
    }
}
