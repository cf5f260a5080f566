//! Kafka: client settings (every librdkafka property can be passed through), topic admin,
//! the keyed reading producer, the result producer (with the file of rows it could not
//! deliver), the partition-owning source feed, and the embedded development broker.

pub mod admin;
pub mod broker;
pub mod config;
pub mod producer;
pub mod results;
pub mod source;

use thiserror::Error;

pub use config::ClientSettings;

/// Kafka failures that are not about one record.
#[derive(Debug, Error)]
pub enum KafkaError {
    /// librdkafka reported an error. Its text is part of this message, so it is not also
    /// exposed as the `source` (an error chain printed with `{:#}` would repeat it).
    #[error("{context}: {error}")]
    Client {
        /// What we were doing.
        context: String,
        /// librdkafka's error.
        error: rdkafka::error::KafkaError,
    },
    /// A `-X key=value` setting is malformed.
    #[error("bad Kafka setting {0:?}: write it as key=value, e.g. -X security.protocol=SASL_SSL")]
    Setting(String),
    /// Topic creation failed.
    #[error("creating topic {topic}: {why}")]
    CreateTopic {
        /// Topic.
        topic: String,
        /// Broker's answer.
        why: String,
    },
    /// The collectors' disk spool (records waiting for the broker) failed.
    #[error("spool: {0}")]
    Spool(std::io::Error),
    /// The file of undelivered result rows could not be read or written.
    #[error("undelivered result rows {}: {source}", path.display())]
    Undelivered {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The embedded broker's listener.
    #[error("embedded broker: {0}")]
    Broker(String),
}

/// Wraps an rdkafka error with context.
pub fn client_err(
    context: impl Into<String>,
) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError {
    let context = context.into();
    move |error| KafkaError::Client { context, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_say_librdkafkas_reason_once() {
        let e = client_err("creating the consumer")(rdkafka::error::KafkaError::Canceled);
        let cause = rdkafka::error::KafkaError::Canceled.to_string();
        let text = e.to_string();
        assert!(text.starts_with("creating the consumer: "), "{text}");
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
        assert!(std::error::Error::source(&e).is_none());
    }
}
