//! The in-process hub between dataflow outputs and the dashboard: it stages the updates each
//! sink offers, releases them as one **frame** when every sink of a pipeline has passed a
//! time (so a page never shows half a window or half a set change), and keeps what a newly
//! opened page needs at once: a bounded recent history per series, the latest forecast per
//! series, the current outlier set with its recent changes, the top-k series by score, the
//! series that went silent, and the counters of every pipeline.
//!
//! Memory is bounded: at most [`HubConfig::max_series`] series (at the cap, the held ones stay
//! while they report and newcomers wait for a place; see there) of at most [`HubConfig::history`] points each (48 bytes a point),
//! plus one forecast per series, [`HubConfig::changes`] outlier-set changes, each pipeline's
//! top-k, at most `max_series` silent series (the longest silent are dropped beyond it) and 120
//! one-second counter samples per pipeline. With the defaults (5,000 series x 300 points)
//! the histories take at most ~72 MB, whatever the number of readings.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::engine::metrics::{Metrics, Snapshot, WorkerStatus};
use crate::engine::FastBuild;
use crate::record::{EventTime, Sym};

/// Bounds of the hub's memory.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Points kept per series (default 300).
    pub history: usize,
    /// Series kept (default 5,000). At the cap the hub keeps the series it holds while they
    /// report, so their histories stay whole, and counts the readings of the others as
    /// uncharted: a series takes a place when one goes silent or stale (no reading for 10 of
    /// its own mean gaps), or at once, from the least recently updated, when it is in the
    /// outlier set or a top-k. (Dropping the least recently updated for each newcomer, as
    /// before, left each held series with 3-5 of its 200 points when 10,000 series reported
    /// in random order, and the churn cost throughput.)
    pub max_series: usize,
    /// Outlier-set changes kept (default 1,000).
    pub changes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history: 300,
            max_series: 5_000,
            changes: 1_000,
        }
    }
}

/// What a dataflow row shows on the dashboard (see `engine::output::Row::publish`). In a
/// cluster, updates travel from every worker to the process that serves the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Update {
    /// A reading of a series with its rolling statistics and score.
    Point(PointUpdate),
    /// A change to the outlier set: `diff` +1 entered, -1 left.
    Outlier {
        /// Series id.
        series: Sym,
        /// Value name.
        field: Sym,
        /// Latest score, when known.
        score: Option<f64>,
        /// +1 or -1.
        diff: i64,
        /// Event time (UTC ms) of the change: the reading (or expiry) that made it.
        at: EventTime,
    },
    /// A forecast path issued after a reading.
    Forecast(ForecastUpdate),
    /// A change to a pipeline's top-k by latest score (`outliers_top`): `diff` +1 entered
    /// with this score, -1 left with it (a new score is a -1 and a +1).
    Top {
        /// Series id.
        series: Sym,
        /// Value name.
        field: Sym,
        /// Its score in the ranking.
        score: f64,
        /// +1 or -1.
        diff: i64,
        /// Event time (UTC ms) of the snapshot.
        at: EventTime,
    },
    /// A closed session window (the `sessions` dataflow): a burst of readings, or an
    /// excursion outside a limit.
    Session(SessionUpdate),
    /// A (series, field) that stopped reporting: its state expired (`--state-ttl`). It stays
    /// silent until a reading after `last_ts` arrives.
    Silent {
        /// Series id.
        series: Sym,
        /// Value name.
        field: Sym,
        /// Event time (UTC ms) of its last reading.
        last_ts: EventTime,
        /// Event time (UTC ms) its state expired.
        at: EventTime,
    },
}

/// A closed session of one value of one series.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SessionUpdate {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Event time (UTC ms) of its first reading.
    pub start: EventTime,
    /// Event time (UTC ms) of its last reading.
    pub end: EventTime,
    /// Readings in it.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Their minimum.
    pub min: f64,
    /// Their maximum.
    pub max: f64,
}

/// A reading of a series, as the series chart shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointUpdate {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// The point (its `seq` is set when the hub releases it).
    pub point: Point,
}

/// A forecast path with its 95% interval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForecastUpdate {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Model name.
    pub model: Sym,
    /// Event time of the reading it was issued after.
    pub issued: EventTime,
    /// Steps ahead: `(ts, point, lower, upper)` (shared with the row that published it).
    pub steps: Arc<[(EventTime, f64, f64, f64)]>,
}

/// One point of a series' history.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Point {
    /// Event time, UTC ms.
    pub ts: EventTime,
    /// Value.
    pub value: f64,
    /// Rolling mean (NaN, shown as null, when the dataflow has none).
    pub mean: f64,
    /// Rolling std (NaN / null when none).
    pub std: f64,
    /// Score in [0, 1] (NaN / null when none).
    pub score: f64,
    /// Anomalous after this reading.
    pub anomalous: bool,
    /// Frame that released it.
    #[serde(skip)]
    pub seq: u64,
}

/// What the hub knows of one (series, field).
#[derive(Debug)]
struct SeriesBuf {
    key: Arc<str>,
    series: Sym,
    field: Sym,
    pipeline: usize,
    points: VecDeque<Point>,
    forecast: Option<(u64, ForecastUpdate)>,
    last_seq: u64,
}

/// A member of the current outlier set.
#[derive(Debug, Clone, Serialize)]
pub struct OutlierEntry {
    /// Series key (`series/field`).
    pub key: Arc<str>,
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Latest score known to the hub.
    pub score: Option<f64>,
    /// Event time (UTC ms) at which it entered: the time of the reading that made it
    /// anomalous.
    pub since: EventTime,
    /// Pipeline that reported it.
    pub pipeline: Arc<str>,
}

/// A series that stopped reporting (its state expired under `--state-ttl`) and has not
/// reported since.
#[derive(Debug, Clone, Serialize)]
pub struct SilentEntry {
    /// Series key (`series/field`).
    pub key: Arc<str>,
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Event time (UTC ms) of its last reading.
    pub last_ts: EventTime,
    /// Event time (UTC ms) from which it counts as silent: its state's expiry.
    pub since: EventTime,
    /// Pipeline that reported it.
    pub pipeline: Arc<str>,
}

/// How many closed sessions the hub keeps (the newest).
pub const SESSIONS_KEPT: usize = 1_000;

/// A closed session, as the Sessions view lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionEntry {
    /// Series key (`series/field`).
    pub key: Arc<str>,
    /// The session.
    #[serde(flatten)]
    pub session: SessionUpdate,
    /// Pipeline that reported it.
    pub pipeline: Arc<str>,
}

/// The latest closed sessions.
#[derive(Debug, Clone, Serialize)]
pub struct SessionsView {
    /// Frame number.
    pub seq: u64,
    /// Sessions closed in all (the hub keeps the newest [`SESSIONS_KEPT`]).
    pub count: u64,
    /// The newest first, at most the `limit` asked for.
    pub set: Vec<SessionEntry>,
}

/// A member of a pipeline's top-k by latest score.
#[derive(Debug, Clone, Serialize)]
pub struct TopEntry {
    /// Series key (`series/field`).
    pub key: Arc<str>,
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Its latest score as of the snapshot.
    pub score: f64,
    /// Event time (UTC ms) of the snapshot it entered with this score.
    pub since: EventTime,
    /// Pipeline whose top-k it is in.
    pub pipeline: Arc<str>,
}

/// A change to the outlier set, as released in a frame.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Frame number.
    pub seq: u64,
    /// Event time (UTC ms) of the change.
    pub time: EventTime,
    /// Series key.
    pub key: Arc<str>,
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// +1 entered, -1 left.
    pub diff: i64,
    /// Score at the change, when known.
    pub score: Option<f64>,
    /// Pipeline that reported it.
    pub pipeline: Arc<str>,
}

/// Time spent in one operator (summed over the workers of this process, or of the cluster).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OperatorTiming {
    /// Times it was scheduled.
    pub runs: u64,
    /// Total time scheduled, seconds.
    pub seconds: f64,
}

impl OperatorTiming {
    /// Adds another worker's (or process's) time in the same operator.
    pub fn add(&mut self, o: &OperatorTiming) {
        self.runs += o.runs;
        self.seconds += o.seconds;
    }
}

/// One-second counter sample of a pipeline.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Wall clock, UTC ms.
    pub at: i64,
    /// Readings in per second over the last second.
    pub in_rate: f64,
    /// Result rows out per second.
    pub out_rate: f64,
    /// Readings in so far.
    pub readings_in: u64,
    /// Rows out so far.
    pub rows_out: u64,
}

