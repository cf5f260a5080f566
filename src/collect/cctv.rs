//! The CCTV collector, in one of two modes.
//!
//! **Frames** (`cameras`): per camera, JPEG snapshots polled over HTTP(S) every `interval`, or
//! an MJPEG stream (`multipart/x-mixed-replace`) read as it comes (at most `max_fps` frames a
//! second are analysed; the rest are read and skipped). Each frame is decoded, turned to
//! grey and scaled to `analysis_width` pixels wide; then
//! - `motion`: the fraction of pixels whose grey level differs from the previous frame's by
//!   more than `threshold` (0-255), in [0, 1]; absent on a camera's first frame, and after a
//!   change of frame size;
//! - `brightness`: the mean grey level scaled to [0, 1].
//!
//! One reading per analysed frame, series `<prefix><camera>` (prefix default `cctv/`),
//! stamped with the time the frame was received. A frame that cannot be decoded is
//! quarantined (its first bytes kept as the payload); a snapshot that cannot be fetched or a
//! stream that breaks is a failure of the source (counted, quarantine topic, then retried
//! with backoff).
//!
//! **Frigate** (`frigate`): object-detection events as Frigate NVR publishes them over MQTT
//! (topic `frigate/events`: `{"type": "new"|"update"|"end", "before": {...}, "after": {"id",
//! "camera", "label", "false_positive", "frame_time", "end_time", ...}}`). The collector keeps
//! the set of tracked objects per camera and label (an object counts from its first event
//! that is not a false positive until its `end`) and, whenever a count changes, produces a
//! reading `<prefix><camera>/<label>` with value `count`, stamped with the event's
//! `frame_time` (or `end_time` for an end). Two changes of one series in the same millisecond
//! get consecutive milliseconds, so none is taken for a duplicate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::clean::{Candidate, CleanConfig, RawTime, RawValue};
use super::mqtt::{MqttConfig, PayloadKind};
use super::{now_ms, sleep_unless, Backoff, CollectError, Collector, Sink};
use crate::duration::HumanDuration;

/// One camera.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    /// Camera name (the series is `<prefix><name>`).
    pub name: String,
    /// URL of a JPEG snapshot, polled every `interval`.
    pub snapshot: Option<String>,
    /// URL of an MJPEG stream.
    pub mjpeg: Option<String>,
}

/// Frigate's MQTT connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrigateConfig {
    /// MQTT broker `host:port`.
    pub broker: String,
    /// Topic Frigate publishes events to (default `frigate/events`).
    #[serde(default = "default_events_topic")]
    pub topic: String,
    /// MQTT username.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<String>,
    /// Connect with TLS.
    #[serde(default)]
    pub tls: bool,
}

fn default_events_topic() -> String {
    "frigate/events".into()
}

/// One CCTV collector's config (a `[[cctv]]` table): `cameras` or `frigate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CctvConfig {
    /// Name in logs, counters and quarantine sources.
    #[serde(default = "default_name")]
    pub name: String,
    /// Frames mode: the cameras.
    #[serde(default)]
    pub cameras: Vec<Camera>,
    /// Frigate mode: where the events come from.
    pub frigate: Option<FrigateConfig>,
    /// Snapshot poll interval (default 1 s).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Most MJPEG frames analysed per second per camera (default 5).
    #[serde(default = "default_fps")]
    pub max_fps: f64,
    /// Grey-level change (0-255) above which a pixel counts as moved (default 25).
    #[serde(default = "default_threshold")]
    pub threshold: u8,
    /// Width frames are scaled to before analysis (default 160).
    #[serde(default = "default_width")]
    pub analysis_width: u32,
    /// Longest wait for a connection or data (default 10 s).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Series prefix (default `cctv/`).
    #[serde(default = "default_prefix")]
    pub series_prefix: String,
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
    "cctv".into()
}
fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_fps() -> f64 {
    5.0
}
fn default_threshold() -> u8 {
    25
}
fn default_width() -> u32 {
    160
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_prefix() -> String {
    "cctv/".into()
}

/// Motion and brightness of a camera's frames, one after another.
#[derive(Debug, Default)]
pub struct FrameAnalyser {
    width: u32,
    threshold: u8,
    prev: Option<(u32, u32, Vec<u8>)>,
}

/// What one frame shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameStats {
    /// Fraction of pixels that changed since the previous frame (None: no previous frame).
    pub motion: Option<f64>,
    /// Mean grey level in [0, 1].
    pub brightness: f64,
}

