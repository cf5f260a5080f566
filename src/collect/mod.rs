//! Collectors: live sources cleaned into readings and produced into Kafka, keyed by series.
//! The cleaning every collector shares lives in [`clean`], the hand-off to Kafka in [`Sink`];
//! each source kind has a file of its own ([`mqtt`], [`modbus`], [`http`], [`websocket`],
//! [`opcua`], [`cctv`], [`file`](mod@file)) and implements [`Collector`]. Collectors are configured as tables of
//! the config file (`[[mqtt]]`, `[[modbus]]` ...) and run together by `streamgauge collect`,
//! each on its own thread.

pub mod cctv;
pub mod clean;
pub mod file;
pub mod http;
pub mod json;
pub mod modbus;
pub mod mqtt;
pub mod opcua;
pub mod spool;
pub mod websocket;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use thiserror::Error;

use crate::kafka::{ClientSettings, KafkaError};
use clean::{Candidate, CleanConfig, Cleaner, CounterSnapshot, Counters, Outcome};

/// Why a collector could not run.
#[derive(Debug, Error)]
pub enum CollectError {
    /// A config that cannot work.
    #[error("collector {collector}: {why}")]
    Config {
        /// Collector name.
        collector: String,
        /// What to fix.
        why: String,
    },
    /// The source failed in a way retrying does not fix.
    #[error("collector {collector}: {why}")]
    Source {
        /// Collector name.
        collector: String,
        /// What happened.
        why: String,
    },
    /// Kafka could not take the readings.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// What every collector hands its records to: the shared [`Cleaner`] and the collector's
/// [`spool::Delivery`] into its topic (readings keyed by series; rejects to
/// `<topic>.quarantine`).
pub struct Sink {
    name: String,
    cleaner: Cleaner,
    delivery: spool::Delivery,
    topic: String,
    quarantine_topic: String,
    spooling: bool,
    /// The encoded reading, reused.
    buf: Vec<u8>,
}

impl Sink {
    /// A sink for collector `name` into `topic`, cleaning by `clean`, spooling as `spool`
    /// says.
    pub fn new(
        name: &str,
        clean: &CleanConfig,
        kafka: &ClientSettings,
        topic: &str,
        counters: Arc<Counters>,
        spool: Option<&spool::SpoolConfig>,
    ) -> Result<Sink, CollectError> {
        let mut cleaner = Cleaner::new(clean.clone()).map_err(|why| CollectError::Config {
            collector: name.to_string(),
            why,
        })?;
        cleaner.counters = counters;
        Ok(Sink {
            name: name.to_string(),
            cleaner,
            delivery: spool::Delivery::new(name, kafka, spool)?,
            topic: topic.to_string(),
            quarantine_topic: format!("{topic}.quarantine"),
            spooling: spool.is_some(),
            buf: Vec::with_capacity(256),
        })
    }

    fn quarantine(&self, q: &crate::quarantine::Quarantined) -> Result<(), CollectError> {
        self.delivery.send(spool::RecRef {
            topic: &self.quarantine_topic,
            key: q.source.as_bytes(),
            payload: q.to_json().as_bytes(),
        })?;
        Ok(())
    }

    /// Cleans one record from `source` (`payload` is what the source sent, kept with a
    /// rejection) and produces the reading or the rejection. Waits while Kafka's memory queue
    /// (and the spool, if any) is full: the source is not read meanwhile (backpressure, not
    /// drops).
    pub fn offer(
        &mut self,
        source: &str,
        payload: &[u8],
        parsed: Result<Candidate, String>,
    ) -> Result<(), CollectError> {
        match self.cleaner.clean(source, payload, parsed) {
            Outcome::Reading(r) => {
                crate::record::WireFormat::Json.encode(&r, &mut self.buf);
                self.delivery.send(spool::RecRef {
                    topic: &self.topic,
                    key: r.series.as_bytes(),
                    payload: &self.buf,
                })?
            }
            Outcome::Quarantined(q) => {
                tracing::debug!(collector = %self.name, reason = %q.reason, "quarantined");
                self.quarantine(&q)?
            }
            Outcome::Duplicate => {}
        }
        Ok(())
    }

    /// Records a failure of the source itself (a poll that failed, a connection lost): counted
    /// in `source_errors`, logged, and written to the quarantine topic with its reason. Nothing
    /// is produced in place of the missing data.
    pub fn source_failed(&mut self, source: &str, why: &str) -> Result<(), CollectError> {
        self.cleaner
            .counters
            .source_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(collector = %self.name, %source, error = %why, "source failed");
        self.quarantine(&crate::quarantine::Quarantined::new(source, why, b""))
    }

