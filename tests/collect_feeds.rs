//! The HTTP and WebSocket collectors against local servers that answer in the shapes of the
//! real APIs (Open-Meteo forecasts, Finnhub quotes, Finnhub's trade stream) with data built
//! from ../shared/datasets (weather_vega Seattle hourly temperatures, stocks_vega S&P 500).
//! The repository's example config (configs/collect-feeds.toml) is used, pointed at them.
//! The HTTP server also answers 429 with Retry-After and 503; the WebSocket server drops the
//! connection halfway. Every value served must be found in Kafka exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::read_topic;
use serde_json::{json, Value};
use streamgauge::collect;
use streamgauge::duration::HumanDuration;
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::ClientSettings;
use streamgauge::record::Reading;

/// Hours per Open-Meteo page, and the step between pages (pages overlap by half).
const PAGE: usize = 24;
const STEP: usize = 12;
const PAGES: usize = 7;

fn local_time(ts_ms: i64) -> String {
    // The dataset's times are UTC-8 standard time; Open-Meteo writes local times.
    chrono::DateTime::from_timestamp_millis(ts_ms - 8 * 3_600_000)
        .unwrap()
        .format("%Y-%m-%dT%H:%M")
        .to_string()
}

fn open_meteo_page(temps: &[Reading], page: usize) -> Value {
    let rows = &temps[page * STEP..page * STEP + PAGE];
    json!({
        "latitude": 47.61, "longitude": -122.33, "generationtime_ms": 0.1,
        "utc_offset_seconds": -28800, "timezone": "America/Los_Angeles",
        "timezone_abbreviation": "PST", "elevation": 56.0,
        "hourly_units": {"time": "iso8601", "temperature_2m": "°F"},
        "hourly": {
            "time": rows.iter().map(|r| local_time(r.ts)).collect::<Vec<_>>(),
            "temperature_2m": rows.iter().map(|r| r.values[0].1).collect::<Vec<_>>(),
        }
    })
}

fn v(r: &Reading, name: &str) -> f64 {
    r.values.iter().find(|(n, _)| &**n == name).unwrap().1
}

struct HttpLog {
    /// (path, status, when)
    requests: Vec<(String, u16, Instant)>,
}

fn serve_http(
    listener: TcpListener,
    temps: Vec<Reading>,
    sp500: Vec<Reading>,
    log: Arc<Mutex<HttpLog>>,
    stop: Arc<AtomicBool>,
) {
    let server = tiny_http::Server::from_listener(listener, None).unwrap();
    let mut weather_calls = 0usize;
    let mut quote_calls = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let url = req.url().to_string();
        let (status, body, extra): (u16, String, Option<(&str, &str)>) = if url
            .starts_with("/v1/forecast?")
        {
            assert!(url.contains("hourly=temperature_2m"), "{url}");
            weather_calls += 1;
            match weather_calls {
                2 => (
                    429,
                    "{\"reason\":\"slow down\"}".into(),
                    Some(("Retry-After", "1")),
                ),
                4 => (503, "busy".into(), None),
                n => {
                    let page = (n - 1 - (n > 2) as usize - (n > 4) as usize).min(PAGES - 1);
                    (200, open_meteo_page(&temps, page).to_string(), None)
                }
            }
        } else if let Some(sym) = url.strip_prefix("/api/v1/quote?symbol=") {
            let body = if sym == "SPY" {
                let i = quote_calls.min(sp500.len() - 1);
                quote_calls += 1;
                let r = &sp500[i];
                json!({"c": v(r, "close"), "o": v(r, "open"), "h": v(r, "high"),
                           "l": v(r, "low"), "pc": if i > 0 { v(&sp500[i - 1], "close") } else { 0.0 },
                           "d": 0.0, "dp": 0.0, "t": r.ts / 1000})
            } else {
                json!({"c": 0, "d": null, "dp": null, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0})
            };
            (200, body.to_string(), None)
        } else {
            (404, "no such endpoint".into(), None)
        };
        log.lock()
            .unwrap()
            .requests
            .push((url.clone(), status, Instant::now()));
        let mut resp = tiny_http::Response::from_string(body).with_status_code(status);
        resp.add_header(tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap());
        if let Some((k, v)) = extra {
            resp.add_header(tiny_http::Header::from_bytes(k, v).unwrap());
        }
        let _ = req.respond(resp);
    }
}

