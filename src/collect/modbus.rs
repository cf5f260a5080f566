//! The Modbus TCP collector (SCADA): polls holding and input registers of a device on a fixed
//! interval from a register map, decodes them (u16, i16, u32, i32, f32; word and byte order;
//! scale and offset; unit) and hands one [`Candidate`] per series and poll to the shared
//! cleaner, stamped with the time of the poll.
//!
//! The client is our own, over `std::net::TcpStream`: Modbus TCP is an MBAP header (transaction
//! id, protocol 0, length, unit id) before function 3 (read holding registers) or 4 (read input
//! registers). Registers of one table are read in as few requests as the map allows (at most
//! 125 registers each). A poll that fails (timeout, connection refused, an exception response,
//! a malformed answer) is recorded as a failure of the source, with its reason, in the
//! `source_errors` counter and the quarantine topic: never as a zero reading. A broken connection
//! is dropped and opened again with backoff (0.5 s doubling to 30 s).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::clean::{Candidate, CleanConfig, NamedValue, RawTime, RawValue};
use super::{now_ms, sleep_unless, Backoff, CollectError, Collector, Sink};
use crate::duration::HumanDuration;

/// A register table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Holding registers (function 3).
    #[default]
    Holding,
    /// Input registers (function 4).
    Input,
}

impl Table {
    fn function(self) -> u8 {
        match self {
            Table::Holding => 3,
            Table::Input => 4,
        }
    }
}

/// How a value is laid out in registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegType {
    /// Unsigned 16 bits, one register.
    #[default]
    U16,
    /// Signed 16 bits, one register.
    I16,
    /// Unsigned 32 bits, two registers.
    U32,
    /// Signed 32 bits, two registers.
    I32,
    /// IEEE 754 single, two registers.
    F32,
}

impl RegType {
    /// Registers per value.
    pub fn width(self) -> u16 {
        match self {
            RegType::U16 | RegType::I16 => 1,
            _ => 2,
        }
    }
}

/// Big or little end first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most significant first (the Modbus convention for bytes; the common one for words).
    #[default]
    Big,
    /// Least significant first ("word swapped" / "byte swapped" devices).
    Little,
}

/// One entry of the register map.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Series id of the reading this value belongs to.
    pub series: String,
    /// Value name within the reading.
    pub name: String,
    /// `holding` (default) or `input`.
    #[serde(default)]
    pub table: Table,
    /// Address of the first register (0-based, as on the wire).
    pub address: u16,
    /// `u16` (default), `i16`, `u32`, `i32` or `f32`.
    #[serde(default, rename = "type")]
    pub kind: RegType,
    /// How many consecutive values of this type (default 1); with more than one the values
    /// are named `name.0`, `name.1` ...
    #[serde(default = "one")]
    pub count: u16,
    /// Order of the two registers of a 32-bit value: `big` (high word first, default) or
    /// `little`.
    #[serde(default)]
    pub word_order: Order,
    /// Order of the two bytes in each register: `big` (default) or `little`.
    #[serde(default)]
    pub byte_order: Order,
    /// The value is `raw * scale + offset`.
    #[serde(default = "one_f")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
    /// Unit of the value after scaling (converted to `clean.units` if that differs).
    pub unit: Option<String>,
}

fn one() -> u16 {
    1
}
fn one_f() -> f64 {
    1.0
}

impl Register {
    /// Registers it spans.
    pub fn span(&self) -> u16 {
        self.kind.width() * self.count
    }

