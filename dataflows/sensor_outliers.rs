//! `sensor_outliers`: per series and value, rolling statistics and three outlier scores for
//! every reading, and the live outlier set as differential collections.
//!
//! Per reading (output `outlier_scores`), against the series' previous `--readings` readings
//! (default 100; the reading itself is never included): mean, population std and z; the
//! robust z `(x - median) / (1.4826 MAD)` (exact; with `--quantiles sketch`, median and MAD
//! from a quantile sketch whose cost does not grow with the window, within its documented
//! bounds); the forecast-residual z of an RLS AR(2) model
//! (forgetting 0.995). Each z becomes a score `P(|Z| < |z|)` in [0, 1]; the reading's `score`
//! is the largest of the three. A series is anomalous while its latest reading's score is at
//! least the score of `|z| = --threshold` (default 4).
//!
//! Per reading (output `forecasts`, unless `--horizon 0`): the RLS AR(2) model's forecast for
//! the next `--horizon` readings (default 5) with 95% intervals (variance from the model's
//! residual variance and its MA weights), one row per issue with every step, at the times the
//! readings would arrive at the series' latest spacing.
//!
//! With `--state-ttl`, a (series, value) silent longer than that is dropped (at the first
//! snapshot time after a point of the TTL's quarter-TTL grid, so within 1.25 TTL plus
//! `--top-every` of its latest reading): it leaves the outlier set (if it was in it) and the
//! top-k at that time, is reported in the `silent`
//! output (a sensor that stopped reporting, with its last reading's time), and starts afresh
//! when it comes back. The end of the input ends event time, so there every state expires,
//! the sets empty, and every series still held is reported silent.
//!
//! Differential collections, emitted as updates with `diff` +1 / -1 when the input frontier
//! passes a time, so a consumer never sees half a change (changes that cancel within one time
//! are not shown):
//! - `outliers`: the set of (series, field) currently anomalous, as an event-time history:
//!   a series enters at the event time of the reading that made it anomalous and leaves at
//!   the time of the reading that did not (or at its expiry), however the input was batched,
//!   so a replay in one batch shows every entry and exit, and the set as of any event time
//!   is the changes up to it;
//! - `outliers_ref`: that set joined with the reference table (`--reference FILE`, a
//!   versioned, changing collection; see `engine::reference`), so each entry carries the
//!   metadata valid at its event time, and a new version of a member's metadata swaps at
//!   the version's time;
//! - `outliers_top`: the `--top` (default 10) series with the highest latest score
//!   (hierarchical top-k: per hash bucket, then overall, so an update costs O(k) per level
//!   rather than O(series)), as snapshots every `--top-every` (default 1 s) of event time:
//!   the snapshot at time `S` (a multiple of it) ranks the latest scores of the readings
//!   before `S`, without the states expired at or before `S`. A ranking of latest scores
//!   changes with nearly every reading, so it is recomputed once per snapshot and bucket
//!   touched rather than per reading; and like the set, it is the same on any number of
//!   workers however the input was batched.
//!
//! # Savepoints and checkpoints
//! `run --savepoint DIR` saves the per-(series, value) states at a stop, and with
//! `--checkpoint-every T` at every barrier `B` (`engine::savepoint`); a run started again
//! resumes from the newest. The top-k ranks every series as of one event time, and the join
//! needs the set's members, so the states must be cut at one event time on every worker: a
//! barrier is one, and so is a stop's cut (the lowest stop mark, `engine::route::stop_mark`,
//! before which every keyed operator processed everything and after which nothing). Call
//! either `B`. A stopped run writes no collection rows at or after its cut (the top-k
//! snapshot the end of its input would flush there is partial); a checkpoint's files are cut
//! back to their lengths at `B`.
//!
//! The resumed run's collections must hold, from `B` on, what the dead run's held; their history
//! before `B` is already in the files. So each restored state is *restated* just before `B`
//! ([`InOrder::restate`](crate::engine::keyed::InOrder::restate)): to the join, a member of the set
//! (not to `outliers`, whose file has its entry); to the top-k, its score as of the snapshot before
//! `B`, and the change to its latest score at the first snapshot after `B` (a state keeps its score
//! from before its latest reading's snapshot period for this). The rows the collections produce
//! before `B` are dropped. States expire on the snapshot grid (`PerField::on_grid`: the TTL's
//! quarter-TTL grid rounded up to a multiple of `--top-every`), so no expiry falls between that
//! snapshot and `B`, where the restored states could not restate it.

