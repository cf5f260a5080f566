//! The OPC UA collector (SCADA): subscribes to monitored items (node ids) on an OPC UA server
//! and turns every data-change notification into a reading, stamped with the value's source
//! timestamp (else the server's, else the time of receipt).
//!
//! The client is our own, over `std::net::TcpStream`, speaking OPC UA Binary (Part 6): Hello /
//! Acknowledge, OpenSecureChannel with security policy None, CreateSession and ActivateSession
//! with an anonymous identity token, CreateSubscription, CreateMonitoredItems (attribute
//! Value, reporting), then Publish requests kept in flight, each response acknowledged by the
//! next request. What it does not do: signing or encryption (policies other than None),
//! user-name or certificate identities, events (only data changes), multi-chunk requests
//! (responses may be chunked).
//!
//! Each monitored item maps to one value of one series. A numeric scalar (Boolean, integer of
//! any width, Float, Double) is the value; anything else (a String, an array) is quarantined
//! as not a number; a value whose status is not Good is quarantined with its status code. An
//! item the server refuses (unknown node id, say) is a source error, once per session. A
//! broken connection is a source error; the collector reconnects with backoff (0.5 s doubling
//! to 30 s) and creates a new session and subscription.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::clean::{Candidate, CleanConfig, RawTime, RawValue};
use super::{now_ms, sleep_unless, Backoff, CollectError, Collector, Sink};
use crate::duration::HumanDuration;

/// One monitored item.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Node id in the standard text form: `ns=2;s=Boiler.Temperature`, `ns=3;i=1001`, `i=2258`.
    pub node: String,
    /// Series id of the reading.
    pub series: String,
    /// Value name within the reading (default `value`).
    #[serde(default = "default_value_name")]
    pub name: String,
    /// Unit the value is in (converted to `clean.units` if that differs).
    pub unit: Option<String>,
}

fn default_value_name() -> String {
    "value".into()
}

/// One OPC UA collector's config (an `[[opcua]]` table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaConfig {
    /// Name in logs, counters and quarantine sources.
    #[serde(default = "default_name")]
    pub name: String,
    /// Endpoint URL, `opc.tcp://host:port/path`.
    pub endpoint: String,
    /// How often the server sends notifications (default 500 ms).
    #[serde(default = "default_publishing")]
    pub publishing_interval: HumanDuration,
    /// How often the server samples each item (default 100 ms).
    #[serde(default = "default_sampling")]
    pub sampling_interval: HumanDuration,
    /// Values the server queues per item between notifications (default 10).
    #[serde(default = "default_queue")]
    pub queue_size: u32,
    /// Policy id of the anonymous identity token (default `anonymous`).
    #[serde(default = "default_policy")]
    pub anonymous_policy_id: String,
    /// Longest wait for a connection or an answer (default 10 s).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// The monitored items.
    pub items: Vec<Item>,
    /// Kafka topic the readings go to.
    pub kafka_topic: String,
    /// Tags added to every reading.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Cleaning rules.
    #[serde(default)]
    pub clean: CleanConfig,
}

fn default_name() -> String {
    "opcua".into()
}
fn default_publishing() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_sampling() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_queue() -> u32 {
    10
}
fn default_policy() -> String {
    "anonymous".into()
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// A node id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeId {
    /// Numeric identifier.
    Numeric(u16, u32),
    /// String identifier.
    Text(u16, String),
}

impl std::str::FromStr for NodeId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ns, id) = match s.split_once(';') {
            Some((n, rest)) => {
                let ns = n
                    .strip_prefix("ns=")
                    .and_then(|v| v.parse::<u16>().ok())
                    .ok_or_else(|| format!("node {s:?}: expected ns=N;..."))?;
                (ns, rest)
            }
            None => (0, s),
        };
        if let Some(i) = id.strip_prefix("i=") {
            i.parse()
                .map(|i| NodeId::Numeric(ns, i))
                .map_err(|_| format!("node {s:?}: i= takes a number"))
        } else if let Some(t) = id.strip_prefix("s=") {
            Ok(NodeId::Text(ns, t.to_string()))
        } else {
            Err(format!(
                "node {s:?}: use ns=N;i=NUMBER or ns=N;s=NAME (GUID and opaque ids are not supported)"
            ))
        }
    }
}

