//! Checkpoint barriers at operators that fold readings into their state as they arrive
//! (`series_stats`' windows and panes), rather than holding them until the frontier passes
//! them as [`super::keyed`] does.
//!
//! A checkpoint at barrier `B` is cut by timely times: a source's saved position is where
//! its frontier first reached `B`, so what it sent before that (at times `< B`) is in the
//! checkpoint and what it sent after (at times `>= B`) is read again by a resumed run. A
//! folding operator's state at `B` must therefore hold exactly the readings that arrived at
//! times `< B`, while readings arrive at later times before its frontier reaches `B`. An
//! [`ArrivalStash`] keeps those aside, untouched, until the barrier is cut, then hands them
//! over to be folded. Without checkpoints it holds nothing and costs one branch per
//! container.

use std::sync::Arc;

use timely::dataflow::operators::{Capability, InputCapability};

use super::savepoint::Savepoint;
use crate::record::{EventTime, Reading};

/// Containers that arrived at or after the next barrier, kept until it is cut; see the
/// module doc. One per operator instance (worker).
pub struct ArrivalStash {
    /// The savepoint, when the run writes checkpoints.
    sp: Option<Arc<Savepoint>>,
    /// The operator's input frontier when last seen (`EventTime::MIN` before the first).
    seen: EventTime,
    /// The first barrier after `seen`: containers arriving at or after it wait.
    next: EventTime,
    /// The containers kept, with the times they arrived at.
    held: Vec<(EventTime, Vec<Reading>)>,
    /// A capability at the earliest time kept, from which their results are emitted.
    cap: Option<Capability<EventTime>>,
}

impl ArrivalStash {
    /// A stash for an operator of a run with savepoint `sp`: it keeps containers only when
    /// the run writes checkpoints, and then registers the operator as a participant of
    /// every checkpoint (call it while the dataflow is built).
    pub fn new(sp: Option<Arc<Savepoint>>) -> Self {
        let sp = sp.filter(|s| s.checkpointing());
        if let Some(s) = &sp {
            s.join(false);
        }
        let next = sp
            .as_ref()
            .map_or(EventTime::MAX, |s| s.next_barrier(s.floor()));
        ArrivalStash {
            sp,
            seen: EventTime::MIN,
            next,
            held: Vec::new(),
            cap: None,
        }
    }

    /// Keeps `data`, which arrived under `cap`, when it arrived at or after the next barrier
    /// (leaving `data` empty); returns whether it did. Otherwise the caller folds it now.
    pub fn hold(&mut self, cap: &InputCapability<EventTime>, data: &mut Vec<Reading>) -> bool {
        if self.sp.is_none() || data.is_empty() {
            return false;
        }
        let Some(&t) = cap.least() else { return false };
        if t < self.next {
            return false;
        }
        if self.cap.as_ref().is_none_or(|c| t < *c.time()) {
            self.cap = Some(cap.delayed(&t, 0));
        }
        self.held.push((t, std::mem::take(data)));
        true
    }

    /// The operator's input frontier is now `now` (`None`: the input ended). Returns the
    /// barrier it crossed since it was last seen, if any (the latest, when it crossed
    /// several): the caller folds [`ArrivalStash::release`]`(Some(b))`, emits what comes
    /// before `b`, and saves its state at `b`; then it folds `release(self.until(now))`.
    pub fn advance(&mut self, now: Option<EventTime>) -> Option<EventTime> {
        let sp = self.sp.as_ref()?;
        let crossed = now.and_then(|f| sp.barrier(self.seen, f));
        if let Some(f) = now {
            self.seen = self.seen.max(f);
            self.next = sp.next_barrier(self.seen.max(sp.floor()));
        }
        crossed
    }

    /// The time before which kept containers may be folded now: the next barrier, or
    /// everything (`None`) once the input ended.
    pub fn until(&self, now: Option<EventTime>) -> Option<EventTime> {
        now.map(|_| self.next)
    }

    /// Takes the kept containers that arrived before `before` (all of them with `None`),
    /// with a capability at or before each one's arrival (so at or before its readings'
    /// times) to emit their results from. `None` when there are none.
    pub fn release(
        &mut self,
        before: Option<EventTime>,
    ) -> Option<(Capability<EventTime>, Vec<Vec<Reading>>)> {
        let limit = before.unwrap_or(EventTime::MAX);
        let cap = self.cap.clone()?;
        if *cap.time() >= limit && before.is_some() {
            return None;
        }
        let (out, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(t, _)| before.is_none_or(|b| *t < b));
        self.held = keep;
        match self.held.iter().map(|(t, _)| *t).min() {
            Some(t) => {
                if let Some(c) = self.cap.as_mut() {
                    c.downgrade(&t);
                }
            }
            None => self.cap = None,
        }
        Some((cap, out.into_iter().map(|(_, d)| d).collect()))
    }
}
