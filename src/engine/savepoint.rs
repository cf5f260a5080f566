//! Savepoints: what a stopped run leaves so the next run goes on exactly where it stopped
//! (`run --savepoint DIR`).
//!
//! A stop (Ctrl-C, `--duration`, the stop flag) ends the run cleanly: every source stops
//! reading and sends a *stop mark* with its frontier to every worker
//! (`engine::route::stop_mark`), and every keyed operator processes each reading before the
//! lowest mark, and nothing at or after it (a folding operator, `series_stats`, closes no
//! window ending after it), though the frontier may pass it once a source is gone while
//! another still reads (in a cluster, a process stopped later). So every worker
//! of every process cuts its state at the same event time, the frontier the resumed sources
//! start at, and a series whose source stopped first is not processed past the readings
//! that source may still bring. With a savepoint, each worker then writes, instead of
//! closing anything early:
//! - its source's position: per partition, the next offset and the highest event time read
//!   (so lateness is judged as before), and the source's frontier;
//! - per keyed operator, its per-series state and the readings it still held (those at or
//!   after its frontier, not yet processed).
//!
//! The next run with the same directory reads them back: each worker takes the states and
//! held readings of the series it owns (any number of workers and processes; ownership is by
//! the series' hash, as the exchange routes them), processes the held readings first, and
//! reads each partition from its saved offset with its saved watermark. The source's frontier
//! starts at the lowest saved one, so a reading the stopped run had counted late is late
//! again. The rows the two runs write together are the rows of one uninterrupted run.
//!
//! Layout: `DIR/g<N>/` per savepoint, `N` counting up; in it `source.w<W>.bin` and
//! `<operator>.w<W>.bin` per worker `W` (bincode), and `manifest.p<P>.json` per process,
//! written last. A generation counts only when every process's manifest is there, so a run
//! that died while writing leaves the previous savepoint in force. The two newest complete
//! generations are kept.
//!
//! # Checkpoints
//! With `--checkpoint-every T` a run also writes a savepoint while it runs, at every multiple
//! `B` of `T` in event time (a *barrier*), so a crash loses no state: the next run resumes
//! from the newest complete checkpoint as from a stop. The cut is defined by timely times.
//! A source emits each reading at its frontier at the moment it reads it (`engine::source`),
//! so the readings at timely times before `B` are exactly those read before that source's
//! frontier reached `B`:
//! - each source writes its position when its frontier first reaches `B` or more;
//! - each keyed operator, when its input frontier reaches `B`, processes the readings before
//!   `B` (all of them arrived before `B`), writes its state and the readings it holds that
//!   *arrived* before `B` (later arrivals are read again from the saved offsets), and emits
//!   what follows at timely times `>= B`;
//! - each output sink holds the rows at times `>= B` until every sink of the process has
//!   passed `B`. A sink passes `B` once it wrote the rows before `B` and Kafka acknowledged
//!   every one it sent to a result topic (or refused it: it is then in the undelivered
//!   file), so a crash right after the checkpoint loses none of them; a sink still waiting
//!   after 30 s gives that checkpoint up. The process's files and the end offsets of its
//!   result topics' partitions are measured once all passed ([`Measured`]). A run resuming
//!   from the checkpoint cuts the files back to those lengths, and reads the result topics
//!   back from those offsets to skip the rows the run that died had already sent
//!   (`kafka::results`), so every row is written once, to files and to Kafka.
//!
//! A participant whose frontier jumps over several barriers writes for the highest one only,
//! and a checkpoint counts only once every participant of every process wrote it, so a
//! checkpoint can be skipped (never half-used). Checkpoints live beside the stop's
//! savepoint: `DIR/g<N>c<B>/`, ordered after the generations before `N` and before `g<N>`
//! itself (a stop of the same run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

use crate::kafka::results::TopicOffsets;
use crate::record::{EventTime, Reading};

/// Format version of the files; a savepoint of another version is refused.
const VERSION: u32 = 2;

/// Why a savepoint cannot be used or written.
#[derive(Debug, Error)]
pub enum SavepointError {
    /// Reading or writing a file failed.
    #[error("savepoint {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file is not a savepoint file of this version.
    #[error("savepoint file {path} cannot be read ({why}); it is damaged or from another streamgauge version: use another --savepoint directory")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The savepoint is of another run (dataflow, topic or parameters).
    #[error("savepoint {path} was written by a run with {what}; this run has {now}. Resume with the same settings, or give a new --savepoint directory")]
    Mismatch {
        /// The generation's directory.
        path: PathBuf,
        /// The saved setting.
        what: String,
        /// This run's.
        now: String,
    },
}

/// One partition's position at the stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    /// Partition.
    pub partition: i32,
    /// Next offset to read.
    pub next_offset: i64,
    /// Highest event time read (its watermark is this minus the lateness).
    pub max_ts: Option<EventTime>,
}

/// A source's position at the stop.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Its event-time frontier.
    pub frontier: EventTime,
    /// Its partitions.
    pub partitions: Vec<PartitionPosition>,
}