    /// Its values from its registers (`words.len() == span()`).
    pub fn decode(&self, words: &[u16]) -> Vec<(String, f64)> {
        let w = self.kind.width() as usize;
        let fix = |x: u16| match self.byte_order {
            Order::Big => x,
            Order::Little => x.swap_bytes(),
        };
        (0..self.count as usize)
            .map(|i| {
                let regs = &words[i * w..(i + 1) * w];
                let raw = match self.kind {
                    RegType::U16 => fix(regs[0]) as f64,
                    RegType::I16 => fix(regs[0]) as i16 as f64,
                    _ => {
                        let (hi, lo) = match self.word_order {
                            Order::Big => (fix(regs[0]), fix(regs[1])),
                            Order::Little => (fix(regs[1]), fix(regs[0])),
                        };
                        let bits = ((hi as u32) << 16) | lo as u32;
                        match self.kind {
                            RegType::U32 => bits as f64,
                            RegType::I32 => bits as i32 as f64,
                            _ => f32::from_bits(bits) as f64,
                        }
                    }
                };
                let name = if self.count == 1 {
                    self.name.clone()
                } else {
                    format!("{}.{i}", self.name)
                };
                (name, raw * self.scale + self.offset)
            })
            .collect()
    }
}

/// One Modbus collector's config (a `[[modbus]]` table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Name in logs, counters and quarantine sources.
    #[serde(default = "default_name")]
    pub name: String,
    /// Device `host:port` (Modbus TCP; port 502 on most devices).
    pub device: String,
    /// Unit (slave) id, default 1.
    #[serde(default = "default_unit")]
    pub unit_id: u8,
    /// Poll interval (default 1 s).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// How long to wait for a connection or an answer (default 2 s).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Kafka topic the readings go to.
    pub kafka_topic: String,
    /// The register map.
    pub registers: Vec<Register>,
    /// Tags added to every reading.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Cleaning rules.
    #[serde(default)]
    pub clean: CleanConfig,
}

fn default_name() -> String {
    "modbus".into()
}
fn default_unit() -> u8 {
    1
}
fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

/// Most registers one request may read.
const MAX_READ: u16 = 125;

/// One read request: table, first address, count, and the map entries it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Table read.
    pub table: Table,
    /// First register.
    pub start: u16,
    /// Registers read.
    pub count: u16,
    /// Indexes into the register map.
    pub registers: Vec<usize>,
}

/// Groups the map into as few reads as possible: per table, by address, each read at most
/// 125 registers (gaps between entries are read and ignored).
pub fn plan(map: &[Register]) -> Vec<Block> {
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by_key(|&i| (map[i].table, map[i].address));
    let mut blocks: Vec<Block> = Vec::new();
    for i in order {
        let r = &map[i];
        let end = r.address as u32 + r.span() as u32;
        match blocks.last_mut() {
            Some(b) if b.table == r.table && end - b.start as u32 <= MAX_READ as u32 => {
                b.count = b.count.max((end - b.start as u32) as u16);
                b.registers.push(i);
            }
            _ => blocks.push(Block {
                table: r.table,
                start: r.address,
                count: r.span(),
                registers: vec![i],
            }),
        }
    }
    blocks
}

impl ModbusConfig {
    fn addr(&self) -> String {
        format!("modbus://{}/{}", self.device, self.unit_id)
    }
}

