//! The Kafka feed of the source operator: worker `w` of `W` (all processes together) owns
//! the partitions `p` with `p % W == w`, assigned with `assign` (no group rebalancing), read
//! from where [`StartAt`] says (the beginning by default). New partitions are picked up on
//! metadata refresh.
//!
//! In `--until-end` mode the end offset of each partition is its high watermark at start,
//! confirmed by reading (see [`crate::engine::watermark`]); partitions created later are
//! ignored.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{admin, client_err, ClientSettings, KafkaError};
use crate::engine::savepoint::PartitionPosition;
use crate::engine::source::{Batch, Feed, Poll};
use crate::engine::watermark::Watermarks;
use crate::quarantine::Quarantined;
use crate::record::{EventTime, Interner, WireFormat};

/// Where a run starts reading each partition (`run --from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Its first record (the default).
    #[default]
    Beginning,
    /// Its end when the run starts: only what is produced from then on. A partition created
    /// after the start is read from its beginning (all of it is new).
    End,
    /// The last message whose readings are all before this event time (UTC ms), found by a
    /// binary search over the partition's own readings (about `log2(records)` single-message
    /// fetches: the search reads our event times, not Kafka's record timestamps, which the
    /// embedded broker cannot look up). It assumes event time grows along a partition, as
    /// collectors and replays write it. The source's frontier starts at the time, so every
    /// reading before it that is read (that message's, a batched message's that straddles
    /// it, or one out of order) is late, never in a window.
    Time(EventTime),
}

/// What a Kafka-fed run reads.
#[derive(Debug, Clone)]
pub struct KafkaInput {
    /// Client settings.
    pub settings: ClientSettings,
    /// Topic of readings.
    pub topic: String,
    /// Stop at the end offsets the partitions had at start.
    pub until_end: bool,
    /// How often to look for new partitions.
    pub metadata_refresh: Duration,
    /// Where each partition's reading starts.
    pub start: StartAt,
}

/// How long a start-offset search waits for one message.
const PROBE_WAIT: Duration = Duration::from_secs(10);

/// Most messages taken per poll before yielding to other operators.
const POLL_BUDGET: usize = 20_000;

/// One worker's consumer and ownership.
pub struct KafkaFeed {
    consumer: BaseConsumer,
    input: KafkaInput,
    index: usize,
    peers: usize,
    owned: Vec<i32>,
    next_refresh: Instant,
    first_refresh_done: bool,
    interner: Interner,
    format: WireFormat,
    /// Next offset expected per partition (indexed by partition; -1: nothing read yet), to
    /// detect records that were never delivered. A vector, not a map: it is updated for every
    /// message, and partition numbers are small.
    expected: Vec<i64>,
    /// The consumer a start-offset search reads single messages with (between searches: none).
    probe: Option<BaseConsumer>,
    /// Positions from a savepoint: a partition found there starts at its saved offset with
    /// its saved watermark, whatever [`StartAt`] says.
    resume: Option<std::sync::Arc<std::collections::BTreeMap<i32, PartitionPosition>>>,
}

impl KafkaFeed {
    /// The feed of worker `index` of `peers`.
    pub fn new(input: KafkaInput, index: usize, peers: usize) -> Result<Self, KafkaError> {
        let consumer: BaseConsumer = input
            .settings
            .consumer_config()
            .create()
            .map_err(client_err("consumer"))?;
        Ok(KafkaFeed {
            consumer,
            input,
            index,
            peers,
            owned: Vec::new(),
            next_refresh: Instant::now(),
            first_refresh_done: false,
            interner: Interner::default(),
            format: WireFormat::Json,
            expected: Vec::new(),
            probe: None,
            resume: None,
        })
    }

    /// The same feed starting each partition a savepoint has at its saved position.
    pub fn resuming(
        mut self,
        positions: std::sync::Arc<std::collections::BTreeMap<i32, PartitionPosition>>,
    ) -> Self {
        self.resume = Some(positions);
        self
    }