use std::cmp::Reverse;
use std::sync::Arc;

use differential_dataflow::AsCollection;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::{Dataflow, Outputs, Params, Quantiles};
use crate::analytics::forecast::{Forecast, RlsAr, Z_975};
use crate::analytics::outlier::{z_to_score, Model, ResidualZ, RobustZ};
use crate::analytics::rolling::CountWindow;
use crate::analytics::sketch::DEFAULT_BITS;
use crate::dashboard::hub::{ForecastUpdate, Point, PointUpdate, Update};
use crate::engine::keyed::{in_order_logic, Keyed, KeyedHooks, PerField};
pub use crate::engine::output::SilentRow;
use crate::engine::output::{csv_f64s, csv_series_field_ts, push_csv_field, JsonObject, Row};
use crate::engine::reference::reference_stream;
use crate::engine::savepoint::Savepoint;
use crate::engine::series_hash;
use crate::record::{write_f64, write_i64, EventTime, Reading, Sym};

/// (series, field).
pub type Key = (Sym, Sym);

/// One reading with its statistics and scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutlierRow {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Event time, UTC ms.
    pub ts: EventTime,
    /// The value.
    pub value: f64,
    /// Mean of the previous readings (0 before the first).
    pub mean: f64,
    /// Their population standard deviation.
    pub std: f64,
    /// Rolling z (0 while undefined).
    pub z: f64,
    /// Robust z (0 while undefined).
    pub robust_z: f64,
    /// Forecast-residual z (0 while undefined).
    pub residual_z: f64,
    /// Largest of the three scores, in [0, 1].
    pub score: f64,
    /// Whether the series is anomalous after this reading.
    pub anomalous: bool,
    /// +1 when this reading made the series enter the outlier set, -1 leave, 0 neither.
    pub change: i8,
}

impl Row for OutlierRow {
    const CSV_HEADER: &'static str =
        "series,field,ts,value,mean,std,z,robust_z,residual_z,score,anomalous,change";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        csv_series_field_ts(out, &self.series, &self.field, self.ts);
        csv_f64s(
            out,
            &[
                self.value,
                self.mean,
                self.std,
                self.z,
                self.robust_z,
                self.residual_z,
                self.score,
            ],
        );
        out.extend_from_slice(if self.anomalous {
            b",true,"
        } else {
            b",false,"
        });
        write_i64(out, self.change as i64);
    }
    /// The object serde writes, without serde ([`JsonObject`]).
    fn write_json(&self, out: &mut Vec<u8>) {
        JsonObject::series_field_ts(out, &self.series, &self.field, self.ts)
            .f64("value", self.value)
            .f64("mean", self.mean)
            .f64("std", self.std)
            .f64("z", self.z)
            .f64("robust_z", self.robust_z)
            .f64("residual_z", self.residual_z)
            .f64("score", self.score)
            .bool("anomalous", self.anomalous)
            .i64("change", self.change as i64)
            .end();
    }
    fn publish(&self, out: &mut Vec<Update>) {
        let (mean, std) = self.stats().unwrap_or((f64::NAN, f64::NAN));
        out.push(Update::Point(PointUpdate {
            series: self.series,
            field: self.field,
            point: Point {
                ts: self.ts,
                value: self.value,
                mean,
                std,
                score: self.score,
                anomalous: self.anomalous,
                seq: 0,
            },
        }));
    }
}

impl OutlierRow {
    /// The rolling mean and std, or None before the series' first reading (the row then
    /// says 0 and 0).
    pub fn stats(&self) -> Option<(f64, f64)> {
        (!(self.mean == 0.0 && self.std == 0.0)).then_some((self.mean, self.std))
    }
}

