//! The keyed, in-order operator shape most analytics need: readings are exchanged by series,
//! held until the input frontier passes their *event time* (the source guarantees every
//! reading at timely time `t` has event time `>= t`, and diverts readings older than the
//! frontier to `late`), then handed to per-series logic in event-time order (ties by value).
//! So results are the same set of records whatever the number of workers and the batching, and
//! a reading's result depends only on readings at or before it.
//!
//! Records are emitted at a timely time no later than the event time of the readings that
//! produced them (the operator holds one capability, at the earliest pending reading).
//!
//! Held readings stay in the containers they arrived in (no copy per reading); release merges
//! the runs' released prefixes by reference. Logic that implements [`InOrder::ahead`] is told
//! the readings a few places ahead, to prefetch their per-series state: with thousands of
//! series, that state is otherwise a cache miss per reading.

use std::cmp::Ordering;
use std::collections::VecDeque;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::record::{EventTime, Reading, Sym};
use crate::sym::SymMap;

/// Runs `logic(reading, emit)` for every reading, per series in event-time order, on the
/// worker that owns the series; `emit` sends an output record at the reading's completed time.
pub fn in_order<'s, R, F>(
    input: Stream<'s, EventTime, Vec<Reading>>,
    name: &str,
    logic: F,
) -> Stream<'s, EventTime, Vec<R>>
where
    R: Clone + 'static,
    F: FnMut(&Reading, &mut dyn FnMut(R)) + 'static,
{
    in_order_logic(input, name, Plain(logic))
}

/// Per-series logic for [`in_order_logic`]: what to do with each reading, and optionally what
/// to fetch into cache for readings a little further on.
pub trait InOrder<R> {
    /// Handles one reading (in per-series event-time order); `emit` sends an output record.
    fn process(&mut self, r: &Reading, emit: &mut dyn FnMut(R));

    /// Called for the readings [`FAR`] and [`NEAR`] places ahead of the one about to be
    /// processed (when they are at hand): a chance to prefetch their state, first its entry
    /// (`near == false`), then what the entry points to (`near == true`, by when the entry is
    /// in cache). With thousands of series every reading's state is a cache miss otherwise.
    /// The default does nothing.
    fn ahead(&self, _r: &Reading, _near: bool) {}
}

/// How far ahead [`InOrder::ahead`] is called for an entry.
pub const FAR: usize = 12;
/// How far ahead [`InOrder::ahead`] is called for what an entry points to.
pub const NEAR: usize = 6;

/// A closure as [`InOrder`] logic.
struct Plain<F>(F);

impl<R, F: FnMut(&Reading, &mut dyn FnMut(R))> InOrder<R> for Plain<F> {
    #[inline]
    fn process(&mut self, r: &Reading, emit: &mut dyn FnMut(R)) {
        (self.0)(r, emit)
    }
}

