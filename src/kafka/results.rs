//! Result rows into Kafka topics, none lost in silence: the dataflows' result producer,
//! the file of rows it could not deliver, and `redeliver`, which sends that file again.
//!
//! A result row that Kafka refuses (the send fails at once: the row is too large, the topic
//! does not exist and cannot be created, ...) or that is never acknowledged (its delivery
//! report is an error: `message.timeout.ms` passed while the broker was down, the topic is
//! not authorised, or the producer was purged at the end of the run with rows still queued)
//! is appended to the *undelivered file*, one JSON object per line with its topic, key,
//! payload and librdkafka's reason, and counted. `streamgauge redeliver FILE` sends every row
//! of such a file again and keeps in it only those that fail again.
//!
//! While Kafka is merely slow, nothing is dropped: a full local queue makes the sink wait
//! (backpressure on the dataflow), as the collectors do without a spool.
//!
//! A row purged while in flight (sent, not yet acknowledged) may have reached the topic: a
//! redelivery can then write it twice. Redelivered rows come after the rows of the run that
//! were delivered, so a series' order in its partition is not kept across a redelivery.
//!
//! # Exactly once across a crash
//!
//! Every message carries its row's event time (the dataflow's timely time) in the header
//! [`TIME_HEADER`]. With checkpoints, the sinks hold the rows at or after a barrier until
//! every sink of the process passed it, as they do for files. A sink passes a barrier only
//! once Kafka acknowledged every row it sent before it ([`ResultProducer::unconfirmed`] is
//! zero; a row Kafka refused is in the undelivered file, flushed before the checkpoint is
//! written): the rows before the barrier are never made again, so none may be lost in the
//! producer's queue by a crash after the checkpoint. The last sink records each result
//! partition's end offset in the checkpoint: every row of that process at or
//! after the barrier lands after it. A run resumed from that checkpoint reads each result
//! partition from the lowest offset any process recorded ([`scan_sent`]) and keeps the rows
//! at or after the barrier that are already there ([`SentRows`]); it makes exactly those
//! rows again (as it does for the files it cuts back), and the sink skips each one found
//! there, once. So the topic ends with every row once. While rows found this way reach a
//! later barrier, the checkpoint at that barrier records where the read-back started
//! instead of the end ([`SentRows::floor`]), so a second crash finds them too.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use serde::{Deserialize, Serialize};

use super::{admin, client_err, KafkaError};
use crate::engine::metrics::Metrics;
use crate::record::EventTime;

/// The header that carries a result row's event time (8 bytes, big-endian `i64`).
pub const TIME_HEADER: &str = "sg-time";

/// End offsets by topic and partition.
pub type TopicOffsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// A message's event time, from its [`TIME_HEADER`].
fn header_time<M: Message>(m: &M) -> Option<EventTime> {
    let h = m.headers()?;
    h.iter()
        .find(|h| h.key == TIME_HEADER)
        .and_then(|h| h.value)
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(i64::from_be_bytes)
}

/// One line of an undelivered file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndeliveredRow {
    /// Topic the row was for.
    pub topic: String,
    /// Its key (the series id, usually).
    pub key: String,
    /// Why it was not delivered (librdkafka's error).
    pub reason: String,
    /// The row, as it would have been the message's payload.
    pub payload: String,
    /// The row's event time (the dataflow's), when it had one.
    #[serde(default)]
    pub time: Option<EventTime>,
}

/// The file that keeps the result rows Kafka did not take, created at the first one.
#[derive(Debug)]
pub struct Undelivered {
    path: PathBuf,
    file: Mutex<Option<BufWriter<File>>>,
    count: AtomicU64,
    unwritten: AtomicU64,
    metrics: Option<Arc<Metrics>>,
}

impl Undelivered {
    /// Rows go to `path` (appended; created at the first row). Each row also counts in
    /// `metrics.results_undelivered`.
    pub fn new(path: PathBuf, metrics: Option<Arc<Metrics>>) -> Self {
        Undelivered {
            path,
            file: Mutex::new(None),
            count: AtomicU64::new(0),
            unwritten: AtomicU64::new(0),
            metrics,
        }
    }

