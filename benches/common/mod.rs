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

/// W1's CSV layout.
pub fn spec_csv(file: &Path) -> CsvSpec {
    CsvSpec::epoch_ms(file, "ts_ms", "sensor_id", &["value"])
}

/// Runs `--case <case>` of this bench in a child process; returns the JSON line it printed.
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
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("case {case} printed {line}"))
}

/// Runs each case in a child process and prints one table row per case: readings/s, wall
/// time, peak RSS, the count under `count` (the JSON key the child printed, also the column
/// title), and `check(output file)`'s verdict when the child named an output.
pub fn run_table(
    cases: &str,
    rows: u64,
    count: &str,
    mut check: impl FnMut(&Path) -> Result<String>,
) -> Result<()> {
    println!(
        "{:<10} {:>12} {:>10} {:>14} {:>12} {:>8}",
        "case", "readings/s", "wall s", "peak RSS MiB", count, "oracle"
    );
    for case in cases.split(',') {
        let v = run_case(case, rows)?;
        let secs = v["secs"].as_f64().unwrap_or(0.0);
        let verdict = match v["output"].as_str() {
            Some(path) => check(Path::new(path))?,
            None => "-".to_string(),
        };
        println!(
            "{:<10} {:>12.0} {:>10.2} {:>14.1} {:>12} {:>8}",
            case,
            v["readings"].as_f64().unwrap_or(0.0) / secs,
            secs,
            v["peak_kb"].as_f64().unwrap_or(0.0) / 1024.0,
            v[count],
            verdict
        );
    }
    Ok(())
}