/// Binary encoding of OPC UA built-in types (little-endian).
struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn f64(&mut self, v: f64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.i32(-1),
            Some(s) => {
                self.i32(s.len() as i32);
                self.0.extend_from_slice(s.as_bytes());
                self
            }
        }
    }
    fn bytes(&mut self, b: Option<&[u8]>) -> &mut Self {
        match b {
            None => self.i32(-1),
            Some(b) => {
                self.i32(b.len() as i32);
                self.0.extend_from_slice(b);
                self
            }
        }
    }
    fn node(&mut self, n: &NodeId) -> &mut Self {
        match n {
            NodeId::Numeric(0, i) if *i < 256 => self.u8(0).u8(*i as u8),
            NodeId::Numeric(ns, i) if *ns < 256 && *i < 65536 => {
                self.u8(1).u8(*ns as u8).u16(*i as u16)
            }
            NodeId::Numeric(ns, i) => self.u8(2).u16(*ns).u32(*i),
            NodeId::Text(ns, s) => self.u8(3).u16(*ns).string(Some(s)),
        }
    }
    /// A type id of namespace 0 (the encoding ids of services).
    fn type_id(&mut self, id: u32) -> &mut Self {
        self.node(&NodeId::Numeric(0, id))
    }
    /// A null extension object.
    fn null_ext(&mut self) -> &mut Self {
        self.u8(0).u8(0).u8(0)
    }
    fn request_header(&mut self, token: &NodeId, handle: u32, timeout_ms: u32) -> &mut Self {
        self.node(token)
            .i64(now_ticks())
            .u32(handle)
            .u32(0)
            .string(None)
            .u32(timeout_ms)
            .null_ext()
    }
}

/// Milliseconds between 1601-01-01 (OPC UA's epoch) and 1970-01-01.
const EPOCH_DIFF_MS: i64 = 11_644_473_600_000;

fn now_ticks() -> i64 {
    (now_ms() + EPOCH_DIFF_MS) * 10_000
}

/// A DateTime (100 ns ticks since 1601) as Unix milliseconds (None: the null time).
pub fn ticks_to_ms(t: i64) -> Option<i64> {
    (t > 0 && t < i64::MAX).then(|| t / 10_000 - EPOCH_DIFF_MS)
}

/// Decoding of OPC UA built-in types.
struct Dec<'a> {
    b: &'a [u8],
    at: usize,
}

type DecResult<T> = Result<T, String>;

