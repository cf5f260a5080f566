//! Helpers shared by the integration tests: datasets, the batch oracle, output parsing,
//! run specs and brokers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use streamgauge::kafka::admin;

use streamgauge::analytics::window::{batch_stats, Tumbling};
use streamgauge::dataset::csvspec::CsvSpec;
use streamgauge::engine::{run, Input, RunReport, RunSpec};
use streamgauge::kafka::source::KafkaInput;
use streamgauge::kafka::ClientSettings;
use streamgauge::record::Reading;

/// Writes a W1 file of `rows` rows (`generate::write_w1`, seeded) to `dir/w1.csv`, reads it
/// back sequentially, and returns its spec and readings; every row must read as a reading.
pub fn w1_csv(dir: &Path, rows: u64, seed: u64) -> (CsvSpec, Vec<Reading>) {
    let path = dir.join("w1.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    streamgauge::dataset::generate::write_w1(&mut f, rows, seed).unwrap();
    drop(f);
    let csv = CsvSpec::epoch_ms(&path, "ts_ms", "sensor_id", &["value"]);
    let (readings, bad, read) = streamgauge::dataset::csvspec::read_all(&csv).unwrap();
    assert_eq!((readings.len() as u64, bad.len(), read), (rows, 0, rows));
    (csv, readings)
}

/// The shared datasets: `$STREAMGAUGE_DATA`, else beside the checkout (required: tests
/// replay real data).
pub fn data_dir() -> PathBuf {
    let p = match std::env::var_os("STREAMGAUGE_DATA") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"),
    };
    assert!(
        p.is_dir(),
        "the shared datasets are required at {}",
        p.display()
    );
    p
}

/// Loads a built-in dataset (with an optional `:filter`).
pub fn load(name: &str) -> Vec<Reading> {
    let l = streamgauge::dataset::load_builtin(name, Some(&data_dir())).unwrap();
    assert!(
        l.quarantined.is_empty(),
        "{name}: unexpected bad rows {:?}",
        &l.quarantined[..l.quarantined.len().min(3)]
    );
    l.readings
}

/// Key of a window: (series, field, start).
pub type WinKey = (String, String, i64);
/// count, mean, min, max, std.
pub type WinVal = (u64, f64, f64, f64, f64);

/// The batch oracle: group by (series, field, window) and compute two-pass statistics.
pub fn oracle(readings: &[Reading], width_ms: i64) -> BTreeMap<WinKey, WinVal> {
    let t = Tumbling { width_ms };
    let mut groups: BTreeMap<WinKey, Vec<f64>> = BTreeMap::new();
    for r in readings {
        for (f, v) in &r.values {
            groups
                .entry((r.series.to_string(), f.to_string(), t.start(r.ts)))
                .or_default()
                .push(*v);
        }
    }
    groups
        .into_iter()
        .map(|(k, vs)| {
            let s = batch_stats(&vs);
            (
                k,
                (
                    s.count,
                    s.mean,
                    s.min,
                    s.max,
                    (s.m2 / s.count as f64).sqrt(),
                ),
            )
        })
        .collect()
}

/// Reads every `series_stats*.jsonl` in `dir`, failing on a duplicate window.
pub fn read_windows(dir: &Path) -> BTreeMap<WinKey, WinVal> {
    let mut out = BTreeMap::new();
    for line in read_lines(dir, "series_stats") {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let key = (
            v["series"].as_str().unwrap().to_string(),
            v["field"].as_str().unwrap().to_string(),
            v["window_start"].as_i64().unwrap(),
        );
        let val = (
            v["count"].as_u64().unwrap(),
            v["mean"].as_f64().unwrap(),
            v["min"].as_f64().unwrap(),
            v["max"].as_f64().unwrap(),
            v["std"].as_f64().unwrap(),
        );
        assert!(
            out.insert(key.clone(), val).is_none(),
            "window emitted twice: {key:?}"
        );
    }
    out
}