/// A forecast path issued after a reading: the next `--horizon` readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastPath {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Event time of the reading it was issued after.
    pub issued_ts: EventTime,
    /// For 1..=horizon readings ahead: `(ts, point, lower, upper)`, `ts` the time the reading
    /// is expected (issue time + step x the series' latest spacing), `lower..upper` the 95%
    /// interval. Shared with the dashboard's copy of the path, so publishing it copies
    /// nothing.
    pub steps: Arc<[(EventTime, f64, f64, f64)]>,
}

impl Row for ForecastPath {
    /// `steps` is one field: `ts:point:lower:upper` per step, joined by `;`.
    const CSV_HEADER: &'static str = "series,field,issued_ts,steps";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        csv_series_field_ts(out, &self.series, &self.field, self.issued_ts);
        out.push(b',');
        for (i, (ts, p, l, u)) in self.steps.iter().enumerate() {
            if i > 0 {
                out.push(b';');
            }
            write_i64(out, *ts);
            for v in [p, l, u] {
                out.push(b':');
                write_f64(out, *v);
            }
        }
    }
    /// The object serde writes, without serde ([`JsonObject`]).
    fn write_json(&self, out: &mut Vec<u8>) {
        JsonObject::new(out)
            .str("series", &self.series)
            .str("field", &self.field)
            .i64("issued_ts", self.issued_ts)
            .with("steps", |out| {
                out.push(b'[');
                for (i, (ts, p, l, u)) in self.steps.iter().enumerate() {
                    out.extend_from_slice(if i > 0 { b",[" } else { b"[" });
                    write_i64(out, *ts);
                    for v in [p, l, u] {
                        out.push(b',');
                        write_f64(out, *v);
                    }
                    out.push(b']');
                }
                out.push(b']');
            })
            .end();
    }
    fn publish(&self, out: &mut Vec<Update>) {
        out.push(Update::Forecast(ForecastUpdate {
            series: self.series,
            field: self.field,
            model: {
                static MODEL: std::sync::OnceLock<Sym> = std::sync::OnceLock::new();
                *MODEL.get_or_init(|| Sym::new("rls_ar2"))
            },
            issued: self.issued_ts,
            steps: Arc::clone(&self.steps),
        }));
    }
}

/// What the per-reading operator emits. It is split four ways by value (no copies), and
/// only the small [`SetInput`]s feed both differential collections.
#[derive(Debug, Clone)]
enum Out {
    Scores(OutlierRow),
    Forecast(ForecastPath),
    Set(SetInput),
    Silent(SilentRow),
}

/// What the outlier set and the top-k need from a reading or an expiry.
#[derive(Debug, Clone, Copy)]
enum SetInput {
    /// A reading's score, with the series' previous one.
    Score {
        key: Key,
        ts: EventTime,
        score: f64,
        prev_score: Option<f64>,
        /// As [`OutlierRow::change`].
        change: i8,
    },
    /// A (series, field) whose state expired (`--state-ttl`): it leaves the outlier set if
    /// it was in it, and the top-k with its latest score.
    Expired {
        key: Key,
        anomalous: bool,
        last_score: Option<f64>,
    },
    /// A state restored from a checkpoint, restated at `at` (see [`AtCut::restate`]): a
    /// member of the set or not, its score as of the top-k's snapshot before the barrier,
    /// and its latest score, which counts from the snapshot `latest_at`.
    Restored {
        key: Key,
        at: EventTime,
        member: bool,
        before: Option<f64>,
        latest: Option<f64>,
        latest_at: EventTime,
    },
}

/// A change to a differential collection of (series, field) records, with extra columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetChange {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Latest score (top-k) or NaN.
    pub score: Option<f64>,
    /// Location from the reference table (joined output only).
    pub location: Option<Sym>,
    /// Unit from the reference table (joined output only).
    pub unit: Option<Sym>,
    /// The event time (UTC ms) from which the change holds: for `outliers` and
    /// `outliers_ref`, the time of the reading (or expiry, or reference version) that made
    /// it; for `outliers_top`, the snapshot's time (a multiple of `--top-every`).
    pub time: EventTime,
    /// +1 inserted, -1 retracted.
    pub diff: i64,
}

