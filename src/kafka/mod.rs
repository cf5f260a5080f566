//! Kafka: client settings (every librdkafka property can be passed through), topic admin,
//! the keyed reading producer, the partition-owning source feed, and the embedded
//! development broker.

pub mod admin;
pub mod broker;
pub mod config;
pub mod producer;
pub mod source;

use thiserror::Error;

pub use config::ClientSettings;

/// Kafka failures that are not about one record.
#[derive(Debug, Error)]
pub enum KafkaError {
    /// librdkafka reported an error.
    #[error("{context}: {source}")]
    Client {
        /// What we were doing.
        context: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
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
    /// The embedded broker's listener.
    #[error("embedded broker: {0}")]
    Broker(String),
}

/// Wraps an rdkafka error with context.
pub fn client_err(
    context: impl Into<String>,
) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError {
    let context = context.into();
    move |source| KafkaError::Client { context, source }
}
