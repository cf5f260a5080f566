//! The keyed, in-order operator shape most analytics need: readings exchanged by series,
//! held per timely time until the input frontier passes it, then handed to per-series logic in
//! event-time order (ties by value), so results are the same set of records whatever the
//! number of workers and a reading's result depends only on readings at or before it.

use std::collections::BTreeMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::series_hash;
use crate::record::{EventTime, Reading};

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
    type Pending = BTreeMap<EventTime, (Capability<EventTime>, Vec<Reading>)>;
    input.unary_frontier::<CapacityContainerBuilder<Vec<R>>, _, _, _>(
        Exchange::new(|r: &Reading| series_hash(&r.series)),
        name,
        move |_cap, _info| {
            let mut pending: Pending = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&t) = cap.least() else { return };
                    let slot = pending
                        .entry(t)
                        .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()));
                    slot.1.append(data);
                });
                while let Some((&t, _)) = pending.first_key_value() {
                    if frontier.less_equal(&t) {
                        break;
                    }
                    let (cap, mut readings) =
                        pending.pop_first().map(|(_, v)| v).expect("non-empty");
                    // Batches arrive as runs already in event-time order (one per sender and
                    // chunk); the stable sort merges runs, and costs one pass when sorted.
                    readings.sort_by(|a, b| {
                        a.ts.cmp(&b.ts)
                            .then_with(|| a.values[0].1.total_cmp(&b.values[0].1))
                    });
                    let mut session = output.session(&cap);
                    for r in &readings {
                        logic(r, &mut |row| session.give(row));
                    }
                }
            }
        },
    )
}
