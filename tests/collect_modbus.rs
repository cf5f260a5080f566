//! The Modbus collector against a real Modbus TCP implementation: pymodbus (Debian package
//! `python3-pymodbus`, `.ci/run` installs it) serving registers that change every 100 ms
//! (tests/support/modbus_server.py). The repository's example config is used, pointed at it.
//! Every reading read back from Kafka must decode to the values the device derived from one
//! counter; a register the device lacks must be recorded as failed polls, never as a reading;
//! the device going away and coming back must be survived.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{read_topic, service, wait_for, Service};
use streamgauge::collect;
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::ClientSettings;

fn device(port: u16) -> Service {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/modbus_server.py");
    // Debian's python3 has Debian's pymodbus; a pyenv python3 on PATH may not.
    let python = if std::path::Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(port.to_string());
    service(
        cmd,
        port,
        20,
        "the pymodbus device (apt-get install python3-pymodbus; .ci/run does)",
    )
}

#[test]
fn modbus_registers_decode_failed_polls_are_recorded_and_the_device_can_come_back() {
    let port = common::free_port();
    let mut dev = Some(device(port));
    let broker = EmbeddedBroker::start(1).unwrap();
    let kafka = ClientSettings::new(broker.bootstrap());
    broker.create_topic("scada", 2).unwrap();
    broker.create_topic("scada.quarantine", 1).unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/collect-modbus.toml");
    let mut settings = streamgauge::config::Settings::load(Some(&example)).unwrap();
    assert_eq!(settings.collectors.modbus.len(), 1);
    settings.collectors.modbus[0].device = format!("127.0.0.1:{port}");
    let running = collect::start(&settings.collectors, &kafka).unwrap();
    let counters = running.counters[0].1.clone();

    wait_for("20 polls", 30, || counters.snapshot().produced >= 40);
    // The device goes away: polls fail (connection refused), nothing is produced meanwhile.
    drop(dev.take());
    let down = counters.snapshot();
    // Reconnects back off 0.5 s, 1 s, 2 s ...: 2.5 s down makes at least two refused
    // connections.
    wait_for("failed polls while the device is down", 30, || {
        counters.snapshot().source_errors >= down.source_errors + 2
    });
    std::thread::sleep(Duration::from_millis(2500));
    let while_down = counters.snapshot();
    assert!(while_down.produced <= down.produced + 2, "{while_down:?}");
    // It comes back on the same port: the collector reconnects (backoff at most a few s).
    let back_at = streamgauge::collect::now_ms();
    dev = Some(device(port));
    wait_for("readings after the device came back", 60, || {
        counters.snapshot().produced >= while_down.produced + 20
    });
    let results = running.stop();
    let last = results[0].1.as_ref().expect("collector ran").to_owned();
    drop(dev);

    assert_eq!(
        last.received,
        last.produced + last.quarantined + last.duplicates
    );
    let readings = read_topic(&kafka, "scada");
    assert_eq!(readings.len() as u64, last.produced);
    let mut after_restart = 0;
    for (key, r) in &readings {
        let v = |n: &str| {
            r["values"][n]
                .as_f64()
                .unwrap_or_else(|| panic!("{n} in {r}"))
        };
        let tick = v("tick");
        match key.as_str() {
            "boiler" => {
                // f32 20 + 0.5 tick, sent in C, normalised to F.
                let c = 20.0 + 0.5 * tick;
                assert!(
                    (v("temperature") - (c * 9.0 / 5.0 + 32.0)).abs() < 1e-9,
                    "{r}"
                );
                assert_eq!(v("counter"), -1000.0 * tick, "{r}");
                assert_eq!(r["tags"]["unit.temperature"], "F", "{r}");
            }
            "pump" => {
                assert!((v("flow") - -0.1 * tick).abs() < 1e-9, "{r}");
                assert!((v("energy") - 70.0 * tick).abs() < 1e-9, "{r}");
                assert_eq!(r["tags"]["unit.energy"], "kWh", "{r}");
            }
            other => panic!("unexpected series {other}: {r}"),
        }
        assert_eq!(r["tags"]["site"], "north");
        if r["ts"].as_i64().unwrap() >= back_at {
            after_restart += 1;
        }
    }
    assert!(
        after_restart >= 20,
        "{after_restart} readings after the restart"
    );

    // The quarantine topic holds every failure with its reason: the missing register on every
    // poll while connected (exception 2), the refused connections while the device was away.
    let q = read_topic(&kafka, "scada.quarantine");
    assert_eq!(q.len() as u64, last.source_errors + last.quarantined);
    let reason = |needle: &str| {
        q.iter()
            .filter(|(_, r)| r["reason"].as_str().unwrap().contains(needle))
            .count()
    };
    // Every completed poll read the boiler and the pump and failed on the tank, once; a poll
    // cut short by the device going away may have failed on the tank and made no readings.
    let boilers = readings.iter().filter(|(k, _)| k == "boiler").count();
    assert_eq!(boilers * 2, readings.len(), "boiler and pump come in pairs");
    let exceptions = reason("exception 2 (illegal data address)");
    assert!(
        (boilers..=boilers + 1).contains(&exceptions),
        "{exceptions} exceptions for {boilers} polls"
    );
    assert!(
        reason("connect: ") >= 2,
        "{} refused connections",
        reason("connect: ")
    );
    assert!(q.iter().all(|(_, r)| r["source"]
        .as_str()
        .unwrap()
        .starts_with("modbus://127.0.0.1")));
}

#[test]
fn modbus_flags_build_the_same_collector_and_bad_ones_say_what_to_fix() {
    let bin = env!("CARGO_BIN_EXE_streamgauge");
    let out = Command::new(bin)
        .args([
            "collect",
            "modbus",
            "--device",
            "127.0.0.1:1",
            "--register",
            "boiler/temperature=holding:0",
            "--kafka-topic",
            "t",
            "--brokers",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SERIES/NAME=TABLE:ADDRESS:TYPE"), "{err}");
    let out = Command::new(bin)
        .args([
            "collect",
            "modbus",
            "--device",
            "127.0.0.1:1",
            "--register",
            "boiler/temperature=coils:0:f32",
            "--kafka-topic",
            "t",
            "--brokers",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("coils") && err.contains("holding"),
        "the error names the bad table and the good ones: {err}"
    );
}
