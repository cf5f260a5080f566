//! Cluster runs through the real binary: two processes of one worker each (`-n 2 -p 0/1
//! -h hostfile` on loopback) give the same windows as one process of two workers, and the
//! `replay` command feeds the topic they read (process 1 leaves the dashboard to process 0);
//! two processes of two workers read a CSV file together; during a live two-process run,
//! process 0's dashboard shows both processes' workers, readings and series; a savepoint
//! written by two processes resumes on one process of three workers, and so does a checkpoint
//! of two processes killed outright (`anomaly`, its result topic exactly once too, and
//! `sensor_outliers` with every collection);
//! and two processes stopped one after the other resume as one run (`series_stats`,
//! `sensor_outliers`).

mod common;

use std::process::Command;

use common::*;
use streamgauge::kafka::broker::EmbeddedBroker;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamgauge"))
}

#[test]
fn two_processes_equal_one_process_of_two_workers() {
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("cluster", 6).unwrap();
    let data = data_dir();
    // Replay through the CLI: every NAB traffic series (7 series over 6 partitions).
    let out = bin()
        .args([
            "replay",
            "nab:realTraffic",
            "--brokers",
            broker.bootstrap(),
            "--topic",
            "cluster",
            "--speed",
            "max",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    assert!(stderr.contains("0 quarantined"), "{stderr}");
    let readings = load("nab:realTraffic");
    assert!(
        stderr.contains(&format!("{} produced", readings.len())),
        "{stderr}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let hosts = hostfile(tmp.path(), 2);
    let run = |dir: &std::path::Path, extra: &[&str]| {
        let mut c = bin();
        c.args([
            "run",
            "series_stats",
            "--brokers",
            broker.bootstrap(),
            "--topic",
            "cluster",
            "--until-end",
            "--window",
            "1h",
        ])
        .args(["--no-result-topics", "--output"])
        .arg(dir)
        .args(extra);
        c
    };
    let two = tmp.path().join("two_processes");
    let h = hosts.to_str().unwrap();
    let mut p0 = run(&two, &["-n", "2", "-p", "0", "-h", h]).spawn().unwrap();
    let p1 = run(&two, &["-n", "2", "-p", "1", "-h", h])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let p1 = p1.wait_with_output().unwrap();
    assert!(p0.wait().unwrap().success() && p1.status.success());
    // One dashboard for the cluster, on process 0 (tests/dashboard.rs checks what it shows).
    let said = String::from_utf8_lossy(&p1.stderr);
    assert!(
        said.contains("dashboard: process 0 serves the whole cluster's"),
        "{said}"
    );
    let one = tmp.path().join("one_process");
    let st = run(&one, &["-w", "2"]).status().unwrap();
    assert!(st.success());

    let a = read_windows(&two);
    let b = read_windows(&one);
    assert!(
        two.join("series_stats.p0.jsonl").exists() && two.join("series_stats.p1.jsonl").exists()
    );
    assert_eq!(
        a, b,
        "two processes and one process of two workers give identical windows"
    );
    assert_windows_eq(
        &a,
        &oracle(&readings, 3_600_000),
        "two processes vs batch oracle",
    );
}

#[test]
fn csv_file_read_by_two_processes_of_two_workers_matches_the_oracle() {
    // Each process reads its own blocks of the file (p + kP) and its two threads claim
    // those as they are ready: every row must be read once, across processes and threads.
    let tmp = tempfile::tempdir().unwrap();
    let (csv, readings) = w1_csv(tmp.path(), 200_000, 11);
    let hosts = hostfile(tmp.path(), 2);
    let out = tmp.path().join("out");
    let h = hosts.to_str().unwrap();
    let run = |p: &str| {
        let mut c = bin();
        c.args(["run", "series_stats", "--dataset"])
            .arg(&csv.path)
            .args(["--time-col", "ts_ms", "--series-col", "sensor_id"])
            .args([
                "--value-col",
                "value",
                "--until-end",
                "--no-dashboard",
                "--output",
            ])
            .arg(&out)
            .args(["-w", "2", "-n", "2", "-p", p, "-h", h]);
        c.spawn().unwrap()
    };
    let (mut p0, mut p1) = (run("0"), run("1"));
    assert!(p0.wait().unwrap().success() && p1.wait().unwrap().success());
    assert_windows_eq(
        &read_windows(&out),
        &oracle(&readings, 10_000),
        "W1 CSV, 2 processes of 2 workers",
    );
}

/// `GET path` on `addr`: the JSON body of a 200 answer, if any.
fn get(addr: &str, path: &str) -> Option<serde_json::Value> {
    match http_get(addr, path, None)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

#[test]
fn process_0_serves_one_dashboard_for_a_live_two_process_cluster() {
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("live", 4).unwrap();
    let readings = load("nab:realTraffic");
    let mut p = streamgauge::kafka::producer::ReadingProducer::new(
        &streamgauge::kafka::ClientSettings::new(broker.bootstrap()),
        "live",
    )
    .unwrap();
    for r in &readings {
        p.send(r).unwrap();
    }
    p.flush(std::time::Duration::from_secs(30)).unwrap();
    let series: std::collections::BTreeSet<String> =
        readings.iter().map(|r| r.series.to_string()).collect();

    let tmp = tempfile::tempdir().unwrap();
    let hosts = hostfile(tmp.path(), 2);
    let addr = format!("127.0.0.1:{}", free_port());
    let h = hosts.to_str().unwrap();
    // A live run (no --until-end) that stops itself; the test reads the dashboard meanwhile.
    let start = |p: &str, extra: &[&str]| {
        bin()
            .args(["run", "sensor_outliers", "--brokers", broker.bootstrap()])
            .args(["--topic", "live", "--no-result-topics", "--duration", "30s"])
            .args(["-n", "2", "-p", p, "-h", h])
            .args(extra)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut p0 = start("0", &["--dashboard", &addr]);
    let mut p1 = start("1", &[]);
    let t0 = std::time::Instant::now();
    let (mut seen, mut listed) = (None, std::collections::BTreeSet::new());
    while t0.elapsed() < std::time::Duration::from_secs(25) {
        if let Some(o) = get(&addr, "/api/overview") {
            let p = &o["pipelines"][0];
            let processes: std::collections::BTreeSet<u64> = p["workers"]
                .as_array()
                .map(|w| w.iter().filter_map(|w| w["process"].as_u64()).collect())
                .unwrap_or_default();
            listed = get(&addr, "/api/series?limit=1000")
                .and_then(|v| {
                    v.as_array().map(|a| {
                        a.iter()
                            .filter_map(|s| s["series"].as_str().map(String::from))
                            .collect()
                    })
                })
                .unwrap_or_default();
            if p["readings_in"].as_u64() == Some(readings.len() as u64)
                && processes.len() == 2
                && listed == series
            {
                seen = Some(o);
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (s0, s1) = (p0.wait().unwrap(), p1.wait().unwrap());
    assert!(s0.success() && s1.success());
    let o = seen.unwrap_or_else(|| {
        panic!("process 0's dashboard never showed both processes' readings and series; last series list {listed:?}")
    });
    assert_eq!(
        o["pipelines"][0]["workers"].as_array().unwrap().len(),
        2,
        "{o}"
    );
    assert_eq!(listed, series, "every series of both processes");
}

#[test]
fn a_savepoint_of_two_processes_resumes_on_one_process_of_three_workers() {
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("cluster_sp", 6).unwrap();
    let out = bin()
        .args(["replay", "nab:realTraffic", "--brokers", broker.bootstrap()])
        .args(["--topic", "cluster_sp", "--speed", "max"])
        .arg("--data-dir")
        .arg(data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let readings = load("nab:realTraffic");

    let tmp = tempfile::tempdir().unwrap();
    let hosts = hostfile(tmp.path(), 2);
    let sp = tmp.path().join("savepoint");
    let run = |dir: &std::path::Path, extra: &[&str]| {
        let mut c = bin();
        c.args(["run", "anomaly", "--brokers", broker.bootstrap()])
            .args([
                "--topic",
                "cluster_sp",
                "--no-result-topics",
                "--no-dashboard",
            ])
            .arg("--savepoint")
            .arg(&sp)
            .arg("--output")
            .arg(dir)
            .args(extra)
            .stderr(std::process::Stdio::piped());
        c
    };
    // Two processes of one worker, live, both stopped after 4 s.
    let first = tmp.path().join("first");
    let h = hosts.to_str().unwrap();
    let live = ["--duration", "4s", "-n", "2", "-h", h];
    let p0 = run(&first, &live).args(["-p", "0"]).spawn().unwrap();
    let p1 = run(&first, &live).args(["-p", "1"]).spawn().unwrap();
    for p in [
        p0.wait_with_output().unwrap(),
        p1.wait_with_output().unwrap(),
    ] {
        let said = String::from_utf8_lossy(&p.stderr);
        assert!(
            p.status.success() && said.contains("savepoint written"),
            "{said}"
        );
    }
    // One process of three workers, from the savepoint to the end.
    let second = tmp.path().join("second");
    let p = run(&second, &["--until-end", "-w", "3"]).output().unwrap();
    let said = String::from_utf8_lossy(&p.stderr);
    assert!(
        p.status.success() && said.contains("resumed from the savepoint"),
        "{said}"
    );

    // Every reading scored once, as one detector per series over all of it would.
    assert!(
        first.join("anomaly.p0.jsonl").exists() && second.join("anomaly.jsonl").exists(),
        "both runs scored"
    );
    assert_scores_eq(
        &read_scores(&[&first, &second]),
        &anomaly_oracle(&readings),
        "two processes, then one of three workers",
    );
}

#[test]
fn two_processes_killed_outright_resume_from_their_checkpoint_on_one_process_of_three_workers() {
    // Both processes of a live run are killed with SIGKILL once they wrote a checkpoint
    // together: each wrote its own manifest into the same directory, and only a directory
    // with both counts. One process of three workers resumes from it, cuts both processes'
    // files back to what they held at the barrier, and every reading is scored once.
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("cluster_cp", 6).unwrap();
    // The scores also go to Kafka: exactly once there too, across the kill.
    for o in ["anomaly", "late", "quarantine"] {
        broker.create_topic(&format!("cluster_cp.{o}"), 3).unwrap();
    }
    let replay = replay_fast(broker.bootstrap(), "cluster_cp");
    let tmp = tempfile::tempdir().unwrap();
    let hosts = hostfile(tmp.path(), 2);
    let sp = tmp.path().join("savepoint");
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        let mut c = bin();
        c.args(["run", "anomaly", "--brokers", broker.bootstrap()])
            .args(["--topic", "cluster_cp", "--checkpoint-every", "1h"])
            .arg("--no-dashboard")
            .arg("--savepoint")
            .arg(&sp)
            .arg("--output")
            .arg(&out)
            .args(extra);
        c
    };
    let h = hosts.to_str().unwrap();
    let mut live: Vec<_> = (0..2)
        .map(|p| {
            run(&["-n", "2", "-h", h, "-p", &p.to_string()])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    kill_after_a_joint_checkpoint(&mut live, &sp);
    let scored_at_kill = read_lines(&out, "anomaly").len();
    // What the resumed run must cut back: process 1's file beyond what it held at the newest
    // checkpoint of both. A process flushes its file at every barrier, so there are bytes
    // beyond it when process 1 flushed at a later barrier before the kill; when it did not,
    // a copy of a row already written stands for them (a crash can leave either), so that the cut of
    // a process that does not run again is always tested.
    let newest = joint_checkpoints(&sp).pop().unwrap().1;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(newest.join("manifest.p1.json")).unwrap()).unwrap();
    let at_cut = manifest["outputs"]["anomaly.p1.jsonl"].as_u64().unwrap();
    let p1_file = out.join("anomaly.p1.jsonl");
    let p1_rows = std::fs::read_to_string(&p1_file).unwrap();
    assert!(
        p1_rows.len() as u64 >= at_cut,
        "the file holds what it held at the checkpoint"
    );
    if p1_rows.len() as u64 == at_cut {
        let first = read_lines(&out, "anomaly").swap_remove(0);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&p1_file)
            .unwrap();
        std::io::Write::write_all(&mut f, format!("{first}\n").as_bytes()).unwrap();
    }
    let replayed = replay.wait_with_output().unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let readings = load("nab:artificialWithAnomaly");
    assert!(
        out.join("anomaly.p0.jsonl").exists() && out.join("anomaly.p1.jsonl").exists(),
        "both processes scored before the kill"
    );
    assert!(
        scored_at_kill < readings.len(),
        "killed part-way: {scored_at_kill} of {} scored",
        readings.len()
    );

    let p = run(&["--until-end", "-w", "3"])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&p.stderr);
    assert!(
        p.status.success() && said.contains("resumed from the savepoint") && said.contains("/g0c"),
        "resumed from a checkpoint of the two processes: {said}"
    );
    assert_scores_eq(
        &read_scores(&[&out]),
        &anomaly_oracle(&readings),
        "two processes killed, then one of three workers",
    );
    // Every row of the files (the killed processes' up to the checkpoint, the resumed run's
    // after it) is in the result topic once: what the killed processes had sent after the
    // checkpoint was read back and not sent again.
    let mut files = read_lines(&out, "anomaly");
    files.sort();
    let mut topic: Vec<String> = read_messages(
        &streamgauge::kafka::ClientSettings::new(broker.bootstrap()),
        "cluster_cp.anomaly",
    )
    .into_iter()
    .map(|(_, _, p)| String::from_utf8(p).unwrap())
    .collect();
    topic.sort();
    eprintln!(
        "result topic after the kill and the resume: {} rows, files {}; {}",
        topic.len(),
        files.len(),
        said.lines()
            .find(|l| l.contains("not sent again"))
            .unwrap_or("nothing found to skip")
    );
    assert_eq!(topic.len(), files.len(), "result topic and files");
    assert!(
        topic == files,
        "the result topic holds the files' rows, each once"
    );
}

/// Replays the NAB artificial series with anomalies (two weeks of 5-minute readings) into
/// `topic` at 100,000x: about 12 s, so a live run sees hourly barriers while it reads.
fn replay_fast(brokers: &str, topic: &str) -> std::process::Child {
    bin()
        .args(["replay", "nab:artificialWithAnomaly"])
        .args(["--brokers", brokers, "--topic", topic])
        .args(["--speed", "100000x"])
        .arg("--data-dir")
        .arg(data_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The checkpoints of run generation 0 in `sp` that both processes completed, by barrier.
fn joint_checkpoints(sp: &std::path::Path) -> Vec<(i64, std::path::PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(sp)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.join("manifest.p0.json").exists() && p.join("manifest.p1.json").exists()
                })
                .filter_map(|p| {
                    let name = p.file_name()?.to_str()?.to_string();
                    Some((name.strip_prefix("g0c")?.parse::<i64>().ok()?, p))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Kills the processes of `live` with SIGKILL once they have written a checkpoint together
/// into `sp` and run for 4 s.
fn kill_after_a_joint_checkpoint(live: &mut [std::process::Child], sp: &std::path::Path) {
    let t0 = std::time::Instant::now();
    while joint_checkpoints(sp).is_empty() || t0.elapsed() < std::time::Duration::from_secs(4) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "no checkpoint of both processes"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for p in live.iter_mut() {
        p.kill().unwrap(); // SIGKILL
    }
    for p in live.iter_mut() {
        p.wait().unwrap();
    }
}

#[test]
fn sensor_outliers_of_two_processes_killed_outright_resume_as_one_uninterrupted_run() {
    // The outlier set, its reference join and the top-k need every process's series restated
    // at the barrier: two live processes are killed once they wrote a checkpoint together, one
    // process of three workers resumes from it, and every output is the rows of one
    // uninterrupted run of two workers over the same topic.
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("cluster_so", 6).unwrap();
    let replay = replay_fast(broker.bootstrap(), "cluster_so");
    let tmp = tempfile::tempdir().unwrap();
    let hosts = hostfile(tmp.path(), 2);
    let sp = tmp.path().join("savepoint");
    let out = tmp.path().join("out");
    let reference = artificial_reference(tmp.path());
    let run = |out: &std::path::Path, extra: &[&str]| {
        let mut c = sensor_outliers(broker.bootstrap(), "cluster_so", &reference, out);
        c.args(extra);
        c
    };
    let checkpointed = |out: &std::path::Path, extra: &[&str]| {
        let mut c = run(out, &["--checkpoint-every", "1h"]);
        c.arg("--savepoint").arg(&sp).args(extra);
        c
    };
    let h = hosts.to_str().unwrap();
    let mut live: Vec<_> = (0..2)
        .map(|p| {
            checkpointed(&out, &["-n", "2", "-h", h, "-p", &p.to_string()])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    kill_after_a_joint_checkpoint(&mut live, &sp);
    let replayed = replay.wait_with_output().unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let scored_at_kill = read_lines(&out, "outlier_scores").len();
    let readings = load("nab:artificialWithAnomaly").len();
    assert!(
        scored_at_kill > 0 && scored_at_kill < readings,
        "killed part-way: {scored_at_kill} of {readings} scored"
    );

    let p = checkpointed(&out, &["--until-end", "-w", "3"])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&p.stderr);
    assert!(
        p.status.success() && said.contains("resumed from the savepoint") && said.contains("/g0c"),
        "resumed from a checkpoint of the two processes: {said}"
    );
    let whole = tmp.path().join("whole");
    let p = run(&whole, &["--until-end", "-w", "2"]).output().unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    assert_sensor_outliers_eq(&out, &whole);
}

/// A reference table for the NAB artificial series with anomalies, written into `dir`: a
/// location per series, and two later versions of each row, on days that differ per series
/// (so the join changes while a run reads).
fn artificial_reference(dir: &std::path::Path) -> std::path::PathBuf {
    let reference = dir.join("ref.csv");
    let mut table = String::from("series,location,unit,valid_from\n");
    for (i, s) in [
        "art_daily_flatmiddle",
        "art_daily_jumpsdown",
        "art_daily_jumpsup",
        "art_daily_nojump",
        "art_increase_spike_density",
        "art_load_balancer_spikes",
    ]
    .iter()
    .enumerate()
    {
        table.push_str(&format!("artificialWithAnomaly/{s},hall-{i},kW,\n"));
        for day in [4 + i, 9 + i] {
            table.push_str(&format!(
                "artificialWithAnomaly/{s},yard-{i}-{day},kW,2014-04-{day:02}T07:00:00Z\n"
            ));
        }
    }
    std::fs::write(&reference, table).unwrap();
    reference
}

/// `run sensor_outliers` over `topic`, with the reference table, a top-k every 17 minutes,
/// files only, into `out`.
fn sensor_outliers(
    brokers: &str,
    topic: &str,
    reference: &std::path::Path,
    out: &std::path::Path,
) -> Command {
    let mut c = bin();
    c.args(["run", "sensor_outliers", "--brokers", brokers])
        .args(["--topic", topic, "--threshold", "3", "--top", "4"])
        .args(["--top-every", "17m", "--horizon", "2"])
        .args(["--no-result-topics", "--no-dashboard"])
        .arg("--reference")
        .arg(reference)
        .arg("--output")
        .arg(out);
    c
}

/// Every `sensor_outliers` output in `got` (runs that stopped or died and were resumed) has
/// the rows of `want` (one uninterrupted run).
fn assert_sensor_outliers_eq(got: &std::path::Path, want: &std::path::Path) {
    for o in [
        "outlier_scores",
        "forecasts",
        "outliers",
        "outliers_top",
        "outliers_ref",
    ] {
        let (mut g, mut w) = (read_lines(got, o), read_lines(want, o));
        g.sort();
        w.sort();
        assert!(w.len() >= 20, "{o}: {} rows", w.len());
        let extra: Vec<&String> = g.iter().filter(|r| !w.contains(r)).take(6).collect();
        let missing: Vec<&String> = w.iter().filter(|r| !g.contains(r)).take(6).collect();
        assert!(
            g == w,
            "{o}: {} rows, {} in one uninterrupted run; extra {extra:?}; missing {missing:?}",
            g.len(),
            w.len()
        );
    }
}

#[test]
fn a_cluster_whose_processes_stop_one_after_the_other_resumes_as_one_uninterrupted_run() {
    // Process 0 stops 4 s before process 1, while the replay still produces: process 1 reads
    // on, and every worker must still be cut where process 0's source stopped (its stop
    // mark), where the resumed run reads its partitions again. `series_stats` (windows folded
    // as readings arrive) and `sensor_outliers` (keyed states and every collection) both run
    // on the live topic; each is resumed by one process of three workers, and together the
    // runs write each window once, as the batch oracle has it, and the rows of one
    // uninterrupted `sensor_outliers` run.
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("cluster_stop", 6).unwrap();
    let replay = replay_fast(broker.bootstrap(), "cluster_stop");
    let tmp = tempfile::tempdir().unwrap();
    // One hostfile per cluster: the two dataflows run as two clusters side by side.
    let hosts: Vec<String> = ["so_hosts", "ss_hosts"]
        .iter()
        .map(|d| {
            let dir = tmp.path().join(d);
            std::fs::create_dir(&dir).unwrap();
            hostfile(&dir, 2).to_str().unwrap().to_string()
        })
        .collect();
    let ports = |h: &String| std::fs::read_to_string(h).unwrap();
    assert_ne!(ports(&hosts[0]), ports(&hosts[1]));
    let reference = artificial_reference(tmp.path());
    let (so_out, so_sp) = (tmp.path().join("so"), tmp.path().join("so_sp"));
    let (ss_out, ss_sp) = (tmp.path().join("ss"), tmp.path().join("ss_sp"));
    let so = |extra: &[&str]| {
        let mut c = sensor_outliers(broker.bootstrap(), "cluster_stop", &reference, &so_out);
        c.arg("--savepoint").arg(&so_sp).args(extra);
        c
    };
    let ss = |extra: &[&str]| {
        let mut c = bin();
        c.args(["run", "series_stats", "--brokers", broker.bootstrap()])
            .args(["--topic", "cluster_stop", "--window", "1h"])
            .args(["--no-result-topics", "--no-dashboard", "--output"])
            .arg(&ss_out)
            .arg("--savepoint")
            .arg(&ss_sp)
            .args(extra);
        c
    };
    let mut live = Vec::new();
    for (p, duration) in [(0, "4s"), (1, "8s")] {
        let p = p.to_string();
        let (h0, h1) = (hosts[0].as_str(), hosts[1].as_str());
        let so_args = ["-n", "2", "-h", h0, "-p", &p, "--duration", duration];
        let ss_args = ["-n", "2", "-h", h1, "-p", &p, "--duration", duration];
        for mut c in [so(&so_args), ss(&ss_args)] {
            live.push(c.stderr(std::process::Stdio::piped()).spawn().unwrap());
        }
    }
    let mut held = 0;
    for p in live {
        let p = p.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&p.stderr);
        assert!(
            p.status.success() && said.contains("savepoint written"),
            "{said}"
        );
        // "(N states, M readings held, ...)"
        let m = said.split(" readings held").next().unwrap();
        held += m.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
    }
    let replayed = replay.wait_with_output().unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let readings = load("nab:artificialWithAnomaly");
    let scored = read_lines(&so_out, "outlier_scores").len();
    assert!(
        scored > 0 && scored < readings.len(),
        "stopped part-way: {scored} of {} scored",
        readings.len()
    );
    // Process 1 read on after process 0's mark: the keyed operators held what it read.
    assert!(held > 0, "nothing held at the cut");

    for mut c in [
        so(&["--until-end", "-w", "3"]),
        ss(&["--until-end", "-w", "3"]),
    ] {
        let p = c.output().unwrap();
        let said = String::from_utf8_lossy(&p.stderr);
        assert!(
            p.status.success() && said.contains("resumed from the savepoint"),
            "{said}"
        );
    }
    // Each window once (`read_windows` fails on a second row), with every reading in it.
    assert_windows_eq(
        &read_windows(&ss_out),
        &oracle(&readings, 3_600_000),
        "two processes stopped 4 s apart, then one of three workers",
    );
    let whole = tmp.path().join("whole");
    let mut c = sensor_outliers(broker.bootstrap(), "cluster_stop", &reference, &whole);
    let p = c.args(["--until-end", "-w", "2"]).output().unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    assert_sensor_outliers_eq(&so_out, &whole);
}