/// All lines of the files `<stem>.jsonl` / `<stem>.p<i>.jsonl` in `dir`.
pub fn read_lines(dir: &Path, stem: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == format!("{stem}.jsonl")
            || (name.starts_with(&format!("{stem}.p")) && name.ends_with(".jsonl"))
        {
            lines.extend(
                std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .map(String::from),
            );
        }
    }
    lines
}

fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(scale)
}

/// Asserts equal windows: counts exact, floats within 1e-9 relative (std relative to the
/// window's magnitude, where it is a difference of large numbers).
pub fn assert_windows_eq(
    got: &BTreeMap<WinKey, WinVal>,
    want: &BTreeMap<WinKey, WinVal>,
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: number of windows");
    for (k, w) in want {
        let g = got
            .get(k)
            .unwrap_or_else(|| panic!("{what}: missing window {k:?}"));
        let scale = w.2.abs().max(w.3.abs()).max(1e-300);
        assert_eq!(g.0, w.0, "{what}: count of {k:?}");
        assert!(
            close(g.1, w.1, scale),
            "{what}: mean of {k:?}: {} vs {}",
            g.1,
            w.1
        );
        assert_eq!((g.2, g.3), (w.2, w.3), "{what}: min/max of {k:?}");
        assert!(
            close(g.4, w.4, scale),
            "{what}: std of {k:?}: {} vs {}",
            g.4,
            w.4
        );
    }
}

/// Logs to stderr when RUST_LOG is set (debugging a test).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A run spec with test defaults: until-end Kafka or a dataset, outputs to `out`.
pub fn spec(input: Input, workers: usize, window: Duration, out: &Path) -> RunSpec {
    init_logs();
    let mut spec = RunSpec::new("series_stats", input);
    spec.cluster.workers = workers;
    spec.window = window;
    spec.end_confirm = Duration::from_millis(300);
    spec.output_dir = Some(out.to_path_buf());
    spec
}

/// Runs `series_stats --until-end` on `topic` with 1, 2 and 4 workers and checks every
/// window against `want`, and that all `n` readings arrived on time.
pub fn assert_until_end_matches(
    brokers: &str,
    topic: &str,
    n: usize,
    want: &BTreeMap<WinKey, WinVal>,
    window: Duration,
    confirm: Duration,
    what: &str,
) {
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(kafka_input(brokers, topic), workers, window, dir.path());
        s.end_confirm = confirm;
        let report = run_ok(s);
        assert_eq!(
            report.metrics.readings_in, n as u64,
            "{what}, {workers} workers"
        );
        assert_eq!(report.metrics.late, 0, "{what}, {workers} workers");
        assert_eq!(
            report.metrics.skipped_offsets, 0,
            "{what}, {workers} workers"
        );
        assert_eq!(
            report.offsets.values().sum::<i64>(),
            n as i64,
            "{what}: final offsets cover the topic"
        );
        assert_windows_eq(
            &read_windows(dir.path()),
            want,
            &format!("{what}, {workers} workers"),
        );
    }
}

/// A Kafka input that reads `topic` to its end.
pub fn kafka_input(brokers: &str, topic: &str) -> Input {
    Input::Kafka(KafkaInput {
        settings: ClientSettings::new(brokers),
        topic: topic.into(),
        until_end: true,
        metadata_refresh: Duration::from_secs(5),
        start: streamgauge::kafka::source::StartAt::Beginning,
    })
}

/// Runs and returns the report, panicking with the engine's message on error.
pub fn run_ok(spec: RunSpec) -> RunReport {
    run(spec).unwrap_or_else(|e| panic!("run failed: {e}"))
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A timely hostfile for `processes` processes on loopback, each on a free port, written to
/// `dir/hosts<processes>`.
pub fn hostfile(dir: &Path, processes: usize) -> PathBuf {
    let path = dir.join(format!("hosts{processes}"));
    let hosts: String = (0..processes)
        .map(|_| format!("127.0.0.1:{}\n", free_port()))
        .collect();
    std::fs::write(&path, hosts).unwrap();
    path
}

/// A plain HTTP/1.1 GET (with a bearer token, if given): `(status, body)`, or `None` when
/// nothing answers at `addr` (a server not up yet, or gone).
pub fn http_get(addr: &str, path: &str, bearer: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(&buf[split..])
    } else {
        buf[split..].to_vec()
    };
    Some((status, String::from_utf8(body).expect("a UTF-8 body")))
}

