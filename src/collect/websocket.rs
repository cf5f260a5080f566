//! The WebSocket collector (streaming quotes): connects to a `ws://` or `wss://` URL, sends the
//! configured subscription messages after every (re)connection, and maps each JSON text
//! message into readings, through a preset or the shared JSON mapping ([`JsonMap`]).
//!
//! Presets:
//! - `finnhub-trades`: Finnhub's trade stream. After connecting it sends
//!   `{"type":"subscribe","symbol":S}` for each of `symbols`; messages
//!   `{"type":"trade","data":[{"s":symbol,"p":price,"t":epoch ms,"v":volume}, ...]}` become one
//!   reading per symbol and millisecond (series `<series prefix><symbol>`, prefix default
//!   `trades/`) with `price` (volume-weighted over the trades of that millisecond), `volume`
//!   (their sum) and `trades` (their count); `ping` messages are ignored. Trades of one symbol
//!   and millisecond that arrive in two messages: the second is dropped as a duplicate.
//! - none: a message is one record, an array of records, or holds them at the dotted path
//!   `records`; mapped by `series_field`, `time_field`, `value_fields`, `units`.
//!
//! A lost connection is a failure of the source (counted, in the quarantine topic with its
//! reason) and is retried with backoff (0.5 s doubling to 30 s). Binary messages and text that
//! is not JSON are quarantined.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

use super::clean::{Candidate, CleanConfig, RawTime, RawValue};
use super::json::{get_path, JsonMap};
use super::{now_ms, sleep_unless, Backoff, CollectError, Collector, Sink};

/// A message shape the collector knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WsPreset {
    /// Finnhub's trade stream.
    FinnhubTrades,
}

/// One WebSocket collector's config (a `[[websocket]]` table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Name in logs, counters and quarantine sources.
    #[serde(default = "default_name")]
    pub name: String,
    /// `ws://` or `wss://` URL.
    pub url: String,
    /// Message shape: `finnhub-trades`, or absent for the generic mapping.
    pub preset: Option<WsPreset>,
    /// Symbols to subscribe to (finnhub-trades).
    #[serde(default)]
    pub symbols: Vec<String>,
    /// Text messages sent after every connection (generic subscriptions).
    #[serde(default)]
    pub send: Vec<String>,
    /// Series prefix (finnhub-trades) or the series of records without a `series_field`.
    pub series: Option<String>,
    /// Generic mapping: dotted path of the array of records in a message.
    pub records: Option<String>,
    /// Generic mapping: field of the series id.
    pub series_field: Option<String>,
    /// Generic mapping: field of the event time (default: time of receipt).
    pub time_field: Option<String>,
    /// Generic mapping: fields taken as values (default: every numeric field).
    #[serde(default)]
    pub value_fields: Vec<String>,
    /// The unit each value is sent in.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
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
    "websocket".into()
}

/// What one message makes: candidates, each with the bit of the message it came from.
pub type Records = Vec<(Result<Candidate, String>, String)>;

impl WebSocketConfig {
    /// The messages sent after connecting.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut v: Vec<String> = match self.preset {
            Some(WsPreset::FinnhubTrades) => self
                .symbols
                .iter()
                .map(|s| serde_json::json!({"type": "subscribe", "symbol": s}).to_string())
                .collect(),
            None => Vec::new(),
        };
        v.extend(self.send.iter().cloned());
        v
    }

    /// The records of one text message (`Err`: the message as a whole is unreadable).
    pub fn records(&self, msg: &Value, received_ms: i64) -> Result<Records, String> {
        match self.preset {
            Some(WsPreset::FinnhubTrades) => Ok(finnhub_trades(self, msg)),
            None => {
                let items: Vec<&Value> = match &self.records {
                    Some(p) => match get_path(msg, p) {
                        Some(Value::Array(a)) => a.iter().collect(),
                        Some(v) => vec![v],
                        None => return Err(format!("records = {p:?}: no such field")),
                    },
                    None => match msg {
                        Value::Array(a) => a.iter().collect(),
                        v => vec![v],
                    },
                };
                let map = JsonMap {
                    series_field: self.series_field.as_deref(),
                    time_field: self.time_field.as_deref(),
                    value_fields: &self.value_fields,
                    units: &self.units,
                    tags: &self.tags,
                };
                Ok(items
                    .into_iter()
                    .map(|v| {
                        (
                            map.candidate(v, self.series.as_deref(), received_ms),
                            v.to_string(),
                        )
                    })
                    .collect())
            }
        }
    }
}

