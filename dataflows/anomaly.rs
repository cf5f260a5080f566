//! `anomaly`: per series and value, the `gauge` detector's anomaly score in [0, 1] for every
//! reading, in event-time order (see `analytics::detector`). This is the operator `streamgauge
//! nab` runs over the Numenta Anomaly Benchmark.
//!
//! Built on `engine::keyed::in_order`: each series' detector sees its readings in event-time
//! order, so the output is the same set of rows whatever the number of workers and a score
//! depends only on readings at or before it. State: one detector per (series, value name) plus
//! the readings of times not yet complete. With `--state-ttl`, a detector whose series is
//! silent longer than that is dropped, and the series starts learning again (warm-up
//! included) when it comes back; each expiry is a row of the `silent` output (series, value,
//! its last reading's time, the expiry's time).

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use super::{Dataflow, Outputs, Params};
use crate::analytics::detector::{Detector, DetectorParams};
use crate::engine::keyed::{in_order_keyed_silent, PerField};
use crate::engine::output::{csv_f64s, csv_series_field_ts, JsonObject, Row};
use crate::record::{EventTime, Reading, Sym};

/// The score of one value of one reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Event time, UTC ms.
    pub ts: EventTime,
    /// The value.
    pub value: f64,
    /// Anomaly score in [0, 1].
    pub score: f64,
}

impl Row for ScoreRow {
    const CSV_HEADER: &'static str = "series,field,ts,value,score";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        csv_series_field_ts(out, &self.series, &self.field, self.ts);
        csv_f64s(out, &[self.value, self.score]);
    }
    /// The object serde writes, without serde ([`JsonObject`]).
    fn write_json(&self, out: &mut Vec<u8>) {
        JsonObject::series_field_ts(out, &self.series, &self.field, self.ts)
            .f64("value", self.value)
            .f64("score", self.score)
            .end();
    }
}

/// The registered dataflow.
pub struct Anomaly;

impl Dataflow for Anomaly {
    fn name(&self) -> &'static str {
        "anomaly"
    }
    fn about(&self) -> &'static str {
        "per series and value: the gauge detector's anomaly score in [0, 1] for every reading"
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
        let det_params: DetectorParams = params.detector.clone();
        let detectors: PerField<Detector> = params.per_field_saved("anomaly");
        let process = move |detectors: &mut PerField<Detector>,
                            r: &Reading,
                            emit: &mut dyn FnMut(ScoreRow)| {
            for (field, v) in &r.values {
                let make = || Detector::new(det_params.clone());
                let score = detectors.with(r.series, *field, r.ts, make, |d| d.update(r.ts, *v));
                emit(ScoreRow {
                    series: r.series,
                    field: *field,
                    ts: r.ts,
                    value: *v,
                    score,
                });
            }
        };
        // An expired detector just goes: its series learns afresh when it comes back. With a
        // TTL, each expiry is reported in `silent`.
        let (scores, silent) = in_order_keyed_silent(input, "anomaly", detectors, process);
        outputs.add("anomaly", scores, true);
        if let Some(silent) = silent {
            outputs.add("silent", silent, false);
        }
    }
}
