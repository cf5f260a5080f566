//! The CCTV collector. Frames: generated JPEGs (an empty scene, then a bright square that
//! moves, then stops) served as snapshots (each request gets the next frame) and as an MJPEG
//! stream over HTTP; motion must be low, then high while the square moves, then low again,
//! and brightness must rise when it appears. Frigate: events in Frigate's MQTT format
//! (tests/data/frigate_events.jsonl) published to Mosquitto; the object counts in Kafka must
//! follow them. Both from the repository's example config.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{mosquitto, read_topic, wait_for};
use serde_json::Value;
use streamgauge::collect;
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::ClientSettings;

const EMPTY: usize = 8;
const MOVING: usize = 12;
const STILL: usize = 10;
const FRAMES: usize = EMPTY + MOVING + STILL;

/// Frame `i`: a dark, slightly textured scene; from frame EMPTY a 60x60 bright square that
/// moves 12 px a frame for MOVING frames, then stays.
fn frame(i: usize) -> Vec<u8> {
    let square = (i >= EMPTY).then(|| {
        let step = (i - EMPTY).min(MOVING - 1) as u32;
        (20 + 12 * step, 90)
    });
    let img = image::GrayImage::from_fn(320, 240, |x, y| match square {
        Some((sx, sy)) if (sx..sx + 60).contains(&x) && (sy..sy + 60).contains(&y) => {
            image::Luma([230])
        }
        _ => image::Luma([30 + ((x / 16 + y / 16) % 2) as u8 * 20]),
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .unwrap();
    out
}

fn serve_snapshots(listener: TcpListener, frames: Arc<Vec<Vec<u8>>>, stop: Arc<AtomicBool>) {
    let server = tiny_http::Server::from_listener(listener, None).unwrap();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        assert_eq!(req.url(), "/gate/snapshot.jpg");
        let body = frames[n.min(FRAMES - 1)].clone();
        n += 1;
        let mut resp = tiny_http::Response::from_data(body);
        resp.add_header(tiny_http::Header::from_bytes("Content-Type", "image/jpeg").unwrap());
        let _ = req.respond(resp);
    }
}

/// One MJPEG client: every frame once, 40 ms apart (every other part without a
/// Content-Length), then the connection stays open.
fn serve_mjpeg(listener: TcpListener, frames: Arc<Vec<Vec<u8>>>, stop: Arc<AtomicBool>) {
    let (mut s, _) = listener.accept().unwrap();
    let mut req = [0u8; 1024];
    let _ = std::io::Read::read(&mut s, &mut req);
    assert!(String::from_utf8_lossy(&req).starts_with("GET /yard/stream.mjpg"));
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\nCache-Control: no-cache\r\n\r\n"
    )
    .unwrap();
    for (i, f) in frames.iter().enumerate() {
        if i % 2 == 0 {
            write!(
                s,
                "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                f.len()
            )
            .unwrap();
        } else {
            write!(s, "--frame\r\nContent-Type: image/jpeg\r\n\r\n").unwrap();
        }
        s.write_all(f).unwrap();
        s.write_all(b"\r\n").unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks a camera's readings: brightness low then high; motion low, then high while the
/// square moves, then low (`low*, high+, low+`, nothing in between).
fn assert_motion_story(camera: &str, readings: &[Value]) {
    let motion: Vec<f64> = readings
        .iter()
        .filter_map(|r| r["values"]["motion"].as_f64())
        .collect();
    assert!(
        readings[0]["values"].get("motion").is_none(),
        "{camera}: the first frame has no motion"
    );
    let bright: Vec<f64> = readings
        .iter()
        .map(|r| r["values"]["brightness"].as_f64().unwrap())
        .collect();
    let dark_end = bright.iter().position(|b| *b > bright[0] + 0.02).unwrap();
    assert!(
        bright[dark_end..].iter().all(|b| *b > bright[0] + 0.02),
        "{camera}: {bright:?}"
    );
    let class: String = motion
        .iter()
        .map(|m| match *m {
            // Moving 12 px, the square changes 2 x 12 x 60 of 320 x 240 pixels: 0.019.
            m if m < 0.005 => 'L',
            m if m > 0.015 => 'H',
            _ => '?',
        })
        .collect();
    let runs: Vec<char> = {
        let mut r: Vec<char> = class.chars().collect();
        r.dedup();
        r
    };
    assert_eq!(runs, ['L', 'H', 'L'], "{camera}: {class} from {motion:?}");
    assert!(
        class.chars().filter(|c| *c == 'H').count() >= 3,
        "{camera}: {class}"
    );
}

#[test]
fn camera_frames_give_motion_that_rises_and_falls_and_frigate_events_give_object_counts() {
    common::init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let (_mosq, mqtt_port) = mosquitto(tmp.path());
    let frames = Arc::new((0..FRAMES).map(frame).collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let snap = TcpListener::bind("127.0.0.1:0").unwrap();
    let mjpeg = TcpListener::bind("127.0.0.1:0").unwrap();
    let (snap_port, mjpeg_port) = (
        snap.local_addr().unwrap().port(),
        mjpeg.local_addr().unwrap().port(),
    );
    let servers = [
        {
            let (f, s) = (frames.clone(), stop.clone());
            std::thread::spawn(move || serve_snapshots(snap, f, s))
        },
        {
            let (f, s) = (frames.clone(), stop.clone());
            std::thread::spawn(move || serve_mjpeg(mjpeg, f, s))
        },
    ];

    let broker = EmbeddedBroker::start(1).unwrap();
    let kafka = ClientSettings::new(broker.bootstrap());
    for t in ["cctv", "cctv-objects"] {
        broker.create_topic(t, 2).unwrap();
        broker.create_topic(&format!("{t}.quarantine"), 1).unwrap();
    }
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/collect-cctv.toml");
    let mut c = streamgauge::config::Settings::load(Some(&example))
        .unwrap()
        .collectors;
    assert_eq!(c.cctv.len(), 2);
    let cams = &mut c.cctv[0].cameras;
    cams[0].snapshot = Some(format!("http://127.0.0.1:{snap_port}/gate/snapshot.jpg"));
    cams[1].mjpeg = Some(format!("http://127.0.0.1:{mjpeg_port}/yard/stream.mjpg"));
    // Every MJPEG frame is analysed here (the server sends 25 a second).
    c.cctv[0].max_fps = 100.0;
    c.cctv[1].frigate.as_mut().unwrap().broker = format!("127.0.0.1:{mqtt_port}");
    let running = collect::start(&c, &kafka).unwrap();
    let counters: BTreeMap<String, _> = running.counters.iter().cloned().collect();

    let events: Vec<String> = include_str!("data/frigate_events.jsonl")
        .lines()
        .map(str::to_string)
        .collect();
    // Frigate: replay the events independently; the counts in Kafka are the changes of the
    // number of tracked (not false-positive, not ended) objects per camera and label.
    let mut active: BTreeMap<(String, String), BTreeMap<String, ()>> = BTreeMap::new();
    let mut want: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for line in &events {
        let e: Value = serde_json::from_str(line).unwrap();
        let a = &e["after"];
        let key = (
            a["camera"].as_str().unwrap().to_string(),
            a["label"].as_str().unwrap().to_string(),
        );
        let set = active.entry(key.clone()).or_default();
        let before = set.len();
        let id = a["id"].as_str().unwrap().to_string();
        if e["type"] == "end" || a["false_positive"] == true {
            set.remove(&id);
        } else {
            set.insert(id, ());
        }
        if set.len() != before {
            want.entry(format!("cctv/{}/{}", key.0, key.1))
                .or_default()
                .push(set.len());
        }
    }
    // Frigate's events, published as Frigate does (QoS 1 on frigate/events). Publish a
    // first one until the collector has subscribed and seen it, then the rest.
    let mut opts = rumqttc::MqttOptions::new("frigate", "127.0.0.1", mqtt_port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = rumqttc::Client::new(opts, 100);
    let pump = std::thread::spawn(move || for _ in conn.iter() {});
    let qos = rumqttc::QoS::AtLeastOnce;
    let t0 = Instant::now();
    while counters["frigate"].snapshot().received == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "frigate collector never subscribed"
        );
        client
            .publish("frigate/events", qos, false, events[0].clone())
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    for e in &events[1..] {
        client
            .publish("frigate/events", qos, false, e.clone())
            .unwrap();
    }
    client
        .publish("frigate/events", qos, false, "{garbage")
        .unwrap();
    // (The first event may have arrived more than once: a repeat changes no count.)
    let changes: usize = want.values().map(Vec::len).sum();
    wait_for("frigate events", 20, || {
        let s = counters["frigate"].snapshot();
        s.produced >= changes as u64 && s.quarantined >= 1
    });
    // The snapshot camera has served every frame and a few more of the last; the stream has
    // sent all of its frames.
    wait_for("camera frames", 30, || {
        counters["cameras"].snapshot().produced >= (2 * FRAMES + 3) as u64
    });
    std::thread::sleep(Duration::from_millis(500));
    let results: BTreeMap<String, _> = running
        .stop()
        .into_iter()
        .map(|(n, r)| (n, r.expect("collector ran")))
        .collect();
    stop.store(true, Ordering::Relaxed);
    drop(client);
    drop(pump); // its iterator ends once every client handle is gone; no need to wait
    for s in servers {
        s.join().unwrap();
    }

    // Frames. (The square covers 4.7% of the picture: brightness rises by about 0.035.)
    let mut per_camera: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (k, r) in read_topic(&kafka, "cctv") {
        per_camera.entry(k).or_default().push(r);
    }
    assert_eq!(
        per_camera.keys().collect::<Vec<_>>(),
        ["cctv/gate", "cctv/yard"]
    );
    for (cam, rs) in &mut per_camera {
        rs.sort_by_key(|r| r["ts"].as_i64().unwrap());
        assert_motion_story(cam, rs);
    }
    assert_eq!(
        per_camera["cctv/yard"].len(),
        FRAMES,
        "every MJPEG frame once"
    );
    assert_eq!(results["cameras"].quarantined, 0);

    let mut got: BTreeMap<String, Vec<(i64, usize)>> = BTreeMap::new();
    for (k, r) in read_topic(&kafka, "cctv-objects") {
        got.entry(k).or_default().push((
            r["ts"].as_i64().unwrap(),
            r["values"]["count"].as_f64().unwrap() as usize,
        ));
    }
    let got: BTreeMap<String, Vec<usize>> = got
        .into_iter()
        .map(|(k, mut v)| {
            v.sort();
            (k, v.into_iter().map(|(_, c)| c).collect())
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(want["cctv/front_door/person"], [1, 2, 1, 0]);
    assert_eq!(want["cctv/driveway/person"], [1, 0]);
    let q = read_topic(&kafka, "cctv-objects.quarantine");
    assert_eq!(q.len(), 1);
    assert!(q[0].1["reason"].as_str().unwrap().starts_with("not JSON"));
    let f = results["frigate"];
    assert_eq!(f.received, f.produced + f.quarantined + f.duplicates);
}