impl Collector for ModbusConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "modbus"
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
        super::host_port(&self.device).map_err(|e| bad(format!("device = {e}")))?;
        if self.registers.is_empty() {
            return Err(bad("registers: map at least one register".into()));
        }
        if self.interval.0 < Duration::from_millis(10) {
            return Err(bad("interval: poll at most every 10ms".into()));
        }
        for r in &self.registers {
            if r.count == 0 || r.span() > MAX_READ {
                return Err(bad(format!(
                    "register {}.{}: count must make 1 to {MAX_READ} registers",
                    r.series, r.name
                )));
            }
            if r.address as u32 + r.span() as u32 > 65536 {
                return Err(bad(format!(
                    "register {}.{}: address {} + {} registers passes 65535",
                    r.series,
                    r.name,
                    r.address,
                    r.span()
                )));
            }
            if !r.scale.is_finite() || !r.offset.is_finite() {
                return Err(bad(format!(
                    "register {}.{}: scale and offset must be finite",
                    r.series, r.name
                )));
            }
        }
        Ok(())
    }

    fn run(&self, sink: &mut Sink, stop: &AtomicBool) -> Result<(), CollectError> {
        let blocks = plan(&self.registers);
        let source = self.addr();
        let mut conn: Option<Client> = None;
        let mut backoff = Backoff::default();
        let mut next = Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let now = Instant::now();
            if now < next && sleep_unless(stop, next - now) {
                break;
            }
            next += self.interval.0;
            if next < Instant::now() {
                // A slow device: skip the ticks already missed rather than poll in a burst.
                next = Instant::now() + self.interval.0;
            }
            if conn.is_none() {
                match Client::connect(&self.device, self.unit_id, self.timeout.0) {
                    Ok(c) => {
                        tracing::info!(collector = %self.name, device = %self.device, "Modbus connected");
                        backoff.reset();
                        conn = Some(c);
                    }
                    Err(e) => {
                        sink.source_failed(&source, &format!("poll failed: connect: {e}"))?;
                        let wait = backoff.next_wait().max(self.interval.0);
                        next = Instant::now() + wait;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let ts = now_ms();
            // Per series: its values, and the registers they came from (the payload kept with a
            // rejection).
            let mut per_series: BTreeMap<&str, (Vec<NamedValue>, String)> = BTreeMap::new();
            let mut broken = false;
            for b in &blocks {
                match c.read(b.table, b.start, b.count) {
                    Ok(words) => {
                        for &i in &b.registers {
                            let r = &self.registers[i];
                            let at = (r.address - b.start) as usize;
                            let regs = &words[at..at + r.span() as usize];
                            let e = per_series.entry(&r.series).or_default();
                            for (name, v) in r.decode(regs) {
                                e.0.push((name, RawValue::Number(v), r.unit.clone()));
                            }
                            e.1.push_str(&format!("{:?}[{}]={:04x?} ", r.table, r.address, regs));
                        }
                    }
                    Err(e) => {
                        sink.source_failed(
                            &format!("{source}/{:?}/{}", b.table, b.start),
                            &format!(
                                "poll failed: {:?} registers {}..{}: {e}",
                                b.table,
                                b.start,
                                b.start as u32 + b.count as u32
                            ),
                        )?;
                        if e.breaks_connection() {
                            broken = true;
                            break;
                        }
                    }
                }
            }
            if broken {
                conn = None;
                // Data read before the break is incomplete for its poll: drop it all.
                per_series.clear();
                next = Instant::now() + backoff.next_wait().max(self.interval.0);
            }
            for (series, (values, payload)) in per_series {
                let cand = Candidate {
                    series: Some(series.to_string()),
                    time: Some(RawTime::Millis(ts)),
                    values,
                    tags: self
                        .tags
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                };
                sink.offer(
                    &format!("{source}/{series}"),
                    payload.trim_end().as_bytes(),
                    Ok(cand),
                )?;
            }
        }
        Ok(())
    }
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ModbusError {
    /// The connection failed or timed out.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The device answered with a Modbus exception.
    #[error("exception {code} ({})", exception_name(*code))]
    Exception {
        /// Exception code.
        code: u8,
    },
    /// The answer does not follow the protocol.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl ModbusError {
    /// Whether the connection can no longer be trusted (anything but an exception).
    pub fn breaks_connection(&self) -> bool {
        !matches!(self, ModbusError::Exception { .. })
    }
}

fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// A Modbus TCP client connection.
pub struct Client {
    stream: TcpStream,
    unit: u8,
    transaction: u16,
}

impl Client {
    /// Connects to `host:port`, with `timeout` for the connection and every answer.
    pub fn connect(addr: &str, unit: u8, timeout: Duration) -> std::io::Result<Client> {
        let a = addr.split_once("://").map_or(addr, |(_, r)| r);
        let mut last = None;
        for sa in a.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    stream.set_nodelay(true)?;
                    return Ok(Client {
                        stream,
                        unit,
                        transaction: 0,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("address resolves to nothing")))
    }

    /// Reads `count` registers of `table` from `start`.
    pub fn read(&mut self, table: Table, start: u16, count: u16) -> Result<Vec<u16>, ModbusError> {
        self.transaction = self.transaction.wrapping_add(1);
        let t = self.transaction.to_be_bytes();
        let (s, n) = (start.to_be_bytes(), count.to_be_bytes());
        let req = [
            t[0],
            t[1],
            0,
            0,
            0,
            6,
            self.unit,
            table.function(),
            s[0],
            s[1],
            n[0],
            n[1],
        ];
        self.stream.write_all(&req)?;
        let mut head = [0u8; 7];
        self.stream.read_exact(&mut head)?;
        let len = u16::from_be_bytes([head[4], head[5]]) as usize;
        if u16::from_be_bytes([head[0], head[1]]) != self.transaction {
            return Err(ModbusError::Malformed(
                "transaction id does not match".into(),
            ));
        }
        if head[2..4] != [0, 0] {
            return Err(ModbusError::Malformed("protocol id is not 0".into()));
        }
        if !(2..=254).contains(&len) {
            return Err(ModbusError::Malformed(format!("length {len}")));
        }
        let mut pdu = vec![0u8; len - 1];
        self.stream.read_exact(&mut pdu)?;
        if pdu[0] == table.function() | 0x80 {
            return Err(ModbusError::Exception {
                code: pdu.get(1).copied().unwrap_or(0),
            });
        }
        if pdu[0] != table.function() {
            return Err(ModbusError::Malformed(format!(
                "function {} in answer to {}",
                pdu[0],
                table.function()
            )));
        }
        let bytes = *pdu.get(1).unwrap_or(&0) as usize;
        if bytes != 2 * count as usize || pdu.len() != 2 + bytes {
            return Err(ModbusError::Malformed(format!(
                "{bytes} data bytes for {count} registers"
            )));
        }
        Ok(pdu[2..]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(t: &str) -> Register {
        toml::from_str(t).unwrap()
    }

    #[test]
    fn decodes_every_type_and_order() {
        let f = 21.5f32.to_bits();
        let (hi, lo) = ((f >> 16) as u16, f as u16);
        let r = reg("series='s'\nname='t'\naddress=0\ntype='f32'");
        assert_eq!(r.decode(&[hi, lo]), [("t".to_string(), 21.5)]);
        let r = reg("series='s'\nname='t'\naddress=0\ntype='f32'\nword_order='little'");
        assert_eq!(r.decode(&[lo, hi])[0].1, 21.5);
        let r = reg(
            "series='s'\nname='t'\naddress=0\ntype='f32'\nword_order='little'\nbyte_order='little'",
        );
        assert_eq!(r.decode(&[lo.swap_bytes(), hi.swap_bytes()])[0].1, 21.5);
        let r = reg("series='s'\nname='p'\naddress=0\ntype='i16'\nscale=0.1\noffset=1");
        assert!((r.decode(&[(-25i16) as u16])[0].1 - -1.5).abs() < 1e-12);
        let r = reg("series='s'\nname='n'\naddress=0\ntype='i32'");
        let v = (-100_000i32) as u32;
        assert_eq!(r.decode(&[(v >> 16) as u16, v as u16])[0].1, -100_000.0);
        let r = reg("series='s'\nname='n'\naddress=0\ntype='u32'\ncount=2");
        let got = r.decode(&[1, 0, 0, 7]);
        assert_eq!(got[0], ("n.0".to_string(), 65536.0));
        assert_eq!(got[1], ("n.1".to_string(), 7.0));
    }

    #[test]
    fn plans_few_reads_per_table() {
        let map = vec![
            reg("series='a'\nname='x'\naddress=10\ntype='f32'"),
            reg("series='a'\nname='y'\naddress=0"),
            reg("series='b'\nname='z'\naddress=0\ntable='input'"),
            reg("series='a'\nname='far'\naddress=200"),
        ];
        let p = plan(&map);
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].table, p[0].start, p[0].count),
            (Table::Holding, 0, 12)
        );
        assert_eq!(p[0].registers, [1, 0]);
        assert_eq!((p[1].start, p[1].count), (200, 1));
        assert_eq!((p[2].table, p[2].start), (Table::Input, 0));
    }
}
