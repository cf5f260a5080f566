//! Dataflows: what a researcher touches. One file per dataflow and one line in [`REGISTRY`].
//!
//! A dataflow receives the stream of on-time readings (emitted at the event-time frontier;
//! see `engine::source`) and declares its outputs with [`Outputs::add`]; the engine adds the
//! `late` and `quarantine` outputs and runs it on any input and any number of workers.

pub mod anomaly;
pub mod sensor_outliers;
pub mod series_stats;
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
}

impl Params {
    /// Empty per-series state for a keyed dataflow: expiring after `state_ttl`, counted in
    /// `metrics.series_states`.
    pub fn per_field<V>(&self) -> crate::engine::keyed::PerField<V> {
        crate::engine::keyed::PerField::new(self.state_ttl).counted(self.metrics.clone())
    }
}

/// A registered dataflow.
pub trait Dataflow: Send + Sync {
    /// Name on the command line.
    fn name(&self) -> &'static str;
    /// One line on what it computes.
    fn about(&self) -> &'static str;
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