/// [`in_order`] with logic that can also prefetch state ahead ([`InOrder`]).
pub fn in_order_logic<'s, R, L>(
    input: Stream<'s, EventTime, Vec<Reading>>,
    name: &str,
    mut logic: L,
) -> Stream<'s, EventTime, Vec<R>>
where
    R: Clone + 'static,
    L: InOrder<R> + 'static,
{
    input.unary_frontier::<CapacityContainerBuilder<Vec<R>>, _, _, _>(
        crate::engine::route::by_series(),
        name,
        move |_cap, _info| {
            // Pending readings as runs sorted by (event time, value): arrivals from one sender
            // extend a run, so release is a prefix cut per run, not a scan of everything held.
            // A run keeps the containers as they arrived (no copy), and release merges the
            // runs' released prefixes by reference.
            let mut runs: Vec<Run> = Vec::new();
            // Emptied containers, handed back to the input for the next arrivals.
            let mut spare: Vec<Vec<Reading>> = Vec::new();
            let mut cursors: Vec<Cursor> = Vec::new();
            let mut held: Option<Capability<EventTime>> = None;
            let mut last_frontier: Option<EventTime> = None;
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&t) = cap.least() else { return };
                    if data.is_empty() {
                        return;
                    }
                    if held.as_ref().is_none_or(|h| t < *h.time()) {
                        held = Some(cap.delayed(&t, 0));
                    }
                    if !data.is_sorted_by(|a, b| order(a, b).is_le()) {
                        data.sort_by(order);
                    }
                    let chunk = std::mem::replace(data, spare.pop().unwrap_or_default());
                    // The run whose last reading is the latest one not after the first here.
                    let first = &chunk[0];
                    let run = runs
                        .iter_mut()
                        .filter(|r| order(r.last(), first).is_le())
                        .max_by(|a, b| order(a.last(), b.last()));
                    match run {
                        Some(r) => r.chunks.push_back(chunk),
                        None => runs.push(Run {
                            chunks: VecDeque::from([chunk]),
                            head: 0,
                        }),
                    }
                });
                let Some(cap) = held.as_mut() else { return };
                let now = frontier.frontier().iter().min().copied();
                if now == last_frontier {
                    return;
                }
                last_frontier = now;
                // Per run, the released prefix: readings whose event time the frontier passed.
                cursors.clear();
                for (i, run) in runs.iter().enumerate() {
                    let (mut c, mut pos) = (0, run.head);
                    let (end_chunk, end_pos) = loop {
                        let Some(chunk) = run.chunks.get(c) else {
                            break (c, 0);
                        };
                        let rest = &chunk[pos..];
                        let k = rest.partition_point(|r| !frontier.less_equal(&r.ts));
                        if k < rest.len() {
                            break (c, pos + k);
                        }
                        (c, pos) = (c + 1, 0);
                    };
                    if (end_chunk, end_pos) != (0, run.head) {
                        cursors.push(Cursor {
                            run: i,
                            chunk: 0,
                            pos: run.head,
                            end_chunk,
                            end_pos,
                        });
                    }
                }
                if !cursors.is_empty() {
                    let mut session = output.session(&*cap);
                    let mut emit = |row| session.give(row);
                    merge(&runs, &mut cursors, &mut logic, &mut emit);
                    // Drop what was released: whole containers back to `spare`, and the cut
                    // into the last one as the run's new head.
                    for c in &cursors {
                        let run = &mut runs[c.run];
                        for mut done in run.chunks.drain(..c.end_chunk) {
                            if spare.len() < MAX_SPARE {
                                done.clear();
                                spare.push(done);
                            }
                        }
                        run.head = c.end_pos;
                    }
                    runs.retain(|r| !r.chunks.is_empty());
                }
                match runs.iter().map(|r| r.chunks[0][r.head].ts).min() {
                    // The next input brings its own capability.
                    None => held = None,
                    Some(m) if m > *cap.time() => cap.downgrade(&m),
                    Some(_) => {}
                }
            }
        },
    )
}

/// Emptied input containers an [`in_order`] operator keeps for reuse.
const MAX_SPARE: usize = 64;

/// Pending readings of one run: containers in order, each sorted, each starting no earlier
/// than the previous one ends; the first `head` readings of the first one are done.
struct Run {
    chunks: VecDeque<Vec<Reading>>,
    head: usize,
}

impl Run {
    /// The latest reading of the run.
    fn last(&self) -> &Reading {
        self.chunks
            .back()
            .and_then(|c| c.last())
            .expect("runs hold no empty containers")
    }
}

/// The released part of one run: from (`chunk`, `pos`) up to, not including, (`end_chunk`,
/// `end_pos`); `pos` always points at a reading while the cursor is not at its end.
struct Cursor {
    run: usize,
    chunk: usize,
    pos: usize,
    end_chunk: usize,
    end_pos: usize,
}

impl Cursor {
    fn done(&self) -> bool {
        (self.chunk, self.pos) >= (self.end_chunk, self.end_pos)
    }
    fn get<'r>(&self, runs: &'r [Run]) -> &'r Reading {
        &runs[self.run].chunks[self.chunk][self.pos]
    }
    /// Passes the readings [`FAR`] and [`NEAR`] places on in this container to `ahead`.
    #[inline]
    fn ahead<R>(&self, runs: &[Run], logic: &impl InOrder<R>) {
        let chunk = &runs[self.run].chunks[self.chunk];
        if let Some(r) = chunk.get(self.pos + FAR) {
            logic.ahead(r, false);
        }
        if let Some(r) = chunk.get(self.pos + NEAR) {
            logic.ahead(r, true);
        }
    }
    fn step(&mut self, runs: &[Run]) {
        self.pos += 1;
        if self.pos == runs[self.run].chunks[self.chunk].len() {
            (self.chunk, self.pos) = (self.chunk + 1, 0);
        }
    }
}

