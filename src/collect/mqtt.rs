//! The MQTT collector (IoT): subscribes to topic filters on an MQTT broker (3.1.1 or 5,
//! QoS 0 or 1, optional TLS and username/password), turns each message into a
//! [`Candidate`] and hands it to the shared [`Cleaner`](super::clean::Cleaner); readings go to the Kafka topic,
//! rejects to `<topic>.quarantine` with the payload, the source (`mqtt://broker/topic`)
//! and the reason.
//!
//! Payloads are JSON objects, mapped by the config (series id from a field or the topic,
//! event time from a field or the time of receipt, values from listed fields or every
//! numeric field, units per value), or bare numbers with the series taken from the topic.
//! A lost connection is retried with backoff (0.5 s doubling to 30 s) and the filters are
//! subscribed again. With QoS 1 the session is persistent (client id `streamgauge-<name>`;
//! MQTT 5 sessions expire after a day), so the broker keeps the messages that arrive while
//! the collector is away, and a restarted collector receives them (duplicates are dropped by
//! the cleaner).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::clean::{Candidate, CleanConfig, RawTime, RawValue};
use super::json::JsonMap;
use super::{now_ms, sleep_unless, Backoff, CollectError, Collector, Sink};

/// How payloads are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// A JSON object, mapped by the config.
    #[default]
    Json,
    /// A bare number (text); the series is the topic.
    Number,
}

/// One MQTT collector's config (a `[[mqtt]]` table of the collect file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Name in logs, counters and quarantine sources.
    #[serde(default = "default_name")]
    pub name: String,
    /// Broker `host:port`.
    pub broker: String,
    /// Topic filters (`+` and `#` wildcards).
    pub topics: Vec<String>,
    /// Kafka topic the readings go to (rejects to `<kafka_topic>.quarantine`).
    pub kafka_topic: String,
    /// QoS of the subscriptions: 0 or 1.
    #[serde(default)]
    pub qos: u8,
    /// Protocol: 3 (3.1.1, default) or 5.
    #[serde(default = "default_version")]
    pub version: u8,
    /// Client id (default `streamgauge-<name>`).
    pub client_id: Option<String>,
    /// Username.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Connect with TLS (the system's trust store, or `ca_file`).
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA to trust for TLS.
    pub ca_file: Option<PathBuf>,
    /// `json` (default) or `number`.
    #[serde(default)]
    pub payload: PayloadKind,
    /// JSON field (dotted path) holding the series id; default: the MQTT topic.
    pub series_field: Option<String>,
    /// JSON field holding the event time; default: the time of receipt.
    pub time_field: Option<String>,
    /// JSON fields to take as values; default: every numeric top-level field except the
    /// series and time fields.
    #[serde(default)]
    pub value_fields: Vec<String>,
    /// Name of the value of a bare-number payload (default `value`).
    #[serde(default = "default_value_name")]
    pub value_name: String,
    /// The unit each value is sent in (`temperature = "F"`), converted to `clean.units`.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// Tags added to every reading.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Cleaning rules.
    #[serde(default)]
    pub clean: CleanConfig,
}

fn default_name() -> String {
    "mqtt".into()
}
fn default_version() -> u8 {
    3
}
fn default_value_name() -> String {
    "value".into()
}

impl MqttConfig {
    /// Checks what can be checked before connecting.
    pub fn validate(&self) -> Result<(), CollectError> {
        let bad = |why: String| CollectError::Config {
            collector: self.name.clone(),
            why,
        };
        if self.topics.is_empty() {
            return Err(bad("topics: give at least one topic filter".into()));
        }
        if self.qos > 1 {
            return Err(bad(format!("qos = {}: use 0 or 1", self.qos)));
        }
        if !matches!(self.version, 3..=5) {
            return Err(bad(format!(
                "version = {}: use 3 (3.1.1) or 5",
                self.version
            )));
        }
        self.host_port().map_err(bad)?;
        if self.payload == PayloadKind::Number
            && (self.series_field.is_some() || self.time_field.is_some())
        {
            return Err(bad(
                "series_field and time_field apply to JSON payloads only".into(),
            ));
        }
        Ok(())
    }

    fn host_port(&self) -> Result<(String, u16), String> {
        super::host_port(&self.broker).map_err(|e| format!("broker = {e}"))
    }

