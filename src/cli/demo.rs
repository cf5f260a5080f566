//! `demo`: the whole path in one process on embedded defaults: an embedded Kafka-protocol
//! broker, a live sensor generator (event time = wall clock) and, when found, real datasets
//! replayed at a high speed, each into its own topic; the demo's dataflows on each topic
//! on 2 workers; and a live one-screen summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Args;

use super::replay::{produce, Speed};
use crate::config::Settings;
use crate::dataset::generate::{Outages, SensorStream};
use crate::duration::HumanDuration;
use crate::engine::metrics::Snapshot;
use crate::engine::{self, Input, Metrics, RunSpec};
use crate::kafka::broker::EmbeddedBroker;
use crate::kafka::producer::ReadingProducer;
use crate::kafka::source::KafkaInput;
use crate::kafka::ClientSettings;

/// Dataflows the demo runs on every topic (the first one's counters are on the screen).
pub const DEMO_DATAFLOWS: [&str; 2] = ["series_stats", "sensor_outliers"];

/// `demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this long (default: until interrupted).
    #[arg(long)]
    pub duration: Option<HumanDuration>,
    /// Worker threads.
    #[arg(short = 'w', long = "workers", default_value_t = 2)]
    pub workers: usize,
    /// Simulated sensors.
    #[arg(long, default_value_t = 1000)]
    pub sensors: u32,
    /// Generated readings per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// State TTL of the dataflows on the live sensors: a sensor quiet this long (event time)
    /// is reported silent (one sensor in 50 has 40-second outages every 3 minutes).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::state_ttl)]
    pub sensor_ttl: HumanDuration,
    /// Do not replay the real datasets.
    #[arg(long)]
    pub no_datasets: bool,
    /// Pace of the dataset replay (86400x = one day of data per second).
    #[arg(long, default_value = "86400x")]
    pub dataset_speed: String,
    /// Directory that holds the datasets.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also write results to files under this directory (one folder per topic).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Also run the collectors of this config file (`[[mqtt]]`, `[[modbus]]` ... tables) into the embedded
    /// broker, and the demo's dataflows on their topics.
    #[arg(long, value_name = "FILE")]
    pub collect: Option<PathBuf>,
    /// The live dashboard.
    #[command(flatten)]
    pub dashboard: crate::dashboard::DashboardArgs,
}

/// The live sensors' topic.
const SENSOR_TOPIC: &str = "demo.sensors";
/// The level over which a live sensor's reading is a spike (they read 20 +- 5 and noise, and
/// one reading in 2,000 is 30 higher): the demo's `sessions` pipeline lists each as an
/// excursion.
const SPIKE_LEVEL: f64 = 40.0;

/// Datasets the demo replays when present.
const DEMO_DATASETS: &[(&str, &str)] = &[
    (
        "nab:machine_temperature_system_failure",
        "demo.nab_machine_temp",
    ),
    ("gas_turbine_emission_hourly", "demo.gas_turbine"),
];

struct Pipeline {
    topic: String,
    metrics: Arc<Metrics>,
}

