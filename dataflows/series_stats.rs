//! `series_stats`: per series and value, tumbling event-time windows (`--window`, default
//! 10 s) with count, mean, min, max and population standard deviation, emitted once, when the
//! input frontier passes the window's end. With `--slide` shorter than the window, the
//! windows hop: one ends every slide, each `--window` long, so a reading is in
//! window / slide of them.
//!
//! State: one [`WindowStats`] (five numbers) per series, value and open window; a window is
//! open from its first reading until the frontier passes its end (at most
//! `lateness / window + 2` windows per series in a steady stream). Hopping windows keep the
//! same per *pane* (a slide's worth of readings), O(1) per reading; complete panes queue per
//! series and value in a [`PaneQueue`], whose merge is a window's summary in O(1) amortized
//! (two stacks, no subtraction), so neither a reading nor a row costs more as window / slide
//! grows; a pane is dropped once the last window that holds it is out (window / slide + 1
//! panes per series and value, plus those the lateness keeps open). Late data never reaches this operator: the source sends it to the
//! `late` output. At a stop with a savepoint, the frontier is held at the lowest stop mark,
//! so no window ending after it closes in the stopped run (see `note_stop_marks`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::{Dataflow, Outputs, Params};
use crate::analytics::window::{LocalTumbling, PaneQueue, Tumbling, WindowStats};
use crate::dataset::timefmt::Zone;
use crate::engine::barrier::ArrivalStash;
use crate::engine::output::{push_csv_field, Row};
use crate::engine::savepoint::{Cut, SavedState, Savepoint};
use crate::record::{push_short, repeat_text, write_f64, write_i64, EventTime, Reading, Sym};
use crate::sym::SymMap;

/// One closed window of one value of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRow {
    /// Series id.
    pub series: Sym,
    /// Value name.
    pub field: Sym,
    /// Window start (inclusive), UTC ms.
    pub window_start: EventTime,
    /// Window end (exclusive), UTC ms.
    pub window_end: EventTime,
    /// Number of values.
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

impl Row for WindowRow {
    const CSV_HEADER: &'static str = "series,field,window_start,window_end,count,mean,min,max,std";
    fn key(&self) -> &str {
        &self.series
    }
    fn write_csv(&self, out: &mut Vec<u8>) {
        push_csv_field(out, &self.series);
        out.push(b',');
        push_csv_field(out, &self.field);
        out.push(b',');
        write_span(out, self.window_start, self.window_end);
        out.push(b',');
        write_i64(out, self.count as i64);
        out.push(b',');
        self.write_values(out, [b",", b",", b","]);
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"series\":");
        serde_json::to_writer(&mut *out, &*self.series).expect("vec write");
        out.extend_from_slice(b",\"field\":");
        serde_json::to_writer(&mut *out, &*self.field).expect("vec write");
        for (k, v) in [
            ("window_start", self.window_start),
            ("window_end", self.window_end),
            ("count", self.count as i64),
        ] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
            write_i64(out, v);
        }
        out.extend_from_slice(b",\"mean\":");
        self.write_values(out, [b",\"min\":", b",\"max\":", b",\"std\":"]);
        out.push(b'}');
    }
}

thread_local! {
    /// The last window written by this thread as `(start, end, "start,end")`: every row of
    /// a closed window has the same two times, so they are formatted once per window.
    static SPAN: std::cell::RefCell<(EventTime, EventTime, Vec<u8>)> =
        const { std::cell::RefCell::new((0, 0, Vec::new())) };
}

/// Appends `start,end`, from the thread's cache when it is the window written last.
fn write_span(out: &mut Vec<u8>, start: EventTime, end: EventTime) {
    SPAN.with_borrow_mut(|(s, e, text)| {
        if (*s, *e) != (start, end) || text.is_empty() {
            text.clear();
            write_i64(text, start);
            text.push(b',');
            write_i64(text, end);
            (*s, *e) = (start, end);
        }
        push_short(out, text);
    });
}

