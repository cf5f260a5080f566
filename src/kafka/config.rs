//! Kafka client settings: bootstrap servers plus any librdkafka property (`-X key=value`, or
//! a `[kafka]` table in the config file), so SASL/TLS, MSK, Confluent Cloud and Redpanda work
//! without code changes.

use rdkafka::ClientConfig;

use super::KafkaError;

/// Bootstrap servers and librdkafka property overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// librdkafka properties, applied after ours (so they win).
    pub overrides: Vec<(String, String)>,
}

impl ClientSettings {
    /// Settings for `brokers` with no overrides.
    pub fn new(brokers: impl Into<String>) -> Self {
        ClientSettings {
            brokers: brokers.into(),
            overrides: Vec::new(),
        }
    }

    /// Parses `key=value`.
    pub fn parse_override(s: &str) -> Result<(String, String), KafkaError> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(KafkaError::Setting(s.to_string())),
        }
    }

    /// A client config with our `defaults`, then the user's overrides.
    pub fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.overrides {
            c.set(k, v);
        }
        c
    }

    /// Producer settings: idempotent, acks=all, batched.
    pub fn producer_config(&self) -> ClientConfig {
        self.config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
        ])
    }

    /// Consumer settings: manual assignment, no commits (no end-of-partition events: the end is
    /// confirmed by reading, see `engine::watermark`).
    pub fn consumer_config(&self) -> ClientConfig {
        self.config(&[
            ("group.id", "streamgauge"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "50"),
            ("queued.min.messages", "200000"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_win() {
        assert_eq!(
            ClientSettings::parse_override("acks = 1").unwrap(),
            ("acks".into(), "1".into())
        );
        assert!(ClientSettings::parse_override("acks")
            .unwrap_err()
            .to_string()
            .contains("key=value"));
        let mut s = ClientSettings::new("b:9092");
        s.overrides.push(("acks".into(), "1".into()));
        assert_eq!(s.producer_config().get("acks"), Some("1"));
        assert_eq!(s.producer_config().get("bootstrap.servers"), Some("b:9092"));
    }
}