/// A remote process's counters, worker statuses and operator timings for one pipeline, as
/// its workers send them to the process that serves a cluster's dashboard (about once a
/// second, and once more when the run ends).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessCounters {
    /// Process index (`-p`).
    pub process: usize,
    /// Its counters.
    pub snapshot: Snapshot,
    /// Its workers' statuses.
    pub workers: Vec<WorkerStatus>,
    /// Time per operator, summed over its workers since the run started.
    pub operators: BTreeMap<String, OperatorTiming>,
}

#[derive(Debug)]
struct Pipeline {
    name: Arc<str>,
    dataflow: String,
    metrics: Arc<Metrics>,
    workers: usize,
    /// Output name -> the input frontier of its sink on each local worker.
    slots: BTreeMap<String, Vec<EventTime>>,
    staged: BTreeMap<EventTime, Staged>,
    released: EventTime,
    /// Latest event time of a point released so far: how far the input reached. `None`
    /// until its first point: a pipeline that shows no series (its dataflow publishes no
    /// points) shows no silent series either, since the hub could not see them report again.
    reached: Option<EventTime>,
    finished: bool,
    operators: BTreeMap<String, OperatorTiming>,
    /// The latest counters of every other process of the cluster (empty for one process).
    remote: BTreeMap<usize, ProcessCounters>,
    samples: VecDeque<Sample>,
    last: (Instant, Snapshot),
}

impl Pipeline {
    /// Counters of this process plus the latest of every other process.
    fn totals(&self) -> Snapshot {
        let mut m = self.metrics.snapshot();
        for r in self.remote.values() {
            m.add(&r.snapshot);
        }
        m
    }

    /// Statuses of this process's workers and of every other process's, by worker index.
    fn all_workers(&self) -> Vec<WorkerStatus> {
        let mut w = self.metrics.workers();
        for r in self.remote.values() {
            w.extend(r.workers.iter().cloned());
        }
        w.sort_by_key(|s| s.worker);
        w
    }

    /// Operator timings of this process plus every other process's.
    fn all_operators(&self) -> BTreeMap<String, OperatorTiming> {
        let mut ops = self.operators.clone();
        for r in self.remote.values() {
            for (name, t) in &r.operators {
                ops.entry(name.clone()).or_default().add(t);
            }
        }
        ops
    }
}

/// (series, field).
type Id = (Sym, Sym);

/// A top-k record: (pipeline, series key, score bits).
type TopRecord = (usize, Arc<str>, u64);

/// The updates of one time, waiting for every sink to pass it: the points and forecasts in
/// arrival order (a series shows its latest forecast by issue time: see
/// [`Hub::apply_forecast`]), and every change to the outlier set, the top-k and the silent
/// series.
#[derive(Debug, Default)]
struct Staged {
    points: Vec<PointUpdate>,
    forecasts: Vec<ForecastUpdate>,
    changes: Vec<Update>,
}