    fn refresh(&mut self, clock: &mut Watermarks, now: Instant) -> Result<(), KafkaError> {
        let topic = self.input.topic.clone();
        let parts = admin::partitions(&self.consumer, &topic, Duration::from_secs(5))?;
        if parts.is_empty() && self.index == 0 && !self.first_refresh_done {
            tracing::warn!(topic = %topic, "topic does not exist (yet); waiting for it");
        }
        // Every new partition's range and start first, so that a failure (retried on the next
        // poll) leaves nothing half assigned.
        let mut new = Vec::new();
        for p in parts {
            if p as usize % self.peers != self.index || self.owned.contains(&p) {
                continue;
            }
            if self.input.until_end && self.first_refresh_done {
                continue;
            }
            let (lo, hi) = self
                .consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .map_err(client_err(format!("watermarks of {topic}/{p}")))?;
            let saved = self.resume.as_ref().and_then(|r| r.get(&p)).copied();
            let start = match self.input.start {
                // From the saved offset; records the broker no longer has (deleted by
                // retention since the stop) are counted as skipped when reading resumes.
                _ if saved.is_some() => saved.map_or(lo, |s| s.next_offset),
                StartAt::Beginning => lo,
                StartAt::End if self.first_refresh_done => lo,
                StartAt::End => hi,
                StartAt::Time(t) => {
                    let probe = match self.probe.take() {
                        Some(c) => c,
                        None => self
                            .input
                            .settings
                            .consumer_config()
                            .create()
                            .map_err(client_err("consumer"))?,
                    };
                    let found = first_at_or_after(
                        &probe,
                        (&topic, p),
                        (lo, hi),
                        t,
                        self.format,
                        &mut self.interner,
                    );
                    self.probe = Some(probe);
                    found?
                }
            };
            new.push((p, lo, hi, start, saved.and_then(|s| s.max_ts)));
        }
        if let Some(probe) = self.probe.take() {
            let _ = probe.unassign();
        }
        let mut tpl = TopicPartitionList::new();
        for (p, lo, hi, start, max_ts) in new {
            clock.add(
                p,
                start,
                if self.input.until_end { Some(hi) } else { None },
                now,
            );
            clock.resume_partition(p, max_ts);
            if self.resume.as_ref().is_some_and(|r| r.contains_key(&p)) {
                expect_from(&mut self.expected, p, start);
            }
            let offset = if start <= lo {
                Offset::Beginning
            } else {
                Offset::Offset(start)
            };
            tpl.add_partition_offset(&topic, p, offset)
                .map_err(client_err("assignment"))?;
            tracing::info!(topic = %topic, partition = p, worker = self.index, low = lo, high = hi, start, "assigned");
            self.owned.push(p);
        }
        if tpl.count() > 0 {
            self.consumer
                .incremental_assign(&tpl)
                .map_err(client_err("assign"))?;
        }
        self.first_refresh_done = true;
        Ok(())
    }
}

/// Where a partition's reading starts for `--from t`: the last message in `lo..hi` whose
/// readings are all before `t` (its readings are then late), or `lo` when there is none, by
/// binary search. Each step reads the first readable message at or after the middle offset
/// with `probe` (unreadable messages are passed over).
///
/// The start is a message the broker delivered first in some fetch, not the offset after it:
/// a broker that serves whole record batches only (tansu 0.6 returns the next batch for a
/// fetch inside one) can start there without skipping the rest of a batch.
fn first_at_or_after(
    probe: &BaseConsumer,
    (topic, p): (&str, i32),
    (lo, hi): (i64, i64),
    t: EventTime,
    format: WireFormat,
    interner: &mut Interner,
) -> Result<i64, KafkaError> {
    let (mut a, mut b) = (lo, hi);
    let mut before: Option<i64> = None;
    let mut probes = 0;
    while a < b {
        let m = a + (b - a) / 2;
        probes += 1;
        let got = latest_at(probe, (topic, p), m, hi, format, interner)?;
        tracing::debug!(topic = %topic, partition = p, at = m, got = ?got, "start search probe");
        match got {
            Some((_, ts)) if ts >= t => b = m,
            Some((o, _)) => {
                before = Some(o);
                a = o + 1;
            }
            // Nothing readable from `m` on: starting at `m` reads only what is quarantined.
            None => b = m,
        }
    }
    let start = before.unwrap_or(lo);
    tracing::info!(topic = %topic, partition = p, from = t, start, probes, "start offset by event time");
    Ok(start)
}