impl Row for SetChange {
    const CSV_HEADER: &'static str = "series,field,score,location,unit,time,diff";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        push_csv_field(out, &self.series);
        out.push(b',');
        push_csv_field(out, &self.field);
        out.push(b',');
        if let Some(s) = self.score {
            write_f64(out, s);
        }
        for v in [&self.location, &self.unit] {
            out.push(b',');
            if let Some(v) = v {
                push_csv_field(out, v);
            }
        }
        out.push(b',');
        write_i64(out, self.time);
        out.push(b',');
        write_i64(out, self.diff);
    }
    /// Changes of the plain outlier set (no score, no reference columns) and of the top-k
    /// (a score, no reference columns) go to the dashboard; the joined collection does not.
    fn publish(&self, out: &mut Vec<Update>) {
        if self.location.is_some() {
            return;
        }
        out.push(match self.score {
            None => Update::Outlier {
                series: self.series,
                field: self.field,
                score: None,
                diff: self.diff,
                at: self.time,
            },
            Some(score) => Update::Top {
                series: self.series,
                field: self.field,
                score,
                diff: self.diff,
                at: self.time,
            },
        });
    }
}

/// Per (series, field) state.
#[derive(Serialize, Deserialize)]
struct SeriesState {
    window: CountWindow,
    robust: RobustZ,
    residual: ResidualZ,
    last_score: Option<f64>,
    /// The latest score before the snapshot period of the latest reading: what the top-k's
    /// snapshot before that reading's ranked (see [`AtCut::restate`]).
    score_before: Option<f64>,
    anomalous: bool,
    last_ts: Option<EventTime>,
}

/// The per-reading logic over the per-(series, field) states (`engine::keyed::Keyed`'s
/// `process`).
struct Scorer {
    /// Previous readings per statistic (`--readings`).
    n: usize,
    /// The score from which a series is anomalous.
    enter: f64,
    quantiles: Quantiles,
    horizon: usize,
    /// Snapshot period of the top-k.
    every: EventTime,
    /// One path's steps, gathered here and copied once into the row's shared slice.
    path: Vec<(EventTime, f64, f64, f64)>,
}

impl Scorer {
    #[inline(always)]
    fn process(
        &mut self,
        state: &mut PerField<SeriesState>,
        r: &Reading,
        emit: &mut dyn FnMut(Out),
    ) {
        let (n, quantiles, every, enter, horizon) =
            (self.n, self.quantiles, self.every, self.enter, self.horizon);
        let path = &mut self.path;
        for &(ref field, x) in &r.values {
            let make = || SeriesState {
                window: CountWindow::new(n),
                robust: match quantiles {
                    Quantiles::Exact => RobustZ::new(n, 10),
                    Quantiles::Sketch => RobustZ::sketched(n, 10, DEFAULT_BITS),
                },
                residual: ResidualZ {
                    model: Model::Rls(RlsAr::new(2, 0.995, 1e-3)),
                },
                last_score: None,
                score_before: None,
                anomalous: false,
                last_ts: None,
            };
            state.with(r.series, *field, r.ts, make, |s| {
                let (mean, var) = s.window.mean_var().unwrap_or((0.0, 0.0));
                let std = var.sqrt();
                let z = if s.window.len() >= 10 && std > 0.0 {
                    (x - mean) / std
                } else {
                    0.0
                };
                s.window.push(x);
                let robust_z = s.robust.z(r.ts, x).unwrap_or(0.0);
                let residual_z = s.residual.z(x).unwrap_or(0.0);
                let score = z_to_score(z)
                    .max(z_to_score(robust_z))
                    .max(z_to_score(residual_z));
                let anomalous = score >= enter;
                let change = match (s.anomalous, anomalous) {
                    (false, true) => 1,
                    (true, false) => -1,
                    _ => 0,
                };
                s.anomalous = anomalous;
                let period = snapshot_after(r.ts, every);
                if s.last_ts.is_none_or(|t| snapshot_after(t, every) != period) {
                    s.score_before = s.last_score;
                }
                let prev_score = s.last_score.replace(score);
                let spacing = s.last_ts.replace(r.ts).map(|t| r.ts - t);
                emit(Out::Scores(OutlierRow {
                    series: r.series,
                    field: *field,
                    ts: r.ts,
                    value: x,
                    mean,
                    std,
                    z,
                    robust_z,
                    residual_z,
                    score,
                    anomalous,
                    change,
                }));
                emit(Out::Set(SetInput::Score {
                    key: (r.series, *field),
                    ts: r.ts,
                    score,
                    prev_score,
                    change,
                }));
                if let (Some(gap), Model::Rls(m)) = (spacing, &s.residual.model) {
                    if horizon > 0 && gap > 0 {
                        path.clear();
                        forecast_steps(m, horizon, |step, f| {
                            path.push((r.ts + gap * step as i64, f.point, f.lower, f.upper))
                        });
                        if !path.is_empty() {
                            emit(Out::Forecast(ForecastPath {
                                series: r.series,
                                field: *field,
                                issued_ts: r.ts,
                                steps: Arc::from(&path[..]),
                            }));
                        }
                    }
                }
            });
        }
    }
}