impl WindowRow {
    /// Appends mean, then min, max and std each after its separator. A window of one reading
    /// (more than half of W1's) has mean = min = max: that number is formatted once.
    #[inline(always)]
    fn write_values(&self, out: &mut Vec<u8>, seps: [&'static [u8]; 3]) {
        let start = out.len();
        write_f64(out, self.mean);
        let end = out.len();
        for (v, sep) in [self.min, self.max].into_iter().zip(seps) {
            if v.to_bits() == self.mean.to_bits() && v.is_finite() {
                repeat_text(out, start..end, sep);
            } else {
                out.extend_from_slice(sep);
                write_f64(out, v);
            }
        }
        out.extend_from_slice(seps[2]);
        write_f64(out, self.std);
    }
}

/// The registered dataflow.
pub struct SeriesStats;

/// Adds the values of `r` to its series' summaries; returns how many summaries it opened.
#[inline(always)]
fn add_values(fields: &mut Fields, r: &Reading) -> i64 {
    let mut opened = 0;
    for (name, v) in &r.values {
        match fields.iter_mut().find(|(n, _)| n == name) {
            Some((_, st)) => st.update(*v),
            None => {
                let mut st = WindowStats::default();
                st.update(*v);
                fields.push((*name, st));
                opened += 1;
            }
        }
    }
    opened
}

type Fields = smallvec::SmallVec<[(Sym, WindowStats); 1]>;
/// Open windows by end time: the capability to emit at the end, and per-series state.
type OpenWindows = BTreeMap<EventTime, (Capability<EventTime>, SymMap<Fields>)>;
/// The operator's output of window rows.
type WindowOutput<'a> = timely::dataflow::operators::generic::OutputBuilderSession<
    'a,
    EventTime,
    CapacityContainerBuilder<Vec<WindowRow>>,
>;

impl Dataflow for SeriesStats {
    fn name(&self) -> &'static str {
        "series_stats"
    }
    fn about(&self) -> &'static str {
        "per series and value: tumbling windows with count, mean, min, max, population std"
    }
    /// Open windows (tumbling), or open panes and pane queues (hopping).
    fn savepoints(&self) -> bool {
        true
    }
    /// Windows and panes are cut at barriers through an [`ArrivalStash`].
    fn checkpoints(&self) -> bool {
        true
    }
    fn build<'s>(
        &self,
        input: Stream<'s, EventTime, Vec<Reading>>,
        params: &Params,
        outputs: &mut Outputs<'_>,
    ) {
        let tumbling = Tumbling {
            width_ms: (params.window.as_millis() as i64).max(1),
        };
        if let Some(slide) = params.slide.filter(|s| *s < params.window) {
            let slide_ms = (slide.as_millis() as i64).max(1);
            let stats = hopping(
                input,
                (tumbling.width_ms, slide_ms),
                params.window_zone.clone(),
                params.metrics.clone(),
                params.stop.clone(),
                params.savepoint.clone().map(|sp| (sp, params.worker)),
            );
            outputs.add("series_stats", stats, true);
            return;
        }
        // Windows on a local clock (`--window-zone`); None keeps the UTC path as it was. The
        // width was checked against the zone before the run started.
        let local = (params.window_zone != Zone::default())
            .then(|| LocalTumbling::new(tumbling.width_ms, params.window_zone.clone()).ok())
            .flatten();
        let stats = tumbling_windows(
            input,
            (tumbling, local),
            params.metrics.clone(),
            params.stop.clone(),
            params.savepoint.clone().map(|sp| (sp, params.worker)),
        );
        outputs.add("series_stats", stats, true);
    }
}

/// Opens the windows a savepoint kept (`saved`: this worker's share), each under a
/// capability at its end; returns how many summaries it opened.
fn resume_windows(
    windows: &mut OpenWindows,
    cap: &Capability<EventTime>,
    (saved, _): (Vec<SavedState<WindowStats>>, Vec<Reading>),
) -> i64 {
    let n = saved.len() as i64;
    for (series, field, end, st) in saved {
        let (_, per_series) = windows
            .entry(end)
            .or_insert_with(|| (cap.delayed(&end), SymMap::default()));
        per_series
            .get_or_insert_with(Sym::new(&series), Fields::new)
            .push((Sym::new(&field), st));
    }
    n
}

