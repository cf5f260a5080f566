//! Delivery of a collector's records to Kafka, with an optional disk spool behind the
//! producer's memory queue.
//!
//! Without a spool, a full memory queue (librdkafka's, bounded by
//! `queue.buffering.max.messages` / `.kbytes`) blocks the collector, so it stops reading its
//! source: backpressure, not drops. With a spool directory, records that do not fit go to
//! append-only segment files under `<spool_dir>/<collector>/` (up to `max_bytes`; only past
//! that does the collector block), and a drainer thread moves them back into the producer as
//! it makes room, oldest first. While anything is spooled, new records are spooled behind it,
//! so a series keeps its order. Records whose delivery times out, and those still queued at
//! shutdown when Kafka is unreachable (purged after a 10 s flush), are spooled too; the next run
//! of the collector sends them first. At a clean shutdown the segment being drained is rewritten
//! without what was already sent. A record purged while in flight may have reached Kafka
//! although its acknowledgement did not: the next run sends it again (at least once across a
//! restart with Kafka down; exactly once within a run, by the idempotent producer). A crash
//! loses what was in the memory queue and may send again what was taken from the segment being
//! drained; the spool files survive it.
//!
//! Segment format: records of `u32 topic length, topic, u32 key length, key, u32 payload
//! length, payload` (little-endian); a segment is deleted once it has been drained.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use serde::Deserialize;

use super::CollectError;
use crate::kafka::{client_err, ClientSettings, KafkaError};

/// The `[spool]` table of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory; each collector spools under `<dir>/<name>/`.
    pub dir: PathBuf,
    /// Most bytes spooled per collector before it blocks (default 1024 MB).
    #[serde(default = "default_max_mb")]
    pub max_mb: u64,
}

fn default_max_mb() -> u64 {
    1024
}

/// A record waiting: topic, key, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    /// Topic.
    pub topic: String,
    /// Key.
    pub key: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Rec {
    /// The record, borrowed.
    pub fn as_ref(&self) -> RecRef<'_> {
        RecRef {
            topic: &self.topic,
            key: &self.key,
            payload: &self.payload,
        }
    }
}

/// A record to send, borrowed (the hot path copies nothing unless it spools).
#[derive(Debug, Clone, Copy)]
pub struct RecRef<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key.
    pub key: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
}

impl RecRef<'_> {
    fn size(&self) -> u64 {
        (12 + self.topic.len() + self.key.len() + self.payload.len()) as u64
    }
}

/// Segment files: append at the back, read from the front.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Segment numbers on disk, oldest first.
    segments: VecDeque<u64>,
    /// The segment being written: number, file, bytes in it.
    writer: Option<(u64, BufWriter<File>, u64)>,
    reader: Option<(u64, BufReader<File>)>,
    /// A record read but not yet taken by the producer.
    pending: Option<Rec>,
    /// Bytes on disk not yet drained (approximately: whole segments).
    bytes: u64,
    /// Records spooled and not yet drained.
    records: u64,
}

/// Bytes per segment file before a new one is started.
const SEGMENT_BYTES: u64 = 8 << 20;

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:012}.spool"))
}

