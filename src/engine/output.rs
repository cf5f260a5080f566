//! Dataflow outputs and where they go: JSON-lines or CSV files (one per output), Kafka
//! result topics (`<prefix>.<output>`, keyed), and the process counters.
//!
//! A result row Kafka does not take goes to the process's undelivered file (see
//! [`crate::kafka::results`]), counted; none is dropped in silence.
//!
//! A dataflow calls [`Outputs::add`] with a typed stream; the engine attaches one sink
//! operator per output and worker. Files are shared by the workers of a process (each worker
//! appends whole buffers under a lock); with several processes each writes
//! `<output>.p<index>.<ext>`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::cluster_hub::{self, ClusterHub, CountersDuty, HubMsg};
use super::metrics::Metrics;
use crate::dashboard::hub::{PipelineHandle, Update};
use crate::kafka::results::{ResultProducer, SentRows, TopicOffsets, Undelivered};
use crate::quarantine::Quarantined;
use crate::record::{EventTime, Reading, WireFormat};

/// Bytes of formatted rows a sink collects before writing them to its file.
const OUT_CHUNK: usize = 1 << 16;

/// How long a sink waits at a barrier for Kafka to acknowledge the result rows before it;
/// past it, that checkpoint is given up (the run goes on, and the rows are kept as
/// undelivered if Kafka never takes them).
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Appends `buf` to an output's shared file and empties it; a failed write is logged (the run
/// goes on, as for every other output error).
fn write_out(file: &Mutex<BufWriter<File>>, buf: &mut Vec<u8>, name: &str) {
    let mut w = file.lock().expect("file poisoned");
    if let Err(e) = w.write_all(buf) {
        tracing::error!(output = %name, error = %e, "writing output file");
    }
    buf.clear();
}

/// A row of a dataflow output.
pub trait Row: Clone + Serialize + 'static {
    /// CSV header line (no newline).
    const CSV_HEADER: &'static str;
    /// Kafka key (the series id, usually).
    fn key(&self) -> &str;
    /// Appends the row as one CSV line (no newline).
    fn write_csv(&self, out: &mut Vec<u8>);
    /// Appends the row as one JSON object (no newline).
    fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("rows serialise");
    }
    /// What the row shows on the live dashboard (nothing by default).
    fn publish(&self, _out: &mut Vec<Update>) {}
}

impl Row for Reading {
    const CSV_HEADER: &'static str = "series,ts,values";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        let mut json = Vec::new();
        WireFormat::Json.encode(self, &mut json);
        let _ = write!(out, "{},{},", csv_field(&self.series), self.ts);
        out.extend_from_slice(csv_field(&String::from_utf8_lossy(&json)).as_bytes());
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut buf = Vec::new();
        WireFormat::Json.encode(self, &mut buf);
        out.extend_from_slice(&buf);
    }
}

/// A (series, value) that stopped reporting: its state expired (`--state-ttl`). Keyed
/// dataflows write these to their `silent` output (see `engine::keyed::in_order_keyed_silent`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SilentRow {
    /// Series id.
    pub series: crate::record::Sym,
    /// Value name.
    pub field: crate::record::Sym,
    /// Event time of its last reading, UTC ms.
    pub last_ts: EventTime,
    /// Event time its state expired (within 1.25 TTL after `last_ts`), UTC ms.
    pub time: EventTime,
}

impl Row for SilentRow {
    const CSV_HEADER: &'static str = "series,field,last_ts,time";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        csv_series_field_ts(out, &self.series, &self.field, self.last_ts);
        out.push(b',');
        crate::record::write_i64(out, self.time);
    }
    fn publish(&self, out: &mut Vec<Update>) {
        out.push(Update::Silent {
            series: self.series,
            field: self.field,
            last_ts: self.last_ts,
            at: self.time,
        });
    }
}

impl Row for Quarantined {
    const CSV_HEADER: &'static str = "source,reason,payload";
    fn key(&self) -> &str {
        &self.source
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            "{},{},{}",
            csv_field(&self.source),
            csv_field(&self.reason),
            csv_field(&self.payload)
        );
    }
}

/// Quotes a CSV field when needed.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if needs_csv_quotes(s) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// True when `s` must be quoted as a CSV field (it has a comma, quote or line break).
#[inline]
fn needs_csv_quotes(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
}