    /// Where the rows go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows kept so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Rows that could not even be written to the file (its disk failed): these are lost,
    /// and the run says so.
    pub fn unwritten(&self) -> u64 {
        self.unwritten.load(Ordering::Relaxed)
    }

    /// Keeps one row (of event time `time`, if known).
    pub fn keep(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        time: Option<EventTime>,
        reason: &str,
    ) {
        let row = UndeliveredRow {
            topic: topic.to_string(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
            payload: String::from_utf8_lossy(payload).into_owned(),
            time,
        };
        self.keep_row(&row);
    }

    fn keep_row(&self, row: &UndeliveredRow) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            Metrics::add(&m.results_undelivered, 1);
        }
        let mut line = serde_json::to_vec(row).expect("strings serialise");
        line.push(b'\n');
        if let Err(e) = self.write_line(&line) {
            self.unwritten.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), error = %e, topic = %row.topic, "an undelivered result row could not be kept either: it is lost");
        }
    }

    /// Appends `line` (with its newline) to the file, opening it at the first.
    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            *file = Some(BufWriter::new(f));
        }
        file.as_mut().expect("opened above").write_all(line)
    }

    /// Writes what is buffered to the file.
    pub fn flush(&self) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        match file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Undelivered {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "flushing undelivered result rows");
        }
    }
}

/// The producer context: a failed delivery report keeps the row.
struct KeepFailed {
    undelivered: Arc<Undelivered>,
}

impl ClientContext for KeepFailed {}

impl ProducerContext for KeepFailed {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.undelivered.keep(
                m.topic(),
                m.key().unwrap_or_default(),
                m.payload().unwrap_or_default(),
                header_time(m),
                &e.to_string(),
            );
        }
    }
}

/// A producer of result rows whose failures go to an [`Undelivered`] file.
pub struct ResultProducer {
    producer: ThreadedProducer<KeepFailed>,
    undelivered: Arc<Undelivered>,
}

impl ResultProducer {
    /// A producer made from `config` (the idempotent producer settings, usually).
    pub fn new(config: &ClientConfig, undelivered: Arc<Undelivered>) -> Result<Self, KafkaError> {
        let producer = config
            .create_with_context(KeepFailed {
                undelivered: undelivered.clone(),
            })
            .map_err(client_err("result producer"))?;
        Ok(ResultProducer {
            producer,
            undelivered,
        })
    }

    /// Sends one row, of event time `time` (carried in [`TIME_HEADER`]). A full local
    /// queue waits for room; a row refused at once is kept.
    pub fn send(&self, topic: &str, key: &str, payload: &[u8], time: Option<EventTime>) {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(t) = time {
            record = record.headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                key: TIME_HEADER,
                value: Some(&t.to_be_bytes()),
            }));
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    self.undelivered
                        .keep(topic, key.as_bytes(), payload, time, &e.to_string());
                    return;
                }
            }
        }
    }

    /// Rows sent and not yet settled: queued, in flight, or with a delivery report not yet
    /// handled (a failed one is kept in the undelivered file once handled).
    pub fn unconfirmed(&self) -> usize {
        usize::try_from(self.producer.in_flight_count()).unwrap_or(0)
    }

    /// Waits up to `wait` for every row sent to be acknowledged; rows still queued or in
    /// flight after that are purged, which keeps them (a row purged in flight may also have
    /// reached the topic). Returns whether every row was acknowledged in time.
    pub fn finish(&self, wait: Duration) -> bool {
        if self.producer.flush(wait).is_ok() {
            return true;
        }
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        // The purge's delivery reports come through the poll thread: wait for them.
        let _ = self.producer.flush(Duration::from_secs(5));
        false
    }
}

/// What [`redeliver`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redelivered {
    /// Rows sent and acknowledged.
    pub delivered: u64,
    /// Rows that failed again (still in the file, with their new reason).
    pub kept: u64,
    /// Lines that are not undelivered rows (left in the file as they were).
    pub unreadable: u64,
}