impl Spool {
    /// Opens (creating) the spool in `dir`; segments left by an earlier run are kept, to be
    /// drained first.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        let mut bytes = 0;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_suffix(".spool")
                .and_then(|s| s.parse::<u64>().ok())
            {
                bytes += e.metadata()?.len();
                segments.push(n);
            }
        }
        segments.sort_unstable();
        let mut s = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segments: segments.into(),
            writer: None,
            reader: None,
            pending: None,
            bytes,
            records: 0,
        };
        // Count what an earlier run left.
        s.records = s.count_on_disk()?;
        Ok(s)
    }

    fn count_on_disk(&self) -> std::io::Result<u64> {
        let mut n = 0;
        for seg in &self.segments {
            let mut r = BufReader::new(File::open(seg_path(&self.dir, *seg))?);
            while read_rec(&mut r)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether nothing is spooled.
    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.pending.is_none()
    }

    /// Records spooled and not yet drained.
    pub fn len(&self) -> u64 {
        self.records + self.pending.is_some() as u64
    }

    /// Appends a record; `Ok(false)` when the spool is full.
    pub fn push(&mut self, r: RecRef<'_>) -> std::io::Result<bool> {
        if self.bytes + r.size() > self.max_bytes {
            return Ok(false);
        }
        let rotate = match &self.writer {
            None => true,
            Some((n, _, written)) => *written >= SEGMENT_BYTES || self.segments.back() != Some(n),
        };
        if rotate {
            if let Some((_, mut w, _)) = self.writer.take() {
                w.flush()?;
            }
            let n = self.segments.back().map_or(0, |n| n + 1);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(seg_path(&self.dir, n))?;
            self.segments.push_back(n);
            self.writer = Some((n, BufWriter::new(f), 0));
        }
        let Some((_, w, written)) = self.writer.as_mut() else {
            return Ok(false);
        };
        write_rec(w, r)?;
        *written += r.size();
        self.bytes += r.size();
        self.records += 1;
        Ok(true)
    }

    /// Writes buffered records to the files.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if let Some((_, w, _)) = self.writer.as_mut() {
            w.flush()?;
        }
        Ok(())
    }

    /// Rewrites the segment being read without the records already taken, so that a new
    /// run does not send them again (called at a clean shutdown).
    pub fn compact(&mut self) -> std::io::Result<()> {
        let total = self.len();
        let Some((n, mut r)) = self.reader.take() else {
            return Ok(());
        };
        if self.writer.as_ref().is_some_and(|(w, _, _)| *w == n) {
            self.sync()?;
            self.writer = None;
        }
        let tmp = self.dir.join(format!("{n:012}.tmp"));
        let mut w = BufWriter::new(File::create(&tmp)?);
        let mut rest: Vec<Rec> = self.pending.take().into_iter().collect();
        while let Some(rec) = read_rec(&mut r)? {
            rest.push(rec);
        }
        for rec in &rest {
            write_rec(&mut w, rec.as_ref())?;
        }
        w.flush()?;
        w.get_ref().sync_all()?;
        drop(w);
        std::fs::rename(&tmp, seg_path(&self.dir, n))?;
        // The pending record is back on disk.
        self.records = total;
        Ok(())
    }

    /// Hands records, oldest first, to `send` until it refuses one (kept for the next call)
    /// or the spool is empty; drained segments are deleted.
    pub fn drain(&mut self, mut send: impl FnMut(&Rec) -> bool) -> std::io::Result<u64> {
        let mut sent = 0;
        loop {
            let rec = match self.pending.take() {
                Some(r) => r,
                None => match self.read_next()? {
                    Some(r) => r,
                    None => return Ok(sent),
                },
            };
            if !send(&rec) {
                self.pending = Some(rec);
                return Ok(sent);
            }
            sent += 1;
        }
    }

    fn read_next(&mut self) -> std::io::Result<Option<Rec>> {
        loop {
            if self.reader.is_none() {
                let Some(&n) = self.segments.front() else {
                    return Ok(None);
                };
                if self.writer.as_ref().is_some_and(|(w, _, _)| *w == n) {
                    self.sync()?;
                }
                self.reader = Some((n, BufReader::new(File::open(seg_path(&self.dir, n))?)));
            }
            let n = match &self.reader {
                Some((n, _)) => *n,
                None => return Ok(None),
            };
            // The segment being written: flush whole records first, so that no half-written
            // record is read (the BufWriter writes out whenever its buffer fills).
            if self.writer.as_ref().is_some_and(|(w, _, _)| *w == n) {
                self.sync()?;
            }
            let Some((_, r)) = self.reader.as_mut() else {
                return Ok(None);
            };
            if let Some(rec) = read_rec(r)? {
                self.records = self.records.saturating_sub(1);
                return Ok(Some(rec));
            }
            // The end of this segment: if it is being written, flush and look again once.
            if self.writer.as_ref().is_some_and(|(w, _, _)| *w == n) {
                let before = self.records;
                self.sync()?;
                if let Some((_, r)) = self.reader.as_mut() {
                    if let Some(rec) = read_rec(r)? {
                        self.records = self.records.saturating_sub(1);
                        return Ok(Some(rec));
                    }
                }
                if before > 0 {
                    return Ok(None);
                }
                // Drained: close and delete it; the next push starts a new segment.
                self.writer = None;
            }
            self.reader = None;
            self.segments.pop_front();
            let path = seg_path(&self.dir, n);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path)?;
            self.bytes = self.bytes.saturating_sub(len);
        }
    }
}

fn write_rec(w: &mut impl Write, r: RecRef<'_>) -> std::io::Result<()> {
    for part in [r.topic.as_bytes(), r.key, r.payload] {
        w.write_all(&(part.len() as u32).to_le_bytes())?;
        w.write_all(part)?;
    }
    Ok(())
}

