//! What a collector's path into Kafka costs, over the 58 NAB series read through their
//! manifest (the file collector's loader): per reading, the shared cleaning (parse checks,
//! units, duplicate memory) and the hand-off to Kafka (the embedded broker).
//!
//! ```text
//! cargo bench --bench collect -- [--cases clean,kafka,spool]
//! ```
//!
//! - `clean`: the cleaner alone (no Kafka);
//! - `kafka`: cleaning and producing, broker up, until every record is acknowledged;
//! - `spool`: broker down, a memory queue of 10,000 records, the rest to the disk spool; then
//!   the broker comes back and `drain readings/s` is how fast the spool empties into Kafka.
//!
//! Each case runs in a child process; it reports readings/s, the latency of one `offer`
//! (clean + hand-off: p50, p99, p99.9, max) and peak RSS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use streamgauge::collect::clean::{Cleaner, Counters};
use streamgauge::collect::file::FileConfig;
use streamgauge::collect::spool::SpoolConfig;
use streamgauge::collect::Sink;
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::ClientSettings;

mod common;
use common::{arg, peak_kb};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(case) = arg(&args, "--case") {
        return child(&case);
    }
    let cases = arg(&args, "--cases").unwrap_or_else(|| "clean,kafka,spool".into());
    println!("collector path: the 58 NAB series through the shared cleaning into Kafka");
    println!(
        "{:<7} {:>9} {:>12} {:>9} {:>9} {:>10} {:>10} {:>10} {:>17}",
        "case",
        "readings",
        "readings/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "RSS MiB",
        "drain readings/s"
    );
    for case in cases.split(',') {
        let exe = std::env::current_exe()?;
        let out = std::process::Command::new(&exe)
            .args(["--case", case])
            .output()?;
        if !out.status.success() {
            bail!("case {case}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        println!(
            "{:<7} {:>9} {:>12.0} {:>9.1} {:>9.1} {:>10.1} {:>10.0} {:>10.1} {:>17}",
            case,
            v["readings"],
            v["per_s"].as_f64().unwrap_or(0.0),
            v["p50"].as_f64().unwrap_or(0.0),
            v["p99"].as_f64().unwrap_or(0.0),
            v["p999"].as_f64().unwrap_or(0.0),
            v["max"].as_f64().unwrap_or(0.0),
            v["peak_kb"].as_f64().unwrap_or(0.0) / 1024.0,
            v["drain_per_s"]
                .as_f64()
                .map_or("-".to_string(), |d| format!("{d:.0}")),
        );
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn child(case: &str) -> Result<()> {
    let data = std::env::var_os("STREAMGAUGE_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets")
        });
    let cfg: FileConfig = toml::from_str(&format!(
        "name = \"nab\"\ndataset = \"nab\"\ndata_dir = {:?}\nkafka_topic = \"nab\"\n",
        data.display().to_string()
    ))?;
    let loaded = cfg.load().map_err(anyhow::Error::msg)?;
    let cands: Vec<_> = loaded.readings.iter().map(|r| cfg.candidate(r)).collect();
    let payloads: Vec<Vec<u8>> = loaded
        .readings
        .iter()
        .map(|r| {
            let mut b = Vec::new();
            streamgauge::record::WireFormat::Json.encode(r, &mut b);
            b
        })
        .collect();
    let mut lat = Vec::with_capacity(cands.len());
    let mut drain_per_s = None;
    let start = Instant::now();
    match case {
        "clean" => {
            let mut c = Cleaner::new(Default::default()).map_err(anyhow::Error::msg)?;
            for (cand, p) in cands.into_iter().zip(&payloads) {
                let t = Instant::now();
                std::hint::black_box(c.clean("nab", p, Ok(cand)));
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        "kafka" | "spool" => {
            let broker = EmbeddedBroker::start(1)?;
            broker.create_topic("nab", 4)?;
            broker.create_topic("nab.quarantine", 1)?;
            let mut kafka = ClientSettings::new(broker.bootstrap());
            let dir = tempfile::tempdir()?;
            let spool = (case == "spool").then(|| SpoolConfig {
                dir: dir.path().to_path_buf(),
                max_mb: 4096,
            });
            if case == "spool" {
                kafka.overrides = vec![
                    ("queue.buffering.max.messages".into(), "10000".into()),
                    ("message.timeout.ms".into(), "600000".into()),
                ];
                broker.broker_down(1)?;
            }
            let mut sink = Sink::new(
                "nab",
                &Default::default(),
                &kafka,
                "nab",
                Arc::new(Counters::default()),
                spool.as_ref(),
            )?;
            for (cand, p) in cands.into_iter().zip(&payloads) {
                let t = Instant::now();
                sink.offer("nab", p, Ok(cand))?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            if case == "spool" {
                let spooled = sink.spooled();
                let offered = start.elapsed();
                broker.broker_up(1)?;
                let t = Instant::now();
                while sink.spooled() > 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                sink.finish()?;
                drain_per_s = Some(spooled as f64 / t.elapsed().as_secs_f64());
                let n = lat.len() as f64;
                return report(lat, n / offered.as_secs_f64(), drain_per_s);
            }
            sink.finish()?;
        }
        other => bail!("unknown case {other}: use clean, kafka or spool"),
    }
    let n = lat.len() as f64;
    report(lat, n / start.elapsed().as_secs_f64(), drain_per_s)
}

fn report(mut lat: Vec<f64>, per_s: f64, drain_per_s: Option<f64>) -> Result<()> {
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "readings": lat.len(),
            "per_s": per_s,
            "p50": percentile(&lat, 0.5),
            "p99": percentile(&lat, 0.99),
            "p999": percentile(&lat, 0.999),
            "max": lat.last().copied().unwrap_or(0.0),
            "peak_kb": peak_kb(),
            "drain_per_s": drain_per_s,
        })
    );
    Ok(())
}
