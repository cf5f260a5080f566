//! The source operator every input shares: a [`Feed`] (Kafka partitions, an in-memory
//! dataset, a CSV file) delivers readings; the operator applies [`Watermarks`], splits the
//! stream into on-time readings, late readings and quarantined inputs, and holds its
//! capability at the event-time frontier.
//!
//! # Design
//! On-time readings are emitted at the *frontier* time, not at their own event time: every
//! reading emitted at time `t` has event time `>= t`, so a downstream window `[s, e)` is
//! complete once the input frontier reaches `e`. This keeps one output session per batch
//! instead of one per distinct event time.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::{Scope, Stream};

use super::metrics::Metrics;
use super::watermark::{Frontier, OffsetLog, Watermarks};
use crate::quarantine::Quarantined;
use crate::record::{EventTime, Reading};

/// What a feed hands over in one poll.
#[derive(Debug, Default)]
pub struct Batch {
    /// Readings, in delivery order. The source hands this vector to the dataflow whole (no
    /// per-reading copy) when none of it is late.
    pub data: Vec<Reading>,
    /// `(partition, offset)` of each reading of `data`, same order.
    pub at: Vec<(i32, i64)>,
    /// Inputs that could not be read.
    pub bad: Vec<Quarantined>,
    /// Offsets the feed found missing (records the broker no longer had when they were due).
    pub skipped_offsets: u64,
}

impl Batch {
    /// Adds a reading read at `offset` of `partition`.
    #[inline]
    pub fn push(&mut self, partition: i32, offset: i64, r: Reading) {
        self.data.push(r);
        self.at.push((partition, offset));
    }
}

/// What a feed says after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// More is available right away: schedule again now.
    More,
    /// Nothing right now: schedule again after this delay.
    Wait(Duration),
    /// The feed is exhausted (file end): every partition is finished.
    Done,
}

/// A source of readings for one worker.
pub trait Feed: 'static {
    /// Registers the feed's partitions with the clock and reads up to a bounded amount.
    fn poll(&mut self, clock: &mut Watermarks, batch: &mut Batch, now: Instant) -> Poll;
    /// The partitions it reads and how far behind their end it is (none by default).
    fn partitions(&self) -> Vec<crate::engine::metrics::PartitionStatus> {
        Vec::new()
    }
}

/// The three streams a source produces.
pub struct SourceStreams<'s> {
    /// On-time readings (emitted at the frontier; see the module docs).
    pub data: Stream<'s, EventTime, Vec<Reading>>,
    /// Readings behind the frontier.
    pub late: Stream<'s, EventTime, Vec<Reading>>,
    /// Inputs that could not be read.
    pub quarantine: Stream<'s, EventTime, Vec<Quarantined>>,
}

/// Watermarks of the workers in one process, so a worker whose partitions are all idle can
/// follow its peers (see [`Watermarks::advance`]).
pub type PeerWatermarks = Arc<Mutex<Vec<Option<EventTime>>>>;

/// Shared settings of a source operator.
#[derive(Clone)]
pub struct SourceSettings {
    /// Operator name (appears in logs).
    pub name: String,
    /// Allowed lateness.
    pub lateness: Duration,
    /// Idle timeout (None: partitions never go idle).
    pub idle_timeout: Option<Duration>,
    /// How long an end-of-partition must stay quiet to count (until-end).
    pub confirm: Duration,
    /// Process-wide counters.
    pub metrics: Arc<Metrics>,
    /// Set to stop reading; the source then finishes, closing every window.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// Where this worker's offsets at each frontier go.
    pub offsets: Arc<Mutex<OffsetLog>>,
    /// Peer watermarks of this process and this worker's slot in it.
    pub peers: Option<(PeerWatermarks, usize)>,
    /// The frontier of the dataflow's outputs: the source reads more only when the outputs
    /// have caught up with what it emitted [`PACE_POLLS`] polls ago (bounded memory; timely
    /// has no backpressure of its own).
    pub probe: Option<timely::dataflow::ProbeHandle<EventTime>>,
    /// This worker's index and its process's index (for the status it reports).
    pub worker: (usize, usize),
    /// The source's first frontier (`run --from TIME`): readings behind it are late from the
    /// start, so none of them lands in a window before it. `EventTime::MIN` otherwise.
    pub start: EventTime,
    /// Where this source's position goes when it ends (`run --savepoint`), and which it
    /// tells of a stop.
    pub savepoint: Option<Arc<crate::engine::savepoint::Savepoint>>,
}

