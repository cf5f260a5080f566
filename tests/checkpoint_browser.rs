//! The checkpoint column of the dashboard in a real browser (Debian's Chromium through
//! playwright-core, as `tests/dashboard_browser.rs`): a live `run` over a replay writes a
//! checkpoint every hour of event time, and the page's pipelines table shows the newest
//! barrier, how many and the size. Alone in its file, so that no other test competes with
//! the browser for the two cores.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamgauge"))
}

#[test]
fn the_browser_shows_the_newest_checkpoint_of_a_live_run() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "the browser test needs Debian's chromium at {chromium} (apt-get install chromium; .ci/run does)"
    );
    ensure_playwright();
    let (brokers, broker) = broker_process(&["cpb:2"], "150s");
    let _broker = Kill(broker);
    // Two weeks of 5-minute readings at 20,000x: about a minute, an hour of event time
    // every 0.18 s.
    let _replay = Kill(
        bin()
            .args(["replay", "nab:artificialWithAnomaly", "--brokers", &brokers])
            .args(["--topic", "cpb", "--speed", "20000x"])
            .arg("--data-dir")
            .arg(data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let dashboard = format!("127.0.0.1:{}", free_port());
    let _run = Kill(
        bin()
            .args([
                "run",
                "anomaly",
                "--brokers",
                &brokers,
                "--topic",
                "cpb",
                "-w",
                "2",
            ])
            .args(["--checkpoint-every", "1h", "--duration", "120s"])
            .args(["--dashboard", &dashboard])
            .arg("--savepoint")
            .arg(dir.path().join("sp"))
            .arg("--output")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(&format!("the dashboard on {dashboard}"), 60, || {
        http_get(&dashboard, "/api/overview", None).is_some_and(|(s, _)| s == 200)
    });
    let outdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let out = Command::new("node")
        .arg(browser_dir().join("checkpoint.mjs"))
        .arg(format!("http://{dashboard}/"))
        .arg(&outdir)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs the browser check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser check failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["header"].as_str(), Some("checkpoint"), "{seen}");
    // "2014-04-01 07:00:00Z (12, 84.2 kB)": a barrier on the hour, a count, a size.
    let cell = seen["cell"].as_str().unwrap_or_default();
    let (at, rest) = cell.split_once(" (").unwrap_or_else(|| panic!("{cell}"));
    assert!(
        at.len() == 20 && at.ends_with(":00:00Z"),
        "the barrier, on the hour: {cell}"
    );
    let (count, size) = rest.split_once(", ").unwrap_or_else(|| panic!("{cell}"));
    assert!(
        count.replace(',', "").parse::<u64>().unwrap() >= 1,
        "{cell}"
    );
    let kb = size
        .strip_suffix(" kB)")
        .expect("a small state's size in kB");
    assert!(kb.parse::<f64>().unwrap() > 0.0, "{cell}");
    // The page shows what the API says (the run goes on, so the API may be a little ahead).
    let (_, body) = http_get(&dashboard, "/api/overview", None).unwrap();
    let ov: Value = serde_json::from_str(&body).unwrap();
    let p = &ov["pipelines"][0];
    assert!(p["checkpoints"].as_u64() >= Some(1), "{p}");
    assert!(p["checkpoint_barrier"].as_i64().is_some(), "{p}");
}
