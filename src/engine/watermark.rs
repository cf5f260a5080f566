//! Event-time progress of a source: per-partition watermarks, idleness, end-of-input, and
//! the offsets reached at every frontier (the basis for checkpoints).
//!
//! # Design
//! A partition's watermark is the highest event time it has delivered minus the allowed
//! lateness. The source's frontier is the minimum over the partitions that *hold* it: not
//! finished, and (outside `--until-end`) not idle for longer than the idle timeout. A
//! partition that has delivered nothing yet holds the frontier where it is. The frontier
//! never goes back.
//!
//! A reading is *late* when its event time is below its partition's watermark or below the
//! frontier. In a steady stream the frontier never exceeds any holding partition's watermark,
//! so lateness depends only on the order of readings within their partition: the same
//! readings are late whatever the number of workers. (An idle partition that wakes up behind
//! the frontier is the exception: its old readings are late because the frontier moved on.)
//!
//! With `--until-end`, a partition is finished once its next offset reached the end offset it
//! had at start *by reading*, and a confirmation period (`--end-confirm`) has passed since,
//! during which reading goes on. Neither high watermarks nor end-of-partition events are
//! trusted: tansu 0.6 reports high watermarks that lag the last batch (records past the
//! reported end that arrive within the confirmation period are read and counted), and
//! librdkafka can report end-of-partition before that partition's queued messages are
//! delivered, so the consumer does not ask for those events at all. The period is bounded, so a producer that keeps writing cannot keep the run
//! alive.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::record::EventTime;

/// Progress of one partition.
#[derive(Debug, Clone)]
pub struct PartitionClock {
    /// Highest event time delivered.
    pub max_ts: Option<EventTime>,
    /// Next offset to read.
    pub next_offset: i64,
    /// End offset to reach (until-end mode).
    pub end: Option<i64>,
    last_seen: Instant,
    end_reached_at: Option<Instant>,
    /// Reached its end and confirmed.
    pub finished: bool,
}

/// Where the source's frontier is after an [`Watermarks::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontier {
    /// Every future reading of this source has event time >= this.
    At(EventTime),
    /// The source is finished: no more readings.
    Done,
}

/// Per-partition watermarks and the frontier they imply.
#[derive(Debug, Clone)]
pub struct Watermarks {
    lateness: i64,
    idle_timeout: Option<Duration>,
    confirm: Duration,
    parts: BTreeMap<i32, PartitionClock>,
    frontier: EventTime,
    ended: bool,
}

impl Watermarks {
    /// `idle_timeout: None` disables idleness (until-end runs).
    pub fn new(lateness: Duration, idle_timeout: Option<Duration>, confirm: Duration) -> Self {
        Watermarks {
            lateness: lateness.as_millis() as i64,
            idle_timeout,
            confirm,
            parts: BTreeMap::new(),
            frontier: EventTime::MIN,
            ended: false,
        }
    }

    /// The same clock with its frontier at `t` from the start: every reading before `t` is
    /// late (`run --from TIME`).
    pub fn starting_at(mut self, t: EventTime) -> Self {
        self.frontier = self.frontier.max(t);
        self
    }

    /// Starts tracking a partition whose next offset is `start` and, in until-end mode,
    /// whose end offset is `end`. An empty partition starts its confirmation at once.
    pub fn add(&mut self, partition: i32, start: i64, end: Option<i64>, now: Instant) {
        let empty = matches!(end, Some(e) if e <= start);
        self.parts.insert(
            partition,
            PartitionClock {
                max_ts: None,
                next_offset: start,
                end,
                last_seen: now,
                end_reached_at: if empty { Some(now) } else { None },
                finished: false,
            },
        );
    }