/// The trades of one stock row: its close with volume / 1e6, and on even rows also a second
/// trade in the same millisecond at the open, volume 1.
fn trades_of(i: usize, r: &Reading) -> Vec<Value> {
    let mut t = vec![
        json!({"s": "SPY", "p": v(r, "close"), "t": r.ts, "v": v(r, "volume") / 1e6, "c": ["1"]}),
    ];
    if i % 2 == 0 {
        t.push(json!({"s": "SPY", "p": v(r, "open"), "t": r.ts, "v": 1.0}));
    }
    t
}

const TRADE_ROWS: usize = 30;
const FIRST_CONNECTION: usize = 15;

fn serve_ws(listener: TcpListener, sp500: Vec<Reading>, stop: Arc<AtomicBool>) -> Vec<Vec<Value>> {
    use tungstenite::Message;
    let mut subscriptions = Vec::new();
    for conn in 0..2 {
        let (stream, _) = listener.accept().unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut subs = Vec::new();
        while subs.len() < 2 {
            match ws.read() {
                Ok(Message::Text(t)) => subs.push(serde_json::from_str::<Value>(&t).unwrap()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("subscription: {e}"),
            }
        }
        subscriptions.push(subs);
        let rows = if conn == 0 {
            0..FIRST_CONNECTION
        } else {
            FIRST_CONNECTION..TRADE_ROWS
        };
        for i in rows {
            let msg = json!({"type": "trade", "data": trades_of(i, &sp500[i])});
            ws.send(Message::text(msg.to_string())).unwrap();
            if i % 10 == 0 {
                ws.send(Message::text(r#"{"type":"ping"}"#)).unwrap();
            }
            if i == 3 {
                ws.send(Message::text("hello")).unwrap();
                ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
            }
        }
        if conn == 0 {
            let _ = ws.close(None);
            let _ = ws.flush();
        } else {
            while !stop.load(Ordering::Relaxed) {
                let _ = ws.read();
            }
        }
    }
    subscriptions
}

#[test]
fn weather_quotes_and_trades_feeds_arrive_once_through_throttling_and_disconnects() {
    let temps = common::load("weather_vega:seattle");
    let sp500 = common::load("stocks_vega");
    let http_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ws_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http_listener.local_addr().unwrap().port();
    let ws_port = ws_listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(HttpLog {
        requests: Vec::new(),
    }));
    let http = {
        let (t, s, l, st) = (temps.clone(), sp500.clone(), log.clone(), stop.clone());
        std::thread::spawn(move || serve_http(http_listener, t, s, l, st))
    };
    let ws = {
        let (s, st) = (sp500.clone(), stop.clone());
        std::thread::spawn(move || serve_ws(ws_listener, s, st))
    };

    let broker = EmbeddedBroker::start(1).unwrap();
    let kafka = ClientSettings::new(broker.bootstrap());
    for t in ["weather", "quotes", "trades"] {
        broker.create_topic(t, 2).unwrap();
        broker.create_topic(&format!("{t}.quarantine"), 1).unwrap();
    }
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/collect-feeds.toml");
    let mut c = streamgauge::config::Settings::load(Some(&example))
        .unwrap()
        .collectors;
    assert_eq!((c.http.len(), c.websocket.len()), (2, 1));
    let fast = HumanDuration(Duration::from_millis(150));
    c.http[0].url = format!(
        "http://127.0.0.1:{http_port}/v1/forecast?latitude=47.61&longitude=-122.33&hourly=temperature_2m"
    );
    c.http[0].interval = fast;
    c.http[1].url = format!("http://127.0.0.1:{http_port}/api/v1/quote?symbol={{symbol}}");
    c.http[1].symbols = vec!["SPY".into(), "NOPE".into()];
    c.http[1].interval = fast;
    c.websocket[0].url = format!("ws://127.0.0.1:{ws_port}/?token=test");
    let running = collect::start(&c, &kafka).unwrap();
    let counters: BTreeMap<String, _> = running.counters.iter().cloned().collect();

    let hours = STEP * (PAGES - 1) + PAGE;
    let quotes_wanted = 20u64;
    let trades_wanted = TRADE_ROWS as u64;
    let t0 = Instant::now();
    while counters["weather"].snapshot().produced < hours as u64
        || counters["quotes"].snapshot().produced < quotes_wanted
        || counters["trades"].snapshot().produced < trades_wanted
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out: weather {:?} quotes {:?} trades {:?}",
            counters["weather"].snapshot(),
            counters["quotes"].snapshot(),
            counters["trades"].snapshot()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let results: BTreeMap<String, _> = running
        .stop()
        .into_iter()
        .map(|(n, r)| (n, r.expect("collector ran")))
        .collect();
    stop.store(true, Ordering::Relaxed);
    http.join().unwrap();
    let subscriptions = ws.join().unwrap();
    for (name, s) in &results {
        assert_eq!(
            s.received,
            s.produced + s.quarantined + s.duplicates,
            "{name}"
        );
    }

    // Weather: every hour served once, at its UTC time, in Celsius.
    let w = read_topic(&kafka, "weather");
    assert_eq!(w.len(), hours);
    let want: BTreeMap<i64, f64> = temps[..hours]
        .iter()
        .map(|r| (r.ts, r.values[0].1))
        .collect();
    let mut seen = BTreeSet::new();
    for (key, r) in &w {
        assert_eq!(key, "weather/seattle");
        let ts = r["ts"].as_i64().unwrap();
        assert!(seen.insert(ts), "hour {ts} twice");
        let f = want[&ts];
        let c = r["values"]["temperature_2m"].as_f64().unwrap();
        assert!((c - (f - 32.0) * 5.0 / 9.0).abs() < 1e-9, "{r}");
        assert_eq!(r["tags"]["unit"], "C");
    }
    assert!(results["weather"].duplicates >= (STEP * (PAGES - 1)) as u64);
    // The request after the 429 waited for its Retry-After.
    let reqs = log.lock().unwrap().requests.clone();
    let weather: Vec<_> = reqs
        .iter()
        .filter(|(u, _, _)| u.starts_with("/v1/forecast"))
        .collect();
    assert_eq!(weather[1].1, 429);
    let gap = weather[2].2 - weather[1].2;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert_eq!(weather[3].1, 503);
    let wq = read_topic(&kafka, "weather.quarantine");
    let reasons: Vec<&str> = wq
        .iter()
        .map(|(_, r)| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("HTTP 429")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("HTTP 503")),
        "{reasons:?}"
    );
    assert_eq!(results["weather"].source_errors, 2);

    // Quotes: each SPY quote is the row of its date; the unknown symbol is quarantined.
    let q = read_topic(&kafka, "quotes");
    assert_eq!(q.len() as u64, results["quotes"].produced);
    let rows: BTreeMap<i64, (usize, &Reading)> = sp500
        .iter()
        .enumerate()
        .map(|(i, r)| (r.ts, (i, r)))
        .collect();
    for (key, r) in &q {
        assert_eq!(key, "quotes/SPY");
        let (i, row) = rows[&r["ts"].as_i64().unwrap()];
        assert_eq!(r["values"]["price"].as_f64().unwrap(), v(row, "close"));
        assert_eq!(r["values"]["high"].as_f64().unwrap(), v(row, "high"));
        if i > 0 {
            assert_eq!(
                r["values"]["prev_close"].as_f64().unwrap(),
                v(&sp500[i - 1], "close")
            );
        }
    }
    let qq = read_topic(&kafka, "quotes.quarantine");
    assert!(!qq.is_empty());
    assert!(qq.iter().all(|(_, r)| r["reason"]
        .as_str()
        .unwrap()
        .contains("no quote for \"NOPE\"")));

    // Trades: every row once, volume-weighted over its millisecond, across the reconnect.
    for subs in &subscriptions {
        let syms: BTreeSet<&str> = subs.iter().map(|s| s["symbol"].as_str().unwrap()).collect();
        assert_eq!(syms, BTreeSet::from(["SPY", "AAPL"]));
        assert!(subs.iter().all(|s| s["type"] == "subscribe"));
    }
    let t = read_topic(&kafka, "trades");
    assert_eq!(t.len(), TRADE_ROWS);
    for (key, r) in &t {
        assert_eq!(key, "trades/SPY");
        let (i, row) = rows[&r["ts"].as_i64().unwrap()];
        let trades = trades_of(i, row);
        let vol: f64 = trades.iter().map(|x| x["v"].as_f64().unwrap()).sum();
        let pv: f64 = trades
            .iter()
            .map(|x| x["p"].as_f64().unwrap() * x["v"].as_f64().unwrap())
            .sum();
        let got = |n: &str| r["values"][n].as_f64().unwrap();
        assert!((got("price") - pv / vol).abs() < 1e-9 * pv / vol, "{r}");
        assert!((got("volume") - vol).abs() < 1e-9 * vol, "{r}");
        assert_eq!(got("trades"), trades.len() as f64);
    }
    let tq = read_topic(&kafka, "trades.quarantine");
    let reasons: Vec<&str> = tq
        .iter()
        .map(|(_, r)| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("binary")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("connection lost")),
        "{reasons:?}"
    );
}
