//! `sessions`: per series and value, session windows in event time. Readings at most `--gap`
//! apart are one session; a session closes when `--gap` passes after its last reading with
//! no new one, and is emitted then, once, with its first and last reading's times, count,
//! mean, min, max and population standard deviation. With `--above X` and/or `--below Y`
//! only values inside that range take part, and a value outside it closes the open session
//! at once: each row is then one excursion (a machine running hot, a queue over its limit),
//! split also where readings stop for longer than the gap.
//!
//! Built on `engine::keyed::in_order_logic`: each series' readings arrive in event-time order,
//! so the sessions are the same set of rows whatever the number of workers. The gap's timeout
//! is an event-time timer ([`InOrder::next_expiry`]): a session closes once every reading up
//! to `last + gap` is processed, at time `last + gap + 1 ms`; the end of the input closes
//! every session still open (a stopped run too, like the other dataflows' open windows).
//!
//! With `--max-session`, a reading that would make a session last longer than that (from
//! its first reading) closes it and starts the next, so a series that never pauses still
//! gives a row per period.
//!
//! State per open session: its summary (five numbers), its first and last times, and one
//! entry in a timer heap; O(1) per reading, O(log sessions) per session opened or closed. A
//! series that never pauses for the gap keeps one session open, without output, for as long
//! as that lasts, unless `--max-session` cuts it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use super::{Dataflow, Outputs, Params};
use crate::analytics::window::WindowStats;
use crate::engine::keyed::{in_order_logic, InOrder};
use crate::engine::output::{csv_f64s, push_csv_field, JsonObject, Row};
use crate::engine::savepoint::{Cut, Savepoint};
use crate::engine::Metrics;
use crate::record::{write_i64, EventTime, Reading, Sym};
use crate::sym::SymMap;

/// How sessions are cut (`--gap`, `--above`, `--below`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionParams {
    /// Readings at most this far apart (ms, at least 1) are one session.
    pub gap_ms: EventTime,
    /// Only values above this take part (`--above`).
    pub above: Option<f64>,
    /// Only values below this take part (`--below`).
    pub below: Option<f64>,
    /// The longest a session may last (ms, `--max-session`): a reading that would make it
    /// last longer closes it and starts the next one. `None`: no limit.
    pub max_ms: Option<EventTime>,
}

impl Default for SessionParams {
    /// A one-minute gap, every value.
    fn default() -> Self {
        SessionParams {
            gap_ms: 60_000,
            above: None,
            below: None,
            max_ms: None,
        }
    }
}

impl SessionParams {
    /// Checks the settings; the error says what to change.
    pub fn check(&self) -> Result<(), String> {
        if self.gap_ms < 1 {
            return Err("--gap must be at least 1ms, e.g. 30s or 5m".into());
        }
        if self.max_ms.is_some_and(|m| m < 1) {
            return Err("--max-session must be at least 1ms, e.g. 1h or 1d".into());
        }
        if let (Some(a), Some(b)) = (self.above, self.below) {
            if a >= b {
                return Err(format!(
                    "--above {a} --below {b}: no value is both above {a} and below {b}; \
                     give a band with --above lower than --below"
                ));
            }
        }
        for (flag, v) in [("--above", self.above), ("--below", self.below)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(format!("{flag} must be a finite number"));
            }
        }
        Ok(())
    }

    /// Whether `v` takes part in sessions.
    #[inline]
    pub fn admits(&self, v: f64) -> bool {
        self.above.is_none_or(|a| v > a) && self.below.is_none_or(|b| v < b)
    }
}

/// One closed session of one value of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Event time of its first reading, UTC ms.
    pub start: EventTime,
    /// Event time of its last reading, UTC ms (inclusive).
    pub end: EventTime,
    /// Number of readings.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Population standard deviation.
    pub std: f64,
}

impl Row for SessionRow {
    const CSV_HEADER: &'static str = "series,field,start,end,count,mean,min,max,std";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        push_csv_field(out, &self.series);
        out.push(b',');
        push_csv_field(out, &self.field);
        for v in [self.start, self.end, self.count as i64] {
            out.push(b',');
            write_i64(out, v);
        }
        out.push(b',');
        csv_f64s(out, &[self.mean, self.min, self.max, self.std]);
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        JsonObject::new(out)
            .str("series", &self.series)
            .str("field", &self.field)
            .i64("start", self.start)
            .i64("end", self.end)
            .i64("count", self.count as i64)
            .f64("mean", self.mean)
            .f64("min", self.min)
            .f64("max", self.max)
            .f64("std", self.std)
            .end();
    }
    /// Each closed session goes to the dashboard's Sessions view.
    fn publish(&self, out: &mut Vec<crate::dashboard::hub::Update>) {
        out.push(crate::dashboard::hub::Update::Session(
            crate::dashboard::hub::SessionUpdate {
                series: self.series,
                field: self.field,
                start: self.start,
                end: self.end,
                count: self.count,
                mean: self.mean,
                min: self.min,
                max: self.max,
            },
        ));
    }
}