/// Tumbling windows (`tumbling`, on the local clock of `local` when given): each window's
/// summaries per series and value, emitted at its end once the frontier passes it.
/// With `savepoint` (this worker's), resumes the windows it kept, saves them at a stop, and
/// cuts them at checkpoint barriers.
fn tumbling_windows<'s>(
    input: Stream<'s, EventTime, Vec<Reading>>,
    (tumbling, local): (Tumbling, Option<LocalTumbling>),
    metrics: std::sync::Arc<crate::engine::Metrics>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    savepoint: Option<(std::sync::Arc<Savepoint>, usize)>,
) -> Stream<'s, EventTime, Vec<WindowRow>> {
    input.unary_frontier::<CapacityContainerBuilder<Vec<WindowRow>>, _, _, _>(
        crate::engine::route::by_series(),
        "series_stats",
        move |cap, _info| {
            let mut windows: OpenWindows = BTreeMap::new();
            if let Some((sp, worker)) = &savepoint {
                let n = resume_windows(
                    &mut windows,
                    &cap,
                    sp.take_keyed("series_stats", *worker, &stop),
                );
                metrics.open_windows.fetch_add(n, Ordering::Relaxed);
            }
            // Checkpoints: readings that arrive at or after the next barrier wait.
            let mut stash = ArrivalStash::new(savepoint.as_ref().map(|(sp, _)| sp.clone()));
            let mut saved = false;
            // The lowest stop mark received (`EventTime::MAX`: none); see `note_stop_marks`.
            let mut cut = EventTime::MAX;
            // Series in the last closed window: the size new windows start at.
            let mut typical = 16usize;
            // Maps of closed windows, drained and kept for new windows.
            let mut spare: Vec<SymMap<Fields>> = Vec::new();
            let local_start = local.clone();
            let end_of = move |ts: EventTime| match &local {
                None => tumbling.end(ts),
                Some(l) => l.end(ts),
            };
            let start_of = move |end: EventTime| match &local_start {
                None => end - tumbling.width_ms,
                Some(l) => l.start(end - 1),
            };
            move |(input, frontier), output| {
                let mut opened = 0i64;
                input.for_each(|cap, data| {
                    note_stop_marks(data, &mut cut);
                    if !stash.hold(&cap, data) {
                        let delayed = |end| cap.delayed(&end, 0);
                        opened += fold_windows(
                            (&mut windows, &mut spare, typical),
                            data,
                            &end_of,
                            &delayed,
                        );
                    }
                });
                // The frontier, held at a stop's cut once a stop mark came.
                let now = frontier.frontier().iter().min().map(|&f| f.min(cut));
                let mut closed = 0i64;
                // A checkpoint barrier crossed: the windows hold what arrived before it;
                // those ending before it go out, the rest are saved.
                if let Some(b) = stash.advance(now) {
                    opened += fold_released(stash.release(Some(b)), |d, delayed| {
                        fold_windows((&mut windows, &mut spare, typical), d, &end_of, delayed)
                    });
                    closed += close_windows(
                        &mut windows,
                        b - 1,
                        &start_of,
                        &mut spare,
                        &mut typical,
                        output,
                    );
                    if let Some((sp, worker)) = &savepoint {
                        let states = window_states(&windows);
                        sp.save_keyed(Cut::Barrier(b), "series_stats", *worker, states, vec![]);
                    }
                }
                opened += fold_released(stash.release(stash.until(now)), |d, delayed| {
                    fold_windows((&mut windows, &mut spare, typical), d, &end_of, delayed)
                });
                // A stop ends the stream before the windows still open are complete:
                // with a savepoint they go to it, otherwise they are written cut short.
                // (Once: the operator may run again after its input ended.)
                let saving = savepoint.as_ref().filter(|(sp, _)| sp.stopped() && !saved);
                if let (None, Some((sp, worker))) = (now, saving) {
                    let states = window_states(&windows);
                    closed += states.len() as i64;
                    windows.clear();
                    sp.save_keyed(Cut::Stop, "series_stats", *worker, states, vec![]);
                    saved = true;
                } else if now.is_none() && stop.load(Ordering::Relaxed) {
                    if let Some((&end, _)) = windows.first_key_value() {
                        metrics.note_cut_short(start_of(end));
                    }
                }
                closed += close_windows(
                    &mut windows,
                    now.unwrap_or(EventTime::MAX),
                    &start_of,
                    &mut spare,
                    &mut typical,
                    output,
                );
                if closed > 0 {
                    tracing::trace!(closed, "series_stats windows closed");
                }
                if opened != closed {
                    metrics
                        .open_windows
                        .fetch_add(opened - closed, Ordering::Relaxed);
                }
            }
        },
    )
}

/// Lowers `cut` to the lowest stop mark in `data` (`engine::route::stop_mark`). A stop with
/// a savepoint cuts every worker at the lowest frontier a source stopped at, where the
/// resumed sources start: a source that stopped there may bring more readings at or after
/// it, so no window or pane ending after it may close in the stopped run, though the
/// frontier passes it once that source is gone (on a cluster, while other processes still
/// read). Windows then close up to the cut only, and the rest go to the savepoint.
fn note_stop_marks(data: &[Reading], cut: &mut EventTime) {
    if let Some(m) = crate::engine::route::lowest_stop_mark(data) {
        *cut = (*cut).min(m);
    }
}

/// Folds `data` into the open windows, opening a window under `delayed(end)`; returns how
/// many summaries it opened.
fn fold_windows(
    (windows, spare, typical): (&mut OpenWindows, &mut Vec<SymMap<Fields>>, usize),
    data: &mut Vec<Reading>,
    end_of: &impl Fn(EventTime) -> EventTime,
    delayed: &dyn Fn(EventTime) -> Capability<EventTime>,
) -> i64 {
    let mut opened = 0;
    // Windows are folded as readings arrive, and a stop keeps them open: a stop mark
    // (`engine::route::stop_mark`) is nothing to fold.
    let mark = crate::engine::route::stop_mark();
    for r in data.drain(..).filter(|r| r.series != mark) {
        let end = end_of(r.ts);
        let (_, per_series) = windows.entry(end).or_insert_with(|| {
            let map = spare
                .pop()
                .unwrap_or_else(|| SymMap::with_capacity(typical));
            (delayed(end), map)
        });
        let fields = per_series.get_or_insert_with(r.series, Fields::new);
        opened += add_values(fields, &r);
    }
    opened
}

/// Folds the containers an [`ArrivalStash`] released with `fold(container, delayed)` (a
/// [`fold_windows`] or [`fold_panes`]), `delayed` giving capabilities from the one they were
/// kept under; returns how many summaries that opened.
fn fold_released(
    released: Option<(Capability<EventTime>, Vec<Vec<Reading>>)>,
    mut fold: impl FnMut(&mut Vec<Reading>, &dyn Fn(EventTime) -> Capability<EventTime>) -> i64,
) -> i64 {
    let Some((cap, mut kept)) = released else {
        return 0;
    };
    let delayed = |end| cap.delayed(&end);
    kept.iter_mut().map(|d| fold(d, &delayed)).sum()
}

