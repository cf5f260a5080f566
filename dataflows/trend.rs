//! `trend`: per series and value, the least-squares slope of the last `--readings` readings
//! (default 100) against event time, with its standard error and t statistic, for every
//! reading; and moving-average crossover signals (the mean of the last `readings / 5` over
//! the mean of the last `readings`), each with the event time it fires.
//!
//! Built on `engine::keyed::in_order`; state per series and value: a [`Trend`] and a
//! [`Crossover`] (the window's readings, twice). With `--state-ttl`, a series silent longer
//! than that starts a fresh window when it comes back, and each expiry is a row of the
//! `silent` output.

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::core::Filter;
use timely::dataflow::Stream;

use super::{Dataflow, Outputs, Params};
use crate::analytics::rolling::Extent;
use crate::analytics::trend::{Crossover, Trend};
use crate::engine::keyed::{in_order_keyed_silent, PerField};
use crate::engine::output::{csv_f64s, csv_series_field_ts, JsonObject, Row};
use crate::record::{write_f64, write_i64, EventTime, Reading, Sym};

/// A reading's trend, or (when `cross` is set) a crossover signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendRow {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Event time, UTC ms.
    pub ts: EventTime,
    /// The value.
    pub value: f64,
    /// Readings in the fit.
    pub n: usize,
    /// Slope, value units per second.
    pub slope: f64,
    /// Standard error of the slope.
    pub stderr: f64,
    /// t statistic of the slope.
    pub t: f64,
    /// Crossover signals only: `up` (short mean crossed above the long one) or `down`.
    pub cross: Option<&'static str>,
    /// Crossover signals only: the short and long means after the reading.
    pub means: Option<(f64, f64)>,
}

impl Row for TrendRow {
    const CSV_HEADER: &'static str =
        "series,field,ts,value,n,slope,stderr,t,cross,short_mean,long_mean";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        csv_series_field_ts(out, &self.series, &self.field, self.ts);
        csv_f64s(out, &[self.value]);
        out.push(b',');
        write_i64(out, self.n as i64);
        csv_f64s(out, &[self.slope, self.stderr, self.t]);
        out.push(b',');
        if let Some(c) = self.cross {
            out.extend_from_slice(c.as_bytes());
        }
        match self.means {
            Some((s, l)) => {
                out.push(b',');
                write_f64(out, s);
                out.push(b',');
                write_f64(out, l);
            }
            None => out.extend_from_slice(b",,"),
        }
    }
    /// The object serde writes, without serde ([`JsonObject`]).
    fn write_json(&self, out: &mut Vec<u8>) {
        let obj = JsonObject::series_field_ts(out, &self.series, &self.field, self.ts)
            .f64("value", self.value)
            .i64("n", self.n as i64)
            .f64("slope", self.slope)
            .f64("stderr", self.stderr)
            .f64("t", self.t);
        let obj = match self.cross {
            Some(c) => obj.str("cross", c),
            None => obj.with("cross", |o| o.extend_from_slice(b"null")),
        };
        match self.means {
            Some((s, l)) => obj.with("means", |o| {
                o.push(b'[');
                write_f64(o, s);
                o.push(b',');
                write_f64(o, l);
                o.push(b']');
            }),
            None => obj.with("means", |o| o.extend_from_slice(b"null")),
        }
        .end();
    }
}

/// The registered dataflow.
pub struct TrendFlow;

impl Dataflow for TrendFlow {
    fn name(&self) -> &'static str {
        "trend"
    }
    fn about(&self) -> &'static str {
        "per series: least-squares slope with stderr and t over --readings, and moving-average crossovers"
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
        let n = params.readings.max(3);
        let short = (n / 5).max(2);
        let state: PerField<(Trend, Crossover)> = params.per_field_saved("trend");
        let process = move |state: &mut PerField<(Trend, Crossover)>,
                            r: &Reading,
                            emit: &mut dyn FnMut(TrendRow)| {
            for &(ref field, x) in &r.values {
                let make = || (Trend::new(Extent::Count(n)), Crossover::new(short, n));
                state.with(r.series, *field, r.ts, make, |(trend, cross)| {
                    trend.push(r.ts, x);
                    let fit = trend.fit();
                    let row = TrendRow {
                        series: r.series,
                        field: *field,
                        ts: r.ts,
                        value: x,
                        n: fit.n,
                        slope: fit.slope().unwrap_or(0.0),
                        stderr: fit.slope_stderr().unwrap_or(0.0),
                        t: fit.t_stat().unwrap_or(0.0),
                        cross: None,
                        means: None,
                    };
                    if let Some(c) = cross.push(r.ts, x) {
                        emit(TrendRow {
                            cross: Some(if c.up { "up" } else { "down" }),
                            means: Some(cross.means()),
                            ..row.clone()
                        });
                    }
                    if fit.n >= 3 {
                        emit(row);
                    }
                });
            }
        };
        let (rows, silent) = in_order_keyed_silent(input, "trend", state, process);
        if let Some(silent) = silent {
            outputs.add("silent", silent, false);
        }
        let crossovers = rows.clone().filter(|r: &TrendRow| r.cross.is_some());
        let trends = rows.filter(|r: &TrendRow| r.cross.is_none());
        outputs.add("trend", trends, true);
        outputs.add("crossovers", crossovers, true);
    }
}
