//! Counters and gauges shared by the workers of one process: what the demo's live summary,
//! run reports, the dashboard and `/metrics` read. In a cluster, each process's
//! [`Snapshot`] and worker statuses travel to the process that serves the dashboard.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::record::EventTime;

/// One partition a worker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Kafka partition.
    pub partition: i32,
    /// Next offset the worker will read.
    pub next_offset: i64,
    /// Last known end of the partition (high watermark; None before the first fetch).
    pub high: Option<i64>,
    /// Records behind the end: `high - next_offset` (None while unknown).
    pub lag: Option<i64>,
}

/// What one worker does, as the cluster view shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Worker index in the cluster.
    pub worker: usize,
    /// Process index.
    pub process: usize,
    /// Partitions it owns (empty for non-Kafka inputs).
    pub partitions: Vec<PartitionStatus>,
    /// Its source's event-time frontier, UTC ms (None before the first, or once finished).
    pub frontier: Option<EventTime>,
    /// Readings its source delivered.
    pub readings_in: u64,
}

/// Process-wide counters (relaxed atomics: read for display, exact once workers joined).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Readings delivered by sources (on time or late).
    pub readings_in: AtomicU64,
    /// Readings behind the frontier, sent to the late output.
    pub late: AtomicU64,
    /// Inputs that could not be read.
    pub quarantined: AtomicU64,
    /// Result rows written by dataflow outputs.
    pub rows_out: AtomicU64,
    /// Windows (series x window) currently open.
    pub open_windows: AtomicI64,
    /// Per-(series, value) states held by the keyed dataflows (`--state-ttl` bounds it by the
    /// series live at a time).
    pub series_states: AtomicI64,
    /// Per-(series, value) states dropped by `--state-ttl`: series that went silent (the end
    /// of a finite input expires every state still held).
    pub expired: AtomicU64,
    /// Rows produced into Kafka by replays and generators.
    pub produced: AtomicU64,
    /// Offsets skipped inside a partition: records the broker no longer had when they were
    /// due (retention), or compaction and transaction markers.
    pub skipped_offsets: AtomicU64,
    /// Result rows Kafka did not take (kept in the undelivered file, see
    /// [`crate::kafka::results`]).
    pub results_undelivered: AtomicU64,
    /// Checkpoints this process completed (`run --checkpoint-every`).
    pub checkpoints: AtomicU64,
    /// Checkpoints given up because a part could not be written.
    pub checkpoints_failed: AtomicU64,
    /// The barrier (event time, UTC ms) of the newest checkpoint this process completed
    /// (read only once `checkpoints` is above 0).
    pub checkpoint_barrier: AtomicI64,
    /// Bytes of the newest checkpoint this process completed.
    pub checkpoint_bytes: AtomicU64,
    /// Per-worker status, refreshed by each source a few times a second.
    pub worker_status: Mutex<BTreeMap<usize, WorkerStatus>>,
    /// The start (UTC ms) of the earliest time window a stop closed early, before the
    /// frontier passed its end: from there on the windows written are cut short (see
    /// [`Metrics::note_cut_short`]).
    pub cut_short_from: Mutex<Option<EventTime>>,
}

impl Metrics {
    /// Notes that a stop closed early a window starting at `start` (keeps the earliest).
    pub fn note_cut_short(&self, start: EventTime) {
        let mut c = self
            .cut_short_from
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *c = Some(c.map_or(start, |t| t.min(start)));
    }
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// See [`Metrics::readings_in`].
    pub readings_in: u64,
    /// See [`Metrics::late`].
    pub late: u64,
    /// See [`Metrics::quarantined`].
    pub quarantined: u64,
    /// See [`Metrics::rows_out`].
    pub rows_out: u64,
    /// See [`Metrics::open_windows`].
    pub open_windows: i64,
    /// See [`Metrics::series_states`].
    pub series_states: i64,
    /// See [`Metrics::expired`].
    pub expired: u64,
    /// See [`Metrics::produced`].
    pub produced: u64,
    /// See [`Metrics::skipped_offsets`].
    pub skipped_offsets: u64,
    /// See [`Metrics::results_undelivered`].
    #[serde(default)]
    pub results_undelivered: u64,
    /// See [`Metrics::checkpoints`]; a cluster's: the fewest of any process (a checkpoint
    /// counts once every process completed it).
    #[serde(default)]
    pub checkpoints: u64,
    /// See [`Metrics::checkpoints_failed`]; a cluster's: the sum.
    #[serde(default)]
    pub checkpoints_failed: u64,
    /// See [`Metrics::checkpoint_barrier`] (`None` before the first); a cluster's: the
    /// earliest of any process.
    #[serde(default)]
    pub checkpoint_barrier: Option<EventTime>,
    /// See [`Metrics::checkpoint_bytes`]; a cluster's: the sum.
    #[serde(default)]
    pub checkpoint_bytes: u64,
}

impl Snapshot {
    /// Adds another process's counters to these (a cluster's totals).
    pub fn add(&mut self, o: &Snapshot) {
        self.readings_in += o.readings_in;
        self.late += o.late;
        self.quarantined += o.quarantined;
        self.rows_out += o.rows_out;
        self.open_windows += o.open_windows;
        self.series_states += o.series_states;
        self.expired += o.expired;
        self.produced += o.produced;
        self.skipped_offsets += o.skipped_offsets;
        self.results_undelivered += o.results_undelivered;
        self.checkpoints = self.checkpoints.min(o.checkpoints);
        self.checkpoints_failed += o.checkpoints_failed;
        self.checkpoint_barrier = self.checkpoint_barrier.min(o.checkpoint_barrier);
        self.checkpoint_bytes += o.checkpoint_bytes;
    }
}

impl Metrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        let r = Ordering::Relaxed;
        Snapshot {
            readings_in: self.readings_in.load(r),
            late: self.late.load(r),
            quarantined: self.quarantined.load(r),
            rows_out: self.rows_out.load(r),
            open_windows: self.open_windows.load(r),
            series_states: self.series_states.load(r),
            expired: self.expired.load(r),
            produced: self.produced.load(r),
            skipped_offsets: self.skipped_offsets.load(r),
            results_undelivered: self.results_undelivered.load(r),
            checkpoints: self.checkpoints.load(r),
            checkpoints_failed: self.checkpoints_failed.load(r),
            checkpoint_barrier: (self.checkpoints.load(r) > 0)
                .then(|| self.checkpoint_barrier.load(r)),
            checkpoint_bytes: self.checkpoint_bytes.load(r),
        }
    }

    /// Replaces a worker's status.
    pub fn set_worker(&self, w: WorkerStatus) {
        self.worker_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(w.worker, w);
    }

    /// Status of every worker that reported, by index.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.worker_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Adds to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}