impl FrameAnalyser {
    /// An analyser scaling to `width` pixels, counting changes above `threshold`.
    pub fn new(width: u32, threshold: u8) -> Self {
        FrameAnalyser {
            width: width.max(1),
            threshold,
            prev: None,
        }
    }

    /// Decodes a JPEG and compares it with the previous frame.
    pub fn frame(&mut self, jpeg: &[u8]) -> Result<FrameStats, String> {
        let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
            .map_err(|e| format!("not a readable JPEG: {e}"))?;
        let (w, h) = (img.width(), img.height());
        if w == 0 || h == 0 {
            return Err("empty image".into());
        }
        let tw = self.width.min(w);
        let th = ((h as u64 * tw as u64) / w as u64).max(1) as u32;
        let grey = image::imageops::thumbnail(&img.to_luma8(), tw, th).into_raw();
        let brightness =
            grey.iter().map(|&p| p as u64).sum::<u64>() as f64 / (grey.len() as f64 * 255.0);
        let motion = match &self.prev {
            Some((pw, ph, prev)) if (*pw, *ph) == (tw, th) => {
                let moved = prev
                    .iter()
                    .zip(&grey)
                    .filter(|(a, b)| a.abs_diff(**b) > self.threshold)
                    .count();
                Some(moved as f64 / grey.len() as f64)
            }
            _ => None,
        };
        self.prev = Some((tw, th, grey));
        Ok(FrameStats { motion, brightness })
    }
}

/// Tracked objects per camera and label, from Frigate events.
#[derive(Debug, Default)]
pub struct FrigateCounts {
    active: HashMap<(String, String), BTreeSet<String>>,
    last_ms: HashMap<(String, String), i64>,
}

/// A count that changed: camera, label, count, event time (ms).
pub type CountChange = (String, String, usize, i64);

impl FrigateCounts {
    /// Applies one event; returns the change of count it makes, if any.
    pub fn apply(&mut self, ev: &Value) -> Result<Option<CountChange>, String> {
        let kind = ev
            .get("type")
            .and_then(Value::as_str)
            .ok_or("event without a type")?;
        let after = ev.get("after").ok_or("event without `after`")?;
        let field = |k: &str| {
            after
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("event without after.{k}"))
        };
        let (id, camera, label) = (field("id")?, field("camera")?, field("label")?);
        let time_s = match kind {
            "end" => after
                .get("end_time")
                .and_then(Value::as_f64)
                .or_else(|| after.get("frame_time").and_then(Value::as_f64)),
            "new" | "update" => after.get("frame_time").and_then(Value::as_f64),
            other => return Err(format!("unknown event type {other:?}")),
        }
        .filter(|t| t.is_finite() && *t > 0.0)
        .ok_or("event without a usable frame_time / end_time")?;
        let false_positive = after
            .get("false_positive")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let key = (camera.clone(), label.clone());
        let set = self.active.entry(key.clone()).or_default();
        let changed = if kind == "end" || false_positive {
            set.remove(&id)
        } else {
            set.insert(id)
        };
        if !changed {
            return Ok(None);
        }
        let count = set.len();
        let mut ms = (time_s * 1000.0).round() as i64;
        let last = self.last_ms.entry(key).or_insert(i64::MIN);
        if ms <= *last {
            ms = *last + 1;
        }
        *last = ms;
        Ok(Some((camera, label, count, ms)))
    }
}

