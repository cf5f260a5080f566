//! What the live dashboard costs: `sensor_outliers` over the W1 file (10,000 sensors) on 2
//! workers, without forecasts, with forecasts (the default), with the hub fed (consistent
//! frames, bounded histories: 5,000 series x 300 points by default), and with the hub plus a
//! page following 4 series over server-sent events. The `cluster` cases run two processes of
//! the given workers each (as threads of one child process, over loopback TCP, as two
//! processes on one machine would): `cluster-plain` without a dashboard, `cluster` with
//! process 0's hub showing the whole cluster (every update crosses to worker 0).
//!
//! ```text
//! cargo bench --bench dashboard -- [--rows 2000000] [--cases noforecast-2,hub-noforecast-2,plain-2,hub-2,hub-sse-2,cluster-plain-1,cluster-1]
//! ```
//!
//! Each case runs in a child process and reports readings/s, wall time and peak RSS (the
//! process's high-water mark: input, dataflow state and hub together).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;

use anyhow::{bail, Result};
use streamgauge::dashboard::{Dashboard, DashboardOptions, Hub, HubConfig};
use streamgauge::engine::{run, Input, RunSpec};

mod common;
use common::{arg, peak_kb, run_table, spec_csv, w1_file};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows").map_or(Ok(2_000_000), |s| s.parse())?;
    let (_dir, file) = w1_file(rows)?;
    if let Some(case) = arg(&args, "--case") {
        return child(&case, &file);
    }
    let cases = arg(&args, "--cases").unwrap_or_else(|| {
        "noforecast-2,hub-noforecast-2,plain-2,hub-2,hub-sse-2,cluster-plain-1,cluster-1".into()
    });
    println!("dashboard cost: sensor_outliers over W1, {rows} rows, 10,000 sensors");
    run_table(&cases, rows, "rows_out", |_| Ok("-".into()))
}

fn child(case: &str, file: &std::path::Path) -> Result<()> {
    let (name, workers) = case.rsplit_once('-').unwrap_or((case, "2"));
    let mut spec = RunSpec::new("sensor_outliers", Input::Csv(spec_csv(file)));
    spec.cluster.workers = workers.parse()?;
    let mut _dash = None;
    let mut shown: Option<std::sync::Arc<Hub>> = None;
    let mut follower = None;
    match name {
        "noforecast" => spec.horizon = 0,
        "plain" => {}
        "hub" | "hub-sse" | "hub-noforecast" => {
            if name == "hub-noforecast" {
                spec.horizon = 0;
            }
            let hub = Hub::new(HubConfig::default());
            spec.hub = Some((hub.clone(), String::new()));
            shown = Some(hub.clone());
            if name == "hub-sse" {
                let d = Dashboard::start(
                    &DashboardOptions {
                        addr: "127.0.0.1:0".parse()?,
                        explicit: true,
                        token: None,
                        hub: hub.config(),
                    },
                    hub,
                )?;
                let addr = d.addr();
                follower = Some(std::thread::spawn(move || -> Result<u64> {
                    let mut s = TcpStream::connect(addr)?;
                    let keys = "key=s00000%2Fvalue&key=s00001%2Fvalue&key=s00002%2Fvalue&key=s00003%2Fvalue";
                    write!(
                        s,
                        "GET /events?{keys} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    )?;
                    let mut frames = 0;
                    for line in BufReader::new(s).lines() {
                        if line?.starts_with("event: frame") {
                            frames += 1;
                        }
                    }
                    Ok(frames)
                }));
                _dash = Some(d);
            }
        }
        "cluster" | "cluster-plain" => {
            if name == "cluster" {
                spec.hub = Some((Hub::new(HubConfig::default()), String::new()));
            }
            return cluster(spec);
        }
        other => bail!("unknown case {other}"),
    }
    let t = Instant::now();
    let r = run(spec)?;
    let secs = t.elapsed().as_secs_f64();
    drop(_dash);
    let frames = follower
        .map(|f| f.join().map_err(|_| anyhow::anyhow!("follower panicked"))?)
        .transpose()?;
    // What the hub shows at the end: series held, their mean points, readings not charted.
    let charted = shown.map(|hub| {
        let held = hub.series("", usize::MAX);
        let points: usize = held.iter().map(|s| s.points).sum();
        serde_json::json!({"series": held.len(),
            "mean_points": points as f64 / held.len().max(1) as f64,
            "uncharted": hub.overview().uncharted})
    });
    println!(
        "{}",
        serde_json::json!({"readings": r.metrics.readings_in, "rows_out": r.metrics.rows_out,
            "secs": secs, "peak_kb": peak_kb(), "frames": frames, "charted": charted})
    );
    Ok(())
}

/// Runs `spec` as both processes of a two-process cluster on loopback (process 0 keeps its
/// hub, if any) and prints the cluster's totals.
fn cluster(spec: RunSpec) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let hosts = dir.path().join("hosts");
    let port = || -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", port()?, port()?),
    )?;
    let t = Instant::now();
    let members: Vec<_> = (0..2)
        .map(|p| {
            let mut s = spec.clone();
            if p > 0 {
                s.hub = None;
            }
            s.metrics = Default::default();
            s.cluster.processes = 2;
            s.cluster.process = p;
            s.cluster.hostfile = Some(hosts.clone());
            std::thread::spawn(move || run(s))
        })
        .collect();
    let (mut readings, mut rows) = (0, 0);
    for m in members {
        let r = m
            .join()
            .map_err(|_| anyhow::anyhow!("a cluster process panicked"))??;
        readings += r.metrics.readings_in;
        rows += r.metrics.rows_out;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"readings": readings, "rows_out": rows,
            "secs": secs, "peak_kb": peak_kb(), "frames": null})
    );
    Ok(())
}
