//! The keyed, in-order operator shape most analytics need: readings are exchanged by series,
//! held until the input frontier passes their *event time* (the source guarantees every
//! reading at timely time `t` has event time `>= t`, and diverts readings older than the
//! frontier to `late`), then handed to per-series logic in event-time order (ties by value).
//! So results are the same set of records whatever the number of workers and the batching, and
//! a reading's result depends only on readings at or before it.
//!
//! Records are emitted at a timely time no later than the event time of the readings that
//! produced them (the operator holds one capability, at the earliest pending reading or the
//! next expiry); what an expiry emits, at the expiry's own time.
//!
//! State can expire ([`PerField::new`] with a time to live): a (series, value) silent for
//! longer than the TTL in event time is dropped at a fixed point after that
//! ([`expiry_time`]), between the readings before that point and those at or after it, so a
//! series that comes back starts afresh and the results still do not depend on the number of
//! workers. The operator holds a capability at the next expiry until the input frontier passes
//! it; the end of the input passes every one (as event-time timers fire at the end of input
//! in Flink), so every state expires there.
//!
//! At a stop with a savepoint, sources send stop marks (`engine::route::stop_mark`); the
//! operator processes nothing at or after the lowest one it received, holds its capability
//! there, and at the end processes the readings before it and saves the rest, so all
//! workers' states are cut at one event time.
//!
//! Held readings stay in the containers they arrived in (no copy per reading); release merges
//! the runs' released prefixes by reference. Logic that implements [`InOrder::ahead`] is told
//! the readings a few places ahead, to prefetch their per-series state: with thousands of
//! series, that state is otherwise a cache miss per reading.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::engine::output::SilentRow;
use crate::engine::savepoint::{Cut, Savepoint};
use crate::engine::Metrics;
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

    /// The earliest event time at which [`InOrder::expire`] may have something to drop (a
    /// lower bound), or `None` when no state can expire. The default: none.
    fn next_expiry(&self) -> Option<EventTime> {
        None
    }

    /// Called with `at` = [`InOrder::next_expiry`] once every reading before `at` is processed
    /// and none at or after it: drops the state that expires at or before `at`; `emit` sends
    /// what that changes (an outlier set's retractions) at time `at`. The default does
    /// nothing.
    fn expire(&mut self, _at: EventTime, _emit: &mut dyn FnMut(R)) {}

    /// Whether what an expiry emits must carry the expiry's own time (true, the default: an
    /// outlier set's retraction happens at its time). False lets the operator send everything
    /// the expiries of one activation emit at the earliest of their times, with one
    /// capability: for rows that carry their own times (closed sessions), where a capability
    /// per distinct time would cost more in progress tracking than the rows themselves.
    fn expiries_at_their_times(&self) -> bool {
        true
    }

    /// Whether the run was stopped (rather than its input ended): then the end of the
    /// stream runs no expiries beyond the readings held, since a series still reporting when
    /// the run stopped has not gone silent. The default: never (every expiry runs at the end,
    /// as event-time timers fire at the end of input in Flink).
    fn stopped(&self) -> bool {
        false
    }

    /// Whether a stop writes this logic's state to a savepoint ([`InOrder::save`]). The
    /// default: no.
    fn saves(&self) -> bool {
        false
    }

    /// At a stop, when [`InOrder::saves`]: writes the state and `held` (the readings not yet
    /// processed, at or after the operator's frontier) to the savepoint, which the next run
    /// resumes from; they are then not processed in this run.
    fn save(&mut self, _held: Vec<Reading>) {}

    /// The readings held at the savepoint this run resumes from (those of the series this
    /// worker owns), processed before any other; called once, when the operator is built.
    fn restored(&mut self) -> Vec<Reading> {
        Vec::new()
    }

    /// At a stop with a savepoint, before [`InOrder::save`]: the stop's cut, the lowest stop
    /// mark (`engine::route::stop_mark`). The state holds the readings before it and the
    /// expiries before it. The default does nothing.
    fn cut_at(&mut self, _cut: EventTime) {}

    /// Rows that restate what the state restored from a savepoint stands for, where later
    /// results depend on more than this operator's own rows (the members of an outlier set
    /// that a join or a ranking downstream must know of). Called once, when the operator is
    /// built, after [`InOrder::restored`]; the rows go out at the operator's first
    /// activation, at the dataflow's initial time, before any other (so rows that carry
    /// their own times can place them anywhere). The default: none.
    fn restate(&mut self, _emit: &mut dyn FnMut(R)) {}

    /// With checkpoints (`run --checkpoint-every`), the savepoint they go to; the operator
    /// then calls [`InOrder::checkpoint`] at each barrier. The default: none.
    fn checkpoints(&self) -> Option<Arc<Savepoint>> {
        None
    }

    /// At the checkpoint barrier `barrier`, once every reading before it is processed and
    /// the expiries before it have run: writes the state and `held` (the readings that
    /// arrived before the barrier and are not processed yet) to the checkpoint. The state
    /// goes on unchanged.
    fn checkpoint(&mut self, _barrier: EventTime, _held: Vec<Reading>) {}
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
        move |cap, _info| {
            // Pending readings as runs sorted by (event time, value): arrivals from one sender
            // extend a run, so release is a prefix cut per run, not a scan of everything held.
            // A run keeps the containers as they arrived (no copy), and release merges the
            // runs' released prefixes by reference.
            let mut runs: Vec<Run> = Vec::new();
            // Emptied containers, handed back to the input for the next arrivals.
            let mut spare: Vec<Vec<Reading>> = Vec::new();
            let mut cursors: Vec<Cursor> = Vec::new();
            // What expiries emitted during a release, with their times.
            let mut expired: Vec<(EventTime, R)> = Vec::new();
            let mut held: Option<Capability<EventTime>> = None;
            // Readings a savepoint held come first, under a capability at the earliest (or
            // at the earliest expiry of the restored states, if that is earlier).
            let mut restored = logic.restored();
            restored.sort_by(order);
            let first = restored.first().map(|r| r.ts);
            if let Some(t) = first.into_iter().chain(logic.next_expiry()).min() {
                held = Some(cap.delayed(&t));
            }
            let mut restated: Vec<R> = Vec::new();
            logic.restate(&mut |r| restated.push(r));
            let mut restate_at = (!restated.is_empty()).then(|| cap.clone());
            if !restored.is_empty() {
                runs.push(Run {
                    chunks: VecDeque::from([restored]),
                    arrived: VecDeque::from([EventTime::MIN]),
                    head: 0,
                });
            }
            // Checkpoints: the savepoint and the frontier last seen (barriers crossed since).
            let checkpoints = logic.checkpoints();
            if let Some(sp) = &checkpoints {
                sp.join(false);
            }
            let mut seen = EventTime::MIN;
            let mut last_frontier: Option<EventTime> = None;
            // The lowest stop mark received (`route::stop_mark`): nothing at or after it is
            // processed, and a stop's savepoint is cut there.
            let mark = crate::engine::route::stop_mark();
            let mut cut: Option<EventTime> = None;
            let mut saved = false;
            move |(input, frontier), output| {
                if let Some(at) = restate_at.take() {
                    output.session(&at).give_iterator(restated.drain(..));
                }
                input.for_each(|cap, data| {
                    let Some(&t) = cap.least() else { return };
                    if let Some(m) = crate::engine::route::lowest_stop_mark(data) {
                        cut = Some(cut.map_or(m, |c| c.min(m)));
                        data.retain(|r| r.series != mark);
                        // A mark's capability (at or before the cut) is kept until the end:
                        // nothing downstream passes the cut before this operator is done.
                        if held.as_ref().is_none_or(|h| t < *h.time()) {
                            held = Some(cap.delayed(&t, 0));
                        }
                    }
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
                        Some(r) => {
                            r.chunks.push_back(chunk);
                            r.arrived.push_back(t);
                        }
                        None => runs.push(Run {
                            chunks: VecDeque::from([chunk]),
                            arrived: VecDeque::from([t]),
                            head: 0,
                        }),
                    }
                });
                // The frontier, held at the stop's cut once a stop mark came.
                let now = frontier
                    .frontier()
                    .iter()
                    .min()
                    .map(|&f| cut.map_or(f, |c| f.min(c)));
                // A stop with a savepoint: the readings before the cut are processed, with the
                // expiries before it, and what is held goes to the savepoint, unprocessed. So
                // every worker's state is cut at the same event time: the lowest frontier a
                // source stopped at (without a mark, the frontier this operator last saw).
                if now.is_none() && logic.stopped() && logic.saves() {
                    if saved {
                        return;
                    }
                    if let Some(c) = cut {
                        logic.cut_at(c);
                    }
                    if let (Some(c), Some(cap)) = (cut, held.as_ref()) {
                        let held_runs = (&mut runs, &mut cursors, &mut spare);
                        process_before(c, held_runs, &mut logic, &mut expired, cap, output);
                    }
                    let pending = runs
                        .drain(..)
                        .flat_map(|r| {
                            let head = r.head;
                            r.chunks
                                .into_iter()
                                .enumerate()
                                .flat_map(move |(i, mut c)| {
                                    c.drain(if i == 0 { head } else { 0 }..).collect::<Vec<_>>()
                                })
                        })
                        .collect();
                    logic.save(pending);
                    saved = true;
                    held = None;
                    return;
                }
                let Some(cap) = held.as_mut() else {
                    // Nothing pending and no expiry: a barrier finds the state complete.
                    if let (Some(sp), Some(f)) = (&checkpoints, now) {
                        if let Some(b) = sp.barrier(seen, f) {
                            logic.checkpoint(b, Vec::new());
                        }
                        seen = seen.max(f);
                    }
                    return;
                };
                if now == last_frontier {
                    return;
                }
                last_frontier = now;
                // A checkpoint barrier reached: what came before it is processed and saved
                // first, and what follows goes out at times at or after it.
                let barrier = match (&checkpoints, now) {
                    (Some(sp), Some(f)) => sp.barrier(seen, f),
                    _ => None,
                };
                if let Some(f) = now {
                    seen = seen.max(f);
                }
                if let Some(b) = barrier {
                    let held_runs = (&mut runs, &mut cursors, &mut spare);
                    process_before(b, held_runs, &mut logic, &mut expired, cap, output);
                    let arrived_before: Vec<Reading> = runs
                        .iter()
                        .flat_map(|r| {
                            r.chunks
                                .iter()
                                .zip(&r.arrived)
                                .enumerate()
                                .filter(|(_, (_, &t))| t < b)
                                .flat_map(move |(i, (c, _))| &c[if i == 0 { r.head } else { 0 }..])
                        })
                        .cloned()
                        .collect();
                    logic.checkpoint(b, arrived_before);
                    // Everything pending, and every expiry left, is at or after the barrier.
                    if b > *cap.time() {
                        cap.downgrade(&b);
                    }
                }
                // Readings before the frontier (all of them at the end of the input), each
                // after the expiries at or before its time; then the expiries the frontier
                // passed (all of them at the end of the input).
                release(&mut runs, &mut cursors, &mut spare, now, |runs, cursors| {
                    let mut session = output.session(&*cap);
                    merge(runs, cursors, &mut logic, &mut expired, &mut |row| {
                        session.give(row)
                    });
                });
                // At the end of the stream every expiry runs, unless a stop ended it.
                let stopped = now.is_none() && logic.stopped();
                if !stopped {
                    // An expiry at a stop's cut is the next run's, as one at a barrier is
                    // after it: whether the frontier reached the cut before the end must not
                    // decide which run sends it.
                    let through = match (now, cut) {
                        (Some(n), Some(c)) if n >= c => c - 1,
                        (n, _) => n.unwrap_or(EventTime::MAX),
                    };
                    expire_through(&mut logic, through, &mut expired);
                }
                emit_expired(&mut expired, cap, logic.expiries_at_their_times(), output);
                let pending = runs.iter().map(|r| r.chunks[0][r.head].ts).min();
                let next_expiry = logic.next_expiry().filter(|_| !stopped);
                // Not past a stop's cut: what follows it is the next run's.
                let next = pending.into_iter().chain(next_expiry).chain(cut).min();
                match next {
                    // The next input brings its own capability.
                    None => held = None,
                    Some(m) if m > *cap.time() => cap.downgrade(&m),
                    Some(_) => {}
                }
            }
        },
    )
}

