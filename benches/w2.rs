//! W2 end-to-end benchmark: per sensor, the mean and population std of that sensor's previous
//! 100 readings (not the current one); a reading is emitted with mean, std and z when std > 0
//! and |z| > 4. Input: the generated W1 file (10,000 sensors).
//!
//! ```text
//! cargo bench --bench w2 -- [--rows 10000000] [--cases naive,file-1,file-2] [--reps N] [--no-check]
//! ```
//!
//! Each case runs in a child process and reports readings/s, wall time and peak RSS; outputs
//! are checked against a batch oracle (two-pass statistics over each reading's previous 100
//! values): the same set of alerts, floats within 1e-9 relative.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use streamgauge::engine::{run, Input, OutputFormat, RunSpec};

mod common;
use common::{arg, peak_kb, run_table, spec_csv, w1_file};

const N: usize = 100;
const Z: f64 = 4.0;

/// (sensor, ts) -> (value, mean, std, z).
type Alerts = HashMap<(String, i64), (f64, f64, f64, f64)>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows").map_or(Ok(10_000_000), |s| s.parse())?;
    let (dir, file) = w1_file(rows)?;
    if let Some(case) = arg(&args, "--case") {
        return child(&case, &file, &dir);
    }
    let cases = arg(&args, "--cases").unwrap_or_else(|| "naive,file-1,file-2".into());
    let oracle = if args.iter().any(|a| a == "--no-check") {
        None
    } else {
        Some(oracle(&file)?)
    };
    println!("W2: {rows} rows, 10,000 sensors, z of each reading against its sensor's previous {N}, alert at |z| > {Z}");
    run_table(&cases, rows, "alerts", |path| match &oracle {
        Some(o) => compare(o, path),
        None => Ok("-".into()),
    })
}

fn child(case: &str, file: &Path, dir: &Path) -> Result<()> {
    let out = dir.join(format!("w2-out-{case}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let t = Instant::now();
    let (readings, alerts) = match case {
        "naive" => naive(file, &out.join("zscore.csv"))?,
        c if c.starts_with("file-") => {
            let mut spec = RunSpec::new("zscore", Input::Csv(spec_csv(file)));
            spec.cluster.workers = c[5..].parse()?;
            spec.readings = N;
            spec.threshold = Z;
            spec.output_dir = Some(out.clone());
            spec.output_format = OutputFormat::Csv;
            let r = run(spec)?;
            (r.metrics.readings_in, r.metrics.rows_out)
        }
        other => bail!("unknown case {other}"),
    };
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"readings": readings, "alerts": alerts, "secs": secs, "peak_kb": peak_kb(),
            "output": out.join("zscore.csv").display().to_string()})
    );
    Ok(())
}

/// What a user writes first: one thread, a ring of the last 100 values per sensor, running
/// sums (no compensation), the file read line by line.
fn naive(file: &Path, out: &Path) -> Result<(u64, u64)> {
    let mut w = BufWriter::new(std::fs::File::create(out)?);
    writeln!(w, "series,field,ts,value,mean,std,z")?;
    let mut state: HashMap<String, (VecDeque<f64>, f64, f64)> = HashMap::new();
    let (mut n, mut alerts) = (0u64, 0u64);
    for line in BufReader::new(std::fs::File::open(file)?).lines().skip(1) {
        let line = line?;
        let mut p = line.split(',');
        let (Some(s), Some(ts), Some(v)) = (p.next(), p.next(), p.next()) else {
            continue;
        };
        let (ts, v): (i64, f64) = (ts.parse()?, v.parse()?);
        n += 1;
        let (ring, sum, sq) = state.entry(s.to_string()).or_default();
        if !ring.is_empty() {
            let k = ring.len() as f64;
            let mean = *sum / k;
            let std = (*sq / k - mean * mean).max(0.0).sqrt();
            if std > 0.0 && ((v - mean) / std).abs() > Z {
                alerts += 1;
                writeln!(w, "{s},value,{ts},{v},{mean},{std},{}", (v - mean) / std)?;
            }
        }
        ring.push_back(v);
        *sum += v;
        *sq += v * v;
        if ring.len() > N {
            let old = ring.pop_front().unwrap_or(0.0);
            *sum -= old;
            *sq -= old * old;
        }
    }
    w.flush()?;
    Ok((n, alerts))
}

/// The batch oracle: per sensor, two-pass statistics of the previous <= 100 values.
fn oracle(file: &Path) -> Result<Alerts> {
    let mut series: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
    for line in BufReader::new(std::fs::File::open(file)?).lines().skip(1) {
        let line = line?;
        let mut p = line.split(',');
        let (s, ts, v) = (
            p.next().unwrap_or(""),
            p.next().unwrap_or("0"),
            p.next().unwrap_or("0"),
        );
        series
            .entry(s.to_string())
            .or_default()
            .push((ts.parse()?, v.parse()?));
    }
    let mut out = Alerts::new();
    for (s, mut rows) in series {
        rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        for i in 1..rows.len() {
            let prev = &rows[i.saturating_sub(N)..i];
            let k = prev.len() as f64;
            let mean = prev.iter().map(|r| r.1).sum::<f64>() / k;
            let std = (prev
                .iter()
                .map(|r| (r.1 - mean) * (r.1 - mean))
                .sum::<f64>()
                / k)
                .sqrt();
            if std > 0.0 && ((rows[i].1 - mean) / std).abs() > Z {
                out.insert(
                    (s.clone(), rows[i].0),
                    (rows[i].1, mean, std, (rows[i].1 - mean) / std),
                );
            }
        }
    }
    Ok(out)
}

fn compare(oracle: &Alerts, output: &Path) -> Result<String> {
    let mut seen = 0usize;
    for line in BufReader::new(std::fs::File::open(output)?).lines().skip(1) {
        let line = line?;
        let f: Vec<&str> = line.split(',').collect();
        let key = (
            f[0].trim_start_matches("sensor/").to_string(),
            f[2].parse::<i64>()?,
        );
        let g: Vec<f64> = f[3..7]
            .iter()
            .map(|x| x.parse().unwrap_or(f64::NAN))
            .collect();
        let Some(&(v, mean, std, z)) = oracle.get(&key) else {
            return Ok(format!("extra {key:?}"));
        };
        let close = |a: f64, b: f64, s: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(s);
        if g[0] != v || !close(g[1], mean, std) || !close(g[2], std, 0.0) || !close(g[3], z, 1.0) {
            return Ok(format!("DIFF {key:?}"));
        }
        seen += 1;
    }
    Ok(if seen == oracle.len() {
        "equal".into()
    } else {
        format!("{seen}/{}", oracle.len())
    })
}