/// An open session, in a slot of [`Sessions::slab`].
struct Open {
    series: Sym,
    field: Sym,
    stats: WindowStats,
    start: EventTime,
    last: EventTime,
    /// The time of its entry in the timer heap; an entry at another time is stale.
    queued: EventTime,
}

impl Open {
    fn row(&self) -> SessionRow {
        SessionRow {
            series: self.series,
            field: self.field,
            start: self.start,
            end: self.last,
            count: self.stats.count,
            mean: self.stats.mean,
            min: self.stats.min,
            max: self.stats.max,
            std: self.stats.std(),
        }
    }
}

/// An open session as a savepoint keeps it (with its series, value name and `last`).
#[derive(Serialize, Deserialize)]
struct SavedOpen {
    stats: WindowStats,
    start: EventTime,
}

/// A timer: the session in slot `slot` may close at `at` (16 bytes, compared as two
/// integers).
type Timer = Reverse<(EventTime, u32)>;

/// The per-series logic: open sessions in a slab, found by series and value name, and their
/// timers.
///
/// A session gets one timer when it opens, at `last + gap + 1`; a reading that extends it
/// only moves `last`. When the timer fires the session closes if its deadline passed, and
/// otherwise the timer is set again at the deadline, so a session costs one heap operation
/// per gap of its length rather than one per reading. A timer whose time is not its slot's
/// `queued` (left by a session that a value outside the range closed early, its slot free or
/// reused) is dropped when it fires; closing is decided by the occupant's own deadline, so a
/// stale timer can never close a session early.
struct Sessions {
    params: SessionParams,
    /// Slot of each open session by series, then value name.
    index: SymMap<smallvec::SmallVec<[(Sym, u32); 1]>>,
    slab: Vec<Option<Open>>,
    free: Vec<u32>,
    timers: BinaryHeap<Timer>,
    metrics: Arc<Metrics>,
    /// The run's stop flag: at a stop with a savepoint, open sessions are saved, not closed.
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The savepoint (`--savepoint`) and this worker's index.
    savepoint: Option<(Arc<Savepoint>, usize)>,
    /// Readings the savepoint held, handed to the operator at the start.
    restored: Vec<Reading>,
}

impl Sessions {
    fn deadline(&self, last: EventTime) -> EventTime {
        last.saturating_add(self.params.gap_ms).saturating_add(1)
    }

    /// Opens a session of (`series`, `field`) with the reading (`ts`, `v`).
    fn open(&mut self, series: Sym, field: Sym, ts: EventTime, v: f64) {
        let mut stats = WindowStats::default();
        stats.update(v);
        self.reopen(series, field, stats, ts, ts);
    }

    /// Opens a session of (`series`, `field`) from `start` to `last` with `stats`.
    fn reopen(
        &mut self,
        series: Sym,
        field: Sym,
        stats: WindowStats,
        start: EventTime,
        last: EventTime,
    ) {
        let deadline = self.deadline(last);
        let session = Open {
            series,
            field,
            stats,
            start,
            last,
            queued: deadline,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(session);
                slot
            }
            None => {
                self.slab.push(Some(session));
                (self.slab.len() - 1) as u32
            }
        };
        self.index
            .get_or_insert_with(series, smallvec::SmallVec::new)
            .push((field, slot));
        self.timers.push(Reverse((deadline, slot)));
        self.metrics.series_states.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the session out of `slot` (its index entry too).
    fn close(&mut self, slot: u32) -> Open {
        let o = self.slab[slot as usize].take().expect("a closed slot");
        self.free.push(slot);
        if let Some(fields) = self.index.get_mut(o.series) {
            fields.retain(|(f, _)| *f != o.field);
            if fields.is_empty() {
                self.index.remove(o.series);
            }
        }
        self.metrics.series_states.fetch_sub(1, Ordering::Relaxed);
        o
    }
}

impl Sessions {
    /// Writes the open sessions and `held` to the stop's savepoint or a checkpoint.
    fn save_to(&self, cut: Cut, held: Vec<Reading>) {
        let Some((sp, worker)) = &self.savepoint else {
            return;
        };
        let open = self
            .slab
            .iter()
            .flatten()
            .map(|o| {
                let saved = SavedOpen {
                    stats: o.stats,
                    start: o.start,
                };
                (o.series.to_string(), o.field.to_string(), o.last, saved)
            })
            .collect();
        sp.save_keyed(cut, "sessions", *worker, open, held);
    }