impl<'a> Dec<'a> {
    fn new(b: &'a [u8]) -> Self {
        Dec { b, at: 0 }
    }
    fn take(&mut self, n: usize) -> DecResult<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| format!("message ends early (need {n} bytes at {})", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> DecResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> DecResult<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or([0; 2]),
        ))
    }
    fn u32(&mut self) -> DecResult<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn i32(&mut self) -> DecResult<i32> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> DecResult<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn i64(&mut self) -> DecResult<i64> {
        Ok(self.u64()? as i64)
    }
    fn f32(&mut self) -> DecResult<f32> {
        Ok(f32::from_bits(self.u32()?))
    }
    fn f64(&mut self) -> DecResult<f64> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn bytes(&mut self) -> DecResult<Option<&'a [u8]>> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        self.take(n as usize).map(Some)
    }
    fn string(&mut self) -> DecResult<Option<String>> {
        Ok(self
            .bytes()?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }
    fn array_len(&mut self) -> DecResult<usize> {
        let n = self.i32()?;
        let n = n.max(0) as usize;
        if n > self.b.len() {
            return Err(format!(
                "array of {n} in a message of {} bytes",
                self.b.len()
            ));
        }
        Ok(n)
    }
    fn node(&mut self) -> DecResult<NodeId> {
        let enc = self.u8()?;
        let n = match enc & 0x3F {
            0 => NodeId::Numeric(0, self.u8()? as u32),
            1 => {
                let ns = self.u8()? as u16;
                NodeId::Numeric(ns, self.u16()? as u32)
            }
            2 => {
                let ns = self.u16()?;
                NodeId::Numeric(ns, self.u32()?)
            }
            3 => {
                let ns = self.u16()?;
                NodeId::Text(ns, self.string()?.unwrap_or_default())
            }
            4 => {
                let ns = self.u16()?;
                self.take(16)?;
                NodeId::Text(ns, "<guid>".into())
            }
            5 => {
                let ns = self.u16()?;
                self.bytes()?;
                NodeId::Text(ns, "<opaque>".into())
            }
            e => return Err(format!("node id encoding {e}")),
        };
        // Expanded node ids: namespace URI, server index.
        if enc & 0x80 != 0 {
            self.string()?;
        }
        if enc & 0x40 != 0 {
            self.u32()?;
        }
        Ok(n)
    }
    /// An extension object: its type id and body (if encoded as bytes).
    fn ext(&mut self) -> DecResult<(u32, Option<&'a [u8]>)> {
        let id = match self.node()? {
            NodeId::Numeric(_, i) => i,
            NodeId::Text(..) => 0,
        };
        match self.u8()? {
            0 => Ok((id, None)),
            1 => Ok((id, self.bytes()?)),
            2 => Ok((id, self.bytes()?)), // XML, kept as bytes
            e => Err(format!("extension object encoding {e}")),
        }
    }
    fn diagnostic_info(&mut self) -> DecResult<()> {
        let mask = self.u8()?;
        for bit in [0x01, 0x02, 0x04, 0x08] {
            if mask & bit != 0 {
                self.i32()?;
            }
        }
        if mask & 0x10 != 0 {
            self.string()?;
        }
        if mask & 0x20 != 0 {
            self.u32()?;
        }
        if mask & 0x40 != 0 {
            self.diagnostic_info()?;
        }
        Ok(())
    }
    /// A response header; returns the service result.
    fn response_header(&mut self) -> DecResult<u32> {
        self.i64()?;
        self.u32()?;
        let status = self.u32()?;
        self.diagnostic_info()?;
        for _ in 0..self.array_len()? {
            self.string()?;
        }
        self.ext()?;
        Ok(status)
    }
    /// A variant: a number if it is a numeric scalar, else what it is.
    fn variant(&mut self) -> DecResult<RawValue> {
        let enc = self.u8()?;
        let ty = enc & 0x3F;
        let array = enc & 0x80 != 0;
        let count = if array { self.array_len()? } else { 1 };
        let mut first = None;
        for _ in 0..count {
            let v = self.scalar(ty)?;
            first.get_or_insert(v);
        }
        if enc & 0x40 != 0 {
            for _ in 0..self.array_len()? {
                self.i32()?;
            }
        }
        if array {
            return Ok(RawValue::Other(format!("an array of {count}")));
        }
        Ok(first.unwrap_or(RawValue::Other("empty".into())))
    }
    fn scalar(&mut self, ty: u8) -> DecResult<RawValue> {
        use RawValue::{Number, Other};
        Ok(match ty {
            0 => Other("null".into()),
            1 => Number(self.u8()? as f64),
            2 => Number(self.u8()? as i8 as f64),
            3 => Number(self.u8()? as f64),
            4 => Number(self.u16()? as i16 as f64),
            5 => Number(self.u16()? as f64),
            6 => Number(self.i32()? as f64),
            7 => Number(self.u32()? as f64),
            8 => Number(self.i64()? as f64),
            9 => Number(self.u64()? as f64),
            10 => Number(self.f32()? as f64),
            11 => Number(self.f64()?),
            12 => Other(format!("a String {:?}", self.string()?.unwrap_or_default())),
            13 => Other(format!("a DateTime {}", self.i64()?)),
            14 => {
                self.take(16)?;
                Other("a Guid".into())
            }
            15 | 16 => {
                self.bytes()?;
                Other("a ByteString".into())
            }
            19 => Other(format!("a StatusCode 0x{:08X}", self.u32()?)),
            t => return Err(format!("variant type {t} is not supported")),
        })
    }
}

/// A decoded data value.
#[derive(Debug, Clone, PartialEq)]
pub struct DataValue {
    /// The value.
    pub value: RawValue,
    /// Its status code (0 = Good).
    pub status: u32,
    /// Source timestamp, Unix ms.
    pub source_ms: Option<i64>,
    /// Server timestamp, Unix ms.
    pub server_ms: Option<i64>,
}

impl Dec<'_> {
    fn data_value(&mut self) -> DecResult<DataValue> {
        let mask = self.u8()?;
        let value = if mask & 0x01 != 0 {
            self.variant()?
        } else {
            RawValue::Other("no value".into())
        };
        let status = if mask & 0x02 != 0 { self.u32()? } else { 0 };
        let source_ms = if mask & 0x04 != 0 {
            ticks_to_ms(self.i64()?)
        } else {
            None
        };
        if mask & 0x10 != 0 {
            self.u16()?;
        }
        let server_ms = if mask & 0x08 != 0 {
            ticks_to_ms(self.i64()?)
        } else {
            None
        };
        if mask & 0x20 != 0 {
            self.u16()?;
        }
        Ok(DataValue {
            value,
            status,
            source_ms,
            server_ms,
        })
    }
}