/// Sends every row of the undelivered file `path` again with `config`, waiting up to `wait`
/// for the acknowledgements. The file then holds only the rows that failed again (and any
/// line that could not be read); it is removed when none are left.
pub fn redeliver(
    config: &ClientConfig,
    path: &Path,
    wait: Duration,
) -> Result<Redelivered, KafkaError> {
    let io = |e: std::io::Error| KafkaError::Undelivered {
        path: path.to_path_buf(),
        source: e,
    };
    let input = File::open(path).map_err(io)?;
    let mut retry_path = path.as_os_str().to_owned();
    retry_path.push(".retry");
    let retry_path = PathBuf::from(retry_path);
    let _ = std::fs::remove_file(&retry_path);
    let retry = Arc::new(Undelivered::new(retry_path.clone(), None));
    let producer = ResultProducer::new(config, retry.clone())?;
    let mut unreadable = Vec::new();
    let mut sent = 0u64;
    for line in BufReader::new(input).lines() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<UndeliveredRow>(&line) {
            Ok(row) => {
                producer.send(&row.topic, &row.key, row.payload.as_bytes(), row.time);
                sent += 1;
            }
            Err(_) => unreadable.push(line),
        }
    }
    producer.finish(wait);
    drop(producer);
    let kept = retry.count();
    for l in &unreadable {
        retry.write_line(format!("{l}\n").as_bytes()).map_err(io)?;
    }
    retry.flush().map_err(io)?;
    if retry.unwritten() > 0 {
        return Err(io(std::io::Error::other(format!(
            "{} rows failed again and could not be written to {}",
            retry.unwritten(),
            retry_path.display()
        ))));
    }
    if kept == 0 && unreadable.is_empty() {
        std::fs::remove_file(path).map_err(io)?;
        let _ = std::fs::remove_file(&retry_path);
    } else {
        std::fs::rename(&retry_path, path).map_err(io)?;
    }
    Ok(Redelivered {
        delivered: sent - kept,
        kept,
        unreadable: unreadable.len() as u64,
    })
}

/// A result row found in a topic: topic, key, payload.
type FoundRow = (String, String, Vec<u8>);

/// The hash a found row is filed under.
fn row_hash(topic: &str, key: &str, payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (topic, key, payload).hash(&mut h);
    h.finish()
}

/// The result rows at or after a checkpoint's barrier that a run which died had already
/// sent: a run resumed from that checkpoint sends each of them no second time.
#[derive(Debug, Default)]
pub struct SentRows {
    /// By a hash of (topic, key, payload): each row with its count.
    rows: HashMap<u64, Vec<(FoundRow, u32)>>,
    left: usize,
    skipped: u64,
    /// Where each partition was read from.
    starts: TopicOffsets,
    /// The latest event time found in each partition.
    latest: BTreeMap<String, BTreeMap<i32, EventTime>>,
}

impl SentRows {
    /// Rows found and not yet matched by a row of this run.
    pub fn left(&self) -> usize {
        self.left
    }

    /// Rows of this run skipped because the run before had sent them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether this run's row (for `topic`, with `key` and `payload`) was already sent; if
    /// so it is taken from the set (a row the dead run sent twice is skipped twice).
    pub fn take(&mut self, topic: &str, key: &str, payload: &[u8]) -> bool {
        if self.left == 0 {
            return false;
        }
        let h = row_hash(topic, key, payload);
        let Some(bucket) = self.rows.get_mut(&h) else {
            return false;
        };
        let Some(i) = bucket
            .iter()
            .position(|((t, k, p), _)| t == topic && k == key && p == payload)
        else {
            return false;
        };
        bucket[i].1 -= 1;
        if bucket[i].1 == 0 {
            bucket.swap_remove(i);
            if bucket.is_empty() {
                self.rows.remove(&h);
            }
        }
        self.left -= 1;
        self.skipped += 1;
        true
    }

    /// The offset a checkpoint at `barrier` records for a partition whose end is `end`: the
    /// scan's start while rows found there reach `barrier` or later (a run resumed from that
    /// checkpoint must find them too), else `end`.
    pub fn floor(&self, topic: &str, partition: i32, barrier: EventTime, end: i64) -> i64 {
        match (
            self.latest.get(topic).and_then(|p| p.get(&partition)),
            self.starts.get(topic).and_then(|p| p.get(&partition)),
        ) {
            (Some(&t), Some(&start)) if t >= barrier => start.min(end),
            _ => end,
        }
    }