/// Every open window's summaries as a savepoint keeps them (keyed by the window's end).
fn window_states(windows: &OpenWindows) -> Vec<SavedState<WindowStats>> {
    let mut saved = Vec::new();
    for (end, (_, per_series)) in windows {
        for (series, fields) in per_series.iter() {
            for (field, st) in fields {
                saved.push((series.to_string(), field.to_string(), *end, *st));
            }
        }
    }
    saved
}

/// Emits and drops the windows ending at or before `through`; returns how many summaries.
fn close_windows(
    windows: &mut OpenWindows,
    through: EventTime,
    start_of: &impl Fn(EventTime) -> EventTime,
    spare: &mut Vec<SymMap<Fields>>,
    typical: &mut usize,
    output: &mut WindowOutput<'_>,
) -> i64 {
    let mut closed = 0;
    while let Some(entry) = windows.first_entry() {
        let end = *entry.key();
        if end > through {
            break;
        }
        let (cap, mut per_series) = entry.remove();
        *typical = per_series.len().max(16);
        let start = start_of(end);
        let mut session = output.session(&cap);
        for (series, fields) in per_series.drain() {
            for (field, st) in fields {
                closed += 1;
                session.give(WindowRow {
                    series,
                    field,
                    window_start: start,
                    window_end: end,
                    count: st.count,
                    mean: st.mean,
                    min: st.min,
                    max: st.max,
                    std: st.std(),
                });
            }
        }
        if spare.len() < 4 {
            spare.push(per_series);
        }
    }
    closed
}

/// Per series, its values' queues of complete panes (hopping windows).
type Queues = smallvec::SmallVec<[(Sym, PaneQueue); 1]>;
/// Panes still taking readings, by local end, per series.
type OpenPanes = BTreeMap<EventTime, SymMap<Fields>>;
/// The next hopping window to emit: its capability and its local end.
type NextWindow = Option<(Capability<EventTime>, EventTime)>;

/// A hopping-window state as a savepoint keeps it.
#[derive(Serialize, Deserialize)]
enum Pane {
    /// A pane still taking readings (its local end is the entry's time).
    Open(WindowStats),
    /// The complete panes of the windows to come (the entry's time is the operator's
    /// frontier at the stop), structure and all, so the merges come out bit for bit.
    Queued(PaneQueue),
}

impl Pane {
    /// How many summaries it holds (open-window metrics).
    fn summaries(&self) -> i64 {
        match self {
            Pane::Open(_) => 1,
            Pane::Queued(q) => q.len() as i64,
        }
    }
}

/// Reopens the panes a savepoint kept (`saved`: this worker's share); returns how many
/// summaries that is and the stopped run's frontier (if it had queues).
fn resume_panes(
    open: &mut OpenPanes,
    queues: &mut SymMap<Queues>,
    (saved, _): (Vec<SavedState<Pane>>, Vec<Reading>),
) -> (i64, Option<EventTime>) {
    let (mut n, mut frontier) = (0i64, None);
    for (series, field, at, pane) in saved {
        let (series, field) = (Sym::new(&series), Sym::new(&field));
        match pane {
            Pane::Open(st) => {
                n += 1;
                open.entry(at)
                    .or_default()
                    .get_or_insert_with(series, Fields::new)
                    .push((field, st));
            }
            Pane::Queued(q) => {
                n += q.len() as i64;
                frontier = Some(at);
                queues
                    .get_or_insert_with(series, Queues::new)
                    .push((field, q));
            }
        }
    }
    (n, frontier)
}

/// The open panes and the queues as a savepoint keeps them; the queues under `frontier`,
/// the operator's frontier at the cut (where the next window is found again).
fn pane_states(
    open: &OpenPanes,
    queues: &SymMap<Queues>,
    frontier: Option<EventTime>,
) -> Vec<SavedState<Pane>> {
    let mut saved = Vec::new();
    for (end, per_series) in open {
        for (series, fields) in per_series.iter() {
            for (field, st) in fields {
                let (s, f) = (series.to_string(), field.to_string());
                saved.push((s, f, *end, Pane::Open(*st)));
            }
        }
    }
    let at = frontier.unwrap_or(EventTime::MIN);
    for (series, qs) in queues.iter() {
        for (field, q) in qs {
            let (s, f) = (series.to_string(), field.to_string());
            saved.push((s, f, at, Pane::Queued(q.clone())));
        }
    }
    saved
}

/// Folds `data` into the open panes, moving the next window (under `delayed(utc end)`)
/// earlier when a pane ends before it; returns how many summaries it opened.
fn fold_panes(
    (open, next): (&mut OpenPanes, &mut NextWindow),
    data: &mut Vec<Reading>,
    pane_end: &impl Fn(EventTime) -> EventTime,
    utc: &impl Fn(EventTime) -> EventTime,
    delayed: &dyn Fn(EventTime) -> Capability<EventTime>,
) -> i64 {
    let mut opened = 0;
    let mark = crate::engine::route::stop_mark();
    for r in data.drain(..).filter(|r| r.series != mark) {
        let end = pane_end(r.ts);
        // The first window holding this pane ends with it.
        if next.as_ref().is_none_or(|(_, e)| end < *e) {
            *next = Some((delayed(utc(end)), end));
        }
        let fields = open
            .entry(end)
            .or_default()
            .get_or_insert_with(r.series, Fields::new);
        opened += add_values(fields, &r);
    }
    opened
}

