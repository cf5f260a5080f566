//! The dashboard's HTTP server: the page and Plotly.js (embedded in the binary), the
//! REST/JSON API, the server-sent event stream of frames, and `/metrics`.
//!
//! | path | answer |
//! |---|---|
//! | `/` | the dashboard page |
//! | `/plotly.min.js` | Plotly.js, from the `plotly` crate's embedded copy |
//! | `/api` | this list, as JSON |
//! | `/api/series?q=&limit=` | series whose key contains `q`: `[{key, series, field, pipeline, points, last, outlier, silent, charted}]`, the charted first |
//! | `/api/history?key=` | `{key, series, field, points: [{ts, value, mean, std, score, anomalous}], forecast, outlier, silent_since, charted}` |
//! | `/api/outliers` | `{seq, set: [{key, series, field, score, since, pipeline}], changes: [{seq, time, key, series, field, diff, score, pipeline}]}` |
//! | `/api/top` | every pipeline's top-k by latest score: `{seq, set: [{key, series, field, score, since, pipeline}]}` |
//! | `/api/silent?limit=` | series that stopped reporting: `{seq, count, set: [{key, series, field, last_ts, since, pipeline}]}`, most recent first |
//! | `/api/sessions?limit=` | the latest closed sessions (`sessions` dataflow): `{seq, count, set: [{key, series, field, start, end, count, mean, min, max, pipeline}]}`, newest first |
//! | `/api/forecasts?limit=` | `[{series, field, model, issued, steps: [[ts, point, lower, upper]]}]` |
//! | `/api/overview` | counters, rates, lag, workers, operator timings per pipeline |
//! | `/api/delta?since=&key=...` | what changed since frame `since` (one JSON object) |
//! | `/events?since=&key=...` | the same deltas pushed as server-sent events, one per frame (at most 4 a second); while connected, the keys are followed: charted from their next reading, and kept |
//! | `/metrics` | Prometheus text format |
//!
//! With a token, `/api*`, `/events` and `/metrics` need `Authorization: Bearer TOKEN` or
//! `?token=TOKEN`.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use tiny_http::{Header, Request, Response, Server};

use super::hub::Hub;
use super::{DashboardError, DashboardOptions};

const PAGE: &str = include_str!("page.html");

/// Plotly.js as the plotly crate embeds it (its offline `<script>` bundle, first script).
fn plotly_js() -> &'static str {
    static JS: OnceLock<String> = OnceLock::new();
    JS.get_or_init(|| {
        let bundle = plotly::Plot::offline_js_sources();
        let open = "<script type=\"text/javascript\">";
        bundle
            .find(open)
            .and_then(|i| {
                let rest = &bundle[i + open.len()..];
                rest.find("</script>").map(|j| rest[..j].to_string())
            })
            .unwrap_or_default()
    })
}

