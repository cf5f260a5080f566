//! Settings layered as embedded defaults -> config file (`--config`, TOML) -> environment
//! (`STREAMGAUGE_*`) -> flags, validated once into typed values.
//!
//! ```toml
//! brokers = "kafka-1:9092,kafka-2:9092"
//! data_dir = "/data/streamgauge"
//! window = "10s"
//! window_zone = "America/Chicago"   # the clock windows follow (default UTC)
//! lateness = "5s"
//! idle_timeout = "30s"
//! state_ttl = "1h"   # per-series state silent this long is dropped (default: kept)
//! [kafka]            # any librdkafka property
//! "security.protocol" = "SASL_SSL"
//! "sasl.mechanism" = "SCRAM-SHA-512"
//! [[mqtt]]           # collectors, run by `streamgauge collect`: [[mqtt]], [[modbus]], [[opcua]],
//!                    # [[http]], [[websocket]], [[cctv]], [[file]] (see collect::*)
//! broker = "127.0.0.1:1883"
//! topics = ["plant/#"]
//! kafka_topic = "readings"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::duration::HumanDuration;

/// A config file or environment value that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// File unreadable.
    #[error("config file {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// File malformed.
    #[error("config file {path}: {why}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Parser message.
        why: String,
    },
    /// Environment variable malformed.
    #[error("environment variable {var}: {why}")]
    Env {
        /// Variable.
        var: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The file layer: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Kafka bootstrap servers.
    pub brokers: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Window width.
    pub window: Option<HumanDuration>,
    /// The clock windows follow (`run --window-zone`).
    pub window_zone: Option<crate::dataset::timefmt::Zone>,
    /// Allowed lateness.
    pub lateness: Option<HumanDuration>,
    /// Partition idle timeout.
    pub idle_timeout: Option<HumanDuration>,
    /// Time to live of per-series state (`run --state-ttl`).
    pub state_ttl: Option<HumanDuration>,
    /// librdkafka properties.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// `[[mqtt]]` collectors, run by `streamgauge collect`.
    #[serde(default)]
    pub mqtt: Vec<crate::collect::mqtt::MqttConfig>,
    /// `[[modbus]]` collectors.
    #[serde(default)]
    pub modbus: Vec<crate::collect::modbus::ModbusConfig>,
    /// `[[opcua]]` collectors.
    #[serde(default)]
    pub opcua: Vec<crate::collect::opcua::OpcUaConfig>,
    /// `[[http]]` collectors.
    #[serde(default)]
    pub http: Vec<crate::collect::http::HttpConfig>,
    /// `[[websocket]]` collectors.
    #[serde(default)]
    pub websocket: Vec<crate::collect::websocket::WebSocketConfig>,
    /// `[[cctv]]` collectors.
    #[serde(default)]
    pub cctv: Vec<crate::collect::cctv::CctvConfig>,
    /// `[[file]]` collectors.
    #[serde(default)]
    pub file: Vec<crate::collect::file::FileConfig>,
    /// The collectors' disk spool.
    pub spool: Option<crate::collect::spool::SpoolConfig>,
}

/// Resolved settings (before command-specific flags are applied).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka bootstrap servers, if any layer gave them.
    pub brokers: Option<String>,
    /// Data directory, if any layer gave it.
    pub data_dir: Option<PathBuf>,
    /// Window width (default 10 s).
    pub window: Duration,
    /// The clock windows follow (default UTC).
    pub window_zone: crate::dataset::timefmt::Zone,
    /// Allowed lateness (default 5 s).
    pub lateness: Duration,
    /// Idle timeout (default 30 s).
    pub idle_timeout: Duration,
    /// Time to live of per-series state (default: none, state is kept for the whole run).
    pub state_ttl: Option<Duration>,
    /// librdkafka properties from the file (flags' `-X` come after).
    pub kafka: Vec<(String, String)>,
    /// Collectors configured in the file.
    pub collectors: crate::collect::Collectors,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            brokers: None,
            data_dir: None,
            window: Duration::from_secs(10),
            window_zone: Default::default(),
            lateness: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            state_ttl: None,
            kafka: Vec::new(),
            collectors: crate::collect::Collectors::default(),
        }
    }
}