/// Emits every window whose end (UTC) is before `limit`, moving complete panes onto the
/// queues and dropping those no window holds any more; returns how many summaries closed.
fn emit_windows(
    limit: EventTime,
    (open, queues, next): (&mut OpenPanes, &mut SymMap<Queues>, &mut NextWindow),
    (width_ms, slide_ms): (i64, i64),
    utc: &impl Fn(EventTime) -> EventTime,
    output: &mut WindowOutput<'_>,
) -> i64 {
    let mut closed = 0;
    while let Some((cap, end)) = next.as_mut() {
        if *cap.time() >= limit {
            break;
        }
        let end = *end;
        // The panes up to `end` are complete.
        while let Some(entry) = open.first_entry() {
            if *entry.key() > end {
                break;
            }
            let (key, mut pane) = entry.remove_entry();
            for (series, fields) in pane.drain() {
                let qs = queues.get_or_insert_with(series, Queues::new);
                for (name, st) in fields {
                    match qs.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, q)) => q.push(key, st),
                        None => {
                            let mut q = PaneQueue::default();
                            q.push(key, st);
                            qs.push((name, q));
                        }
                    }
                }
            }
        }
        // The window (end - width, end]: drop older panes, emit the rest's merge.
        let (start_utc, end_utc) = (utc(end - width_ms), utc(end));
        let mut session = output.session(&*cap);
        queues.retain(|series, qs| {
            qs.retain(|(field, q)| {
                while q.oldest().is_some_and(|k| k <= end - width_ms) {
                    q.pop();
                    closed += 1;
                }
                if q.is_empty() {
                    return false;
                }
                let st = q.total();
                session.give(WindowRow {
                    series,
                    field: *field,
                    window_start: start_utc,
                    window_end: end_utc,
                    count: st.count,
                    mean: st.mean,
                    min: st.min,
                    max: st.max,
                    std: st.std(),
                });
                true
            });
            !qs.is_empty()
        });
        drop(session);
        // The next window with data: the next slide while panes are queued, else the first
        // open pane's.
        let e = match open.first_key_value() {
            _ if !queues.is_empty() => end + slide_ms,
            Some((&first, _)) => (end + slide_ms).max(first),
            None => {
                *next = None;
                break;
            }
        };
        cap.downgrade(&utc(e));
        if let Some((_, at)) = next.as_mut() {
            *at = e;
        }
    }
    closed
}

/// Checks `--slide` against `--window` (and the zone the windows follow); the error says
/// what to give.
pub fn check_slide(window_ms: i64, slide_ms: i64, zone: &Zone) -> Result<(), String> {
    if slide_ms < 1 || slide_ms > window_ms || window_ms % slide_ms != 0 {
        return Err(format!(
            "--slide {slide_ms} ms with --window {window_ms} ms: the slide must divide the \
             window (e.g. --window 1m --slide 10s)"
        ));
    }
    LocalTumbling::new(slide_ms, zone.clone())
        .map(|_| ())
        .map_err(|why| format!("--slide {slide_ms} ms with --window-zone: {why}"))
}