/// The trades of one symbol and millisecond.
#[derive(Default)]
struct Merged {
    price_volume: f64,
    price_sum: f64,
    volume: f64,
    trades: u32,
    raw: Vec<String>,
}

/// Finnhub trades: one reading per symbol and millisecond of the message.
fn finnhub_trades(cfg: &WebSocketConfig, msg: &Value) -> Records {
    match msg.get("type").and_then(Value::as_str) {
        Some("trade") => {}
        Some("ping") => return Vec::new(),
        _ => {
            return vec![(
                Err("not a Finnhub trade message (type is not \"trade\" or \"ping\")".into()),
                msg.to_string(),
            )]
        }
    }
    let Some(Value::Array(data)) = msg.get("data") else {
        return vec![(
            Err("trade message without a data array".into()),
            msg.to_string(),
        )];
    };
    let prefix = cfg.series.as_deref().unwrap_or("trades/");
    let mut merged: BTreeMap<(String, i64), Merged> = BTreeMap::new();
    let mut out = Vec::new();
    for t in data {
        let s = t.get("s").and_then(Value::as_str);
        let p = t.get("p").and_then(Value::as_f64);
        let ms = t.get("t").and_then(Value::as_i64);
        let v = t.get("v").and_then(Value::as_f64);
        match (s, p, ms, v) {
            (Some(s), Some(p), Some(ms), Some(v)) if p.is_finite() && v.is_finite() && v >= 0.0 => {
                let e = merged.entry((s.to_string(), ms)).or_default();
                e.price_volume += p * v;
                e.price_sum += p;
                e.volume += v;
                e.trades += 1;
                e.raw.push(t.to_string());
            }
            _ => out.push((
                Err("trade needs s (symbol), p (price), t (epoch ms) and v (volume >= 0)".into()),
                t.to_string(),
            )),
        }
    }
    for ((s, ms), m) in merged {
        let (v, n, raw) = (m.volume, m.trades, m.raw);
        let price = if v > 0.0 {
            m.price_volume / v
        } else {
            // Zero-volume trades: the plain mean of their prices.
            m.price_sum / n as f64
        };
        let unit = |name: &str| cfg.units.get(name).cloned();
        out.push((
            Ok(Candidate {
                series: Some(format!("{prefix}{s}")),
                time: Some(RawTime::Millis(ms)),
                values: vec![
                    ("price".into(), RawValue::Number(price), unit("price")),
                    ("volume".into(), RawValue::Number(v), unit("volume")),
                    ("trades".into(), RawValue::Number(n as f64), None),
                ],
                tags: cfg
                    .tags
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }),
            format!("[{}]", raw.join(",")),
        ));
    }
    out
}

/// How long a read waits before checking whether to stop.
const READ_TICK: Duration = Duration::from_millis(200);

fn set_read_timeout(s: &MaybeTlsStream<TcpStream>) {
    let tcp = match s {
        MaybeTlsStream::Plain(t) => t,
        MaybeTlsStream::NativeTls(t) => t.get_ref(),
        _ => return,
    };
    let _ = tcp.set_read_timeout(Some(READ_TICK));
}