/// Appends `s` as a CSV field, quoted when needed (see [`csv_field`]).
#[inline]
pub fn push_csv_field(out: &mut Vec<u8>, s: &str) {
    if needs_csv_quotes(s) {
        out.extend_from_slice(csv_field(s).as_bytes());
    } else {
        crate::record::push_short(out, s.as_bytes());
    }
}

/// Appends the CSV columns most rows start with: `series,field,ts` (no trailing comma).
pub fn csv_series_field_ts(out: &mut Vec<u8>, series: &str, field: &str, ts: EventTime) {
    push_csv_field(out, series);
    out.push(b',');
    push_csv_field(out, field);
    out.push(b',');
    crate::record::write_i64(out, ts);
}

/// Appends `,v` for each value.
pub fn csv_f64s(out: &mut Vec<u8>, values: &[f64]) {
    for &v in values {
        out.push(b',');
        crate::record::write_f64(out, v);
    }
}

/// A flat JSON object written member by member, for [`Row::write_json`] without serde:
/// strings escaped by serde_json, numbers by [`crate::record::write_f64`] (shortest
/// round-trip digits, `null` when not finite, as serde_json) and `write_i64`. Keys are
/// written as given (plain identifiers).
pub struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonObject<'a> {
    /// Opens an object at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        JsonObject { out, first: true }
    }

    /// Opens an object with the members most rows start with, `series`, `field` and `ts`
    /// (the JSON twin of [`csv_series_field_ts`]).
    pub fn series_field_ts(out: &'a mut Vec<u8>, series: &str, field: &str, ts: i64) -> Self {
        Self::new(out)
            .str("series", series)
            .str("field", field)
            .i64("ts", ts)
    }

    fn key(&mut self, k: &str) {
        self.out
            .extend_from_slice(if self.first { b"\"" } else { b",\"" });
        self.first = false;
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string member.
    pub fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        serde_json::to_writer(&mut *self.out, v).expect("writing to a Vec");
        self
    }

    /// An integer member.
    pub fn i64(mut self, k: &str, v: i64) -> Self {
        self.key(k);
        crate::record::write_i64(self.out, v);
        self
    }

    /// A number member.
    pub fn f64(mut self, k: &str, v: f64) -> Self {
        self.key(k);
        crate::record::write_f64(self.out, v);
        self
    }

    /// A boolean member.
    pub fn bool(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        self
    }

    /// A member whose value the caller writes (valid JSON) into the buffer.
    pub fn with(mut self, k: &str, write: impl FnOnce(&mut Vec<u8>)) -> Self {
        self.key(k);
        write(self.out);
        self
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push(b'}');
    }
}

/// File format of output files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// CSV with a header.
    Csv,
}

impl OutputFormat {
    fn ext(self) -> &'static str {
        match self {
            OutputFormat::Jsonl => "jsonl",
            OutputFormat::Csv => "csv",
        }
    }
}

/// What a sink holds at a checkpoint (see [`Outputs::add`]): per batch, its time and its
/// rows, formatted for the file, and as (key, JSON) for the result topic.
#[derive(Default)]
struct Held {
    file: Vec<(EventTime, Vec<u8>)>,
    results: Vec<(EventTime, ResultRows)>,
}

/// Result rows as (key, JSON).
type ResultRows = Vec<(String, Vec<u8>)>;

impl Held {
    /// Moves the held file rows before `limit` to `buf`, and sends the held result rows
    /// before it with `send(key, JSON, time)`.
    fn release(
        &mut self,
        limit: EventTime,
        buf: &mut Vec<u8>,
        mut send: impl FnMut(&str, &[u8], EventTime),
    ) {
        release_before(&mut self.file, limit, |_, rows| buf.extend_from_slice(rows));
        release_before(&mut self.results, limit, |t, rows| {
            for (key, json) in rows {
                send(key, json, t);
            }
        });
    }
}

/// Takes the batches before `limit` out of `held`, each to `take(time, batch)`.
fn release_before<T>(
    held: &mut Vec<(EventTime, T)>,
    limit: EventTime,
    mut take: impl FnMut(EventTime, &T),
) {
    held.retain(|(t, batch)| {
        if *t < limit {
            take(*t, batch);
            false
        } else {
            true
        }
    });
}