fn read_rec(r: &mut impl Read) -> std::io::Result<Option<Rec>> {
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(3);
    for i in 0..3 {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            // A clean end between records; a torn last record (a crash mid-write) is dropped.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                if i > 0 {
                    tracing::warn!("spool: a torn record at the end of a segment was dropped");
                }
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let mut b = vec![0; u32::from_le_bytes(len) as usize];
        if let Err(e) = r.read_exact(&mut b) {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                tracing::warn!("spool: a torn record at the end of a segment was dropped");
                return Ok(None);
            }
            return Err(e);
        }
        parts.push(b);
    }
    let payload = parts.pop().unwrap_or_default();
    let key = parts.pop().unwrap_or_default();
    let topic = String::from_utf8_lossy(&parts.pop().unwrap_or_default()).into_owned();
    Ok(Some(Rec {
        topic,
        key,
        payload,
    }))
}

/// The producer's context: failed deliveries that retrying can fix go back to the spool.
pub struct SpoolContext {
    spool: Arc<Mutex<Option<Spool>>>,
    name: String,
}

impl ClientContext for SpoolContext {}

impl ProducerContext for SpoolContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Err((e, m)) = result else { return };
        let retry = matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::PurgeQueue
                    | RDKafkaErrorCode::PurgeInflight
                    | RDKafkaErrorCode::MessageTimedOut
            )
        );
        let rec = Rec {
            topic: m.topic().to_string(),
            key: m.key().unwrap_or_default().to_vec(),
            payload: m.payload().unwrap_or_default().to_vec(),
        };
        let mut g = lock(&self.spool);
        match (retry, g.as_mut()) {
            (true, Some(s)) => match s.push(rec.as_ref()) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(collector = %self.name, "spool full: an undelivered record is lost")
                }
                Err(io) => {
                    tracing::error!(collector = %self.name, error = %io, "spool: an undelivered record is lost")
                }
            },
            _ => {
                tracing::error!(collector = %self.name, error = %e, topic = %rec.topic, "a record was not delivered")
            }
        }
    }
}

fn lock(m: &Mutex<Option<Spool>>) -> MutexGuard<'_, Option<Spool>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A collector's way into Kafka: the idempotent producer, and the spool if configured.
pub struct Delivery {
    producer: Arc<ThreadedProducer<SpoolContext>>,
    spool: Arc<Mutex<Option<Spool>>>,
    stop: Arc<AtomicBool>,
    drainer: Option<std::thread::JoinHandle<()>>,
    name: String,
}

fn try_send(p: &ThreadedProducer<SpoolContext>, r: RecRef<'_>) -> Result<bool, RdError> {
    match p.send(BaseRecord::to(r.topic).key(r.key).payload(r.payload)) {
        Ok(()) => Ok(true),
        Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(false),
        Err((e, _)) => Err(e),
    }
}