impl Staged {
    fn add(&mut self, u: Update) {
        match u {
            Update::Point(p) => self.points.push(p),
            Update::Forecast(f) => self.forecasts.push(f),
            c @ (Update::Outlier { .. }
            | Update::Silent { .. }
            | Update::Top { .. }
            | Update::Session(_)) => self.changes.push(c),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    seq: u64,
    frame_time: EventTime,
    series: HashMap<Id, SeriesBuf, FastBuild>,
    /// `series/field` -> (series, field), for the API.
    by_key: HashMap<Arc<str>, Id, FastBuild>,
    outliers: BTreeMap<Arc<str>, OutlierEntry>,
    changes: VecDeque<Change>,
    silent: HashMap<Arc<str>, SilentEntry, FastBuild>,
    /// Frame of the latest change to `silent`.
    silent_seq: u64,
    /// Top-k records (pipeline, key, score bits) with their multiplicity: a record is in the
    /// top-k while its count is positive.
    top: HashMap<TopRecord, (i64, TopEntry), FastBuild>,
    /// Frame of the latest change to `top`.
    top_seq: u64,
    /// The latest closed sessions, the newest first (at most [`SESSIONS_KEPT`]).
    sessions: VecDeque<SessionEntry>,
    /// Sessions closed in all.
    sessions_total: u64,
    /// Frame of the latest closed session.
    sessions_seq: u64,
    pipelines: Vec<Pipeline>,
    collectors: Vec<(String, &'static str, Arc<crate::collect::clean::Counters>)>,
    /// Readings of series the hub did not hold (it was full of series still reporting).
    uncharted: u64,
    /// Readings refused since the last look for stale series.
    refused: usize,
    /// The next look waits for `max_series / 4` refused readings times 2 to this power.
    scan_backoff: u32,
    /// Places a series in the outlier set or a top-k may take: of the least recently updated
    /// series when gathered, the oldest last.
    victims: Vec<Id>,
    /// Bumped on every change to the outlier set or a top-k.
    pin_version: u64,
    /// The series in the outlier set or a top-k or followed by a page, as of
    /// `pinned_version`.
    pinned: HashSet<Id, FastBuild>,
    pinned_version: Option<u64>,
    /// Series refused for want of a place: their pipeline and latest reading (at most
    /// `max_series`, the most recent kept), so the series list can offer them.
    waiting: HashMap<Id, (usize, EventTime), FastBuild>,
    /// Series that pages follow (open charts), with how many pages follow each.
    followed: HashMap<Id, u32, FastBuild>,
}

/// The hub: shared by every run of a process and by the HTTP server.
#[derive(Debug)]
pub struct Hub {
    cfg: HubConfig,
    state: Mutex<State>,
    frames: Condvar,
}

/// A pipeline's handle: what its sinks use to offer updates.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    hub: Arc<Hub>,
    id: usize,
}

/// The key of a (series, field) in URLs and JSON: `series/field`.
pub fn series_key(series: &str, field: &str) -> Arc<str> {
    format!("{series}/{field}").into()
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The key of a series: the one the hub already holds for it, else a new one.
fn key_of(known: Option<&SeriesBuf>, id: Id) -> Arc<str> {
    known.map_or_else(|| series_key(&id.0, &id.1), |b| b.key.clone())
}

/// Of entries aged by `A` (older first by its order), the keys of the oldest to drop so that
/// a map over `max` entries keeps nine tenths of `max` (one drop a tenth of `max` wide, not
/// one per insert).
fn oldest_beyond<A: Ord, K>(mut ages: Vec<(A, K)>, max: usize) -> impl Iterator<Item = K> {
    let drop = ages.len().saturating_sub(max * 9 / 10);
    if drop > 0 {
        ages.select_nth_unstable_by(drop - 1, |a, b| a.0.cmp(&b.0));
    }
    ages.into_iter().take(drop).map(|(_, k)| k)
}

fn nan_none(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

impl Hub {
    /// A hub with these bounds.
    pub fn new(cfg: HubConfig) -> Arc<Self> {
        Arc::new(Hub {
            cfg,
            state: Mutex::default(),
            frames: Condvar::new(),
        })
    }

    /// Its bounds.
    pub fn config(&self) -> HubConfig {
        self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shows a collector's counters (overview, `/metrics`).
    pub fn add_collector(
        &self,
        name: &str,
        kind: &'static str,
        counters: Arc<crate::collect::clean::Counters>,
    ) {
        self.lock()
            .collectors
            .push((name.to_string(), kind, counters));
    }

    /// Registers a pipeline (one dataflow run) with its counters and local worker count.
    pub fn register(
        self: &Arc<Self>,
        name: &str,
        dataflow: &str,
        metrics: Arc<Metrics>,
        workers: usize,
    ) -> PipelineHandle {
        let mut s = self.lock();
        s.pipelines.push(Pipeline {
            name: name.into(),
            dataflow: dataflow.to_string(),
            metrics: metrics.clone(),
            workers: workers.max(1),
            slots: BTreeMap::new(),
            staged: BTreeMap::new(),
            released: EventTime::MIN,
            reached: None,
            finished: false,
            operators: BTreeMap::new(),
            remote: BTreeMap::new(),
            samples: VecDeque::new(),
            last: (Instant::now(), metrics.snapshot()),
        });
        PipelineHandle {
            hub: self.clone(),
            id: s.pipelines.len() - 1,
        }
    }

    /// Takes a one-second counter sample of every pipeline (the server calls it each second).
    pub fn sample(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        for p in &mut s.pipelines {
            let snap = p.totals();
            let dt = now.duration_since(p.last.0).as_secs_f64().max(1e-3);
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
            p.samples.push_back(Sample {
                at: wall_ms(),
                in_rate: rate(snap.readings_in, p.last.1.readings_in),
                out_rate: rate(snap.rows_out, p.last.1.rows_out),
                readings_in: snap.readings_in,
                rows_out: snap.rows_out,
            });
            if p.samples.len() > 120 {
                p.samples.pop_front();
            }
            p.last = (now, snap);
        }
        drop(s);
        // Wake subscribers so counters reach pages even when no frame was released.
        self.frames.notify_all();
    }

    /// Waits up to `timeout` for a frame newer than `seq`; returns the latest frame number.
    pub fn wait(&self, seq: u64, timeout: Duration) -> u64 {
        let s = self.lock();
        let (s, _) = self
            .frames
            .wait_timeout_while(s, timeout, |s| s.seq <= seq)
            .unwrap_or_else(|p| p.into_inner());
        s.seq
    }

    /// Number of the latest frame.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// Applies one released update (`closing`: in the pipeline's last frame).
    fn apply(&self, s: &mut State, pipeline: usize, u: Update, closing: bool) {
        let seq = s.seq;
        match u {
            Update::Point(p) => {
                let history = self.cfg.history;
                let id = (p.series, p.field);
                let score = p.point.score;
                let ts = p.point.ts;
                let reached = &mut s.pipelines[pipeline].reached;
                *reached = Some(reached.map_or(ts, |r| r.max(ts)));
                if !s.series.contains_key(&id) && !self.admit(s, pipeline, id) {
                    // Not charted; a silent series that reports again still leaves the list.
                    s.uncharted += 1;
                    s.wait(id, pipeline, ts, self.cfg.max_series);
                    if !s.silent.is_empty() {
                        let key = series_key(&id.0, &id.1);
                        if s.silent.get(&key).is_some_and(|e| ts > e.last_ts) {
                            s.silent.remove(&key);
                            s.silent_seq = seq;
                        }
                    }
                    return;
                }
                let Some(buf) = s.series.get_mut(&id) else {
                    return; // admitted just above
                };
                if buf.points.len() >= history {
                    buf.points.pop_front();
                }
                buf.points.push_back(Point { seq, ..p.point });
                buf.last_seq = seq;
                // A reading after a silence: the series reports again.
                if !s.silent.is_empty() && s.silent.get(&buf.key).is_some_and(|e| ts > e.last_ts) {
                    s.silent.remove(&buf.key);
                    s.silent_seq = seq;
                }
                if score.is_finite() && !s.outliers.is_empty() {
                    if let Some(o) = s.outliers.get_mut(&buf.key) {
                        o.score = Some(score);
                    }
                }
            }
            Update::Forecast(f) => self.apply_forecast(s, f),
            Update::Session(u) => {
                if s.sessions.len() >= SESSIONS_KEPT {
                    s.sessions.pop_back();
                }
                s.sessions.push_front(SessionEntry {
                    key: series_key(&u.series, &u.field),
                    session: u,
                    pipeline: s.pipelines[pipeline].name.clone(),
                });
                s.sessions_total += 1;
                s.sessions_seq = seq;
            }
            Update::Silent {
                series,
                field,
                last_ts,
                at,
            } => self.apply_silent(s, pipeline, (series, field), last_ts, at, closing),
            Update::Top {
                series,
                field,
                score,
                diff,
                at,
            } => {
                let key = key_of(s.series.get(&(series, field)), (series, field));
                let rec = (pipeline, key.clone(), score.to_bits());
                let name = &s.pipelines[pipeline].name;
                let e = s.top.entry(rec.clone()).or_insert_with(|| {
                    (
                        0,
                        TopEntry {
                            key,
                            series,
                            field,
                            score,
                            since: at,
                            pipeline: name.clone(),
                        },
                    )
                });
                e.0 += diff;
                if diff > 0 {
                    e.1.since = at;
                }
                if e.0 == 0 {
                    s.top.remove(&rec);
                }
                s.top_seq = seq;
                s.pin_version += 1;
            }
            Update::Outlier {
                series,
                field,
                score,
                diff,
                at,
            } => {
                let id = (series, field);
                let known = s.series.get(&id);
                let key = key_of(known, id);
                let score = nan_none(score).or_else(|| {
                    known
                        .and_then(|b| b.points.back())
                        .and_then(|p| nan_none(Some(p.score)))
                });
                if diff > 0 {
                    let name = s.pipelines[pipeline].name.clone();
                    s.outliers.insert(
                        key.clone(),
                        OutlierEntry {
                            key: key.clone(),
                            series: id.0,
                            field: id.1,
                            score,
                            since: at,
                            pipeline: name,
                        },
                    );
                } else {
                    s.outliers.remove(&key);
                }
                s.pin_version += 1;
                s.changes.push_back(Change {
                    seq,
                    time: at,
                    key,
                    series: id.0,
                    field: id.1,
                    diff: diff.signum(),
                    score,
                    pipeline: s.pipelines[pipeline].name.clone(),
                });
                if s.changes.len() > self.cfg.changes {
                    s.changes.pop_front();
                }
            }
        }
    }

    /// Sets a series' latest forecast: the one issued last (of equal issue times, the last
    /// applied), so the order in which one frame's forecasts arrive does not matter.
    fn apply_forecast(&self, s: &mut State, f: ForecastUpdate) {
        let seq = s.seq;
        let id = (f.series, f.field);
        if let Some(buf) = s.series.get_mut(&id) {
            if buf
                .forecast
                .as_ref()
                .is_some_and(|(_, cur)| cur.issued > f.issued)
            {
                return;
            }
            buf.forecast = Some((seq, f));
            buf.last_seq = seq;
        }
    }

    /// Marks a series silent from `at`, unless it has reported since `last_ts`, its pipeline
    /// shows no series, or the expiry is one the end of the input made: in the pipeline's
    /// last frame (`closing`), an expiry after the latest reading of the whole input says only
    /// that the input ended, not that this series stopped while the others went on.
    fn apply_silent(
        &self,
        s: &mut State,
        pipeline: usize,
        id: Id,
        last_ts: EventTime,
        at: EventTime,
        closing: bool,
    ) {
        match s.pipelines[pipeline].reached {
            None => return,
            Some(reached) if closing && at > reached => return,
            _ => {}
        }
        let known = s.series.get(&id);
        // Reported since (charted, or waiting for a place): not silent.
        let latest = known
            .and_then(|b| b.points.back())
            .map(|p| p.ts)
            .or_else(|| s.waiting.get(&id).map(|(_, t)| *t));
        if latest.is_some_and(|t| t > last_ts) {
            return;
        }
        let key = key_of(known, id);
        let entry = SilentEntry {
            key: key.clone(),
            series: id.0,
            field: id.1,
            last_ts,
            since: at,
            pipeline: s.pipelines[pipeline].name.clone(),
        };
        s.silent.insert(key, entry);
        s.silent_seq = s.seq;
        if s.silent.len() > self.cfg.max_series {
            // Drop the longest silent.
            let ages = s
                .silent
                .values()
                .map(|e| (e.since, e.key.clone()))
                .collect();
            for k in oldest_beyond(ages, self.cfg.max_series) {
                s.silent.remove(&k);
            }
        }
    }

    /// Applies one released time: points, then forecasts, then changes to the outlier set,
    /// the top-k and the silent series (`closing`: the pipeline's last frame).
    fn apply_staged(&self, s: &mut State, pipeline: usize, st: Staged, closing: bool) {
        for p in st.points {
            self.apply(s, pipeline, Update::Point(p), closing);
        }
        for f in st.forecasts {
            self.apply_forecast(s, f);
        }
        for c in st.changes {
            self.apply(s, pipeline, c, closing);
        }
    }

    /// Makes room for a series the hub does not hold yet, inserting it; false when it stays
    /// uncharted. Below the cap every series is taken. At the cap, a series in the outlier
    /// set or a top-k takes the place of one of the least recently updated twentieth in
    /// neither ([`State::victim`]); any other waits until [`Hub::drop_stale`] frees a place
    /// (see [`HubConfig::max_series`]).
    fn admit(&self, s: &mut State, pipeline: usize, id: Id) -> bool {
        if s.series.len() >= self.cfg.max_series {
            let victim = if s.is_pinned(&id) { s.victim() } else { None };
            match victim {
                Some(v) => s.evict(&v),
                None => {
                    s.refused += 1;
                    return false;
                }
            }
        }
        let key = series_key(&id.0, &id.1);
        s.by_key.insert(key.clone(), id);
        s.waiting.remove(&id);
        s.series.insert(
            id,
            SeriesBuf {
                key,
                series: id.0,
                field: id.1,
                pipeline,
                points: VecDeque::with_capacity(16),
                forecast: None,
                last_seq: s.seq,
            },
        );
        true
    }

    /// Drops the series that stopped reporting, so that waiting ones can take their place:
    /// those gone silent (their state expired) and those whose latest reading is older, in
    /// their pipeline's event time, than [`STALE_GAPS`] of their own mean gap between
    /// readings (for a series with fewer than [`GAP_POINTS`] points: the median gap of the
    /// others; with none known, the span of the held series' latest readings). Series in the outlier set or a top-k
    /// stay. O(series): it runs once per `max_series / 4` readings refused, or up to 16 times
    /// fewer while it finds none.
    fn drop_stale(&self, s: &mut State) {
        let mut gaps: Vec<f64> = s.series.values().filter_map(SeriesBuf::gap).collect();
        let fallback = if gaps.is_empty() {
            let lasts = s
                .series
                .values()
                .filter_map(|b| b.points.back().map(|p| p.ts));
            let (lo, hi) = lasts.fold((EventTime::MAX, EventTime::MIN), |(lo, hi), t| {
                (lo.min(t), hi.max(t))
            });
            (hi > lo).then(|| (hi - lo) as f64)
        } else {
            let mid = gaps.len() / 2;
            gaps.select_nth_unstable_by(mid, f64::total_cmp);
            Some(gaps[mid])
        };
        s.refresh_pinned();
        let stale: Vec<Id> = s
            .series
            .iter()
            .filter(|(id, b)| {
                if s.pinned.contains(*id) {
                    return false;
                }
                if s.silent.contains_key(&b.key) {
                    return true;
                }
                let (Some(now), Some(last)) = (s.pipelines[b.pipeline].reached, b.points.back())
                else {
                    return false;
                };
                b.gap()
                    .or(fallback)
                    .is_some_and(|g| (now - last.ts) as f64 > STALE_GAPS * g)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            s.evict(&id);
        }
    }

    /// After a frame: looks for stale series once enough readings were refused, and keeps the
    /// cap (dropping the least recently updated tenth, should the series ever exceed it).
    fn trim(&self, s: &mut State) {
        let every = (self.cfg.max_series / 4).max(1);
        if s.refused >= every << s.scan_backoff {
            s.refused = 0;
            let before = s.series.len();
            self.drop_stale(s);
            // While the held series all keep reporting, look less often (up to once per
            // 4 x max_series refused readings); once some stop, look often again.
            s.scan_backoff = if s.series.len() < before {
                0
            } else {
                (s.scan_backoff + 1).min(4)
            };
        }
        if s.series.len() <= self.cfg.max_series {
            return;
        }
        let ages = s.series.iter().map(|(id, b)| (b.last_seq, *id)).collect();
        for id in oldest_beyond(ages, self.cfg.max_series) {
            s.evict(&id);
        }
    }
}

/// A series is stale when its latest reading is this many of its own mean gaps old.
const STALE_GAPS: f64 = 10.0;
/// Points a series needs before its own mean gap is used.
const GAP_POINTS: usize = 5;

impl SeriesBuf {
    /// Mean event-time gap between its held points; None with fewer than [`GAP_POINTS`]
    /// (fewer gaps say too little: one short gap would make the series stale soon after).
    fn gap(&self) -> Option<f64> {
        let (first, last) = (self.points.front()?, self.points.back()?);
        let n = self.points.len();
        (n >= GAP_POINTS && last.ts > first.ts)
            .then(|| (last.ts - first.ts) as f64 / (n - 1) as f64)
    }
}

impl State {
    /// Drops a held series.
    fn evict(&mut self, id: &Id) {
        if let Some(b) = self.series.remove(id) {
            self.by_key.remove(&b.key);
        }
    }

    /// A held series, in neither the outlier set nor a top-k, whose place a series in them
    /// may take: one of the least recently updated twentieth when they were last gathered
    /// (gathering is O(series), once per `max_series / 20` places given).
    fn victim(&mut self) -> Option<Id> {
        loop {
            if self.victims.is_empty() {
                self.refresh_pinned();
                let pinned = &self.pinned;
                let mut ages: Vec<(u64, Id)> = self
                    .series
                    .iter()
                    .filter(|(id, _)| !pinned.contains(*id))
                    .map(|(id, b)| (b.last_seq, *id))
                    .collect();
                let k = (ages.len() / 20).max(1).min(ages.len());
                if k == 0 {
                    return None;
                }
                ages.select_nth_unstable_by_key(k - 1, |a| a.0);
                ages.truncate(k);
                ages.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
                self.victims = ages.into_iter().map(|(_, id)| id).collect();
            }
            let id = self.victims.pop()?;
            if self.series.contains_key(&id) && !self.pinned.contains(&id) {
                return Some(id);
            }
        }
    }

    /// Remembers a refused series as waiting (keeping at most `max` entries: beyond it, the
    /// half with the oldest readings is dropped, O(max) once per `max / 2` new ones).
    fn wait(&mut self, id: Id, pipeline: usize, ts: EventTime, max: usize) {
        if self.waiting.len() >= max.max(2) && !self.waiting.contains_key(&id) {
            let mut ages: Vec<(EventTime, Id)> =
                self.waiting.iter().map(|(id, (_, t))| (*t, *id)).collect();
            let half = ages.len() / 2;
            ages.select_nth_unstable_by_key(half, |a| a.0);
            for (_, old) in &ages[..half] {
                self.waiting.remove(old);
            }
        }
        self.waiting.insert(id, (pipeline, ts));
    }

    /// Whether a series is in the outlier set or a top-k, or followed by a page.
    fn is_pinned(&mut self, id: &Id) -> bool {
        self.refresh_pinned();
        self.pinned.contains(id)
    }

    /// Rebuilds the set of series in the outlier set, a top-k or followed, after a change.
    fn refresh_pinned(&mut self) {
        if self.pinned_version == Some(self.pin_version) {
            return;
        }
        self.pinned.clear();
        let outliers = self.outliers.values().map(|o| (o.series, o.field));
        let top = self.top.values().map(|(_, e)| (e.series, e.field));
        let followed = self.followed.keys().copied();
        self.pinned.extend(outliers.chain(top).chain(followed));
        self.pinned_version = Some(self.pin_version);
    }
}

impl PipelineHandle {
    /// Declares an output's sinks (one per local worker), before any of them runs.
    pub fn declare(&self, output: &str) {
        let mut s = self.hub.lock();
        let p = &mut s.pipelines[self.id];
        let w = p.workers;
        p.slots
            .entry(output.to_string())
            .or_insert_with(|| vec![EventTime::MIN; w]);
    }

    /// A sink offers the updates it has seen and its input frontier (`None`: finished).
    /// Updates are staged until every sink of the pipeline has passed their time, then
    /// released together as one frame.
    pub fn offer(
        &self,
        output: &str,
        worker: usize,
        updates: &mut Vec<(EventTime, Update)>,
        frontier: Option<EventTime>,
    ) {
        let hub = &self.hub;
        let mut guard = hub.lock();
        let s = &mut *guard;
        let p = &mut s.pipelines[self.id];
        // Rows of one batch share a time: one map lookup per run of equal times.
        let mut it = updates.drain(..).peekable();
        while let Some((t, u)) = it.next() {
            let st = p.staged.entry(t).or_default();
            st.add(u);
            while let Some((_, u)) = it.next_if(|(t2, _)| *t2 == t) {
                st.add(u);
            }
        }
        drop(it);
        let w = p.workers;
        let slot = p
            .slots
            .entry(output.to_string())
            .or_insert_with(|| vec![EventTime::MIN; w]);
        slot[worker % w] = frontier.unwrap_or(EventTime::MAX);
        let min = p
            .slots
            .values()
            .flat_map(|v| v.iter().copied())
            .min()
            .unwrap_or(EventTime::MIN);
        if min <= p.released {
            return;
        }
        p.released = min;
        if min == EventTime::MAX {
            p.finished = true;
        }
        let later = if min == EventTime::MAX {
            BTreeMap::new()
        } else {
            p.staged.split_off(&min)
        };
        let ready = std::mem::replace(&mut p.staged, later);
        if ready.is_empty() {
            return;
        }
        s.seq += 1;
        let closing = min == EventTime::MAX;
        if closing {
            // How far the input reached, before any expiry of this last frame is judged.
            let p = &mut s.pipelines[self.id];
            for st in ready.values() {
                for u in &st.points {
                    p.reached = Some(p.reached.map_or(u.point.ts, |r| r.max(u.point.ts)));
                }
            }
        }
        for (t, st) in ready {
            s.frame_time = s.frame_time.max(t);
            hub.apply_staged(s, self.id, st, closing);
        }
        hub.trim(s);
        drop(guard);
        hub.frames.notify_all();
    }

    /// Replaces another process's counters (see [`ProcessCounters`]).
    pub fn set_counters(&self, counters: ProcessCounters) {
        let mut s = self.hub.lock();
        s.pipelines[self.id]
            .remote
            .insert(counters.process, counters);
    }

    /// Adds operator timings measured on one worker since its last report.
    pub fn add_timings(&self, timings: &mut HashMap<String, OperatorTiming>) {
        let mut s = self.hub.lock();
        let ops = &mut s.pipelines[self.id].operators;
        for (name, t) in timings.drain() {
            ops.entry(name).or_default().add(&t);
        }
    }
}

/// A series in the list.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesInfo {
    /// Key (`series/field`): what the history API takes.
    pub key: Arc<str>,
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Pipeline that feeds it.
    pub pipeline: Arc<str>,
    /// Points held.
    pub points: usize,
    /// Latest point.
    pub last: Option<Point>,
    /// In the outlier set now.
    pub outlier: bool,
    /// Silent now: stopped reporting (its state expired) and has not reported since.
    pub silent: bool,
    /// Charted: the hub holds its points. A series that is not waits for a place (the hub is
    /// full); a page that follows it (opens its chart) gives it one at its next reading.
    pub charted: bool,
}

/// A series' recent history and latest forecast.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// Key.
    pub key: Arc<str>,
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Points, oldest first.
    pub points: Vec<Point>,
    /// Latest forecast, if the dataflow makes them.
    pub forecast: Option<ForecastUpdate>,
    /// In the outlier set now.
    pub outlier: bool,
    /// Since when it is silent (event time, UTC ms), if it is.
    pub silent_since: Option<EventTime>,
    /// Charted (see [`SeriesInfo::charted`]); if not, no points yet.
    pub charted: bool,
}

/// The series one page follows (see [`Hub::follow`]).
#[derive(Debug, Default)]
pub struct Followed(Vec<Id>);

/// The outlier set and its recent changes.
#[derive(Debug, Clone, Serialize)]
pub struct OutlierView {
    /// Frame number.
    pub seq: u64,
    /// Current members, highest score first.
    pub set: Vec<OutlierEntry>,
    /// Recent changes, oldest first.
    pub changes: Vec<Change>,
}

/// The top-k series by latest score of every pipeline that ranks them.
#[derive(Debug, Clone, Serialize)]
pub struct TopView {
    /// Frame number.
    pub seq: u64,
    /// Members, highest score first (then by pipeline and key).
    pub set: Vec<TopEntry>,
}

/// The series that went silent.
#[derive(Debug, Clone, Serialize)]
pub struct SilentView {
    /// Frame number.
    pub seq: u64,
    /// How many series are silent now.
    pub count: usize,
    /// The most recently silent first, at most the `limit` asked for.
    pub set: Vec<SilentEntry>,
}

/// A pipeline's status and counters.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineView {
    /// Name (`input/dataflow`).
    pub name: String,
    /// Dataflow.
    pub dataflow: String,
    /// `running` or `finished`.
    pub status: &'static str,
    /// Counters now.
    pub readings_in: u64,
    /// Result rows written.
    pub rows_out: u64,
    /// Late readings.
    pub late: u64,
    /// Quarantined inputs.
    pub quarantined: u64,
    /// Produced into Kafka (replays, generators).
    pub produced: u64,
    /// Open windows.
    pub open_windows: i64,
    /// Per-series states held.
    pub series_states: i64,
    /// Per-series states dropped by `--state-ttl` (series that went silent).
    pub expired: u64,
    /// Skipped offsets.
    pub skipped_offsets: u64,
    /// Result rows Kafka did not take (kept in the undelivered file).
    pub results_undelivered: u64,
    /// Checkpoints completed (`--checkpoint-every`; a cluster's: by every process).
    pub checkpoints: u64,
    /// Checkpoints given up.
    pub checkpoints_failed: u64,
    /// Barrier of the newest checkpoint (event time, UTC ms; null before the first).
    pub checkpoint_barrier: Option<EventTime>,
    /// Bytes of the newest checkpoint.
    pub checkpoint_bytes: u64,
    /// Event-time frontier the hub has released up to (UTC ms; null before the first).
    pub released: Option<EventTime>,
    /// Readings in per second, last sample.
    pub in_rate: f64,
    /// Rows out per second, last sample.
    pub out_rate: f64,
    /// Sum of Kafka lag over partitions (null for non-Kafka inputs).
    pub lag: Option<i64>,
    /// Last 120 one-second samples.
    pub samples: Vec<Sample>,
    /// Workers and what each owns (every process's, when this process serves a cluster).
    pub workers: Vec<WorkerStatus>,
    /// Time per operator.
    pub operators: BTreeMap<String, OperatorTiming>,
}

/// Everything the overview and cluster views show.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Latest frame number.
    pub seq: u64,
    /// Latest released event time.
    pub frame_time: Option<EventTime>,
    /// Wall clock, UTC ms.
    pub now: i64,
    /// Series held.
    pub series: usize,
    /// Readings of series the hub did not hold: it was full (`max_series`) of series still
    /// reporting.
    pub uncharted: u64,
    /// Outlier set size.
    pub outliers: usize,
    /// Silent series.
    pub silent: usize,
    /// Frame of the latest change to the silent series (a page refetches them when it moves).
    pub silent_seq: u64,
    /// Frame of the latest change to a top-k.
    pub top_seq: u64,
    /// Sessions closed in all (`sessions` dataflow).
    pub sessions: u64,
    /// Frame of the latest closed session.
    pub sessions_seq: u64,
    /// Pipelines.
    pub pipelines: Vec<PipelineView>,
    /// Collectors feeding Kafka in this process.
    pub collectors: Vec<CollectorView>,
}

/// A collector's counters.
#[derive(Debug, Clone, Serialize)]
pub struct CollectorView {
    /// Its name.
    pub name: String,
    /// Its kind (`mqtt`, `modbus` ...).
    pub kind: &'static str,
    /// Received = produced + quarantined + duplicates; plus source errors.
    #[serde(flatten)]
    pub counters: crate::collect::clean::CounterSnapshot,
}

/// Newer data for a page that has seen frames up to `since`.
#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    /// Latest frame number (pass it back as `since`).
    pub seq: u64,
    /// New points per requested series key.
    pub points: BTreeMap<Arc<str>, Vec<Point>>,
    /// Latest forecast per requested series, when it changed.
    pub forecasts: BTreeMap<Arc<str>, ForecastUpdate>,
    /// Outlier-set changes since then (all of them, oldest first).
    pub changes: Vec<Change>,
    /// Counters.
    pub overview: Overview,
}

impl Hub {
    /// Series whose key contains `q` (case-insensitive), outliers first, at most `limit`.
    pub fn series(&self, q: &str, limit: usize) -> Vec<SeriesInfo> {
        let s = self.lock();
        let q = q.to_lowercase();
        let mut out: Vec<SeriesInfo> = s
            .series
            .values()
            .filter(|b| q.is_empty() || b.key.to_lowercase().contains(&q))
            .map(|b| SeriesInfo {
                key: b.key.clone(),
                series: b.series,
                field: b.field,
                pipeline: s.pipelines[b.pipeline].name.clone(),
                points: b.points.len(),
                last: b.points.back().copied(),
                outlier: s.outliers.contains_key(&b.key),
                silent: s.silent.contains_key(&b.key),
                charted: true,
            })
            .collect();
        out.sort_by(|a, b| b.outlier.cmp(&a.outlier).then_with(|| a.key.cmp(&b.key)));
        out.truncate(limit);
        // Then the series waiting for a place, by key.
        if out.len() < limit && !s.waiting.is_empty() {
            let mut waiting: Vec<SeriesInfo> = s
                .waiting
                .iter()
                .map(|(id, (p, _))| (series_key(&id.0, &id.1), id, *p))
                .filter(|(key, _, _)| q.is_empty() || key.to_lowercase().contains(&q))
                .map(|(key, id, p)| SeriesInfo {
                    outlier: s.outliers.contains_key(&key),
                    silent: s.silent.contains_key(&key),
                    key,
                    series: id.0,
                    field: id.1,
                    pipeline: s.pipelines[p].name.clone(),
                    points: 0,
                    last: None,
                    charted: false,
                })
                .collect();
            waiting.sort_by(|a, b| a.key.cmp(&b.key));
            waiting.truncate(limit - out.len());
            out.extend(waiting);
        }
        out
    }