/// Where outputs go, shared by the workers of a process.
pub struct OutputTargets {
    dir: Option<PathBuf>,
    format: OutputFormat,
    process_suffix: Option<usize>,
    files: Mutex<HashMap<String, Arc<Mutex<BufWriter<File>>>>>,
    kafka: Option<(crate::kafka::ClientSettings, String)>,
    /// Where result rows Kafka did not take go (with result topics).
    undelivered: Option<Arc<Undelivered>>,
    /// Result topics written so far.
    topics: Mutex<std::collections::BTreeSet<String>>,
    /// A client for the result topics' end offsets (made at the first checkpoint).
    offsets_client: Mutex<Option<rdkafka::consumer::BaseConsumer>>,
    /// Resumed after a crash: the result rows the run that died had already sent after the
    /// checkpoint, which this run does not send again (see `kafka::results`).
    sent: Mutex<Option<SentRows>>,
    /// Whether `sent` has rows left to match: a sink takes its lock only then. (On a
    /// cluster each process reads back every process's rows, so some are never matched
    /// here: the lock and a hash per row then stay for the run.)
    resending: std::sync::atomic::AtomicBool,
    /// Rows written per output name.
    pub counts: Mutex<HashMap<String, u64>>,
    metrics: Arc<Metrics>,
    /// The dashboard hub's handle for this run, if this process's dashboard shows it and its
    /// sinks offer their updates directly (one process, or `--dashboard-scope process`).
    pub hub: Option<PipelineHandle>,
    /// With more than one process: how the cluster's dashboard updates travel.
    pub cluster: Option<ClusterHub>,
    /// Append to existing output files instead of replacing them (a run resuming from a
    /// savepoint).
    pub append: bool,
    /// With checkpoints (`--checkpoint-every`): sinks hold the rows after each barrier until
    /// every sink of the process passed it, and the files are measured then (see
    /// `engine::savepoint`).
    pub checkpoints: Option<Arc<crate::engine::savepoint::Savepoint>>,
}

