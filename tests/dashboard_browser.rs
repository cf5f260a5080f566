//! The dashboard in a real browser: Debian's Chromium driven by playwright-core from npm
//! (`.ci/run` installs both; no browser is downloaded). While the demo streams its live
//! sensors, the test checks through the page itself that the overview's counters move, that
//! an outlier appears in the table and clicking it opens its series, that the top-k table is
//! filled, that series charts
//! receive points live (with a forecast), that the cluster view lists the workers, and that
//! a sensor in one of the generator's outages shows as silent and leaves that view when it
//! reports again.
//! Screenshots go to `<target tmp>/dashboard/`. Alone in its file, so that no other test
//! competes with the browser for the two cores.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamgauge"))
}

#[test]
fn browser_sees_counters_move_an_outlier_appear_and_charts_receive_points() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "the browser test needs Debian's chromium at {chromium} (apt-get install chromium; .ci/run does)"
    );
    common::ensure_playwright();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = tempfile::NamedTempFile::new().unwrap();
    let _demo = common::Kill(
        bin()
            .args([
                "demo",
                "--duration",
                "200s",
                "--no-datasets",
                "--sensors",
                "100",
                "--rate",
                "2000",
            ])
            .args(["--dashboard", &addr])
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while get_ok(&addr).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "dashboard did not answer: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let outdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let out = Command::new("node")
        .arg(common::browser_dir().join("check.mjs"))
        .arg(format!("http://{addr}/"))
        .arg(&outdir)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs the browser check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser check failed: {stdout}\n{stderr}\ndemo log: {}\nscreenshot: {}",
        std::fs::read_to_string(log.path()).unwrap_or_default(),
        outdir.join("failure.png").display()
    );
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let seen = &v["seen"];
    assert!(
        seen["counter1"].as_u64() > seen["counter0"].as_u64(),
        "{seen}"
    );
    assert!(seen["outlierChartPoints"].as_i64().unwrap() > 0, "{seen}");
    // The demo's live sensors alone fill their pipeline's top 10; every score is in [0, 1].
    let scores: Vec<f64> = seen["topScores"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    assert!(
        scores.len() >= 10 && scores.iter().all(|s| (0.0..=1.0).contains(s)),
        "the top-k table: {seen}"
    );
    assert!(
        seen["liveTs1"].as_i64() > seen["liveTs0"].as_i64(),
        "{seen}"
    );
    assert!(seen["livePoints1"].as_i64().unwrap() > 0, "{seen}");
    assert!(
        seen["forecastSteps"].as_i64().unwrap() > 0,
        "the live chart shows a forecast: {seen}"
    );
    assert!(
        seen["workerRows"].as_i64().unwrap() >= 2,
        "cluster view lists workers: {seen}"
    );
    let silent = seen["silent"].as_str().unwrap_or_default();
    assert!(
        silent.starts_with("sensor/") && seen["silentCount"].as_i64() >= Some(1),
        "a sensor in an outage shows as silent: {seen}"
    );
    assert!(
        seen["silentBadge"]
            .as_str()
            .is_some_and(|b| b.contains("silent since")),
        "its chart says it is silent: {seen}"
    );
    assert_eq!(
        seen["silentLeft"].as_bool(),
        Some(true),
        "and leaves the view when it reports again: {seen}"
    );
    assert_eq!(
        seen["silentBadgeCleared"].as_bool(),
        Some(true),
        "and its chart drops the badge: {seen}"
    );
    assert!(
        seen["session"]
            .as_str()
            .is_some_and(|k| k.starts_with("sensor/"))
            && seen["sessionMax"].as_f64() > Some(40.0)
            && seen["sessionsCount"].as_u64() >= Some(1),
        "the sessions view lists a spike of a live sensor: {seen}"
    );
    for shot in [
        "dashboard-sessions.png",
        "dashboard-silent.png",
        "dashboard-series.png",
        "dashboard-overview.png",
        "dashboard-outliers.png",
    ] {
        let len = std::fs::metadata(outdir.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
}

fn get_ok(addr: &str) -> Option<()> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /api/overview HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf)
        .starts_with("HTTP/1.1 200")
        .then_some(())
}
