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

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use serde::{Deserialize, Serialize};

use super::{client_err, KafkaError};
use crate::engine::metrics::Metrics;

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

    /// Keeps one row.
    pub fn keep(&self, topic: &str, key: &[u8], payload: &[u8], reason: &str) {
        let row = UndeliveredRow {
            topic: topic.to_string(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
            payload: String::from_utf8_lossy(payload).into_owned(),
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
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let written = (|| {
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
            file.as_mut().expect("opened above").write_all(&line)
        })();
        if let Err(e) = written {
            self.unwritten.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), error = %e, topic = %row.topic, "an undelivered result row could not be kept either: it is lost");
        }
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

    /// Sends one row. A full local queue waits for room; a row refused at once is kept.
    pub fn send(&self, topic: &str, key: &str, payload: &[u8]) {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    self.undelivered
                        .keep(topic, key.as_bytes(), payload, &e.to_string());
                    return;
                }
            }
        }
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
                producer.send(&row.topic, &row.key, row.payload.as_bytes());
                sent += 1;
            }
            Err(_) => unreadable.push(line),
        }
    }
    producer.finish(wait);
    drop(producer);
    let kept = retry.count();
    {
        let mut f = retry.file.lock().unwrap_or_else(|p| p.into_inner());
        if !unreadable.is_empty() && f.is_none() {
            *f = Some(BufWriter::new(File::create(&retry_path).map_err(io)?));
        }
        if let Some(w) = f.as_mut() {
            for l in &unreadable {
                writeln!(w, "{l}").map_err(io)?;
            }
            w.flush().map_err(io)?;
        }
        *f = None;
    }
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
        u.keep("t.windows", b"s\"1", br#"{"a":1,"b":"x\ny"}"#, "timed out");
        u.keep("t.late", b"", b"plain", "too large");
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
    }
}