impl OutputTargets {
    /// `kafka`: client settings and topic prefix for result topics. `undelivered`: the file
    /// for result rows Kafka does not take (default: [`OutputTargets::default_undelivered`]).
    pub fn new(
        dir: Option<PathBuf>,
        format: OutputFormat,
        process_suffix: Option<usize>,
        kafka: Option<(crate::kafka::ClientSettings, String)>,
        undelivered: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)?;
        }
        let undelivered = kafka.as_ref().map(|_| {
            let path = undelivered
                .unwrap_or_else(|| Self::default_undelivered(dir.as_deref(), process_suffix));
            Arc::new(Undelivered::new(path, Some(metrics.clone())))
        });
        Ok(OutputTargets {
            undelivered,
            topics: Mutex::default(),
            offsets_client: Mutex::default(),
            sent: Mutex::default(),
            resending: std::sync::atomic::AtomicBool::new(false),
            dir,
            format,
            process_suffix,
            files: Mutex::default(),
            kafka,
            counts: Mutex::default(),
            metrics,
            hub: None,
            cluster: None,
            append: false,
            checkpoints: None,
        })
    }

    /// Where result rows Kafka did not take go by default: `undelivered.jsonl` (with several
    /// processes `undelivered.p<index>.jsonl`) in the output directory, else in the current
    /// directory.
    pub fn default_undelivered(
        dir: Option<&std::path::Path>,
        process_suffix: Option<usize>,
    ) -> PathBuf {
        let name = match process_suffix {
            Some(p) => format!("undelivered.p{p}.jsonl"),
            None => "undelivered.jsonl".to_string(),
        };
        dir.map_or_else(|| PathBuf::from(&name), |d| d.join(&name))
    }

    /// The file of result rows Kafka did not take (with result topics).
    pub fn undelivered(&self) -> Option<&Arc<Undelivered>> {
        self.undelivered.as_ref()
    }

    /// Whether a result row was already sent by the run that died before this one resumed
    /// (it is then taken from that set, and not sent again).
    fn already_sent(&self, topic: &str, key: &str, payload: &[u8]) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.resending.load(Relaxed) {
            return false;
        }
        let mut s = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = s.as_mut() else {
            return false;
        };
        let taken = s.take(topic, key, payload);
        if s.left() == 0 {
            self.resending.store(false, Relaxed);
        }
        taken
    }

    /// Resuming after a crash: the rows the run that died had sent after the checkpoint.
    pub fn set_sent(&self, sent: SentRows) {
        self.resending
            .store(sent.left() > 0, std::sync::atomic::Ordering::Relaxed);
        *self.sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(sent);
    }

    /// Resumed after a crash: (rows found and not sent again, rows found and not made
    /// again).
    pub fn resent(&self) -> (u64, u64) {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or((0, 0), |s| (s.skipped(), s.left() as u64))
    }

    /// What the last sink of the process to pass `barrier` records: the output files'
    /// lengths and, per result partition, an offset before every row this process will
    /// send at or after the barrier (its end now, since every sink holds those rows). A
    /// partition whose end cannot be read is left out: a resumed run reads it whole.
    pub fn measure(&self, barrier: EventTime) -> crate::engine::savepoint::Measured {
        // The rows before the barrier that Kafka refused are kept on disk before the
        // checkpoint counts them as handled.
        if let Some(u) = &self.undelivered {
            if let Err(e) = u.flush() {
                tracing::error!(path = %u.path().display(), error = %e, "flushing undelivered result rows at a checkpoint");
            }
        }
        crate::engine::savepoint::Measured {
            files: self.lengths(),
            topics: self.result_offsets(barrier),
        }
    }

    fn result_offsets(&self, barrier: EventTime) -> TopicOffsets {
        use rdkafka::consumer::Consumer;
        let mut out = TopicOffsets::new();
        let Some((settings, _)) = &self.kafka else {
            return out;
        };
        let topics = self
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // A topic whose offsets are not read is recorded with no partitions: a resumed run
        // reads it whole.
        for t in &topics {
            out.insert(t.clone(), std::collections::BTreeMap::new());
        }
        if topics.is_empty() {
            return out;
        }
        let mut client = self
            .offsets_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if client.is_none() {
            match settings.consumer_config().create() {
                Ok(c) => *client = Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "result topics' offsets: no client; a resumed run reads them whole");
                    return out;
                }
            }
        }
        let c = client.as_ref().expect("made above");
        let timeout = std::time::Duration::from_secs(10);
        // Every partition's end, in one request per broker.
        let mut ends = rdkafka::TopicPartitionList::new();
        for topic in &topics {
            match c.fetch_metadata(Some(topic), timeout) {
                Ok(md) => {
                    for p in md.topics().iter().flat_map(|t| t.partitions()) {
                        let _ = ends.add_partition_offset(topic, p.id(), rdkafka::Offset::End);
                    }
                }
                Err(e) => {
                    tracing::error!(%topic, error = %e, "result topic's partitions at a checkpoint; a resumed run reads it whole");
                }
            }
        }
        let ends = match c.offsets_for_times(ends, timeout) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "result topics' end offsets at a checkpoint; a resumed run reads them whole");
                return out;
            }
        };
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        for e in ends.elements() {
            match (e.error(), e.offset()) {
                (Ok(()), rdkafka::Offset::Offset(end)) => {
                    let (topic, p) = (e.topic(), e.partition());
                    let floor = sent
                        .as_ref()
                        .map_or(end, |s| s.floor(topic, p, barrier, end));
                    out.entry(topic.to_string()).or_default().insert(p, floor);
                }
                // Left out: a resumed run reads that partition whole.
                (r, o) => {
                    tracing::error!(topic = e.topic(), partition = e.partition(), offset = ?o, result = ?r, "a result partition's end offset at a checkpoint; a resumed run reads it whole");
                }
            }
        }
        out
    }

    /// The name of an output's file in the output directory.
    fn file_name(&self, name: &str) -> String {
        match self.process_suffix {
            Some(p) => format!("{name}.p{p}.{}", self.format.ext()),
            None => format!("{name}.{}", self.format.ext()),
        }
    }

    /// Flushes every output file and returns its length, by file name (for a checkpoint).
    /// A file whose length cannot be read is left out (and logged): a resumed run then does
    /// not cut it back.
    pub fn lengths(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for (name, f) in self.files.lock().expect("file map poisoned").iter() {
            let mut w = f.lock().expect("file poisoned");
            match w.flush().and_then(|()| w.get_ref().metadata()) {
                Ok(m) => {
                    out.insert(self.file_name(name), m.len());
                }
                Err(e) => tracing::error!(output = %name, error = %e, "measuring output file"),
            }
        }
        out
    }

    /// The file for an output, created (with header) on first use.
    fn file(
        &self,
        name: &str,
        header: &str,
    ) -> std::io::Result<Option<Arc<Mutex<BufWriter<File>>>>> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let mut files = self.files.lock().expect("file map poisoned");
        if let Some(f) = files.get(name) {
            return Ok(Some(f.clone()));
        }
        let path = dir.join(self.file_name(name));
        // Resuming from a savepoint: the stopped run's rows stay, the new ones follow.
        let append = self.append && std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        let file = if append {
            std::fs::OpenOptions::new().append(true).open(&path)?
        } else {
            File::create(&path)?
        };
        let mut w = BufWriter::with_capacity(1 << 20, file);
        if self.format == OutputFormat::Csv && !append {
            writeln!(w, "{header}")?;
        }
        let f = Arc::new(Mutex::new(w));
        files.insert(name.to_string(), f.clone());
        Ok(Some(f))
    }

    /// Flushes every file.
    pub fn flush(&self) -> std::io::Result<()> {
        for f in self.files.lock().expect("file map poisoned").values() {
            f.lock().expect("file poisoned").flush()?;
        }
        Ok(())
    }

    /// Kafka topic of an output, if results go to Kafka.
    pub fn topic(&self, name: &str) -> Option<String> {
        self.kafka
            .as_ref()
            .map(|(_, prefix)| format!("{prefix}.{name}"))
    }
}