/// A chunked HTTP/1.1 body (the dashboard chunks large responses), joined.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let line = std::str::from_utf8(&rest[..eol]).expect("an ASCII chunk size");
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|e| panic!("chunk size {line:?}: {e}"));
        if size == 0 {
            return body;
        }
        let data = &rest[eol + 2..];
        body.extend_from_slice(&data[..size]);
        rest = data[size..]
            .strip_prefix(b"\r\n")
            .expect("CRLF after a chunk");
    }
}

/// A service process the test started (a broker, a device), killed on drop.
pub struct Service(Child);
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (output discarded) and waits up to `secs` for it to listen on `port`;
/// `what` names it in the failure, with how to install it.
pub fn service(mut cmd: Command, port: u16, secs: u64, what: &str) -> Service {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let s = Service(child);
    wait_for(&format!("{what} to listen"), secs, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    s
}

/// Polls `cond` every 50 ms; fails the test after `secs` seconds, naming `what`.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts Mosquitto on a free loopback port (config in `dir`).
pub fn mosquitto(dir: &std::path::Path) -> (Service, u16) {
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("mosquitto is needed (apt-get install mosquitto; .ci/run does)");
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&conf);
    let m = service(cmd, port, 10, "mosquitto");
    (m, port)
}

/// Every record of a topic: (key, JSON payload).
pub fn read_topic(settings: &ClientSettings, topic: &str) -> Vec<(String, Value)> {
    read_messages(settings, topic)
        .into_iter()
        .map(|(_, key, payload)| (key, serde_json::from_slice(&payload).unwrap()))
        .collect()
}