    /// Sets a tracked partition's highest event time read, as a savepoint saved it: its
    /// watermark is then where the stopped run left it.
    pub fn resume_partition(&mut self, partition: i32, max_ts: Option<EventTime>) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.max_ts = max_ts;
        }
    }

    /// Every partition's position, for a savepoint.
    pub fn positions(&self) -> Vec<crate::engine::savepoint::PartitionPosition> {
        self.parts
            .iter()
            .map(|(p, c)| crate::engine::savepoint::PartitionPosition {
                partition: *p,
                next_offset: c.next_offset,
                max_ts: c.max_ts,
            })
            .collect()
    }

    /// Is this partition tracked?
    pub fn has(&self, partition: i32) -> bool {
        self.parts.contains_key(&partition)
    }

    /// Records a reading; returns true when it is late (see the module docs).
    #[inline]
    pub fn observe(&mut self, partition: i32, offset: i64, ts: EventTime, now: Instant) -> bool {
        let mut late = false;
        self.observe_all(&[(partition, offset)], |_| ts, now, |_| late = true);
        late
    }

    /// Records the readings at `at[i]` (partition, offset) with event time `ts(i)`, in order,
    /// calling `late(i)` for each late one: the same as [`observe`](Self::observe) on each,
    /// with one partition lookup per run of readings from the same partition.
    #[inline]
    pub fn observe_all(
        &mut self,
        at: &[(i32, i64)],
        ts: impl Fn(usize) -> EventTime,
        now: Instant,
        mut late: impl FnMut(usize),
    ) {
        let (lateness, frontier) = (self.lateness, self.frontier);
        let mut i = 0;
        while i < at.len() {
            let partition = at[i].0;
            let p = self
                .parts
                .entry(partition)
                .or_insert_with(|| PartitionClock {
                    max_ts: None,
                    next_offset: 0,
                    end: None,
                    last_seen: now,
                    end_reached_at: None,
                    finished: false,
                });
            let mut max_ts = p.max_ts;
            while let Some(&(q, offset)) = at.get(i) {
                if q != partition {
                    break;
                }
                let t = ts(i);
                if t < frontier || max_ts.is_some_and(|m| t < m.saturating_sub(lateness)) {
                    late(i);
                }
                if max_ts.is_none_or(|m| t > m) {
                    max_ts = Some(t);
                }
                p.next_offset = offset + 1;
                i += 1;
            }
            p.max_ts = max_ts;
            p.last_seen = now;
            if p.end_reached_at.is_none() && p.end.is_some_and(|e| p.next_offset >= e) {
                p.end_reached_at = Some(now);
            }
        }
    }

    /// Ends the source: every partition is finished, including ones never seen (a file feed
    /// that is exhausted, or a stop request).
    pub fn finish_all(&mut self) {
        for p in self.parts.values_mut() {
            p.finished = true;
        }
        self.ended = true;
    }

    /// Current frontier.
    pub fn frontier(&self) -> EventTime {
        self.frontier
    }

    /// The minimum watermark of the partitions that hold the frontier, if any hold it.
    pub fn holding_min(&self, now: Instant) -> Option<EventTime> {
        let mut min: Option<EventTime> = None;
        for p in self.parts.values() {
            if p.finished || self.is_idle(p, now) {
                continue;
            }
            let w = p
                .max_ts
                .map_or(self.frontier, |m| m.saturating_sub(self.lateness));
            min = Some(min.map_or(w, |x: EventTime| x.min(w)));
        }
        min
    }

    fn is_idle(&self, p: &PartitionClock, now: Instant) -> bool {
        self.idle_timeout
            .is_some_and(|t| now.duration_since(p.last_seen) >= t)
    }

    /// Updates finished partitions and moves the frontier. `peer_hint` is the lowest holding
    /// watermark of the other workers in this process: a worker whose partitions are all idle
    /// follows it instead of holding everyone back.
    pub fn advance(&mut self, now: Instant, peer_hint: Option<EventTime>) -> Frontier {
        for p in self.parts.values_mut() {
            if !p.finished
                && p.end.is_some_and(|e| p.next_offset >= e)
                && p.end_reached_at
                    .is_some_and(|t| now.duration_since(t) >= self.confirm)
            {
                p.finished = true;
            }
        }
        if self.ended || self.all_finished() {
            return Frontier::Done;
        }
        let candidate = match self.holding_min(now) {
            Some(w) => Some(w),
            None => peer_hint,
        };
        if let Some(c) = candidate {
            self.frontier = self.frontier.max(c);
        }
        Frontier::At(self.frontier)
    }

    /// Next offset of every partition, in partition order.
    pub fn offsets(&self) -> Vec<(i32, i64)> {
        self.parts
            .iter()
            .map(|(p, c)| (*p, c.next_offset))
            .collect()
    }

    /// True when every tracked partition is finished (false when none is tracked).
    pub fn all_finished(&self) -> bool {
        !self.parts.is_empty() && self.parts.values().all(|p| p.finished)
    }
}

/// The next offset of every owned partition at each frontier the source passed (bounded
/// to the most recent `capacity` frontiers): restart from the snapshot at the frontier a
/// checkpoint covers.
#[derive(Debug, Clone, Default)]
pub struct OffsetLog {
    /// `(frontier, [(partition, next_offset)])`, oldest first.
    pub snapshots: VecDeque<(EventTime, Vec<(i32, i64)>)>,
    capacity: usize,
}

