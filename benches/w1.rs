//! W1 end-to-end benchmark (the workload we compare with other engines):
//! per sensor, 10 s tumbling windows with count / mean / min / max / population std, every
//! window written out, over the generated W1 file.
//!
//! ```text
//! cargo bench --bench w1 -- [--rows 10000000] [--cases naive,file-1,file-2,broker-1,broker-2,batched-1,batched-2] [--reps N] [--no-check]
//! ```
//!
//! Each case runs in a child process (so peak memory is its own) and reports readings/s, wall
//! time and peak RSS. File cases are checked against a batch oracle (two-pass statistics per
//! window): counts exact, floats within 1e-9 relative. Broker cases replay the file into the
//! embedded broker while the dataflow consumes it (the embedded broker keeps only the newest
//! 5 MB / 100,000 messages per partition, so the producer is held within 100,000 readings of
//! the consumer), timed from the first produced reading to the last window written. `broker-N`
//! sends one reading per Kafka message; `batched-N` sends up to [`BATCH`] readings of one
//! partition per message (`replay --batch`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod common;
use common::{arg, peak_kb, produce_w1_paced, run_table, spec_csv, w1_file};
use streamgauge::engine::{run, Input, OutputFormat, RunSpec};
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::source::KafkaInput;
use streamgauge::kafka::ClientSettings;

const WINDOW_MS: i64 = 10_000;

/// (sensor, window start).
type Key = (String, i64);
/// count, mean, min, max, std (or, while open: count, mean, m2, min, max).
type Stats = (u64, f64, f64, f64, f64);
/// Windows by key.
type Windows = HashMap<Key, Stats>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows")
        .map_or(Ok(10_000_000), |s| s.parse())
        .context("--rows")?;
    let (dir, file) = w1_file(rows)?;
    if let Some(case) = arg(&args, "--case") {
        return child(&case, &file, rows, &dir);
    }
    let cases = arg(&args, "--cases")
        .unwrap_or_else(|| "naive,file-1,file-2,broker-1,broker-2,batched-1,batched-2".into());
    let check = !args.iter().any(|a| a == "--no-check");
    let oracle = if check { Some(oracle(&file)?) } else { None };
    println!("W1: {rows} rows, 10,000 sensors, 10 s tumbling windows, every window written (CSV)");
    run_table(&cases, rows, "windows", |path| match &oracle {
        Some(o) => compare(o, path),
        None => Ok("-".into()),
    })
}

fn run_spec(input: Input, workers: usize, out: &Path) -> RunSpec {
    let mut spec = RunSpec::new("series_stats", input);
    spec.cluster.workers = workers;
    spec.window = Duration::from_millis(WINDOW_MS as u64);
    spec.end_confirm = Duration::from_millis(300);
    spec.output_dir = Some(out.to_path_buf());
    spec.output_format = OutputFormat::Csv;
    spec
}

fn child(case: &str, file: &Path, rows: u64, dir: &Path) -> Result<()> {
    let out = dir.join(format!("out-{case}"));
    let _ = std::fs::remove_dir_all(&out);
    let (readings, windows, secs) = match case {
        "naive" => naive(file, &out)?,
        c if c.starts_with("file-") => {
            let workers: usize = c[5..].parse()?;
            let t = Instant::now();
            let r = run(run_spec(Input::Csv(spec_csv(file)), workers, &out))?;
            (
                r.metrics.readings_in,
                r.metrics.rows_out,
                t.elapsed().as_secs_f64(),
            )
        }
        c if c.starts_with("broker-") => {
            let workers: usize = c[7..].parse()?;
            through_broker(file, rows, workers, 1, &out)?
        }
        c if c.starts_with("batched-") => {
            let workers: usize = c[8..].parse()?;
            through_broker(file, rows, workers, BATCH, &out)?
        }
        other => bail!("unknown case {other}"),
    };
    let output = if case.starts_with("broker") || case.starts_with("batched") {
        None
    } else {
        Some(out.join("series_stats.csv"))
    };
    println!(
        "{}",
        serde_json::json!({"readings": readings, "windows": windows, "secs": secs, "peak_kb": peak_kb(),
            "output": output.map(|p| p.display().to_string())})
    );
    Ok(())
}

/// Readings per message in the `batched-N` cases.
const BATCH: usize = 500;

