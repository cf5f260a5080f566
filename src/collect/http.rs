//! The HTTP collector (weather services, stock quotes): polls JSON endpoints on a schedule and
//! maps each response into readings, through a preset or the shared JSON mapping
//! ([`JsonMap`]).
//!
//! Presets:
//! - `open-meteo`: the Open-Meteo forecast API (`/v1/forecast?...&hourly=...`). Every column of
//!   the response's `hourly` (and `current`) block becomes a value of the reading of its hour,
//!   in the unit `hourly_units` names; times are local to `utc_offset_seconds` and converted to
//!   UTC. The series is `series` (default `open-meteo/<latitude>,<longitude>`). A poll repeats
//!   hours already produced: those are dropped as duplicates by the cleaner (a revised forecast
//!   for an hour already produced is therefore not produced again), as long as
//!   `clean.dedupe_horizon` spans the forecast (set it to the forecast's length, e.g. `16d`;
//!   the default 1 h lets older hours through again).
//! - `finnhub-quote`: Finnhub's `/api/v1/quote?symbol=S` shape,
//!   `{"c": price, "o": open, "h": high, "l": low, "pc": previous close, "d": change,
//!   "dp": change %, "t": epoch seconds}`, one request per entry of `symbols` (the url's
//!   `{symbol}` is replaced); the series is `<series prefix><symbol>` (prefix default
//!   `quotes/`), the values `price`, `open`, `high`, `low`, `prev_close`.
//! - none: the response is one JSON record, an array of records, or holds the array at the
//!   dotted path `records`; each record is mapped by `series_field`, `time_field`,
//!   `value_fields`, `units`.
//!
//! Failures: a timeout, a refused connection, a 5xx or a 429 is a failed poll (counted in
//! `source_errors` and written to the quarantine topic with the reason); the next poll waits
//! for the backoff (0.5 s doubling to 30 s) or the server's `Retry-After` (seconds or an HTTP
//! date), whichever is longer, and never less than the interval. Other 4xx answers are
//! failures too but do not back off (the config is wrong, the log says so). A response that is
//! not JSON is quarantined whole.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

#[cfg(test)]
use super::clean::RawValue;
use super::clean::{Candidate, CleanConfig, RawTime};
use super::json::{get_path, raw_value, JsonMap};
use super::{now_ms, sleep_unless, Backoff, CollectError, Collector, Sink};
use crate::duration::HumanDuration;

/// A response shape the collector knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpPreset {
    /// The Open-Meteo forecast API.
    OpenMeteo,
    /// Finnhub's quote endpoint.
    FinnhubQuote,
}

/// One HTTP collector's config (an `[[http]]` table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Name in logs, counters and quarantine sources.
    #[serde(default = "default_name")]
    pub name: String,
    /// The URL polled (`{symbol}` is replaced by each of `symbols`).
    pub url: String,
    /// Response shape: `open-meteo`, `finnhub-quote`, or absent for the generic mapping.
    pub preset: Option<HttpPreset>,
    /// Time between polls (default 1 min).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Longest wait for a connection and a response (default 10 s).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Request headers (an API key, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Symbols substituted for `{symbol}` in the url: one request each per poll.
    #[serde(default)]
    pub symbols: Vec<String>,
    /// Series id (open-meteo), or prefix of the symbol (finnhub-quote), or the series of
    /// records without a `series_field` (generic).
    pub series: Option<String>,
    /// Generic mapping: dotted path of the array of records in the response.
    pub records: Option<String>,
    /// Generic mapping: field of the series id.
    pub series_field: Option<String>,
    /// Generic mapping: field of the event time (default: time of receipt).
    pub time_field: Option<String>,
    /// Generic mapping: fields taken as values (default: every numeric field).
    #[serde(default)]
    pub value_fields: Vec<String>,
    /// The unit each value is sent in (open-meteo: default from `hourly_units`).
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
    "http".into()
}
fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// What one response makes: candidates, each with the bit of the response it came from.
pub type Records = Vec<(Result<Candidate, String>, String)>;

