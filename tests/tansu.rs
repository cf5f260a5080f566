//! The oracle test against a second, independent Kafka-protocol broker: tansu
//! (`cargo install tansu --locked --features dynostore`; `.ci/run` installs it). Its high
//! watermarks lag the last batch, which `--until-end` must survive by confirming the end by
//! reading. `--from TIME` finds its start offsets on it too.

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
