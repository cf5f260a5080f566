//! The command line end to end: the standalone embedded broker serves other processes (and a
//! run stopped by Ctrl-C resumes from its savepoint, a run killed outright from its last
//! checkpoint), and the demo runs on embedded defaults and ends cleanly with results.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamgauge"))
}

/// Runs `cmd` to its end and asserts it succeeded, showing its stderr otherwise.
fn succeeds(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn standalone_broker_serves_replay_and_run_in_other_processes() {
    let (addr, mut broker) = broker_process(&["art:2", "slow:2"], "120s");
    let data = data_dir();
    let replay = |topic: &str, extra: &[&str]| {
        succeeds(
            bin()
                .args(["replay", "nab:artificialWithAnomaly", "--brokers", &addr])
                .args(["--topic", topic])
                .args(extra)
                .arg("--data-dir")
                .arg(&data),
            "replay",
        );
    };
    replay("art", &[]);
    // The same dataset again, 200 readings per message.
    replay("artb", &["--batch", "200", "--partitions", "3"]);
    let bad = bin()
        .args(["replay", "nab:artificialWithAnomaly", "--brokers", &addr])
        .args(["--topic", "artb", "--batch", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--batch"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let readings = load("nab:artificialWithAnomaly");
    for topic in ["art", "artb"] {
        let dir = tempfile::tempdir().unwrap();
        succeeds(
            bin()
                .args(["run", "series_stats", "--brokers", &addr, "--topic", topic])
                .args(["--until-end", "-w", "2", "--window", "1h", "--output"])
                .arg(dir.path()),
            "run",
        );
        assert_windows_eq(
            &read_windows(dir.path()),
            &oracle(&readings, 3_600_000),
            &format!("{topic} via the standalone broker"),
        );
    }
    // A live run stopped by Ctrl-C (SIGINT) writes a savepoint; a run from it goes on to the
    // end: every reading is scored once over the two runs, into the same file.
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("sp");
    let anomaly = |extra: &[&str]| {
        let mut c = bin();
        c.args([
            "run",
            "anomaly",
            "--brokers",
            &addr,
            "--topic",
            "art",
            "-w",
            "2",
        ])
        .args(extra)
        .arg("--savepoint")
        .arg(&sp)
        .arg("--no-dashboard")
        .arg("--output")
        .arg(dir.path());
        c
    };
    let live = anomaly(&[]).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: a signal to our own child process.
    assert_eq!(unsafe { libc::kill(live.id() as i32, libc::SIGINT) }, 0);
    let first = live.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{said}");
    assert!(
        said.contains("stopping (interrupt again") && said.contains("savepoint written to"),
        "{said}"
    );
    let second = succeeds(&mut anomaly(&["--until-end"]), "run anomaly --until-end");
    let second = String::from_utf8_lossy(&second.stderr);
    assert!(second.contains("resumed from the savepoint"), "{second}");
    let scored = read_lines(dir.path(), "anomaly");
    assert_eq!(scored.len(), readings.len(), "every reading scored once");
    let bad = bin()
        .args(["run", "anomaly", "--dataset", "nab:artificialWithAnomaly"])
        .arg("--savepoint")
        .arg(&sp)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--savepoint needs a Kafka input"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // A replay at the data's own pace stopped by Ctrl-C ends at once, flushed and counted.
    let live = bin()
        .args(["replay", "nab:artificialWithAnomaly", "--brokers", &addr])
        .args(["--topic", "slow", "--speed", "1x"])
        .arg("--data-dir")
        .arg(&data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    // SAFETY: a signal to our own child process.
    assert_eq!(unsafe { libc::kill(live.id() as i32, libc::SIGINT) }, 0);
    let out = live.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the replay went on sleeping"
    );
    let produced: u64 = said
        .split(", ")
        .find_map(|p| p.strip_suffix(" produced")?.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(produced >= 1 && produced < readings.len() as u64, "{said}");
    let _ = broker.kill();
    let _ = broker.wait();
}

#[test]
fn a_run_killed_outright_resumes_from_its_last_checkpoint_and_scores_every_reading_once() {
    // SIGKILL leaves no chance to write anything: what the next run has is the checkpoints
    // the killed one wrote while it ran (every hour of event time here) and its output file.
    // Its rows after the last checkpoint were on disk (then cut back: `tests/checkpoint.rs`
    // checks that) or still in its file buffer (lost with it); either way every reading is
    // scored once, as one detector per series from scratch would score it.
    let (addr, mut broker) = broker_process(&["crash:2"], "120s");
    // Two weeks of 5-minute readings, replayed at 100,000x: about 12 s.
    let replay = bin()
        .args(["replay", "nab:artificialWithAnomaly", "--brokers", &addr])
        .args(["--topic", "crash", "--speed", "100000x"])
        .arg("--data-dir")
        .arg(data_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("sp");
    let anomaly = |extra: &[&str]| {
        let mut c = bin();
        c.args(["run", "anomaly", "--brokers", &addr, "--topic", "crash"])
            .args(["-w", "2", "--checkpoint-every", "1h", "--no-dashboard"])
            .args(extra)
            .arg("--savepoint")
            .arg(&sp)
            .arg("--output")
            .arg(dir.path());
        c
    };
    let mut live = anomaly(&[]).stderr(Stdio::null()).spawn().unwrap();
    let checkpoints = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&sp)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join("manifest.p0.json").exists())
                    .collect()
            })
            .unwrap_or_default()
    };
    let t0 = Instant::now();
    while checkpoints().is_empty() || t0.elapsed() < Duration::from_secs(4) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no checkpoint written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    live.kill().unwrap(); // SIGKILL
    live.wait().unwrap();
    let scored_at_kill = read_lines(dir.path(), "anomaly").len();
    let replayed = replay.wait_with_output().unwrap();
    assert!(replayed.status.success());
    let readings = load("nab:artificialWithAnomaly");
    assert!(
        scored_at_kill > 0 && scored_at_kill < readings.len(),
        "killed part-way: {scored_at_kill} of {} scored",
        readings.len()
    );
    let second = succeeds(&mut anomaly(&["--until-end"]), "run anomaly --until-end");
    let said = String::from_utf8_lossy(&second.stderr);
    let resumed = checkpoints()
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains('c'))
        .count();
    assert!(resumed > 0, "checkpoints kept");
    assert!(
        said.contains("resumed from the savepoint") && said.contains("/g0c"),
        "resumed from a checkpoint of the killed run: {said}"
    );
    assert_scores_eq(
        &read_scores(&[dir.path()]),
        &anomaly_oracle(&readings),
        "killed, then resumed from its checkpoint",
    );
    let _ = broker.kill();
    let _ = broker.wait();
}

#[test]
fn demo_runs_on_embedded_defaults_and_ends_cleanly() {
    let out = succeeds(
        bin()
            .args([
                "demo",
                "--duration",
                "18s",
                "--rate",
                "5000",
                "--sensors",
                "200",
            ])
            .env("STREAMGAUGE_DATA", data_dir()),
        "demo",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let totals = stdout.split("totals:").nth(1).expect("a totals section");
    let windows_out = |topic: &str| -> u64 {
        let line = totals
            .lines()
            .find(|l| l.contains(topic))
            .unwrap_or_else(|| panic!("no {topic} in {totals}"));
        let n = line
            .split("windows out ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        n.parse().unwrap()
    };
    // 200 sensors: the first 10 s window closes within 18 s (window + 5 s lateness).
    assert!(windows_out("demo.sensors") >= 200, "{totals}");
    assert!(windows_out("demo.nab_machine_temp") > 0, "{totals}");
    assert!(windows_out("demo.gas_turbine") > 0, "{totals}");
    assert!(
        stdout.contains("open windows"),
        "the live summary was printed"
    );
}