/// Hands every reading under `cursors` to `logic` in [`order`] (ties by run), moving the
/// cursors to their ends. Runs are few (about one per sender), so the next reading is found by
/// scanning the cursors' heads; a run is then followed for as long as it stays first.
fn merge<R>(
    runs: &[Run],
    cursors: &mut [Cursor],
    logic: &mut impl InOrder<R>,
    emit: &mut dyn FnMut(R),
) {
    let mut f = |c: &Cursor, logic: &mut _| {
        c.ahead(runs, &*logic);
        InOrder::process(logic, c.get(runs), emit);
    };
    if let [only] = cursors {
        while !only.done() {
            f(only, logic);
            only.step(runs);
        }
        return;
    }
    loop {
        // The cursor with the least head, and the least head among the others.
        let mut best: Option<usize> = None;
        let mut second: Option<usize> = None;
        for (i, c) in cursors.iter().enumerate() {
            if c.done() {
                continue;
            }
            match best {
                None => best = Some(i),
                Some(b) if order(c.get(runs), cursors[b].get(runs)).is_lt() => {
                    second = best;
                    best = Some(i);
                }
                Some(_) => {
                    if second.is_none_or(|s| order(c.get(runs), cursors[s].get(runs)).is_lt()) {
                        second = Some(i);
                    }
                }
            }
        }
        let Some(b) = best else { return };
        let bound = second.map(|s| cursors[s].get(runs));
        let c = &mut cursors[b];
        loop {
            f(c, logic);
            c.step(runs);
            if c.done() || bound.is_some_and(|o| order(c.get(runs), o).is_gt()) {
                break;
            }
        }
    }
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

/// One series' states, by value name (one inline, so a single-valued series' state is in its
/// map entry: one cache line to prefetch, not a pointer more to chase).
type Fields<V> = smallvec::SmallVec<[(Sym, V); 1]>;

impl<V> Default for PerField<V> {
    fn default() -> Self {
        PerField {
            map: SymMap::default(),
        }
    }
}

impl<V> PerField<V> {
    /// Prefetches the entry of `series` (see [`InOrder::ahead`]).
    #[inline]
    pub fn prefetch(&self, series: Sym) {
        self.map.prefetch(series);
    }

    /// The states of `series`, if it has any (to prefetch what they point to).
    #[inline]
    pub fn peek(&self, series: Sym) -> impl Iterator<Item = &V> {
        self.map
            .get(series)
            .into_iter()
            .flat_map(|f| f.iter().map(|(_, v)| v))
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the readings it is handed, in order.
    struct Record(Vec<(EventTime, f64)>);

    impl InOrder<()> for Record {
        fn process(&mut self, r: &Reading, _emit: &mut dyn FnMut(())) {
            self.0.push((r.ts, r.values[0].1));
        }
    }

    #[test]
    fn merge_hands_over_released_prefixes_in_order() {
        // Runs of sorted containers (ties across runs included), each cut at a random point,
        // some starting past a head already done: the merge must yield exactly the readings
        // between each run's head and its cut, in (time, value) order.
        let mut rng = crate::dataset::generate::SplitMix64(0x2545_f491_4f6c_dd1d);
        let mut next = |m: u64| rng.below(m);
        let series = Sym::new("s");
        for round in 0..200 {
            let mut runs = Vec::new();
            let mut cursors = Vec::new();
            let mut want = Vec::new();
            for run in 0..1 + next(4) as usize {
                let mut ts = next(5) as EventTime;
                let mut all: Vec<Reading> = (0..1 + next(20))
                    .map(|_| {
                        ts += next(3) as EventTime;
                        Reading::single(series, ts, next(2) as f64)
                    })
                    .collect();
                all.sort_by(order);
                let mut chunks: VecDeque<Vec<Reading>> = VecDeque::new();
                while !all.is_empty() {
                    let rest = all.split_off((1 + next(6) as usize).min(all.len()));
                    chunks.push_back(std::mem::replace(&mut all, rest));
                }
                let head = next(chunks[0].len() as u64) as usize;
                let flat: Vec<(usize, usize)> = (0..chunks.len())
                    .flat_map(|c| (0..chunks[c].len()).map(move |p| (c, p)))
                    .filter(|&(c, p)| (c, p) >= (0, head))
                    .collect();
                let cut = next(flat.len() as u64 + 1) as usize;
                let (end_chunk, end_pos) = flat.get(cut).copied().unwrap_or((chunks.len(), 0));
                for &(c, p) in &flat[..cut] {
                    let r = &chunks[c][p];
                    want.push((r.ts, r.values[0].1));
                }
                if cut > 0 {
                    cursors.push(Cursor {
                        run,
                        chunk: 0,
                        pos: head,
                        end_chunk,
                        end_pos,
                    });
                }
                runs.push(Run { chunks, head });
            }
            want.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let mut got = Record(Vec::new());
            merge(&runs, &mut cursors, &mut got, &mut |()| {});
            assert_eq!(got.0, want, "round {round}");
            assert!(cursors.iter().all(Cursor::done), "round {round}");
        }
    }
}
