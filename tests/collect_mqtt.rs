//! The MQTT collector against a real broker: Mosquitto (Debian package `mosquitto`, started
//! here on a free loopback port; `.ci/run` installs it). Two collectors run at once from one
//! config file, MQTT 3.1.1 with JSON payloads and MQTT 5 with bare numbers, both QoS 1, into
//! the embedded Kafka broker; every reading and every reject is then read back from Kafka.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use streamgauge::collect::clean::Counters;
use streamgauge::collect::{self, Collectors};
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::ClientSettings;

use common::{mosquitto, read_topic};

/// An MQTT client `id` of the broker on `port` (a queue of `cap` requests), with the thread
/// that drives its connection.
fn publisher(
    id: impl Into<String>,
    port: u16,
    cap: usize,
) -> (rumqttc::Client, std::thread::JoinHandle<()>) {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = rumqttc::Client::new(opts, cap);
    (client, std::thread::spawn(move || for _ in conn.iter() {}))
}

/// Calls `publish` every 200 ms until the collector has received a record (so it has
/// subscribed); fails after 20 s.
fn until_subscribed(counters: &Counters, mut publish: impl FnMut()) {
    let t0 = Instant::now();
    while counters.snapshot().received == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "collector did not subscribe"
        );
        publish();
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the collector has received `n` records in all; fails after 20 s, with `what`
/// and its counters.
fn wait_received(counters: &Counters, n: u64, what: &str) {
    let t0 = Instant::now();
    while counters.snapshot().received < n {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: {:?}",
            counters.snapshot()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mqtt_v311_json_and_v5_numbers_are_cleaned_into_kafka_with_rejects_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let (_mosq, port) = mosquitto(tmp.path());
    let broker = EmbeddedBroker::start(1).unwrap();
    let kafka = ClientSettings::new(broker.bootstrap());
    for t in ["iot", "iot.quarantine", "iot-num", "iot-num.quarantine"] {
        broker.create_topic(t, 3).unwrap();
    }
    // The example config of the repository, pointed at this test's brokers.
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/collect-mqtt.toml");
    let mut settings = streamgauge::config::Settings::load(Some(&example)).unwrap();
    assert_eq!(settings.collectors.len(), 2);
    for m in &mut settings.collectors.mqtt {
        m.broker = format!("127.0.0.1:{port}");
    }
    let running = collect::start(&settings.collectors, &kafka).unwrap();

    // A publisher (MQTT 3.1.1, QoS 1). Wait until both collectors have subscribed: publish
    // sentinels until each has received one.
    let (client, pump) = publisher("test-publisher", port, 100);
    let qos = rumqttc::QoS::AtLeastOnce;
    let counters: BTreeMap<String, _> = running.counters.iter().cloned().collect();
    let t0 = Instant::now();
    let mut sentinels = 0;
    while counters["plant"].snapshot().received == 0 || counters["numbers"].snapshot().received == 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "collectors did not subscribe"
        );
        sentinels += 1;
        client
            .publish(
                "plant/sentinel",
                qos,
                false,
                format!(r#"{{"device":{{"id":"sentinel"}},"ts":{sentinels},"temperature":50}}"#),
            )
            .unwrap();
        client
            .publish("sensors/sentinel/temp", qos, false, "0")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let base = [counters["plant"].snapshot(), counters["numbers"].snapshot()];

    // The real messages.
    let good: Vec<(String, String, f64)> = (0..5)
        .map(|i| {
            let ts = format!("2024-05-01T12:00:0{i}+02:00");
            (ts, "boiler-1".to_string(), 68.0 + 9.0 * i as f64)
        })
        .collect();
    // The sixth in local Berlin time with no offset (summer: UTC+2), as `clean.time_format`
    // and `clean.timezone` say.
    let good: Vec<(String, String, f64)> = good
        .into_iter()
        .chain([(
            "2024-05-01 12:00:05".to_string(),
            "boiler-1".to_string(),
            113.0,
        )])
        .collect();
    for (ts, id, f) in &good {
        let p = format!(r#"{{"device":{{"id":"{id}"}},"ts":"{ts}","temperature":{f}}}"#);
        client.publish("plant/boiler", qos, false, p).unwrap();
    }
    let bad = [
        (
            r#"{"device":{"id":"boiler-1"},"ts":"2024-05-01T12:00:00+02:00","temperature":70}"#,
            None,
        ), // duplicate
        ("{oops", Some("not JSON")),
        (
            r#"{"device":{"id":"boiler-2"},"temperature":70}"#,
            Some("missing time"),
        ),
        (
            r#"{"device":{"id":"boiler-2"},"ts":1714557600,"temperature":500}"#,
            Some("plausible range"),
        ),
        (
            r#"{"ts":1714557600,"temperature":70}"#,
            Some("missing series"),
        ),
        (
            r#"{"device":{"id":"boiler-2"},"ts":"noon","temperature":70}"#,
            Some("unparseable time"),
        ),
        (
            r#"{"device":{"id":"boiler-2"},"ts":"2024-03-31 02:30:00","temperature":70}"#,
            Some("does not exist in Europe/Berlin"),
        ),
    ];
    for (p, _) in &bad {
        client.publish("plant/boiler", qos, false, *p).unwrap();
    }
    for (topic, p) in [
        ("sensors/k1/temp", "21.5"),
        ("sensors/k2/temp", " 19.25\n"),
        ("sensors/k1/temp", "warm"),
    ] {
        client.publish(topic, qos, false, p).unwrap();
    }
    let want_plant = (good.len() + bad.len()) as u64;
    let t0 = Instant::now();
    while counters["plant"].snapshot().received - base[0].received < want_plant
        || counters["numbers"].snapshot().received - base[1].received < 3
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "messages did not arrive: {:?}",
            counters["plant"].snapshot()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = client.disconnect();
    drop(client);
    drop(pump); // its iterator ends once every client handle is gone; no need to wait
    let finals: BTreeMap<String, _> = running
        .stop()
        .into_iter()
        .map(|(n, r)| (n, r.unwrap()))
        .collect();
    for s in finals.values() {
        assert_eq!(
            s.received,
            s.produced + s.quarantined + s.duplicates,
            "{s:?}"
        );
    }
    let plant = finals["plant"];
    assert_eq!(plant.received - base[0].received, want_plant);
    assert_eq!(plant.duplicates, 1);
    assert_eq!(plant.quarantined, 6);

    // Kafka: the readings, converted to C, in UTC, keyed by series, tagged.
    let readings: Vec<(String, Value)> = read_topic(&kafka, "iot")
        .into_iter()
        .filter(|(k, _)| k != "sentinel")
        .collect();
    assert_eq!(readings.len(), good.len());
    let mut got: Vec<(i64, f64)> = readings
        .iter()
        .map(|(k, v)| {
            assert_eq!(k, "boiler-1");
            assert_eq!(v["series"], "boiler-1");
            assert_eq!(v["tags"]["unit"], "C");
            assert_eq!(v["tags"]["site"], "north");
            (
                v["ts"].as_i64().unwrap(),
                v["values"]["temperature"].as_f64().unwrap(),
            )
        })
        .collect();
    got.sort_by_key(|g| g.0);
    for (i, (ts, c)) in got.iter().enumerate() {
        assert_eq!(
            *ts,
            1_714_557_600_000 + 1000 * i as i64,
            "12:00:0{i} in Berlin (+02:00) is 10:00:0{i}Z"
        );
        let want_c = (good[i].2 - 32.0) * 5.0 / 9.0;
        assert!((c - want_c).abs() < 1e-9, "{c} vs {want_c}");
    }
    let q = read_topic(&kafka, "iot.quarantine");
    let reasons: Vec<String> = q
        .iter()
        .map(|(_, v)| v["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(q.len(), 6, "{reasons:?}");
    for (p, why) in bad.iter().filter_map(|(p, w)| w.map(|w| (p, w))) {
        let hit = q
            .iter()
            .find(|(_, v)| v["payload"] == *p)
            .unwrap_or_else(|| panic!("{p} not quarantined"));
        assert!(
            hit.1["reason"].as_str().unwrap().contains(why),
            "{}: {}",
            p,
            hit.1["reason"]
        );
        assert_eq!(
            hit.1["source"],
            format!("mqtt://127.0.0.1:{port}/plant/boiler")
        );
    }

    // MQTT 5, bare numbers: the series is the topic, the time the time of receipt.
    let nums: BTreeMap<String, f64> = read_topic(&kafka, "iot-num")
        .into_iter()
        .filter(|(k, _)| !k.contains("sentinel"))
        .map(|(k, v)| (k, v["values"]["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        nums,
        BTreeMap::from([
            ("sensors/k1/temp".to_string(), 21.5),
            ("sensors/k2/temp".to_string(), 19.25)
        ])
    );
    let nq = read_topic(&kafka, "iot-num.quarantine");
    assert_eq!(nq.len(), 1);
    assert!(
        nq[0].1["reason"].as_str().unwrap().contains("not a number"),
        "{}",
        nq[0].1
    );
    assert_eq!(nq[0].1["payload"], "warm");
}

#[test]
fn a_bad_collector_config_says_what_to_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("c.toml");
    std::fs::write(
        &file,
        "[[mqtt]]\nbroker = \"h:1\"\ntopics = [\"a\"]\nkafka_topic = \"r\"\nqos = 7\n",
    )
    .unwrap();
    let s = streamgauge::config::Settings::load(Some(&file)).unwrap();
    let e = s.collectors.validate().unwrap_err().to_string();
    assert!(e.contains("qos = 7") && e.contains("use 0 or 1"), "{e}");
    std::fs::write(
        &file,
        "[[mqtt]]\nbroker = \"h:1\"\ntopic = [\"a\"]\nkafka_topic = \"r\"\n",
    )
    .unwrap();
    let e = streamgauge::config::Settings::load(Some(&file))
        .unwrap_err()
        .to_string();
    assert!(e.contains("topic"), "{e}");
    std::fs::write(
        &file,
        "[[mqtt]]\nbroker = \"h:1\"\ntopics = [\"a\"]\nkafka_topic = \"r\"\n[mqtt.clean]\ntimezone = \"Europe/Berln\"\n",
    )
    .unwrap();
    let e = streamgauge::config::Settings::load(Some(&file))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"Europe/Berln\" is not in the tz database") && e.contains("America/Chicago"),
        "{e}"
    );
    let e = Collectors::default().validate();
    assert!(e.is_ok());
    // Through the command line: no collectors configured.
    let out = Command::new(env!("CARGO_BIN_EXE_streamgauge"))
        .args(["collect", "--brokers", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no collectors"));
}

/// Kafka goes down mid-stream: the collector keeps reading MQTT, the idempotent producer
/// holds the readings (acks=all) and delivers them when the broker is back; every reading is
/// in the topic exactly once.
#[test]
fn readings_published_while_kafka_is_down_arrive_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (_mosq, port) = mosquitto(tmp.path());
    let broker = EmbeddedBroker::start(1).unwrap();
    let kafka = ClientSettings::new(broker.bootstrap());
    broker.create_topic("down", 2).unwrap();
    broker.create_topic("down.quarantine", 1).unwrap();
    let cfg: collect::mqtt::MqttConfig = toml::from_str(&format!(
        r#"
name = "down"
broker = "127.0.0.1:{port}"
topics = ["d/#"]
qos = 1
kafka_topic = "down"
series_field = "id"
time_field = "t"
"#
    ))
    .unwrap();
    let running = collect::start(
        &Collectors {
            mqtt: vec![cfg],
            ..Default::default()
        },
        &kafka,
    )
    .unwrap();
    let counters = running.counters[0].1.clone();

    let (client, pump) = publisher("down-publisher", port, 1000);
    let qos = rumqttc::QoS::AtLeastOnce;
    let publish = |i: usize| {
        let p = format!(
            r#"{{"id":"m{}","t":{},"v":{i}}}"#,
            i % 7,
            1_700_000_000_000u64 + i as u64
        );
        client.publish("d/x", qos, false, p).unwrap();
    };
    // Until the collector is subscribed, sentinels (series "m0" .. at times before 0).
    let mut n = 0;
    until_subscribed(&counters, || {
        publish(n);
        n += 1;
    });
    // Sentinels published before the subscription are lost (QoS 1 starts at subscribing):
    // count from what has arrived.
    std::thread::sleep(Duration::from_millis(500));
    let base = counters.snapshot().received;
    let total = 600;
    for i in n..n + 200 {
        publish(i);
    }
    std::thread::sleep(Duration::from_millis(500));
    broker.broker_down(1).unwrap();
    for i in n + 200..n + 400 {
        publish(i);
    }
    // The collector receives them while Kafka is down.
    wait_received(&counters, base + 400, "while Kafka is down");
    std::thread::sleep(Duration::from_secs(2));
    broker.broker_up(1).unwrap();
    for i in n + 400..n + total {
        publish(i);
    }
    wait_received(&counters, base + total as u64, "after Kafka is back");
    drop(client);
    drop(pump);
    let s = running.stop().pop().unwrap().1.unwrap();
    assert_eq!(s.received, base + total as u64, "{s:?}");
    assert_eq!(s.duplicates, 0, "{s:?}");
    assert_eq!(s.quarantined, 0);

    let got = read_topic(&kafka, "down");
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, v) in &got {
        *seen
            .entry(v["values"]["v"].as_f64().unwrap() as i64)
            .or_default() += 1;
    }
    let missing: Vec<usize> = (n..n + total)
        .filter(|i| !seen.contains_key(&(*i as i64)))
        .collect();
    let twice: Vec<&i64> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "missing {missing:?}, twice {twice:?}"
    );
    assert_eq!(got.len() as u64, s.produced);
}

/// With QoS 1 the collector's session is persistent: messages published while it is
/// stopped are delivered when it comes back (MQTT 3.1.1 and 5).
#[test]
fn a_restarted_collector_receives_what_was_published_while_it_was_away() {
    let tmp = tempfile::tempdir().unwrap();
    let (_mosq, port) = mosquitto(tmp.path());
    let broker = EmbeddedBroker::start(1).unwrap();
    let kafka = ClientSettings::new(broker.bootstrap());
    for version in [3, 5] {
        let topic = format!("away{version}");
        broker.create_topic(&topic, 1).unwrap();
        broker
            .create_topic(&format!("{topic}.quarantine"), 1)
            .unwrap();
        let cfg: collect::mqtt::MqttConfig = toml::from_str(&format!(
            "name = \"away{version}\"\nbroker = \"127.0.0.1:{port}\"\ntopics = [\"a{version}/#\"]\nqos = 1\nversion = {version}\nkafka_topic = \"{topic}\"\npayload = \"number\"\n"
        ))
        .unwrap();
        let collectors = Collectors {
            mqtt: vec![cfg],
            ..Default::default()
        };
        let (client, pump) = publisher(format!("away-pub{version}"), port, 1000);
        let qos = rumqttc::QoS::AtLeastOnce;

        // First run: until subscribed (its session now exists on the broker), then stop.
        let running = collect::start(&collectors, &kafka).unwrap();
        until_subscribed(&running.counters[0].1, || {
            client
                .publish(format!("a{version}/sentinel"), qos, false, "0")
                .unwrap();
        });
        std::thread::sleep(Duration::from_millis(300));
        running.stop().pop().unwrap().1.unwrap();

        // Published while away.
        for i in 0..50 {
            client
                .publish(format!("a{version}/s{}", i % 5), qos, false, format!("{i}"))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));

        // Second run, same name: the broker delivers them.
        let running = collect::start(&collectors, &kafka).unwrap();
        let values = || -> Vec<i64> {
            read_topic(&kafka, &topic)
                .into_iter()
                .filter(|(k, _)| !k.contains("sentinel"))
                .map(|(_, v)| v["values"]["value"].as_f64().unwrap() as i64)
                .collect()
        };
        wait_received(&running.counters[0].1, 50, &format!("MQTT {version}"));
        running.stop().pop().unwrap().1.unwrap();
        let mut got = values();
        got.sort();
        assert_eq!(got, (0..50).collect::<Vec<_>>(), "MQTT {version}");
        drop(client);
        drop(pump);
    }
}

/// Sensors that stop publishing are forgotten after `forget_after` of wall-clock time, so a
/// collector's memory follows the series alive now, not every series ever seen; a forgotten
/// sensor that comes back starts afresh (a re-send of its old reading is produced again).
#[test]
fn sensors_that_stop_publishing_are_forgotten_after_forget_after() {
    let tmp = tempfile::tempdir().unwrap();
    let (_mosq, port) = mosquitto(tmp.path());
    let broker = EmbeddedBroker::start(1).unwrap();
    let kafka = ClientSettings::new(broker.bootstrap());
    broker.create_topic("churn", 1).unwrap();
    broker.create_topic("churn.quarantine", 1).unwrap();
    let cfg: collect::mqtt::MqttConfig = toml::from_str(&format!(
        r#"
name = "churn"
broker = "127.0.0.1:{port}"
topics = ["c/#"]
qos = 1
kafka_topic = "churn"
series_field = "id"
time_field = "t"

[clean]
forget_after = "1s"
"#
    ))
    .unwrap();
    let running = collect::start(
        &Collectors {
            mqtt: vec![cfg],
            ..Default::default()
        },
        &kafka,
    )
    .unwrap();
    let counters = running.counters[0].1.clone();
    let (client, pump) = publisher("churn-publisher", port, 1000);
    let qos = rumqttc::QoS::AtLeastOnce;
    let publish = |id: &str, t: u64| {
        let p = format!(r#"{{"id":"{id}","t":{t},"v":1}}"#);
        client.publish("c/x", qos, false, p).unwrap();
    };
    // Until subscribed: "keep" readings.
    let t = 1_700_000_000_000u64;
    let mut k = 0;
    until_subscribed(&counters, || {
        publish("keep", t + k);
        k += 1;
    });
    std::thread::sleep(Duration::from_millis(300));
    let base = counters.snapshot().received;
    // 50 sensors report once, then stop.
    for i in 0..50 {
        publish(&format!("gone-{i}"), t);
    }
    wait_received(&counters, base + 50, "gone-*");
    assert_eq!(counters.snapshot().series, 51);
    // "keep" goes on for 2 s; the others are silent. They go within 1.25 s, at a record.
    let keep0 = counters.snapshot().received;
    for _ in 0..100 {
        publish("keep", t + k);
        k += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_received(&counters, keep0 + 100, "keep");
    let s = counters.snapshot();
    assert_eq!((s.series, s.forgotten), (1, 50), "{s:?}");
    // A forgotten sensor comes back with its old reading: produced again, and remembered.
    publish("gone-3", t);
    publish("gone-3", t);
    wait_received(&counters, keep0 + 102, "gone-3 again");
    drop(client);
    drop(pump);
    let s = running.stop().pop().unwrap().1.unwrap();
    assert_eq!((s.duplicates, s.series, s.forgotten), (1, 2, 50), "{s:?}");
    let gone3 = read_topic(&kafka, "churn")
        .into_iter()
        .filter(|(key, _)| key == "gone-3")
        .count();
    assert_eq!(gone3, 2);
}