/// An expired state (`engine::keyed::Keyed`'s `expired`): it leaves the outlier set and the
/// top-k, and its series is reported silent.
fn expired(
    series: Sym,
    field: Sym,
    s: SeriesState,
    last_ts: EventTime,
    at: EventTime,
    emit: &mut dyn FnMut(Out),
) {
    emit(Out::Set(SetInput::Expired {
        key: (series, field),
        anomalous: s.anomalous,
        last_score: s.last_score,
    }));
    emit(Out::Silent(SilentRow {
        series,
        field,
        last_ts,
        time: at,
    }));
}

/// What `sensor_outliers` does at a savepoint's cut: its collections need one cut for every
/// worker, and a resumed run restates the restored states to them.
struct AtCut {
    /// Snapshot period of the top-k.
    every: EventTime,
    /// The cut of the savepoint this run resumed from (a checkpoint's barrier or a stop's).
    resumed_at: Option<EventTime>,
    /// Where a stop's cut goes ([`KeyedHooks::cut_at`]).
    savepoint: Option<Arc<Savepoint>>,
}

impl KeyedHooks<SeriesState, Out> for AtCut {
    /// The stop's cut goes to the savepoint: the stopped run's collections write no row at
    /// or after it, and the resumed run's start there.
    fn cut_at(&mut self, cut: EventTime) {
        if let Some(sp) = &self.savepoint {
            sp.note_stop_cut(cut);
        }
    }

    /// Resumed from a savepoint cut at `B` (a checkpoint's barrier, or a stop's cut), whose
    /// files hold every row before `B`:
    /// each restored member of the outlier set is restated (to the join, not to `outliers`,
    /// which has its entry), and each restored latest score to the top-k, at `B - 1`. The
    /// collections then hold, from `B` on, what they held in the run that wrote the
    /// checkpoint, and the rows the resumed run writes at `B` or later are that run's; those
    /// before `B` are dropped. The top-k's latest snapshot before `B` (`P`) ranked the scores
    /// of the readings before `P`: a state whose latest reading is at or after `P` restates
    /// the score before it, and the change to its latest at the next snapshot. Expiries fall
    /// on snapshot times (`PerField::on_grid`), so none is between `P` and `B`.
    fn restate(&mut self, state: &PerField<SeriesState>, emit: &mut dyn FnMut(Out)) {
        let Some(b) = self.resumed_at else { return };
        let (every, next) = (self.every, snapshot_after(b - 1, self.every));
        state.each(|series, field, _, s| {
            let current = s.last_ts.is_some_and(|t| snapshot_after(t, every) == next);
            emit(Out::Set(SetInput::Restored {
                key: (series, field),
                at: b - 1,
                member: s.anomalous,
                before: if current {
                    s.score_before
                } else {
                    s.last_score
                },
                latest: s.last_score,
                latest_at: next,
            }));
        });
    }
}