    /// A held or waiting series by its key.
    fn id_of(s: &State, key: &str) -> Option<Id> {
        if let Some(id) = s.by_key.get(key) {
            return Some(*id);
        }
        s.waiting
            .keys()
            .find(|id| {
                key.len() == id.0.len() + 1 + id.1.len()
                    && key.starts_with(&*id.0)
                    && key[id.0.len()..].starts_with('/')
                    && key.ends_with(&*id.1)
            })
            .copied()
    }

    /// A page follows these series (its open charts): each keeps its place, and one waiting
    /// for a place gets one at its next reading. Unknown keys are ignored. Pass the result to
    /// [`Hub::unfollow`] when the page goes.
    pub fn follow(&self, keys: &[String]) -> Followed {
        let mut s = self.lock();
        let ids: Vec<Id> = keys.iter().filter_map(|k| Self::id_of(&s, k)).collect();
        for id in &ids {
            *s.followed.entry(*id).or_insert(0) += 1;
        }
        if !ids.is_empty() {
            s.pin_version += 1;
        }
        Followed(ids)
    }

    /// The page that followed these series is gone.
    pub fn unfollow(&self, followed: Followed) {
        if followed.0.is_empty() {
            return;
        }
        let mut s = self.lock();
        for id in followed.0 {
            if let Some(n) = s.followed.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    s.followed.remove(&id);
                }
            }
        }
        s.pin_version += 1;
    }

    /// A series' history (None: unknown key).
    pub fn history(&self, key: &str) -> Option<History> {
        let s = self.lock();
        let Some(b) = s.by_key.get(key).and_then(|id| s.series.get(id)) else {
            // A series waiting for a place: known, with no points yet.
            let id = Self::id_of(&s, key)?;
            return Some(History {
                key: key.into(),
                series: id.0,
                field: id.1,
                points: Vec::new(),
                forecast: None,
                outlier: s.outliers.contains_key(key),
                silent_since: s.silent.get(key).map(|e| e.since),
                charted: false,
            });
        };
        Some(History {
            key: b.key.clone(),
            series: b.series,
            field: b.field,
            points: b.points.iter().copied().collect(),
            forecast: b.forecast.as_ref().map(|(_, f)| f.clone()),
            outlier: s.outliers.contains_key(key),
            silent_since: s.silent.get(key).map(|e| e.since),
            charted: true,
        })
    }

    /// Latest forecasts of every series that has one, at most `limit`.
    pub fn forecasts(&self, limit: usize) -> Vec<ForecastUpdate> {
        let s = self.lock();
        let mut v: Vec<ForecastUpdate> = s
            .series
            .values()
            .filter_map(|b| b.forecast.as_ref().map(|(_, f)| f.clone()))
            .collect();
        v.sort_by(|a, b| (&a.series, &a.field).cmp(&(&b.series, &b.field)));
        v.truncate(limit);
        v
    }

    /// The outlier set and its recent changes.
    pub fn outliers(&self) -> OutlierView {
        let s = self.lock();
        let mut set: Vec<OutlierEntry> = s.outliers.values().cloned().collect();
        set.sort_by(|a, b| {
            b.score
                .unwrap_or(0.0)
                .total_cmp(&a.score.unwrap_or(0.0))
                .then_with(|| a.key.cmp(&b.key))
        });
        OutlierView {
            seq: s.seq,
            set,
            changes: s.changes.iter().cloned().collect(),
        }
    }

    /// Every pipeline's top-k, highest score first.
    pub fn top(&self) -> TopView {
        let s = self.lock();
        let mut set: Vec<TopEntry> = s
            .top
            .values()
            .filter(|(n, _)| *n > 0)
            .map(|(_, e)| e.clone())
            .collect();
        set.sort_unstable_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.pipeline.cmp(&b.pipeline))
                .then_with(|| a.key.cmp(&b.key))
        });
        TopView { seq: s.seq, set }
    }

    /// The series silent now, the most recently silent first (then by key), at most `limit`.
    pub fn silent(&self, limit: usize) -> SilentView {
        let s = self.lock();
        let mut set: Vec<SilentEntry> = s.silent.values().cloned().collect();
        set.sort_unstable_by(|a, b| b.since.cmp(&a.since).then_with(|| a.key.cmp(&b.key)));
        set.truncate(limit);
        SilentView {
            seq: s.seq,
            count: s.silent.len(),
            set,
        }
    }

    /// The latest closed sessions, the newest first, at most `limit`.
    pub fn sessions(&self, limit: usize) -> SessionsView {
        let s = self.lock();
        SessionsView {
            seq: s.seq,
            count: s.sessions_total,
            set: s.sessions.iter().take(limit).cloned().collect(),
        }
    }

    fn overview_of(s: &State) -> Overview {
        let pipelines = s
            .pipelines
            .iter()
            .map(|p| {
                let m = p.totals();
                let last = p.samples.back();
                let workers = p.all_workers();
                let lag: Option<i64> = workers
                    .iter()
                    .flat_map(|w| w.partitions.iter())
                    .map(|x| x.lag)
                    .fold(None, |acc, l| match l {
                        Some(l) => Some(acc.unwrap_or(0) + l),
                        None => acc,
                    });
                PipelineView {
                    name: p.name.to_string(),
                    dataflow: p.dataflow.clone(),
                    status: if p.finished { "finished" } else { "running" },
                    readings_in: m.readings_in,
                    rows_out: m.rows_out,
                    late: m.late,
                    quarantined: m.quarantined,
                    produced: m.produced,
                    open_windows: m.open_windows,
                    series_states: m.series_states,
                    expired: m.expired,
                    skipped_offsets: m.skipped_offsets,
                    results_undelivered: m.results_undelivered,
                    checkpoints: m.checkpoints,
                    checkpoints_failed: m.checkpoints_failed,
                    checkpoint_barrier: m.checkpoint_barrier,
                    checkpoint_bytes: m.checkpoint_bytes,
                    released: (p.released > EventTime::MIN && p.released < EventTime::MAX)
                        .then_some(p.released),
                    in_rate: last.map_or(0.0, |x| x.in_rate),
                    out_rate: last.map_or(0.0, |x| x.out_rate),
                    lag,
                    samples: p.samples.iter().copied().collect(),
                    workers,
                    operators: p.all_operators(),
                }
            })
            .collect();
        Overview {
            seq: s.seq,
            frame_time: (s.seq > 0).then_some(s.frame_time),
            now: wall_ms(),
            series: s.series.len(),
            uncharted: s.uncharted,
            outliers: s.outliers.len(),
            silent: s.silent.len(),
            silent_seq: s.silent_seq,
            top_seq: s.top_seq,
            sessions: s.sessions_total,
            sessions_seq: s.sessions_seq,
            pipelines,
            collectors: s
                .collectors
                .iter()
                .map(|(name, kind, c)| CollectorView {
                    name: name.clone(),
                    kind,
                    counters: c.snapshot(),
                })
                .collect(),
        }
    }

    /// Counters, status and cluster layout of every pipeline.
    pub fn overview(&self) -> Overview {
        Self::overview_of(&self.lock())
    }

    /// What a page that has seen frames up to `since` lacks, for the series `keys`.
    pub fn delta(&self, since: u64, keys: &[String]) -> Delta {
        let s = self.lock();
        let mut points = BTreeMap::new();
        let mut forecasts = BTreeMap::new();
        for k in keys {
            let Some(b) = s.by_key.get(k.as_str()).and_then(|id| s.series.get(id)) else {
                continue;
            };
            let key = &b.key;
            if b.last_seq <= since {
                continue;
            }
            let new: Vec<Point> = b
                .points
                .iter()
                .rev()
                .take_while(|p| p.seq > since)
                .copied()
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if !new.is_empty() {
                points.insert(key.clone(), new);
            }
            if let Some((fseq, f)) = &b.forecast {
                if *fseq > since {
                    forecasts.insert(key.clone(), f.clone());
                }
            }
        }
        let changes = s
            .changes
            .iter()
            .filter(|c| c.seq > since)
            .cloned()
            .collect();
        Delta {
            seq: s.seq,
            points,
            forecasts,
            changes,
            overview: Self::overview_of(&s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(series: &str, ts: EventTime, value: f64) -> Update {
        Update::Point(PointUpdate {
            series: series.into(),
            field: "value".into(),
            point: Point {
                ts,
                value,
                mean: f64::NAN,
                std: f64::NAN,
                score: 0.5,
                anomalous: false,
                seq: 0,
            },
        })
    }

    #[test]
    fn frames_wait_for_every_sink_of_the_pipeline() {
        let hub = Hub::new(HubConfig::default());
        let p = hub.register("t/flow", "flow", Arc::default(), 2);
        p.declare("a");
        p.declare("b");
        // Worker 0's sink of `a` passes 10; the others have not: nothing is released.
        p.offer("a", 0, &mut vec![(5, point("s", 5, 1.0))], Some(10));
        assert_eq!(hub.seq(), 0);
        assert!(hub.history("s/value").is_none());
        p.offer("a", 1, &mut vec![], Some(10));
        p.offer("b", 0, &mut vec![], Some(10));
        assert_eq!(hub.seq(), 0, "sink b of worker 1 is still at the start");
        p.offer(
            "b",
            1,
            &mut vec![
                (
                    7,
                    Update::Outlier {
                        series: "s".into(),
                        field: "value".into(),
                        score: None,
                        diff: 1,
                        at: 6,
                    },
                ),
                (12, point("s", 12, 2.0)),
            ],
            Some(8),
        );
        // Everything before 8 is released as one frame; the point at 12 waits.
        assert_eq!(hub.seq(), 1);
        let h = hub.history("s/value").unwrap();
        assert_eq!(h.points.len(), 1);
        assert!(h.outlier);
        let o = hub.outliers();
        assert_eq!(o.set.len(), 1);
        assert_eq!(o.set[0].score, Some(0.5));
        assert_eq!(o.set[0].since, 6, "the change's own event time");
        assert_eq!(o.changes[0].time, 6);
        // Finishing every sink releases the rest.
        for (out, w) in [("a", 0), ("a", 1), ("b", 0), ("b", 1)] {
            p.offer(out, w, &mut vec![], None);
        }
        assert_eq!(hub.history("s/value").unwrap().points.len(), 2);
        assert_eq!(hub.overview().pipelines[0].status, "finished");
        let d = hub.delta(1, &["s/value".to_string()]);
        assert_eq!(d.points["s/value" as &str].len(), 1);
        assert_eq!(d.points["s/value" as &str][0].ts, 12);
        assert!(d.changes.is_empty());
    }

    fn silent(series: &str, last_ts: EventTime, at: EventTime) -> Update {
        Update::Silent {
            series: series.into(),
            field: "value".into(),
            last_ts,
            at,
        }
    }

    #[test]
    fn closed_sessions_are_listed_newest_first_and_the_oldest_go_past_the_cap() {
        let hub = Hub::new(HubConfig::default());
        let p = hub.register("t/sessions", "sessions", Arc::default(), 1);
        p.declare("sessions");
        let session = |series: &str, start: EventTime, end: EventTime| {
            Update::Session(SessionUpdate {
                series: Sym::new(series),
                field: Sym::new("value"),
                start,
                end,
                count: (end - start) as u64 + 1,
                mean: 1.5,
                min: 1.0,
                max: 2.0,
            })
        };
        assert_eq!(hub.overview().sessions, 0);
        // Emitted at their closing times; a frame releases those before its time only.
        let mut ups = vec![
            (11, session("a", 1, 10)),
            (16, session("b", 5, 15)),
            (40, session("a", 20, 39)),
        ];
        p.offer("sessions", 0, &mut ups, Some(20));
        let v = hub.sessions(10);
        let got: Vec<(&str, EventTime, EventTime)> = v
            .set
            .iter()
            .map(|e| (&*e.key, e.session.start, e.session.end))
            .collect();
        assert_eq!(got, vec![("b/value", 5, 15), ("a/value", 1, 10)]);
        assert_eq!((v.count, &*v.set[0].pipeline), (2, "t/sessions"));
        let seq = hub.overview().sessions_seq;
        assert!(seq > 0);
        p.offer("sessions", 0, &mut vec![], Some(50));
        let o = hub.overview();
        assert_eq!(o.sessions, 3);
        assert!(o.sessions_seq > seq);
        assert_eq!(&*hub.sessions(1).set[0].key, "a/value");
        // The hub keeps the newest SESSIONS_KEPT; the count goes on.
        let mut many: Vec<(EventTime, Update)> = (0..SESSIONS_KEPT as i64 + 5)
            .map(|i| (100 + i, session(&format!("m{i}"), 60 + i, 99 + i)))
            .collect();
        p.offer("sessions", 0, &mut many, None);
        let v = hub.sessions(usize::MAX);
        assert_eq!(v.count, 3 + SESSIONS_KEPT as u64 + 5);
        assert_eq!(v.set.len(), SESSIONS_KEPT);
        assert_eq!(&*v.set[0].key, &format!("m{}/value", SESSIONS_KEPT + 4));
        assert_eq!(&*v.set[SESSIONS_KEPT - 1].key, "m5/value");
    }

    #[test]
    fn silent_series_show_until_they_report_again_but_not_for_the_end_of_the_input() {
        let hub = Hub::new(HubConfig::default());
        let p = hub.register("t/flow", "flow", Arc::default(), 1);
        p.declare("a");
        let mut ups: Vec<(EventTime, Update)> = (1..=5).map(|t| (t, point("s1", t, 1.0))).collect();
        ups.extend((1..=20).map(|t| (t, point("s2", t, 1.0))));
        ups.extend((1..=10).map(|t| (t, point("s3", t, 1.0))));
        ups.push((12, silent("s1", 5, 12)));
        ups.sort_by_key(|u| u.0);
        p.offer("a", 0, &mut ups, Some(13));
        let v = hub.silent(10);
        assert_eq!(v.count, 1);
        assert_eq!(
            (&*v.set[0].key, v.set[0].last_ts, v.set[0].since),
            ("s1/value", 5, 12)
        );
        assert_eq!(hub.history("s1/value").unwrap().silent_since, Some(12));
        assert_eq!(hub.history("s2/value").unwrap().silent_since, None);
        let list = hub.series("", 10);
        assert!(list.iter().all(|s| s.silent == (&*s.key == "s1/value")));
        assert_eq!(hub.overview().silent, 1);
        let changed = hub.overview().silent_seq;
        assert!(changed > 0);
        // s1 reports again; an expiry staged for a reading the hub has seen since is stale.
        p.offer(
            "a",
            0,
            &mut vec![(15, point("s1", 15, 1.0)), (16, silent("s2", 4, 16))],
            Some(17),
        );
        assert_eq!(
            hub.silent(10).count,
            0,
            "a reading after the silence ends it"
        );
        assert!(hub.overview().silent_seq > changed);
        // The last frame: s3 stopped at 10 and expired at 18, while s2 went on to 20: silent.
        // s2 and s1 expire at 30 and 25, after the input's last reading: the input ended.
        p.offer(
            "a",
            0,
            &mut vec![
                (18, silent("s3", 10, 18)),
                (25, silent("s1", 15, 25)),
                (30, silent("s2", 20, 30)),
            ],
            None,
        );
        let v = hub.silent(10);
        let got: Vec<(&str, EventTime)> = v.set.iter().map(|e| (&*e.key, e.since)).collect();
        assert_eq!(got, vec![("s3/value", 18)]);
    }

    #[test]
    fn the_top_k_follows_its_changes_highest_score_first() {
        let hub = Hub::new(HubConfig::default());
        let p = hub.register("t/flow", "flow", Arc::default(), 1);
        p.declare("a");
        let top = |series: &str, score: f64, diff: i64, at: EventTime| {
            (
                at,
                Update::Top {
                    series: series.into(),
                    field: "value".into(),
                    score,
                    diff,
                    at,
                },
            )
        };
        p.offer(
            "a",
            0,
            &mut vec![top("a", 0.5, 1, 1000), top("b", 0.9, 1, 1000)],
            Some(1001),
        );
        let got = |hub: &Hub| -> Vec<(String, f64, EventTime)> {
            hub.top()
                .set
                .iter()
                .map(|e| (e.key.to_string(), e.score, e.since))
                .collect()
        };
        assert_eq!(
            got(&hub),
            vec![("b/value".into(), 0.9, 1000), ("a/value".into(), 0.5, 1000)]
        );
        let before = hub.overview().top_seq;
        // a's score rises past b's; b leaves.
        p.offer(
            "a",
            0,
            &mut vec![
                top("a", 0.5, -1, 2000),
                top("a", 0.95, 1, 2000),
                top("b", 0.9, -1, 2000),
            ],
            Some(2001),
        );
        assert_eq!(got(&hub), vec![("a/value".into(), 0.95, 2000)]);
        assert!(hub.overview().top_seq > before);
        assert_eq!(hub.lock().top.len(), 1, "records that left are forgotten");
    }

    /// Offers one point of `series` at `t` and passes `t`.
    fn tick(p: &PipelineHandle, series: &str, t: EventTime) {
        p.offer(
            "a",
            0,
            &mut vec![(t, point(series, t, t as f64))],
            Some(t + 1),
        );
    }

    /// A hub charting at most 100 series of 50 points, with one pipeline of one output `a`.
    fn capped_hub() -> (Arc<Hub>, PipelineHandle) {
        let hub = Hub::new(HubConfig {
            history: 50,
            max_series: 100,
            changes: 5,
        });
        let p = hub.register("t/flow", "flow", Arc::default(), 1);
        p.declare("a");
        (hub, p)
    }

    /// Whether the hub charts the series `key`.
    fn charted(hub: &Hub, key: &str) -> bool {
        hub.history(key).is_some_and(|h| h.charted)
    }

    /// Points held per series whose key starts with `prefix`, in ascending order.
    fn held(hub: &Hub, prefix: &str) -> Vec<usize> {
        let s = hub.lock();
        let mut v: Vec<usize> = s
            .series
            .values()
            .filter(|b| b.key.starts_with(prefix))
            .map(|b| b.points.len())
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn at_the_cap_the_held_series_keep_whole_histories_and_the_others_are_counted() {
        let (hub, p) = capped_hub();
        // 200 series report round-robin, 10 readings each.
        for t in 0..2000i64 {
            tick(&p, &format!("s{}", t % 200), t);
        }
        let counts = held(&hub, "s");
        assert_eq!(counts.len(), 100);
        assert!(counts.iter().all(|&n| n == 10), "{counts:?}");
        let o = hub.overview();
        assert_eq!((o.series, o.uncharted), (100, 1000));
        // The first come are the ones held.
        assert!(charted(&hub, "s0/value") && !charted(&hub, "s199/value"));
    }

    #[test]
    fn series_that_stop_reporting_give_their_place_to_waiting_ones() {
        let (hub, p) = capped_hub();
        // s0..s99 report every 100 ms for 10 rounds, then stop; q0..q99 take over.
        for t in 0..1000i64 {
            tick(&p, &format!("s{}", t % 100), t);
        }
        for t in 1000..1500i64 {
            tick(&p, &format!("q{}", t % 100), t);
        }
        // Five of their gaps old: not stale yet.
        assert_eq!(held(&hub, "s").len(), 100);
        assert!(held(&hub, "q").is_empty());
        for t in 1500..4000i64 {
            tick(&p, &format!("q{}", t % 100), t);
        }
        assert!(held(&hub, "s").is_empty());
        let q = held(&hub, "q");
        assert_eq!(q.len(), 100);
        assert!(q.iter().all(|&n| n >= 10), "{q:?}");
    }

    #[test]
    fn a_series_in_the_outlier_set_is_charted_at_once_when_the_hub_is_full() {
        let (hub, p) = capped_hub();
        for t in 0..300i64 {
            tick(&p, &format!("s{}", t % 100), t);
        }
        tick(&p, "q7", 300);
        assert!(!charted(&hub, "q7/value"));
        let enter = Update::Outlier {
            series: "q7".into(),
            field: "value".into(),
            score: Some(0.99),
            diff: 1,
            at: 301,
        };
        p.offer("a", 0, &mut vec![(301, enter)], Some(302));
        tick(&p, "q7", 302);
        let h = hub.history("q7/value").expect("an outlier is charted");
        assert_eq!(h.points.len(), 1);
        assert!(h.outlier);
        assert_eq!(hub.overview().series, 100);
        // The least recently updated series gave its place.
        assert!(!charted(&hub, "s0/value") && charted(&hub, "s1/value"));
    }

    #[test]
    fn a_waiting_series_is_listed_and_a_page_that_follows_it_gets_it_charted() {
        let (hub, p) = capped_hub();
        for t in 0..300i64 {
            tick(&p, &format!("s{}", t % 100), t);
        }
        tick(&p, "q7", 300);
        // Listed after the charted ones, as not charted; its history is known and empty.
        let listed = hub.series("q", 10);
        assert_eq!(listed.len(), 1);
        assert_eq!((&*listed[0].key, listed[0].charted), ("q7/value", false));
        assert!(hub.series("", 1000).iter().filter(|s| s.charted).count() == 100);
        let h = hub.history("q7/value").unwrap();
        assert!(!h.charted && h.points.is_empty());
        assert!(hub.history("q8/value").is_none(), "never seen");
        // An expiry older than its latest reading (released with its next one, at 301) does
        // not make it silent, charted or not.
        p.offer("a", 0, &mut vec![(301, silent("q7", 250, 301))], Some(301));
        // Nobody follows it: its next reading is not charted either.
        tick(&p, "q7", 301);
        assert!(!hub.history("q7/value").unwrap().charted);
        assert_eq!(hub.silent(10).count, 0);
        // A page follows it (and a key nobody knows, which is ignored).
        let page = hub.follow(&["q7/value".to_string(), "nope/value".to_string()]);
        tick(&p, "q7", 302);
        let h = hub.history("q7/value").unwrap();
        assert!(h.charted);
        assert_eq!(h.points.len(), 1);
        assert_eq!(hub.overview().series, 100);
        assert!(hub.series("q", 10)[0].charted);
        // While followed it keeps its place even when it stops reporting for long.
        for t in 303..3000i64 {
            tick(&p, &format!("w{}", t % 50), t);
        }
        assert!(hub.history("q7/value").unwrap().charted);
        hub.unfollow(page);
        // Unfollowed, it gives its place when one is wanted.
        for t in 3000..6000i64 {
            tick(&p, &format!("x{}", t % 200), t);
        }
        assert!(!charted(&hub, "q7/value"), "stale once unfollowed");
        // The waiting list stays bounded.
        assert!(hub.lock().waiting.len() <= 100);
    }

    #[test]
    fn memory_stays_bounded() {
        let hub = Hub::new(HubConfig {
            history: 10,
            max_series: 100,
            changes: 5,
        });
        let p = hub.register("t/flow", "flow", Arc::default(), 1);
        p.declare("a");
        for t in 0..1000i64 {
            let mut ups = vec![(t, point(&format!("s{}", t % 300), t, t as f64))];
            for i in 0..3 {
                ups.push((
                    t,
                    Update::Outlier {
                        series: format!("s{i}").into(),
                        field: "value".into(),
                        score: Some(0.9),
                        diff: if t % 2 == 0 { 1 } else { -1 },
                        at: t,
                    },
                ));
            }
            p.offer("a", 0, &mut ups, Some(t + 1));
        }
        let s = hub.lock();
        assert!(s.series.len() <= 100, "{} series", s.series.len());
        assert!(s.series.values().all(|b| b.points.len() <= 10));
        assert!(s.changes.len() <= 5);
        drop(s);
        for t in 1000..1500i64 {
            p.offer(
                "a",
                0,
                &mut vec![(t, silent(&format!("q{t}"), t - 10, t))],
                Some(t + 1),
            );
        }
        let s = hub.lock();
        assert!(s.silent.len() <= 100, "{} silent", s.silent.len());
        assert!(
            s.silent.contains_key("q1499/value"),
            "the most recently silent stay"
        );
        // The series held first keep their places while they report.
        assert!(s.by_key.contains_key("s99/value"));
        assert_eq!(s.by_key.len(), s.series.len());
    }
}