/// Which savepoint of a run a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The one written at a stop.
    Stop,
    /// The checkpoint at this event-time barrier.
    Barrier(EventTime),
}

/// A savepoint directory's identity: the run's generation and, for a checkpoint, its barrier
/// (`EventTime::MAX` for a stop's savepoint, which comes after the run's checkpoints).
type GenId = (u64, EventTime);

fn dir_name((n, b): GenId) -> String {
    if b == EventTime::MAX {
        format!("g{n}")
    } else {
        format!("g{n}c{b}")
    }
}

/// One saved state: series, value name, the time of its latest reading, the state.
pub type SavedState<V> = (String, String, EventTime, V);

/// One keyed operator's share, as a worker writes it: per (series, value name) state with the
/// time of its latest reading, and the readings not yet processed.
#[derive(Serialize, Deserialize)]
struct KeyedFile<V> {
    version: u32,
    states: Vec<SavedState<V>>,
    held: Vec<Reading>,
}

/// What a process writes last: the savepoint's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Manifest {
    version: u32,
    /// Workers in the run that wrote it (all processes).
    workers: usize,
    processes: usize,
    /// Dataflow, topic and the parameters the state depends on.
    settings: BTreeMap<String, String>,
    /// A checkpoint's barrier (none for a stop's savepoint).
    #[serde(default)]
    barrier: Option<EventTime>,
    /// A checkpoint's output files (name in the output directory) and their lengths at the
    /// barrier, which a resumed run cuts them back to.
    #[serde(default)]
    outputs: BTreeMap<String, u64>,
    /// A stop's cut: the lowest stop mark (every state processed the readings before it).
    #[serde(default)]
    cut: Option<EventTime>,
    /// A checkpoint's result topics: per partition, an offset before every row of this
    /// process at or after the barrier (see `kafka::results`).
    #[serde(default)]
    result_offsets: TopicOffsets,
}

/// What the last sink of a process to pass a barrier measures, while every sink holds the
/// rows at or after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    /// Output files (name in the output directory) and their lengths.
    pub files: BTreeMap<String, u64>,
    /// Result topics: per partition, an offset before every row this process will send at
    /// or after the barrier.
    pub topics: TopicOffsets,
}

/// What this run resumes from.
#[derive(Debug)]
pub struct Resumed {
    /// The generation's directory.
    pub dir: PathBuf,
    /// Workers of the run that wrote it.
    pub workers: usize,
    /// Every saved partition position.
    pub partitions: BTreeMap<i32, PartitionPosition>,
    /// The lowest saved source frontier: the resumed sources start there.
    pub frontier: EventTime,
    /// The checkpoint's barrier, when it is one.
    pub barrier: Option<EventTime>,
    /// The event time every saved state is cut at: a checkpoint's barrier, or a stop's
    /// lowest stop mark (`engine::route::stop_mark`). States hold the readings before it.
    pub cut: Option<EventTime>,
    /// A checkpoint's output files and their lengths at the barrier, by the process that
    /// wrote them.
    pub outputs: BTreeMap<usize, BTreeMap<String, u64>>,
    /// A checkpoint's result topics: per partition, the lowest offset any process recorded
    /// (every row at or after the barrier lies after it). Empty for a stop's savepoint.
    pub result_offsets: TopicOffsets,
}

/// A checkpoint on its way: what this process's participants have written for it.
#[derive(Debug, Default)]
struct Progress {
    /// Sources and keyed operators done.
    done: usize,
    /// Sinks that passed the barrier.
    sinks: usize,
    /// Output lengths and result offsets, once every sink passed it.
    outputs: Option<Measured>,
    /// A sink ended before the others passed the barrier: never to be written.
    abandoned: bool,
    /// States, held readings, bytes.
    written: [u64; 3],
}

/// What checkpoints this process wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointsWritten {
    /// Complete on this process (its manifest written).
    pub count: u64,
    /// The newest one's directory.
    pub last: Option<PathBuf>,
    /// Bytes of this process's files in the newest one.
    pub last_bytes: u64,
    /// Checkpoints given up because a file could not be written (each logged).
    pub failed: u64,
}

impl Checkpoints {
    fn built_all(&self, local_workers: usize) -> bool {
        self.built >= local_workers
    }