/// The first message at or after offset `m` (and before `hi`) that holds a readable
/// reading: its offset and the latest event time in it (`None`: no such message).
fn latest_at(
    probe: &BaseConsumer,
    (topic, p): (&str, i32),
    m: i64,
    hi: i64,
    format: WireFormat,
    interner: &mut Interner,
) -> Result<Option<(i64, EventTime)>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(m))
        .map_err(client_err("start search"))?;
    probe.assign(&tpl).map_err(client_err("start search"))?;
    let deadline = Instant::now() + PROBE_WAIT;
    while Instant::now() < deadline {
        let msg = match probe.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(topic = %topic, partition = p, error = %e, "start search");
                continue;
            }
            Some(Ok(msg)) => msg,
        };
        if msg.partition() != p || msg.offset() < m {
            continue;
        }
        if msg.offset() >= hi {
            return Ok(None);
        }
        let mut latest: Option<EventTime> = None;
        if let Some(bytes) = msg.payload() {
            format.decode_lines(bytes, interner, |_, _, decoded| {
                if let Ok(r) = decoded {
                    latest = Some(latest.map_or(r.ts, |l| l.max(r.ts)));
                }
            });
        }
        if let Some(ts) = latest {
            return Ok(Some((msg.offset(), ts)));
        }
        if msg.offset() + 1 >= hi {
            return Ok(None);
        }
    }
    Err(KafkaError::Client {
        context: format!(
            "start search: no message of {topic}/{p} at offset {m} within {PROBE_WAIT:?}"
        ),
        error: rdkafka::error::KafkaError::NoMessageReceived,
    })
}

/// Records in `expected` (next offset per partition, -1: none yet) that `off` of partition `p`
/// was read; returns the offset that was expected (`off` itself for a partition's first record,
/// and for a negative partition number, which a consumed message never has).
#[inline]
fn next_expected(expected: &mut Vec<i64>, p: i32, off: i64) -> i64 {
    let Ok(i) = usize::try_from(p) else {
        return off;
    };
    if i >= expected.len() {
        expected.resize(i + 1, -1);
    }
    let e = std::mem::replace(&mut expected[i], off + 1);
    if e < 0 {
        off
    } else {
        e
    }
}