    /// The counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.cleaner.counters.snapshot()
    }

    /// Records waiting in the spool.
    pub fn spooled(&self) -> u64 {
        self.delivery.spooled()
    }

    /// Waits until Kafka has everything (30 s at most; 10 s with a spool, which keeps what is
    /// left for the next run); returns the counters.
    pub fn finish(self) -> Result<CounterSnapshot, CollectError> {
        let wait = Duration::from_secs(if self.spooling { 10 } else { 30 });
        self.delivery.finish(wait)?;
        Ok(self.cleaner.counters.snapshot())
    }
}

/// One configured collector of any kind.
pub trait Collector: Send + Sync + std::fmt::Debug {
    /// Its name (logs, counters, quarantine sources).
    fn name(&self) -> &str;
    /// Its kind (`mqtt`, `modbus` ...).
    fn kind(&self) -> &'static str;
    /// The Kafka topic it produces into.
    fn kafka_topic(&self) -> &str;
    /// Its cleaning rules.
    fn clean(&self) -> &CleanConfig;
    /// Checks what can be checked before connecting.
    fn validate(&self) -> Result<(), CollectError>;
    /// Reads the source into `sink` until `stop` is set (or the source ends, for files).
    fn run(&self, sink: &mut Sink, stop: &AtomicBool) -> Result<(), CollectError>;
}

/// The collectors of a config file, one list per kind.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Collectors {
    /// `[[mqtt]]` tables.
    #[serde(default)]
    pub mqtt: Vec<mqtt::MqttConfig>,
    /// `[[modbus]]` tables.
    #[serde(default)]
    pub modbus: Vec<modbus::ModbusConfig>,
    /// `[[opcua]]` tables.
    #[serde(default)]
    pub opcua: Vec<opcua::OpcUaConfig>,
    /// `[[http]]` tables.
    #[serde(default)]
    pub http: Vec<http::HttpConfig>,
    /// `[[websocket]]` tables.
    #[serde(default)]
    pub websocket: Vec<websocket::WebSocketConfig>,
    /// `[[cctv]]` tables.
    #[serde(default)]
    pub cctv: Vec<cctv::CctvConfig>,
    /// `[[file]]` tables.
    #[serde(default)]
    pub file: Vec<file::FileConfig>,
    /// The `[spool]` table: a disk spool behind each collector's memory queue.
    #[serde(default)]
    pub spool: Option<spool::SpoolConfig>,
}

impl Collectors {
    /// Every collector, of every kind.
    pub fn all(&self) -> Vec<&dyn Collector> {
        let mut v: Vec<&dyn Collector> = Vec::new();
        v.extend(self.mqtt.iter().map(|c| c as &dyn Collector));
        v.extend(self.modbus.iter().map(|c| c as &dyn Collector));
        v.extend(self.opcua.iter().map(|c| c as &dyn Collector));
        v.extend(self.http.iter().map(|c| c as &dyn Collector));
        v.extend(self.websocket.iter().map(|c| c as &dyn Collector));
        v.extend(self.cctv.iter().map(|c| c as &dyn Collector));
        v.extend(self.file.iter().map(|c| c as &dyn Collector));
        v
    }