/// The outputs a dataflow declares, attached to sinks as they are added.
pub struct Outputs<'a> {
    targets: &'a Arc<OutputTargets>,
    /// Every output stream is probed with this: the source paces itself on it.
    probe: timely::dataflow::ProbeHandle<EventTime>,
    /// Names added so far.
    pub names: Vec<String>,
    /// Errors met while attaching (reported by the engine).
    pub errors: Vec<String>,
    /// Index of this worker within its process.
    local_worker: usize,
    /// Index of this worker in the cluster.
    worker: usize,
    /// Every sink's output is probed with this (with several processes): the cluster's
    /// counters follow it.
    sinks: timely::dataflow::ProbeHandle<EventTime>,
}

impl<'a> Outputs<'a> {
    /// Wraps the process's targets for worker `worker` of the cluster, `local_worker` of
    /// this process; outputs are probed with `probe`.
    pub fn new(
        targets: &'a Arc<OutputTargets>,
        probe: timely::dataflow::ProbeHandle<EventTime>,
        worker: usize,
        local_worker: usize,
    ) -> Self {
        Outputs {
            targets,
            probe,
            names: Vec::new(),
            errors: Vec::new(),
            local_worker,
            worker,
            sinks: timely::dataflow::ProbeHandle::new(),
        }
    }