impl OffsetLog {
    /// A log that keeps the last `capacity` snapshots.
    pub fn new(capacity: usize) -> Self {
        OffsetLog {
            snapshots: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records the offsets at a frontier.
    pub fn record(&mut self, frontier: EventTime, offsets: Vec<(i32, i64)>) {
        if self.snapshots.len() == self.capacity {
            self.snapshots.pop_front();
        }
        self.snapshots.push_back((frontier, offsets));
    }

    /// The latest snapshot.
    pub fn latest(&self) -> Option<&(EventTime, Vec<(i32, i64)>)> {
        self.snapshots.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_all_is_observe_on_each() {
        // Runs of readings from three partitions, some out of order by more than the
        // lateness, with the frontier moved between batches: the late readings and the
        // frontiers must be those of one observe() per reading.
        let t0 = Instant::now();
        let make = || {
            let mut w = Watermarks::new(Duration::from_millis(50), None, Duration::ZERO);
            for p in 0..3 {
                w.add(p, 0, None, t0);
            }
            w
        };
        let (mut one, mut all) = (make(), make());
        let mut rng = crate::dataset::generate::SplitMix64(0x1234_5678_9abc_def1);
        let mut offsets = [0i64; 3];
        let mut late_seen = 0;
        for batch in 0..50 {
            let mut at = Vec::new();
            let mut ts = Vec::new();
            for _ in 0..40 {
                let p = if rng.below(4) == 0 {
                    rng.below(3)
                } else {
                    at.last().map_or(0, |&(p, _)| p as u64)
                } as i32;
                offsets[p as usize] += 1;
                at.push((p, offsets[p as usize]));
                ts.push(batch * 100 + rng.below(200) as i64 - 50);
            }
            let want: Vec<usize> = (0..at.len())
                .filter(|&i| one.observe(at[i].0, at[i].1, ts[i], t0))
                .collect();
            let mut got = Vec::new();
            all.observe_all(&at, |i| ts[i], t0, |i| got.push(i));
            assert_eq!(got, want, "batch {batch}");
            assert_eq!(
                one.advance(t0, None),
                all.advance(t0, None),
                "batch {batch}"
            );
            late_seen += got.len();
        }
        assert!(
            late_seen > 0,
            "the stream must have late readings to compare"
        );
    }

    #[test]
    fn frontier_is_min_of_partitions_minus_lateness() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(
            Duration::from_secs(5),
            Some(Duration::from_secs(60)),
            Duration::ZERO,
        );
        w.add(0, 0, None, t0);
        w.add(1, 0, None, t0);
        assert!(!w.observe(0, 0, 100_000, t0));
        assert_eq!(
            w.advance(t0, None),
            Frontier::At(EventTime::MIN),
            "partition 1 has said nothing yet"
        );
        assert!(!w.observe(1, 0, 50_000, t0));
        assert_eq!(w.advance(t0, None), Frontier::At(45_000));
        // Within lateness of its own partition: on time. Beyond: late.
        assert!(!w.observe(0, 1, 96_000, t0));
        assert!(w.observe(0, 2, 94_999, t0));
        // Behind the frontier is late even if the partition's own watermark allows it.
        assert!(w.observe(1, 1, 44_000, t0));
    }

    #[test]
    fn idle_partitions_stop_holding_and_peers_lead() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(Duration::ZERO, Some(Duration::from_secs(1)), Duration::ZERO);
        w.add(0, 0, None, t0);
        w.add(1, 0, None, t0);
        w.observe(0, 0, 10, t0);
        w.observe(1, 0, 20, t0);
        let later = t0 + Duration::from_millis(1500);
        w.observe(1, 1, 30, later);
        assert_eq!(w.advance(later, None), Frontier::At(30), "partition 0 idle");
        let much_later = later + Duration::from_secs(2);
        assert_eq!(
            w.advance(much_later, Some(55)),
            Frontier::At(55),
            "all idle: follow peers"
        );
        assert_eq!(
            w.advance(much_later, Some(40)),
            Frontier::At(55),
            "never goes back"
        );
    }

    #[test]
    fn until_end_confirms_the_end_by_reading() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let confirm = Duration::from_millis(100);
        let mut w = Watermarks::new(Duration::ZERO, None, confirm);
        w.add(0, 0, Some(2), t0);
        // Partition 1 is empty: its confirmation starts at once.
        w.add(1, 5, Some(5), t0);
        // Time alone does not finish a partition whose end was not reached by reading.
        w.observe(0, 0, 1, t0);
        assert_eq!(w.advance(ms(500), None), Frontier::At(1));
        // Reaching the end offset by reading starts the confirmation ...
        w.observe(0, 1, 2, ms(500));
        assert_eq!(w.advance(ms(550), None), Frontier::At(2));
        // ... during which records past a lagging high watermark are still read ...
        w.observe(0, 2, 3, ms(560));
        assert_eq!(w.advance(ms(570), None), Frontier::At(3));
        // ... and a producer that keeps writing cannot keep the partition open past it.
        w.observe(0, 3, 4, ms(599));
        assert_eq!(w.advance(ms(601), None), Frontier::Done);
        assert_eq!(w.offsets(), vec![(0, 4), (1, 5)]);
    }

    #[test]
    fn a_stop_ends_a_source_that_never_had_partitions() {
        let mut w = Watermarks::new(Duration::ZERO, Some(Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(
            w.advance(Instant::now(), None),
            Frontier::At(EventTime::MIN)
        );
        w.finish_all();
        assert_eq!(w.advance(Instant::now(), None), Frontier::Done);
    }
}
