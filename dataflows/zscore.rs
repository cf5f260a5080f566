//! `zscore` (workload W2): per series and value, the mean and population standard deviation
//! of that series' previous `--readings` readings (default 100; fewer at the start, never the
//! current one); a reading is emitted with them and its z when std > 0 and |z| >
//! `--threshold` (default 4).
//!
//! Built on `engine::keyed::in_order` (per-series event-time order). State per series and
//! value: a [`CountWindow`] (8 bytes per reading held plus six numbers). With `--state-ttl`,
//! a series silent longer than that starts a fresh window when it comes back.

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use super::{Dataflow, Outputs, Params};
use crate::analytics::rolling::CountWindow;
use crate::engine::keyed::{in_order_logic, InOrder, PerField};
use crate::engine::output::{csv_f64s, csv_series_field_ts, JsonObject, Row};
use crate::engine::savepoint::{Cut, Savepoint};
use crate::record::{EventTime, Reading, Sym};

/// A reading far from its series' recent past.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZRow {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Event time, UTC ms.
    pub ts: EventTime,
    /// The value.
    pub value: f64,
    /// Mean of the previous readings.
    pub mean: f64,
    /// Their population standard deviation.
    pub std: f64,
    /// `(value - mean) / std`.
    pub z: f64,
}

impl Row for ZRow {
    const CSV_HEADER: &'static str = "series,field,ts,value,mean,std,z";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        csv_series_field_ts(out, &self.series, &self.field, self.ts);
        csv_f64s(out, &[self.value, self.mean, self.std, self.z]);
    }
    /// The object serde writes, without serde ([`JsonObject`]).
    fn write_json(&self, out: &mut Vec<u8>) {
        JsonObject::series_field_ts(out, &self.series, &self.field, self.ts)
            .f64("value", self.value)
            .f64("mean", self.mean)
            .f64("std", self.std)
            .f64("z", self.z)
            .end();
    }
}

/// The registered dataflow.
pub struct ZScore;

/// Per series and value, the window of previous readings.
struct ZLogic {
    n: usize,
    threshold: f64,
    windows: PerField<CountWindow>,
}

impl InOrder<ZRow> for ZLogic {
    fn process(&mut self, r: &Reading, emit: &mut dyn FnMut(ZRow)) {
        let n = self.n;
        for (field, v) in &r.values {
            // The previous readings' mean and std (the reading itself is added after).
            let prev = self.windows.with(
                r.series,
                *field,
                r.ts,
                || CountWindow::new(n),
                |w| {
                    let prev = w.mean_var();
                    w.push(*v);
                    prev
                },
            );
            let Some((mean, var)) = prev else { continue };
            let std = var.sqrt();
            let z = (v - mean) / std;
            if std > 0.0 && z.abs() > self.threshold {
                emit(ZRow {
                    series: r.series,
                    field: *field,
                    ts: r.ts,
                    value: *v,
                    mean,
                    std,
                    z,
                });
            }
        }
    }

    #[inline]
    fn ahead(&self, r: &Reading, near: bool) {
        // 10,000 sensors' windows (800 bytes each) are far from the core's caches: fetch the
        // entry first, then the ring slot the push will write.
        if near {
            self.windows.peek(r.series).for_each(CountWindow::prefetch);
        } else {
            self.windows.prefetch(r.series);
        }
    }

    fn stopped(&self) -> bool {
        self.windows.stopped()
    }

    fn saves(&self) -> bool {
        self.windows.saves()
    }

    fn save(&mut self, held: Vec<Reading>) {
        self.windows.save(Cut::Stop, held);
    }

    fn restored(&mut self) -> Vec<Reading> {
        self.windows.take_restored()
    }

    fn checkpoints(&self) -> Option<std::sync::Arc<Savepoint>> {
        self.windows.checkpoints()
    }

    fn checkpoint(&mut self, barrier: EventTime, held: Vec<Reading>) {
        self.windows.save(Cut::Barrier(barrier), held);
    }

    fn next_expiry(&self) -> Option<EventTime> {
        self.windows.next_expiry()
    }

    fn expire(&mut self, at: EventTime, _emit: &mut dyn FnMut(ZRow)) {
        self.windows.expire(at, |_, _, _, _| {});
    }
}

impl Dataflow for ZScore {
    fn name(&self) -> &'static str {
        "zscore"
    }
    fn about(&self) -> &'static str {
        "W2: readings more than --threshold std from the mean of their series' previous --readings"
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
        let logic = ZLogic {
            n: params.readings.max(1),
            threshold: params.threshold,
            windows: params.per_field_saved("zscore"),
        };
        let alerts = in_order_logic(input, "zscore", logic);
        outputs.add("zscore", alerts, true);
    }
}
