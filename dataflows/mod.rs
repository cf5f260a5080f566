//! Dataflows: what a researcher touches. One file per dataflow and one line in [`REGISTRY`].
//!
//! A dataflow receives the stream of on-time readings (emitted at the event-time frontier;
//! see `engine::source`) and declares its outputs with [`Outputs::add`]; the engine adds the
//! `late` and `quarantine` outputs and runs it on any input and any number of workers.

pub mod anomaly;
pub mod sensor_outliers;
pub mod series_stats;
pub mod sessions;
pub mod stock_forecast;
pub mod trend;
pub mod zscore;

use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::Stream;

pub use crate::engine::output::Outputs;
use crate::engine::run::EngineError;
use crate::engine::Metrics;
use crate::record::{EventTime, Reading};

/// How rolling quantiles, medians and MADs are computed (`--quantiles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Quantiles {
    /// Exactly, from an order-statistic multiset: O(log n) per reading, growing with the
    /// window through cache misses.
    #[default]
    Exact,
    /// From `analytics::sketch::QuantileSketch` (error within its documented bounds, about
    /// 2^-8 of a value's distance from the median): the cost per reading does not depend on
    /// the window, for windows of 10^5 and more.
    Sketch,
}

/// Parameters every dataflow can read.
#[derive(Clone)]
pub struct Params {
    /// Window width (`--window`).
    pub window: Duration,
    /// Zone whose local clock tumbling windows follow (`--window-zone`).
    pub window_zone: crate::dataset::timefmt::Zone,
    /// Hop between window ends (`--slide`; `None`, or the window itself: tumbling).
    pub slide: Option<Duration>,
    /// Count windows, in readings (`--readings`, default 100).
    pub readings: usize,
    /// Alert threshold (`--threshold`, default 4): |z| for `zscore` and `sensor_outliers`.
    pub threshold: f64,
    /// Size of top-k outputs (`--top`, default 10).
    pub top: usize,
    /// Event time between top-k snapshots in ms (`--top-every`, default 1000; at least 1).
    pub top_every: EventTime,
    /// Forecast horizon in readings (`--horizon`, default 5).
    pub horizon: usize,
    /// How `sessions` cuts session windows (`--gap`, `--above`, `--below`).
    pub sessions: sessions::SessionParams,
    /// Reference table joined with results (`--reference`), see `engine::reference`.
    pub reference: Option<std::path::PathBuf>,
    /// How rolling medians and MADs are computed (`--quantiles`, default exact).
    pub quantiles: Quantiles,
    /// Parameters of the `gauge` detector (`anomaly`).
    pub detector: crate::analytics::detector::DetectorParams,
    /// Time to live of per-series state in event-time milliseconds (`--state-ttl`): a
    /// (series, value) silent longer than this starts afresh (`engine::keyed::PerField`).
    /// `None`: state is kept for the life of the run.
    pub state_ttl: Option<EventTime>,
    /// Index of the worker building the dataflow.
    pub worker: usize,
    /// Process counters (open windows ...).
    pub metrics: Arc<Metrics>,
    /// Set when the run is stopped (rather than at the end of its input): windows the end
    /// of the stream closes then are cut short ([`Metrics::note_cut_short`]).
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// The run's savepoint (`--savepoint`), for dataflows that save their state
    /// ([`Params::per_field_saved`]).
    pub savepoint: Option<Arc<crate::engine::savepoint::Savepoint>>,
}

impl Params {
    /// Empty per-series state for a keyed dataflow: expiring after `state_ttl` (but not
    /// when a stop ends the stream: see [`PerField::stopping`]), counted in
    /// `metrics.series_states`.
    ///
    /// [`PerField::stopping`]: crate::engine::keyed::PerField::stopping
    pub fn per_field<V>(&self) -> crate::engine::keyed::PerField<V> {
        crate::engine::keyed::PerField::new(self.state_ttl)
            .counted(self.metrics.clone())
            .stopping(self.stop.clone())
    }

    /// [`Params::per_field`] that, with `--savepoint`, resumes from it and saves to it as
    /// keyed operator `name` (see [`PerField::saved`]). A dataflow that uses it says so in
    /// [`Dataflow::savepoints`].
    ///
    /// [`PerField::saved`]: crate::engine::keyed::PerField::saved
    pub fn per_field_saved<V>(&self, name: &str) -> crate::engine::keyed::PerField<V>
    where
        V: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        let state = self.per_field();
        match &self.savepoint {
            Some(sp) => state.saved(sp.clone(), name, self.worker),
            None => state,
        }
    }
}

