//! The embedded development broker: librdkafka's own Kafka-protocol broker (its mock
//! cluster), real Kafka wire protocol over TCP, in memory.
//!
//! It is for development, demos and tests: data lives in memory and is gone when the process
//! ends. Production points `--brokers` at a real Kafka cluster.
//!
//! The mock brokers listen on loopback ports librdkafka picks. `listen(addr)` adds a
//! bootstrap listener on a chosen address that forwards to them; clients then follow the
//! metadata to the brokers' own loopback ports, so clients must run on this machine.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::{client_err, KafkaError};

/// An in-process Kafka-protocol broker.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
}

impl EmbeddedBroker {
    /// Starts `brokers` mock brokers (1 is enough for everything but failover tests).
    pub fn start(brokers: i32) -> Result<Self, KafkaError> {
        let cluster = MockCluster::new(brokers).map_err(client_err("starting embedded broker"))?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(EmbeddedBroker { cluster, bootstrap })
    }

    /// `host:port` list to give clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (the embedded broker does not serve the CreateTopics API).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .map_err(client_err(format!("creating topic {topic}")))
    }

    /// Makes broker `id` the leader of a partition of an existing topic (so taking that broker
    /// down takes down that partition only).
    pub fn partition_leader(&self, topic: &str, partition: i32, id: i32) -> Result<(), KafkaError> {
        self.cluster
            .partition_leader(topic, partition, Some(id))
            .map_err(client_err(format!(
                "moving {topic}[{partition}] to broker {id}"
            )))
    }

    /// Takes a broker down (connections refused) until [`Self::broker_up`].
    pub fn broker_down(&self, id: i32) -> Result<(), KafkaError> {
        self.cluster
            .broker_down(id)
            .map_err(client_err("broker down"))
    }

    /// Brings a broker back, with its data.
    pub fn broker_up(&self, id: i32) -> Result<(), KafkaError> {
        self.cluster.broker_up(id).map_err(client_err("broker up"))
    }

    /// Accepts bootstrap connections on `addr` and forwards them to the first broker.
    /// Returns the bound address (useful with port 0).
    pub fn listen(&self, addr: &str) -> Result<String, KafkaError> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| KafkaError::Broker(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| KafkaError::Broker(e.to_string()))?
            .to_string();
        let target = self
            .bootstrap
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string();
        thread::Builder::new()
            .name("broker-listener".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(client) = conn else { continue };
                    let target = target.clone();
                    thread::spawn(move || {
                        if let Err(e) = forward(client, &target) {
                            tracing::debug!(error = %e, "bootstrap connection ended");
                        }
                    });
                }
            })
            .map_err(|e| KafkaError::Broker(e.to_string()))?;
        Ok(bound)
    }
}

fn forward(client: TcpStream, target: &str) -> std::io::Result<()> {
    let server = TcpStream::connect(target)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut c2, mut s2) = (client.try_clone()?, server.try_clone()?);
    let up = thread::spawn(move || {
        let _ = pump(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let (mut c, mut s) = (client, server);
    let _ = pump(&mut s, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

fn pump(from: &mut TcpStream, to: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}