/// A running dashboard; dropping it stops the server.
pub struct Dashboard {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Dashboard {
    /// Binds and serves `hub` in background threads.
    pub fn start(opts: &DashboardOptions, hub: Arc<Hub>) -> Result<Self, DashboardError> {
        let server = Server::http(opts.addr).map_err(|e| DashboardError::Bind {
            addr: opts.addr,
            why: e.to_string(),
        })?;
        let addr = server.server_addr().to_ip().unwrap_or(opts.addr);
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (hub, stop) = (hub.clone(), stop.clone());
            thread::Builder::new()
                .name("dashboard-sampler".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_secs(1));
                        hub.sample();
                    }
                })
                .map_err(|e| DashboardError::Bind {
                    addr,
                    why: e.to_string(),
                })?;
        }
        {
            let (server, stop) = (server.clone(), stop.clone());
            let token: Option<Arc<str>> = opts.token.as_deref().map(Arc::from);
            thread::Builder::new()
                .name("dashboard-http".into())
                .spawn(move || {
                    for req in server.incoming_requests() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let (hub, stop, token) = (hub.clone(), stop.clone(), token.clone());
                        let _ = thread::Builder::new()
                            .name("dashboard-request".into())
                            .spawn(move || handle(req, &hub, &stop, token.as_deref()));
                    }
                })
                .map_err(|e| DashboardError::Bind {
                    addr,
                    why: e.to_string(),
                })?;
        }
        Ok(Dashboard { addr, server, stop })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
    }
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Path and decoded query pairs of a request URL.
fn split_url(url: &str) -> (&str, Vec<(String, String)>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    (path, pairs)
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn json_response<T: serde::Serialize>(v: &T) -> Response<std::io::Cursor<Vec<u8>>> {
    let body = serde_json::to_vec(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into());
    Response::from_data(body).with_header(header("Content-Type", "application/json"))
}

fn error(status: u16, msg: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    json_response(&serde_json::json!({ "error": msg })).with_status_code(status)
}

fn authorised(req: &Request, q: &[(String, String)], token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    if param(q, "token") == Some(token) {
        return true;
    }
    req.headers().iter().any(|h| {
        h.field.equiv("Authorization")
            && h.value
                .as_str()
                .strip_prefix("Bearer ")
                .is_some_and(|t| t.trim() == token)
    })
}

fn handle(req: Request, hub: &Hub, stop: &AtomicBool, token: Option<&str>) {
    let url = req.url().to_string();
    let (path, q) = split_url(&url);
    if *req.method() != tiny_http::Method::Get && *req.method() != tiny_http::Method::Head {
        let _ = req.respond(error(405, "only GET"));
        return;
    }
    let protected = path.starts_with("/api") || path == "/events" || path == "/metrics";
    if protected && !authorised(&req, &q, token) {
        let _ = req.respond(error(
            401,
            "token required: Authorization: Bearer TOKEN or ?token=TOKEN",
        ));
        return;
    }
    let limit = param(&q, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200usize);
    let keys: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "key")
        .map(|(_, v)| v.clone())
        .collect();
    let since: u64 = param(&q, "since").and_then(|v| v.parse().ok()).unwrap_or(0);
    let r = match path {
        "/" | "/index.html" => Response::from_data(PAGE.as_bytes().to_vec())
            .with_header(header("Content-Type", "text/html; charset=utf-8")),
        "/plotly.min.js" => Response::from_data(plotly_js().as_bytes().to_vec())
            .with_header(header("Content-Type", "text/javascript; charset=utf-8"))
            .with_header(header("Cache-Control", "max-age=86400")),
        "/api" => json_response(&api_index()),
        "/api/series" => json_response(&hub.series(param(&q, "q").unwrap_or(""), limit)),
        "/api/history" => match param(&q, "key").and_then(|k| hub.history(k)) {
            Some(h) => json_response(&h),
            None => error(404, "unknown series key; see /api/series"),
        },
        "/api/outliers" => json_response(&hub.outliers()),
        "/api/silent" => json_response(&hub.silent(limit)),
        "/api/sessions" => json_response(&hub.sessions(limit)),
        "/api/top" => json_response(&hub.top()),
        "/api/forecasts" => json_response(&hub.forecasts(limit)),
        "/api/overview" => json_response(&hub.overview()),
        "/api/delta" => json_response(&hub.delta(since, &keys)),
        "/metrics" => Response::from_data(prometheus(hub).into_bytes()).with_header(header(
            "Content-Type",
            "text/plain; version=0.0.4; charset=utf-8",
        )),
        "/events" => {
            events(req, hub, stop, since, &keys);
            return;
        }
        _ => error(404, "no such path; see /api"),
    };
    let _ = req.respond(r);
}

fn api_index() -> serde_json::Value {
    serde_json::json!({
        "/api/series?q=&limit=": "series whose key contains q, outliers first",
        "/api/history?key=": "a series' recent points and latest forecast",
        "/api/outliers": "the outlier set and its recent changes",
        "/api/top": "every pipeline's top-k series by latest score (a snapshot every --top-every)",
        "/api/silent?limit=": "series that stopped reporting (--state-ttl) and have not reported since",
        "/api/forecasts?limit=": "latest forecast per series",
        "/api/sessions?limit=": "the latest closed sessions and excursions (the sessions dataflow), newest first",
        "/api/overview": "counters, rates, lag, workers and operator timings per pipeline",
        "/api/delta?since=&key=": "what changed since frame `since`",
        "/events?since=&key=": "the deltas as server-sent events",
        "/metrics": "Prometheus text format",
    })
}

/// Streams deltas as server-sent events until the client goes away or the server stops.
/// Unfollows a page's series when its event stream ends, however it ends.
struct Following<'a>(&'a Hub, Option<super::hub::Followed>);

