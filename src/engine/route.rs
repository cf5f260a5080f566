//! Routing readings to the worker that owns their series: the exchange every keyed operator
//! uses ([`by_series`]).
//!
//! A series goes to worker `series_hash(id) % workers` (the hash is of the id's text, so every
//! process of a cluster routes it the same way). Timely's own exchange would hash every
//! reading's id and push it through a container builder one at a time; [`SeriesRouter`]
//! remembers each series' worker by the symbol's dense index (one array read per reading
//! after the first sight of a series), moves readings into one plain vector per worker, and
//! sends each vector once per incoming container.

use timely::communication::Push;
use timely::dataflow::channels::pact::DistributorPact;
use timely::dataflow::channels::pushers::exchange::Distributor;
use timely::dataflow::channels::Message;
use timely::progress::Stamp;

use super::series_hash;
use crate::record::{Reading, Sym};

/// Marks a series whose worker is not known yet.
const UNKNOWN: u32 = u32::MAX;
/// The route of [`stop_mark`]: every worker.
const EVERY: u32 = u32::MAX - 1;

/// The series of a source's *stop mark*: a reading whose time is the source's frontier when
/// a stop ended it (with a savepoint), which the exchange sends to every worker. Keyed
/// operators take the lowest mark as the run's common cut: they process nothing at or after
/// it, so every worker of every process saves its state at the same event time
/// (`engine::keyed`). Operators that read readings by series drop marks.
pub fn stop_mark() -> Sym {
    static MARK: std::sync::OnceLock<Sym> = std::sync::OnceLock::new();
    *MARK.get_or_init(|| Sym::new("\u{0}stop"))
}

/// The lowest [`stop_mark`] in `data` (its time), if it holds one: the cut a stop makes at
/// an operator that received it.
pub fn lowest_stop_mark(data: &[Reading]) -> Option<crate::record::EventTime> {
    let mark = stop_mark();
    data.iter().filter(|r| r.series == mark).map(|r| r.ts).min()
}

/// The exchange of readings by series, for `unary*` operators' `pact` argument.
pub fn by_series() -> DistributorPact<fn(usize) -> SeriesRouter> {
    DistributorPact(SeriesRouter::new)
}

/// Splits containers of readings by the worker of their series (see the module doc).
pub struct SeriesRouter {
    workers: u64,
    /// Worker of each series, by [`Sym::index`]; [`UNKNOWN`] where not computed yet.
    route: Vec<u32>,
    /// One outgoing container per worker.
    out: Vec<Vec<Reading>>,
}

impl SeriesRouter {
    /// A router to `workers` workers.
    pub fn new(workers: usize) -> Self {
        SeriesRouter {
            workers: workers.max(1) as u64,
            route: Vec::new(),
            out: (0..workers.max(1)).map(|_| Vec::new()).collect(),
        }
    }

    /// The worker that owns `series`.
    #[inline]
    pub fn worker(&mut self, series: Sym) -> usize {
        let i = series.index() as usize;
        match self.route.get(i) {
            Some(&w) if w != UNKNOWN => w as usize,
            _ => self.learn(series),
        }
    }

    #[cold]
    fn learn(&mut self, series: Sym) -> usize {
        let i = series.index() as usize;
        if self.route.len() <= i {
            self.route.resize(i + 1, UNKNOWN);
        }
        let w = if series == stop_mark() {
            EVERY
        } else {
            (series_hash(&series) % self.workers) as u32
        };
        self.route[i] = w;
        w as usize
    }
}

impl Distributor<Vec<Reading>> for SeriesRouter {
    fn partition<T: Clone, P: Push<Message<T, Vec<Reading>>>>(
        &mut self,
        container: &mut Vec<Reading>,
        stamp: &Stamp<T>,
        pushers: &mut [P],
    ) {
        debug_assert_eq!(pushers.len() as u64, self.workers);
        if let [only] = pushers {
            Message::push_at(container, stamp.clone(), only);
            container.clear();
            return;
        }
        let share = container.len() / pushers.len() + container.len() / 8 + 16;
        for r in container.drain(..) {
            let w = self.worker(r.series);
            if w == EVERY as usize {
                for out in &mut self.out {
                    out.push(r.clone());
                }
                continue;
            }
            let out = &mut self.out[w];
            if out.capacity() == 0 {
                out.reserve(share);
            }
            out.push(r);
        }
        for (out, pusher) in self.out.iter_mut().zip(pushers.iter_mut()) {
            if !out.is_empty() {
                Message::push_at(out, stamp.clone(), pusher);
                // A pusher may hand a used container back: keep its allocation, not its data.
                out.clear();
            }
        }
    }

    fn flush<T: Clone, P: Push<Message<T, Vec<Reading>>>>(
        &mut self,
        _stamp: &Stamp<T>,
        _pushers: &mut [P],
    ) {
        // `partition` sends everything it is given: nothing is held between calls.
    }

    fn relax(&mut self) {
        for out in &mut self.out {
            *out = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_as_the_hash_says_whatever_the_order_of_first_sight() {
        for workers in [1usize, 2, 3, 4, 7] {
            let mut a = SeriesRouter::new(workers);
            let mut b = SeriesRouter::new(workers);
            let names: Vec<Sym> = (0..500).map(|i| Sym::new(&format!("route-{i}"))).collect();
            for s in &names {
                assert_eq!(a.worker(*s) as u64, series_hash(s) % workers as u64);
            }
            for s in names.iter().rev() {
                assert_eq!(b.worker(*s), a.worker(*s));
            }
        }
    }

    #[test]
    fn a_stop_mark_goes_to_every_worker_and_a_reading_to_its_own() {
        struct Collect(Vec<Vec<Reading>>);
        impl Push<Message<u64, Vec<Reading>>> for Collect {
            fn push(&mut self, m: &mut Option<Message<u64, Vec<Reading>>>) {
                if let Some(m) = m.take() {
                    self.0.push(m.data);
                }
            }
        }
        let mut router = SeriesRouter::new(3);
        let s = Sym::new("route-mark");
        let mut container = vec![
            Reading::single(s, 5, 1.0),
            Reading::single(stop_mark(), 7, 0.0),
        ];
        let mut pushers: Vec<Collect> = (0..3).map(|_| Collect(Vec::new())).collect();
        router.partition(&mut container, &Stamp::from_elem(0u64), &mut pushers);
        let home = router.worker(s);
        for (w, p) in pushers.iter().enumerate() {
            let got: Vec<(Sym, crate::record::EventTime)> =
                p.0.concat().iter().map(|r| (r.series, r.ts)).collect();
            let mut want = Vec::new();
            if w == home {
                want.push((s, 5));
            }
            want.push((stop_mark(), 7));
            assert_eq!(got, want, "worker {w}");
        }
    }
}