impl Collector for WebSocketConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "websocket"
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
        if !(self.url.starts_with("ws://") || self.url.starts_with("wss://")) {
            return Err(bad(format!(
                "url = {:?}: give a ws:// or wss:// URL",
                self.url
            )));
        }
        if self.preset == Some(WsPreset::FinnhubTrades) && self.symbols.is_empty() {
            return Err(bad("preset finnhub-trades needs symbols = [...]".into()));
        }
        if self.preset.is_some() && (self.records.is_some() || self.series_field.is_some()) {
            return Err(bad(
                "records and series_field are for the generic mapping; a preset knows its shape"
                    .into(),
            ));
        }
        Ok(())
    }

    fn run(&self, sink: &mut Sink, stop: &AtomicBool) -> Result<(), CollectError> {
        let source = self.url.split('?').next().unwrap_or(&self.url).to_string();
        let mut backoff = Backoff::default();
        while !stop.load(Ordering::Relaxed) {
            let mut ws = match tungstenite::connect(self.url.as_str()) {
                Ok((ws, _)) => ws,
                Err(e) => {
                    sink.source_failed(&source, &format!("connect: {e}"))?;
                    sleep_unless(stop, backoff.next_wait());
                    continue;
                }
            };
            set_read_timeout(ws.get_ref());
            let mut failed = None;
            for m in self.subscriptions() {
                if let Err(e) = ws.send(Message::text(m)) {
                    failed = Some(format!("subscribing: {e}"));
                    break;
                }
            }
            if failed.is_none() {
                tracing::info!(collector = %self.name, url = %source, "WebSocket connected");
                backoff.reset();
            }
            while failed.is_none() && !stop.load(Ordering::Relaxed) {
                match ws.read() {
                    Ok(Message::Text(t)) => {
                        let received = now_ms();
                        match serde_json::from_str::<Value>(&t)
                            .map_err(|e| format!("message is not JSON: {e}"))
                            .and_then(|j| self.records(&j, received))
                        {
                            Ok(rs) => {
                                for (cand, payload) in rs {
                                    sink.offer(&source, payload.as_bytes(), cand)?;
                                }
                            }
                            Err(why) => sink.offer(&source, t.as_bytes(), Err(why))?,
                        }
                    }
                    Ok(Message::Binary(b)) => sink.offer(
                        &source,
                        &b,
                        Err("binary message; expected JSON text".into()),
                    )?,
                    Ok(Message::Close(f)) => {
                        failed = Some(format!(
                            "server closed the connection{}",
                            f.map_or(String::new(), |f| format!(": {} {}", f.code, f.reason))
                        ))
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => failed = Some(e.to_string()),
                }
            }
            match failed {
                Some(why) => {
                    sink.source_failed(&source, &format!("connection lost: {why}"))?;
                    sleep_unless(stop, backoff.next_wait());
                }
                None => {
                    let _ = ws.close(None);
                    let _ = ws.flush();
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
    fn finnhub_trades_merge_per_millisecond() {
        let c: WebSocketConfig = toml::from_str(
            r#"
            url = "wss://ws.finnhub.io"
            preset = "finnhub-trades"
            symbols = ["AAPL"]
            kafka_topic = "t"
        "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.subscriptions(),
            [r#"{"symbol":"AAPL","type":"subscribe"}"#]
        );
        let m: Value = serde_json::from_str(
            r#"{"type":"trade","data":[
                {"s":"AAPL","p":10,"t":5,"v":1},{"s":"AAPL","p":20,"t":5,"v":3},
                {"s":"MSFT","p":1,"t":5,"v":0},{"s":"AAPL","t":6}]}"#,
        )
        .unwrap();
        let r = c.records(&m, 0).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r[0].0.is_err());
        let a = r[1].0.as_ref().unwrap();
        assert_eq!(a.series.as_deref(), Some("trades/AAPL"));
        assert_eq!(a.values[0].1, RawValue::Number(17.5));
        assert_eq!(a.values[1].1, RawValue::Number(4.0));
        assert_eq!(a.values[2].1, RawValue::Number(2.0));
        assert_eq!(r[2].0.as_ref().unwrap().values[0].1, RawValue::Number(1.0));
        let ping: Value = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert!(c.records(&ping, 0).unwrap().is_empty());
    }
}