/// A registered dataflow.
pub trait Dataflow: Send + Sync {
    /// Name on the command line.
    fn name(&self) -> &'static str;
    /// One line on what it computes.
    fn about(&self) -> &'static str;
    /// Whether its state goes to a savepoint at a stop and comes back from it
    /// (`run --savepoint`). The default: no, and `--savepoint` is refused.
    fn savepoints(&self) -> bool {
        false
    }
    /// Whether it also writes periodic checkpoints (`run --checkpoint-every`): every
    /// stateful operator of it knows how to cut its state at a barrier (a keyed in-order
    /// operator, `engine::keyed`, or one folding through an `engine::barrier::ArrivalStash`).
    /// The default: no, and the flag is refused.
    fn checkpoints(&self) -> bool {
        false
    }
    /// Builds the dataflow on one worker.
    fn build<'s>(
        &self,
        input: Stream<'s, EventTime, Vec<Reading>>,
        params: &Params,
        outputs: &mut Outputs<'_>,
    );
}

/// Every dataflow streamgauge knows. Adding one: a file above and a line here.
pub static REGISTRY: &[&dyn Dataflow] = &[
    &series_stats::SeriesStats,
    &zscore::ZScore,
    &sensor_outliers::SensorOutliers,
    &stock_forecast::StockForecast,
    &trend::TrendFlow,
    &anomaly::Anomaly,
    &sessions::SessionsFlow,
];

/// Looks a dataflow up by name.
pub fn find(name: &str) -> Result<&'static dyn Dataflow, EngineError> {
    REGISTRY
        .iter()
        .copied()
        .find(|d| d.name() == name)
        .ok_or_else(|| EngineError::UnknownDataflow {
            name: name.into(),
            known: REGISTRY
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use crate::dataset::generate::SplitMix64;
    use crate::engine::output::Row;
    use crate::record::Sym;
    use serde_json::Value;

    /// A float of any magnitude and sign, or one of the awkward ones (non-finite values
    /// are `null` either way).
    fn any_f64(rng: &mut SplitMix64) -> f64 {
        match rng.below(8) {
            0 => [0.0, -0.0, 1.0, 0.1, 1e-300, -1e300, 12.3456, 5e-324][rng.below(8) as usize],
            1 => (rng.below(2_000_000) as f64 - 1e6) / 1e4,
            2 => [f64::NAN, f64::INFINITY][rng.below(2) as usize],
            _ => f64::from_bits(rng.next_u64()),
        }
    }

    /// JSON values equal, numbers compared as `f64` (`0` and `0.0` alike).
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.keys().eq(y.keys()) && x.iter().all(|(k, v)| same(v, &y[k]))
            }
            _ => a == b,
        }
    }

    /// `write_json` against serde's JSON of the same row.
    fn check<R: Row>(row: &R) {
        let mut by_hand = Vec::new();
        row.write_json(&mut by_hand);
        let text = String::from_utf8_lossy(&by_hand);
        let got: Value = serde_json::from_slice(&by_hand).unwrap_or_else(|e| panic!("{e}: {text}"));
        let want = serde_json::to_value(row).unwrap();
        assert!(same(&got, &want), "{text}\nserde: {want}");
    }

    /// The rows written without serde read back as the same JSON as serde writes (same
    /// keys, strings and numbers), on random rows with awkward names and numbers.
    #[test]
    fn rows_written_by_hand_read_back_as_serde_writes_them() {
        use super::anomaly::ScoreRow;
        use super::sensor_outliers::{ForecastPath, OutlierRow};
        use super::sessions::SessionRow;
        use super::trend::TrendRow;
        use super::zscore::ZRow;
        let mut rng = SplitMix64(11);
        let names = [
            "s/a",
            "plant \"7\"",
            "zone\\3",
            "été/ü",
            "tab\tline\n",
            "\u{1}",
        ];
        for i in 0..20_000 {
            let series = Sym::new(names[i % names.len()]);
            let field = Sym::new(names[(i / 5) % names.len()]);
            let ts = rng.next_u64() as i64;
            let mut f = || any_f64(&mut rng);
            check(&OutlierRow {
                series,
                field,
                ts,
                value: f(),
                mean: f(),
                std: f(),
                z: f(),
                robust_z: f(),
                residual_z: f(),
                score: f(),
                anomalous: i % 3 == 0,
                change: (i % 3) as i8 - 1,
            });
            let steps = (0..i % 4).map(|k| (ts ^ k as i64, f(), f(), f())).collect();
            check(&ForecastPath {
                series,
                field,
                issued_ts: -(i as i64),
                steps,
            });
            check(&SessionRow {
                series,
                field,
                start: ts,
                end: ts.wrapping_add(i as i64),
                count: i as u64,
                mean: f(),
                min: f(),
                max: f(),
                std: f(),
            });
            check(&ScoreRow {
                series,
                field,
                ts,
                value: f(),
                score: f(),
            });
            check(&ZRow {
                series,
                field,
                ts,
                value: f(),
                mean: f(),
                std: f(),
                z: f(),
            });
            check(&TrendRow {
                series,
                field,
                ts,
                value: f(),
                n: i,
                slope: f(),
                stderr: f(),
                t: f(),
                cross: [None, Some("up"), Some("down")][i % 3],
                means: (i % 2 == 0).then(|| (f(), f())),
            });
        }
    }
}
