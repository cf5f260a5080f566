//! `stock_forecast`: per ticker, forecasts of the price 1 and `--horizon` (default 5) readings
//! ahead from two models, each with a 95% interval, and the realised error of every forecast
//! when its actual price arrives.
//!
//! The price is the `close` value of a reading when it has one, else its first value. Models:
//! `rls` (RLS AR(1) on log returns, forgetting 0.999: the interval is asymmetric in price) and
//! `holt` (Holt's linear trend on the price: α 0.9, β 0.01). Interval half-widths are the
//! model's own forecast standard deviation times a multiplier adapted per ticker, model and
//! horizon from the misses realised so far (adaptive conformal inference, target 95%; see
//! `analytics::evaluate::Calibrator`). Built on `engine::keyed::in_order`; state per ticker:
//! the two models plus the forecasts waiting for their actual (2 × horizons × horizon). With
//! `--state-ttl`, a ticker silent longer than that (mind weekends and holidays in daily
//! data) starts afresh when it comes back, and its forecasts still waiting are dropped; each
//! expiry is a row of the `silent` output (value name `price`).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::core::Filter;
use timely::dataflow::Stream;

use super::{Dataflow, Outputs, Params};
use crate::analytics::evaluate::Calibrator;
use crate::analytics::forecast::{Forecast, HoltWinters, LogReturns, RlsAr};
use crate::engine::keyed::{in_order_keyed_silent, PerField};
use crate::engine::output::{push_csv_field, Row};
use crate::record::{write_f64, write_i64, EventTime, Reading, Sym};

/// A forecast issued at a reading, or (when `actual` is set) realised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastRow {
    /// Ticker (series id).
    pub series: Sym,
    /// `rls` or `holt`.
    #[serde(deserialize_with = "model_name")]
    pub model: ModelName,
    /// Readings ahead.
    pub horizon: usize,
    /// Event time of the reading the forecast was issued at.
    pub issued_ts: EventTime,
    /// Price at issue.
    pub price: f64,
    /// Point forecast.
    pub point: f64,
    /// Lower end of the 95% interval.
    pub lower: f64,
    /// Upper end of the 95% interval.
    pub upper: f64,
    /// Event time of the actual (realised rows only).
    pub actual_ts: Option<EventTime>,
    /// Actual price (realised rows only).
    pub actual: Option<f64>,
    /// `actual - point` (realised rows only).
    pub error: Option<f64>,
    /// Whether the actual fell inside the interval (realised rows only).
    pub covered: Option<bool>,
}

/// A model's name, one of [`MODELS`] (an alias, so serde reads it with `model_name`
/// instead of borrowing it from the input).
pub type ModelName = &'static str;

/// Reads a model's name back as the name in [`MODELS`] (rows come back from savepoints).
fn model_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let name = String::deserialize(d)?;
    MODELS
        .iter()
        .find(|m| **m == name)
        .copied()
        .ok_or_else(|| serde::de::Error::custom(format!("unknown model {name:?}")))
}

impl Row for ForecastRow {
    const CSV_HEADER: &'static str =
        "series,model,horizon,issued_ts,price,point,lower,upper,actual_ts,actual,error,covered";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        push_csv_field(out, &self.series);
        out.push(b',');
        out.extend_from_slice(self.model.as_bytes());
        out.push(b',');
        write_i64(out, self.horizon as i64);
        out.push(b',');
        write_i64(out, self.issued_ts);
        for v in [self.price, self.point, self.lower, self.upper] {
            out.push(b',');
            write_f64(out, v);
        }
        out.push(b',');
        if let Some(t) = self.actual_ts {
            write_i64(out, t);
        }
        for v in [self.actual, self.error] {
            out.push(b',');
            if let Some(v) = v {
                write_f64(out, v);
            }
        }
        out.push(b',');
        if let Some(c) = self.covered {
            out.extend_from_slice(if c { b"true" } else { b"false" });
        }
    }
}

/// The two models of one ticker, with their pending forecasts and calibrators.
#[derive(Serialize, Deserialize)]
pub struct Ticker {
    rls: LogReturns,
    holt: HoltWinters,
    horizons: Vec<usize>,
    /// Per (model, horizon index): forecasts waiting for their actual, oldest first.
    pending: Vec<VecDeque<ForecastRow>>,
    calibrators: Vec<Calibrator>,
}