    /// The candidate a message makes (or why it cannot make one).
    pub fn parse(
        &self,
        topic: &str,
        payload: &[u8],
        received_ms: i64,
    ) -> Result<Candidate, String> {
        let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_string())?;
        let unit = |name: &str| self.units.get(name).cloned();
        let tags = self
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if self.payload == PayloadKind::Number {
            let v = text
                .trim()
                .parse::<f64>()
                .map(RawValue::Number)
                .unwrap_or_else(|_| RawValue::Text(text.trim().to_string()));
            return Ok(Candidate {
                series: Some(topic.to_string()),
                time: Some(RawTime::Received(received_ms)),
                values: vec![(self.value_name.clone(), v, unit(&self.value_name))],
                tags,
            });
        }
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        JsonMap {
            series_field: self.series_field.as_deref(),
            time_field: self.time_field.as_deref(),
            value_fields: &self.value_fields,
            units: &self.units,
            tags: &self.tags,
        }
        .candidate(&json, Some(topic), received_ms)
    }
}

/// How long an MQTT 5 broker keeps a QoS 1 collector's session after it disconnects.
const SESSION_EXPIRY_S: u32 = 24 * 3600;

/// A message from either protocol version.
enum Message {
    Publish(String, Vec<u8>),
    Connected,
    Other,
}

impl Collector for MqttConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "mqtt"
    }
    fn kafka_topic(&self) -> &str {
        &self.kafka_topic
    }
    fn clean(&self) -> &CleanConfig {
        &self.clean
    }
    fn validate(&self) -> Result<(), CollectError> {
        MqttConfig::validate(self)
    }
    fn run(&self, sink: &mut Sink, stop: &AtomicBool) -> Result<(), CollectError> {
        let source = format!("mqtt://{}", self.broker);
        subscribe(self, stop, &mut |topic, payload| {
            let parsed = self.parse(topic, payload, now_ms());
            sink.offer(&format!("{source}/{topic}"), payload, parsed)
        })
    }
}

/// Connects as `cfg` says, subscribes to its topic filters and hands every message (topic,
/// payload) to `handle` until `stop` is set; reconnects with backoff. The CCTV collector's
/// Frigate mode uses it too.
pub fn subscribe(
    cfg: &MqttConfig,
    stop: &AtomicBool,
    handle: &mut Handler<'_>,
) -> Result<(), CollectError> {
    let (host, port) = cfg.host_port().map_err(|why| CollectError::Config {
        collector: cfg.name.clone(),
        why,
    })?;
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("streamgauge-{}", cfg.name));
    let transport = if cfg.tls {
        match &cfg.ca_file {
            Some(ca) => {
                rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::SimpleNative {
                    ca: std::fs::read(ca).map_err(|e| CollectError::Config {
                        collector: cfg.name.clone(),
                        why: format!("ca_file {}: {e}", ca.display()),
                    })?,
                    client_auth: None,
                })
            }
            None => rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Native),
        }
    } else {
        rumqttc::Transport::tcp()
    };
    let tick = Duration::from_millis(200);
    if cfg.version == 5 {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::mqttbytes::QoS;
        let mut opts = rumqttc::v5::MqttOptions::new(client_id, host, port);
        opts.set_keep_alive(Duration::from_secs(15));
        opts.set_transport(transport);
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            opts.set_credentials(u.clone(), p.clone());
        }
        if cfg.qos == 1 {
            // A persistent session: the broker keeps QoS 1 messages while we are away.
            opts.set_clean_start(false);
            opts.set_session_expiry_interval(Some(SESSION_EXPIRY_S));
        }
        let (client, mut conn) = rumqttc::v5::Client::new(opts, 1024);
        let qos = if cfg.qos == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        pump(
            cfg,
            stop,
            || match conn.recv_timeout(tick) {
                Err(_) => Ok(Message::Other),
                Ok(Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p)))) => Ok(Message::Publish(
                    String::from_utf8_lossy(&p.topic).into_owned(),
                    p.payload.to_vec(),
                )),
                Ok(Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(_)))) => Ok(Message::Connected),
                Ok(Ok(_)) => Ok(Message::Other),
                Ok(Err(e)) => Err(e.to_string()),
            },
            |t| client.subscribe(t, qos).map_err(|e| e.to_string()),
            handle,
        )?;
        let _ = client.disconnect();
    } else {
        use rumqttc::{Event, Packet, QoS};
        let mut opts = rumqttc::MqttOptions::new(client_id, host, port);
        opts.set_keep_alive(Duration::from_secs(15));
        opts.set_transport(transport);
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            opts.set_credentials(u.clone(), p.clone());
        }
        if cfg.qos == 1 {
            // A persistent session: the broker keeps QoS 1 messages while we are away.
            opts.set_clean_session(false);
        }
        let (client, mut conn) = rumqttc::Client::new(opts, 1024);
        let qos = if cfg.qos == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        pump(
            cfg,
            stop,
            || match conn.recv_timeout(tick) {
                Err(_) => Ok(Message::Other),
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    Ok(Message::Publish(p.topic.clone(), p.payload.to_vec()))
                }
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Ok(Message::Connected),
                Ok(Ok(_)) => Ok(Message::Other),
                Ok(Err(e)) => Err(e.to_string()),
            },
            |t| client.subscribe(t, qos).map_err(|e| e.to_string()),
            handle,
        )?;
        let _ = client.disconnect();
    }
    Ok(())
}

