//! `replay`: stream a dataset into Kafka in event-time order, paced at `max`, `1x` or `Nx`
//! (60x = one hour of data per minute), with a progress line and final counts.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{DatasetFlags, KafkaFlags};
use crate::config::Settings;
use crate::kafka::producer::ReadingProducer;
use crate::kafka::ClientSettings;
use crate::record::Reading;

/// `replay` flags.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Dataset: a manifest name (`nab`, `nab:machine_temperature`) or a CSV path.
    pub dataset: String,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaFlags,
    /// Topic to produce into (created if missing; quarantined rows go to `<topic>.quarantine`).
    #[arg(long)]
    pub topic: String,
    /// Pace: max, 1x, 60x, 0.5x ...
    #[arg(long, default_value = "max")]
    pub speed: String,
    /// Partitions when the topic is created.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Readings per Kafka message: 1 sends one reading per message; N > 1 batches up to N
    /// readings of one partition per message, one per line (much less per-message overhead;
    /// streamgauge consumers read both).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Dataset location and CSV columns.
    #[command(flatten)]
    pub data: DatasetFlags,
}

pub use crate::dataset::Speed;

/// Counts of a finished replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Data rows read.
    pub rows: u64,
    /// Readings produced.
    pub produced: u64,
    /// Rows quarantined.
    pub quarantined: u64,
}

/// Executes `replay`.
pub fn run(a: ReplayArgs, settings: &Settings) -> Result<ReplayReport> {
    // Ctrl-C ends the replay early, with what was produced flushed and counted.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    super::interrupt::stop_on_signal(&stop);
    let speed: Speed = a.speed.parse().map_err(anyhow::Error::msg)?;
    let Some(kafka) = a.kafka.settings(settings)? else {
        bail!("replay needs --brokers (or STREAMGAUGE_BROKERS)")
    };
    let loaded = a.data.load(&a.dataset, settings)?;
    crate::kafka::admin::ensure_topic(&kafka, &a.topic, a.partitions)?;
    let report = produce(
        &kafka,
        &a.topic,
        &loaded.readings,
        &loaded.quarantined,
        Pace {
            speed,
            batch: a.batch as usize,
        },
        Some(&stop),
        None,
    )?;
    eprintln!(
        "replay {}: {} rows read, {} produced, {} quarantined (into {}.quarantine)",
        a.dataset, loaded.rows, report.produced, report.quarantined, a.topic
    );
    Ok(ReplayReport {
        rows: loaded.rows,
        ..report
    })
}

/// How a replay produces: its pace, and readings per message.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Event-time pace.
    pub speed: Speed,
    /// Readings per Kafka message (1: one per message).
    pub batch: usize,
}

/// Produces readings (already in event-time order) at `pace`, and quarantined rows to
/// `<topic>.quarantine`. `stop` ends it early; `progress` counts produced readings live.
pub fn produce(
    kafka: &ClientSettings,
    topic: &str,
    readings: &[Reading],
    quarantined: &[crate::quarantine::Quarantined],
    pace: Pace,
    stop: Option<&std::sync::atomic::AtomicBool>,
    progress: Option<&std::sync::atomic::AtomicU64>,
) -> Result<ReplayReport> {
    let speed = pace.speed;
    let mut p = ReadingProducer::batched(kafka, topic, pace.batch)?;
    for q in quarantined {
        p.quarantine(q)?;
    }
    // Progress goes to stderr only for a user-facing replay (no live counter given).
    let tty = progress.is_none() && std::io::stderr().is_terminal();
    let quiet = progress.is_some();
    let start = Instant::now();
    let first_ts = readings.first().map_or(0, |r| r.ts);
    let mut last_report = Instant::now();
    let mut produced = 0u64;
    for r in readings {
        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            break;
        }
        if let Speed::Factor(f) = speed {
            let due = Duration::from_secs_f64(((r.ts - first_ts).max(0) as f64 / 1000.0) / f);
            let elapsed = start.elapsed();
            if due > elapsed {
                p.send_due().context("producing")?;
                // In short naps, so a stop is seen during a long pause in the data.
                let stopped = || stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
                while !stopped() && due > start.elapsed() {
                    std::thread::sleep(
                        due.saturating_sub(start.elapsed())
                            .min(Duration::from_millis(100)),
                    );
                }
                if stopped() {
                    break;
                }
            }
        }
        p.send(r).context("producing")?;
        produced += 1;
        if let Some(c) = progress {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if !quiet && last_report.elapsed() >= Duration::from_millis(if tty { 200 } else { 5000 }) {
            last_report = Instant::now();
            let pct = 100.0 * produced as f64 / readings.len().max(1) as f64;
            let bar = "#".repeat((pct / 5.0) as usize);
            if tty {
                eprint!(
                    "\r[{bar:<20}] {pct:5.1}% {produced}/{} readings",
                    readings.len()
                );
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("replay {topic}: {pct:.1}% ({produced}/{})", readings.len());
            }
        }
    }
    p.flush(Duration::from_secs(60))?;
    if tty {
        eprintln!();
    }
    Ok(ReplayReport {
        rows: (readings.len() + quarantined.len()) as u64,
        produced,
        quarantined: quarantined.len() as u64,
    })
}