impl Delivery {
    /// A producer for collector `name`, spooling under `<spool.dir>/<name>` if given.
    pub fn new(
        name: &str,
        kafka: &ClientSettings,
        spool: Option<&SpoolConfig>,
    ) -> Result<Delivery, CollectError> {
        let spool = match spool {
            Some(c) => Some(
                Spool::open(&c.dir.join(name), c.max_mb.saturating_mul(1 << 20)).map_err(|e| {
                    CollectError::Config {
                        collector: name.to_string(),
                        why: format!("spool {}: {e}", c.dir.join(name).display()),
                    }
                })?,
            ),
            None => None,
        };
        if let Some(s) = &spool {
            if !s.is_empty() {
                tracing::info!(collector = %name, records = s.len(), "spool: records left by an earlier run are sent first");
            }
        }
        let spool = Arc::new(Mutex::new(spool));
        let producer: ThreadedProducer<SpoolContext> = kafka
            .producer_config()
            .create_with_context(SpoolContext {
                spool: spool.clone(),
                name: name.to_string(),
            })
            .map_err(client_err("producer"))?;
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let has_spool = lock(&spool).is_some();
        let drainer = has_spool.then(|| {
            let (p, s, st) = (producer.clone(), spool.clone(), stop.clone());
            let n = name.to_string();
            std::thread::spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    // Busy: come back as soon as the producer may have room; idle: rest.
                    let wait = match drain(&p, &s) {
                        Ok(0) => 20,
                        Ok(_) => 1,
                        Err(e) => {
                            tracing::error!(collector = %n, error = %e, "spool drain");
                            100
                        }
                    };
                    std::thread::sleep(Duration::from_millis(wait));
                }
            })
        });
        Ok(Delivery {
            producer,
            spool,
            stop,
            drainer,
            name: name.to_string(),
        })
    }

    /// Sends a record: to the producer, or behind what is spooled, or into the spool when
    /// the memory queue is full; blocks only when neither has room.
    pub fn send(&self, r: RecRef<'_>) -> Result<(), KafkaError> {
        let err = |e: RdError| KafkaError::Client {
            context: "producing".into(),
            error: e,
        };
        loop {
            {
                let mut g = lock(&self.spool);
                match g.as_mut() {
                    Some(s) if !s.is_empty() => {
                        if s.push(r).map_err(KafkaError::Spool)? {
                            return Ok(());
                        }
                    }
                    Some(s) => {
                        if try_send(&self.producer, r).map_err(err)? {
                            return Ok(());
                        }
                        if s.push(r).map_err(KafkaError::Spool)? {
                            return Ok(());
                        }
                    }
                    None => {
                        if try_send(&self.producer, r).map_err(err)? {
                            return Ok(());
                        }
                    }
                }
            }
            // Memory queue and spool are full: wait (the source is not read meanwhile).
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Records spooled and not yet handed to the producer.
    pub fn spooled(&self) -> u64 {
        lock(&self.spool).as_ref().map_or(0, Spool::len)
    }

    /// Drains the spool and waits for Kafka to have everything, up to `timeout`; what Kafka
    /// has not taken by then goes back to the spool (if there is one) for the next run.
    pub fn finish(mut self, timeout: Duration) -> Result<(), KafkaError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.drainer.take() {
            let _ = d.join();
        }
        let deadline = std::time::Instant::now() + timeout;
        let has_spool = lock(&self.spool).is_some();
        while has_spool && self.spooled() > 0 && std::time::Instant::now() < deadline {
            drain(&self.producer, &self.spool).map_err(KafkaError::Spool)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let flushed = self.producer.flush(left.max(Duration::from_millis(100)));
        if flushed.is_err() && has_spool {
            // Kafka is unreachable: what is still queued goes to the spool (delivery reports
            // with a purge error, see SpoolContext).
            self.producer
                .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            let _ = self.producer.flush(Duration::from_secs(5));
            let mut g = lock(&self.spool);
            if let Some(s) = g.as_mut() {
                s.sync().map_err(KafkaError::Spool)?;
                s.compact().map_err(KafkaError::Spool)?;
                tracing::warn!(collector = %self.name, records = s.len(), "Kafka unreachable at shutdown: records kept in the spool for the next run");
            }
            return Ok(());
        }
        if let Some(s) = lock(&self.spool).as_mut() {
            s.sync().map_err(KafkaError::Spool)?;
            s.compact().map_err(KafkaError::Spool)?;
        }
        let unacked = self.producer.in_flight_count();
        flushed.map_err(client_err(format!(
            "Kafka did not acknowledge {unacked} record(s) within {timeout:?}; without a [spool] \
             (or --spool-dir) they are lost"
        )))
    }
}

fn drain(p: &ThreadedProducer<SpoolContext>, spool: &Mutex<Option<Spool>>) -> std::io::Result<u64> {
    let mut g = lock(spool);
    let Some(s) = g.as_mut() else { return Ok(0) };
    if s.is_empty() {
        return Ok(0);
    }
    s.drain(|r| match try_send(p, r.as_ref()) {
        Ok(sent) => sent,
        Err(e) => {
            tracing::error!(error = %e, topic = %r.topic, "spool: a record Kafka refuses is dropped");
            true
        }
    })
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> Rec {
        Rec {
            topic: "t".into(),
            key: format!("k{}", i % 3).into_bytes(),
            payload: vec![b'x'; i % 50],
        }
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        for i in 0..1000 {
            assert!(s.push(rec(i).as_ref()).unwrap());
        }
        let mut got = Vec::new();
        // The producer takes 300, then refuses one.
        s.drain(|r| {
            if got.len() == 300 {
                return false;
            }
            got.push(r.clone());
            true
        })
        .unwrap();
        assert_eq!(s.len(), 700);
        for i in 1000..1100 {
            assert!(s.push(rec(i).as_ref()).unwrap());
        }
        s.sync().unwrap();
        s.compact().unwrap();
        assert_eq!(s.len(), 800);
        drop(s);
        // A new run finds the rest, the refused record first, and nothing already taken.
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.len(), 800);
        let mut again = Vec::new();
        s.drain(|r| {
            again.push(r.clone());
            true
        })
        .unwrap();
        assert!(s.is_empty());
        let want: Vec<Rec> = (0..1100).map(rec).collect();
        assert_eq!(&got[..], &want[..300]);
        assert_eq!(&again[..], &want[300..]);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "drained segments are deleted"
        );
        let mut small = Spool::open(dir.path(), 100).unwrap();
        assert!(small.push(rec(49).as_ref()).unwrap());
        assert!(!small.push(rec(49).as_ref()).unwrap(), "full");
    }
}
