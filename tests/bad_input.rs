//! Bad input: broken CSV rows and malformed Kafka messages are quarantined with a reason and
//! counted; the run completes and the counts reconcile. Bad flags exit with a message.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;
use streamgauge::dataset::csvspec::CsvSpec;
use streamgauge::engine::Input;
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::producer::ReadingProducer;
use streamgauge::kafka::ClientSettings;
use streamgauge::record::Reading;

const BAD_ROWS: &[(&str, &str)] = &[
    ("s1,1700000000500", "expected 3 fields"),
    ("s1,1700000000600,", "empty value"),
    ("s1,1700000000700,NaN", "non-finite"),
    ("s1,1700000000800,inf", "non-finite"),
    ("s1,1700000000900,abc", "non-numeric"),
    ("s1,yesterday,1.5", "unparseable time"),
    ("s1,,1.5", "empty time"),
    (",1700000001000,2.5", "empty series"),
    ("s1,1700000001100,1,2", "expected 3 fields"),
];

#[test]
fn broken_csv_rows_are_quarantined_with_reasons_and_counts_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "sensor_id,ts_ms,value").unwrap();
    let mut good = 0;
    for i in 0..3000 {
        writeln!(
            f,
            "s{},{},{}",
            i % 3,
            1_700_000_000_000i64 + i * 10,
            i as f64 * 0.5
        )
        .unwrap();
        good += 1;
        if i % 300 == 0 {
            let (row, _) = BAD_ROWS[(i / 300) as usize % BAD_ROWS.len()];
            writeln!(f, "{row}").unwrap();
        }
    }
    f.write_all(&[0xff, 0xfe, b',', b'1', b'\n']).unwrap(); // not UTF-8
    drop(f);
    let bad = 10 + 1;
    let csv = CsvSpec::epoch_ms(path, "ts_ms", "sensor_id", &["value"]);
    for workers in [1, 2] {
        let out = dir.path().join(format!("out{workers}"));
        let report = run_ok(spec(
            Input::Csv(csv.clone()),
            workers,
            Duration::from_secs(10),
            &out,
        ));
        assert_eq!(report.metrics.readings_in, good);
        assert_eq!(report.metrics.quarantined, bad);
        let q = read_lines(&out, "quarantine");
        assert_eq!(q.len() as u64, bad, "every bad row in the dead-letter file");
        for line in &q {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let reason = v["reason"].as_str().unwrap();
            let payload = v["payload"].as_str().unwrap();
            assert!(
                v["source"].as_str().unwrap().contains("bad.csv@byte"),
                "{line}"
            );
            if let Some((_, why)) = BAD_ROWS.iter().find(|(row, _)| *row == payload) {
                assert!(
                    reason.contains(why),
                    "{payload:?}: reason {reason:?} should mention {why:?}"
                );
            } else {
                assert!(reason.contains("not UTF-8"), "{line}");
            }
        }
        let counted: u64 = read_windows(&out).values().map(|v| v.0).sum();
        assert_eq!(counted, good, "rows = good + quarantined");
    }
}