// Encoding ids (namespace 0) of the services used.
const OPEN_REQ: u32 = 446;
const OPEN_RESP: u32 = 449;
const CREATE_SESSION_REQ: u32 = 461;
const CREATE_SESSION_RESP: u32 = 464;
const ACTIVATE_REQ: u32 = 467;
const ACTIVATE_RESP: u32 = 470;
const CLOSE_SESSION_REQ: u32 = 473;
const ANONYMOUS_TOKEN: u32 = 321;
const SERVICE_FAULT: u32 = 397;
const CREATE_SUB_REQ: u32 = 787;
const CREATE_SUB_RESP: u32 = 790;
const CREATE_ITEMS_REQ: u32 = 751;
const CREATE_ITEMS_RESP: u32 = 754;
const PUBLISH_REQ: u32 = 826;
const PUBLISH_RESP: u32 = 829;
const DATA_CHANGE: u32 = 811;

const POLICY_NONE: &str = "http://opcfoundation.org/UA/SecurityPolicy#None";

/// Why the session failed.
#[derive(Debug, thiserror::Error)]
pub enum UaError {
    /// The connection failed or timed out.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server answered with an error.
    #[error("{0}")]
    Server(String),
    /// The answer does not follow the protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
}

fn status_name(code: u32) -> String {
    let name = match code & 0xFFFF_0000 {
        0x8034_0000 => "BadNodeIdUnknown",
        0x8033_0000 => "BadNodeIdInvalid",
        0x8035_0000 => "BadAttributeIdInvalid",
        0x8002_0000 => "BadInternalError",
        0x8025_0000 => "BadSessionIdInvalid",
        0x8026_0000 => "BadSessionClosed",
        0x8028_0000 => "BadSubscriptionIdInvalid",
        0x8079_0000 => "BadNoSubscription",
        0x800A_0000 => "BadTimeout",
        0x801F_0000 => "BadIdentityTokenInvalid",
        0x8020_0000 => "BadIdentityTokenRejected",
        0x8008_0000 => "BadNotReadable",
        0x808A_0000 => "BadWaitingForInitialData",
        0x8031_0000 => "BadNoCommunication",
        0x8032_0000 => "BadOutOfService",
        _ if code & 0xC000_0000 == 0x4000_0000 => "Uncertain",
        _ => "Bad",
    };
    format!("{name} (0x{code:08X})")
}

/// A message: its type (`ACK`, `OPN`, `MSG` ...) and body.
type Msg = ([u8; 3], Vec<u8>);
/// A frame: message type, chunk type (`F`, `C`, `A`), body after the header.
type Frame = ([u8; 3], u8, Vec<u8>);