    /// Counts a checkpoint given up.
    fn note_failed(&mut self) {
        self.written.failed += 1;
        if let Some(m) = &self.metrics {
            m.checkpoints_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Checkpoint bookkeeping of one process.
#[derive(Debug, Default)]
struct Checkpoints {
    /// Event time between barriers.
    every: EventTime,
    /// Sources and keyed operators taking part, and sinks (all local workers').
    participants: usize,
    sinks: usize,
    /// Local workers whose dataflow is built (counts are final once all are).
    built: usize,
    progress: BTreeMap<EventTime, Progress>,
    /// A sink's input ended: checkpoints its peers pass later can never complete.
    sink_ended: bool,
    written: CheckpointsWritten,
    /// The process's counters, which show them live (dashboard, `/metrics`).
    metrics: Option<Arc<crate::engine::Metrics>>,
}

/// A run's savepoint directory: where it resumes from, if anywhere, and where its stop
/// writes.
#[derive(Debug)]
pub struct Savepoint {
    root: PathBuf,
    /// The generation this run writes at a stop.
    generation: u64,
    settings: BTreeMap<String, String>,
    /// Workers of this run, all processes.
    workers: usize,
    processes: usize,
    process: usize,
    resumed: Option<Resumed>,
    /// Failures while writing (workers cannot return errors).
    errors: Mutex<Vec<SavepointError>>,
    /// Sources of this process that wrote their position.
    sources_saved: std::sync::atomic::AtomicUsize,
    /// Whether a source of this process was stopped (rather than reaching its input's end).
    stopped: std::sync::atomic::AtomicBool,
    /// States, held readings and bytes this process wrote.
    written: [std::sync::atomic::AtomicU64; 3],
    /// With `--checkpoint-every`.
    checkpoints: Option<Mutex<Checkpoints>>,
    /// A stop's cut, once a keyed operator knows it ([`Savepoint::note_stop_cut`]).
    stop_cut: Mutex<Option<EventTime>>,
}

/// What a process wrote to a savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The savepoint's directory.
    pub dir: PathBuf,
    /// Per-series states (of every keyed operator).
    pub states: u64,
    /// Readings keyed operators held at the stop, saved unprocessed.
    pub held: u64,
    /// Bytes of this process's files.
    pub bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SavepointError + '_ {
    move |source| SavepointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Savepoints under `root` (`g<N>` and `g<N>c<B>` directories), newest first.
fn generations(root: &Path) -> Result<Vec<GenId>, SavepointError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io(root))? {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|s| s.strip_prefix('g')) else {
            continue;
        };
        let id = match rest.split_once('c') {
            Some((n, b)) => n.parse::<u64>().ok().zip(b.parse::<EventTime>().ok()),
            None => rest.parse::<u64>().ok().map(|n| (n, EventTime::MAX)),
        };
        out.extend(id);
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    Ok(out)
}

/// Per result partition, the lowest offset any of the processes recorded; 0 (read it whole)
/// where a process recorded none (its query failed).
fn lowest_offsets<'a>(each: impl ExactSizeIterator<Item = &'a TopicOffsets>) -> TopicOffsets {
    let processes = each.len();
    let mut out: BTreeMap<String, BTreeMap<i32, (i64, usize)>> = BTreeMap::new();
    for offsets in each {
        for (topic, parts) in offsets {
            let o = out.entry(topic.clone()).or_default();
            for (&p, &off) in parts {
                let e = o.entry(p).or_insert((off, 0));
                *e = (e.0.min(off), e.1 + 1);
            }
        }
    }
    out.into_iter()
        .map(|(t, parts)| {
            let parts = parts
                .into_iter()
                .map(|(p, (off, n))| (p, if n == processes { off } else { 0 }))
                .collect();
            (t, parts)
        })
        .collect()
}

/// The manifests of generation `dir` when every process wrote its own, else `None`.
fn complete(dir: &Path) -> Result<Option<Vec<Manifest>>, SavepointError> {
    let first = dir.join("manifest.p0.json");
    if !first.exists() {
        return Ok(None);
    }
    let read = |path: PathBuf| -> Result<Manifest, SavepointError> {
        let text = std::fs::read(&path).map_err(io(&path))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| SavepointError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        if m.version != VERSION {
            return Err(SavepointError::Corrupt {
                path,
                why: format!("format version {}, this build reads {VERSION}", m.version),
            });
        }
        Ok(m)
    };
    let m0 = read(first)?;
    let mut all = vec![m0.clone()];
    for p in 1..m0.processes {
        let path = dir.join(format!("manifest.p{p}.json"));
        if !path.exists() {
            return Ok(None);
        }
        all.push(read(path)?);
    }
    Ok(Some(all))
}