/// Executes `demo`.
pub fn run(a: DemoArgs, settings: &Settings) -> Result<()> {
    let speed: Speed = a.dataset_speed.parse().map_err(anyhow::Error::msg)?;
    if a.workers == 0 || a.sensors == 0 || a.rate == 0 {
        anyhow::bail!("--workers, --sensors and --rate must be at least 1");
    }
    let dashboard = a.dashboard.start()?;
    let broker = EmbeddedBroker::start(1)?;
    let kafka = ClientSettings::new(broker.bootstrap());
    eprintln!(
        "embedded Kafka-protocol broker (development only, in memory) at {}",
        broker.bootstrap()
    );
    let stop_inputs = Arc::new(AtomicBool::new(false));
    let stop_runs = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut pipelines = Vec::new();

    // Live sensors: event time is the wall clock.
    broker.create_topic(SENSOR_TOPIC, 8)?;
    let sensors = Pipeline {
        topic: SENSOR_TOPIC.into(),
        metrics: Arc::new(Metrics::default()),
    };
    {
        let (kafka, stop, metrics) = (kafka.clone(), stop_inputs.clone(), sensors.metrics.clone());
        let (n, rate) = (a.sensors, a.rate);
        threads.push(thread::spawn(move || -> Result<()> {
            let mut p = ReadingProducer::new(&kafka, SENSOR_TOPIC)?;
            let step_ms = ((n as u64 * 1000) / rate).max(1) as i64;
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
            let start = Instant::now();
            let mut stream = SensorStream::new(n, now_ms, step_ms, 42).with_outages(Outages::DEMO);
            let mut round = Vec::with_capacity(n as usize);
            while !stop.load(Ordering::Relaxed) {
                let round_ts = stream.ts;
                round.clear();
                stream.next_round(&mut round);
                for r in &round {
                    p.send(r)?;
                }
                Metrics::add(&metrics.produced, round.len() as u64);
                let due = Duration::from_millis((round_ts + step_ms - now_ms) as u64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    thread::sleep(wait);
                }
            }
            Ok(())
        }));
    }
    pipelines.push(sensors);

    // Real datasets, each into its own topic (their event times are years apart), replayed fast.
    if !a.no_datasets {
        let flags = super::DatasetFlags {
            data_dir: a.data_dir.clone(),
            time_col: "ts_ms".into(),
            time_format: "epoch_ms".into(),
            time_zone: "UTC".into(),
            series_col: "sensor_id".into(),
            value_cols: vec!["value".into()],
        };
        for (d, topic) in DEMO_DATASETS {
            let l = match flags.load(d, settings) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("dataset {d} skipped: {e}");
                    continue;
                }
            };
            eprintln!(
                "dataset {d}: {} readings, {} quarantined -> {topic}",
                l.readings.len(),
                l.quarantined.len()
            );
            // As many partitions as series (up to 4): no partition sits silent holding the frontier.
            let series: std::collections::HashSet<&str> =
                l.readings.iter().map(|r| &*r.series).collect();
            broker.create_topic(topic, series.len().clamp(1, 4) as i32)?;
            let pipe = Pipeline {
                topic: topic.to_string(),
                metrics: Arc::new(Metrics::default()),
            };
            let (kafka, stop, metrics) = (kafka.clone(), stop_inputs.clone(), pipe.metrics.clone());
            threads.push(thread::spawn(move || -> Result<()> {
                let r = produce(
                    &kafka,
                    topic,
                    &l.readings,
                    &l.quarantined,
                    super::replay::Pace { speed, batch: 1 },
                    Some(&stop),
                    Some(&metrics.produced),
                )?;
                tracing::info!(topic, produced = r.produced, "dataset replay done");
                Ok(())
            }));
            pipelines.push(pipe);
        }
    }

    // Collectors from a config file, into the embedded broker.
    let collectors = match &a.collect {
        Some(file) => {
            let c = Settings::load(Some(file))?.collectors;
            if c.is_empty() {
                anyhow::bail!(
                    "--collect {}: no collectors ([[mqtt]], [[modbus]], [[http]] ... tables) in it",
                    file.display()
                );
            }
            for t in c.topics() {
                broker.create_topic(&t, 4)?;
                broker.create_topic(&format!("{t}.quarantine"), 1)?;
                eprintln!("collectors -> {t}");
                pipelines.push(Pipeline {
                    topic: t,
                    metrics: Arc::new(Metrics::default()),
                });
            }
            let running = crate::collect::start(&c, &kafka)?;
            if let Some((hub, _)) = &dashboard {
                for (name, kind, counters) in running.entries() {
                    hub.add_collector(&name, kind, counters);
                }
            }
            Some(running)
        }
        None => None,
    };

    // The demo's dataflows on every topic: windows (whose counters the screen shows) and the
    // live outlier set.
    let mut runs = Vec::new();
    for p in &pipelines {
        for name in DEMO_DATAFLOWS {
            let d = crate::dataflows::find(name)?;
            let input = Input::Kafka(KafkaInput {
                settings: kafka.clone(),
                topic: p.topic.to_string(),
                until_end: false,
                metadata_refresh: Duration::from_secs(5),
                start: crate::kafka::source::StartAt::Beginning,
            });
            let mut spec = RunSpec::new(d.name(), input);
            spec.cluster.workers = a.workers;
            spec.window = settings.window;
            spec.lateness = settings.lateness;
            spec.idle_timeout = settings.idle_timeout;
            // Live sensors expire after a short silence; datasets (hours between readings)
            // keep the configured TTL.
            spec.state_ttl = if p.topic == SENSOR_TOPIC {
                Some(a.sensor_ttl.0)
            } else {
                settings.state_ttl
            };
            spec.output_dir = a.output.as_ref().map(|o| o.join(&p.topic));
            spec.result_topics = Some((kafka.clone(), p.topic.to_string()));
            spec.undelivered = Some(undelivered_file(&a, &p.topic, d.name()));
            // The screen counts the first dataflow's readings; the others count their own.
            spec.metrics = if d.name() == DEMO_DATAFLOWS[0] {
                p.metrics.clone()
            } else {
                Arc::default()
            };
            spec.stop = stop_runs.clone();
            spec.hub = dashboard
                .as_ref()
                .map(|(h, _)| (h.clone(), format!("{}/{}", p.topic, d.name())));
            runs.push(thread::spawn(move || engine::run(spec)));
        }
    }
    // Spikes on the live sensors as excursions (the Sessions view): readings over
    // SPIKE_LEVEL, each ended by the next ordinary reading.
    {
        let input = Input::Kafka(KafkaInput {
            settings: kafka.clone(),
            topic: SENSOR_TOPIC.to_string(),
            until_end: false,
            metadata_refresh: Duration::from_secs(5),
            start: crate::kafka::source::StartAt::Beginning,
        });
        let mut spec = RunSpec::new("sessions", input);
        spec.cluster.workers = 1;
        spec.lateness = settings.lateness;
        spec.idle_timeout = settings.idle_timeout;
        spec.sessions = crate::dataflows::sessions::SessionParams {
            gap_ms: 10_000,
            above: Some(SPIKE_LEVEL),
            ..Default::default()
        };
        spec.output_dir = a.output.as_ref().map(|o| o.join(SENSOR_TOPIC));
        spec.result_topics = Some((kafka.clone(), SENSOR_TOPIC.to_string()));
        spec.undelivered = Some(undelivered_file(&a, SENSOR_TOPIC, "sessions"));
        spec.stop = stop_runs.clone();
        spec.hub = dashboard
            .as_ref()
            .map(|(h, _)| (h.clone(), format!("{SENSOR_TOPIC}/spikes")));
        runs.push(thread::spawn(move || engine::run(spec)));
    }

    super::interrupt::install();
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last: Vec<Snapshot> = pipelines.iter().map(|p| p.metrics.snapshot()).collect();
    let mut last_t = Instant::now();
    loop {
        thread::sleep(Duration::from_secs(1));
        let dt = last_t.elapsed().as_secs_f64();
        last_t = Instant::now();
        let mut screen = String::new();
        if tty {
            screen.push_str("\x1b[2J\x1b[H");
        }
        screen.push_str(&format!(
            "streamgauge demo  t={:>4.0}s  workers={}  window={}{}\n",
            started.elapsed().as_secs_f64(),
            a.workers,
            HumanDuration(settings.window),
            dashboard
                .as_ref()
                .map(|(_, d)| format!("  dashboard http://{}/", d.addr()))
                .unwrap_or_default()
        ));
        screen.push_str(&format!(
            "{:<22} {:>11} {:>11} {:>9} {:>11} {:>12} {:>7} {:>11}\n",
            "topic",
            "produced/s",
            "in/s",
            "out/s",
            "windows out",
            "open windows",
            "late",
            "quarantined"
        ));
        for (i, p) in pipelines.iter().enumerate() {
            let s = p.metrics.snapshot();
            let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt;
            screen.push_str(&format!(
                "{:<22} {:>11.0} {:>11.0} {:>9.0} {:>11} {:>12} {:>7} {:>11}\n",
                p.topic,
                rate(s.produced, last[i].produced),
                rate(s.readings_in, last[i].readings_in),
                rate(s.rows_out, last[i].rows_out),
                s.rows_out,
                s.open_windows,
                s.late,
                s.quarantined
            ));
            last[i] = s;
        }
        if let Some((hub, _)) = &dashboard {
            let o = hub.overview();
            screen.push_str(&format!(
                "dashboard: {} series, {} in the outlier set, {} silent (stopped reporting)\n",
                o.series, o.outliers, o.silent
            ));
        }
        print!("{screen}");
        if a.duration.is_some_and(|d| started.elapsed() >= d.0) || super::interrupt::interrupted() {
            break;
        }
    }
    stop_inputs.store(true, Ordering::Relaxed);
    if let Some(running) = collectors {
        for (name, r) in running.stop() {
            match r {
                Ok(s) => println!("  collector {name}: {s}"),
                Err(e) => eprintln!("  collector {name}: {e}"),
            }
        }
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("input thread panicked"))??;
    }
    stop_runs.store(true, Ordering::Relaxed);
    let mut undelivered = Vec::new();
    for r in runs {
        let report = r
            .join()
            .map_err(|_| anyhow::anyhow!("run thread panicked"))??;
        if let Some(path) = report.undelivered {
            undelivered.push((report.metrics.results_undelivered, path));
        }
    }
    println!("totals:");
    for p in &pipelines {
        let s = p.metrics.snapshot();
        println!(
            "  {:<22} produced {} | in {} | windows out {} | late {} | quarantined {}",
            p.topic, s.produced, s.readings_in, s.rows_out, s.late, s.quarantined
        );
    }
    for (n, path) in &undelivered {
        eprintln!(
            "  {n} result rows were not delivered to Kafka; they are kept in {}",
            path.display()
        );
    }
    drop(broker);
    Ok(())
}

/// Each demo run's own file for result rows Kafka does not take (runs on one topic share
/// its output directory): `undelivered.<topic>.<dataflow>.jsonl` there, else here.
fn undelivered_file(a: &DemoArgs, topic: &str, dataflow: &str) -> std::path::PathBuf {
    let name = format!("undelivered.{topic}.{dataflow}.jsonl");
    match &a.output {
        Some(o) => o.join(topic).join(name),
        None => name.into(),
    }
}