impl HttpConfig {
    fn map(&self) -> JsonMap<'_> {
        JsonMap {
            series_field: self.series_field.as_deref(),
            time_field: self.time_field.as_deref(),
            value_fields: &self.value_fields,
            units: &self.units,
            tags: &self.tags,
        }
    }

    /// The URLs of one poll, with the symbol each is for.
    pub fn targets(&self) -> Vec<(String, Option<String>)> {
        if self.symbols.is_empty() {
            vec![(self.url.clone(), None)]
        } else {
            self.symbols
                .iter()
                .map(|s| (self.url.replace("{symbol}", s), Some(s.clone())))
                .collect()
        }
    }

    /// The records one response body makes (`Err`: the body is not JSON at all).
    pub fn records(
        &self,
        body: &Value,
        symbol: Option<&str>,
        received_ms: i64,
    ) -> Result<Records, String> {
        match self.preset {
            Some(HttpPreset::OpenMeteo) => open_meteo(self, body),
            Some(HttpPreset::FinnhubQuote) => Ok(vec![finnhub_quote(self, body, symbol)]),
            None => {
                let items: Vec<&Value> = match &self.records {
                    Some(p) => match get_path(body, p) {
                        Some(Value::Array(a)) => a.iter().collect(),
                        Some(other) => {
                            return Err(format!(
                                "records = {p:?} is {}, not an array",
                                super::json::kind(other)
                            ))
                        }
                        None => return Err(format!("records = {p:?}: no such field")),
                    },
                    None => match body {
                        Value::Array(a) => a.iter().collect(),
                        v => vec![v],
                    },
                };
                let series = self.series.as_deref().or(symbol);
                Ok(items
                    .into_iter()
                    .map(|v| (self.map().candidate(v, series, received_ms), v.to_string()))
                    .collect())
            }
        }
    }
}