fn read_bin<T: DeserializeOwned>(path: &Path) -> Result<T, SavepointError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    bincode::deserialize(&bytes).map_err(|e| SavepointError::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// Writes `value` to `path` through a temporary file and a rename.
/// Writes `value` to `path` through a temporary file and a rename; returns the bytes written.
fn write_bin<T: Serialize>(path: &Path, value: &T) -> Result<u64, SavepointError> {
    let bytes = bincode::serialize(value).map_err(|e| SavepointError::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SavepointError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl Savepoint {
    /// Opens `root` (created if missing) for a run of `workers` workers over `processes`
    /// processes whose state depends on `settings` (dataflow, topic, parameters): finds the
    /// newest complete savepoint to resume from, checks it was written with the same
    /// settings, and reads its source positions.
    pub fn open(
        root: &Path,
        settings: BTreeMap<String, String>,
        workers: usize,
        (process, processes): (usize, usize),
    ) -> Result<Self, SavepointError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let gens = generations(root)?;
        let mut resumed = None;
        for &g in &gens {
            let dir = root.join(dir_name(g));
            let Some(manifests) = complete(&dir)? else {
                continue;
            };
            let saved = &manifests[0];
            for (k, v) in &saved.settings {
                let now = settings.get(k).cloned().unwrap_or_else(|| "none".into());
                if *v != now {
                    return Err(SavepointError::Mismatch {
                        path: dir,
                        what: format!("{k} = {v}"),
                        now: format!("{k} = {now}"),
                    });
                }
            }
            let mut partitions = BTreeMap::new();
            let mut frontier: Option<EventTime> = None;
            for w in 0..saved.workers {
                let path = dir.join(format!("source.w{w}.bin"));
                let pos: (u32, SourcePosition) = read_bin(&path)?;
                if pos.0 != VERSION {
                    return Err(SavepointError::Corrupt {
                        path,
                        why: format!("format version {}, this build reads {VERSION}", pos.0),
                    });
                }
                for p in pos.1.partitions {
                    partitions.insert(p.partition, p);
                }
                frontier = Some(frontier.map_or(pos.1.frontier, |f| f.min(pos.1.frontier)));
            }
            resumed = Some(Resumed {
                dir,
                workers: saved.workers,
                partitions,
                frontier: frontier.unwrap_or(EventTime::MIN),
                barrier: saved.barrier,
                cut: saved.barrier.or(saved.cut),
                outputs: manifests
                    .iter()
                    .enumerate()
                    .map(|(p, m)| (p, m.outputs.clone()))
                    .collect(),
                result_offsets: lowest_offsets(manifests.iter().map(|m| &m.result_offsets)),
            });
            break;
        }
        Ok(Savepoint {
            root: root.to_path_buf(),
            generation: gens.first().map_or(0, |g| g.0 + 1),
            settings,
            workers,
            processes,
            process,
            resumed,
            errors: Mutex::default(),
            sources_saved: Default::default(),
            stopped: Default::default(),
            written: Default::default(),
            checkpoints: None,
            stop_cut: Mutex::default(),
        })
    }

    /// Also writes a checkpoint at every multiple of `every` milliseconds of event time
    /// (see the module docs).
    pub fn with_checkpoints(mut self, every: EventTime) -> Self {
        self.checkpoints = Some(Mutex::new(Checkpoints {
            every: every.max(1),
            ..Checkpoints::default()
        }));
        self
    }

    /// Notes the cut of this run's stop (the lowest stop mark a keyed operator received),
    /// which the manifest records: a resumed run's collections start there.
    pub fn note_stop_cut(&self, cut: EventTime) {
        let mut c = self.stop_cut.lock().unwrap_or_else(|p| p.into_inner());
        *c = Some(c.map_or(cut, |x| x.min(cut)));
    }

    /// The cut of this run's stop, once known ([`Savepoint::note_stop_cut`]).
    pub fn stop_cut(&self) -> Option<EventTime> {
        *self.stop_cut.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cp(&self) -> Option<std::sync::MutexGuard<'_, Checkpoints>> {
        self.checkpoints
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether this run writes checkpoints.
    pub fn checkpointing(&self) -> bool {
        self.checkpoints.is_some()
    }

    /// The barrier a participant whose frontier moved from `before` to `now` has reached:
    /// the highest multiple of the interval in `(before, now]`, if any. Barriers at or before
    /// the frontier this run resumed at are behind it already.
    pub fn barrier(&self, before: EventTime, now: EventTime) -> Option<EventTime> {
        let every = self.cp()?.every;
        if before == EventTime::MIN {
            // A first frontier crosses no barrier: there is nothing before it to save.
            return None;
        }
        let floor = before.max(self.resumed.as_ref().map_or(EventTime::MIN, |r| r.frontier));
        let b = now.div_euclid(every).saturating_mul(every);
        (b > floor && now < EventTime::MAX).then_some(b)
    }

    /// Shows the checkpoints this process completes and gives up in `metrics` (the
    /// dashboard and `/metrics` read them).
    pub fn counted_in(&self, metrics: Arc<crate::engine::Metrics>) {
        if let Some(mut c) = self.cp() {
            c.metrics = Some(metrics);
        }
    }

    /// The event time between barriers, when this run writes checkpoints.
    pub fn checkpoint_every(&self) -> Option<EventTime> {
        self.cp().map(|c| c.every)
    }

    /// The first barrier after `t`.
    pub fn next_barrier(&self, t: EventTime) -> EventTime {
        match self.cp() {
            Some(c) => t
                .div_euclid(c.every)
                .saturating_add(1)
                .saturating_mul(c.every),
            None => EventTime::MAX,
        }
    }

    /// The frontier this run resumed at (where its barriers start), or `EventTime::MIN`.
    pub fn floor(&self) -> EventTime {
        self.resumed.as_ref().map_or(EventTime::MIN, |r| r.frontier)
    }

    /// Registers a checkpoint participant being built: a source or keyed operator, or an
    /// output sink (`sink`).
    pub fn join(&self, sink: bool) {
        if let Some(mut c) = self.cp() {
            if sink {
                c.sinks += 1;
            } else {
                c.participants += 1;
            }
        }
    }

    /// A local worker's dataflow is built: its participants are all registered.
    pub fn built(&self) {
        if let Some(mut c) = self.cp() {
            c.built += 1;
        }
    }

    /// A source or keyed operator wrote its part of the checkpoint at `barrier`.
    fn part_done(&self, barrier: EventTime, written: [u64; 3]) {
        let Some(mut c) = self.cp() else { return };
        let p = c.progress.entry(barrier).or_default();
        p.done += 1;
        for (a, b) in p.written.iter_mut().zip(written) {
            *a += b;
        }
        self.complete(&mut c, barrier);
    }

    /// A part of the checkpoint at `barrier` could not be written: the checkpoint is given
    /// up (logged and counted; the run goes on, and the previous one stays in force).
    fn part_failed(&self, barrier: EventTime, e: SavepointError) {
        tracing::error!(barrier, error = %e, "checkpoint not written");
        let Some(mut c) = self.cp() else { return };
        c.progress.entry(barrier).or_default().abandoned = true;
        c.note_failed();
    }

    /// An output sink passed `barrier`, having written every row before it to its file and,
    /// when `confirmed`, had every row before it that it sent to Kafka acknowledged (or
    /// kept as undelivered). The last of the process's sinks measures the output files
    /// (`measure`), while every sink still holds the rows at or after the barrier. A sink
    /// whose rows were not confirmed gives the checkpoint up: a crash after it could lose
    /// rows it counts as sent.
    pub fn sink_passed(
        &self,
        barrier: EventTime,
        confirmed: bool,
        measure: impl FnOnce() -> Measured,
    ) {
        let Some(mut c) = self.cp() else { return };
        if !confirmed {
            let p = c.progress.entry(barrier).or_default();
            let first = !p.abandoned;
            p.abandoned = true;
            if first {
                c.note_failed();
            }
        }
        let (sinks, ready) = (c.sinks, c.built_all(self.local_workers()));
        // A sink reports one barrier at a time, the next only once the last is released: so
        // an earlier one still open was jumped over by this sink, and can never complete.
        for (_, p) in c.progress.range_mut(..barrier) {
            if p.outputs.is_none() {
                p.abandoned = true;
            }
        }
        // And a later one already passed by a sink means that sink jumped this one.
        let jumped = c.progress.range(barrier + 1..).any(|(_, p)| p.sinks > 0);
        let ended = c.sink_ended;
        let p = c.progress.entry(barrier).or_default();
        p.sinks += 1;
        p.abandoned |= jumped || ended;
        if p.sinks == sinks && ready && !p.abandoned {
            p.outputs = Some(measure());
        }
        self.complete(&mut c, barrier);
    }

    /// Whether every sink of the process passed `barrier` (or it was abandoned): the sinks
    /// may write the rows at or after it.
    pub fn sinks_released(&self, barrier: EventTime) -> bool {
        self.cp().is_none_or(|c| {
            c.progress
                .get(&barrier)
                .is_none_or(|p| p.outputs.is_some() || p.abandoned)
        })
    }

    /// A sink's input ended: it writes what it holds, so a checkpoint its peers have not all
    /// passed yet would measure rows after its barrier. Those are abandoned.
    pub fn sink_ended(&self) {
        if let Some(mut c) = self.cp() {
            c.sink_ended = true;
            for p in c.progress.values_mut() {
                if p.outputs.is_none() {
                    p.abandoned = true;
                }
            }
        }
    }

    fn local_workers(&self) -> usize {
        (self.workers / self.processes.max(1)).max(1)
    }

    /// Writes this process's manifest of the checkpoint at `barrier` once all its
    /// participants are done, and prunes old savepoints.
    fn complete(&self, c: &mut Checkpoints, barrier: EventTime) {
        let ready = c.built_all(self.local_workers());
        let participants = c.participants;
        let Some(p) = c.progress.get(&barrier) else {
            return;
        };
        if !ready || p.abandoned || p.done < participants {
            return;
        }
        let Some(Measured {
            files: outputs,
            topics: result_offsets,
        }) = p.outputs.clone()
        else {
            return;
        };
        let written = p.written;
        // Older checkpoints still open can no longer complete before this one matters.
        c.progress.retain(|&b, _| b > barrier);
        let id = (self.generation, barrier);
        let manifest = Manifest {
            version: VERSION,
            workers: self.workers,
            processes: self.processes,
            settings: self.settings.clone(),
            barrier: Some(barrier),
            outputs,
            cut: Some(barrier),
            result_offsets,
        };
        let dir = self.root.join(dir_name(id));
        match self.write_manifest(&dir, &manifest).and_then(|bytes| {
            self.prune(id)?;
            Ok(bytes)
        }) {
            Ok(bytes) => {
                tracing::info!(dir = %dir.display(), barrier, states = written[0], held = written[1], bytes = written[2] + bytes, "checkpoint written");
                c.written.count += 1;
                c.written.last = Some(dir);
                c.written.last_bytes = written[2] + bytes;
                if let Some(m) = &c.metrics {
                    let r = std::sync::atomic::Ordering::Relaxed;
                    m.checkpoint_barrier.store(barrier, r);
                    m.checkpoint_bytes.store(written[2] + bytes, r);
                    m.checkpoints.fetch_add(1, r);
                }
            }
            Err(e) => {
                tracing::error!(barrier, error = %e, "checkpoint not written");
                c.note_failed();
            }
        }
    }

    /// What checkpoints this process wrote.
    pub fn checkpoints_written(&self) -> CheckpointsWritten {
        self.cp().map(|c| c.written.clone()).unwrap_or_default()
    }

    /// The savepoint this run resumes from, if any.
    pub fn resumed(&self) -> Option<&Resumed> {
        self.resumed.as_ref()
    }

    /// The directory a stop of this run writes to.
    pub fn target(&self) -> PathBuf {
        self.dir(Cut::Stop)
    }

    /// The directory of one of this run's savepoints.
    pub fn dir(&self, cut: Cut) -> PathBuf {
        let b = match cut {
            Cut::Stop => EventTime::MAX,
            Cut::Barrier(b) => b,
        };
        self.root.join(dir_name((self.generation, b)))
    }

    fn target_file(&self, cut: Cut, name: &str) -> Result<PathBuf, SavepointError> {
        let dir = self.dir(cut);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(dir.join(name))
    }

    /// Keeps a failure to report after the run.
    pub fn fail(&self, e: SavepointError) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    /// The first failure kept, if any.
    pub fn take_error(&self) -> Option<SavepointError> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .next()
    }

    /// Notes that a source of this process was stopped: its keyed operators then save
    /// instead of processing what they hold ([`Savepoint::stopped`]).
    pub fn note_stopped(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a source of this process was stopped. A source that reaches the end of its
    /// input still writes its position (so a savepoint has every worker's), but only a stop
    /// makes one: at the end of the input everything is processed, as without a savepoint.
    pub fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes worker `worker`'s source position: at its end (stopped or not) for
    /// [`Cut::Stop`], or when its frontier reaches a barrier.
    pub fn save_source(&self, cut: Cut, worker: usize, pos: &SourcePosition) {
        let r = self
            .target_file(cut, &format!("source.w{worker}.bin"))
            .and_then(|path| write_bin(&path, &(VERSION, pos)));
        match (r, cut) {
            (Ok(bytes), Cut::Stop) => {
                self.count(0, 0, bytes);
                self.sources_saved
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (Ok(bytes), Cut::Barrier(b)) => self.part_done(b, [0, 0, bytes]),
            (Err(e), Cut::Barrier(b)) => self.part_failed(b, e),
            (Err(e), Cut::Stop) => self.fail(e),
        }
    }

    /// The states and held readings of keyed operator `name` that worker `worker` of this
    /// run owns now (a series is `series_worker(series, workers)`'s, as the exchange routes
    /// it), from every worker's file of the savepoint resumed from (none when not resuming).
    pub fn load_keyed<V: DeserializeOwned>(
        &self,
        name: &str,
        worker: usize,
    ) -> Result<(Vec<SavedState<V>>, Vec<Reading>), SavepointError> {
        let Some(r) = &self.resumed else {
            return Ok((Vec::new(), Vec::new()));
        };
        let owns = |s: &str| crate::engine::series_worker(s, self.workers) == worker;
        let (mut states, mut held) = (Vec::new(), Vec::new());
        for w in 0..r.workers {
            let path = r.dir.join(format!("{name}.w{w}.bin"));
            let file: KeyedFile<V> = read_bin(&path)?;
            if file.version != VERSION {
                return Err(SavepointError::Corrupt {
                    path,
                    why: format!("format version {}", file.version),
                });
            }
            states.extend(file.states.into_iter().filter(|s| owns(&s.0)));
            held.extend(file.held.into_iter().filter(|r| owns(&r.series)));
        }
        Ok((states, held))
    }

    /// [`Savepoint::load_keyed`] for an operator being built, which cannot return an error:
    /// a savepoint that cannot be read is kept as the run's failure and sets `stop`, and
    /// nothing is restored.
    pub fn take_keyed<V: DeserializeOwned>(
        &self,
        name: &str,
        worker: usize,
        stop: &AtomicBool,
    ) -> (Vec<SavedState<V>>, Vec<Reading>) {
        self.load_keyed(name, worker).unwrap_or_else(|e| {
            self.fail(e);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (Vec::new(), Vec::new())
        })
    }

    /// Writes worker `worker`'s share of keyed operator `name` to the stop's savepoint or a
    /// checkpoint.
    pub fn save_keyed<V: Serialize>(
        &self,
        cut: Cut,
        name: &str,
        worker: usize,
        states: Vec<SavedState<V>>,
        held: Vec<Reading>,
    ) {
        let (n, h) = (states.len() as u64, held.len() as u64);
        let file = KeyedFile {
            version: VERSION,
            states,
            held,
        };
        match (
            self.target_file(cut, &format!("{name}.w{worker}.bin"))
                .and_then(|path| write_bin(&path, &file)),
            cut,
        ) {
            (Ok(bytes), Cut::Stop) => self.count(n, h, bytes),
            (Ok(bytes), Cut::Barrier(b)) => self.part_done(b, [n, h, bytes]),
            (Err(e), Cut::Barrier(b)) => self.part_failed(b, e),
            (Err(e), Cut::Stop) => self.fail(e),
        }
    }

    fn count(&self, states: u64, held: u64, bytes: u64) {
        for (c, v) in self.written.iter().zip([states, held, bytes]) {
            c.fetch_add(v, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// After this process's `local_workers` are done: when a source was stopped, writes the
    /// process's manifest, which makes the savepoint count once every process has written its
    /// own, and prunes all but the two newest complete generations. Returns the savepoint's
    /// directory (`None` when nothing was stopped: the input ended), or the first failure
    /// while writing (then no manifest is written and the previous savepoint stays in force).
    pub fn finish(&self, local_workers: usize) -> Result<Option<Written>, SavepointError> {
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        if !self.stopped() {
            // The input ended: the positions the sources wrote are no savepoint.
            let per = self.workers / self.processes.max(1);
            for w in self.process * per..(self.process + 1) * per {
                let _ = std::fs::remove_file(self.target().join(format!("source.w{w}.bin")));
            }
            let _ = std::fs::remove_dir(self.target()); // only if empty
            return Ok(None);
        }
        let saved = self.sources_saved.load(std::sync::atomic::Ordering::SeqCst);
        if saved != local_workers {
            return Err(SavepointError::Io {
                path: self.target(),
                source: std::io::Error::other(format!(
                    "{saved} of {local_workers} sources wrote their position"
                )),
            });
        }
        let manifest = Manifest {
            version: VERSION,
            workers: self.workers,
            processes: self.processes,
            settings: self.settings.clone(),
            barrier: None,
            outputs: BTreeMap::new(),
            cut: self.stop_cut(),
            result_offsets: TopicOffsets::new(),
        };
        let manifest_bytes = self.write_manifest(&self.target(), &manifest)?;
        self.prune((self.generation, EventTime::MAX))?;
        let [states, held, bytes] = self
            .written
            .each_ref()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed));
        Ok(Some(Written {
            dir: self.target(),
            states,
            held,
            bytes: bytes + manifest_bytes,
        }))
    }

    /// Writes this process's manifest into `dir`; returns its size.
    fn write_manifest(&self, dir: &Path, manifest: &Manifest) -> Result<u64, SavepointError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(format!("manifest.p{}.json", self.process));
        let text = serde_json::to_vec_pretty(manifest).map_err(|e| SavepointError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        write_atomic(&path, &text)?;
        Ok(text.len() as u64)
    }

    /// On process 0: removes every savepoint up to `upto` but the two newest complete ones
    /// (newer ones may be on their way).
    fn prune(&self, upto: GenId) -> Result<(), SavepointError> {
        if self.process != 0 {
            return Ok(());
        }
        let mut kept = 0;
        for g in generations(&self.root)? {
            if g > upto {
                continue;
            }
            let dir = self.root.join(dir_name(g));
            if kept < 2 && complete(&dir)?.is_some() {
                kept += 1;
            } else if kept >= 2 {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Sym;

    fn settings(flow: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("dataflow".to_string(), flow.to_string())])
    }

    #[test]
    fn a_savepoint_counts_once_every_process_wrote_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sp");
        // Two processes of one worker each start, then stop and write.
        let sps: Vec<Savepoint> = (0..2)
            .map(|p| Savepoint::open(&root, settings("anomaly"), 2, (p, 2)).unwrap())
            .collect();
        for (p, sp) in sps.iter().enumerate() {
            assert!(sp.resumed().is_none());
            assert_eq!(sp.target(), root.join("g0"));
            sp.save_source(
                Cut::Stop,
                p,
                &SourcePosition {
                    frontier: 100 + p as i64,
                    partitions: vec![PartitionPosition {
                        partition: p as i32,
                        next_offset: 7,
                        max_ts: Some(200),
                    }],
                },
            );
            let held = vec![Reading::single(Sym::new(&format!("s{p}")), 150, 1.0)];
            let state = vec![(format!("s{p}"), "value".to_string(), 90, 5u32)];
            sp.save_keyed(Cut::Stop, "op", p, state, held);
        }
        sps[0].note_stopped();
        sps[0].finish(1).unwrap();
        // Only process 0's manifest: not a savepoint yet.
        let early = Savepoint::open(&root, settings("anomaly"), 1, (0, 1)).unwrap();
        assert!(early.resumed().is_none());
        assert_eq!(early.target(), root.join("g1"), "g0 exists, incomplete");
        sps[1].note_stopped();
        sps[1].finish(1).unwrap();
        let one = Savepoint::open(&root, settings("anomaly"), 1, (0, 1)).unwrap();
        let r = one.resumed().expect("complete now");
        assert_eq!(r.frontier, 100);
        assert_eq!(r.workers, 2);
        assert_eq!(r.partitions.len(), 2);
        let (states, held) = one.load_keyed::<u32>("op", 0).unwrap();
        assert_eq!((states.len(), held.len()), (2, 2));
        // On three workers, each takes the series it owns now, whichever worker wrote them.
        let three = Savepoint::open(&root, settings("anomaly"), 3, (0, 1)).unwrap();
        let mut seen = Vec::new();
        for w in 0..3 {
            let (states, held) = three.load_keyed::<u32>("op", w).unwrap();
            for (s, ..) in &states {
                assert_eq!(crate::engine::series_worker(s, 3), w, "{s}");
                seen.push(s.clone());
            }
            assert!(held
                .iter()
                .all(|r| crate::engine::series_worker(&r.series, 3) == w));
            assert_eq!(held.len(), states.len());
        }
        seen.sort();
        assert_eq!(seen, vec!["s0", "s1"]);
        // Another dataflow may not resume from it.
        let err = Savepoint::open(&root, settings("sessions"), 1, (0, 1)).unwrap_err();
        assert!(err.to_string().contains("dataflow = anomaly"), "{err}");
    }

    #[test]
    fn a_checkpoint_whose_result_rows_are_unconfirmed_or_whose_peer_sink_ended_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let sp = Savepoint::open(dir.path(), settings("anomaly"), 1, (0, 1))
            .unwrap()
            .with_checkpoints(100);
        // One source and two sinks.
        sp.join(false);
        sp.join(true);
        sp.join(true);
        sp.built();
        let at = |b| SourcePosition {
            frontier: b,
            partitions: Vec::new(),
        };
        let measured = std::cell::Cell::new(0);
        let measure = || {
            measured.set(measured.get() + 1);
            Measured::default()
        };
        // Both sinks pass 100, one with rows Kafka had not acknowledged: given up, never
        // measured, counted, and the sinks may go on.
        sp.save_source(Cut::Barrier(100), 0, &at(100));
        sp.sink_passed(100, false, measure);
        sp.sink_passed(100, true, measure);
        assert!(sp.sinks_released(100));
        assert_eq!(measured.get(), 0);
        let w = sp.checkpoints_written();
        assert_eq!((w.count, w.failed), (0, 1));
        // Both confirmed at 200: written.
        sp.save_source(Cut::Barrier(200), 0, &at(200));
        sp.sink_passed(200, true, measure);
        assert!(!sp.sinks_released(200), "one sink still to pass");
        sp.sink_passed(200, true, measure);
        assert!(sp.sinks_released(200));
        assert_eq!(measured.get(), 1);
        assert_eq!(sp.checkpoints_written().count, 1);
        // One sink's input ends before 300: the other passing 300 later does not wait for it.
        sp.sink_ended();
        sp.save_source(Cut::Barrier(300), 0, &at(300));
        sp.sink_passed(300, true, measure);
        assert!(sp.sinks_released(300), "a peer that ended never passes");
        assert_eq!(measured.get(), 1);
        assert_eq!(sp.checkpoints_written().count, 1);
        let next = Savepoint::open(dir.path(), settings("anomaly"), 1, (0, 1)).unwrap();
        assert_eq!(next.resumed().and_then(|r| r.barrier), Some(200));
    }

    #[test]
    fn a_damaged_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let sp = Savepoint::open(&root, settings("anomaly"), 1, (0, 1)).unwrap();
        sp.save_source(Cut::Stop, 0, &SourcePosition::default());
        sp.note_stopped();
        sp.finish(1).unwrap();
        std::fs::write(root.join("g0/source.w0.bin"), b"\x01").unwrap();
        let err = Savepoint::open(&root, settings("anomaly"), 1, (0, 1)).unwrap_err();
        assert!(err.to_string().contains("source.w0.bin"), "{err}");
        // Another format version is refused, not misread.
        let other = bincode::serialize(&(VERSION + 1, SourcePosition::default())).unwrap();
        std::fs::write(root.join("g0/source.w0.bin"), other).unwrap();
        let err = Savepoint::open(&root, settings("anomaly"), 1, (0, 1)).unwrap_err();
        assert!(err.to_string().contains("format version 3"), "{err}");
    }

    #[test]
    fn only_the_two_newest_savepoints_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for g in 0..4u64 {
            let sp = Savepoint::open(&root, settings("anomaly"), 1, (0, 1)).unwrap();
            assert_eq!(sp.resumed().is_some(), g > 0);
            sp.save_source(
                Cut::Stop,
                0,
                &SourcePosition {
                    frontier: g as i64,
                    partitions: Vec::new(),
                },
            );
            sp.note_stopped();
            let w = sp.finish(1).unwrap().unwrap();
            assert_eq!(w.dir, root.join(format!("g{g}")));
            assert_eq!((w.states, w.held), (0, 0));
        }
        assert_eq!(
            generations(&root).unwrap(),
            vec![(3, EventTime::MAX), (2, EventTime::MAX)]
        );
        let sp = Savepoint::open(&root, settings("anomaly"), 1, (0, 1)).unwrap();
        assert_eq!(sp.resumed().unwrap().frontier, 3);
    }
}