/// Processes everything before the cut `c` (a checkpoint's barrier, or a stop's): the held
/// readings before it, each after the expiries at or before its time, then the expiries
/// before it (one at `c` belongs after it); what they emit goes out under `cap`.
fn process_before<R: Clone + 'static>(
    c: EventTime,
    (runs, cursors, spare): (&mut Vec<Run>, &mut Vec<Cursor>, &mut Vec<Vec<Reading>>),
    logic: &mut impl InOrder<R>,
    expired: &mut Vec<(EventTime, R)>,
    cap: &Capability<EventTime>,
    output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
        '_,
        EventTime,
        CapacityContainerBuilder<Vec<R>>,
    >,
) {
    release(runs, cursors, spare, Some(c), |runs, cursors| {
        let mut session = output.session(cap);
        merge(runs, cursors, logic, expired, &mut |row| session.give(row));
    });
    expire_through(logic, c - 1, expired);
    emit_expired(expired, cap, logic.expiries_at_their_times(), output);
}

/// Sends what expiries emitted: each at its own time when `exact` (`cap` is never moved past
/// the next expiry, so it can be delayed to it), else all at the earliest.
fn emit_expired<R: Clone + 'static>(
    expired: &mut Vec<(EventTime, R)>,
    cap: &Capability<EventTime>,
    exact: bool,
    output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
        '_,
        EventTime,
        CapacityContainerBuilder<Vec<R>>,
    >,
) {
    let mut rows = expired.drain(..).peekable();
    while let Some(&(at, _)) = rows.peek() {
        let at_cap = cap.delayed(&at);
        let mut session = output.session(&at_cap);
        while let Some((_, row)) = rows.next_if(|(t, _)| !exact || *t == at) {
            session.give(row);
        }
    }
}