/// Turns records of a stream into differential updates. `f` gets each record with its
/// message's time and gives `(data, time, diff)`; a time before the message's is raised to
/// it (differential needs every update's time at or after its message's capability).
fn updates<'s, R, D, F>(
    stream: &Stream<'s, EventTime, Vec<R>>,
    name: &str,
    mut f: F,
) -> Stream<'s, EventTime, Vec<(D, EventTime, isize)>>
where
    R: Clone + 'static,
    D: Clone + 'static,
    F: FnMut(&R, EventTime, &mut dyn FnMut(D, EventTime, isize)) + 'static,
{
    stream
        .clone()
        .unary::<CapacityContainerBuilder<Vec<(D, EventTime, isize)>>, _, _, _>(
            Pipeline,
            name,
            move |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let Some(&t) = cap.least() else { return };
                        let mut session = output.session(&cap);
                        for r in data.iter() {
                            f(r, t, &mut |d, at, diff| session.give((d, at.max(t), diff)));
                        }
                    });
                }
            },
        )
}

/// The model's forecasts for 1..=h readings ahead, each with its 95% interval.
fn forecast_steps(m: &RlsAr, h: usize, mut f: impl FnMut(usize, Forecast)) {
    let var = m.residual_variance();
    if !var.is_finite() {
        return;
    }
    let (mut step, mut acc) = (0, 0.0);
    m.path_each(h, |p, w| {
        step += 1;
        acc += w * w;
        f(step, Forecast::with_std(p, (var * acc).sqrt(), Z_975));
    });
}

/// The first snapshot time (a multiple of `every`) after `ts`: a reading counts from there.
fn snapshot_after(ts: EventTime, every: EventTime) -> EventTime {
    ts.div_euclid(every).saturating_add(1).saturating_mul(every)
}

/// The first snapshot time at or after `at`: an expiry at `at` counts from there.
fn snapshot_from(at: EventTime, every: EventTime) -> EventTime {
    if at.rem_euclid(every) == 0 {
        at
    } else {
        snapshot_after(at, every)
    }
}

/// The score bits order like the score for scores >= 0.
fn score_key(score: f64) -> u64 {
    score.max(0.0).to_bits()
}

/// The registered dataflow.
pub struct SensorOutliers;