/// How often a source reports its worker's status to the metrics.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// How many polls the dataflow's outputs may lag behind the source before it waits for them.
///
/// The bound on memory in flight is this many polls' readings per worker (CSV: 128 KB blocks,
/// about 3 MB of readings per worker; Kafka: at most `POLL_BUDGET` readings a poll). It was 2:
/// on 2 workers the outputs' frontier, which needs both workers' progress, lagged that much on
/// every other poll, and each wait idled the worker for a 1 ms timer (zscore on 2 workers:
/// 1,000 waits in 2,200 polls; at 8, 70-430 waits and 15-25% less wall time). At 16 the lag
/// grew to fill it and the waits did not fall further.
pub const PACE_POLLS: usize = 8;

/// How long the source waits for its outputs to catch up before it reads anyway.
const MAX_PACE_WAIT: Duration = Duration::from_millis(50);

/// Builds the source operator over `feed`.
pub fn source<'s, F: Feed>(
    scope: Scope<'s, EventTime>,
    settings: SourceSettings,
    mut feed: F,
) -> SourceStreams<'s> {
    let mut builder = OperatorBuilder::new(settings.name.clone(), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address.clone());
    let (data_out, data) = builder.new_output::<Vec<Reading>>();
    let (late_out, late) = builder.new_output::<Vec<Reading>>();
    let (bad_out, quarantine) = builder.new_output::<Vec<Quarantined>>();
    let mut data_out =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<Reading>>>::from(
            data_out,
        );
    let mut late_out =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<Reading>>>::from(
            late_out,
        );
    let mut bad_out = OutputBuilder::<
        _,
        timely::container::CapacityContainerBuilder<Vec<Quarantined>>,
    >::from(bad_out);

    // With checkpoints, this source writes its position at each barrier it reaches.
    let checkpoints = settings.savepoint.clone().filter(|sp| sp.checkpointing());
    if let Some(sp) = &checkpoints {
        sp.join(false);
    }
    builder.build(move |caps| {
        let caps = Rc::new(RefCell::new(Some(caps)));
        let mut clock = Watermarks::new(settings.lateness, settings.idle_timeout, settings.confirm)
            .starting_at(settings.start);
        let mut batch = Batch::default();
        // Indices of late readings in the batch at hand.
        let mut late: Vec<usize> = Vec::new();
        let mut last_frontier = EventTime::MIN;
        // Frontiers at the last PACE_POLLS polls (oldest first), and since when the source
        // has been waiting.
        let mut polled: [EventTime; PACE_POLLS] = [EventTime::MIN; PACE_POLLS];
        let mut waiting_since: Option<Instant> = None;
        let mut status_at = Instant::now();
        let mut delivered = 0u64;
        move |_frontiers| {
            let mut guard = caps.borrow_mut();
            let Some(held) = guard.as_mut() else { return };
            let now = Instant::now();
            if let Some(probe) = &settings.probe {
                if polled[0] > EventTime::MIN && probe.less_than(&polled[0]) {
                    let since = *waiting_since.get_or_insert(now);
                    if now.duration_since(since) < MAX_PACE_WAIT {
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                }
                waiting_since = None;
                polled.rotate_left(1);
                polled[PACE_POLLS - 1] = last_frontier;
            }
            let stopping = settings.stop.load(std::sync::atomic::Ordering::Relaxed);
            if let (true, Some(sp)) = (stopping, &settings.savepoint) {
                sp.note_stopped();
            }
            let poll = if stopping { Poll::Done } else { feed.poll(&mut clock, &mut batch, now) };

            if !batch.data.is_empty() || !batch.bad.is_empty() {
                let (n_in, n_late);
                {
                    let mut d = data_out.activate();
                    let mut l = late_out.activate();
                    let mut ds = d.session(&held[0]);
                    let mut ls = l.session(&held[1]);
                    debug_assert_eq!(batch.at.len(), batch.data.len(), "a feed pushed a reading without its offset");
                    late.clear();
                    let data = &batch.data;
                    clock.observe_all(&batch.at, |i| data[i].ts, now, |i| late.push(i));
                    batch.at.clear();
                    n_in = batch.data.len() as u64;
                    n_late = late.len() as u64;
                    if !late.is_empty() {
                        // Rare: pick the late readings out, keeping the order of the rest.
                        let mut next_late = late.iter().copied().peekable();
                        let mut on_time = Vec::with_capacity(batch.data.len() - late.len());
                        for (i, r) in batch.data.drain(..).enumerate() {
                            if next_late.next_if_eq(&i).is_some() {
                                ls.give(r);
                            } else {
                                on_time.push(r);
                            }
                        }
                        batch.data = on_time;
                    }
                    if !batch.data.is_empty() {
                        ds.give_container(&mut batch.data);
                        batch.data.clear();
                    }
                }
                let n_bad = batch.bad.len() as u64;
                if n_bad > 0 {
                    let mut b = bad_out.activate();
                    let mut bs = b.session(&held[2]);
                    for q in batch.bad.drain(..) {
                        bs.give(q);
                    }
                }
                Metrics::add(&settings.metrics.readings_in, n_in);
                delivered += n_in;
                Metrics::add(&settings.metrics.late, n_late);
                Metrics::add(&settings.metrics.quarantined, n_bad);
            }

            if batch.skipped_offsets > 0 {
                Metrics::add(&settings.metrics.skipped_offsets, std::mem::take(&mut batch.skipped_offsets));
            }
            if poll == Poll::Done {
                clock.finish_all();
            }
            let hint = settings.peers.as_ref().and_then(|(peers, slot)| {
                let mut v = peers.lock().expect("peer watermarks poisoned");
                v[*slot] = clock.holding_min(now);
                v.iter().enumerate().filter(|(i, _)| i != slot).filter_map(|(_, w)| *w).min()
            });
            let advanced = clock.advance(now, hint);
            if now >= status_at || advanced == Frontier::Done {
                status_at = now + STATUS_EVERY;
                settings.metrics.set_worker(crate::engine::metrics::WorkerStatus {
                    worker: settings.worker.0,
                    process: settings.worker.1,
                    partitions: feed.partitions(),
                    frontier: match advanced {
                        Frontier::At(f) if f > EventTime::MIN => Some(f),
                        _ => None,
                    },
                    readings_in: delivered,
                });
            }
            match advanced {
                Frontier::Done => {
                    if let (true, Some(_)) = (stopping, &settings.savepoint) {
                        // The stop mark, to every worker: keyed operators cut at the lowest.
                        data_out.activate().session(&held[0]).give(Reading::single(
                            crate::engine::route::stop_mark(),
                            clock.frontier(),
                            0.0,
                        ));
                    }
                    if let Some(sp) = &settings.savepoint {
                        sp.save_source(
                            crate::engine::savepoint::Cut::Stop,
                            settings.worker.0,
                            &crate::engine::savepoint::SourcePosition {
                                frontier: clock.frontier(),
                                partitions: clock.positions(),
                            },
                        );
                    }
                    settings.offsets.lock().expect("offset log poisoned").record(EventTime::MAX, clock.offsets());
                    if let Some((peers, slot)) = &settings.peers {
                        peers.lock().expect("peer watermarks poisoned")[*slot] = None;
                    }
                    tracing::debug!(source = %settings.name, offsets = ?clock.offsets(), "source finished");
                    *guard = None;
                    return;
                }
                Frontier::At(f) if f > last_frontier => {
                    // Everything read so far went out before `f`; what is read next, at `f`
                    // or later: the cut of a barrier in between.
                    if let Some(b) = checkpoints.as_ref().and_then(|sp| sp.barrier(last_frontier, f)) {
                        checkpoints.as_ref().expect("checkpointing").save_source(
                            crate::engine::savepoint::Cut::Barrier(b),
                            settings.worker.0,
                            &crate::engine::savepoint::SourcePosition {
                                frontier: f,
                                partitions: clock.positions(),
                            },
                        );
                    }
                    for c in held.iter_mut() {
                        c.downgrade(&f);
                    }
                    last_frontier = f;
                    tracing::trace!(source = %settings.name, frontier = f, "frontier advanced");
                    settings.offsets.lock().expect("offset log poisoned").record(f, clock.offsets());
                }
                Frontier::At(_) => {}
            }
            match poll {
                Poll::More | Poll::Done => activator.activate(),
                Poll::Wait(d) => activator.activate_after(d),
            }
        }
    });
    SourceStreams {
        data,
        late,
        quarantine,
    }
}

