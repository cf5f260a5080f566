//! The OPC UA collector against a real OPC UA server: asyncua (PyPI; `.ci/run` installs it)
//! serving nodes that change every 100 ms with source timestamps derived from one counter
//! (tests/support/opcua_server.py). The repository's example config is used, pointed at it.
//! Every reading must carry its value's source timestamp and the value the server derived
//! from it; a String node is quarantined, an unknown node recorded as refused, and the server
//! going away and coming back is survived (its replayed timestamps are duplicates).

mod common;

use std::process::Command;

use common::{read_topic, service, wait_for, Service};
use streamgauge::collect;
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::ClientSettings;

/// 2024-01-01T00:00:00Z, the server's first source timestamp.
const BASE_MS: i64 = 1_704_067_200_000;

fn server(port: u16) -> Service {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/opcua_server.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(port.to_string());
    service(
        cmd,
        port,
        30,
        "the asyncua server (pip install asyncua; .ci/run does)",
    )
}

#[test]
fn opcua_data_changes_carry_source_timestamps_and_the_server_can_come_back() {
    let port = common::free_port();
    let mut srv = Some(server(port));
    let broker = EmbeddedBroker::start(1).unwrap();
    let kafka = ClientSettings::new(broker.bootstrap());
    broker.create_topic("scada-ua", 2).unwrap();
    broker.create_topic("scada-ua.quarantine", 1).unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/collect-opcua.toml");
    let mut c = streamgauge::config::Settings::load(Some(&example))
        .unwrap()
        .collectors;
    assert_eq!(c.opcua.len(), 1);
    c.opcua[0].endpoint = format!("opc.tcp://127.0.0.1:{port}/streamgauge/");
    let running = collect::start(&c, &kafka).unwrap();
    let counters = running.counters[0].1.clone();

    // The second server replays the first one's timestamps only if the collector reconnects
    // before the new counter passes where the first session stopped. Reconnecting backs off
    // 0.5, 1, 2, 4 s ..., and under load (CI runs tests side by side) the new server itself
    // takes seconds to start: with 2 s of first-session event time (60 readings) a slow
    // reconnect saw no replay and no duplicates. 300 readings are 10 s of event time.
    wait_for("readings from the first session", 60, || {
        counters.snapshot().produced >= 300
    });
    drop(srv.take());
    let down = counters.snapshot();
    wait_for("the lost session recorded", 30, || {
        counters.snapshot().source_errors > down.source_errors
    });
    srv = Some(server(port));
    let back = counters.snapshot();
    wait_for("new readings from a second session", 90, || {
        counters.snapshot().produced >= back.produced + 30
    });
    let results = running.stop();
    let last = results[0].1.as_ref().expect("collector ran").to_owned();
    drop(srv);

    assert_eq!(
        last.received,
        last.produced + last.quarantined + last.duplicates
    );
    // The restarted server began its counter, and so its timestamps, again.
    assert!(last.duplicates > 0, "{last:?}");
    let readings = read_topic(&kafka, "scada-ua");
    assert_eq!(readings.len() as u64, last.produced);
    let mut per_series = std::collections::BTreeMap::<String, usize>::new();
    for (key, r) in &readings {
        let ts = r["ts"].as_i64().unwrap();
        assert_eq!((ts - BASE_MS) % 100, 0, "a source timestamp: {r}");
        let tick = ((ts - BASE_MS) / 100) as f64;
        let v = |n: &str| {
            r["values"][n]
                .as_f64()
                .unwrap_or_else(|| panic!("{n}: {r}"))
        };
        match key.as_str() {
            "boiler" => assert_eq!(v("temperature"), 20.0 + 0.5 * tick, "{r}"),
            // Float 1 + tick/8 in bar, normalised to kPa.
            "boiler-pressure" => {
                assert!(
                    (v("pressure") - (1.0 + tick / 8.0) * 100.0).abs() < 1e-9,
                    "{r}"
                );
                assert_eq!(r["tags"]["unit"], "kPa");
            }
            "boiler-count" => assert_eq!(v("count"), tick, "{r}"),
            other => panic!("unexpected series {other}: {r}"),
        }
        assert_eq!(r["tags"]["site"], "north");
        *per_series.entry(key.clone()).or_default() += 1;
    }
    assert_eq!(per_series.len(), 3, "{per_series:?}");
    let q = read_topic(&kafka, "scada-ua.quarantine");
    assert_eq!(q.len() as u64, last.quarantined + last.source_errors);
    let count = |needle: &str| {
        q.iter()
            .filter(|(_, r)| r["reason"].as_str().unwrap().contains(needle))
            .count()
    };
    assert!(count("is a String \"running\"") >= 1, "{q:?}");
    assert_eq!(count("is a String") as u64, last.quarantined);
    // Refused once per session: two sessions at least.
    assert!(
        count("Boiler.Missing refused: BadNodeIdUnknown") >= 2,
        "{q:?}"
    );
    assert!(count("session failed") >= 1, "{q:?}");
}