    /// With a savepoint: takes the open sessions and held readings of the series this
    /// worker owns. A savepoint that cannot be read stops the run, which fails with why.
    fn resume(mut self) -> Self {
        let Some((sp, worker)) = self.savepoint.clone() else {
            return self;
        };
        let (open, held) = sp.take_keyed::<SavedOpen>("sessions", worker, &self.stop);
        for (series, field, last, o) in open {
            self.reopen(Sym::new(&series), Sym::new(&field), o.stats, o.start, last);
        }
        self.restored = held;
        self
    }
}

impl InOrder<SessionRow> for Sessions {
    /// A stop is told from the end of the input only with a savepoint (then the open
    /// sessions are saved); without one, a stop closes them, cut short, as the end does.
    fn stopped(&self) -> bool {
        self.saves() && self.stop.load(Ordering::Relaxed)
    }

    /// At a stop with a savepoint, the open sessions go to it rather than being closed.
    fn saves(&self) -> bool {
        self.savepoint.as_ref().is_some_and(|(sp, _)| sp.stopped())
    }

    fn save(&mut self, held: Vec<Reading>) {
        self.save_to(Cut::Stop, held);
    }

    fn checkpoints(&self) -> Option<Arc<Savepoint>> {
        self.savepoint
            .as_ref()
            .filter(|(sp, _)| sp.checkpointing())
            .map(|(sp, _)| sp.clone())
    }

    fn checkpoint(&mut self, barrier: EventTime, held: Vec<Reading>) {
        self.save_to(Cut::Barrier(barrier), held);
    }

    fn restored(&mut self) -> Vec<Reading> {
        std::mem::take(&mut self.restored)
    }

    fn process(&mut self, r: &Reading, emit: &mut dyn FnMut(SessionRow)) {
        for &(field, v) in &r.values {
            let slot = self
                .index
                .get(r.series)
                .and_then(|fields| fields.iter().find(|(f, _)| *f == field))
                .map(|&(_, slot)| slot);
            match (slot, self.params.admits(v)) {
                (Some(slot), true) => {
                    let o = self.slab[slot as usize].as_mut().expect("an open slot");
                    if self.params.max_ms.is_some_and(|m| r.ts - o.start > m) {
                        // Long enough: this reading starts the next session.
                        emit(self.close(slot).row());
                        self.open(r.series, field, r.ts, v);
                    } else {
                        o.stats.update(v);
                        o.last = r.ts;
                    }
                }
                // A value outside the range ends the excursion at once.
                (Some(slot), false) => emit(self.close(slot).row()),
                (None, true) => self.open(r.series, field, r.ts, v),
                (None, false) => {}
            }
        }
    }

    fn ahead(&self, r: &Reading, near: bool) {
        if !near {
            self.index.prefetch(r.series);
        } else if let Some(fields) = self.index.get(r.series) {
            for &(_, slot) in fields {
                let at = self.slab.as_ptr().wrapping_add(slot as usize).cast::<u8>();
                crate::prefetch(at);
            }
        }
    }

    /// A closed session's row carries its own times; one capability per activation is
    /// enough (a capability per closing time cost a third of the operator's time on W1).
    fn expiries_at_their_times(&self) -> bool {
        false
    }

    fn next_expiry(&self) -> Option<EventTime> {
        self.timers.peek().map(|t| t.0 .0)
    }

    fn expire(&mut self, at: EventTime, emit: &mut dyn FnMut(SessionRow)) {
        while let Some(&Reverse((t, slot))) = self.timers.peek() {
            if t > at {
                break;
            }
            self.timers.pop();
            let Some(o) = self.slab[slot as usize].as_ref() else {
                continue; // free: its session closed early
            };
            if o.queued != t {
                continue; // left by an earlier occupant, or set again since
            }
            let due = self.deadline(o.last);
            if due <= at {
                emit(self.close(slot).row());
            } else {
                self.slab[slot as usize].as_mut().expect("open").queued = due;
                self.timers.push(Reverse((due, slot)));
            }
        }
    }
}

/// The registered dataflow.
pub struct SessionsFlow;

impl Dataflow for SessionsFlow {
    fn name(&self) -> &'static str {
        "sessions"
    }
    fn about(&self) -> &'static str {
        "per series and value: session windows split by --gap (excursions with --above/--below)"
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
        let logic = Sessions {
            params: params.sessions,
            index: SymMap::default(),
            slab: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            metrics: params.metrics.clone(),
            stop: params.stop.clone(),
            savepoint: params.savepoint.clone().map(|sp| (sp, params.worker)),
            restored: Vec::new(),
        }
        .resume();
        let rows = in_order_logic(input, "sessions", logic);
        outputs.add("sessions", rows, true);
    }
}