/// Hopping windows: `width_ms` long, one ending every `slide_ms` on the zone's local clock
/// (the slide divides the width; see [`check_slide`]). Readings go into the open pane of
/// their slide (keyed by its local end); when the frontier passes a window's end, the panes
/// up to it are complete and move, per series and value, onto a [`PaneQueue`], which drops
/// the panes older than the window and gives the window's summary in O(1) amortized. So a
/// reading costs O(1) and a row O(1), whatever window / slide is. The operator holds one
/// capability, at the next window that has data.
fn hopping<'s>(
    input: Stream<'s, EventTime, Vec<Reading>>,
    (width_ms, slide_ms): (i64, i64),
    zone: Zone,
    metrics: std::sync::Arc<crate::engine::Metrics>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    savepoint: Option<(std::sync::Arc<Savepoint>, usize)>,
) -> Stream<'s, EventTime, Vec<WindowRow>> {
    // Local pane end of a reading, and the UTC instant of a local boundary.
    let pane_end = {
        let zone = zone.clone();
        move |ts: EventTime| zone.local_ms(ts).div_euclid(slide_ms) * slide_ms + slide_ms
    };
    let utc = move |local: EventTime| zone.earliest_utc(local);
    input.unary_frontier::<CapacityContainerBuilder<Vec<WindowRow>>, _, _, _>(
        crate::engine::route::by_series(),
        "series_stats",
        move |cap, _info| {
            // Panes still taking readings, by local end.
            let mut open: OpenPanes = BTreeMap::new();
            // Complete panes of the windows still to come, per series and value.
            let mut queues: SymMap<Queues> = SymMap::default();
            // The next window to emit: its capability and its local end.
            let mut next: NextWindow = None;
            if let Some((sp, worker)) = &savepoint {
                let saved = sp.take_keyed("series_stats_hopping", *worker, &stop);
                let (n, frontier) = resume_panes(&mut open, &mut queues, saved);
                // The first window the stopped run had not emitted (its end at or after the
                // frontier), or the first open pane's.
                let e = match open.first_key_value() {
                    _ if !queues.is_empty() => frontier.map(|f| pane_end(f - 1)),
                    Some((&first, _)) => Some(first),
                    None => None,
                };
                next = e.map(|e| (cap.delayed(&utc(e)), e));
                metrics.open_windows.fetch_add(n, Ordering::Relaxed);
            }
            // Checkpoints: readings that arrive at or after the next barrier wait.
            let mut stash = ArrivalStash::new(savepoint.as_ref().map(|(sp, _)| sp.clone()));
            let mut saved = false;
            // The lowest stop mark received (`EventTime::MAX`: none); see `note_stop_marks`.
            let mut cut = EventTime::MAX;
            // The operator's frontier before the input ended (a savepoint keeps it).
            let mut last_frontier: Option<EventTime> = None;
            move |(input, frontier), output| {
                let mut opened = 0i64;
                input.for_each(|cap, data| {
                    note_stop_marks(data, &mut cut);
                    if !stash.hold(&cap, data) {
                        let delayed = |end| cap.delayed(&end, 0);
                        opened +=
                            fold_panes((&mut open, &mut next), data, &pane_end, &utc, &delayed);
                    }
                });
                // The frontier, held at a stop's cut once a stop mark came.
                let now = frontier.frontier().iter().min().map(|&f| f.min(cut));
                let mut closed = 0i64;
                // A checkpoint barrier crossed: the panes hold what arrived before it; the
                // windows ending before it go out, the rest is saved as at a stop there.
                if let Some(b) = stash.advance(now) {
                    opened += fold_released(stash.release(Some(b)), |d, delayed| {
                        fold_panes((&mut open, &mut next), d, &pane_end, &utc, delayed)
                    });
                    closed += emit_windows(
                        b,
                        (&mut open, &mut queues, &mut next),
                        (width_ms, slide_ms),
                        &utc,
                        output,
                    );
                    if let Some((sp, worker)) = &savepoint {
                        let states = pane_states(&open, &queues, Some(b));
                        sp.save_keyed(
                            Cut::Barrier(b),
                            "series_stats_hopping",
                            *worker,
                            states,
                            vec![],
                        );
                    }
                }
                opened += fold_released(stash.release(stash.until(now)), |d, delayed| {
                    fold_panes((&mut open, &mut next), d, &pane_end, &utc, delayed)
                });
                if let Some(f) = now {
                    last_frontier = Some(f);
                }
                // A stop ends the stream before the next window is complete: with a savepoint
                // the panes go to it (once), otherwise the next windows are written cut short.
                let saving = savepoint.as_ref().filter(|(sp, _)| sp.stopped() && !saved);
                if let (None, Some((sp, worker))) = (now, saving) {
                    let states = pane_states(&open, &queues, last_frontier);
                    let n = states.iter().map(|(_, _, _, p)| p.summaries()).sum::<i64>();
                    open.clear();
                    queues = SymMap::default();
                    sp.save_keyed(Cut::Stop, "series_stats_hopping", *worker, states, vec![]);
                    metrics.open_windows.fetch_sub(n, Ordering::Relaxed);
                    next = None;
                    saved = true;
                } else if now.is_none() && stop.load(Ordering::Relaxed) {
                    if let Some((_, end)) = &next {
                        metrics.note_cut_short(utc(end - width_ms));
                    }
                }
                closed += emit_windows(
                    now.unwrap_or(EventTime::MAX),
                    (&mut open, &mut queues, &mut next),
                    (width_ms, slide_ms),
                    &utc,
                    output,
                );
                if opened != closed {
                    metrics
                        .open_windows
                        .fetch_add(opened - closed, Ordering::Relaxed);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The rows (time, end, count) of a run, the savepoint the next run resumes from, and the
    /// directory that holds it.
    type Outcome = (
        Vec<(EventTime, EventTime, u64)>,
        Savepoint,
        tempfile::TempDir,
    );

    /// Builds the windows operator under test over the input, given the savepoint.
    trait Build:
        for<'s> Fn(
            Stream<'s, EventTime, Vec<Reading>>,
            Option<(Arc<Savepoint>, usize)>,
        ) -> Stream<'s, EventTime, Vec<WindowRow>>
        + Send
        + Sync
        + 'static
    {
    }
    impl<F> Build for F where
        F: for<'s> Fn(
                Stream<'s, EventTime, Vec<Reading>>,
                Option<(Arc<Savepoint>, usize)>,
            ) -> Stream<'s, EventTime, Vec<WindowRow>>
            + Send
            + Sync
            + 'static
    {
    }

    /// The rows (time, end, count) of `build`'s windows, given savepoint `sp`, over two
    /// sources `a` and `b` that `drive` feeds (stepping the worker as it likes); the dataflow
    /// runs to its end after `drive` returns.
    fn two_sources(
        build: impl Build,
        sp: Arc<Savepoint>,
        drive: impl FnOnce(&mut timely::worker::Worker, Inputs) + Send + Sync + 'static,
    ) -> Vec<(EventTime, EventTime, u64)> {
        use timely::dataflow::operators::{Concat, Input, Inspect, Probe};
        let rows = Arc::new(Mutex::new(Vec::new()));
        let r = rows.clone();
        timely::execute_directly(move |worker| {
            let (a, b, probe) = worker.dataflow::<EventTime, _, _>(|scope| {
                let (a, sa) = scope.new_input::<Vec<Reading>>();
                let (b, sb) = scope.new_input::<Vec<Reading>>();
                let (probe, _) = build(sa.concat(sb), Some((sp.clone(), 0)))
                    .inspect_core(move |event| {
                        if let Ok((stamp, data)) = event {
                            let t = stamp.into_iter().min().copied().unwrap();
                            let mut r = r.lock().unwrap();
                            r.extend(data.iter().map(|w| (t, w.window_end, w.count)));
                        }
                    })
                    .probe();
                (a, b, probe)
            });
            sp.built();
            drive(worker, (a, b));
            while !probe.done() {
                worker.step();
            }
        });
        let mut rows = rows.lock().unwrap().clone();
        rows.sort();
        rows
    }

    /// An input of readings.
    type Input = timely::dataflow::InputHandle<EventTime, CapacityContainerBuilder<Vec<Reading>>>;
    /// The two inputs [`two_sources`] hands its driver.
    type Inputs = (Input, Input);

    /// Sends readings of one series at `ts` from `input` at timely time `t` (its frontier).
    fn send(input: &mut Input, t: EventTime, ts: &[EventTime]) {
        input.advance_to(t);
        for &ts in ts {
            input.send(Reading::single(Sym::new("cut/s"), ts, ts as f64));
        }
        input.flush();
    }

    /// Steps the worker enough for what was sent to reach every operator.
    fn settle(worker: &mut timely::worker::Worker) {
        for _ in 0..50 {
            worker.step();
        }
    }

    /// Windows of `build` (given the savepoint) over two sources, with barriers every 100:
    /// their rows as (time, end, count), and the savepoint a new run resumes from once the
    /// checkpoint at 100 is complete. Readings are sent at the timely time their source read
    /// them (its frontier then), with event times at or after it. `a` reads 115 and 140 at
    /// 110, after its frontier passed the barrier, while `b` holds the operator's frontier
    /// at 90: a resumed run reads them again, so the state saved at 100 must not hold them.
    fn cut_at_100(build: impl Build) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let sp = Arc::new(
            Savepoint::open(dir.path(), Default::default(), 1, (0, 1))
                .unwrap()
                .with_checkpoints(100),
        );
        // A source and a sink of the process, so that the checkpoint completes once the
        // source wrote its position and the sink passed the barrier.
        sp.join(false);
        sp.join(true);
        let rows = two_sources(build, sp.clone(), |worker, (mut a, mut b)| {
            send(&mut a, 10, &[50, 120]);
            send(&mut b, 10, &[]);
            settle(worker);
            send(&mut a, 90, &[130, 95]);
            send(&mut b, 90, &[]);
            settle(worker);
            send(&mut a, 110, &[140, 115]);
            settle(worker);
            send(&mut b, 150, &[]);
            settle(worker);
            send(&mut a, 300, &[]);
            b.advance_to(300);
            settle(worker);
        });
        // The source and the sink pass the barrier: the checkpoint is complete.
        let at_barrier = crate::engine::savepoint::SourcePosition {
            frontier: 100,
            partitions: Vec::new(),
        };
        sp.save_source(Cut::Barrier(100), 0, &at_barrier);
        sp.sink_passed(100, true, Default::default);
        let next = Savepoint::open(dir.path(), Default::default(), 1, (0, 1)).unwrap();
        let at = next.resumed().expect("the checkpoint at 100").dir.clone();
        assert!(at.ends_with("g0c100"), "{}", at.display());
        (rows, next, dir)
    }

    /// Windows of `build` (given the savepoint) over two sources that stop one after the
    /// other, as two processes of a cluster would: their rows as (time, end, count), and the
    /// stop's savepoint. `a` reads 50, 95 and 105, then stops at its frontier 100 and sends
    /// its stop mark; `b` goes on to 200 before it stops. A resumed `a` starts at 100 and may
    /// still bring readings at 100 or later, so no window ending after 100 may close.
    fn stopped_at_100(build: impl Build) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let sp = Arc::new(Savepoint::open(dir.path(), Default::default(), 1, (0, 1)).unwrap());
        let spw = sp.clone();
        let rows = two_sources(build, sp.clone(), move |worker, (mut a, mut b)| {
            let mark = crate::engine::route::stop_mark();
            send(&mut a, 10, &[50, 95, 105]);
            send(&mut b, 90, &[]);
            send(&mut a, 90, &[]);
            settle(worker);
            a.advance_to(100);
            a.send(Reading::single(mark, 100, 0.0));
            spw.note_stopped();
            drop(a);
            settle(worker);
            send(&mut b, 140, &[150]);
            b.advance_to(200);
            settle(worker);
            b.send(Reading::single(mark, 200, 0.0));
        });
        let at_stop = crate::engine::savepoint::SourcePosition {
            frontier: 100,
            partitions: Vec::new(),
        };
        sp.save_source(Cut::Stop, 0, &at_stop);
        sp.finish(1).unwrap().expect("a stop's savepoint");
        let next = Savepoint::open(dir.path(), Default::default(), 1, (0, 1)).unwrap();
        assert_eq!(next.resumed().expect("the stop's savepoint").frontier, 100);
        (rows, next, dir)
    }

    /// Tumbling windows of 10 (UTC).
    fn tumbling_of_10<'s>(
        input: Stream<'s, EventTime, Vec<Reading>>,
        sp: Option<(Arc<Savepoint>, usize)>,
    ) -> Stream<'s, EventTime, Vec<WindowRow>> {
        let tumbling = Tumbling { width_ms: 10 };
        let (m, stop) = (Default::default(), Default::default());
        tumbling_windows(input, (tumbling, None), m, stop, sp)
    }

    /// Hopping windows of 20 every 10 (UTC).
    fn hopping_20_by_10<'s>(
        input: Stream<'s, EventTime, Vec<Reading>>,
        sp: Option<(Arc<Savepoint>, usize)>,
    ) -> Stream<'s, EventTime, Vec<WindowRow>> {
        let (m, stop) = (Default::default(), Default::default());
        hopping(input, (20, 10), Zone::default(), m, stop, sp)
    }

    /// The tumbling windows `next` resumes, as (end, count), and the readings it holds.
    fn saved_windows(next: &Savepoint) -> (Vec<(EventTime, u64)>, Vec<Reading>) {
        let (states, held) = next.take_keyed::<WindowStats>("series_stats", 0, &Default::default());
        let mut saved: Vec<_> = states
            .iter()
            .map(|(_, _, end, st)| (*end, st.count))
            .collect();
        saved.sort();
        (saved, held)
    }

    /// The panes `next` resumes, as (end, count) for an open one and (frontier, -panes) for a
    /// queue, and the readings it holds.
    fn saved_panes(next: &Savepoint) -> (Vec<(EventTime, i64)>, Vec<Reading>) {
        let (states, held) =
            next.take_keyed::<Pane>("series_stats_hopping", 0, &Default::default());
        let mut saved: Vec<_> = states
            .iter()
            .map(|(_, _, end, p)| match p {
                Pane::Open(st) => (*end, st.count as i64),
                Pane::Queued(q) => (*end, -(q.len() as i64)),
            })
            .collect();
        saved.sort();
        (saved, held)
    }

    #[test]
    fn a_stop_closes_no_window_after_the_lowest_stop_mark() {
        // Windows of 10: 50's and 95's close (they end by 100); 105's and 150's are saved,
        // though `b` took the frontier past their ends.
        let (rows, next, _dir) = stopped_at_100(tumbling_of_10);
        assert_eq!(rows, vec![(60, 60, 1), (100, 100, 1)]);
        let (saved, _) = saved_windows(&next);
        assert_eq!(saved, vec![(110, 1), (160, 1)], "windows after the cut");
    }

    #[test]
    fn a_stop_emits_no_hopping_window_after_the_lowest_stop_mark() {
        // Windows of 20 every 10: those ending at 60 and 70 (of 50) go out; the window ending
        // at 100 would go out once the frontier passed it, which it does not in this run. The
        // open panes of 95, 105 and 150 are saved, with the cut as the frontier.
        let (rows, next, _dir) = stopped_at_100(hopping_20_by_10);
        assert_eq!(rows, vec![(60, 60, 1), (70, 70, 1)]);
        let (saved, _) = saved_panes(&next);
        assert_eq!(
            saved,
            vec![(100, 1), (110, 1), (160, 1)],
            "panes after the cut"
        );
    }

    #[test]
    fn a_checkpoint_holds_the_windows_of_what_arrived_before_its_barrier() {
        // Windows of 10. Saved at 100: 95 (its window ends at 100, so it goes out at 100,
        // after the barrier), 120 and 130; the window of 50 went out before it.
        let (rows, next, _dir) = cut_at_100(tumbling_of_10);
        let (saved, held) = saved_windows(&next);
        assert_eq!(
            saved,
            vec![(100, 1), (130, 1), (140, 1)],
            "windows at the barrier"
        );
        assert!(held.is_empty());
        // Every window once, at its end: the one before the barrier before it, the others
        // at or after it.
        assert_eq!(
            rows,
            vec![
                (60, 60, 1),
                (100, 100, 1),
                (120, 120, 1),
                (130, 130, 1),
                (140, 140, 1),
                (150, 150, 1)
            ]
        );
    }

    #[test]
    fn a_checkpoint_holds_the_panes_of_what_arrived_before_its_barrier() {
        // Windows of 20 every 10. By 100 the windows ending at 60 and 70 (of 50) went out
        // and its pane left the queue; saved are the open panes of 95, 120 and 130.
        let (rows, next, _dir) = cut_at_100(hopping_20_by_10);
        let (saved, held) = saved_panes(&next);
        assert_eq!(
            saved,
            vec![(100, 1), (130, 1), (140, 1)],
            "panes at the barrier"
        );
        assert!(held.is_empty());
        assert_eq!(
            rows,
            vec![
                (60, 60, 1),
                (70, 70, 1),
                (100, 100, 1),
                (110, 110, 1),
                (120, 120, 1),
                (130, 130, 2),
                (140, 140, 2),
                (150, 150, 2),
                (160, 160, 1)
            ]
        );
    }
}
