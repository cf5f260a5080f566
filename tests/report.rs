//! `streamgauge report` on a real run's outputs: PNG and SVG per series and for throughput,
//! with exactly the anomalous readings marked; clear errors for an empty folder and an
//! unknown series.

mod common;

use streamgauge::engine::{Input, RunSpec};
use streamgauge::report::{render, ReportError, ReportSpec};

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn report_draws_series_with_their_anomalies_and_throughput() {
    let readings = common::load("nab:realKnownCause");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut spec = RunSpec::new("sensor_outliers", Input::memory(readings));
    spec.cluster.workers = 2;
    spec.output_dir = Some(out.clone());
    common::run_ok(spec);

    let key = "realKnownCause/nyc_taxi/value";
    let points = 1500;
    let img = tmp.path().join("img");
    let files = render(&ReportSpec {
        input: out.clone(),
        output: img.clone(),
        series: vec![key.into()],
        top: 4,
        points,
    })
    .unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "series_realKnownCause_nyc_taxi_value.png",
            "series_realKnownCause_nyc_taxi_value.svg",
            "throughput.png",
            "throughput.svg"
        ]
    );
    assert_eq!(png_size(&std::fs::read(&files[0]).unwrap()), (1200, 480));
    assert_eq!(png_size(&std::fs::read(&files[2]).unwrap()), (1200, 420));

    // The SVG marks exactly the anomalous readings among the last `points` (plus the
    // legend's sample marker).
    let mut rows: Vec<(i64, bool)> = common::read_lines(&out, "outlier_scores")
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["series"] == "realKnownCause/nyc_taxi")
        .map(|v| (v["ts"].as_i64().unwrap(), v["anomalous"].as_bool().unwrap()))
        .collect();
    rows.sort();
    let want = rows[rows.len() - points..].iter().filter(|r| r.1).count();
    assert!(
        want > 0,
        "nyc_taxi has anomalies in its last {points} readings"
    );
    let svg = std::fs::read_to_string(&files[1]).unwrap();
    assert!(svg.contains("<svg") && svg.contains(key) && svg.contains("forecast"));
    assert_eq!(svg.matches("<circle").count(), want + 1);

    // Without --series: the series with the most anomalies.
    let top = render(&ReportSpec {
        input: out.clone(),
        output: tmp.path().join("top"),
        series: vec![],
        top: 2,
        points,
    })
    .unwrap();
    assert_eq!(top.len(), 6);

    let e = render(&ReportSpec {
        input: out.clone(),
        output: img.clone(),
        series: vec!["nope/value".into()],
        top: 1,
        points,
    })
    .unwrap_err();
    assert!(matches!(e, ReportError::UnknownSeries(_)), "{e}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = render(&ReportSpec {
        input: empty,
        output: img,
        series: vec![],
        top: 1,
        points,
    })
    .unwrap_err();
    assert!(e.to_string().contains("outlier_scores"), "{e}");
}
