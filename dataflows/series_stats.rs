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
//! `late` output.

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
use crate::engine::output::{push_csv_field, Row};
use crate::engine::savepoint::{SavedState, Savepoint};
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
        let metrics = params.metrics.clone();
        let stop = params.stop.clone();
        let savepoint = params.savepoint.clone().map(|sp| (sp, params.worker));
        let stats = input.unary_frontier::<CapacityContainerBuilder<Vec<WindowRow>>, _, _, _>(
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
                let mut saved = false;
                // Series in the last closed window: the size new windows start at.
                let mut typical = 16usize;
                // Maps of closed windows, drained and kept for new windows.
                let mut spare: Vec<SymMap<Fields>> = Vec::new();
                move |(input, frontier), output| {
                    let mut opened = 0i64;
                    input.for_each(|cap, data| {
                        for r in data.drain(..) {
                            let end = match &local {
                                None => tumbling.end(r.ts),
                                Some(l) => l.end(r.ts),
                            };
                            let (_, per_series) = windows.entry(end).or_insert_with(|| {
                                let map = spare
                                    .pop()
                                    .unwrap_or_else(|| SymMap::with_capacity(typical));
                                (cap.delayed(&end, 0), map)
                            });
                            let fields = per_series.get_or_insert_with(r.series, Fields::new);
                            opened += add_values(fields, &r);
                        }
                    });
                    let mut closed = 0i64;
                    // A stop ends the stream before the windows still open are complete:
                    // with a savepoint they go to it, otherwise they are written cut short.
                    // (Once: the operator may run again after its input ended.)
                    let saving = savepoint.as_ref().filter(|(sp, _)| sp.stopped() && !saved);
                    if let (true, Some((sp, worker))) = (frontier.is_empty(), saving) {
                        closed += save_windows(&mut windows, sp, *worker);
                        saved = true;
                    } else if frontier.is_empty() && stop.load(Ordering::Relaxed) {
                        if let Some((&end, _)) = windows.first_key_value() {
                            metrics.note_cut_short(match &local {
                                None => end - tumbling.width_ms,
                                Some(l) => l.start(end - 1),
                            });
                        }
                    }
                    while let Some((&end, _)) = windows.first_key_value() {
                        if frontier.less_than(&end) {
                            break;
                        }
                        let (cap, mut per_series) =
                            windows.pop_first().map(|(_, v)| v).expect("non-empty");
                        typical = per_series.len().max(16);
                        let start = match &local {
                            None => end - tumbling.width_ms,
                            Some(l) => l.start(end - 1),
                        };
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

/// Writes every open window's summaries to the savepoint (keyed by the window's end) and
/// drops the windows; returns how many summaries.
fn save_windows(windows: &mut OpenWindows, sp: &Savepoint, worker: usize) -> i64 {
    let mut saved = Vec::new();
    for (end, (_, per_series)) in std::mem::take(windows) {
        for (series, fields) in per_series.iter() {
            for (field, st) in fields {
                saved.push((series.to_string(), field.to_string(), end, *st));
            }
        }
    }
    let n = saved.len() as i64;
    sp.save_keyed(
        crate::engine::savepoint::Cut::Stop,
        "series_stats",
        worker,
        saved,
        Vec::new(),
    );
    n
}

/// Per series, its values' queues of complete panes (hopping windows).
type Queues = smallvec::SmallVec<[(Sym, PaneQueue); 1]>;
/// Panes still taking readings, by local end, per series.
type OpenPanes = BTreeMap<EventTime, SymMap<Fields>>;

/// A hopping-window state as a savepoint keeps it.
#[derive(Serialize, Deserialize)]
enum Pane {
    /// A pane still taking readings (its local end is the entry's time).
    Open(WindowStats),
    /// The complete panes of the windows to come (the entry's time is the operator's
    /// frontier at the stop), structure and all, so the merges come out bit for bit.
    Queued(PaneQueue),
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

/// Writes the open panes and the queues to the savepoint and empties them; returns how many
/// summaries.
fn save_panes(
    open: &mut OpenPanes,
    queues: &mut SymMap<Queues>,
    frontier: Option<EventTime>,
    sp: &Savepoint,
    worker: usize,
) -> i64 {
    let mut saved = Vec::new();
    let mut n = 0i64;
    for (end, per_series) in std::mem::take(open) {
        for (series, fields) in per_series.iter() {
            for (field, st) in fields {
                n += 1;
                let (s, f) = (series.to_string(), field.to_string());
                saved.push((s, f, end, Pane::Open(*st)));
            }
        }
    }
    let at = frontier.unwrap_or(EventTime::MIN);
    for (series, qs) in queues.drain() {
        for (field, q) in qs {
            n += q.len() as i64;
            saved.push((series.to_string(), field.to_string(), at, Pane::Queued(q)));
        }
    }
    sp.save_keyed(
        crate::engine::savepoint::Cut::Stop,
        "series_stats_hopping",
        worker,
        saved,
        Vec::new(),
    );
    n
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
            let mut next: Option<(Capability<EventTime>, EventTime)> = None;
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
            let mut saved = false;
            // The operator's frontier before the input ended (a savepoint keeps it).
            let mut last_frontier: Option<EventTime> = None;
            move |(input, frontier), output| {
                let mut opened = 0i64;
                input.for_each(|cap, data| {
                    for r in data.drain(..) {
                        let end = pane_end(r.ts);
                        // The first window holding this pane ends with it.
                        if next.as_ref().is_none_or(|(_, e)| end < *e) {
                            next = Some((cap.delayed(&utc(end), 0), end));
                        }
                        let fields = open
                            .entry(end)
                            .or_default()
                            .get_or_insert_with(r.series, Fields::new);
                        opened += add_values(fields, &r);
                    }
                });
                let mut closed = 0i64;
                if let Some(&f) = frontier.frontier().first() {
                    last_frontier = Some(f);
                }
                // A stop ends the stream before the next window is complete: with a savepoint
                // the panes go to it (once), otherwise the next windows are written cut short.
                let saving = savepoint.as_ref().filter(|(sp, _)| sp.stopped() && !saved);
                if let (true, Some((sp, worker))) = (frontier.is_empty(), saving) {
                    let n = save_panes(&mut open, &mut queues, last_frontier, sp, *worker);
                    metrics.open_windows.fetch_sub(n, Ordering::Relaxed);
                    next = None;
                    saved = true;
                } else if frontier.is_empty() && stop.load(Ordering::Relaxed) {
                    if let Some((_, end)) = &next {
                        metrics.note_cut_short(utc(end - width_ms));
                    }
                }
                while let Some((cap, end)) = next.as_mut() {
                    if frontier.less_equal(cap.time()) {
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
                    // The next window with data: the next slide while panes are queued, else
                    // the first open pane's.
                    let e = match open.first_key_value() {
                        _ if !queues.is_empty() => end + slide_ms,
                        Some((&first, _)) => (end + slide_ms).max(first),
                        None => {
                            next = None;
                            break;
                        }
                    };
                    cap.downgrade(&utc(e));
                    if let Some((_, at)) = next.as_mut() {
                        *at = e;
                    }
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