impl CctvConfig {
    fn tags(&self) -> Vec<(String, String)> {
        self.tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn frigate_mqtt(&self, f: &FrigateConfig) -> MqttConfig {
        MqttConfig {
            name: self.name.clone(),
            broker: f.broker.clone(),
            topics: vec![f.topic.clone()],
            kafka_topic: self.kafka_topic.clone(),
            qos: 1,
            version: 3,
            client_id: None,
            username: f.username.clone(),
            password: f.password.clone(),
            tls: f.tls,
            ca_file: None,
            payload: PayloadKind::Json,
            series_field: None,
            time_field: None,
            value_fields: Vec::new(),
            value_name: "count".into(),
            units: BTreeMap::new(),
            tags: self.tags.clone(),
            clean: self.clean.clone(),
        }
    }

    fn run_frigate(
        &self,
        f: &FrigateConfig,
        sink: &mut Sink,
        stop: &AtomicBool,
    ) -> Result<(), CollectError> {
        let mqtt = self.frigate_mqtt(f);
        let mut counts = FrigateCounts::default();
        let source = format!("mqtt://{}", f.broker);
        super::mqtt::subscribe(&mqtt, stop, &mut |topic, payload| {
            let src = format!("{source}/{topic}");
            let ev = match serde_json::from_slice::<Value>(payload) {
                Ok(v) => v,
                Err(e) => return sink.offer(&src, payload, Err(format!("not JSON: {e}"))),
            };
            match counts.apply(&ev) {
                Ok(None) => Ok(()),
                Ok(Some((camera, label, count, ms))) => {
                    let cand = Candidate {
                        series: Some(format!("{}{camera}/{label}", self.series_prefix)),
                        time: Some(RawTime::Millis(ms)),
                        values: vec![("count".into(), RawValue::Number(count as f64), None)],
                        tags: self.tags(),
                    };
                    sink.offer(&src, payload, Ok(cand))
                }
                Err(why) => sink.offer(&src, payload, Err(why)),
            }
        })
    }

    fn run_frames(&self, sink: &mut Sink, stop: &AtomicBool) -> Result<(), CollectError> {
        let (tx, rx) = mpsc::sync_channel::<Event>(64);
        // The camera threads are not waited for: one blocked reading a silent stream notices
        // `quit` when its read times out, and ends on its own.
        let quit = Arc::new(AtomicBool::new(false));
        for cam in &self.cameras {
            let (me, cam, tx, quit) = (self.clone(), cam.clone(), tx.clone(), quit.clone());
            std::thread::Builder::new()
                .name(format!("cctv-{}", cam.name))
                .spawn(move || me.camera_loop(&cam, &tx, &quit))
                .map_err(|e| CollectError::Source {
                    collector: self.name.clone(),
                    why: e.to_string(),
                })?;
        }
        drop(tx);
        let _quit_on_return = QuitOnDrop(quit);
        let mut analysers: HashMap<String, FrameAnalyser> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Event::Frame {
                    camera,
                    source,
                    bytes,
                    received,
                }) => {
                    let a = analysers
                        .entry(camera.clone())
                        .or_insert_with(|| FrameAnalyser::new(self.analysis_width, self.threshold));
                    let parsed = a.frame(&bytes).map(|st| {
                        let mut values = Vec::new();
                        if let Some(m) = st.motion {
                            values.push(("motion".into(), RawValue::Number(m), None));
                        }
                        values.push(("brightness".into(), RawValue::Number(st.brightness), None));
                        Candidate {
                            series: Some(format!("{}{camera}", self.series_prefix)),
                            time: Some(RawTime::Received(received)),
                            values,
                            tags: self.tags(),
                        }
                    });
                    let head = &bytes[..bytes.len().min(64)];
                    sink.offer(&source, head, parsed)?;
                }
                Ok(Event::Failed { source, why }) => sink.source_failed(&source, &why)?,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(())
    }