impl Feed for KafkaFeed {
    fn poll(&mut self, clock: &mut Watermarks, batch: &mut Batch, now: Instant) -> Poll {
        if now >= self.next_refresh {
            if let Err(e) = self.refresh(clock, now) {
                tracing::warn!(topic = %self.input.topic, error = %e, "partition refresh failed; retrying");
                self.next_refresh = now + Duration::from_secs(1);
                return Poll::Wait(Duration::from_millis(200));
            }
            self.next_refresh = now + self.input.metadata_refresh;
        }
        if self.input.until_end && self.owned.is_empty() {
            return Poll::Done;
        }
        let mut taken = 0;
        while taken < POLL_BUDGET {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => {
                    // The budget counts readings (a batched message holds many).
                    let before = batch.data.len() + batch.bad.len();
                    let (p, off) = (m.partition(), m.offset());
                    let expected = next_expected(&mut self.expected, p, off);
                    if off > expected {
                        batch.skipped_offsets += (off - expected) as u64;
                        tracing::warn!(topic = %self.input.topic, partition = p, from = expected, to = off,
                            "offsets skipped: the broker no longer had these records (retention?) or they were compacted");
                    }
                    let topic = m.topic();
                    match m.payload() {
                        None => batch.bad.push(Quarantined::new(
                            format!("{topic}/{p}@{off}"),
                            "empty payload",
                            b"",
                        )),
                        // One reading, or a batched message of one reading per line: every
                        // reading of a message carries the message's offset.
                        Some(bytes) => self.format.decode_lines(
                            bytes,
                            &mut self.interner,
                            |line, text, decoded| match decoded {
                                Ok(r) => batch.push(p, off, r),
                                Err(e) => batch.bad.push(Quarantined::new(
                                    if line == 0 && text.len() == bytes.len() {
                                        format!("{topic}/{p}@{off}")
                                    } else {
                                        format!("{topic}/{p}@{off} line {}", line + 1)
                                    },
                                    e.to_string(),
                                    text,
                                )),
                            },
                        ),
                    }
                    taken += (batch.data.len() + batch.bad.len() - before).max(1);
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %self.input.topic, error = %e, "consumer error");
                    break;
                }
            }
        }
        if self.input.until_end && clock.all_finished() {
            return Poll::Done;
        }
        if taken >= POLL_BUDGET {
            Poll::More
        } else {
            Poll::Wait(Duration::from_millis(2))
        }
    }

    fn partitions(&self) -> Vec<crate::engine::metrics::PartitionStatus> {
        let Ok(topic) = std::ffi::CString::new(self.input.topic.as_str()) else {
            return Vec::new();
        };
        let mut out: Vec<_> = self
            .owned
            .iter()
            .map(|&p| {
                let (mut lo, mut hi) = (-1i64, -1i64);
                // SAFETY: the client pointer is valid while `self.consumer` lives; the topic
                // is a NUL-terminated string; librdkafka only writes the two out-parameters.
                // This reads the cached watermarks (updated by every fetch), no broker call.
                let err = unsafe {
                    rdkafka::bindings::rd_kafka_get_watermark_offsets(
                        self.consumer.client().native_ptr(),
                        topic.as_ptr(),
                        p,
                        &mut lo,
                        &mut hi,
                    )
                };
                let next = self
                    .expected
                    .get(p as usize)
                    .copied()
                    .filter(|&e| e >= 0)
                    .unwrap_or(lo.max(0));
                let high = (err
                    == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    && hi >= 0)
                    .then_some(hi);
                crate::engine::metrics::PartitionStatus {
                    partition: p,
                    next_offset: next,
                    high,
                    lag: high.map(|h| (h - next).max(0)),
                }
            })
            .collect();
        out.sort_by_key(|s| s.partition);
        out
    }
}

/// Makes `start` the next offset expected of partition `p` (a partition resumed from a
/// savepoint): a first record read after it counts the offsets between as skipped.
fn expect_from(expected: &mut Vec<i64>, p: i32, start: i64) {
    if let Ok(i) = usize::try_from(p) {
        if i >= expected.len() {
            expected.resize(i + 1, -1);
        }
        expected[i] = start;
    }
}

#[cfg(test)]
mod tests {
    use super::{expect_from, next_expected};

    #[test]
    fn a_partition_resumed_at_a_saved_offset_counts_what_the_broker_no_longer_has() {
        let mut e = Vec::new();
        // Saved at 100; the broker's log now starts at 130 (retention): 30 skipped.
        expect_from(&mut e, 2, 100);
        assert_eq!(next_expected(&mut e, 2, 130), 100);
        // Saved at 7 and read on from 7: nothing skipped.
        expect_from(&mut e, 0, 7);
        assert_eq!(next_expected(&mut e, 0, 7), 7);
        assert_eq!(e, vec![8, -1, 131]);
    }

    #[test]
    fn expected_offsets_find_gaps_per_partition() {
        let mut e = Vec::new();
        // A partition's first record is never a gap, whatever its offset.
        assert_eq!(next_expected(&mut e, 3, 40), 40);
        assert_eq!(next_expected(&mut e, 3, 41), 41);
        // Partition 0 starts independently (the vector grew past it with -1).
        assert_eq!(next_expected(&mut e, 0, 0), 0);
        // Offsets 42..45 of partition 3 never came: 42 was expected, 45 arrived.
        assert_eq!(next_expected(&mut e, 3, 45), 42);
        assert_eq!(next_expected(&mut e, 3, 46), 46);
        assert_eq!(next_expected(&mut e, 0, 1), 1);
        assert_eq!(e, vec![2, -1, -1, 47]);
        // A negative partition is not tracked, and is not confused with partition 0.
        assert_eq!(next_expected(&mut e, -1, 9), 9);
        assert_eq!(e, vec![2, -1, -1, 47]);
    }
}
