//! Topic administration: create topics (tolerating ones that exist), read partition counts
//! and watermarks.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::{client_err, ClientSettings, KafkaError};

/// Creates `topic` with `partitions` partitions unless it exists. Brokers without the
/// CreateTopics API (the embedded one, reached from another process) auto-create topics on
/// first use; that case is logged, not an error.
pub fn ensure_topic(
    settings: &ClientSettings,
    topic: &str,
    partitions: i32,
) -> Result<(), KafkaError> {
    let probe: BaseConsumer = settings
        .consumer_config()
        .create()
        .map_err(client_err("consumer"))?;
    if !self::partitions(&probe, topic, Duration::from_secs(10))?.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = settings
        .config(&[])
        .create()
        .map_err(client_err("admin client"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)));
    let result = futures_executor::block_on(admin.create_topics([&new], &opts));
    match result {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, RDKafkaErrorCode::UnsupportedVersion))
                    | Err((_, RDKafkaErrorCode::InvalidRequest)) => {
                        tracing::warn!(
                            topic,
                            "broker cannot create topics; relying on auto-creation"
                        );
                    }
                    Err((t, code)) => {
                        return Err(KafkaError::CreateTopic {
                            topic: t,
                            why: code.to_string(),
                        })
                    }
                }
            }
            Ok(())
        }
        Err(rdkafka::error::KafkaError::AdminOp(
            RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::OperationTimedOut,
        )) => {
            tracing::warn!(
                topic,
                "broker did not create the topic (no CreateTopics API?); relying on auto-creation"
            );
            Ok(())
        }
        Err(e) => Err(KafkaError::CreateTopic {
            topic: topic.into(),
            why: e.to_string(),
        }),
    }
}

/// Partition ids of `topic` (empty when the topic does not exist).
pub fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(client_err(format!("metadata for {topic}")))?;
    let mut out = Vec::new();
    for t in md.topics() {
        if t.name() == topic && t.error().is_none() {
            out.extend(t.partitions().iter().map(|p| p.id()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Sum over partitions of (high - low) watermarks: the number of records in a topic.
pub fn count_records(settings: &ClientSettings, topic: &str) -> Result<i64, KafkaError> {
    let c: BaseConsumer = settings
        .consumer_config()
        .create()
        .map_err(client_err("consumer"))?;
    let mut total = 0;
    for p in partitions(&c, topic, Duration::from_secs(10))? {
        let (lo, hi) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(client_err("watermarks"))?;
        total += hi - lo;
    }
    Ok(total)
}