#[test]
fn malformed_kafka_messages_are_quarantined_and_the_rest_flows() {
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("mixed", 2).unwrap();
    let mut p = ReadingProducer::new(&ClientSettings::new(broker.bootstrap()), "mixed").unwrap();
    let payloads: [&[u8]; 4] = [
        b"{not json",
        br#"{"series":"a","ts":1,"values":{}}"#,
        br#"{"series":"a","ts":1,"values":{"v":null}}"#,
        b"",
    ];
    for i in 0..1000i64 {
        p.send(&Reading::single(
            "m1".into(),
            1_700_000_000_000 + i * 100,
            i as f64,
        ))
        .unwrap();
        if i % 250 == 0 {
            p.send_raw("m1", payloads[(i / 250) as usize]).unwrap();
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = run_ok(spec(
        kafka_input(broker.bootstrap(), "mixed"),
        2,
        Duration::from_secs(10),
        dir.path(),
    ));
    assert_eq!(report.metrics.readings_in, 1000);
    assert_eq!(report.metrics.quarantined, 4);
    let reasons: Vec<String> = read_lines(dir.path(), "quarantine")
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(reasons.len(), 4);
    assert!(reasons.iter().any(|r| r.contains("malformed JSON")));
    assert!(reasons.iter().any(|r| r.contains("no values")));
    assert!(reasons.iter().any(|r| r.contains("not a finite")));
    assert_eq!(
        read_windows(dir.path()).values().map(|v| v.0).sum::<u64>(),
        1000
    );
}

#[test]
fn the_window_zone_comes_from_the_environment_and_a_bad_one_is_named() {
    let run = |zone: &str, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamgauge"))
            .args(args)
            .env("STREAMGAUGE_WINDOW_ZONE", zone)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap_or(-1), err)
    };
    let args = ["run", "series_stats", "--dataset", "nab", "--window", "30m"];
    // Applied: a half-hour window is refused in a zone with daylight saving ...
    let (code, err) = run("America/Chicago", &args);
    assert_ne!(code, 0);
    assert!(err.contains("whole hours that divide a day"), "{err}");
    // ... and a misspelt zone names the variable.
    let (code, err) = run("America/Chicgo", &args);
    assert_ne!(code, 0);
    assert!(
        err.contains("STREAMGAUGE_WINDOW_ZONE") && err.contains("not in the tz database"),
        "{err}"
    );
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streamgauge"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_and_missing_data_exit_with_a_message_that_says_what_to_fix() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[
                "run",
                "series_stats",
                "--dataset",
                "nab",
                "--window",
                "soon",
            ],
            &["invalid duration", "10s"],
        ),
        (
            &["run", "zscore", "--dataset", "nab", "--threshold=-1"],
            &["--threshold", "above zero"],
        ),
        (
            &[
                "run",
                "sensor_outliers",
                "--dataset",
                "nab",
                "--reference",
                "/no/such/ref.csv",
            ],
            &["reference table /no/such/ref.csv", "No such file"],
        ),
        (
            &["nab", "--data", "/no/such/nab"],
            &[
                "/no/such/nab is not a NAB folder",
                "labels/combined_windows.json",
            ],
        ),
        (
            &["run", "nope", "--dataset", "nab"],
            &["unknown dataflow", "series_stats"],
        ),
        (
            &[
                "run",
                "series_stats",
                "--dataset",
                "nab",
                "--window",
                "30m",
                "--window-zone",
                "America/Chicago",
            ],
            &["--window-zone", "whole hours that divide a day"],
        ),
        (
            &[
                "run",
                "series_stats",
                "--dataset",
                "Cargo.toml",
                "--time-zone",
                "America/Chicgo",
            ],
            &[
                "\"America/Chicgo\" is not in the tz database",
                "America/Chicago",
            ],
        ),
        (
            &["nab", "--param", "ALHPA=0.02"],
            &["--param", "ALHPA", "names no detector parameter", "ALPHA"],
        ),
        (
            &["nab", "--param", "ALPHA=0,02"],
            &["--param ALPHA=\"0,02\"", "expected a value of type f64"],
        ),
        (&["nab", "--param", "ALPHA"], &["--param", "NAME=VALUE"]),
        (
            &["run", "series_stats", "--topic", "t", "--from", "yesterday"],
            &[
                "--from",
                "\"yesterday\" is not a start",
                "2026-12-06T10:00:00Z",
            ],
        ),
        (
            &[
                "run",
                "series_stats",
                "--topic",
                "t",
                "--brokers",
                "127.0.0.1:1",
                "--until-end",
                "--from",
                "end",
            ],
            &["--from end with --until-end reads nothing"],
        ),
        (
            &["run", "series_stats", "--dataset", "nab", "--from", "2h"],
            &["--from", "give it with --topic"],
        ),
        (
            &["run", "anomaly", "--dataset", "nab", "--param", "ALHPA=1"],
            &["--param", "ALHPA", "names no detector parameter"],
        ),
        (
            &[
                "run",
                "series_stats",
                "--dataset",
                "nab",
                "--window",
                "10s",
                "--slide",
                "3s",
            ],
            &[
                "--slide 3000 ms with --window 10000 ms",
                "must divide the window",
            ],
        ),
        (
            &[
                "run",
                "series_stats",
                "--dataset",
                "nab",
                "--window",
                "1d",
                "--slide",
                "30m",
                "--window-zone",
                "Europe/Berlin",
            ],
            &["--slide 1800000 ms with --window-zone", "whole hours"],
        ),
        (
            &["run", "sessions", "--dataset", "nab", "--max-session", "0s"],
            &["--max-session", "at least 1ms"],
        ),
        (
            &["run", "sessions", "--dataset", "nab", "--gap", "0s"],
            &["--gap", "at least 1ms", "30s"],
        ),
        (
            &[
                "run",
                "sessions",
                "--dataset",
                "nab",
                "--above",
                "5",
                "--below",
                "-3",
            ],
            &["--above 5 --below -3", "give a band"],
        ),
        (
            &["run", "zscore", "--dataset", "nab", "--state-ttl", "0s"],
            &["--state-ttl", "at least 1ms", "1h"],
        ),
        (
            &["run", "zscore", "--dataset", "nab", "--state-ttl", "soon"],
            &["--state-ttl", "soon"],
        ),
        (
            &[
                "run",
                "sensor_outliers",
                "--dataset",
                "nab",
                "--top-every",
                "0s",
            ],
            &["--top-every", "at least 1ms", "1s"],
        ),
        (
            &[
                "run",
                "series_stats",
                "--dataset",
                "nab",
                "--data-dir",
                "/nonexistent/data",
            ],
            &["not found", "/nonexistent/data"],
        ),
        (
            &[
                "run",
                "series_stats",
                "--dataset",
                "nab",
                "-n",
                "2",
                "-p",
                "5",
            ],
            &["out of range"],
        ),
        (&["run", "series_stats", "--topic", "t"], &["--brokers"]),
        (
            &[
                "replay",
                "nab",
                "--brokers",
                "127.0.0.1:1",
                "--topic",
                "t",
                "--speed",
                "fast",
            ],
            &["--speed"],
        ),
        (
            &["run", "series_stats", "--dataset", "nab", "-X", "acks"],
            &["key=value"],
        ),
    ];
    for (args, wants) in cases {
        let (code, err) = cli(args);
        assert_ne!(code, 0, "{args:?} should fail");
        for w in *wants {
            assert!(err.contains(w), "{args:?}: {err:?} should mention {w:?}");
        }
        if args.contains(&"--param") {
            // Said as the flag was given, not as the environment variable it maps to.
            assert!(!err.contains("SG_DET_"), "{args:?}: {err:?}");
        }
    }
    let (code, out) = cli(&["run", "--help"]);
    assert_eq!(code, 0, "{out}");
}