/// An OPC UA session over one connection.
struct Session {
    stream: TcpStream,
    channel: u32,
    token: u32,
    seq: u32,
    request: u32,
    auth: NodeId,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Session {
    fn connect(endpoint: &str, timeout: Duration, policy: &str) -> Result<Session, UaError> {
        let hostport = endpoint
            .strip_prefix("opc.tcp://")
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| UaError::Server(format!("endpoint {endpoint:?}: not opc.tcp://")))?;
        let addr = hostport
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| UaError::Server(format!("{hostport}: resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut s = Session {
            stream,
            channel: 0,
            token: 0,
            seq: 0,
            request: 0,
            auth: NodeId::Numeric(0, 0),
            buf: Vec::new(),
            timeout,
        };
        // Hello.
        let mut hel = Enc(Vec::new());
        hel.u32(0)
            .u32(1 << 16)
            .u32(1 << 16)
            .u32(0)
            .u32(0)
            .string(Some(endpoint));
        s.send_raw(b"HEL", &hel.0)?;
        let (kind, _) = s.recv_blocking()?;
        if &kind != b"ACK" {
            return Err(UaError::Malformed("expected ACK".into()));
        }
        // OpenSecureChannel, policy None.
        let mut body = Enc(Vec::new());
        body.type_id(OPEN_REQ)
            .request_header(&NodeId::Numeric(0, 0), 1, 10_000)
            .u32(0)
            .u32(0) // Issue
            .u32(1) // MessageSecurityMode None
            .bytes(Some(&[]))
            .u32(3_600_000);
        let mut msg = Enc(Vec::new());
        msg.u32(0).string(Some(POLICY_NONE)).bytes(None).bytes(None);
        s.seq += 1;
        s.request += 1;
        msg.u32(s.seq).u32(s.request);
        msg.0.extend_from_slice(&body.0);
        s.send_raw(b"OPN", &msg.0)?;
        let (kind, resp) = s.recv_blocking()?;
        if &kind != b"OPN" {
            return Err(UaError::Malformed("expected OPN".into()));
        }
        let mut d = Dec::new(&resp);
        let channel = d.u32().map_err(UaError::Malformed)?;
        d.string().map_err(UaError::Malformed)?;
        d.bytes().map_err(UaError::Malformed)?;
        d.bytes().map_err(UaError::Malformed)?;
        d.u32().map_err(UaError::Malformed)?;
        d.u32().map_err(UaError::Malformed)?;
        expect_type(&mut d, OPEN_RESP)?;
        service_ok(&mut d)?;
        d.u32().map_err(UaError::Malformed)?;
        s.channel = d.u32().map_err(UaError::Malformed)?;
        s.token = d.u32().map_err(UaError::Malformed)?;
        let _ = channel;
        // CreateSession.
        let mut b = Enc(Vec::new());
        b.type_id(CREATE_SESSION_REQ);
        s.header(&mut b);
        b.string(Some("urn:streamgauge:collector"))
            .string(Some("urn:streamgauge"))
            .u8(2)
            .string(Some("streamgauge"))
            .u32(1) // Client
            .string(None)
            .string(None)
            .i32(0)
            .string(None)
            .string(Some(endpoint))
            .string(Some("streamgauge"))
            .bytes(Some(&[7u8; 32]))
            .bytes(None)
            .f64(600_000.0)
            .u32(0);
        let resp = s.call(&b.0)?;
        let mut d = Dec::new(&resp);
        expect_type(&mut d, CREATE_SESSION_RESP)?;
        service_ok(&mut d)?;
        d.node().map_err(UaError::Malformed)?;
        s.auth = d.node().map_err(UaError::Malformed)?;
        // ActivateSession, anonymous.
        let mut tok = Enc(Vec::new());
        tok.string(Some(policy));
        let mut b = Enc(Vec::new());
        b.type_id(ACTIVATE_REQ);
        s.header(&mut b);
        b.string(None)
            .bytes(None)
            .i32(0)
            .i32(0)
            .type_id(ANONYMOUS_TOKEN)
            .u8(1)
            .bytes(Some(&tok.0))
            .string(None)
            .bytes(None);
        let resp = s.call(&b.0)?;
        let mut d = Dec::new(&resp);
        expect_type(&mut d, ACTIVATE_RESP)?;
        service_ok(&mut d)?;
        Ok(s)
    }

    fn header(&mut self, b: &mut Enc) {
        self.request += 1;
        let (auth, handle, t) = (self.auth.clone(), self.request, self.timeout.as_millis());
        b.request_header(&auth, handle, t as u32);
    }

    fn send_raw(&mut self, kind: &[u8; 3], body: &[u8]) -> Result<(), UaError> {
        let mut m = Vec::with_capacity(body.len() + 8);
        m.extend_from_slice(kind);
        m.push(b'F');
        m.extend_from_slice(&((body.len() + 8) as u32).to_le_bytes());
        m.extend_from_slice(body);
        self.stream.write_all(&m)?;
        Ok(())
    }

    /// Sends a service request (body starting with its type id) in one MSG chunk.
    fn send(&mut self, body: &[u8]) -> Result<(), UaError> {
        self.seq += 1;
        let mut m = Enc(Vec::with_capacity(body.len() + 16));
        m.u32(self.channel)
            .u32(self.token)
            .u32(self.seq)
            .u32(self.request);
        m.0.extend_from_slice(body);
        self.send_raw(b"MSG", &m.0)
    }

    /// The next whole message if one has arrived by the read tick: its type and body (for
    /// MSG, the body after the security and sequence headers, chunks joined).
    fn recv(&mut self) -> Result<Option<Msg>, UaError> {
        let mut joined: Option<Vec<u8>> = None;
        loop {
            if let Some((kind, chunk, body)) = self.take_frame()? {
                if &kind == b"ERR" {
                    let mut d = Dec::new(&body);
                    let code = d.u32().unwrap_or(0);
                    let why = d.string().ok().flatten().unwrap_or_default();
                    return Err(UaError::Server(format!("{} {why}", status_name(code))));
                }
                if &kind != b"MSG" {
                    return Ok(Some((kind, body)));
                }
                // channel, token, sequence number, request id
                let payload = body.get(16..).unwrap_or_default();
                let j = joined.get_or_insert_with(Vec::new);
                j.extend_from_slice(payload);
                match chunk {
                    b'C' => continue,
                    b'A' => return Err(UaError::Server("the server aborted a message".into())),
                    _ => return Ok(Some((kind, joined.take().unwrap_or_default()))),
                }
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    return Err(UaError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )))
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if joined.is_none() {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One frame from the buffer, if whole: type, chunk type, body after the 8-byte header.
    fn take_frame(&mut self) -> Result<Option<Frame>, UaError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let size =
            u32::from_le_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if !(8..=(64 << 20)).contains(&size) {
            return Err(UaError::Malformed(format!("message size {size}")));
        }
        if self.buf.len() < size {
            return Ok(None);
        }
        let kind = [self.buf[0], self.buf[1], self.buf[2]];
        let chunk = self.buf[3];
        let body = self.buf[8..size].to_vec();
        self.buf.drain(..size);
        Ok(Some((kind, chunk, body)))
    }

    fn recv_blocking(&mut self) -> Result<Msg, UaError> {
        let until = Instant::now() + self.timeout;
        loop {
            if let Some(m) = self.recv()? {
                return Ok(m);
            }
            if Instant::now() > until {
                return Err(UaError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer",
                )));
            }
        }
    }

