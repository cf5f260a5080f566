//! Producing readings into Kafka, keyed by series id (so a series always lands in one
//! partition), idempotent with acks=all, with backpressure instead of drops when the local
//! queue is full.

use std::time::Duration;

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
        })
    }

    /// Sends one reading, waiting while the local queue is full.
    pub fn send(&mut self, r: &Reading) -> Result<(), KafkaError> {
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

    /// Waits until everything sent is acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
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
                    source: e,
                })
            }
        }
    }
}

impl Drop for ReadingProducer {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(30));
    }
}