fn tags(cfg: &HttpConfig) -> Vec<(String, String)> {
    cfg.tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Open-Meteo: columns of `hourly` (and the single row of `current`) into readings.
fn open_meteo(cfg: &HttpConfig, body: &Value) -> Result<Records, String> {
    let offset_ms = body
        .get("utc_offset_seconds")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        * 1000;
    let series = cfg.series.clone().unwrap_or_else(|| {
        let f = |k| body.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        format!("open-meteo/{},{}", f("latitude"), f("longitude"))
    });
    let mut out = Vec::new();
    let mut any = false;
    for block in ["hourly", "current"] {
        let Some(Value::Object(cols)) = body.get(block) else {
            continue;
        };
        any = true;
        let units = body.get(format!("{block}_units"));
        let unit_of = |name: &str| -> Option<String> {
            cfg.units.get(name).cloned().or_else(|| {
                units
                    .and_then(|u| u.get(name))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
        };
        let rows = match cols.get("time") {
            Some(Value::Array(t)) => t.len(),
            Some(_) => 1,
            None => return Err(format!("{block} has no time")),
        };
        let cell = |name: &str, i: usize| -> Option<&Value> {
            match cols.get(name)? {
                Value::Array(a) => a.get(i),
                v if rows == 1 => Some(v),
                _ => None,
            }
        };
        for i in 0..rows {
            let time = cell("time", i);
            let mut row = serde_json::Map::new();
            let mut values = Vec::new();
            for name in cols.keys().filter(|k| *k != "time" && *k != "interval") {
                let v = cell(name, i).unwrap_or(&Value::Null);
                row.insert(name.clone(), v.clone());
                if cfg.value_fields.is_empty() || cfg.value_fields.contains(name) {
                    values.push((name.clone(), raw_value(v), unit_of(name)));
                }
            }
            row.insert("time".into(), time.cloned().unwrap_or(Value::Null));
            let t = match time {
                Some(Value::String(s)) => local_minutes(s)
                    .map(|ms| RawTime::Millis(ms - offset_ms))
                    .ok_or_else(|| format!("{block} time {s:?} is not YYYY-MM-DDTHH:MM")),
                Some(Value::Number(n)) => Ok(RawTime::Number(n.as_f64().unwrap_or(f64::NAN))),
                _ => Err(format!("{block} row {i} has no time")),
            };
            let cand = t.map(|time| Candidate {
                series: Some(series.clone()),
                time: Some(time),
                values,
                tags: tags(cfg),
            });
            out.push((cand, Value::Object(row).to_string()));
        }
    }
    if !any {
        return Err("an Open-Meteo response has an `hourly` or `current` block; this has neither (ask for hourly=...)".into());
    }
    Ok(out)
}

/// `YYYY-MM-DDTHH:MM` (Open-Meteo's iso8601 without offset) as milliseconds, as if UTC.
fn local_minutes(s: &str) -> Option<i64> {
    let fmt = if s.len() == 16 {
        "%Y-%m-%dT%H:%M"
    } else {
        "%Y-%m-%dT%H:%M:%S"
    };
    chrono::NaiveDateTime::parse_from_str(s, fmt)
        .ok()
        .map(|d| d.and_utc().timestamp_millis())
}

/// Finnhub's quote shape into one reading.
fn finnhub_quote(
    cfg: &HttpConfig,
    body: &Value,
    symbol: Option<&str>,
) -> (Result<Candidate, String>, String) {
    let payload = body.to_string();
    let Some(symbol) = symbol else {
        return (
            Err("finnhub-quote needs `symbols` (and {symbol} in the url)".into()),
            payload,
        );
    };
    let prefix = cfg.series.as_deref().unwrap_or("quotes/");
    // Finnhub answers an unknown symbol with all zeros and t = 0.
    if body.get("t").and_then(Value::as_i64) == Some(0) {
        return (
            Err(format!("no quote for {symbol:?} (t = 0: unknown symbol?)")),
            payload,
        );
    }
    let mut values = Vec::new();
    for (field, name) in [
        ("c", "price"),
        ("o", "open"),
        ("h", "high"),
        ("l", "low"),
        ("pc", "prev_close"),
    ] {
        if let Some(v) = body.get(field) {
            values.push((name.to_string(), raw_value(v), cfg.units.get(name).cloned()));
        }
    }
    let time = match body.get("t") {
        Some(Value::Number(n)) => Some(RawTime::Number(n.as_f64().unwrap_or(f64::NAN))),
        Some(Value::String(s)) => Some(RawTime::Text(s.clone())),
        _ => None,
    };
    let cand = Candidate {
        series: Some(format!("{prefix}{symbol}")),
        time,
        values,
        tags: tags(cfg),
    };
    (Ok(cand), payload)
}

/// Why a poll failed, and how long to wait before the next.
#[derive(Debug)]
struct Failure {
    why: String,
    retry_after: Option<Duration>,
    back_off: bool,
}

/// The wait a `Retry-After` header asks for: seconds, or an HTTP date.
pub fn retry_after(h: &str, now_ms: i64) -> Option<Duration> {
    let h = h.trim();
    if let Ok(s) = h.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(h)
        .ok()?
        .timestamp_millis();
    Some(Duration::from_millis((at - now_ms).max(0) as u64))
}

/// Longest response body read (larger ones are a failed poll).
const MAX_BODY: u64 = 64 << 20;

fn get(
    agent: &ureq::Agent,
    url: &str,
    headers: &BTreeMap<String, String>,
) -> Result<Vec<u8>, Failure> {
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let fail = |why: String, retry_after, back_off| Failure {
        why,
        retry_after,
        back_off,
    };
    match req.call() {
        Ok(resp) => {
            let mut body = Vec::new();
            use std::io::Read;
            resp.into_reader()
                .take(MAX_BODY + 1)
                .read_to_end(&mut body)
                .map_err(|e| fail(format!("reading the response: {e}"), None, true))?;
            if body.len() as u64 > MAX_BODY {
                return Err(fail(
                    format!("response larger than {MAX_BODY} bytes"),
                    None,
                    false,
                ));
            }
            Ok(body)
        }
        Err(ureq::Error::Status(code, resp)) => {
            let ra = resp
                .header("retry-after")
                .and_then(|h| retry_after(h, now_ms()));
            let transient = code == 429 || code >= 500;
            Err(fail(
                format!(
                    "HTTP {code} {}{}",
                    resp.status_text(),
                    ra.map_or(String::new(), |d| format!(", retry after {d:?}"))
                ),
                ra,
                transient,
            ))
        }
        Err(ureq::Error::Transport(t)) => Err(fail(t.to_string(), None, true)),
    }
}

/// An HTTP(S) client with `timeout`, TLS by the system's native library.
pub fn agent(timeout: Duration) -> Result<ureq::Agent, String> {
    let tls = native_tls::TlsConnector::new().map_err(|e| format!("TLS: {e}"))?;
    Ok(ureq::AgentBuilder::new()
        .timeout(timeout)
        .tls_connector(Arc::new(tls))
        .user_agent(concat!("streamgauge/", env!("CARGO_PKG_VERSION")))
        .build())
}

impl Collector for HttpConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "http"
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
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(bad(format!(
                "url = {:?}: give an http:// or https:// URL",
                self.url
            )));
        }
        if self.url.contains("{symbol}") == self.symbols.is_empty() {
            return Err(bad(
                "symbols and a {symbol} in the url go together: give both or neither".into(),
            ));
        }
        if self.preset == Some(HttpPreset::FinnhubQuote) && self.symbols.is_empty() {
            return Err(bad("preset finnhub-quote needs symbols = [...]".into()));
        }
        if self.preset.is_some() && (self.records.is_some() || self.series_field.is_some()) {
            return Err(bad(
                "records and series_field are for the generic mapping; a preset knows its shape"
                    .into(),
            ));
        }
        if self.interval.0 < Duration::from_millis(100) {
            return Err(bad("interval: poll at most every 100ms".into()));
        }
        Ok(())
    }

    fn run(&self, sink: &mut Sink, stop: &AtomicBool) -> Result<(), CollectError> {
        let agent = agent(self.timeout.0).map_err(|why| CollectError::Source {
            collector: self.name.clone(),
            why,
        })?;
        let mut backoff = Backoff::default();
        let mut next = Instant::now();
        'poll: loop {
            let now = Instant::now();
            if now < next && sleep_unless(stop, next - now) {
                break;
            }
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            next = Instant::now() + self.interval.0;
            for (url, symbol) in self.targets() {
                let source = url.split('?').next().unwrap_or(&url).to_string();
                let body = match get(&agent, &url, &self.headers) {
                    Ok(b) => b,
                    Err(f) => {
                        sink.source_failed(&source, &format!("poll failed: {}", f.why))?;
                        let mut wait = self.interval.0;
                        if f.back_off {
                            wait = wait.max(backoff.next_wait());
                        }
                        if let Some(ra) = f.retry_after {
                            wait = wait.max(ra);
                        }
                        next = Instant::now() + wait;
                        continue 'poll;
                    }
                };
                backoff.reset();
                let received = now_ms();
                let json = serde_json::from_slice::<Value>(&body)
                    .map_err(|e| format!("response is not JSON: {e}"));
                match json.and_then(|j| self.records(&j, symbol.as_deref(), received)) {
                    Ok(records) => {
                        for (cand, payload) in records {
                            sink.offer(&source, payload.as_bytes(), cand)?;
                        }
                    }
                    Err(why) => sink.offer(&source, &body, Err(why))?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(name: &str, v: f64) -> (String, RawValue, Option<String>) {
        (name.to_string(), RawValue::Number(v), None)
    }

    fn cfg(t: &str) -> HttpConfig {
        toml::from_str(t).unwrap()
    }

    #[test]
    fn open_meteo_columns_become_utc_readings_with_units() {
        let c = cfg(r#"
            url = "http://x/v1/forecast?hourly=temperature_2m"
            preset = "open-meteo"
            kafka_topic = "w"
        "#);
        let body: Value = serde_json::from_str(
            r#"{"latitude":47.5,"longitude":-122.25,"utc_offset_seconds":-28800,
                "hourly_units":{"time":"iso8601","temperature_2m":"°F","wind_speed_10m":"km/h"},
                "hourly":{"time":["2010-01-01T00:00","2010-01-01T01:00"],
                          "temperature_2m":[39.4,null],"wind_speed_10m":[3,4]}}"#,
        )
        .unwrap();
        let r = c.records(&body, None, 0).unwrap();
        assert_eq!(r.len(), 2);
        let first = r[0].0.as_ref().unwrap();
        assert_eq!(first.series.as_deref(), Some("open-meteo/47.5,-122.25"));
        // 2010-01-01T00:00 at UTC-8 is 08:00 UTC.
        assert_eq!(first.time, Some(RawTime::Millis(1_262_332_800_000)));
        assert_eq!(
            first.values[0],
            (
                "temperature_2m".into(),
                RawValue::Number(39.4),
                Some("°F".into())
            )
        );
        // A null cell stays visible: the cleaner quarantines the row with its reason.
        assert_eq!(
            r[1].0.as_ref().unwrap().values[0].1,
            RawValue::Other("null".into())
        );
        assert!(r[1].1.contains("\"temperature_2m\":null"));
        assert!(c.records(&Value::Null, None, 0).is_err());
    }

    #[test]
    fn finnhub_quotes_and_generic_records() {
        let c = cfg(r#"
            url = "http://x/api/v1/quote?symbol={symbol}"
            preset = "finnhub-quote"
            symbols = ["AAPL"]
            kafka_topic = "q"
        "#);
        c.validate().unwrap();
        assert_eq!(c.targets()[0].0, "http://x/api/v1/quote?symbol=AAPL");
        let body: Value = serde_json::from_str(
            r#"{"c":261.74,"h":263.31,"l":260.68,"o":261.07,"pc":259.45,"t":1582641000}"#,
        )
        .unwrap();
        let r = c.records(&body, Some("AAPL"), 0).unwrap();
        let q = r[0].0.as_ref().unwrap();
        assert_eq!(q.series.as_deref(), Some("quotes/AAPL"));
        assert_eq!(q.values[0], number("price", 261.74));
        let zero: Value = serde_json::from_str(r#"{"c":0,"t":0}"#).unwrap();
        assert!(c.records(&zero, Some("X"), 0).unwrap()[0].0.is_err());

        let g = cfg(r#"
            url = "http://x/obs"
            records = "data.items"
            series_field = "id"
            time_field = "at"
            kafka_topic = "g"
        "#);
        let body: Value =
            serde_json::from_str(r#"{"data":{"items":[{"id":"a","at":1,"v":2},{"id":"b"}]}}"#)
                .unwrap();
        let r = g.records(&body, None, 0).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0.as_ref().unwrap().series.as_deref(), Some("a"));
        assert!(g
            .records(&Value::Null, None, 0)
            .unwrap_err()
            .contains("no such field"));
        let e = cfg("url = \"ftp://x\"\nkafka_topic = \"t\"")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("3", 0), Some(Duration::from_secs(3)));
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:58Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(retry_after("soon", 0), None);
    }
}