    /// Sends a request and waits for its response (no publishes are in flight yet).
    fn call(&mut self, body: &[u8]) -> Result<Vec<u8>, UaError> {
        self.send(body)?;
        let (_, resp) = self.recv_blocking()?;
        Ok(resp)
    }

    fn publish(&mut self, acks: &[(u32, u32)]) -> Result<(), UaError> {
        let mut b = Enc(Vec::new());
        b.type_id(PUBLISH_REQ);
        // A publish waits for data: its timeout hint must outlast the keep-alive.
        self.request += 1;
        let (auth, handle) = (self.auth.clone(), self.request);
        b.request_header(&auth, handle, 0);
        b.i32(acks.len() as i32);
        for (sub, seq) in acks {
            b.u32(*sub).u32(*seq);
        }
        self.send(&b.0)
    }

    fn close(mut self) {
        let mut b = Enc(Vec::new());
        b.type_id(CLOSE_SESSION_REQ);
        self.header(&mut b);
        b.u8(1);
        let _ = self.send(&b.0);
        let _ = self.send_raw(b"CLO", &{
            let mut m = Enc(Vec::new());
            m.u32(self.channel)
                .u32(self.token)
                .u32(self.seq + 1)
                .u32(self.request + 1);
            m.0
        });
    }
}

fn expect_type(d: &mut Dec<'_>, want: u32) -> Result<(), UaError> {
    match d.node().map_err(UaError::Malformed)? {
        NodeId::Numeric(0, id) if id == want => Ok(()),
        NodeId::Numeric(0, SERVICE_FAULT) => {
            let status = d.response_header().map_err(UaError::Malformed)?;
            Err(UaError::Server(format!(
                "service fault {}",
                status_name(status)
            )))
        }
        other => Err(UaError::Malformed(format!(
            "expected response type {want}, got {other:?}"
        ))),
    }
}

fn service_ok(d: &mut Dec<'_>) -> Result<(), UaError> {
    let status = d.response_header().map_err(UaError::Malformed)?;
    if status & 0x8000_0000 != 0 {
        return Err(UaError::Server(status_name(status)));
    }
    Ok(())
}

/// How many Publish requests are kept in flight.
const PUBLISHES_IN_FLIGHT: usize = 3;

impl OpcUaConfig {
    fn nodes(&self) -> Result<Vec<NodeId>, String> {
        self.items.iter().map(|i| i.node.parse()).collect()
    }

