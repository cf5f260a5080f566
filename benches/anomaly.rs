//! What the `gauge` detector costs at the engine's scale: the `anomaly` dataflow over the W1
//! file (10,000 sensors, each with its own detector) on 1 and 2 workers.
//!
//! ```text
//! cargo bench --bench anomaly -- [--rows 10000000] [--cases anomaly-1,anomaly-2] [--reps N]
//! ```
//!
//! Each case runs in a child process and reports readings/s, wall time and peak RSS (the
//! process's high-water mark: input and the 10,000 detectors' state together).

use std::time::Instant;

use anyhow::{bail, Result};
use streamgauge::engine::{run, Input, RunSpec};

mod common;
use common::{arg, peak_kb, run_table, spec_csv, w1_file};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows").map_or(Ok(10_000_000), |s| s.parse())?;
    let (_dir, file) = w1_file(rows)?;
    if let Some(case) = arg(&args, "--case") {
        return child(&case, &file);
    }
    let cases = arg(&args, "--cases").unwrap_or_else(|| "anomaly-1,anomaly-2".into());
    println!("anomaly (gauge detector) over W1, {rows} rows, 10,000 sensors");
    run_table(&cases, rows, "rows_out", |_| Ok("-".into()))
}

fn child(case: &str, file: &std::path::Path) -> Result<()> {
    let Some(("anomaly", workers)) = case.rsplit_once('-') else {
        bail!("unknown case {case} (anomaly-<workers>)");
    };
    let mut spec = RunSpec::new("anomaly", Input::Csv(spec_csv(file)));
    spec.cluster.workers = workers.parse()?;
    let t = Instant::now();
    let r = run(spec)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"readings": r.metrics.readings_in, "rows_out": r.metrics.rows_out,
            "secs": secs, "peak_kb": peak_kb()})
    );
    Ok(())
}