    fn add(&mut self, topic: &str, partition: i32, key: &[u8], payload: &[u8], t: EventTime) {
        let key = String::from_utf8_lossy(key);
        let bucket = self.rows.entry(row_hash(topic, &key, payload)).or_default();
        match bucket
            .iter_mut()
            .find(|((t, k, p), _)| t == topic && *k == key && p == payload)
        {
            Some((_, n)) => *n += 1,
            None => bucket.push(((topic.to_string(), key.into_owned(), payload.to_vec()), 1)),
        }
        self.left += 1;
        let l = self
            .latest
            .entry(topic.to_string())
            .or_default()
            .entry(partition)
            .or_insert(t);
        *l = (*l).max(t);
    }
}

/// Reads each partition of `from` (topic, partition, offset to start at) up to its end, and
/// keeps the messages whose row's event time is at or after `since`: what a run that died
/// sent after the checkpoint at `since` was cut. The end is confirmed by reading: once every
/// partition reached the end offset it had, reading goes on until nothing comes for 2 s.
/// `config` is a consumer's; gives up after `timeout` without progress.
pub fn scan_sent(
    config: &ClientConfig,
    from: &TopicOffsets,
    since: EventTime,
    timeout: Duration,
) -> Result<SentRows, KafkaError> {
    let mut sent = SentRows {
        starts: from.clone(),
        ..SentRows::default()
    };
    let consumer: BaseConsumer = config
        .create()
        .map_err(client_err("result scan consumer"))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    // (topic, partition) -> its end offset, until a message there reaches it
    let mut todo: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (topic, parts) in from {
        // Partitions added since the checkpoint hold only rows sent after it: read them whole.
        let all = admin::partitions(&consumer, topic, timeout)?;
        for p in all {
            let start = parts.get(&p).copied().unwrap_or(0);
            let (lo, hi) = consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(client_err(format!("end offsets of {topic}[{p}]")))?;
            let start = start.max(lo);
            // Read even a partition that looks empty from there: its end may lag.
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(start))
                .map_err(client_err("result scan assignment"))?;
            if start < hi {
                todo.insert((topic.clone(), p), hi);
            }
        }
    }
    if tpl.count() == 0 {
        return Ok(sent);
    }
    consumer
        .assign(&tpl)
        .map_err(client_err("result scan assignment"))?;
    // Reading goes on past each partition's end until nothing came for `QUIET`: a broker
    // whose high watermark lags (tansu 0.6 said 1 for a partition of 3,000 records) has more
    // than it says. 500 ms was too short on a loaded machine (a CI run read 11,388 of 12,000).
    const QUIET: Duration = Duration::from_secs(2);
    let mut last_progress = std::time::Instant::now();
    let mut offsets_seen: BTreeMap<(String, i32), i64> = BTreeMap::new();
    loop {
        let quiet_for = last_progress.elapsed();
        if todo.is_empty() && quiet_for >= QUIET {
            break;
        }
        if !todo.is_empty() && quiet_for > timeout {
            let (t, p) = todo.keys().next().expect("not empty");
            return Err(KafkaError::Client {
                context: format!("reading back the result topic {t}[{p}] after a crash"),
                error: RdError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_progress = std::time::Instant::now();
                let k = (m.topic().to_string(), m.partition());
                // A broker that serves whole batches may send a record twice: keep the
                // first.
                let seen = offsets_seen.entry(k.clone()).or_insert(-1);
                if m.offset() <= *seen {
                    continue;
                }
                *seen = m.offset();
                if let Some(t) = header_time(&m).filter(|&t| t >= since) {
                    sent.add(
                        &k.0,
                        k.1,
                        m.key().unwrap_or_default(),
                        m.payload().unwrap_or_default(),
                        t,
                    );
                }
                if todo.get(&k).is_some_and(|&end| m.offset() + 1 >= end) {
                    todo.remove(&k);
                }
            }
            Some(Err(e)) => {
                return Err(KafkaError::Client {
                    context: "reading back the result topics after a crash".into(),
                    error: e,
                })
            }
            None => {}
        }
    }
    Ok(sent)
}