/// Emptied input containers an [`in_order`] operator keeps for reuse.
const MAX_SPARE: usize = 64;

/// Hands the held readings before `limit` (all of them for `None`) to `handle` as cursors
/// over `runs`, then drops them: whole containers back to `spare`, the cut into the last one
/// as its run's new head.
fn release(
    runs: &mut Vec<Run>,
    cursors: &mut Vec<Cursor>,
    spare: &mut Vec<Vec<Reading>>,
    limit: Option<EventTime>,
    handle: impl FnOnce(&[Run], &mut [Cursor]),
) {
    // Per run, the released prefix.
    cursors.clear();
    for (i, run) in runs.iter().enumerate() {
        let (mut c, mut pos) = (0, run.head);
        let (end_chunk, end_pos) = loop {
            let Some(chunk) = run.chunks.get(c) else {
                break (c, 0);
            };
            let rest = &chunk[pos..];
            let k = rest.partition_point(|r| limit.is_none_or(|l| r.ts < l));
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
    if cursors.is_empty() {
        return;
    }
    handle(runs, cursors);
    for c in cursors.iter() {
        let run = &mut runs[c.run];
        run.arrived.drain(..c.end_chunk);
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

/// Pending readings of one run: containers in order, each sorted, each starting no earlier
/// than the previous one ends; the first `head` readings of the first one are done.
struct Run {
    chunks: VecDeque<Vec<Reading>>,
    /// The timely time each container arrived at (when its source read it), for checkpoints.
    arrived: VecDeque<EventTime>,
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

/// Runs every expiry of `logic` at or before `t`, in time order, keeping what they emit
/// (with their times) in `expired`.
#[inline]
fn expire_through<R>(logic: &mut impl InOrder<R>, t: EventTime, expired: &mut Vec<(EventTime, R)>) {
    while let Some(at) = logic.next_expiry().filter(|&at| at <= t) {
        logic.expire(at, &mut |row| expired.push((at, row)));
        if logic.next_expiry().is_some_and(|next| next <= at) {
            debug_assert!(false, "expire({at}) left an expiry at or before it");
            return;
        }
    }
}

/// Hands every reading under `cursors` to `logic` in [`order`] (ties by run), each after the
/// expiries at or before its time (their records go to `expired`), moving the cursors to
/// their ends. Runs are few (about one per sender), so the next reading is found by
/// scanning the cursors' heads; a run is then followed for as long as it stays first.
fn merge<R, L: InOrder<R>>(
    runs: &[Run],
    cursors: &mut [Cursor],
    logic: &mut L,
    expired: &mut Vec<(EventTime, R)>,
    emit: &mut dyn FnMut(R),
) {
    let mut f = |c: &Cursor, logic: &mut L| {
        c.ahead(runs, &*logic);
        let r = c.get(runs);
        expire_through(logic, r.ts, expired);
        InOrder::process(logic, r, emit);
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
/// value names. With a time to live ([`PerField::new`]), a state whose latest reading is more
/// than the TTL old in event time expires at [`expiry_time`]; the logic passes
/// [`PerField::next_expiry`] and [`PerField::expire`] on from [`InOrder`] (as
/// [`in_order_keyed`] does).
pub struct PerField<V> {
    map: SymMap<Fields<V>>,
    /// Where the number of states held is counted ([`PerField::counted`]).
    metrics: Option<Arc<Metrics>>,
    /// Set when the run is stopped ([`PerField::stopping`]).
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    ttl: Option<EventTime>,
    /// The grid expiries fall on ([`expiry_time_on`]; [`PerField::on_grid`]).
    grain: EventTime,
    /// A lower bound on the earliest expiry among the states (`None`: no state, or no TTL).
    next: Option<EventTime>,
    /// Writes the states and the operator's held readings to a savepoint at a stop
    /// ([`PerField::saved`]).
    saver: Option<(Arc<crate::engine::savepoint::Savepoint>, Saver<V>)>,
    /// Readings a savepoint held, handed to the operator to process first.
    restored: Vec<Reading>,
}

/// Writes a [`PerField`]'s states and the held readings to its savepoint or a checkpoint.
type Saver<V> = Box<dyn Fn(Cut, &SymMap<Fields<V>>, Vec<Reading>)>;

/// One series' states, by value name, each with the event time of its latest reading (one
/// inline, so a single-valued series' state is in its map entry: one cache line to prefetch,
/// not a pointer more to chase).
type Fields<V> = smallvec::SmallVec<[(Sym, EventTime, V); 1]>;

impl<V> Default for PerField<V> {
    /// State that never expires.
    fn default() -> Self {
        PerField::new(None)
    }
}

/// When a state whose latest reading is at `last` expires under a time to live of `ttl`
/// milliseconds: at the first multiple of `max(ttl / 4, 1)` (in epoch milliseconds) after
/// `last + ttl`. So a (series, value) silent for more than the TTL is dropped within 1.25 TTL
/// of its latest reading, and a reading exactly `ttl` after the previous one still finds its
/// state. The fixed grid keeps sweeps rare (at most one per quarter TTL of event time) and the
/// time of each expiry independent of the other series.
pub fn expiry_time(last: EventTime, ttl: EventTime) -> EventTime {
    expiry_time_on(last, ttl, (ttl / 4).max(1))
}

/// [`expiry_time`] on a grid of `grain` milliseconds (at least 1) instead of a quarter TTL.
pub fn expiry_time_on(last: EventTime, ttl: EventTime, grain: EventTime) -> EventTime {
    let grain = grain.max(1);
    let due = last.saturating_add(ttl);
    (due.div_euclid(grain).saturating_add(1)).saturating_mul(grain)
}

impl<V> PerField<V> {
    /// Empty state; with `ttl` (milliseconds, at least 1), states expire (see [`expiry_time`]).
    pub fn new(ttl: Option<EventTime>) -> Self {
        PerField {
            map: SymMap::default(),
            metrics: None,
            stop: None,
            ttl: ttl.map(|t| t.max(1)),
            grain: ttl.map_or(1, |t| (t / 4).max(1)),
            next: None,
            saver: None,
            restored: Vec::new(),
        }
    }

    /// Makes every expiry fall on a multiple of `step` milliseconds: the grid of
    /// [`expiry_time`] (a quarter TTL) rounded up to a multiple of `step`. A dataflow whose
    /// results change only at multiples of `step` (snapshots) uses it so that no state
    /// expires between two of them. Call it before [`PerField::saved`].
    pub fn on_grid(mut self, step: EventTime) -> Self {
        let step = step.max(1);
        self.grain = self
            .grain
            .saturating_add(step - 1)
            .div_euclid(step)
            .max(1)
            .saturating_mul(step);
        self
    }

    fn due(&self, last: EventTime, ttl: EventTime) -> EventTime {
        expiry_time_on(last, ttl, self.grain)
    }

    /// Resumes from and saves to a savepoint as keyed operator `name` on worker `worker`:
    /// takes the saved states of the series this worker owns now (and the readings the
    /// operator held for them, which [`InOrder::restored`] hands over), and at a stop writes
    /// this worker's states and held readings ([`InOrder::save`]). A savepoint that cannot be
    /// read stops the run, which then fails with the reason.
    pub fn saved(
        mut self,
        savepoint: Arc<crate::engine::savepoint::Savepoint>,
        name: &str,
        worker: usize,
    ) -> Self
    where
        V: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        let never = std::sync::atomic::AtomicBool::new(false);
        let stop = self.stop.as_deref().unwrap_or(&never);
        let (states, held) = savepoint.take_keyed::<V>(name, worker, stop);
        for (series, field, last, v) in states {
            let fields = self
                .map
                .get_or_insert_with(Sym::new(&series), Fields::default);
            fields.push((Sym::new(&field), last, v));
            if let Some(m) = &self.metrics {
                m.series_states
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(ttl) = self.ttl {
                let due = self.due(last, ttl);
                self.next = Some(self.next.map_or(due, |n| n.min(due)));
            }
        }
        self.restored = held;
        let name = name.to_string();
        let sp = savepoint.clone();
        self.saver = Some((
            sp,
            Box::new(move |cut, map, held| {
                let states = map
                    .iter()
                    .flat_map(|(series, fields)| {
                        fields.iter().map(move |(field, last, v)| {
                            (series.as_str(), field.as_str(), *last, v)
                        })
                    })
                    .map(|(s, f, last, v)| (s.to_string(), f.to_string(), last, v))
                    .collect::<Vec<_>>();
                savepoint.save_keyed(cut, &name, worker, states, held);
            }),
        ));
        self
    }

    /// Whether these states go to a savepoint now ([`PerField::saved`]): a source of this
    /// process was stopped.
    pub fn saves(&self) -> bool {
        self.saver.as_ref().is_some_and(|(sp, _)| sp.stopped())
    }

    /// Writes the states and `held` to the savepoint (at a stop, [`InOrder::save`]) or a
    /// checkpoint ([`InOrder::checkpoint`]), if there is one.
    pub fn save(&mut self, cut: Cut, held: Vec<Reading>) {
        if let Some((_, save)) = &self.saver {
            save(cut, &self.map, held);
        }
    }

    /// The savepoint checkpoints go to, when the run writes them (see
    /// [`InOrder::checkpoints`]).
    pub fn checkpoints(&self) -> Option<Arc<Savepoint>> {
        self.saver
            .as_ref()
            .filter(|(sp, _)| sp.checkpointing())
            .map(|(sp, _)| sp.clone())
    }

    /// See [`InOrder::restored`].
    pub fn take_restored(&mut self) -> Vec<Reading> {
        std::mem::take(&mut self.restored)
    }

    /// Counts the states held in `metrics` ([`Metrics::series_states`]).
    pub fn counted(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Reads `stop` to tell a stop from the end of the input (see [`InOrder::stopped`]): at a
    /// stop, the states still held do not expire, so a series still reporting is not said to
    /// have gone silent, nor leaves an outlier set.
    pub fn stopping(mut self, stop: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Whether the run was stopped (see [`PerField::stopping`]).
    pub fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
    }

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
            .flat_map(|f| f.iter().map(|(_, _, v)| v))
    }

    /// Runs `f` on the state of `field` of `series` for a reading at `ts` (readings come in
    /// event-time order), made by `make` on first sight or after the state expired.
    #[inline]
    pub fn with<R>(
        &mut self,
        series: Sym,
        field: Sym,
        ts: EventTime,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        if let (Some(ttl), None) = (self.ttl, self.next) {
            self.next = Some(self.due(ts, ttl));
        }
        let fields = self.map.get_or_insert_with(series, Fields::default);
        let i = match fields.iter().position(|(n, _, _)| *n == field) {
            Some(i) => i,
            None => {
                fields.push((field, ts, make()));
                if let Some(m) = &self.metrics {
                    m.series_states
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                fields.len() - 1
            }
        };
        let (_, last, state) = &mut fields[i];
        debug_assert!(
            self.ttl
                .is_none_or(|t| expiry_time_on(*last, t, self.grain) > ts),
            "a state past its expiry: the logic must pass `next_expiry` and `expire` on"
        );
        *last = ts;
        f(state)
    }

    /// Calls `f(series, value name, time of its latest reading, state)` for every state.
    pub fn each(&self, mut f: impl FnMut(Sym, Sym, EventTime, &V)) {
        for (series, fields) in self.map.iter() {
            for (field, last, v) in fields {
                f(*series, *field, *last, v);
            }
        }
    }

    /// Number of series with state.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no series has state.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// See [`InOrder::next_expiry`].
    pub fn next_expiry(&self) -> Option<EventTime> {
        self.next
    }

    /// Drops every state that expires at or before `at` (see [`InOrder::expire`]), handing
    /// each to `dropped` with its series, value name and the time of its latest reading;
    /// O(series held).
    pub fn expire(&mut self, at: EventTime, mut dropped: impl FnMut(Sym, Sym, EventTime, V)) {
        let Some(ttl) = self.ttl else { return };
        let grain = self.grain;
        let mut next: Option<EventTime> = None;
        let mut gone = 0;
        self.map.retain(|series, fields| {
            let mut i = 0;
            while i < fields.len() {
                let due = expiry_time_on(fields[i].1, ttl, grain);
                if due <= at {
                    let (field, last, state) = fields.remove(i);
                    dropped(series, field, last, state);
                    gone += 1;
                } else {
                    next = Some(next.map_or(due, |n: EventTime| n.min(due)));
                    i += 1;
                }
            }
            !fields.is_empty()
        });
        self.next = next;
        if let (Some(m), true) = (&self.metrics, gone > 0) {
            m.series_states
                .fetch_sub(gone, std::sync::atomic::Ordering::Relaxed);
            m.expired
                .fetch_add(gone as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// [`InOrder`] logic over per-series state in a [`PerField`]: `process` handles a reading,
/// and `expired` is told of each state that expires (with the expiry time), to retract what
/// it stood for; `hooks` add what a dataflow does at a savepoint's cut.
pub struct Keyed<V, P, X, H = NoHooks> {
    /// The states.
    pub state: PerField<V>,
    /// Handles one reading with the states.
    pub process: P,
    /// Handles one expired state: series, value name, the state, the time of its latest
    /// reading, the time it expired.
    pub expired: X,
    /// At a savepoint's cut: [`InOrder::cut_at`] and [`InOrder::restate`].
    pub hooks: H,
}

/// What a [`Keyed`] dataflow does at a savepoint's cut, beyond saving and restoring its
/// states: for dataflows whose later results depend on more than their own rows (an outlier
/// set joined and ranked downstream). The defaults do nothing.
pub trait KeyedHooks<V, R> {
    /// See [`InOrder::cut_at`].
    fn cut_at(&mut self, _cut: EventTime) {}

    /// See [`InOrder::restate`]: rows that restate the states restored in `state`.
    fn restate(&mut self, _state: &PerField<V>, _emit: &mut dyn FnMut(R)) {}
}

/// No [`KeyedHooks`]: a keyed dataflow whose rows are all it has to say.
pub struct NoHooks;

impl<V, R> KeyedHooks<V, R> for NoHooks {}

impl<R, V, P, X, H> InOrder<R> for Keyed<V, P, X, H>
where
    P: FnMut(&mut PerField<V>, &Reading, &mut dyn FnMut(R)),
    X: FnMut(Sym, Sym, V, EventTime, EventTime, &mut dyn FnMut(R)),
    H: KeyedHooks<V, R>,
{
    #[inline]
    fn process(&mut self, r: &Reading, emit: &mut dyn FnMut(R)) {
        (self.process)(&mut self.state, r, emit)
    }
    fn next_expiry(&self) -> Option<EventTime> {
        self.state.next_expiry()
    }
    fn stopped(&self) -> bool {
        self.state.stopped()
    }
    fn saves(&self) -> bool {
        self.state.saves()
    }
    fn save(&mut self, held: Vec<Reading>) {
        self.state.save(Cut::Stop, held);
    }
    fn restored(&mut self) -> Vec<Reading> {
        self.state.take_restored()
    }
    fn cut_at(&mut self, cut: EventTime) {
        self.hooks.cut_at(cut)
    }
    fn restate(&mut self, emit: &mut dyn FnMut(R)) {
        self.hooks.restate(&self.state, emit)
    }
    fn checkpoints(&self) -> Option<Arc<Savepoint>> {
        self.state.checkpoints()
    }
    fn checkpoint(&mut self, barrier: EventTime, held: Vec<Reading>) {
        self.state.save(Cut::Barrier(barrier), held);
    }
    fn expire(&mut self, at: EventTime, emit: &mut dyn FnMut(R)) {
        let expired = &mut self.expired;
        self.state.expire(at, |series, field, last, v| {
            expired(series, field, v, last, at, emit)
        });
    }
}

/// An `expired` handler for [`in_order_keyed`] whose dataflow has nothing to retract: the
/// state just goes.
pub fn forget<V, R>(
    _series: Sym,
    _field: Sym,
    _state: V,
    _last: EventTime,
    _at: EventTime,
    _emit: &mut dyn FnMut(R),
) {
}

/// [`in_order`] over per-series state that may expire: `process(state, reading, emit)` per
/// reading, `expired(series, field, state, last, at, emit)` per expired state (`last`: the
/// time of its latest reading; `at`: the expiry).
pub fn in_order_keyed<'s, R, V, P, X>(
    input: Stream<'s, EventTime, Vec<Reading>>,
    name: &str,
    state: PerField<V>,
    process: P,
    expired: X,
) -> Stream<'s, EventTime, Vec<R>>
where
    R: Clone + 'static,
    V: 'static,
    P: FnMut(&mut PerField<V>, &Reading, &mut dyn FnMut(R)) + 'static,
    X: FnMut(Sym, Sym, V, EventTime, EventTime, &mut dyn FnMut(R)) + 'static,
{
    in_order_logic(
        input,
        name,
        Keyed {
            state,
            process,
            expired,
            hooks: NoHooks,
        },
    )
}

/// The `silent` rows of a keyed dataflow (see [`in_order_keyed_silent`]).
pub type Silences<'s> = Stream<'s, EventTime, Vec<SilentRow>>;

/// A dataflow's row or a silence, before [`in_order_keyed_silent`] splits them.
#[derive(Clone)]
enum Tagged<R> {
    Row(R),
    Silent(SilentRow),
}

/// [`in_order_keyed`] whose expired states just go (as with [`forget`]) and are reported:
/// with a time to live, the second stream has a [`SilentRow`] per expired state (the
/// dataflow's `silent` output); without one it is `None` and the rows pass as they are.
pub fn in_order_keyed_silent<'s, R, V, P>(
    input: Stream<'s, EventTime, Vec<Reading>>,
    name: &str,
    state: PerField<V>,
    mut process: P,
) -> (Stream<'s, EventTime, Vec<R>>, Option<Silences<'s>>)
where
    R: Clone + 'static,
    V: 'static,
    P: FnMut(&mut PerField<V>, &Reading, &mut dyn FnMut(R)) + 'static,
{
    use timely::dataflow::operators::vec::{Map, Partition};
    if state.ttl.is_none() {
        return (in_order_keyed(input, name, state, process, forget), None);
    }
    let tagged = move |st: &mut PerField<V>, r: &Reading, emit: &mut dyn FnMut(Tagged<R>)| {
        process(st, r, &mut |row| emit(Tagged::Row(row)))
    };
    let silent = |series, field, _: V, last_ts, time, emit: &mut dyn FnMut(Tagged<R>)| {
        emit(Tagged::Silent(SilentRow {
            series,
            field,
            last_ts,
            time,
        }))
    };
    let out = in_order_keyed(input, name, state, tagged, silent);
    let mut parts = out
        .partition(2, |t| match t {
            Tagged::Row(_) => (0, t),
            Tagged::Silent(_) => (1, t),
        })
        .into_iter();
    let (Some(rows), Some(silences)) = (parts.next(), parts.next()) else {
        unreachable!("partition gives the 2 streams asked for");
    };
    let rows = rows.flat_map(|t| match t {
        Tagged::Row(r) => Some(r),
        Tagged::Silent(_) => None,
    });
    let silences = silences.flat_map(|t| match t {
        Tagged::Silent(s) => Some(s),
        Tagged::Row(_) => None,
    });
    (rows, Some(silences))
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

    /// Per barrier: the barrier, the readings processed before it, the held ones saved.
    type Cuts = Arc<std::sync::Mutex<Vec<(EventTime, Vec<EventTime>, Vec<EventTime>)>>>;

    /// Records what it processed and, at each barrier, what it was told to save.
    struct AtBarriers {
        sp: Arc<Savepoint>,
        done: Vec<EventTime>,
        cuts: Cuts,
    }

    impl InOrder<EventTime> for AtBarriers {
        fn process(&mut self, r: &Reading, emit: &mut dyn FnMut(EventTime)) {
            self.done.push(r.ts);
            emit(r.ts);
        }
        fn checkpoints(&self) -> Option<Arc<Savepoint>> {
            Some(self.sp.clone())
        }
        fn checkpoint(&mut self, barrier: EventTime, held: Vec<Reading>) {
            let mut held: Vec<EventTime> = held.iter().map(|r| r.ts).collect();
            held.sort_unstable();
            self.cuts
                .lock()
                .unwrap()
                .push((barrier, self.done.clone(), held));
        }
    }

    #[test]
    fn a_checkpoint_saves_what_arrived_before_its_barrier_and_emits_the_rest_after_it() {
        // Readings are sent at the timely time their source read them (its frontier then),
        // with event times at or after it. With barriers every 100: when the frontier jumps
        // from 90 to 110, the state must have processed exactly the readings before 100, the
        // held ones saved must be those that arrived before 100 (105, 120 and 130, not 115
        // and 140, which arrived at 110 and are read again after a resume), and every row of
        // a reading at or after the barrier must go out at a time at or after it (105 is
        // processed in the same step as 95, whose capability is before the barrier).
        use timely::dataflow::operators::{Input, Inspect, Probe};
        let dir = tempfile::tempdir().unwrap();
        let sp = Arc::new(
            Savepoint::open(dir.path(), Default::default(), 1, (0, 1))
                .unwrap()
                .with_checkpoints(100),
        );
        let cuts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let rows = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, r) = (cuts.clone(), rows.clone());
        timely::execute_directly(move |worker| {
            // Two sources, as two workers' would be: `a` runs ahead past the barrier while
            // `b` holds the frontier before it.
            let (mut a, mut b, probe) = worker.dataflow::<EventTime, _, _>(|scope| {
                use timely::dataflow::operators::Concat;
                let (a, sa) = scope.new_input::<Vec<Reading>>();
                let (b, sb) = scope.new_input::<Vec<Reading>>();
                let logic = AtBarriers {
                    sp,
                    done: Vec::new(),
                    cuts: c,
                };
                let (probe, _) = in_order_logic(sa.concat(sb), "cut", logic)
                    .inspect_core(move |event| {
                        if let Ok((stamp, data)) = event {
                            let t = stamp.into_iter().min().copied().unwrap();
                            r.lock().unwrap().extend(data.iter().map(|ts| (t, *ts)));
                        }
                    })
                    .probe();
                (a, b, probe)
            });
            let s = Sym::new("cut/s");
            let send = |input: &mut timely::dataflow::InputHandle<EventTime, _>,
                        t: EventTime,
                        ts: &[EventTime]| {
                input.advance_to(t);
                for &ts in ts {
                    input.send(Reading::single(s, ts, ts as f64));
                }
                input.flush();
            };
            let settle = |worker: &mut timely::worker::Worker| {
                for _ in 0..50 {
                    worker.step();
                }
            };
            send(&mut a, 10, &[50, 120]);
            send(&mut b, 10, &[]);
            settle(worker);
            send(&mut a, 90, &[130, 95, 105]);
            send(&mut b, 90, &[]);
            settle(worker);
            // `a` reads on after the barrier; `b` has not reached it.
            send(&mut a, 110, &[140, 115]);
            settle(worker);
            send(&mut b, 150, &[]);
            settle(worker);
            send(&mut a, 300, &[]);
            b.advance_to(300);
            while probe.less_than(&300) {
                worker.step();
            }
        });
        let cuts = cuts.lock().unwrap().clone();
        assert_eq!(
            cuts[0],
            (100, vec![50, 95], vec![105, 120, 130]),
            "{cuts:?}"
        );
        let rows = rows.lock().unwrap().clone();
        assert_eq!(rows.len(), 7, "{rows:?}");
        assert_eq!(
            cuts.len(),
            2,
            "barriers 100 and 300 (the frontier jumps from 110 to 300): {cuts:?}"
        );
        for (t, ts) in rows {
            assert!(
                t <= ts,
                "a row goes out no later than its reading: {t} {ts}"
            );
            assert!(
                ts < 100 || t >= 100,
                "after the barrier, at or after it: {t} {ts}"
            );
        }
    }

    /// What a stop saved: the readings processed, and the held readings saved.
    type Stopped = Arc<std::sync::Mutex<Option<(Vec<EventTime>, Vec<EventTime>)>>>;

    /// Records what it processed, and what a stop told it to save; a state due to expire at
    /// `expiry` records `-expiry` among what it processed when it does.
    struct AtStop {
        done: Vec<EventTime>,
        saved: Stopped,
        expiry: Option<EventTime>,
    }

    impl InOrder<()> for AtStop {
        fn process(&mut self, r: &Reading, _emit: &mut dyn FnMut(())) {
            self.done.push(r.ts);
        }
        fn next_expiry(&self) -> Option<EventTime> {
            self.expiry
        }
        fn expire(&mut self, at: EventTime, _emit: &mut dyn FnMut(())) {
            if let Some(e) = self.expiry.filter(|e| *e <= at) {
                self.done.push(-e);
                self.expiry = None;
            }
        }
        fn stopped(&self) -> bool {
            true
        }
        fn saves(&self) -> bool {
            true
        }
        fn save(&mut self, held: Vec<Reading>) {
            let mut held: Vec<EventTime> = held.iter().map(|r| r.ts).collect();
            held.sort_unstable();
            *self.saved.lock().unwrap() = Some((self.done.clone(), held));
        }
    }

    #[test]
    fn a_stop_cuts_every_state_at_the_lowest_stop_mark() {
        // Two sources, as two workers' (or two processes') would be. `a` stops first, at its
        // frontier 100, with 105 of its series read and held; `b` goes on to 200 before it
        // stops. A resumed run starts at 100 (the lowest saved frontier), and `a`'s series
        // may still bring readings at 100 or later: so the stop must not process 105, nor
        // anything else at or after 100, though the frontier passed it once `a` was gone.
        // A state due to expire at 100, the cut, is the next run's (as an expiry at a barrier
        // is after it), though the frontier reached 100 before the end.
        use timely::dataflow::operators::{Input, Probe};
        let saved: Stopped = Arc::default();
        let got = saved.clone();
        timely::execute_directly(move |worker| {
            let (mut a, mut b, probe) = worker.dataflow::<EventTime, _, _>(|scope| {
                use timely::dataflow::operators::Concat;
                let (a, sa) = scope.new_input::<Vec<Reading>>();
                let (b, sb) = scope.new_input::<Vec<Reading>>();
                let logic = AtStop {
                    done: Vec::new(),
                    saved: got,
                    expiry: Some(100),
                };
                let (probe, _) = in_order_logic(sa.concat(sb), "stop", logic).probe();
                (a, b, probe)
            });
            let (s, mark) = (Sym::new("stop/s"), crate::engine::route::stop_mark());
            let settle = |worker: &mut timely::worker::Worker| {
                for _ in 0..50 {
                    worker.step();
                }
            };
            a.advance_to(10);
            a.send(Reading::single(s, 95, 1.0));
            a.send(Reading::single(s, 105, 1.0));
            b.advance_to(10);
            settle(worker);
            a.advance_to(100);
            a.send(Reading::single(mark, 100, 0.0));
            drop(a);
            settle(worker);
            b.advance_to(140);
            b.send(Reading::single(Sym::new("stop/t"), 150, 1.0));
            b.advance_to(200);
            settle(worker);
            b.send(Reading::single(mark, 200, 0.0));
            drop(b);
            while !probe.done() {
                worker.step();
            }
        });
        let (done, held) = saved.lock().unwrap().clone().expect("the stop saved");
        assert_eq!(
            done,
            vec![95],
            "processed before the cut, and no expiry at it"
        );
        assert_eq!(held, vec![105, 150], "held at the cut, for the next run");
    }

    #[test]
    fn expiry_is_the_first_quarter_ttl_point_after_the_ttl() {
        assert_eq!(expiry_time(0, 60_000), 75_000);
        assert_eq!(expiry_time(14_999, 60_000), 75_000);
        assert_eq!(expiry_time(15_000, 60_000), 90_000);
        assert_eq!(expiry_time(-1, 60_000), 60_000);
        assert_eq!(expiry_time(7, 1), 9);
        assert_eq!(expiry_time(7, 3), 11);
        assert!(expiry_time(EventTime::MAX - 5, 60_000) >= EventTime::MAX - 15_000);
        for last in [-100_000, -1, 0, 1, 59_999, 1_700_000_000_123] {
            let e = expiry_time(last, 60_000);
            assert!(e > last + 60_000 && e <= last + 75_000, "{last}: {e}");
            assert_eq!(e % 15_000, 0);
        }
    }

    #[test]
    fn per_field_states_expire_as_the_rule_says() {
        // Random readings of 30 (series, field) pairs in event-time order, driven as the
        // operator drives them: every expiry at or before a reading's time runs first. Each
        // state counts its readings; the count must restart exactly where the gap from the
        // pair's previous reading crosses its expiry, and every drop must be one of those.
        let mut rng = crate::dataset::generate::SplitMix64(99);
        let ttl = 1_000;
        let names: Vec<(Sym, Sym)> = (0..30)
            .map(|i| {
                (
                    Sym::new(&format!("pf/s{}", i % 12)),
                    Sym::new(&format!("f{}", i % 3)),
                )
            })
            .collect();
        let mut state: PerField<u64> = PerField::new(Some(ttl));
        // Oracle: per pair, (last ts, readings in its state).
        let mut want: std::collections::HashMap<(Sym, Sym), (EventTime, u64)> = Default::default();
        let mut dropped = Vec::new();
        let mut drops = 0;
        let mut ts: EventTime = 0;
        for _ in 0..20_000 {
            let most = if rng.below(50) == 0 { 3_000 } else { 60 };
            ts += rng.below(most) as EventTime;
            while let Some(at) = state.next_expiry().filter(|&at| at <= ts) {
                state.expire(at, |s, f, last, n| dropped.push((at, s, f, last, n)));
                assert!(state.next_expiry().is_none_or(|n| n > at));
            }
            for (at, s, f, got_last, n) in dropped.drain(..) {
                drops += 1;
                let (last, count) = want.remove(&(s, f)).expect("dropped twice");
                assert_eq!(n, count, "{s}/{f}: the state dropped");
                assert_eq!(got_last, last, "{s}/{f}: the time of its latest reading");
                assert!(expiry_time(last, ttl) <= at, "{s}/{f} dropped early");
            }
            let (series, field) = names[rng.below(30) as usize];
            let w = want.entry((series, field)).or_insert((ts, 0));
            assert!(
                expiry_time(w.0, ttl) > ts,
                "{series}/{field} not dropped in time"
            );
            *w = (ts, w.1 + 1);
            let got = state.with(
                series,
                field,
                ts,
                || 0,
                |n| {
                    *n += 1;
                    *n
                },
            );
            assert_eq!(got, w.1, "{series}/{field} at {ts}");
            let live: std::collections::HashSet<Sym> = want.keys().map(|k| k.0).collect();
            assert_eq!(state.len(), live.len());
        }
        assert!(drops > 100, "only {drops} states expired");
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
                let arrived = chunks.iter().map(|_| EventTime::MIN).collect();
                runs.push(Run {
                    chunks,
                    arrived,
                    head,
                });
            }
            want.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let mut got = Record(Vec::new());
            merge(&runs, &mut cursors, &mut got, &mut Vec::new(), &mut |()| {});
            assert_eq!(got.0, want, "round {round}");
            assert!(cursors.iter().all(Cursor::done), "round {round}");
        }
    }
}