    /// Adds what follows every output (with several processes: the counters operator that
    /// sends this process's counters to the dashboard's process). The engine calls it once
    /// the dataflow's outputs are added.
    pub fn finish<'s>(self, scope: timely::dataflow::Scope<'s, EventTime>) {
        let Some(c) = &self.targets.cluster else {
            return;
        };
        let duty = (c.publish && c.process != 0 && self.local_worker == 0).then(|| CountersDuty {
            process: c.process,
            metrics: self.targets.metrics.clone(),
            timings: c.timings.clone(),
        });
        let stream = cluster_hub::counters(scope, self.sinks.clone(), duty);
        cluster_hub::hub_sink(stream, "counters", false, self.worker_0_hub());
    }

    /// On worker 0 of process 0 of a cluster whose dashboard it serves: the hub the cluster's
    /// updates go to (every other worker hands its updates on, and offers nothing itself).
    fn worker_0_hub(&self) -> Option<PipelineHandle> {
        let c = self.targets.cluster.as_ref()?;
        if self.worker == 0 {
            c.hub.clone()
        } else {
            None
        }
    }

    /// Sends a stream to the file `<name>.<ext>` and the topic `<prefix>.<name>`.
    /// `counted`: whether its rows count as results (`rows_out`) in the metrics.
    pub fn add<'s, R: Row>(
        &mut self,
        name: &str,
        stream: Stream<'s, EventTime, Vec<R>>,
        counted: bool,
    ) {
        self.names.push(name.to_string());
        let file = match self.targets.file(name, R::CSV_HEADER) {
            Ok(f) => f,
            Err(e) => {
                self.errors.push(format!("output {name}: {e}"));
                None
            }
        };
        let producer: Option<(ResultProducer, String)> =
            match (&self.targets.kafka, &self.targets.undelivered) {
                (Some((settings, prefix)), Some(u)) => {
                    match ResultProducer::new(&settings.producer_config(), u.clone()) {
                        Ok(p) => {
                            let topic = format!("{prefix}.{name}");
                            self.targets
                                .topics
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(topic.clone());
                            Some((p, topic))
                        }
                        Err(e) => {
                            self.errors
                                .push(format!("output {name}: Kafka producer: {e}"));
                            None
                        }
                    }
                }
                _ => None,
            };
        let targets = self.targets.clone();
        let format = targets.format;
        let name = name.to_string();
        let mut buf: Vec<u8> = Vec::with_capacity(OUT_CHUNK + 4096);
        let mut json: Vec<u8> = Vec::new();
        let mut written: u64 = 0;
        let mut done = false;
        let hub = self.targets.hub.clone();
        if let Some(h) = &hub {
            h.declare(&name);
        }
        let local_worker = self.local_worker;
        let mut staged: Vec<(EventTime, Update)> = Vec::new();
        let mut scratch: Vec<Update> = Vec::new();
        let mut offered: Option<EventTime> = Some(EventTime::MIN);
        use timely::dataflow::operators::Probe;
        // With several processes, the rows' updates go to worker 0 (see `cluster_hub`).
        let publish = self.targets.cluster.as_ref().is_some_and(|c| c.publish);
        let stream = stream.probe_with(&self.probe);
        // Checkpoints: rows at or after `limit` are held (formatted) in `held` until every
        // sink of the process has passed the barrier `pending` and the files were measured.
        let checkpoints = self.targets.checkpoints.clone();
        if let Some(sp) = &checkpoints {
            sp.join(true);
        }
        let floor = checkpoints.as_ref().map_or(EventTime::MIN, |sp| sp.floor());
        let mut seen = EventTime::MIN;
        let mut limit = checkpoints
            .as_ref()
            .map_or(EventTime::MAX, |sp| sp.next_barrier(floor));
        let mut pending: Option<EventTime> = None;
        // Since when the sink waits for Kafka to settle the rows before `pending` it sent,
        // before it reports passing the barrier.
        let mut settling: Option<std::time::Instant> = None;
        let mut held = Held::default();
        let send_result = {
            let targets = self.targets.clone();
            move |p: &ResultProducer, topic: &str, key: &str, json: &[u8], t: EventTime| {
                if !targets.already_sent(topic, key, json) {
                    p.send(topic, key, json, Some(t));
                }
            }
        };
        let scope = stream.scope();
        let sunk = stream.unary_frontier::<CapacityContainerBuilder<Vec<HubMsg>>, _, _, _>(Pipeline, &format!("sink:{name}"), move |_cap, info| {
            let activator = scope.activator_for(info.address.clone());
            move |(input, frontier), output| {
            let mut n = 0u64;
            input.for_each(|cap, rows| {
                let t = cap.least().copied().unwrap_or(EventTime::MIN);
                let hold = file.is_some() && t >= limit;
                if hold {
                    held.file.push((t, Vec::new()));
                }
                let hold_result = producer.is_some() && t >= limit;
                if hold_result {
                    held.results.push((t, Vec::new()));
                }
                for row in rows.iter() {
                    n += 1;
                    if hub.is_some() {
                        row.publish(&mut scratch);
                        staged.extend(scratch.drain(..).map(|u| (t, u)));
                    } else if publish {
                        row.publish(&mut scratch);
                    }
                    // The row's JSON for its topic, once formatted for a JSON-lines file.
                    let mut json_ready = false;
                    if let Some(f) = &file {
                        let out = match held.file.last_mut() {
                            Some((_, rows)) if hold => rows,
                            _ => &mut buf,
                        };
                        match format {
                            OutputFormat::Jsonl => {
                                let start = out.len();
                                row.write_json(out);
                                if producer.is_some() {
                                    json.clear();
                                    json.extend_from_slice(&out[start..]);
                                    json_ready = true;
                                }
                            }
                            OutputFormat::Csv => row.write_csv(out),
                        }
                        out.push(b'\n');
                        // Write as the buffer fills, not after the batch: a closing window
                        // can bring thousands of rows, and a buffer that grows to megabytes
                        // is memory the cache never saw.
                        if !hold && buf.len() >= OUT_CHUNK {
                            write_out(f, &mut buf, &name);
                        }
                    }
                    if let Some((p, topic)) = &producer {
                        if !json_ready {
                            json.clear();
                            row.write_json(&mut json);
                        }
                        match held.results.last_mut() {
                            Some((_, rows)) if hold_result => rows.push((row.key().to_string(), json.clone())),
                            _ => send_result(p, topic, row.key(), &json, t),
                        }
                    }
                }
                if !scratch.is_empty() {
                    output.session(&cap).give_iterator(scratch.drain(..).map(HubMsg::Update));
                }
            });
            written += n;
            if n > 0 {
                tracing::trace!(output = %name, rows = n, "sink received");
            }
            if counted {
                Metrics::add(&targets.metrics.rows_out, n);
            }
            let finished = frontier.is_empty();
            if let Some(h) = &hub {
                let now = frontier.frontier().iter().next().copied();
                if !staged.is_empty() || now != offered {
                    h.offer(&name, local_worker, &mut staged, now);
                    offered = now;
                }
            }
            if let Some(sp) = &checkpoints {
                let send_held = |k: &str, j: &[u8], t: EventTime| {
                    if let Some((p, topic)) = &producer {
                        send_result(p, topic, k, j, t);
                    }
                };
                match frontier.frontier().iter().next().copied() {
                    Some(f) => loop {
                        if pending.is_none() {
                            let Some(b) = sp.barrier(seen, f) else {
                                seen = seen.max(f);
                                break;
                            };
                            seen = f;
                            // Every row before `b` is here: to the file, then report.
                            limit = b;
                            held.release(limit, &mut buf, send_held);
                            if let Some(file) = &file {
                                write_out(file, &mut buf, &name);
                            }
                            pending = Some(b);
                            settling = Some(std::time::Instant::now());
                        }
                        let b = pending.expect("a barrier pending");
                        if let Some(since) = settling {
                            // A row the checkpoint counts as sent must be in the topic (or
                            // kept) before the checkpoint is: a crash after it loses what
                            // was still queued. The sink sends nothing new meanwhile.
                            let left = producer.as_ref().map_or(0, |(p, _)| p.unconfirmed());
                            if left > 0 && since.elapsed() < SETTLE_WAIT {
                                activator.activate_after(std::time::Duration::from_millis(2));
                                break;
                            }
                            if left > 0 {
                                tracing::error!(output = %name, rows = left, barrier = b, "result rows not acknowledged within {SETTLE_WAIT:?} of a barrier: that checkpoint is given up");
                            }
                            settling = None;
                            sp.sink_passed(b, left == 0, || targets.measure(b));
                        }
                        if !sp.sinks_released(b) {
                            activator.activate_after(std::time::Duration::from_millis(5));
                            break;
                        }
                        pending = None;
                        limit = sp.next_barrier(b);
                        held.release(limit, &mut buf, send_held);
                    },
                    None if !done => {
                        // A barrier still settling is given up with the rest (below).
                        settling = None;
                        sp.sink_ended();
                        held.release(EventTime::MAX, &mut buf, send_held);
                    }
                    None => {}
                }
                if let Some(file) = &file {
                    if buf.len() >= OUT_CHUNK {
                        write_out(file, &mut buf, &name);
                    }
                }
            }
            // Rows are written as the buffer fills (above); what is left goes at the end.
            if let Some(f) = &file {
                if finished && !buf.is_empty() {
                    write_out(f, &mut buf, &name);
                }
            }
            if finished && !done {
                done = true;
                if let Some((p, topic)) = &producer {
                    if !p.finish(std::time::Duration::from_secs(30)) {
                        tracing::error!(output = %name, %topic, "Kafka did not acknowledge every result row within 30 s: the rest are kept in the undelivered file");
                    }
                }
                *targets.counts.lock().expect("counts poisoned").entry(name.clone()).or_default() += written;
            }
        }});
        if self.targets.cluster.is_some() {
            let last = &self.names[self.names.len() - 1];
            cluster_hub::hub_sink(
                sunk.probe_with(&self.sinks),
                last,
                true,
                self.worker_0_hub(),
            );
        }
    }
}