    /// Fetches one camera's frames into `tx` until `stop`.
    fn camera_loop(&self, cam: &Camera, tx: &mpsc::SyncSender<Event>, stop: &AtomicBool) {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(self.timeout.0)
            .timeout_read(self.timeout.0)
            .tls_connector(std::sync::Arc::new(match native_tls::TlsConnector::new() {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.send(Event::Failed {
                        source: cam.name.clone(),
                        why: format!("TLS: {e}"),
                    });
                    return;
                }
            }))
            .build();
        let mut backoff = Backoff::default();
        let fail = |source: &str, why: String| {
            tx.send(Event::Failed {
                source: source.to_string(),
                why,
            })
            .is_ok()
        };
        if let Some(url) = &cam.snapshot {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next && sleep_unless(stop, next - now) {
                    return;
                }
                next = Instant::now() + self.interval.0;
                let got = agent
                    .get(url)
                    .call()
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        let mut b = Vec::new();
                        r.into_reader()
                            .take(MAX_FRAME as u64)
                            .read_to_end(&mut b)
                            .map(|_| b)
                            .map_err(|e| e.to_string())
                    });
                match got {
                    Ok(bytes) => {
                        backoff.reset();
                        if tx
                            .send(Event::Frame {
                                camera: cam.name.clone(),
                                source: url.clone(),
                                bytes,
                                received: now_ms(),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(why) => {
                        if !fail(url, format!("snapshot failed: {why}")) {
                            return;
                        }
                        next = Instant::now() + backoff.next_wait().max(self.interval.0);
                    }
                }
            }
        } else if let Some(url) = &cam.mjpeg {
            let min_gap = Duration::from_secs_f64(1.0 / self.max_fps);
            while !stop.load(Ordering::Relaxed) {
                let why = match agent.get(url).call() {
                    Ok(resp) => {
                        backoff.reset();
                        let boundary = resp
                            .header("content-type")
                            .and_then(|ct| ct.split("boundary=").nth(1))
                            .map(|b| b.trim_matches('"').trim_start_matches("--").to_string());
                        let mut r = BufReader::new(resp.into_reader());
                        let mut last = None::<Instant>;
                        loop {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            match next_part(&mut r, boundary.as_deref()) {
                                Ok(Some(bytes)) => {
                                    if last.is_some_and(|l| l.elapsed() < min_gap) {
                                        continue;
                                    }
                                    last = Some(Instant::now());
                                    if tx
                                        .send(Event::Frame {
                                            camera: cam.name.clone(),
                                            source: url.clone(),
                                            bytes,
                                            received: now_ms(),
                                        })
                                        .is_err()
                                    {
                                        return;
                                    }
                                }
                                Ok(None) => break "the stream ended".to_string(),
                                Err(e) => break format!("stream broke: {e}"),
                            }
                        }
                    }
                    Err(e) => format!("connect: {e}"),
                };
                if stop.load(Ordering::Relaxed) || !fail(url, why) {
                    return;
                }
                sleep_unless(stop, backoff.next_wait());
            }
        }
    }
}

/// Sets the flag when dropped (on every way out of a function).
struct QuitOnDrop(Arc<AtomicBool>);

impl Drop for QuitOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Largest frame accepted (bytes).
const MAX_FRAME: usize = 32 << 20;

enum Event {
    Frame {
        camera: String,
        source: String,
        bytes: Vec<u8>,
        received: i64,
    },
    Failed {
        source: String,
        why: String,
    },
}

