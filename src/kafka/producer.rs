//! Producing readings into Kafka, keyed by series id (so a series always lands in one
//! partition), idempotent with acks=all, with backpressure instead of drops when the local
//! queue is full.
//!
//! A producer can also batch: readings go into one buffer per partition, one reading per
//! line, and a buffer becomes one message when it holds `batch` readings (or 256 KB, or has
//! waited [`LINGER`]). The partition is chosen as librdkafka chooses it for a keyed message
//! (CRC-32 of the series id modulo the partition count), so batched and unbatched producers
//! agree on where a series lives. Per-message costs (librdkafka's queues, locks and clocks,
//! the broker's bookkeeping) are then paid once per batch; consumers decode either shape.

use std::time::{Duration, Instant};

use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use super::{client_err, ClientSettings, KafkaError};
use crate::quarantine::Quarantined;
use crate::record::{Reading, WireFormat};

/// A keyed producer of readings (and of quarantine records to `<topic>.quarantine`).
pub struct ReadingProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    quarantine_topic: String,
    format: WireFormat,
    buf: Vec<u8>,
    batcher: Option<Batcher>,
}

/// How long a batch waits for more readings before it is sent anyway.
pub const LINGER: Duration = Duration::from_millis(5);

/// Largest batched message, in bytes (well under the broker's default 1 MB).
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Per-partition buffers of a batching producer.
struct Batcher {
    /// Readings per message.
    max: usize,
    parts: Vec<PartBuf>,
    /// Sends since the last check for lingering buffers.
    since_check: u32,
}

/// One partition's pending batch.
#[derive(Default)]
struct PartBuf {
    bytes: Vec<u8>,
    count: usize,
    since: Option<Instant>,
}

/// The partition librdkafka's default partitioner gives a message keyed `series` in a topic
/// of `partitions` partitions (CRC-32 of the key, modulo the count).
pub fn partition_for(series: &str, partitions: i32) -> i32 {
    (crc32fast::hash(series.as_bytes()) % partitions.max(1) as u32) as i32
}

impl ReadingProducer {
    /// A producer into `topic`.
    pub fn new(settings: &ClientSettings, topic: &str) -> Result<Self, KafkaError> {
        let producer = settings
            .producer_config()
            .create()
            .map_err(client_err("producer"))?;
        Ok(ReadingProducer {
            producer,
            topic: topic.to_string(),
            quarantine_topic: format!("{topic}.quarantine"),
            format: WireFormat::Json,
            buf: Vec::with_capacity(256),
            batcher: None,
        })
    }

    /// A producer into `topic` that sends up to `batch` readings per message (1: one reading
    /// per message, as [`ReadingProducer::new`]). The topic must exist: its partition count
    /// is read once, here.
    pub fn batched(
        settings: &ClientSettings,
        topic: &str,
        batch: usize,
    ) -> Result<Self, KafkaError> {
        let mut p = Self::new(settings, topic)?;
        if batch <= 1 {
            return Ok(p);
        }
        let meta = p
            .producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(client_err(format!(
                "reading the partitions of topic {topic}"
            )))?;
        let n = meta
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        if n == 0 {
            return Err(KafkaError::CreateTopic {
                topic: topic.to_string(),
                why: "the topic has no partitions yet: create it before producing batches".into(),
            });
        }
        p.batcher = Some(Batcher {
            max: batch,
            parts: (0..n).map(|_| PartBuf::default()).collect(),
            since_check: 0,
        });
        Ok(p)
    }

    /// Sends one reading (into its partition's batch, when batching), waiting while the local
    /// queue is full.
    pub fn send(&mut self, r: &Reading) -> Result<(), KafkaError> {
        if let Some(b) = &mut self.batcher {
            let p = partition_for(&r.series, b.parts.len() as i32) as usize;
            let part = &mut b.parts[p];
            if part.count > 0 {
                part.bytes.push(b'\n');
            } else {
                part.since = Some(Instant::now());
            }
            self.format.append(r, &mut part.bytes);
            part.count += 1;
            let full = part.count >= b.max || part.bytes.len() >= MAX_BATCH_BYTES;
            b.since_check += 1;
            let check = b.since_check >= 256;
            if full {
                self.send_part(p)?;
            }
            if check {
                self.send_due()?;
            }
            return Ok(());
        }
        self.format.encode(r, &mut self.buf);
        send_blocking(
            &self.producer,
            BaseRecord::to(&self.topic)
                .key(&*r.series)
                .payload(&self.buf[..]),
        )
    }

    /// Sends one reading to an explicit partition (tests that control placement).
    pub fn send_to(&mut self, r: &Reading, partition: i32) -> Result<(), KafkaError> {
        self.format.encode(r, &mut self.buf);
        send_blocking(
            &self.producer,
            BaseRecord::to(&self.topic)
                .key(&*r.series)
                .payload(&self.buf[..])
                .partition(partition),
        )
    }

    /// Sends raw bytes (tests of malformed input).
    pub fn send_raw(&mut self, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
        send_blocking(
            &self.producer,
            BaseRecord::to(&self.topic).key(key).payload(payload),
        )
    }

    /// Sends a quarantine record to `<topic>.quarantine`.
    pub fn quarantine(&mut self, q: &Quarantined) -> Result<(), KafkaError> {
        let json = q.to_json();
        send_blocking(
            &self.producer,
            BaseRecord::to(&self.quarantine_topic)
                .key(q.source.as_str())
                .payload(json.as_bytes()),
        )
    }

    /// Sends partition `p`'s pending batch as one message.
    fn send_part(&mut self, p: usize) -> Result<(), KafkaError> {
        let Some(b) = &mut self.batcher else {
            return Ok(());
        };
        let part = &mut b.parts[p];
        if part.count == 0 {
            return Ok(());
        }
        send_blocking(
            &self.producer,
            BaseRecord::<str, [u8]>::to(&self.topic)
                .payload(&part.bytes[..])
                .partition(p as i32),
        )?;
        part.bytes.clear();
        part.count = 0;
        part.since = None;
        Ok(())
    }

    /// Sends every batch that has waited [`LINGER`] (a paced replay calls this before it
    /// sleeps, so a slow stream's readings do not sit in a buffer).
    pub fn send_due(&mut self) -> Result<(), KafkaError> {
        let Some(b) = &mut self.batcher else {
            return Ok(());
        };
        b.since_check = 0;
        let now = Instant::now();
        let due: Vec<usize> = (b.parts.iter().enumerate())
            .filter(|(_, part)| part.since.is_some_and(|t| now - t >= LINGER))
            .map(|(i, _)| i)
            .collect();
        for p in due {
            self.send_part(p)?;
        }
        Ok(())
    }

    /// Sends every pending batch, then waits until everything sent is acknowledged.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), KafkaError> {
        let n = self.batcher.as_ref().map_or(0, |b| b.parts.len());
        for p in 0..n {
            self.send_part(p)?;
        }
        self.producer
            .flush(timeout)
            .map_err(client_err("flushing producer"))
    }

    /// Messages not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

fn send_blocking(
    p: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, str, [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(500));
            }
            Err((e, _)) => {
                return Err(KafkaError::Client {
                    context: "producing".into(),
                    error: e,
                })
            }
        }
    }
}

impl Drop for ReadingProducer {
    fn drop(&mut self) {
        let _ = self.flush(Duration::from_secs(30));
    }
}
