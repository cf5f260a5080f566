//! What the `gauge` detector costs at the engine's scale: the `anomaly` dataflow over the W1
//! file (10,000 sensors, each with its own detector) on 1 and 2 workers; and what a time to
//! live for per-series state (`--state-ttl`) saves when series come and go.
//!
//! ```text
//! cargo bench --bench anomaly -- [--rows 10000000] [--cases anomaly-1,anomaly-2] [--reps N]
//! ```
//!
//! Cases (`<case>-<workers>`): `anomaly` over W1; `churn` over W1 with its sensors replaced
//! by new ones every 2 million rows (2,000 s of event time; 50,000 series over 10 million
//! rows, 10,000 live at a time), state kept for the whole run; `churn_ttl` the same with a
//! 5-minute TTL. Each case runs in a child process and reports readings/s, wall time and
//! peak RSS (the process's high-water mark: input and the detectors' state together).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::time::Duration;

use anyhow::{bail, Result};
use streamgauge::engine::{Input, RunSpec};

mod common;
use common::{arg, run_and_print, run_table, spec_csv, w1_file};

/// Rows between generations of sensors in the churn file.
const GENERATION_ROWS: u64 = 2_000_000;
/// The TTL of `churn_ttl`.
const TTL: Duration = Duration::from_secs(300);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows").map_or(Ok(10_000_000), |s| s.parse())?;
    let (dir, w1) = w1_file(rows)?;
    if let Some(case) = arg(&args, "--case") {
        return child(&case, &dir, &w1, rows);
    }
    let cases = arg(&args, "--cases").unwrap_or_else(|| "anomaly-1,anomaly-2".into());
    if cases.contains("churn") {
        churn_file(&dir, &w1, rows)?;
    }
    println!("anomaly (gauge detector) over W1, {rows} rows, 10,000 sensors (churn: new ones every {GENERATION_ROWS} rows)");
    run_table(&cases, rows, "rows_out", |_| Ok("-".into()))
}

/// The W1 file with sensor `sNNNNN` of generation `g` (rows `g * GENERATION_ROWS ..`)
/// renamed `gG-sNNNNN` (written on first use).
fn churn_file(
    dir: &std::path::Path,
    w1: &std::path::Path,
    rows: u64,
) -> Result<std::path::PathBuf> {
    let file = dir.join(format!("churn_{rows}.csv"));
    if file.exists() {
        return Ok(file);
    }
    eprintln!("generating {}", file.display());
    let tmp = dir.join(format!("churn_{rows}.csv.part"));
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    for (i, line) in BufReader::with_capacity(1 << 20, std::fs::File::open(w1)?)
        .lines()
        .enumerate()
    {
        let line = line?;
        if i == 0 {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "g{}-{line}", (i as u64 - 1) / GENERATION_ROWS)?;
        }
    }
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, &file)?;
    Ok(file)
}

fn child(case: &str, dir: &std::path::Path, w1: &std::path::Path, rows: u64) -> Result<()> {
    let (file, ttl) = match case.rsplit_once('-') {
        Some(("anomaly", _)) => (w1.to_path_buf(), None),
        Some(("churn", _)) => (churn_file(dir, w1, rows)?, None),
        Some(("churn_ttl", _)) => (churn_file(dir, w1, rows)?, Some(TTL)),
        _ => bail!("unknown case {case} (anomaly-<workers>, churn-<workers>, churn_ttl-<workers>)"),
    };
    let workers = case.rsplit_once('-').map_or("1", |(_, w)| w);
    let mut spec = RunSpec::new("anomaly", Input::Csv(spec_csv(&file)));
    spec.cluster.workers = workers.parse()?;
    spec.state_ttl = ttl;
    run_and_print(spec)
}
