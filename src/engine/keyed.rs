//! The keyed, in-order operator shape most analytics need: readings are exchanged by series,
//! held until the input frontier passes their *event time* (the source guarantees every
//! reading at timely time `t` has event time `>= t`, and diverts readings older than the
//! frontier to `late`), then handed to per-series logic in event-time order (ties by value).
//! So results are the same set of records whatever the number of workers and the batching, and
//! a reading's result depends only on readings at or before it.
//!
//! Records are emitted at a timely time no later than the event time of the readings that
//! produced them (the operator holds one capability, at the earliest pending reading).

use std::cmp::Ordering;
use std::collections::VecDeque;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::series_hash;
use crate::record::{EventTime, Reading, Sym};
use crate::sym::SymMap;

/// Runs `logic(reading, emit)` for every reading, per series in event-time order, on the
/// worker that owns the series; `emit` sends an output record at the reading's completed time.
pub fn in_order<'s, R, F>(
    input: Stream<'s, EventTime, Vec<Reading>>,
    name: &str,
    mut logic: F,
) -> Stream<'s, EventTime, Vec<R>>
where
    R: Clone + 'static,
    F: FnMut(&Reading, &mut dyn FnMut(R)) + 'static,
{
    input.unary_frontier::<CapacityContainerBuilder<Vec<R>>, _, _, _>(
        Exchange::new(|r: &Reading| series_hash(&r.series)),
        name,
        move |_cap, _info| {
            // Pending readings as runs sorted by (event time, value): arrivals from one sender
            // extend a run, so release is a prefix cut per run, not a scan of everything held.
            let mut runs: Vec<VecDeque<Reading>> = Vec::new();
            let mut ready: Vec<Reading> = Vec::new();
            let mut held: Option<Capability<EventTime>> = None;
            let mut last_frontier: Option<EventTime> = None;
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&t) = cap.least() else { return };
                    if held.as_ref().is_none_or(|h| t < *h.time()) {
                        held = Some(cap.delayed(&t, 0));
                    }
                    if !data.is_sorted_by(|a, b| order(a, b).is_le()) {
                        data.sort_by(order);
                    }
                    let Some(first) = data.first() else { return };
                    // The run whose last reading is the latest one not after `first`.
                    let run = runs
                        .iter_mut()
                        .filter(|r| r.back().is_some_and(|b| order(b, first).is_le()))
                        .max_by(|a, b| {
                            order(a.back().expect("non-empty"), b.back().expect("non-empty"))
                        });
                    match run {
                        Some(r) => r.extend(data.drain(..)),
                        None => runs.push(data.drain(..).collect()),
                    }
                });
                let Some(cap) = held.as_mut() else { return };
                let now = frontier.frontier().iter().min().copied();
                if now == last_frontier {
                    return;
                }
                last_frontier = now;
                // Release readings whose event time the frontier has passed.
                for run in runs.iter_mut() {
                    let k = run.partition_point(|r| !frontier.less_equal(&r.ts));
                    ready.extend(run.drain(..k));
                }
                runs.retain(|r| !r.is_empty());
                if !ready.is_empty() {
                    // Merges the runs the readings came from (adaptive stable sort).
                    ready.sort_by(order);
                    let mut session = output.session(&*cap);
                    for r in ready.drain(..) {
                        logic(&r, &mut |row| session.give(row));
                    }
                }
                match runs.iter().filter_map(|r| r.front()).map(|r| r.ts).min() {
                    // The next input brings its own capability.
                    None => held = None,
                    Some(m) if m > *cap.time() => cap.downgrade(&m),
                    Some(_) => {}
                }
            }
        },
    )
}

/// The order readings of one series are processed in: event time, then value.
fn order(a: &Reading, b: &Reading) -> Ordering {
    a.ts.cmp(&b.ts)
        .then_with(|| a.values[0].1.total_cmp(&b.values[0].1))
}

/// Per (series, value name) state for the logic of [`in_order`]: looked up by the series
/// symbol's dense index (a [`SymMap`]: two array reads, no hashing) and then among its few
/// value names.
pub struct PerField<V> {
    map: SymMap<Fields<V>>,
}

/// One series' states, by value name.
type Fields<V> = Vec<(Sym, V)>;

impl<V> Default for PerField<V> {
    fn default() -> Self {
        PerField {
            map: SymMap::default(),
        }
    }
}

impl<V> PerField<V> {
    /// Runs `f` on the state of `field` of `series`, made by `make` on first sight.
    #[inline]
    pub fn with<R>(
        &mut self,
        series: Sym,
        field: Sym,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let fields = self.map.get_or_insert_with(series, Fields::default);
        let i = match fields.iter().position(|(n, _)| *n == field) {
            Some(i) => i,
            None => {
                fields.push((field, make()));
                fields.len() - 1
            }
        };
        f(&mut fields[i].1)
    }
}
