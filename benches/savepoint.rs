//! What a savepoint costs (`run --savepoint`): per dataflow and worker count, W1 (10,000
//! sensors) produced into the embedded broker while a live run reads it (the embedded broker
//! keeps only the newest part of a long partition, so a topic is read as it is written), the
//! run stopped once it has read everything, without and with a savepoint (the time from the stop to the run's end, which
//! with a savepoint includes writing it), the savepoint's size, and a run that resumes from
//! it and reads nothing more (the time to load it, on top of a Kafka run's fixed start and
//! end costs).
//!
//! Then what checkpoints cost (`run --checkpoint-every`): the same live runs, read to the
//! end without checkpoints and with one every `T` of event time (W1 has 1,000 readings a
//! second of event time, so 2 million rows are 2,000 s), as readings per second (the median
//! of `--rounds` runs of each, the settings taking turns, after a first run not counted:
//! the first run of a process was up to 1.6x slower than the same run after it), with the
//! number of checkpoints written (in the last round) and the newest one's size. With `--results`, those runs
//! also send their rows to result topics (`<topic>.<output>`), where a sink waits at each
//! barrier for Kafka to acknowledge the rows before it.
//!
//! ```text
//! cargo bench --bench savepoint -- [--rows 2000000] [--flows anomaly,zscore,sessions,series_stats] [--workers 1,2]
//!     [--checkpoint-flows anomaly,zscore,series_stats] [--checkpoints 500s,100s] [--results]
//!     [--rounds 3]
//! ```

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use streamgauge::engine::savepoint::CheckpointsWritten;
use streamgauge::engine::{run, Input, RunReport, RunSpec};
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::source::{KafkaInput, StartAt};
use streamgauge::kafka::ClientSettings;

mod common;
use common::{arg, produce_w1_paced, w1_file};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows").map_or(Ok(2_000_000), |s| s.parse())?;
    let flows =
        arg(&args, "--flows").unwrap_or_else(|| "anomaly,zscore,sessions,series_stats".into());
    let workers = arg(&args, "--workers").unwrap_or_else(|| "1,2".into());
    let (dir, w1) = w1_file(rows)?;
    let broker = EmbeddedBroker::start(1)?;
    let b = broker.bootstrap();
    println!("savepoints over W1, {rows} rows, 10,000 sensors, embedded broker");
    println!(
        "| dataflow | workers | stop to end, no savepoint | stop to end, savepoint | savepoint size | states | held readings | resume run (loads it, reads nothing) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for flow in flows.split(',').filter(|f| !f.is_empty()) {
        for w in workers.split(',') {
            let w: usize = w.parse()?;
            let plain_topic = format!("w1-{flow}-{w}-plain");
            broker.create_topic(&plain_topic, 8)?;
            let (plain, _) = stopped(b, &plain_topic, (flow, w), (&w1, rows), None)?;
            let topic = format!("w1-{flow}-{w}");
            broker.create_topic(&topic, 8)?;
            let sp = dir.join(format!("savepoint-{flow}-{w}"));
            let _ = std::fs::remove_dir_all(&sp);
            let (saving, report) = stopped(b, &topic, (flow, w), (&w1, rows), Some(&sp))?;
            let Some(written) = report.savepoint else {
                bail!("{flow}: no savepoint written");
            };
            let (bytes, held, states) = (written.bytes, written.held, written.states);
            let t = Instant::now();
            let mut spec = live(b, &topic, flow, w, Some(&sp));
            if let Input::Kafka(k) = &mut spec.input {
                k.until_end = true;
            }
            let resumed = run(spec)?;
            let resume = t.elapsed();
            if resumed.resumed_from.as_ref() != Some(&written.dir)
                || resumed.metrics.readings_in != 0
            {
                bail!("{flow}: the resume run did not resume from the end");
            }
            println!(
                "| {flow} | {w} | {:.0} ms | {:.0} ms | {:.1} MB ({:.0} bytes a state) | {states} | {held} | {:.0} ms |",
                plain.as_secs_f64() * 1e3,
                saving.as_secs_f64() * 1e3,
                bytes as f64 / 1e6,
                bytes as f64 / states.max(1) as f64,
                resume.as_secs_f64() * 1e3,
            );
        }
    }
    let flows =
        arg(&args, "--checkpoint-flows").unwrap_or_else(|| "anomaly,zscore,series_stats".into());
    let every = arg(&args, "--checkpoints").unwrap_or_else(|| "500s,100s".into());
    let results = args.iter().any(|a| a == "--results");
    let rounds: usize = arg(&args, "--rounds").map_or(Ok(3), |s| s.parse())?;
    println!();
    println!(
        "checkpoints over W1, {rows} rows ({} s of event time){}; median of {rounds} rounds, \
         the settings taking turns within a round, after one run not counted",
        rows / 1000,
        if results {
            ", rows also to result topics"
        } else {
            ""
        }
    );
    println!("| dataflow | workers | checkpoint every | readings/s | against none | checkpoints | newest |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let settings: Vec<&str> = std::iter::once("none").chain(every.split(',')).collect();
    let mut n = 0;
    for flow in flows.split(',').filter(|f| !f.is_empty()) {
        for w in workers.split(',') {
            let w: usize = w.parse()?;
            // One run of each setting per round; the first run of a process is slower (the
            // broker and the allocator warm up), so one more goes first and is not counted.
            let mut rates: Vec<Vec<f64>> = vec![Vec::new(); settings.len()];
            let mut written = vec![CheckpointsWritten::default(); settings.len()];
            for round in 0..=rounds {
                for (i, t) in settings.iter().enumerate() {
                    if round == 0 && i > 0 {
                        continue;
                    }
                    n += 1;
                    let topic = format!("w1-cp-{flow}-{w}-{n}");
                    broker.create_topic(&topic, 8)?;
                    let sp = dir.join(format!("checkpoints-{flow}-{w}-{n}"));
                    let _ = std::fs::remove_dir_all(&sp);
                    let mut spec = live(b, &topic, flow, w, (*t != "none").then_some(sp.as_path()));
                    if *t != "none" {
                        spec.checkpoint_every = Some(streamgauge::duration::parse_duration(t)?);
                    }
                    if results {
                        for o in [flow, "late", "quarantine"] {
                            broker.create_topic(&format!("{topic}.{o}"), 8)?;
                        }
                        spec.result_topics = Some((ClientSettings::new(b), topic.clone()));
                    }
                    let (rate, report) = read_all(b, &topic, spec, (&w1, rows))?;
                    let _ = std::fs::remove_dir_all(&sp);
                    if round > 0 {
                        rates[i].push(rate);
                        written[i] = report.checkpoints;
                    }
                }
            }
            let median = |r: &mut Vec<f64>| {
                r.sort_by(f64::total_cmp);
                r[r.len() / 2]
            };
            let base = median(&mut rates[0]);
            for (i, t) in settings.iter().enumerate() {
                let rate = median(&mut rates[i]);
                let c = &written[i];
                println!(
                    "| {flow} | {w} | {t} | {rate:.0} | {:.2}x | {}{} | {:.1} MB |",
                    rate / base,
                    c.count,
                    if c.failed > 0 {
                        format!(" ({} failed)", c.failed)
                    } else {
                        String::new()
                    },
                    c.last_bytes as f64 / 1e6,
                );
            }
        }
    }
    Ok(())
}