/// Drops from the undelivered file `path` the rows at or after `since`: a run resumed from
/// the checkpoint at `since` makes and sends them again. Returns how many were dropped.
pub fn trim_undelivered(path: &Path, since: EventTime) -> Result<u64, KafkaError> {
    let io = |e: std::io::Error| KafkaError::Undelivered {
        path: path.to_path_buf(),
        source: e,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0;
    for line in text.lines() {
        let after = serde_json::from_str::<UndeliveredRow>(line)
            .ok()
            .and_then(|r| r.time)
            .is_some_and(|t| t >= since);
        if after {
            dropped += 1;
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if dropped > 0 {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, kept).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_rows_read_back_as_they_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("undelivered.jsonl");
        let m = Arc::new(Metrics::default());
        let u = Undelivered::new(path.clone(), Some(m.clone()));
        assert!(!path.exists(), "created at the first row only");
        u.keep(
            "t.windows",
            b"s\"1",
            br#"{"a":1,"b":"x\ny"}"#,
            Some(5),
            "timed out",
        );
        u.keep("t.late", b"", b"plain", None, "too large");
        u.flush().unwrap();
        assert_eq!(u.count(), 2);
        assert_eq!(m.snapshot().results_undelivered, 2);
        let rows: Vec<UndeliveredRow> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key, "s\"1");
        assert_eq!(rows[0].payload, r#"{"a":1,"b":"x\ny"}"#);
        assert_eq!(rows[1].reason, "too large");
        assert_eq!((rows[0].time, rows[1].time), (Some(5), None));
        drop(u);
        assert_eq!(trim_undelivered(&path, 5).unwrap(), 1);
        let left = std::fs::read_to_string(&path).unwrap();
        assert_eq!(left.lines().count(), 1);
        assert!(left.contains("too large"), "a row without a time stays");
    }

    #[test]
    fn redeliver_sends_the_rows_and_leaves_only_the_unreadable_lines() {
        let broker = crate::kafka::broker::EmbeddedBroker::start(1).unwrap();
        broker.create_topic("t.out", 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("undelivered.jsonl");
        let u = Undelivered::new(path.clone(), None);
        u.keep("t.out", b"k", b"{\"v\":1}", Some(7), "timed out");
        u.write_line(b"not a row\n").unwrap();
        u.keep("t.out", b"k", b"{\"v\":2}", None, "timed out");
        drop(u);
        let settings = crate::kafka::ClientSettings::new(broker.bootstrap());
        let r = redeliver(&settings.producer_config(), &path, Duration::from_secs(30)).unwrap();
        assert_eq!(
            r,
            Redelivered {
                delivered: 2,
                kept: 0,
                unreadable: 1
            }
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a row\n");
        let c: BaseConsumer = settings.consumer_config().create().unwrap();
        let (lo, hi) = c
            .fetch_watermarks("t.out", 0, Duration::from_secs(10))
            .unwrap();
        assert_eq!(hi - lo, 2, "both rows reached the topic");
    }

    #[test]
    fn sent_rows_are_taken_once_each_and_hold_the_floor_while_they_reach_a_barrier() {
        let mut s = SentRows::default();
        s.starts.entry("t".into()).or_default().insert(0, 40);
        s.add("t", 0, b"k", b"row", 150);
        s.add("t", 0, b"k", b"row", 150);
        s.add("t", 0, b"k", b"other", 120);
        assert!(!s.take("t", "k", b"absent"));
        assert!(!s.take("u", "k", b"row"), "another topic");
        assert!(s.take("t", "k", b"row"));
        assert!(s.take("t", "k", b"row"), "sent twice: skipped twice");
        assert!(!s.take("t", "k", b"row"), "not a third time");
        assert_eq!((s.left(), s.skipped()), (1, 2));
        assert_eq!(s.floor("t", 0, 100, 90), 40, "rows found at 150 reach 100");
        assert_eq!(s.floor("t", 0, 150, 90), 40);
        assert_eq!(s.floor("t", 0, 200, 90), 90, "nothing found reaches 200");
        assert_eq!(s.floor("t", 1, 100, 90), 90, "nothing found there");
    }
}