/// A feed over a shared, event-time-sorted dataset: this worker takes the series whose hash
/// falls to it (as Kafka keyed partitioning would), plus, on worker 0, the rows the loader
/// quarantined.
pub struct MemoryFeed {
    readings: Arc<Vec<Reading>>,
    pos: usize,
    index: usize,
    peers: usize,
    bad: Vec<Quarantined>,
    next_offset: i64,
}

impl MemoryFeed {
    /// The share of worker `index` of `peers`.
    pub fn new(
        readings: Arc<Vec<Reading>>,
        bad: Vec<Quarantined>,
        index: usize,
        peers: usize,
    ) -> Self {
        MemoryFeed {
            readings,
            pos: 0,
            index,
            peers,
            bad: if index == 0 { bad } else { Vec::new() },
            next_offset: 0,
        }
    }
}

/// Readings handed over per poll by file feeds.
const FILE_BATCH: usize = 32 * 1024;

impl Feed for MemoryFeed {
    fn poll(&mut self, clock: &mut Watermarks, batch: &mut Batch, now: Instant) -> Poll {
        if !clock.has(0) {
            clock.add(0, 0, None, now);
        }
        batch.bad.append(&mut self.bad);
        let end = (self.pos + FILE_BATCH * self.peers).min(self.readings.len());
        for r in &self.readings[self.pos..end] {
            if crate::engine::series_worker(&r.series, self.peers) == self.index {
                batch.push(0, self.next_offset, r.clone());
                self.next_offset += 1;
            }
        }
        self.pos = end;
        if self.pos >= self.readings.len() {
            Poll::Done
        } else {
            Poll::More
        }
    }
}