/// Runs `spec` live while the `rows` readings of W1 are produced into `topic`, stops it once
/// it has read them all; returns readings per second from the start to then, and the report.
fn read_all(
    brokers: &str,
    topic: &str,
    spec: RunSpec,
    (w1, rows): (&Path, u64),
) -> Result<(f64, RunReport)> {
    let (metrics, stop) = (spec.metrics.clone(), spec.stop.clone());
    let t0 = Instant::now();
    let engine = std::thread::spawn(move || run(spec));
    produce_w1_paced(brokers, topic, w1, 500, &metrics)?;
    while metrics.snapshot().readings_in < rows {
        if t0.elapsed() > Duration::from_secs(900) {
            bail!("only {} of {rows} read", metrics.snapshot().readings_in);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let rate = rows as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let report = engine
        .join()
        .map_err(|_| anyhow::anyhow!("engine panicked"))??;
    Ok((rate, report))
}

/// A live run of `flow` on `w` workers over `topic`.
fn live(brokers: &str, topic: &str, flow: &str, w: usize, savepoint: Option<&Path>) -> RunSpec {
    let input = KafkaInput {
        settings: ClientSettings::new(brokers),
        topic: topic.into(),
        until_end: false,
        metadata_refresh: Duration::from_secs(5),
        start: StartAt::Beginning,
    };
    let mut spec = RunSpec::new(flow, Input::Kafka(input));
    spec.cluster.workers = w;
    spec.end_confirm = Duration::from_millis(100);
    spec.savepoint = savepoint.map(Path::to_path_buf);
    spec
}

/// Runs `flow` live on `w` workers over `topic` while the `rows` readings of W1 are
/// produced into it (at most 100,000 ahead of the run), stops it once it has read them all,
/// and returns the time from the stop to the run's end, with the report.
fn stopped(
    brokers: &str,
    topic: &str,
    (flow, w): (&str, usize),
    (w1, rows): (&Path, u64),
    savepoint: Option<&Path>,
) -> Result<(Duration, RunReport)> {
    let spec = live(brokers, topic, flow, w, savepoint);
    let (metrics, stop) = (spec.metrics.clone(), spec.stop.clone());
    let engine = std::thread::spawn(move || run(spec));
    let t0 = Instant::now();
    produce_w1_paced(brokers, topic, w1, 500, &metrics)?;
    while metrics.snapshot().readings_in < rows {
        if t0.elapsed() > Duration::from_secs(600) {
            bail!(
                "{flow}: only {} of {rows} read",
                metrics.snapshot().readings_in
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let report = engine
        .join()
        .map_err(|_| anyhow::anyhow!("engine panicked"))??;
    Ok((t.elapsed(), report))
}