impl Dataflow for SensorOutliers {
    fn name(&self) -> &'static str {
        "sensor_outliers"
    }
    fn about(&self) -> &'static str {
        "per series: rolling stats, z / robust / forecast-residual scores; live outlier set, top-k, joined with --reference"
    }
    fn savepoints(&self) -> bool {
        true
    }
    fn checkpoints(&self) -> bool {
        true
    }
    fn build<'s>(
        &self,
        input: Stream<'s, EventTime, Vec<Reading>>,
        params: &Params,
        outputs: &mut Outputs<'_>,
    ) {
        let n = params.readings.max(2);
        let enter = z_to_score(params.threshold);
        let k = params.top.max(1);
        let every = params.top_every.max(1);
        let horizon = params.horizon;
        let quantiles = params.quantiles;
        let refs = reference_stream(&input, params.reference.clone(), params.worker);
        // Expiries on the snapshot grid: a checkpoint's barrier then never falls between an
        // expiry and the snapshot that ranks without it (see `AtCut::restate`).
        let state = params.per_field().on_grid(every);
        let state = match &params.savepoint {
            Some(sp) => state.saved(sp.clone(), "sensor_outliers", params.worker),
            None => state,
        };
        // A resumed run restates its states just before the cut they were saved at (a
        // barrier or a stop's), and writes the rows of the collections from the cut on.
        let resumed_at = params
            .savepoint
            .as_ref()
            .and_then(|sp| sp.resumed())
            .and_then(|r| r.cut);
        let from = resumed_at.unwrap_or(EventTime::MIN);
        let mut scorer = Scorer {
            n,
            enter,
            quantiles,
            horizon,
            every,
            path: Vec::with_capacity(horizon),
        };
        let logic = Keyed {
            state,
            process: move |state: &mut PerField<SeriesState>,
                           r: &Reading,
                           emit: &mut dyn FnMut(Out)| {
                scorer.process(state, r, emit)
            },
            expired,
            hooks: AtCut {
                every,
                resumed_at,
                savepoint: params.savepoint.clone(),
            },
        };
        let out = in_order_logic(input, "sensor_outliers", logic);
        use timely::dataflow::operators::vec::{Map, Partition};
        let mut parts = out
            .partition(4, |o| match o {
                Out::Scores(_) => (0, o),
                Out::Forecast(_) => (1, o),
                Out::Set(_) => (2, o),
                Out::Silent(_) => (3, o),
            })
            .into_iter();
        let (Some(rows), Some(forecasts), Some(sets), Some(silent)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            unreachable!("partition gives the 4 streams asked for");
        };
        let silent = silent.flat_map(|o| match o {
            Out::Silent(r) => Some(r),
            _ => None,
        });
        let rows = rows.flat_map(|o| match o {
            Out::Scores(r) => Some(r),
            _ => None,
        });
        let forecasts = forecasts.flat_map(|o| match o {
            Out::Forecast(f) => Some(f),
            _ => None,
        });
        let sets = sets.flat_map(|o| match o {
            Out::Set(x) => Some(x),
            _ => None,
        });

        // The outlier set: entered and left by readings, left when the state expires.
        // Readings change it at their own event times; an expiry's message is at its time.
        let set = updates(&sets, "outlier set", |o: &SetInput, t, give| match *o {
            SetInput::Score {
                key, ts, change, ..
            } if change != 0 => give(key, ts, change as isize),
            SetInput::Expired {
                key,
                anomalous: true,
                ..
            } => give(key, t, -1),
            _ => {}
        })
        .as_collection()
        .consolidate();
        // With the members restated by a resumed run: what the join sees.
        let members = match resumed_at {
            None => set.clone(),
            Some(_) => set.clone().concat(
                updates(&sets, "restated members", |o: &SetInput, _, give| {
                    if let SetInput::Restored {
                        key,
                        at,
                        member: true,
                        ..
                    } = *o
                    {
                        give(key, at, 1)
                    }
                })
                .as_collection(),
            ),
        };

        // Top-k by latest score, in snapshots every `every` of event time: per bucket,
        // then overall.
        let top = updates(
            &sets,
            "latest scores",
            move |o: &SetInput, t, give| match *o {
                SetInput::Score {
                    key,
                    ts,
                    score,
                    prev_score,
                    ..
                } => {
                    let at = snapshot_after(ts, every);
                    if let Some(p) = prev_score {
                        give((Reverse(score_key(p)), key), at, -1);
                    }
                    give((Reverse(score_key(score)), key), at, 1);
                }
                SetInput::Expired {
                    key,
                    last_score: Some(p),
                    ..
                } => give((Reverse(score_key(p)), key), snapshot_from(t, every), -1),
                SetInput::Restored {
                    key,
                    at,
                    before,
                    latest,
                    latest_at,
                    ..
                } => {
                    if let Some(b) = before {
                        give((Reverse(score_key(b)), key), at, 1);
                    }
                    if before.map(f64::to_bits) != latest.map(f64::to_bits) {
                        if let Some(b) = before {
                            give((Reverse(score_key(b)), key), latest_at, -1);
                        }
                        if let Some(l) = latest {
                            give((Reverse(score_key(l)), key), latest_at, 1);
                        }
                    }
                }
                _ => {}
            },
        )
        .as_collection()
        .map(|(score, key): (Reverse<u64>, Key)| (series_hash(&key.0) % 64, (score, key)))
        .reduce(move |_bucket, input, output| {
            for (v, c) in input.iter().filter(|(_, c)| *c > 0).take(k) {
                output.push((*(*v), *c));
            }
        })
        .map(|(_bucket, v)| ((), v))
        .reduce(move |_, input, output| {
            for (v, c) in input.iter().filter(|(_, c)| *c > 0).take(k) {
                output.push((*(*v), *c));
            }
        })
        .map(|((), v)| v);

        // The set joined with the reference table (series -> (location, unit)).
        let joined = members
            .map(|(series, field)| (series, field))
            .join(refs.as_collection())
            // A join emits the products of its inputs' updates as they stand in its
            // arrangements, whose compaction depends on the batching: so the rows of one time
            // can hold pairs that cancel, more or fewer from run to run. Consolidated, they
            // are the same rows on any number of workers however the input was batched.
            .consolidate();

        // Rows at or after `from` (a resumed run's barrier: the run before wrote those
        // before it). A differential batch's capability is at its lower bound and its
        // updates may be later, while a sink holds the rows at or after a checkpoint's
        // barrier by their message's time: so with checkpoints, the rows of each interval
        // between barriers go out at the earliest of their own times (one capability per
        // interval a batch touches, not one per row).
        let barriers = params
            .savepoint
            .as_ref()
            .and_then(|sp| sp.checkpoint_every());
        // A stopped run writes nothing at or after its cut (a partial top-k snapshot, a
        // reference swap of a member that may leave before it): the next run does.
        let stopping = params.savepoint.clone();
        let to_rows = |name: &'static str, from: EventTime| {
            let stopping = stopping.clone();
            let checkpointed = barriers.is_some();
            let step = barriers.unwrap_or(EventTime::MAX);
            let interval = move |t: EventTime| t.div_euclid(step);
            move |s: Stream<'s, EventTime, Vec<(SetChange, EventTime, isize)>>| {
                s.unary::<CapacityContainerBuilder<Vec<SetChange>>, _, _, _>(
                    Pipeline,
                    name,
                    move |_, _| {
                        move |input, output| {
                            input.for_each(|cap, data| {
                                let until = stopping
                                    .as_ref()
                                    .and_then(|sp| sp.stop_cut())
                                    .unwrap_or(EventTime::MAX);
                                data.retain(|(_, t, _)| *t >= from && *t < until);
                                let row = |(mut row, t, diff): (SetChange, EventTime, isize)| {
                                    row.time = t;
                                    row.diff = diff as i64;
                                    row
                                };
                                if !checkpointed {
                                    output.session(&cap).give_iterator(data.drain(..).map(row));
                                    return;
                                }
                                data.sort_by_key(|(_, t, _)| *t);
                                let mut rows = data.drain(..).peekable();
                                while let Some(&(_, first, _)) = rows.peek() {
                                    let until = interval(first);
                                    output.session(&cap.delayed(&first, 0)).give_iterator(
                                        std::iter::from_fn(|| {
                                            rows.next_if(|(_, t, _)| interval(*t) == until)
                                        })
                                        .map(row),
                                    );
                                }
                            });
                        }
                    },
                )
            }
        };
        let change = |series: Sym, field: Sym| SetChange {
            series,
            field,
            score: None,
            location: None,
            unit: None,
            time: 0,
            diff: 0,
        };
        let set_rows =
            to_rows("outliers rows", EventTime::MIN)(set.map(move |(s, f)| change(s, f)).inner);
        let top_rows = to_rows("top rows", from)(
            top.map(move |(Reverse(bits), (s, f))| SetChange {
                score: Some(f64::from_bits(bits)),
                ..change(s, f)
            })
            .inner,
        );
        let ref_rows = to_rows("reference rows", from)(
            joined
                .map(move |(s, (f, (location, unit)))| SetChange {
                    location: Some(location),
                    unit: Some(unit),
                    ..change(s, f)
                })
                .inner,
        );
        outputs.add("outlier_scores", rows, true);
        if horizon > 0 {
            outputs.add("forecasts", forecasts, true);
        }
        outputs.add("outliers", set_rows, false);
        outputs.add("outliers_top", top_rows, false);
        outputs.add("outliers_ref", ref_rows, false);
        outputs.add("silent", silent, false);
    }
}
