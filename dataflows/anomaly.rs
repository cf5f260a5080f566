//! `anomaly`: per series and value, the `gauge` detector's anomaly score in [0, 1] for every
//! reading, in event-time order (see `analytics::detector`). This is the operator `streamgauge
//! nab` runs over the Numenta Anomaly Benchmark.
//!
//! Readings are exchanged by series, held per timely time until the input frontier passes it,
//! then fed to each series' detector sorted by (event time, value): the output is the same
//! set of rows whatever the number of workers, and the score of a reading depends only on
//! readings at or before it. State: one detector per (series, value name) plus the readings of
//! times not yet complete.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::{Dataflow, Outputs, Params};
use crate::analytics::detector::{Detector, DetectorParams};
use crate::engine::output::{csv_field, Row};
use crate::engine::{series_hash, FastBuild};
use crate::record::{write_f64, write_i64, EventTime, Reading};

/// The score of one value of one reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    /// Series id.
    pub series: Arc<str>,
    /// Value name.
    pub field: Arc<str>,
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
        out.extend_from_slice(csv_field(&self.series).as_bytes());
        out.push(b',');
        out.extend_from_slice(csv_field(&self.field).as_bytes());
        out.push(b',');
        write_i64(out, self.ts);
        out.push(b',');
        write_f64(out, self.value);
        out.push(b',');
        write_f64(out, self.score);
    }
}

/// The registered dataflow.
pub struct Anomaly;

type Pending = BTreeMap<EventTime, (Capability<EventTime>, Vec<Reading>)>;

impl Dataflow for Anomaly {
    fn name(&self) -> &'static str {
        "anomaly"
    }
    fn about(&self) -> &'static str {
        "per series and value: the gauge detector's anomaly score in [0, 1] for every reading"
    }
    fn build<'s>(
        &self,
        input: Stream<'s, EventTime, Vec<Reading>>,
        _params: &Params,
        outputs: &mut Outputs<'_>,
    ) {
        let det_params = DetectorParams::default();
        let scores = input.unary_frontier::<CapacityContainerBuilder<Vec<ScoreRow>>, _, _, _>(
            Exchange::new(|r: &Reading| series_hash(&r.series)),
            "anomaly",
            move |_cap, _info| {
                let mut pending: Pending = BTreeMap::new();
                let mut detectors: HashMap<(Arc<str>, Arc<str>), Detector, FastBuild> =
                    HashMap::default();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&t) = cap.least() else { return };
                        pending
                            .entry(t)
                            .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()))
                            .1
                            .append(data);
                    });
                    while let Some((&t, _)) = pending.first_key_value() {
                        if frontier.less_equal(&t) {
                            break;
                        }
                        let (cap, mut readings) =
                            pending.pop_first().map(|(_, v)| v).expect("non-empty");
                        readings.sort_by(|a, b| {
                            (&a.series, a.ts)
                                .cmp(&(&b.series, b.ts))
                                .then_with(|| a.values[0].1.total_cmp(&b.values[0].1))
                        });
                        let mut session = output.session(&cap);
                        for r in readings {
                            for (field, v) in &r.values {
                                let d = match detectors.get_mut(&(r.series.clone(), field.clone()))
                                {
                                    Some(d) => d,
                                    None => detectors
                                        .entry((r.series.clone(), field.clone()))
                                        .or_insert_with(|| Detector::new(det_params.clone())),
                                };
                                let score = d.update(r.ts, *v);
                                session.give(ScoreRow {
                                    series: r.series.clone(),
                                    field: field.clone(),
                                    ts: r.ts,
                                    value: *v,
                                    score,
                                });
                            }
                        }
                    }
                }
            },
        );
        outputs.add("anomaly", scores, true);
    }
}