/// Reads the next part of a multipart MJPEG stream: skips to a boundary line, reads the part
/// headers, then `Content-Length` bytes (or up to the next boundary without one). `Ok(None)`
/// at the end of the stream.
pub fn next_part(r: &mut impl BufRead, boundary: Option<&str>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    // To the boundary line.
    loop {
        line.clear();
        if read_line_lossy(r, &mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim();
        let is_boundary = match boundary {
            Some(b) => l.trim_start_matches("--") == b,
            None => l.starts_with("--"),
        };
        if is_boundary {
            break;
        }
    }
    let mut length = None;
    loop {
        line.clear();
        if read_line_lossy(r, &mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
    }
    match length {
        Some(n) if n <= MAX_FRAME => {
            let mut buf = vec![0; n];
            r.read_exact(&mut buf)?;
            Ok(Some(buf))
        }
        Some(n) => Err(std::io::Error::other(format!(
            "part of {n} bytes is too large"
        ))),
        None => {
            // No length: the JPEG ends with FF D9 before the next boundary.
            let mut buf = Vec::new();
            loop {
                let mut byte = [0u8];
                if r.read(&mut byte)? == 0 {
                    return Ok(None);
                }
                buf.push(byte[0]);
                if buf.ends_with(&[0xFF, 0xD9]) {
                    return Ok(Some(buf));
                }
                if buf.len() > MAX_FRAME {
                    return Err(std::io::Error::other("part without an end"));
                }
            }
        }
    }
}

fn read_line_lossy(r: &mut impl BufRead, out: &mut String) -> std::io::Result<usize> {
    let mut bytes = Vec::new();
    let n = r.take(8192).read_until(b'\n', &mut bytes)?;
    out.push_str(&String::from_utf8_lossy(&bytes));
    Ok(n)
}

impl Collector for CctvConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "cctv"
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
        match (&self.frigate, self.cameras.is_empty()) {
            (Some(_), false) | (None, true) => {
                return Err(bad(
                    "give either cameras (frames) or frigate (events), not both".into(),
                ))
            }
            (Some(f), true) => {
                super::host_port(&f.broker).map_err(|e| bad(format!("frigate.broker = {e}")))?;
            }
            (None, false) => {}
        }
        let mut names = BTreeSet::new();
        for c in &self.cameras {
            if c.snapshot.is_some() == c.mjpeg.is_some() {
                return Err(bad(format!(
                    "camera {}: give exactly one of snapshot or mjpeg",
                    c.name
                )));
            }
            let url = c
                .snapshot
                .as_ref()
                .or(c.mjpeg.as_ref())
                .cloned()
                .unwrap_or_default();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(format!(
                    "camera {}: {url:?} is not an http(s) URL",
                    c.name
                )));
            }
            if !names.insert(&c.name) {
                return Err(bad(format!("two cameras are named {}", c.name)));
            }
        }
        if !(self.max_fps > 0.0 && self.max_fps <= 100.0) {
            return Err(bad("max_fps: between 0 and 100".into()));
        }
        Ok(())
    }

    fn run(&self, sink: &mut Sink, stop: &AtomicBool) -> Result<(), CollectError> {
        match &self.frigate {
            Some(f) => self.run_frigate(f, sink, stop),
            None => self.run_frames(sink, stop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(square_at: Option<(u32, u32)>) -> Vec<u8> {
        let img = image::GrayImage::from_fn(160, 120, |x, y| match square_at {
            Some((sx, sy)) if (sx..sx + 30).contains(&x) && (sy..sy + 30).contains(&y) => {
                image::Luma([240])
            }
            _ => image::Luma([40]),
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn motion_rises_when_a_shape_moves_and_falls_when_it_stops() {
        let mut a = FrameAnalyser::new(160, 25);
        let first = a.frame(&jpeg(None)).unwrap();
        assert_eq!(first.motion, None);
        assert_eq!(a.frame(&jpeg(None)).unwrap().motion, Some(0.0));
        let appear = a.frame(&jpeg(Some((10, 10)))).unwrap();
        // A 30x30 square of 160x120 pixels.
        assert!(
            (appear.motion.unwrap() - 900.0 / 19200.0).abs() < 0.01,
            "{appear:?}"
        );
        assert!(appear.brightness > first.brightness);
        let moved = a.frame(&jpeg(Some((80, 40)))).unwrap();
        assert!(moved.motion.unwrap() > 0.08, "{moved:?}");
        let still = a.frame(&jpeg(Some((80, 40)))).unwrap();
        assert!(still.motion.unwrap() < 0.005, "{still:?}");
        assert!(a.frame(b"not a jpeg").unwrap_err().contains("JPEG"));
    }

    #[test]
    fn frigate_counts_follow_events() {
        let ev = |t: &str, id: &str, label: &str, time: f64, fp: bool| {
            serde_json::json!({"type": t, "before": {}, "after": {"id": id, "camera": "gate",
                "label": label, "frame_time": time, "end_time": if t == "end" { Value::from(time) } else { Value::Null },
                "false_positive": fp}})
        };
        let mut c = FrigateCounts::default();
        assert_eq!(
            c.apply(&ev("new", "a", "person", 1.0, false)).unwrap(),
            Some(("gate".into(), "person".into(), 1, 1000))
        );
        assert_eq!(
            c.apply(&ev("update", "a", "person", 1.5, false)).unwrap(),
            None
        );
        // Same millisecond: pushed to the next one.
        assert_eq!(
            c.apply(&ev("new", "b", "person", 1.0, false)).unwrap(),
            Some(("gate".into(), "person".into(), 2, 1001))
        );
        assert_eq!(c.apply(&ev("new", "x", "car", 2.0, true)).unwrap(), None);
        assert_eq!(
            c.apply(&ev("update", "b", "person", 3.0, true))
                .unwrap()
                .unwrap()
                .2,
            1
        );
        assert_eq!(
            c.apply(&ev("end", "a", "person", 4.0, false))
                .unwrap()
                .unwrap()
                .2,
            0
        );
        assert!(c.apply(&serde_json::json!({"type": "new"})).is_err());
    }

    #[test]
    fn multipart_parts_with_and_without_length() {
        let body = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\nabcd\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\nxy\xFF\xD9\r\n--frame\r\n";
        let mut r = BufReader::new(&body[..]);
        assert_eq!(next_part(&mut r, Some("frame")).unwrap().unwrap(), b"abcd");
        assert_eq!(
            next_part(&mut r, Some("frame")).unwrap().unwrap(),
            b"xy\xFF\xD9"
        );
        assert_eq!(next_part(&mut r, Some("frame")).unwrap(), None);
    }
}