impl Settings {
    /// Defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut s = Settings::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.into(),
                source: e,
            })?;
            let f: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.into(),
                why: e.to_string(),
            })?;
            s.brokers = f.brokers.or(s.brokers);
            s.data_dir = f.data_dir.or(s.data_dir);
            s.window = f.window.map_or(s.window, |d| d.0);
            s.window_zone = f.window_zone.unwrap_or(s.window_zone);
            s.lateness = f.lateness.map_or(s.lateness, |d| d.0);
            s.idle_timeout = f.idle_timeout.map_or(s.idle_timeout, |d| d.0);
            if let Some(d) = f.state_ttl {
                s.state_ttl = Some(positive_ttl(d.0).map_err(|why| ConfigError::Parse {
                    path: path.into(),
                    why: format!("state_ttl: {why}"),
                })?);
            }
            s.kafka = f.kafka.into_iter().collect();
            s.collectors = crate::collect::Collectors {
                mqtt: f.mqtt,
                modbus: f.modbus,
                opcua: f.opcua,
                http: f.http,
                websocket: f.websocket,
                cctv: f.cctv,
                file: f.file,
                spool: f.spool,
            };
        }
        if let Ok(b) = std::env::var("STREAMGAUGE_BROKERS") {
            s.brokers = Some(b);
        }
        if let Some(d) = std::env::var_os("STREAMGAUGE_DATA") {
            s.data_dir = Some(d.into());
        }
        for (var, slot) in [
            ("STREAMGAUGE_WINDOW", &mut s.window),
            ("STREAMGAUGE_LATENESS", &mut s.lateness),
            ("STREAMGAUGE_IDLE_TIMEOUT", &mut s.idle_timeout),
        ] {
            if let Ok(v) = std::env::var(var) {
                *slot = crate::duration::parse_duration(&v).map_err(|e| ConfigError::Env {
                    var,
                    why: e.to_string(),
                })?;
            }
        }
        if let Ok(v) = std::env::var("STREAMGAUGE_WINDOW_ZONE") {
            s.window_zone =
                crate::dataset::timefmt::Zone::parse(&v).map_err(|why| ConfigError::Env {
                    var: "STREAMGAUGE_WINDOW_ZONE",
                    why,
                })?;
        }
        if let Ok(v) = std::env::var("STREAMGAUGE_STATE_TTL") {
            let env = |why: String| ConfigError::Env {
                var: "STREAMGAUGE_STATE_TTL",
                why,
            };
            let d = crate::duration::parse_duration(&v).map_err(|e| env(e.to_string()))?;
            s.state_ttl = Some(positive_ttl(d).map_err(env)?);
        }
        Ok(s)
    }
}

/// A time to live of at least a millisecond (state expires on a millisecond grid); the
/// error says what to give.
pub(crate) fn positive_ttl(d: Duration) -> Result<Duration, String> {
    at_least_1ms(d, "a time to live", "30m or 1h")
}

/// `d` when it is at least a millisecond (event time is in milliseconds); else an error
/// naming `what` with `examples` of what to give.
pub(crate) fn at_least_1ms(d: Duration, what: &str, examples: &str) -> Result<Duration, String> {
    if d.as_millis() >= 1 {
        Ok(d)
    } else {
        Err(format!("{what} must be at least 1ms, e.g. {examples}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_layer_overrides_defaults_and_rejects_typos() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "window = \"1m\"\n[kafka]\n\"security.protocol\" = \"SSL\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&p)).unwrap();
        assert_eq!(s.window, Duration::from_secs(60));
        assert_eq!(s.window_zone, Default::default());
        assert_eq!(s.lateness, Duration::from_secs(5));
        assert_eq!(
            s.kafka,
            vec![("security.protocol".to_string(), "SSL".to_string())]
        );
        std::fs::write(&p, "window_zone = \"Europe/Berlin\"\n").unwrap();
        let s = Settings::load(Some(&p)).unwrap();
        assert!(s.window_zone.is_named());
        std::fs::write(&p, "window_zone = \"Europe/Berln\"\n").unwrap();
        assert!(Settings::load(Some(&p))
            .unwrap_err()
            .to_string()
            .contains("not in the tz database"));
        std::fs::write(&p, "windw = \"1m\"\n").unwrap();
        assert!(Settings::load(Some(&p))
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
        std::fs::write(&p, "state_ttl = \"90m\"\n").unwrap();
        let s = Settings::load(Some(&p)).unwrap();
        assert_eq!(s.state_ttl, Some(Duration::from_secs(5_400)));
        std::fs::write(&p, "state_ttl = \"0s\"\n").unwrap();
        let e = Settings::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("state_ttl") && e.contains("at least 1ms"), "{e}");
        std::fs::write(&p, "window = \"soon\"\n").unwrap();
        assert!(Settings::load(Some(&p))
            .unwrap_err()
            .to_string()
            .contains("invalid duration"));
    }
}
