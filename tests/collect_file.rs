//! The file collector: a built-in manifest (the example config) and a JSON-lines manifest of
//! our own with bad lines, through the shared cleaning into the embedded Kafka broker; and
//! `streamgauge collect file ...` from flags, which ends by itself when the file is done.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::read_topic;
use streamgauge::collect;
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::ClientSettings;

#[test]
fn a_manifest_file_and_json_lines_with_bad_lines_are_collected_once_with_reasons() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let kafka = ClientSettings::new(broker.bootstrap());
    for t in ["weather", "plant"] {
        broker.create_topic(t, 3).unwrap();
        broker.create_topic(&format!("{t}.quarantine"), 1).unwrap();
    }
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/collect-file.toml");
    let mut c = streamgauge::config::Settings::load(Some(&example))
        .unwrap()
        .collectors;
    assert_eq!(c.file.len(), 1);
    c.file[0].data_dir = Some(common::data_dir());

    // A JSON-lines manifest of our own.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("log")).unwrap();
    std::fs::write(
        tmp.path().join("plant-log.toml"),
        r#"
name = "plant-log"
folder = "log"
[[files]]
path = "boiler.jsonl"
series = "plant/{col:unit}"
time = { column = "at", format = "rfc3339" }
values = [{ column = "temp" }, { column = "pressure" }]
"#,
    )
    .unwrap();
    let lines = [
        r#"{"unit":"b1","at":"2024-05-01T12:00:00+02:00","temp":90.5,"pressure":"2.5"}"#,
        r#"{"unit":"b1","at":"2024-05-01T12:01:00+02:00","temp":91.0,"pressure":2.6}"#,
        r#"{"unit":"b2","at":"2024-05-01T10:00:30Z","temp":70,"pressure":1.1}"#,
        r#"{"unit":"b1","at":"2024-05-01T12:01:00+02:00","temp":91.0,"pressure":2.6}"#, // duplicate
        r#"{"unit":"b1","at":"2024-05-01T12:02:00+02:00","temp":"hot","pressure":2.6}"#, // not a number
        r#"{"unit":"b1","at":"2024-05-01T12:03:00+02:00","pressure":2.6}"#, // missing field
        r#"{"unit":"b1","at":"yesterday","temp":1,"pressure":2}"#,          // bad time
        r#"{"unit": "b1", "at": "#,                                         // not JSON
        r#"[1, 2]"#,                                                        // not an object
    ];
    std::fs::write(
        tmp.path().join("log/boiler.jsonl"),
        lines.join("\n") + "\n\n",
    )
    .unwrap();
    let own: collect::file::FileConfig = toml::from_str(&format!(
        "name = \"plant-log\"\nmanifest = {:?}\nkafka_topic = \"plant\"\n[clean]\nranges = {{}}",
        tmp.path().join("plant-log.toml").display().to_string()
    ))
    .unwrap();
    c.file.push(own);

    let running = collect::start(&c, &kafka).unwrap();
    let t0 = std::time::Instant::now();
    while !running.should_stop() {
        assert!(
            t0.elapsed().as_secs() < 60,
            "file collectors did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let results: BTreeMap<String, _> = running
        .stop()
        .into_iter()
        .map(|(n, r)| (n, r.expect("collector ran")))
        .collect();

    // The built-in dataset: every reading of the oracle (the loader straight) once.
    let want = common::load("weather_vega:seattle");
    let got = read_topic(&kafka, "weather");
    assert_eq!(got.len(), want.len());
    let mut got: Vec<(i64, f64)> = got
        .iter()
        .map(|(k, r)| {
            assert_eq!(k, "weather/seattle");
            assert_eq!(r["tags"]["unit"], "F");
            (
                r["ts"].as_i64().unwrap(),
                r["values"]["temp_f"].as_f64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut want: Vec<(i64, f64)> = want.iter().map(|r| (r.ts, r.values[0].1)).collect();
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, want);
    let s = results["seattle"];
    assert_eq!(
        (s.produced, s.quarantined, s.duplicates),
        (want.len() as u64, 0, 0)
    );

    // Our JSON lines: 3 readings, 1 duplicate, 5 rejected with reasons.
    let p = results["plant-log"];
    assert_eq!(
        (p.received, p.produced, p.duplicates, p.quarantined),
        (9, 3, 1, 5)
    );
    // Two series remembered for duplicates (none silent for a day, so none forgotten).
    assert_eq!((p.series, p.forgotten, s.series), (2, 0, 1));
    let plant = read_topic(&kafka, "plant");
    let mut keys: Vec<(String, i64)> = plant
        .iter()
        .map(|(k, r)| (k.clone(), r["ts"].as_i64().unwrap()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("plant/b1".to_string(), 1_714_557_600_000),
            ("plant/b1".to_string(), 1_714_557_660_000),
            ("plant/b2".to_string(), 1_714_557_630_000),
        ]
    );
    let q = read_topic(&kafka, "plant.quarantine");
    let mut reasons: Vec<String> = q
        .iter()
        .map(|(_, r)| {
            assert!(r["source"].as_str().unwrap().starts_with("boiler.jsonl:"));
            r["reason"].as_str().unwrap().to_string()
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for needle in [
        "not a JSON object",
        "not JSON",
        "missing field \"temp\"",
        "\"hot\"",
        "yesterday",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "{needle} in {reasons:?}"
        );
    }
}

#[test]
fn collect_file_from_flags_ends_when_the_file_is_done() {
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("nab", 2).unwrap();
    broker.create_topic("nab.quarantine", 1).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamgauge"))
        .args([
            "collect",
            "file",
            "nab:machine_temperature",
            "--kafka-topic",
            "nab",
            "--brokers",
            broker.bootstrap(),
            "--data-dir",
        ])
        .arg(common::data_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The real file repeats some timestamps (an hour of 2014-01-07 appears twice): the
    // repeats are duplicates, the first reading of each time is kept.
    let all = common::load("nab:machine_temperature");
    let n = all.len();
    let distinct = all
        .iter()
        .map(|r| r.ts)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(distinct < n, "the file has repeated timestamps");
    assert!(
        stdout.contains(&format!(
            "file: received {n} = produced {distinct} + quarantined 0 + duplicates {}",
            n - distinct
        )),
        "{stdout}"
    );
    let got = read_topic(&ClientSettings::new(broker.bootstrap()), "nab");
    assert_eq!(got.len(), distinct);
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[test]
fn the_demo_runs_collectors_and_shows_their_counters_on_metrics_and_the_overview() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("collect.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[file]]\nname = \"seattle\"\ndataset = \"weather_vega:seattle\"\ndata_dir = {:?}\nkafka_topic = \"weather\"\n",
            common::data_dir().display().to_string()
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamgauge"))
        .args([
            "demo",
            "--duration",
            "60s",
            "--no-datasets",
            "--sensors",
            "20",
            "--rate",
            "200",
        ])
        .arg("--collect")
        .arg(&cfg)
        .args(["--dashboard", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let n = common::load("weather_vega:seattle").len();
    let want =
        format!("streamgauge_collector_produced_total{{collector=\"seattle\",kind=\"file\"}} {n}");
    let t0 = std::time::Instant::now();
    let mut last = String::new();
    let found = loop {
        if let Some(m) = http_get(&addr, "/metrics") {
            if m.contains(&want) {
                // One series, remembered for duplicates: a gauge.
                assert!(
                    m.contains("# TYPE streamgauge_collector_series gauge\n")
                        && m.contains(
                            "streamgauge_collector_series{collector=\"seattle\",kind=\"file\"} 1\n"
                        ),
                    "{m}"
                );
                break true;
            }
            last = m;
        }
        if t0.elapsed().as_secs() > 45 {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let overview = http_get(&addr, "/api/overview").unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "{want} not in\n{last}");
    assert!(
        overview.contains("\"collectors\":[{\"name\":\"seattle\",\"kind\":\"file\",\"received\":"),
        "{overview}"
    );
}