impl Drop for Following<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.1.take() {
            self.0.unfollow(f);
        }
    }
}

fn events(req: Request, hub: &Hub, stop: &AtomicBool, mut since: u64, keys: &[String]) {
    // The page's open charts keep their places, and one waiting for a place gets one.
    let _following = Following(hub, Some(hub.follow(keys)));
    let mut w = req.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\nX-Accel-Buffering: no\r\n\r\n";
    if w.write_all(head.as_bytes())
        .and_then(|_| w.flush())
        .is_err()
    {
        return;
    }
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        if !first {
            hub.wait(since, Duration::from_secs(1));
        }
        first = false;
        let d = hub.delta(since, keys);
        since = d.seq;
        let Ok(json) = serde_json::to_string(&d) else {
            return;
        };
        let msg = format!("id: {}\nevent: frame\ndata: {json}\n\n", d.seq);
        if w.write_all(msg.as_bytes()).and_then(|_| w.flush()).is_err() {
            return;
        }
        // At most four frames a second per page: later frames are merged into one delta.
        thread::sleep(Duration::from_millis(250));
    }
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The hub's counters in Prometheus text format.
pub fn prometheus(hub: &Hub) -> String {
    let o = hub.overview();
    let mut out = String::new();
    type Get = fn(&super::hub::PipelineView) -> f64;
    let counters: [(&str, &str, Get); 14] = [
        (
            "streamgauge_readings_in_total",
            "Readings delivered by sources.",
            |p| p.readings_in as f64,
        ),
        (
            "streamgauge_rows_out_total",
            "Result rows written by dataflow outputs.",
            |p| p.rows_out as f64,
        ),
        (
            "streamgauge_late_total",
            "Readings behind the event-time frontier.",
            |p| p.late as f64,
        ),
        (
            "streamgauge_quarantined_total",
            "Inputs that could not be read.",
            |p| p.quarantined as f64,
        ),
        (
            "streamgauge_produced_total",
            "Readings produced into Kafka by replays and generators.",
            |p| p.produced as f64,
        ),
        (
            "streamgauge_skipped_offsets_total",
            "Kafka offsets skipped (retention, compaction).",
            |p| p.skipped_offsets as f64,
        ),
        (
            "streamgauge_results_undelivered_total",
            "Result rows Kafka did not take (kept in the undelivered file).",
            |p| p.results_undelivered as f64,
        ),
        ("streamgauge_open_windows", "Windows currently open.", |p| {
            p.open_windows as f64
        }),
        (
            "streamgauge_series_states",
            "Per-series states held by keyed dataflows.",
            |p| p.series_states as f64,
        ),
        (
            "streamgauge_expired_total",
            "Per-series states dropped by --state-ttl (series that went silent).",
            |p| p.expired as f64,
        ),
        (
            "streamgauge_checkpoints_total",
            "Checkpoints completed (--checkpoint-every).",
            |p| p.checkpoints as f64,
        ),
        (
            "streamgauge_checkpoints_failed_total",
            "Checkpoints given up because a part could not be written.",
            |p| p.checkpoints_failed as f64,
        ),
        (
            "streamgauge_checkpoint_barrier_ms",
            "Event time (UTC ms) of the newest checkpoint's barrier; NaN before the first.",
            |p| p.checkpoint_barrier.map_or(f64::NAN, |b| b as f64),
        ),
        (
            "streamgauge_checkpoint_bytes",
            "Bytes of the newest checkpoint.",
            |p| p.checkpoint_bytes as f64,
        ),
    ];
    for (name, help, get) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &o.pipelines {
            let _ = writeln!(
                out,
                "{name}{{pipeline=\"{}\",dataflow=\"{}\"}} {}",
                label(&p.name),
                label(&p.dataflow),
                get(p)
            );
        }
    }
    type GetC = fn(&crate::collect::clean::CounterSnapshot) -> u64;
    let collector_counters: [(&str, &str, GetC); 7] = [
        (
            "received",
            "Records a collector received from its source.",
            |c| c.received,
        ),
        (
            "produced",
            "Readings a collector produced into Kafka.",
            |c| c.produced,
        ),
        (
            "quarantined",
            "Records a collector rejected (to <topic>.quarantine).",
            |c| c.quarantined,
        ),
        (
            "duplicates",
            "Duplicate readings a collector dropped.",
            |c| c.duplicates,
        ),
        (
            "source_errors",
            "Failures of a collector's source (failed polls, lost connections).",
            |c| c.source_errors,
        ),
        (
            "forgotten",
            "Series a collector forgot after forget_after without a reading.",
            |c| c.forgotten,
        ),
        (
            "series",
            "Series a collector remembers now (for duplicates).",
            |c| c.series,
        ),
    ];
    if !o.collectors.is_empty() {
        for (what, help, get) in collector_counters {
            let (name, kind) = if what == "series" {
                (format!("streamgauge_collector_{what}"), "gauge")
            } else {
                (format!("streamgauge_collector_{what}_total"), "counter")
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for c in &o.collectors {
                let _ = writeln!(
                    out,
                    "{name}{{collector=\"{}\",kind=\"{}\"}} {}",
                    label(&c.name),
                    c.kind,
                    get(&c.counters)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP streamgauge_kafka_lag Records behind the partition's end.\n# TYPE streamgauge_kafka_lag gauge"
    );
    for p in &o.pipelines {
        for w in &p.workers {
            for part in &w.partitions {
                if let Some(lag) = part.lag {
                    let _ = writeln!(
                        out,
                        "streamgauge_kafka_lag{{pipeline=\"{}\",worker=\"{}\",partition=\"{}\"}} {lag}",
                        label(&p.name),
                        w.worker,
                        part.partition
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP streamgauge_source_frontier_ms Event-time frontier of each worker's source (UTC ms).\n# TYPE streamgauge_source_frontier_ms gauge"
    );
    for p in &o.pipelines {
        for w in &p.workers {
            if let Some(f) = w.frontier {
                let _ = writeln!(
                    out,
                    "streamgauge_source_frontier_ms{{pipeline=\"{}\",worker=\"{}\"}} {f}",
                    label(&p.name),
                    w.worker
                );
            }
        }
    }
    for (name, help, secs) in [
        (
            "streamgauge_operator_seconds_total",
            "Time spent scheduled in each operator (all local workers).",
            true,
        ),
        (
            "streamgauge_operator_runs_total",
            "Times each operator was scheduled.",
            false,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for p in &o.pipelines {
            for (op, t) in &p.operators {
                let v = if secs { t.seconds } else { t.runs as f64 };
                let _ = writeln!(
                    out,
                    "{name}{{pipeline=\"{}\",operator=\"{}\"}} {v}",
                    label(&p.name),
                    label(op)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP streamgauge_dashboard_series Series held by the dashboard hub.\n# TYPE streamgauge_dashboard_series gauge\nstreamgauge_dashboard_series {}",
        o.series
    );
    let _ = writeln!(
        out,
        "# HELP streamgauge_dashboard_uncharted_total Readings of series the full dashboard hub did not hold.\n# TYPE streamgauge_dashboard_uncharted_total counter\nstreamgauge_dashboard_uncharted_total {}",
        o.uncharted
    );
    let _ = writeln!(
        out,
        "# HELP streamgauge_outliers Size of the live outlier set.\n# TYPE streamgauge_outliers gauge\nstreamgauge_outliers {}",
        o.outliers
    );
    let _ = writeln!(
        out,
        "# HELP streamgauge_silent_series Series that stopped reporting (their state expired) and have not reported since.\n# TYPE streamgauge_silent_series gauge\nstreamgauge_silent_series {}",
        o.silent
    );
    let _ = writeln!(
        out,
        "# HELP streamgauge_sessions_closed_total Session windows closed (the sessions dataflow).\n# TYPE streamgauge_sessions_closed_total counter\nstreamgauge_sessions_closed_total {}",
        o.sessions
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let (p, q) = split_url("/api/history?key=a%2Fb+c&since=3&key=x%zz");
        assert_eq!(p, "/api/history");
        assert_eq!(param(&q, "key"), Some("a/b c"));
        assert_eq!(param(&q, "since"), Some("3"));
        assert_eq!(q[2].1, "x%zz");
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%4"), "%4");
    }

    #[test]
    fn plotly_is_embedded() {
        let js = plotly_js();
        assert!(js.len() > 1_000_000, "{} bytes", js.len());
        assert!(js.contains("Plotly"));
    }
}
