//! Collectors: live sources cleaned into readings and produced into Kafka, keyed by series.
//! The cleaning every collector shares lives in [`clean`]; each source kind has a file of its
//! own ([`mqtt`]). Collectors are configured as tables of the config file (`[[mqtt]]`) and
//! run together by `streamgauge collect`, each on its own thread.

pub mod clean;
pub mod mqtt;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::kafka::{ClientSettings, KafkaError};

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

/// The collectors of a config file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Collectors {
    /// `[[mqtt]]` tables.
    #[serde(default)]
    pub mqtt: Vec<mqtt::MqttConfig>,
}

impl Collectors {
    /// How many are configured.
    pub fn len(&self) -> usize {
        self.mqtt.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every collector's config; names must be unique.
    pub fn validate(&self) -> Result<(), CollectError> {
        let mut names = std::collections::BTreeSet::new();
        for m in &self.mqtt {
            m.validate()?;
            if !names.insert(m.name.clone()) {
                return Err(CollectError::Config {
                    collector: m.name.clone(),
                    why: "two collectors have this name; give each a unique `name`".into(),
                });
            }
        }
        Ok(())
    }
}

/// A running set of collectors.
pub struct Running {
    /// Name and counters of each collector.
    pub counters: Vec<(String, Arc<clean::Counters>)>,
    stop: Arc<AtomicBool>,
    threads: Vec<(
        String,
        std::thread::JoinHandle<Result<clean::CounterSnapshot, CollectError>>,
    )>,
}

/// Starts every collector on its own thread.
pub fn start(c: &Collectors, kafka: &ClientSettings) -> Result<Running, CollectError> {
    c.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut counters = Vec::new();
    let mut threads = Vec::new();
    for m in &c.mqtt {
        let counts = Arc::new(clean::Counters::default());
        counters.push((m.name.clone(), counts.clone()));
        let (m, kafka, stop) = (m.clone(), kafka.clone(), stop.clone());
        let name = m.name.clone();
        let t = std::thread::Builder::new()
            .name(format!("collect-{name}"))
            .spawn(move || mqtt::run(&m, &kafka, &stop, Some(counts)))
            .map_err(|e| CollectError::Source {
                collector: name.clone(),
                why: e.to_string(),
            })?;
        threads.push((name, t));
    }
    Ok(Running {
        counters,
        stop,
        threads,
    })
}

impl Running {
    /// Whether any collector has stopped (with an error: see [`Running::stop`]).
    pub fn any_finished(&self) -> bool {
        self.threads.iter().any(|(_, t)| t.is_finished())
    }

    /// Stops every collector, waits for them to flush, returns each one's final counters or
    /// its error.
    pub fn stop(self) -> Vec<(String, Result<clean::CounterSnapshot, CollectError>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|(name, t)| {
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

/// How often `collect` logs its counters.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