/// What a message goes to: topic and payload.
pub type Handler<'a> = dyn FnMut(&str, &[u8]) -> Result<(), CollectError> + 'a;

/// The receive loop both protocol versions share: hands publishes to `handle`, subscribes
/// again on every (re)connection, backs off after a failed connection.
fn pump(
    cfg: &MqttConfig,
    stop: &AtomicBool,
    mut recv: impl FnMut() -> Result<Message, String>,
    subscribe: impl Fn(String) -> Result<(), String>,
    handle: &mut Handler<'_>,
) -> Result<(), CollectError> {
    let mut backoff = Backoff::default();
    while !stop.load(Ordering::Relaxed) {
        match recv() {
            Ok(Message::Publish(t, p)) => handle(&t, &p)?,
            Ok(Message::Connected) => {
                backoff.reset();
                for t in &cfg.topics {
                    subscribe(t.clone()).map_err(|why| CollectError::Source {
                        collector: cfg.name.clone(),
                        why,
                    })?;
                }
                tracing::info!(collector = %cfg.name, broker = %cfg.broker, version = cfg.version, "MQTT connected, subscribed");
            }
            Ok(Message::Other) => {}
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!(collector = %cfg.name, error = %e, retry_in = ?wait, "MQTT connection failed");
                sleep_unless(stop, wait);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> MqttConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn json_payloads_map_by_config_and_bare_numbers_take_the_topic() {
        let c = cfg(r#"
            broker = "127.0.0.1:1883"
            topics = ["plant/#"]
            kafka_topic = "readings"
            series_field = "device.id"
            time_field = "ts"
            units = { temperature = "F" }
        "#);
        c.validate().unwrap();
        let got = c
            .parse("plant/a", br#"{"device":{"id":"boiler-1"},"ts":"2024-05-01T12:00:00+02:00","temperature":98.6,"rssi":-70,"note":"x"}"#, 5)
            .unwrap();
        assert_eq!(got.series.as_deref(), Some("boiler-1"));
        assert_eq!(
            got.time,
            Some(RawTime::Text("2024-05-01T12:00:00+02:00".into()))
        );
        let names: Vec<&str> = got.values.iter().map(|v| v.0.as_str()).collect();
        assert_eq!(names, ["rssi", "temperature"]);
        assert_eq!(got.values[1].2.as_deref(), Some("F"));

        let n = cfg(r#"
            broker = "localhost:1883"
            topics = ["sensors/+/temp"]
            kafka_topic = "readings"
            payload = "number"
        "#);
        let got = n.parse("sensors/k1/temp", b" 21.5\n", 1234).unwrap();
        assert_eq!(got.series.as_deref(), Some("sensors/k1/temp"));
        assert_eq!(got.time, Some(RawTime::Received(1234)));
        assert_eq!(got.values[0].1, RawValue::Number(21.5));
        assert!(c
            .parse("t", b"{not json", 0)
            .unwrap_err()
            .starts_with("not JSON"));
        assert!(c
            .parse("t", b"[1,2]", 0)
            .unwrap_err()
            .contains("not an object"));
    }

    #[test]
    fn bad_configs_say_what_to_fix() {
        let e = cfg(r#"
            broker = "nohost"
            topics = ["a"]
            kafka_topic = "r"
        "#)
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("host:port"), "{e}");
        let e = cfg(r#"
            broker = "h:1"
            topics = ["a"]
            kafka_topic = "r"
            qos = 2
        "#)
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("use 0 or 1"), "{e}");
        assert!(toml::from_str::<MqttConfig>(
            "broker = \"h:1\"\ntopics=[]\nkafka_topic=\"r\"\ncolour = 1"
        )
        .unwrap_err()
        .to_string()
        .contains("colour"));
    }
}