/// Every message of a topic: (partition, key, payload).
pub fn read_messages(settings: &ClientSettings, topic: &str) -> Vec<(i32, String, Vec<u8>)> {
    let consumer: BaseConsumer = settings.consumer_config().create().unwrap();
    let parts = admin::partitions(&consumer, topic, Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut want = 0;
    for p in &parts {
        let (lo, hi) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .unwrap();
        want += hi - lo;
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let t0 = Instant::now();
    while (out.len() as i64) < want {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{topic}: {} of {want}",
            out.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((m.partition(), key, m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}

/// An anomaly score's key: series, event time, the value's bits.
pub type ScoreKey = (String, i64, u64);

/// The `gauge` detector's scores from scratch (the bits of each): each series' readings in
/// (time, value) order through a fresh detector with the default parameters.
pub fn anomaly_oracle<'a>(
    readings: impl IntoIterator<Item = &'a Reading>,
) -> BTreeMap<ScoreKey, u64> {
    use streamgauge::analytics::detector::{Detector, DetectorParams};
    let mut by_series: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for r in readings {
        by_series
            .entry(r.series.to_string())
            .or_default()
            .push((r.ts, r.values[0].1));
    }
    let mut out = BTreeMap::new();
    for (series, mut rs) in by_series {
        rs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut d = Detector::new(DetectorParams::default());
        for (ts, x) in rs {
            out.insert((series.clone(), ts, x.to_bits()), d.update(ts, x).to_bits());
        }
    }
    out
}

/// The scores in the `anomaly` output files of `dirs` (the bits of each), asserting that no
/// reading was scored twice.
pub fn read_scores(dirs: &[&Path]) -> BTreeMap<ScoreKey, u64> {
    let mut got = BTreeMap::new();
    for dir in dirs {
        for line in read_lines(dir, "anomaly") {
            let v: Value = serde_json::from_str(&line).unwrap();
            let key = (
                v["series"].as_str().unwrap().to_string(),
                v["ts"].as_i64().unwrap(),
                v["value"].as_f64().unwrap().to_bits(),
            );
            let score = v["score"].as_f64().unwrap().to_bits();
            assert!(
                got.insert(key.clone(), score).is_none(),
                "{key:?} scored twice"
            );
        }
    }
    got
}

/// Asserts `got` scores every reading of `want` once, with the same score.
pub fn assert_scores_eq(got: &BTreeMap<ScoreKey, u64>, want: &BTreeMap<ScoreKey, u64>, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: every reading scored once");
    let differ: Vec<_> = want
        .iter()
        .filter(|(k, s)| got.get(*k) != Some(*s))
        .take(5)
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: scores differ from one detector per series: {differ:?}"
    );
}

/// Start of [`twelve_series`]' event time.
pub const T0: i64 = 1_700_000_000_000;

/// 12 series named `<prefix>/s<i>` over 6 partitions (two a partition), a reading a second
/// each from [`T0`], in time order across series with neighbours now and then swapped (1 s
/// out of order: readings are held across a stop or a barrier), noisy levels with spikes
/// and, in every third series, a level shift after reading `shift_at` (so a detector's
/// state matters to every score).
pub fn twelve_series(
    prefix: &str,
    per_series: i64,
    seed: u64,
    shift_at: i64,
) -> Vec<(i32, Reading)> {
    let mut rng = streamgauge::dataset::generate::SplitMix64(seed);
    let mut all = Vec::new();
    for s in 0..12 {
        let name = streamgauge::record::Sym::new(&format!("{prefix}/s{s}"));
        let mut msgs: Vec<Reading> = (0..per_series)
            .map(|i| {
                let mut x = 10.0 * (s + 1) as f64 + rng.next_f64();
                if rng.below(300) == 0 {
                    x += 20.0 * rng.next_f64();
                }
                if i > shift_at && s % 3 == 0 {
                    x += 5.0;
                }
                Reading::single(name, T0 + i * 1000, x)
            })
            .collect();
        for i in (1..msgs.len()).step_by(37) {
            msgs.swap(i - 1, i);
        }
        all.push(msgs);
    }
    (0..per_series as usize)
        .flat_map(|i| {
            all.iter()
                .enumerate()
                .map(move |(s, msgs)| (s as i32 % 6, msgs[i].clone()))
        })
        .collect()
}

/// Produces `items` to `topic`, each to its partition, and waits until they are delivered.
pub fn produce_to(brokers: &str, topic: &str, items: &[(i32, Reading)]) {
    let settings = ClientSettings::new(brokers);
    let mut p = streamgauge::kafka::producer::ReadingProducer::new(&settings, topic).unwrap();
    for (part, r) in items {
        p.send_to(r, *part).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// A dashboard of `hub` on a free loopback port that requires `token`.
pub fn dashboard(
    hub: &std::sync::Arc<streamgauge::dashboard::Hub>,
    token: &str,
) -> streamgauge::dashboard::Dashboard {
    streamgauge::dashboard::Dashboard::start(
        &streamgauge::dashboard::DashboardOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            explicit: true,
            token: Some(token.into()),
            hub: hub.config(),
        },
        hub.clone(),
    )
    .unwrap()
}

/// A standalone `streamgauge broker` on a free loopback port serving `topics`
/// (`name:partitions`) for `duration`, once it listens: its address and process.
pub fn broker_process(topics: &[&str], duration: &str) -> (String, Child) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamgauge"));
    cmd.args(["broker", "--listen", &addr, "--duration", duration]);
    for t in topics {
        cmd.args(["--topic", t]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&format!("the broker on {addr}"), 20, || {
        TcpStream::connect(&addr).is_ok()
    });
    (addr, child)
}

/// Kills a child process when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The browser checks' folder (`tests/browser`: scripts and their npm packages).
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// playwright-core from npm, installed into [`browser_dir`] when missing (`.ci/run` installs
/// it too; no browser is downloaded).
pub fn ensure_playwright() {
    let dir = browser_dir();
    if dir.join("node_modules/playwright-core").is_dir() {
        return;
    }
    let st = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .expect("npm is needed for the browser test (Node.js 20)");
    assert!(st.success(), "npm ci in {} failed", dir.display());
}