    fn candidate(&self, item: &Item, dv: &DataValue, received: i64) -> Result<Candidate, String> {
        if dv.status & 0x8000_0000 != 0 || dv.status & 0x4000_0000 != 0 {
            return Err(format!("value status {}", status_name(dv.status)));
        }
        let time = match dv.source_ms.or(dv.server_ms) {
            Some(ms) => RawTime::Millis(ms),
            None => RawTime::Received(received),
        };
        Ok(Candidate {
            series: Some(item.series.clone()),
            time: Some(time),
            values: vec![(item.name.clone(), dv.value.clone(), item.unit.clone())],
            tags: self
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// One session: subscribe, then hand notifications to `sink` until `stop` or a failure.
    fn session(&self, sink: &mut Sink, stop: &AtomicBool) -> Result<(), UaError> {
        let nodes = self.nodes().map_err(UaError::Server)?;
        let mut s = Session::connect(&self.endpoint, self.timeout.0, &self.anonymous_policy_id)?;
        tracing::info!(collector = %self.name, endpoint = %self.endpoint, "OPC UA session active");
        // Subscription.
        let publishing_ms = self.publishing_interval.0.as_secs_f64() * 1000.0;
        let keep_alive = ((10_000.0 / publishing_ms).ceil() as u32).max(1);
        let mut b = Enc(Vec::new());
        b.type_id(CREATE_SUB_REQ);
        s.header(&mut b);
        b.f64(publishing_ms)
            .u32(keep_alive * 3)
            .u32(keep_alive)
            .u32(0)
            .u8(1)
            .u8(0);
        let resp = s.call(&b.0)?;
        let mut d = Dec::new(&resp);
        expect_type(&mut d, CREATE_SUB_RESP)?;
        service_ok(&mut d)?;
        let sub = d.u32().map_err(UaError::Malformed)?;
        // Monitored items, client handle = index into the item list.
        let mut b = Enc(Vec::new());
        b.type_id(CREATE_ITEMS_REQ);
        s.header(&mut b);
        b.u32(sub).u32(2).i32(nodes.len() as i32);
        for (i, n) in nodes.iter().enumerate() {
            b.node(n)
                .u32(13)
                .string(None)
                .u16(0)
                .string(None)
                .u32(2)
                .u32(i as u32)
                .f64(self.sampling_interval.0.as_secs_f64() * 1000.0)
                .null_ext()
                .u32(self.queue_size)
                .u8(1);
        }
        let resp = s.call(&b.0)?;
        let mut d = Dec::new(&resp);
        expect_type(&mut d, CREATE_ITEMS_RESP)?;
        service_ok(&mut d)?;
        let n = d.array_len().map_err(UaError::Malformed)?;
        let mut refused = Vec::new();
        for i in 0..n {
            let status = d.u32().map_err(UaError::Malformed)?;
            d.u32().map_err(UaError::Malformed)?;
            d.f64().map_err(UaError::Malformed)?;
            d.u32().map_err(UaError::Malformed)?;
            d.ext().map_err(UaError::Malformed)?;
            if status & 0x8000_0000 != 0 {
                refused.push((i, status));
            }
        }
        let source = self.endpoint.clone();
        for (i, status) in refused {
            let item = &self.items[i];
            let why = format!(
                "monitored item {} refused: {}",
                item.node,
                status_name(status)
            );
            sink.source_failed(&format!("{source}#{}", item.node), &why)
                .map_err(|e| UaError::Server(e.to_string()))?;
        }
        for _ in 0..PUBLISHES_IN_FLIGHT {
            s.publish(&[])?;
        }
        let mut quiet_since = Instant::now();
        // Keep-alives come every keep_alive publishing intervals; twice that and more is dead.
        let dead_after = Duration::from_secs_f64(publishing_ms * keep_alive as f64 * 2.0 / 1000.0)
            + self.timeout.0;
        while !stop.load(Ordering::Relaxed) {
            let Some((_, resp)) = s.recv()? else {
                if quiet_since.elapsed() > dead_after {
                    return Err(UaError::Server("no publish response or keep-alive".into()));
                }
                continue;
            };
            quiet_since = Instant::now();
            let received = now_ms();
            let mut d = Dec::new(&resp);
            expect_type(&mut d, PUBLISH_RESP)?;
            service_ok(&mut d)?;
            let m = |e: String| UaError::Malformed(e);
            let sub_id = d.u32().map_err(m)?;
            for _ in 0..d.array_len().map_err(m)? {
                d.u32().map_err(m)?;
            }
            d.u8().map_err(m)?; // more notifications
            let seq = d.u32().map_err(m)?;
            d.i64().map_err(m)?;
            let notes = d.array_len().map_err(m)?;
            for _ in 0..notes {
                let (ty, body) = d.ext().map_err(m)?;
                if ty != DATA_CHANGE {
                    continue;
                }
                let Some(body) = body else { continue };
                let mut n = Dec::new(body);
                for _ in 0..n.array_len().map_err(m)? {
                    let handle = n.u32().map_err(m)? as usize;
                    let dv = n.data_value().map_err(m)?;
                    let Some(item) = self.items.get(handle) else {
                        continue;
                    };
                    let payload = format!("{dv:?}");
                    sink.offer(
                        &format!("{source}#{}", item.node),
                        payload.as_bytes(),
                        self.candidate(item, &dv, received),
                    )
                    .map_err(|e| UaError::Server(e.to_string()))?;
                }
            }
            // A keep-alive has no notifications and nothing to acknowledge.
            let acks = if notes > 0 {
                vec![(sub_id, seq)]
            } else {
                vec![]
            };
            s.publish(&acks)?;
        }
        s.close();
        Ok(())
    }
}

impl Collector for OpcUaConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "opcua"
    }
    fn kafka_topic(&self) -> &str {
        &self.kafka_topic
    }
    fn clean(&self) -> &CleanConfig {
        &self.clean
    }

    fn validate(&self) -> Result<(), CollectError> {
        let bad = |why: String| CollectError::Config {
            collector: self.name.clone(),
            why,
        };
        let Some(rest) = self.endpoint.strip_prefix("opc.tcp://") else {
            return Err(bad(format!(
                "endpoint = {:?}: expected opc.tcp://host:port/path",
                self.endpoint
            )));
        };
        super::host_port(rest.split('/').next().unwrap_or(""))
            .map_err(|e| bad(format!("endpoint: {e}")))?;
        if self.items.is_empty() {
            return Err(bad("items: monitor at least one node".into()));
        }
        self.nodes().map_err(bad)?;
        if self.publishing_interval.0 < Duration::from_millis(10) {
            return Err(bad("publishing_interval: at least 10ms".into()));
        }
        Ok(())
    }

    fn run(&self, sink: &mut Sink, stop: &AtomicBool) -> Result<(), CollectError> {
        let mut backoff = Backoff::default();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match self.session(sink, stop) {
                Ok(()) => break,
                Err(e) => {
                    sink.source_failed(&self.endpoint, &format!("session failed: {e}"))?;
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff.reset();
                    }
                    sleep_unless(stop, backoff.next_wait());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_parse_and_encode_compactly() {
        let n: NodeId = "ns=2;s=Boiler.Temperature".parse().unwrap();
        assert_eq!(n, NodeId::Text(2, "Boiler.Temperature".into()));
        assert_eq!(
            "i=2258".parse::<NodeId>().unwrap(),
            NodeId::Numeric(0, 2258)
        );
        assert!("ns=x;i=1".parse::<NodeId>().is_err());
        assert!("ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a"
            .parse::<NodeId>()
            .unwrap_err()
            .contains("not supported"));
        for (n, bytes) in [
            (NodeId::Numeric(0, 5), vec![0u8, 5]),
            (NodeId::Numeric(2, 300), vec![1, 2, 44, 1]),
            (NodeId::Numeric(300, 70000), vec![2, 44, 1, 112, 17, 1, 0]),
        ] {
            let mut e = Enc(Vec::new());
            e.node(&n);
            assert_eq!(e.0, bytes);
            assert_eq!(Dec::new(&bytes).node().unwrap(), n);
        }
    }

    #[test]
    fn data_values_decode_with_timestamps_and_non_numbers_stay_visible() {
        // mask: value, status, source timestamp; Double 21.5.
        let ts = (1_704_067_200_000i64 + EPOCH_DIFF_MS) * 10_000;
        let mut e = Enc(Vec::new());
        e.u8(0x07).u8(11).f64(21.5).u32(0).i64(ts);
        let dv = Dec::new(&e.0).data_value().unwrap();
        assert_eq!(dv.value, RawValue::Number(21.5));
        assert_eq!(dv.source_ms, Some(1_704_067_200_000));
        let mut e = Enc(Vec::new());
        e.u8(0x01).u8(12).string(Some("running"));
        let dv = Dec::new(&e.0).data_value().unwrap();
        assert!(matches!(dv.value, RawValue::Other(ref w) if w.contains("String")));
        let mut e = Enc(Vec::new());
        e.u8(0x01).u8(0x80 | 6).i32(2).i32(1).i32(2);
        assert!(matches!(
            Dec::new(&e.0).data_value().unwrap().value,
            RawValue::Other(ref w) if w.contains("array")
        ));
        assert!(Dec::new(&[0x01, 6, 1]).data_value().is_err());
    }
}