    /// How many are configured.
    pub fn len(&self) -> usize {
        self.all().len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Kafka topics they produce into, each once.
    pub fn topics(&self) -> Vec<String> {
        let t: std::collections::BTreeSet<String> = self
            .all()
            .iter()
            .map(|c| c.kafka_topic().to_string())
            .collect();
        t.into_iter().collect()
    }

    /// Checks every collector's config; names must be unique.
    pub fn validate(&self) -> Result<(), CollectError> {
        let mut names = std::collections::BTreeSet::new();
        for c in self.all() {
            c.validate()?;
            Cleaner::new(c.clean().clone()).map_err(|why| CollectError::Config {
                collector: c.name().to_string(),
                why,
            })?;
            if !names.insert(c.name().to_string()) {
                return Err(CollectError::Config {
                    collector: c.name().to_string(),
                    why: "two collectors have this name; give each a unique `name`".into(),
                });
            }
        }
        Ok(())
    }
}

type Joined = Result<CounterSnapshot, CollectError>;

/// A running set of collectors.
pub struct Running {
    /// Name and counters of each collector.
    pub counters: Vec<(String, Arc<Counters>)>,
    stop: Arc<AtomicBool>,
    threads: Vec<(String, &'static str, std::thread::JoinHandle<Joined>)>,
}

/// Runs one collector on this thread until `stop` is set (or its source ends); returns its
/// counters.
pub fn run_one(
    c: &dyn Collector,
    kafka: &ClientSettings,
    stop: &AtomicBool,
    counters: Arc<Counters>,
    spool: Option<&spool::SpoolConfig>,
) -> Result<CounterSnapshot, CollectError> {
    c.validate()?;
    let mut sink = Sink::new(c.name(), c.clean(), kafka, c.kafka_topic(), counters, spool)?;
    c.run(&mut sink, stop)?;
    sink.finish()
}

/// Starts every collector on its own thread.
pub fn start(c: &Collectors, kafka: &ClientSettings) -> Result<Running, CollectError> {
    c.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut counters = Vec::new();
    let mut threads = Vec::new();
    let all: Vec<Arc<dyn Collector>> = c
        .mqtt
        .iter()
        .map(|x| Arc::new(x.clone()) as Arc<dyn Collector>)
        .chain(c.modbus.iter().map(|x| Arc::new(x.clone()) as _))
        .chain(c.opcua.iter().map(|x| Arc::new(x.clone()) as _))
        .chain(c.http.iter().map(|x| Arc::new(x.clone()) as _))
        .chain(c.websocket.iter().map(|x| Arc::new(x.clone()) as _))
        .chain(c.cctv.iter().map(|x| Arc::new(x.clone()) as _))
        .chain(c.file.iter().map(|x| Arc::new(x.clone()) as _))
        .collect();
    for col in all {
        let counts = Arc::new(Counters::default());
        let name = col.name().to_string();
        let kind = col.kind();
        counters.push((name.clone(), counts.clone()));
        let (kafka, stop, spool) = (kafka.clone(), stop.clone(), c.spool.clone());
        let t = std::thread::Builder::new()
            .name(format!("collect-{name}"))
            .spawn(move || run_one(&*col, &kafka, &stop, counts, spool.as_ref()))
            .map_err(|e| CollectError::Source {
                collector: name.clone(),
                why: e.to_string(),
            })?;
        threads.push((name, kind, t));
    }
    Ok(Running {
        counters,
        stop,
        threads,
    })
}

impl Running {
    /// Name, kind and counters of each collector.
    pub fn entries(&self) -> Vec<(String, &'static str, Arc<Counters>)> {
        self.threads
            .iter()
            .zip(&self.counters)
            .map(|((name, kind, _), (_, c))| (name.clone(), *kind, c.clone()))
            .collect()
    }

    /// Whether to stop the rest: every collector has stopped, or one that runs until told to
    /// (all but `file`) has, which is an error (see [`Running::stop`]).
    pub fn should_stop(&self) -> bool {
        self.threads.iter().all(|(_, _, t)| t.is_finished())
            || self
                .threads
                .iter()
                .any(|(_, kind, t)| *kind != "file" && t.is_finished())
    }

    /// Stops every collector, waits for them to flush, returns each one's final counters or
    /// its error.
    pub fn stop(self) -> Vec<(String, Joined)> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|(name, _, t)| {
                let r = t.join().unwrap_or_else(|_| {
                    Err(CollectError::Source {
                        collector: name.clone(),
                        why: "collector thread panicked".into(),
                    })
                });
                (name, r)
            })
            .collect()
    }
}

/// Sleeps for `d`, or less if `stop` is set meanwhile; returns whether it was.
pub fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
    stop.load(Ordering::Relaxed)
}

/// Exponential backoff for reconnecting: 0.5 s doubling to 30 s, reset on success.
#[derive(Debug, Clone, Copy)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(500))
    }
}

impl Backoff {
    /// The next wait (and doubles the one after).
    pub fn next_wait(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
        d
    }

    /// After a success.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Splits `host:port` (an optional `scheme://` in front is dropped).
pub fn host_port(addr: &str) -> Result<(String, u16), String> {
    let a = addr.split_once("://").map_or(addr, |(_, r)| r);
    let (h, p) = a
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?}: expected host:port"))?;
    let port = p.parse().map_err(|_| format!("{addr:?}: bad port"))?;
    if h.is_empty() {
        return Err(format!("{addr:?}: no host"));
    }
    Ok((h.to_string(), port))
}

/// How often `collect` logs its counters.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