/// A feed over the blocks of a CSV file this worker claims.
pub struct CsvFeed {
    reader: crate::dataset::csvspec::BlockReader,
    next_offset: i64,
    failed: bool,
}

impl CsvFeed {
    /// A feed of the blocks this worker claims from its process's `share`.
    pub fn new(
        spec: &crate::dataset::csvspec::CsvSpec,
        share: crate::dataset::csvspec::BlockShare,
    ) -> Result<Self, crate::dataset::DatasetError> {
        Ok(CsvFeed {
            reader: crate::dataset::csvspec::BlockReader::new(spec, share)?,
            next_offset: 0,
            failed: false,
        })
    }
}

impl Feed for CsvFeed {
    fn poll(&mut self, clock: &mut Watermarks, batch: &mut Batch, now: Instant) -> Poll {
        if !clock.has(0) {
            clock.add(0, 0, None, now);
        }
        if self.failed {
            return Poll::Done;
        }
        let (data, at, offset) = (&mut batch.data, &mut batch.at, &mut self.next_offset);
        // The dataflow took the last batch's vector: size the new one for a block of short
        // rows once, instead of growing it by doubling.
        data.reserve(crate::dataset::csvspec::BLOCK_BYTES as usize / 24);
        let before = data.len();
        let read = self.reader.next_block(data, &mut batch.bad);
        let added = (data.len() - before) as i64;
        at.extend((*offset..*offset + added).map(|o| (0, o)));
        *offset += added;
        match read {
            Ok(more) => {
                if more {
                    Poll::More
                } else {
                    Poll::Done
                }
            }
            Err(e) => {
                // The file itself failed (not one row): report it and end this share.
                batch.bad.push(Quarantined::new(
                    "csv",
                    format!("reading stopped: {e}"),
                    b"",
                ));
                self.failed = true;
                Poll::Done
            }
        }
    }
}
