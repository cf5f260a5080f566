//! Helpers shared by the workload benches: flags, the generated W1 file, peak memory, and
//! running each case in a child process so its peak RSS is its own.
#![allow(dead_code)]

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use streamgauge::dataset::csvspec::CsvSpec;

/// The value after `name` on the command line.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The bench folder and the W1 file of `rows` rows in it (generated on first use).
pub fn w1_file(rows: u64) -> Result<(PathBuf, PathBuf)> {
    let dir = PathBuf::from("/var/tmp/streamgauge-bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("w1_{rows}.csv"));
    if !file.exists() {
        eprintln!("generating {}", file.display());
        let tmp = dir.join(format!("w1_{rows}.csv.part"));
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        streamgauge::dataset::generate::write_w1(&mut w, rows, 1)?;
        drop(w);
        std::fs::rename(&tmp, &file)?;
    }
    Ok((dir, file))
}

/// Peak resident memory of this process, KiB.
pub fn peak_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `spec` and prints the child's JSON line: readings in, rows out, wall seconds, peak
/// RSS.
pub fn run_and_print(spec: streamgauge::engine::RunSpec) -> Result<()> {
    let t = std::time::Instant::now();
    let r = streamgauge::engine::run(spec)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"readings": r.metrics.readings_in, "rows_out": r.metrics.rows_out,
            "secs": secs, "peak_kb": peak_kb()})
    );
    Ok(())
}

/// W1's CSV layout.
pub fn spec_csv(file: &Path) -> CsvSpec {
    CsvSpec::epoch_ms(file, "ts_ms", "sensor_id", &["value"])
}

/// Runs `--case <case>` of this bench in a child process; returns the JSON line it printed
/// last (timely prints its own lines when a case runs a cluster).
pub fn run_case(case: &str, rows: u64) -> Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let out = Command::new(&exe)
        .args(["--case", case, "--rows", &rows.to_string()])
        .output()?;
    if !out.status.success() {
        bail!(
            "case {case} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    serde_json::from_str(line.trim()).with_context(|| format!("case {case} printed {text}"))
}

/// Runs each case in a child process and prints one table row per case: readings/s, wall
/// time, peak RSS, the count under `count` (the JSON key the child printed, also the column
/// title), and `check(output file)`'s verdict when the child named an output.
///
/// With `--reps N` on the command line every case runs N times, the cases taking turns
/// (A, B, C, A, B, C ...) so that a slow spell of this shared machine hits them alike; the row
/// shows the best run (readings/s, wall, its peak RSS) and the median wall time. Outputs are
/// checked on the first run of each case.
pub fn run_table(
    cases: &str,
    rows: u64,
    count: &str,
    mut check: impl FnMut(&Path) -> Result<String>,
) -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = arg(&args, "--reps")
        .map_or(Ok(1), |s| s.parse())
        .context("--reps")?;
    let cases: Vec<&str> = cases.split(',').collect();
    // Per case: (wall s, JSON line) of every run, and the verdict of the first.
    let mut runs: Vec<Vec<(f64, serde_json::Value)>> = vec![Vec::new(); cases.len()];
    let mut verdicts = vec![String::from("-"); cases.len()];
    for rep in 0..reps.max(1) {
        for (i, case) in cases.iter().enumerate() {
            let v = run_case(case, rows)?;
            if rep == 0 {
                if let Some(path) = v["output"].as_str() {
                    verdicts[i] = check(Path::new(path))?;
                }
            }
            runs[i].push((v["secs"].as_f64().unwrap_or(f64::NAN), v));
        }
    }
    println!(
        "{:<10} {:>12} {:>10} {:>10} {:>14} {:>12} {:>8}",
        "case", "readings/s", "wall s", "median s", "peak RSS MiB", count, "oracle"
    );
    for (i, case) in cases.iter().enumerate() {
        let r = &mut runs[i];
        r.sort_by(|a, b| a.0.total_cmp(&b.0));
        let median = r[r.len() / 2].0;
        let (secs, v) = &r[0];
        println!(
            "{:<10} {:>12.0} {:>10.2} {:>10.2} {:>14.1} {:>12} {:>8}",
            case,
            v["readings"].as_f64().unwrap_or(0.0) / secs,
            secs,
            median,
            v["peak_kb"].as_f64().unwrap_or(0.0) / 1024.0,
            v[count],
            verdicts[i]
        );
    }
    Ok(())
}

/// Produces the W1 file `w1` into `topic`, `batch` readings a message, staying at most 100,000
/// readings ahead of a run whose counters are `metrics` (the embedded broker keeps only the
/// newest part of a long partition, so the run must read as it is written); returns the
/// readings sent. Fails when the run reads nothing for 10 minutes.
pub fn produce_w1_paced(
    brokers: &str,
    topic: &str,
    w1: &Path,
    batch: usize,
    metrics: &streamgauge::engine::Metrics,
) -> Result<u64> {
    use streamgauge::dataset::csvspec::{BlockReader, BlockShare};
    let settings = streamgauge::kafka::ClientSettings::new(brokers);
    let mut p = streamgauge::kafka::producer::ReadingProducer::batched(&settings, topic, batch)?;
    let mut reader = BlockReader::new(&spec_csv(w1), BlockShare::whole())?;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    let mut sent = 0u64;
    while reader.next_block(&mut good, &mut bad)? {
        for r in good.drain(..) {
            p.send(&r)?;
            sent += 1;
        }
        let waiting = std::time::Instant::now();
        while sent > metrics.snapshot().readings_in + 100_000 {
            if waiting.elapsed() > std::time::Duration::from_secs(600) {
                bail!("stalled: {} of {sent} read", metrics.snapshot().readings_in);
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    p.flush(std::time::Duration::from_secs(60))?;
    Ok(sent)
}