/// The models' names, in the order of [`Ticker`]'s slots.
pub const MODELS: [&str; 2] = ["rls", "holt"];

impl Ticker {
    /// Fresh models forecasting 1 and `horizon` steps ahead.
    pub fn new(horizon: usize) -> Self {
        let mut horizons = vec![1];
        if horizon > 1 {
            horizons.push(horizon);
        }
        let slots = MODELS.len() * horizons.len();
        Ticker {
            rls: LogReturns::new(RlsAr::new(1, 0.999, 1e-3)),
            holt: HoltWinters::new(0.9, 0.01, 0.0, 1),
            horizons,
            pending: (0..slots).map(|_| VecDeque::new()).collect(),
            calibrators: vec![Calibrator::default(); slots],
        }
    }

    /// Adds a price at `ts`: emits the realised forecasts it completes, then the new ones.
    pub fn update(
        &mut self,
        series: &Sym,
        ts: EventTime,
        price: f64,
        emit: &mut dyn FnMut(ForecastRow),
    ) {
        // Realise forecasts whose horizon this reading completes: each slot's queue holds one
        // forecast per reading since issue, so the front is due when the queue is full.
        for (slot, queue) in self.pending.iter_mut().enumerate() {
            let h = self.horizons[slot % self.horizons.len()];
            if queue.len() == h {
                let mut f = queue.pop_front().expect("full queue");
                let covered = f.lower <= price && price <= f.upper;
                self.calibrators[slot].record(!covered);
                f.actual_ts = Some(ts);
                f.actual = Some(price);
                f.error = Some(price - f.point);
                f.covered = Some(covered);
                emit(f);
            }
        }
        self.rls.update(price);
        self.holt.update(price);
        for (slot, queue) in self.pending.iter_mut().enumerate() {
            let hi = slot % self.horizons.len();
            let h = self.horizons[hi];
            let model = MODELS[slot / self.horizons.len()];
            let f: Option<Forecast> = if slot / self.horizons.len() == 0 {
                self.rls.forecast(h)
            } else {
                self.holt.forecast(h)
            };
            let Some(f) = f else {
                // No forecast yet: keep the queue aligned with readings.
                queue.clear();
                continue;
            };
            // Scale both half-widths by the calibrated multiplier over the nominal 1.96.
            let k = self.calibrators[slot].multiplier() / crate::analytics::forecast::Z_975;
            let row = ForecastRow {
                series: *series,
                model,
                horizon: h,
                issued_ts: ts,
                price,
                point: f.point,
                lower: f.point - k * (f.point - f.lower),
                upper: f.point + k * (f.upper - f.point),
                actual_ts: None,
                actual: None,
                error: None,
                covered: None,
            };
            queue.push_back(row.clone());
            emit(row);
        }
    }
}

/// The registered dataflow.
pub struct StockForecast;

impl Dataflow for StockForecast {
    fn name(&self) -> &'static str {
        "stock_forecast"
    }
    fn about(&self) -> &'static str {
        "per ticker: RLS (log returns) and Holt price forecasts with 95% intervals, and their realised errors"
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
        let horizon = params.horizon.max(1);
        let tickers: PerField<Ticker> = params.per_field_saved("stock_forecast");
        // One state per ticker, whichever value it came from.
        let price_field = Sym::new("price");
        let process = move |tickers: &mut PerField<Ticker>,
                            r: &Reading,
                            emit: &mut dyn FnMut(ForecastRow)| {
            let price = r
                .values
                .iter()
                .find(|(n, _)| &**n == "close")
                .unwrap_or(&r.values[0])
                .1;
            if !(price > 0.0 && price.is_finite()) {
                return;
            }
            let make = || Ticker::new(horizon);
            tickers.with(r.series, price_field, r.ts, make, |t| {
                t.update(&r.series, r.ts, price, emit)
            });
        };
        // An expired ticker's forecasts still waiting for their actual values go with it;
        // with a TTL, each expiry is reported in `silent`.
        let (rows, silent) = in_order_keyed_silent(input, "stock_forecast", tickers, process);
        if let Some(silent) = silent {
            outputs.add("silent", silent, false);
        }
        let issued = rows.clone().filter(|r: &ForecastRow| r.actual.is_none());
        let realised = rows.filter(|r: &ForecastRow| r.actual.is_some());
        outputs.add("forecasts", issued, true);
        outputs.add("forecast_errors", realised, true);
    }
}