fn through_broker(
    file: &Path,
    rows: u64,
    workers: usize,
    batch: usize,
    out: &Path,
) -> Result<(u64, u64, f64)> {
    let broker = EmbeddedBroker::start(1)?;
    broker.create_topic("w1", 8)?;
    let mut input = KafkaInput {
        settings: ClientSettings::new(broker.bootstrap()),
        topic: "w1".into(),
        until_end: false,
        metadata_refresh: Duration::from_secs(5),
        start: streamgauge::kafka::source::StartAt::Beginning,
    };
    input
        .settings
        .overrides
        .push(("fetch.wait.max.ms".into(), "10".into()));
    let spec = run_spec(Input::Kafka(input), workers, out);
    let (metrics, stop) = (spec.metrics.clone(), spec.stop.clone());
    let engine = std::thread::spawn(move || run(spec));
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let sent = produce_w1_paced(broker.bootstrap(), "w1", file, batch, &metrics)?;
    let mut last = Instant::now();
    while metrics.snapshot().readings_in < rows {
        if last.elapsed() > Duration::from_secs(5) {
            last = Instant::now();
            eprintln!(
                "waiting: sent {sent}, consumed {}, late {}",
                metrics.snapshot().readings_in,
                metrics.snapshot().late
            );
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!(
                "only {} of {rows} readings arrived",
                metrics.snapshot().readings_in
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let report = engine
        .join()
        .map_err(|_| anyhow::anyhow!("engine panicked"))??;
    Ok((
        report.metrics.readings_in,
        report.metrics.rows_out,
        t.elapsed().as_secs_f64(),
    ))
}

/// The naive single-threaded loop a user would write first, as a yardstick.
fn naive(file: &Path, out: &Path) -> Result<(u64, u64, f64)> {
    std::fs::create_dir_all(out)?;
    let t = Instant::now();
    let mut w = BufWriter::new(std::fs::File::create(out.join("series_stats.csv"))?);
    writeln!(
        w,
        "series,field,window_start,window_end,count,mean,min,max,std"
    )?;
    let mut open: Windows = HashMap::new();
    let (mut n, mut windows, mut max_ts) = (0u64, 0u64, i64::MIN);
    let flush = |open: &mut Windows, upto: i64, w: &mut BufWriter<std::fs::File>| -> Result<u64> {
        let done: Vec<_> = open
            .keys()
            .filter(|(_, s)| s + WINDOW_MS <= upto)
            .cloned()
            .collect();
        for k in &done {
            let (c, mean, m2, mn, mx) = open.remove(k).expect("present");
            writeln!(
                w,
                "{},value,{},{},{c},{mean},{mn},{mx},{}",
                k.0,
                k.1,
                k.1 + WINDOW_MS,
                (m2 / c as f64).sqrt()
            )?;
        }
        Ok(done.len() as u64)
    };
    for line in BufReader::new(std::fs::File::open(file)?).lines().skip(1) {
        let line = line?;
        let mut parts = line.split(',');
        let (Some(s), Some(ts), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (ts, v): (i64, f64) = (ts.parse()?, v.parse()?);
        n += 1;
        let e = open
            .entry((s.to_string(), ts.div_euclid(WINDOW_MS) * WINDOW_MS))
            .or_insert((0, 0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        e.0 += 1;
        let d = v - e.1;
        e.1 += d / e.0 as f64;
        e.2 += d * (v - e.1);
        e.3 = e.3.min(v);
        e.4 = e.4.max(v);
        if ts > max_ts {
            if (ts - 5000).div_euclid(WINDOW_MS)
                > (max_ts.max(ts - WINDOW_MS) - 5000).div_euclid(WINDOW_MS)
            {
                windows += flush(&mut open, ts - 5000, &mut w)?;
            }
            max_ts = ts;
        }
    }
    windows += flush(&mut open, i64::MAX, &mut w)?;
    w.flush()?;
    Ok((n, windows, t.elapsed().as_secs_f64()))
}

/// The batch oracle over the whole file: group values per window, two-pass statistics.
fn oracle(file: &Path) -> Result<Windows> {
    let mut groups: HashMap<Key, Vec<f64>> = HashMap::new();
    for line in BufReader::new(std::fs::File::open(file)?).lines().skip(1) {
        let line = line?;
        let mut p = line.split(',');
        let (s, ts, v) = (
            p.next().unwrap_or(""),
            p.next().unwrap_or("0"),
            p.next().unwrap_or("0"),
        );
        let ts: i64 = ts.parse()?;
        groups
            .entry((s.to_string(), ts.div_euclid(WINDOW_MS) * WINDOW_MS))
            .or_default()
            .push(v.parse()?);
    }
    Ok(groups
        .into_iter()
        .map(|(k, vs)| {
            let n = vs.len() as f64;
            let mean = vs.iter().sum::<f64>() / n;
            let var = vs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
            let mn = vs.iter().copied().fold(f64::INFINITY, f64::min);
            let mx = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (k, (vs.len() as u64, mean, mn, mx, var.sqrt()))
        })
        .collect())
}

fn compare(oracle: &Windows, output: &Path) -> Result<String> {
    let close =
        |a: f64, b: f64, scale: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(scale);
    let mut seen = 0usize;
    for line in BufReader::new(std::fs::File::open(output)?).lines().skip(1) {
        let line = line?;
        let f: Vec<&str> = line.split(',').collect();
        let key = (f[0].to_string(), f[2].parse::<i64>()?);
        let Some(&(c, mean, mn, mx, std)) = oracle.get(&key) else {
            return Ok(format!("extra {key:?}"));
        };
        let g: Vec<f64> = f[5..9]
            .iter()
            .map(|x| x.parse().unwrap_or(f64::NAN))
            .collect();
        let scale = mn.abs().max(mx.abs());
        if f[4].parse::<u64>()? != c
            || !close(g[0], mean, scale)
            || g[1] != mn
            || g[2] != mx
            || !close(g[3], std, scale)
        {
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
