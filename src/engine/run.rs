//! Running a dataflow on a timely cluster: build each worker's feed, the source operator, the
//! dataflow and its sinks; step until every source is finished (or a stop is requested).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::cluster::{ClusterArgs, ClusterError};
use super::cluster_hub::ClusterHub;
use super::metrics::{Metrics, Snapshot};
use super::output::{OutputFormat, OutputTargets, Outputs};
use super::source::{source, Batch, CsvFeed, Feed, MemoryFeed, Poll, SourceSettings};
use super::timing::TimingTarget;
use super::watermark::{OffsetLog, Watermarks};
use crate::dataflows::{self, Params};
use crate::dataset::csvspec::CsvSpec;
use crate::kafka::source::{KafkaFeed, KafkaInput};
use crate::kafka::ClientSettings;
use crate::quarantine::Quarantined;
use crate::record::{EventTime, Reading};

/// Why a run could not start or finish.
#[derive(Debug, Error)]
pub enum EngineError {
    /// Unknown dataflow name.
    #[error("unknown dataflow {name:?}; registered: {known}")]
    UnknownDataflow {
        /// Asked for.
        name: String,
        /// Registered names.
        known: String,
    },
    /// Bad cluster flags.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Timely could not start (e.g. a process of the cluster is unreachable).
    #[error("starting workers: {0}")]
    Timely(String),
    /// A worker failed to set up its input or outputs.
    #[error("worker {worker}: {why}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// What failed.
        why: String,
    },
    /// Kafka cannot be reached, or the topic to read to its end does not exist.
    #[error("{0}")]
    Kafka(String),
    /// A dataflow parameter that cannot be used, and what to use instead.
    #[error("{0}")]
    Param(String),
    /// A savepoint that cannot be read, resumed from or written.
    #[error(transparent)]
    Savepoint(#[from] super::savepoint::SavepointError),
    /// Output directory problems.
    #[error("output directory {path}: {source}")]
    Output {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Where a run reads readings from.
#[derive(Clone)]
pub enum Input {
    /// A Kafka topic.
    Kafka(KafkaInput),
    /// A dataset already loaded and sorted by event time, with the rows its loader quarantined.
    Memory {
        /// Readings sorted by event time.
        readings: Arc<Vec<Reading>>,
        /// Rows the loader could not read.
        quarantined: Arc<Vec<Quarantined>>,
    },
    /// A CSV file read in parallel blocks.
    Csv(CsvSpec),
}

impl Input {
    /// Readings already sorted by event time, with nothing quarantined.
    pub fn memory(readings: Vec<Reading>) -> Self {
        Input::Memory {
            readings: Arc::new(readings),
            quarantined: Arc::default(),
        }
    }

    /// A loaded dataset: its readings and the rows its loader quarantined.
    pub fn loaded(l: crate::dataset::Loaded) -> Self {
        Input::Memory {
            readings: Arc::new(l.readings),
            quarantined: Arc::new(l.quarantined),
        }
    }
}

/// Everything a run needs.
#[derive(Clone)]
pub struct RunSpec {
    /// Registered dataflow name.
    pub dataflow: String,
    /// Input.
    pub input: Input,
    /// Cluster flags.
    pub cluster: ClusterArgs,
    /// Dataflow parameters.
    pub window: Duration,
    /// The zone whose local clock tumbling windows follow (`--window-zone`; UTC by default):
    /// daily windows from local midnight, 23 or 25 hours long across daylight saving.
    pub window_zone: crate::dataset::timefmt::Zone,
    /// Count windows, in readings (`--readings`).
    pub readings: usize,
    /// Alert threshold, e.g. on |z| (`--threshold`).
    pub threshold: f64,
    /// Size of top-k outputs (`--top`).
    pub top: usize,
    /// Event time between top-k snapshots (`--top-every`, default 1 s).
    pub top_every: Duration,
    /// Forecast horizon in readings (`--horizon`).
    pub horizon: usize,
    /// Hop between window ends (`--slide`; `None`: tumbling windows). It must divide the
    /// window.
    pub slide: Option<Duration>,
    /// How `sessions` cuts session windows (`--gap`, `--above`, `--below`).
    pub sessions: crate::dataflows::sessions::SessionParams,
    /// Reference table for joins (`--reference`).
    pub reference: Option<PathBuf>,
    /// Exact or sketched rolling quantiles (`--quantiles`).
    pub quantiles: crate::dataflows::Quantiles,
    /// Parameters of the `gauge` anomaly detector (the `anomaly` dataflow); defaults unless a
    /// tuning run overrides them (`nab --param`).
    pub detector: crate::analytics::detector::DetectorParams,
    /// Per-series state silent this long in event time is dropped (`--state-ttl`; `None`:
    /// kept for the life of the run). See `engine::keyed::expiry_time`.
    pub state_ttl: Option<Duration>,
    /// Allowed lateness.
    pub lateness: Duration,
    /// Idle timeout of a partition (ignored with until-end inputs).
    pub idle_timeout: Duration,
    /// Quiet period that confirms the end of a partition (until-end).
    pub end_confirm: Duration,
    /// Directory for output files.
    pub output_dir: Option<PathBuf>,
    /// Output file format.
    pub output_format: OutputFormat,
    /// Kafka result topics: settings and topic prefix.
    pub result_topics: Option<(ClientSettings, String)>,
    /// The file for result rows Kafka does not take (`--undelivered`; default
    /// `undelivered.jsonl` in the output directory, else in the current one; see
    /// [`crate::kafka::results`]).
    pub undelivered: Option<PathBuf>,
    /// Counters (shared with whoever displays them).
    pub metrics: Arc<Metrics>,
    /// Set to end the run: sources finish, windows close, outputs flush.
    pub stop: Arc<AtomicBool>,
    /// The dashboard hub that shows this run, and the pipeline name it shows it under
    /// (empty: `<topic or dataset>/<dataflow>`).
    pub hub: Option<(Arc<crate::dashboard::Hub>, String)>,
    /// With more than one process: the cluster has one dashboard, on process 0. This
    /// process's workers send their dashboard updates (and, off process 0, its counters) to
    /// worker 0, and process 0's `hub` shows every worker of the cluster (true, the default).
    /// False: this process sends nothing and its `hub`, if any, shows its own workers' share
    /// (`--dashboard-scope process`, or `--no-dashboard` off process 0).
    pub dashboard_cluster: bool,
    /// Savepoint directory (`--savepoint`): resume from its newest savepoint, and write one
    /// there at a stop (see `engine::savepoint`). Kafka input only.
    pub savepoint: Option<PathBuf>,
    /// Event time between checkpoints (`--checkpoint-every`; needs `savepoint`).
    pub checkpoint_every: Option<Duration>,
}

impl RunSpec {
    /// A spec with the documented defaults: one worker, 10 s windows, 5 s lateness, 30 s idle
    /// timeout, 500 ms end confirmation, no files, no result topics, fresh counters.
    pub fn new(dataflow: &str, input: Input) -> Self {
        RunSpec {
            dataflow: dataflow.to_string(),
            input,
            cluster: ClusterArgs::default(),
            window: Duration::from_secs(10),
            window_zone: Default::default(),
            readings: 100,
            threshold: 4.0,
            top: 10,
            top_every: Duration::from_secs(1),
            horizon: 5,
            sessions: Default::default(),
            slide: None,
            quantiles: crate::dataflows::Quantiles::Exact,
            detector: crate::analytics::detector::DetectorParams::default(),
            state_ttl: None,
            reference: None,
            lateness: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            end_confirm: Duration::from_millis(500),
            output_dir: None,
            output_format: OutputFormat::Jsonl,
            result_topics: None,
            undelivered: None,
            metrics: Arc::new(Metrics::default()),
            stop: Arc::new(AtomicBool::new(false)),
            hub: None,
            dashboard_cluster: true,
            savepoint: None,
            checkpoint_every: None,
        }
    }
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Wall time from start of workers to the end.
    pub elapsed: Duration,
    /// Counters at the end.
    pub metrics: Snapshot,
    /// Rows per output (this process).
    pub outputs: BTreeMap<String, u64>,
    /// Final next offset per owned partition (this process's workers).
    pub offsets: BTreeMap<i32, i64>,
    /// The savepoint a stop wrote (`--savepoint`; this process's part), to resume from with
    /// the same flag.
    pub savepoint: Option<super::savepoint::Written>,
    /// The savepoint this run resumed from.
    pub resumed_from: Option<PathBuf>,
    /// The checkpoints this process wrote (`--checkpoint-every`).
    pub checkpoints: super::savepoint::CheckpointsWritten,
    /// When a stop closed time windows early (`series_stats`): the start of the earliest of
    /// them. Windows from there on were written cut short; `--from` this time redoes them
    /// whole (see [`Metrics::cut_short_from`]).
    pub cut_short_from: Option<EventTime>,
    /// The file that holds the result rows Kafka did not take, if there were any (their
    /// count is `metrics.results_undelivered`): `streamgauge redeliver` sends them again.
    pub undelivered: Option<PathBuf>,
    /// Resumed from a checkpoint: result rows the run that died had already sent after it,
    /// found in the result topics and not sent again (this process).
    pub results_not_resent: u64,
    /// Of those found, the rows this process did not make again: 0 on one process when the
    /// dataflow is deterministic (as the resumed output files assume); on a cluster each
    /// process reads every partition back, so this also counts the other processes' rows.
    pub results_unmatched: u64,
}

enum AnyFeed {
    Kafka(Box<KafkaFeed>),
    Memory(Box<MemoryFeed>),
    Csv(Box<CsvFeed>),
}

impl Feed for AnyFeed {
    fn poll(&mut self, clock: &mut Watermarks, batch: &mut Batch, now: Instant) -> Poll {
        match self {
            AnyFeed::Kafka(f) => f.poll(clock, batch, now),
            AnyFeed::Memory(f) => f.poll(clock, batch, now),
            AnyFeed::Csv(f) => f.poll(clock, batch, now),
        }
    }
    fn partitions(&self) -> Vec<crate::engine::metrics::PartitionStatus> {
        match self {
            AnyFeed::Kafka(f) => f.partitions(),
            AnyFeed::Memory(_) | AnyFeed::Csv(_) => Vec::new(),
        }
    }
}

/// Checks before starting workers that the brokers answer and, for `--until-end`, that the
/// topic exists: a wrong address is a clear error, not a retry loop.
fn preflight(k: &KafkaInput) -> Result<(), EngineError> {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer =
        k.settings.consumer_config().create().map_err(|e| {
            EngineError::Kafka(format!("Kafka client for {}: {e}", k.settings.brokers))
        })?;
    let parts = crate::kafka::admin::partitions(&consumer, &k.topic, Duration::from_secs(15))
        .map_err(|e| {
            EngineError::Kafka(format!(
                "cannot reach Kafka at {} ({e}); check --brokers and any -X security settings",
                k.settings.brokers
            ))
        })?;
    if parts.is_empty() && k.until_end {
        return Err(EngineError::Kafka(format!(
            "topic {:?} does not exist on {}; nothing to read to its end (replay into it first)",
            k.topic, k.settings.brokers
        )));
    }
    Ok(())
}

/// Opens the run's savepoint directory, if it has one: only Kafka input can resume (a dataset
/// is read whole), only dataflows whose state can be saved, and not `--from` when there is a
/// savepoint to resume from (it says where to start).
fn open_savepoint(
    spec: &RunSpec,
    dataflow: &dyn crate::dataflows::Dataflow,
) -> Result<Option<Arc<super::savepoint::Savepoint>>, EngineError> {
    let Some(dir) = &spec.savepoint else {
        if spec.checkpoint_every.is_some() {
            return Err(EngineError::Param(
                "--checkpoint-every needs --savepoint DIR: the directory checkpoints go to and \
                 a restarted run resumes from"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let Input::Kafka(k) = &spec.input else {
        return Err(EngineError::Param(
            "--savepoint needs a Kafka input (--topic): a dataset is read whole, from its start"
                .into(),
        ));
    };
    if !dataflow.savepoints() {
        let can: Vec<&str> = crate::dataflows::REGISTRY
            .iter()
            .filter(|d| d.savepoints())
            .map(|d| d.name())
            .collect();
        return Err(EngineError::Param(format!(
            "dataflow {} cannot save its state to a savepoint yet; these can: {}",
            dataflow.name(),
            can.join(", ")
        )));
    }
    if spec.checkpoint_every.is_some() && !dataflow.checkpoints() {
        let can: Vec<&str> = crate::dataflows::REGISTRY
            .iter()
            .filter(|d| d.checkpoints())
            .map(|d| d.name())
            .collect();
        return Err(EngineError::Param(format!(
            "dataflow {} cannot write checkpoints yet (--savepoint alone saves it at a stop); \
             these can: {}",
            dataflow.name(),
            can.join(", ")
        )));
    }
    // What the saved state depends on: resuming with other settings would mix two runs.
    let settings: BTreeMap<String, String> = [
        ("dataflow", spec.dataflow.clone()),
        ("topic", k.topic.clone()),
        ("window", format!("{:?}", spec.window)),
        ("window_zone", format!("{:?}", spec.window_zone)),
        ("slide", format!("{:?}", spec.slide)),
        ("readings", spec.readings.to_string()),
        ("threshold", spec.threshold.to_string()),
        ("horizon", spec.horizon.to_string()),
        ("sessions", format!("{:?}", spec.sessions)),
        ("quantiles", format!("{:?}", spec.quantiles)),
        ("detector", format!("{:?}", spec.detector)),
        ("state_ttl", format!("{:?}", spec.state_ttl)),
        ("top", spec.top.to_string()),
        ("top_every", format!("{:?}", spec.top_every)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let total = spec.cluster.workers * spec.cluster.processes;
    let mut sp = super::savepoint::Savepoint::open(
        dir,
        settings,
        total,
        (spec.cluster.process, spec.cluster.processes),
    )?;
    if let Some(every) = spec.checkpoint_every {
        let ms = EventTime::try_from(every.as_millis()).unwrap_or(EventTime::MAX);
        if ms < 1 {
            return Err(EngineError::Param(
                "--checkpoint-every must be at least 1ms of event time".into(),
            ));
        }
        sp = sp.with_checkpoints(ms);
        sp.counted_in(spec.metrics.clone());
    }
    if let (Some(r), false) = (
        sp.resumed(),
        k.start == crate::kafka::source::StartAt::Beginning,
    ) {
        return Err(EngineError::Param(format!(
            "--from with a savepoint to resume from ({}): the savepoint says where each \
             partition starts. Drop --from, or give a new --savepoint directory",
            r.dir.display()
        )));
    }
    Ok(Some(Arc::new(sp)))
}

/// Resuming from a checkpoint: cuts the output files of process `process` of the run that
/// wrote it back to their lengths at its barrier (the rows after it are written again), and
/// on process 0 those of processes this run does not have. A file shorter than at the
/// checkpoint was changed since, and is refused.
fn cut_back_outputs(
    dir: &Path,
    r: &super::savepoint::Resumed,
    (process, processes): (usize, usize),
) -> Result<(), EngineError> {
    let mine = r
        .outputs
        .iter()
        .filter(|(&p, _)| p == process || (process == 0 && p >= processes))
        .flat_map(|(_, files)| files);
    for (name, &len) in mine {
        let path = dir.join(name);
        let now = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EngineError::Output { path, source: e }),
        };
        if now < len {
            return Err(EngineError::Param(format!(
                "output file {} has {now} bytes, fewer than the {len} it had at the checkpoint \
                 {}: it was changed since. Restore it, or give a new --output directory",
                path.display(),
                r.dir.display()
            )));
        }
        if now > len {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(len))
                .map_err(|e| EngineError::Output {
                    path: path.clone(),
                    source: e,
                });
            f?;
            tracing::info!(file = %path.display(), from = now, to = len, "output cut back to the checkpoint");
        }
    }
    Ok(())
}

/// Runs `spec` to completion on this process's share of the cluster.
pub fn run(spec: RunSpec) -> Result<RunReport, EngineError> {
    let dataflow = dataflows::find(&spec.dataflow)?;
    let width = i64::try_from(spec.window.as_millis()).unwrap_or(i64::MAX);
    match spec.slide {
        // Hopping windows: their panes are what must fit the zone.
        Some(slide) => crate::dataflows::series_stats::check_slide(
            width,
            i64::try_from(slide.as_millis()).unwrap_or(i64::MAX),
            &spec.window_zone,
        )
        .map_err(EngineError::Param)?,
        None => crate::analytics::window::LocalTumbling::new(width, spec.window_zone.clone())
            .map(|_| ())
            .map_err(|why| {
                EngineError::Param(format!("--window {width} ms with --window-zone: {why}"))
            })?,
    }
    spec.sessions.check().map_err(EngineError::Param)?;
    let savepoint = open_savepoint(&spec, dataflow)?;
    let config = spec.cluster.to_timely()?;
    if let Input::Kafka(k) = &spec.input {
        preflight(k)?;
    }
    let workers = spec.cluster.workers;
    let kafka = spec.result_topics.clone();
    let suffix = (spec.cluster.processes > 1).then_some(spec.cluster.process);
    let targets = OutputTargets::new(
        spec.output_dir.clone(),
        spec.output_format,
        suffix,
        kafka,
        spec.undelivered.clone(),
        spec.metrics.clone(),
    )
    .map_err(|e| EngineError::Output {
        path: spec.output_dir.clone().unwrap_or_default(),
        source: e,
    })?;
    let mut targets = targets;
    targets.append = savepoint.as_ref().is_some_and(|s| s.resumed().is_some());
    targets.checkpoints = savepoint.clone().filter(|s| s.checkpointing());
    if let (Some(r), Some(dir)) = (
        savepoint.as_ref().and_then(|s| s.resumed()),
        &spec.output_dir,
    ) {
        cut_back_outputs(dir, r, (spec.cluster.process, spec.cluster.processes))?;
    }
    if let (Some(r), Some((settings, _))) = (
        savepoint.as_ref().and_then(|s| s.resumed()),
        &spec.result_topics,
    ) {
        resume_result_topics(&targets, r, settings)?;
    }
    // With several processes, the dashboard updates may go to process 0 (`cluster_hub`).
    let cluster_scope = spec.cluster.processes > 1 && spec.dashboard_cluster;
    if spec.cluster.processes > 1 {
        targets.cluster = Some(ClusterHub {
            publish: cluster_scope && (spec.cluster.process != 0 || spec.hub.is_some()),
            process: spec.cluster.process,
            ..ClusterHub::default()
        });
    }
    if let Some((hub, name)) = &spec.hub {
        let name = if name.is_empty() {
            let input = match &spec.input {
                Input::Kafka(k) => k.topic.clone(),
                Input::Memory { .. } | Input::Csv(_) => "dataset".to_string(),
            };
            format!("{input}/{}", spec.dataflow)
        } else {
            name.clone()
        };
        if cluster_scope {
            // Only worker 0 offers: the cluster's updates all reach it.
            let handle = hub.register(&name, &spec.dataflow, spec.metrics.clone(), 1);
            if let Some(c) = targets.cluster.as_mut() {
                c.hub = Some(handle);
            }
        } else {
            targets.hub = Some(hub.register(&name, &spec.dataflow, spec.metrics.clone(), workers));
        }
    }
    let targets = Arc::new(targets);
    let peers_wm = Arc::new(Mutex::new(vec![None::<EventTime>; workers]));
    let logs: Vec<Arc<Mutex<OffsetLog>>> = (0..workers)
        .map(|_| Arc::new(Mutex::new(OffsetLog::new(1024))))
        .collect();
    let errors: Arc<Mutex<Vec<EngineError>>> = Arc::default();
    let params = Params {
        window: spec.window,
        window_zone: spec.window_zone.clone(),
        slide: spec.slide,
        readings: spec.readings,
        threshold: spec.threshold,
        top: spec.top,
        top_every: EventTime::try_from(spec.top_every.as_millis())
            .unwrap_or(EventTime::MAX)
            .max(1),
        horizon: spec.horizon,
        sessions: spec.sessions,
        reference: spec.reference.clone(),
        quantiles: spec.quantiles,
        detector: spec.detector.clone(),
        state_ttl: spec.state_ttl.map(|d| {
            EventTime::try_from(d.as_millis())
                .unwrap_or(EventTime::MAX)
                .max(1)
        }),
        worker: 0,
        metrics: spec.metrics.clone(),
        stop: spec.stop.clone(),
        savepoint: savepoint.clone(),
    };
    let started = Instant::now();
    let sampler = spec
        .output_dir
        .as_ref()
        .map(|dir| {
            let name = match suffix {
                Some(p) => format!("throughput.p{p}.jsonl"),
                None => "throughput.jsonl".to_string(),
            };
            // A resumed run goes on with the log of the run it resumes.
            let resumed = savepoint.as_ref().is_some_and(|s| s.resumed().is_some());
            ThroughputLog::start(dir.join(name), spec.metrics.clone(), resumed)
        })
        .transpose()
        .map_err(|e| EngineError::Output {
            path: spec.output_dir.clone().unwrap_or_default(),
            source: e,
        })?;
    // A CSV file's blocks go to this process's workers as each asks for one.
    let csv_share =
        crate::dataset::csvspec::BlockShare::new(spec.cluster.process, spec.cluster.processes);
    {
        let (spec, targets, logs, errors, savepoint) = (
            spec.clone(),
            targets.clone(),
            logs.clone(),
            errors.clone(),
            savepoint.clone(),
        );
        let guards = timely::execute(config, move |worker| {
            let index = worker.index();
            let peers = worker.peers();
            let local = index % workers;
            let resume = savepoint.as_ref().and_then(|s| s.resumed());
            let feed = match &spec.input {
                Input::Kafka(k) => KafkaFeed::new(k.clone(), index, peers)
                    .map(|f| match resume {
                        Some(r) => f.resuming(Arc::new(r.partitions.clone())),
                        None => f,
                    })
                    .map(|f| AnyFeed::Kafka(Box::new(f)))
                    .map_err(|e| e.to_string()),
                Input::Memory {
                    readings,
                    quarantined,
                } => Ok(AnyFeed::Memory(Box::new(MemoryFeed::new(
                    readings.clone(),
                    quarantined.to_vec(),
                    index,
                    peers,
                )))),
                Input::Csv(c) => CsvFeed::new(c, csv_share.clone())
                    .map(|f| AnyFeed::Csv(Box::new(f)))
                    .map_err(|e| e.to_string()),
            };
            let feed = match feed {
                Ok(f) => f,
                Err(why) => {
                    errors
                        .lock()
                        .expect("errors poisoned")
                        .push(EngineError::Worker { worker: index, why });
                    return;
                }
            };
            let until_end = !matches!(&spec.input, Input::Kafka(k) if !k.until_end);
            let probe = timely::dataflow::ProbeHandle::new();
            let settings = SourceSettings {
                name: format!("source:{}", spec.dataflow),
                lateness: spec.lateness,
                idle_timeout: if until_end {
                    None
                } else {
                    Some(spec.idle_timeout)
                },
                confirm: spec.end_confirm,
                metrics: spec.metrics.clone(),
                stop: spec.stop.clone(),
                offsets: logs[local].clone(),
                peers: Some((peers_wm.clone(), local)),
                probe: Some(probe.clone()),
                worker: (index, spec.cluster.process),
                start: match &spec.input {
                    Input::Kafka(k) => match k.start {
                        crate::kafka::source::StartAt::Time(t) => t,
                        _ => EventTime::MIN,
                    },
                    _ => EventTime::MIN,
                }
                .max(resume.map_or(EventTime::MIN, |r| r.frontier)),
                savepoint: savepoint.clone(),
            };
            let timings = match (&targets.hub, &targets.cluster) {
                (Some(h), _) => Some(TimingTarget::Hub(h.clone())),
                (None, Some(c)) => match &c.hub {
                    Some(h) => Some(TimingTarget::Hub(h.clone())),
                    None if c.publish => Some(TimingTarget::Shared(c.timings.clone())),
                    None => None,
                },
                (None, None) => None,
            };
            if let Some(t) = timings {
                super::timing::record_operator_times(worker, t);
            }
            let attach_errors = worker.dataflow::<EventTime, _, _>(|scope| {
                let streams = source(scope, settings, feed);
                let mut outputs = Outputs::new(&targets, probe, index, local);
                dataflow.build(
                    streams.data,
                    &Params {
                        worker: index,
                        ..params.clone()
                    },
                    &mut outputs,
                );
                outputs.add("late", streams.late, false);
                outputs.add("quarantine", streams.quarantine, false);
                let errors = std::mem::take(&mut outputs.errors);
                outputs.finish(scope);
                errors
            });
            if let Some(sp) = &savepoint {
                sp.built();
            }
            if !attach_errors.is_empty() {
                errors
                    .lock()
                    .expect("errors poisoned")
                    .push(EngineError::Worker {
                        worker: index,
                        why: attach_errors.join("; "),
                    });
                spec.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            while worker.step_or_park(Some(Duration::from_millis(20))) {}
        })
        .map_err(EngineError::Timely)?;
        for r in guards.join() {
            r.map_err(EngineError::Timely)?;
        }
    }
    if let Some(s) = sampler {
        s.finish();
    }
    if let Some(e) = errors.lock().expect("errors poisoned").drain(..).next() {
        return Err(e);
    }
    let (written, resumed_from) = match &savepoint {
        Some(sp) => (sp.finish(workers)?, sp.resumed().map(|r| r.dir.clone())),
        None => (None, None),
    };
    targets.flush().map_err(|e| EngineError::Output {
        path: spec.output_dir.clone().unwrap_or_default(),
        source: e,
    })?;
    // The result producers are gone with the dataflow: every row they could not deliver
    // is in the undelivered file by now.
    let undelivered = match targets.undelivered() {
        Some(u) => {
            let io = |source| EngineError::Output {
                path: u.path().to_path_buf(),
                source,
            };
            u.flush().map_err(io)?;
            if u.unwritten() > 0 {
                return Err(io(std::io::Error::other(format!(
                    "{} result rows Kafka did not take could not be written here either: they are lost",
                    u.unwritten()
                ))));
            }
            (u.count() > 0).then(|| u.path().to_path_buf())
        }
        None => None,
    };
    let (results_not_resent, results_unmatched) = targets.resent();
    let mut offsets = BTreeMap::new();
    for l in &logs {
        if let Some((_, offs)) = l.lock().expect("offset log poisoned").latest() {
            offsets.extend(offs.iter().copied());
        }
    }
    let outputs = targets
        .counts
        .lock()
        .expect("counts poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    Ok(RunReport {
        elapsed: started.elapsed(),
        metrics: spec.metrics.snapshot(),
        outputs,
        offsets,
        savepoint: written,
        resumed_from,
        checkpoints: savepoint
            .as_ref()
            .map(|s| s.checkpoints_written())
            .unwrap_or_default(),
        cut_short_from: *spec
            .metrics
            .cut_short_from
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
        undelivered,
        results_not_resent,
        results_unmatched,
    })
}

/// Resuming from a checkpoint with result topics: the rows at or after its barrier that
/// the run which died had sent are read back, and this run does not send them again; the
/// undelivered file drops its rows at or after the barrier (this run makes them again).
fn resume_result_topics(
    targets: &OutputTargets,
    r: &super::savepoint::Resumed,
    settings: &ClientSettings,
) -> Result<(), EngineError> {
    let Some(barrier) = r.barrier else {
        // A stop's savepoint: the stopped run sent no row at or after its cut.
        return Ok(());
    };
    if let Some(u) = targets.undelivered() {
        let dropped = crate::kafka::results::trim_undelivered(u.path(), barrier)
            .map_err(|e| EngineError::Kafka(e.to_string()))?;
        if dropped > 0 {
            tracing::info!(file = %u.path().display(), dropped, "undelivered rows after the checkpoint dropped: this run sends them");
        }
    }
    if r.result_offsets.is_empty() {
        tracing::warn!(checkpoint = %r.dir.display(), "the checkpoint records no result-topic offsets (no result topics then, or an older build): rows after it already in the result topics are sent again");
        return Ok(());
    }
    let sent = crate::kafka::results::scan_sent(
        &settings.consumer_config(),
        &r.result_offsets,
        barrier,
        Duration::from_secs(30),
    )
    .map_err(|e| {
        EngineError::Kafka(format!(
            "resuming from {}: {e}. The result rows the stopped run sent after the checkpoint \
             must be read back, or they would be sent twice: make the result topics readable, \
             or run with --no-result-topics",
            r.dir.display()
        ))
    })?;
    tracing::info!(
        rows = sent.left(),
        barrier,
        "result rows already sent after the checkpoint: not sent again"
    );
    targets.set_sent(sent);
    Ok(())
}

/// Writes the run's counters once a second to `throughput.jsonl` in the output directory
/// (`{"at": wall ms, "elapsed_s", "readings_in", "rows_out", "in_rate", "out_rate"}`), which
/// `streamgauge report` plots. A run resumed from a savepoint appends to the log of the run
/// before it, its `elapsed_s` going on from that run's last line plus the wall time between
/// (its counters are its own).
struct ThroughputLog {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl ThroughputLog {
    fn start(path: PathBuf, metrics: Arc<Metrics>, append: bool) -> std::io::Result<Self> {
        use std::io::Write;
        let wall_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        // Where the log before it ended: its last line's elapsed time and wall clock.
        let before = append
            .then(|| std::fs::read_to_string(&path).ok())
            .flatten()
            .and_then(|text| {
                let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
                let v: serde_json::Value = serde_json::from_str(last).ok()?;
                Some((v["elapsed_s"].as_f64()?, v["at"].as_i64()?))
            });
        let offset = before.map_or(0.0, |(elapsed, at)| {
            elapsed + (wall_ms() - at).max(0) as f64 / 1000.0
        });
        let file = match before {
            Some(_) => std::fs::OpenOptions::new().append(true).open(&path)?,
            None => std::fs::File::create(&path)?,
        };
        let mut file = std::io::BufWriter::new(file);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut last = (t0, metrics.snapshot());
            loop {
                let done = flag.load(std::sync::atomic::Ordering::Relaxed);
                if !done {
                    // Woken early by `finish` (a run's end must not wait out this nap).
                    std::thread::park_timeout(Duration::from_millis(100));
                    if last.0.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                }
                let now = Instant::now();
                let m = metrics.snapshot();
                let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let line = serde_json::json!({
                    "at": wall_ms(),
                    "elapsed_s": offset + now.duration_since(t0).as_secs_f64(),
                    "readings_in": m.readings_in,
                    "rows_out": m.rows_out,
                    "in_rate": m.readings_in.saturating_sub(last.1.readings_in) as f64 / dt,
                    "out_rate": m.rows_out.saturating_sub(last.1.rows_out) as f64 / dt,
                });
                if writeln!(file, "{line}").is_err() {
                    return;
                }
                last = (now, m);
                if done {
                    let _ = file.flush();
                    return;
                }
            }
        });
        Ok(ThroughputLog { stop, thread })
    }

    fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}
