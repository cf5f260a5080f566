//! Oracle tests: real datasets through the embedded broker (and straight from the dataset,
//! and from CSV blocks) into `series_stats` on 1, 2 and 4 workers; every window must equal a
//! plain batch computation over the same data.

mod common;

use std::time::Duration;

use common::*;
use streamgauge::engine::Input;
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::kafka::producer::ReadingProducer;
use streamgauge::kafka::ClientSettings;

/// Replays `dataset` into the embedded broker, then runs `series_stats --until-end`.
fn until_end_through_broker(dataset: &str, window: Duration) {
    let readings = load(dataset);
    let want = oracle(&readings, window.as_millis() as i64);
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("readings", 4).unwrap();
    let mut p = ReadingProducer::new(&ClientSettings::new(broker.bootstrap()), "readings").unwrap();
    for r in &readings {
        p.send(r).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let what = format!("{dataset} via Kafka");
    assert_until_end_matches(
        broker.bootstrap(),
        "readings",
        readings.len(),
        &want,
        window,
        Duration::from_millis(300),
        &what,
    );
    same_from_dataset(dataset, &readings, &want, window);
}

/// Runs `series_stats` on a live topic while the dataset is replayed into it (the embedded
/// broker keeps only the newest 5 MB per partition, so a large single-series set must be read
/// as it is written), then stops once every reading arrived.
fn live_through_broker(dataset: &str, window: Duration) {
    let readings = load(dataset);
    let want = oracle(&readings, window.as_millis() as i64);
    let broker = EmbeddedBroker::start(1).unwrap();
    for workers in [1, 2, 4] {
        let topic = format!("live{workers}");
        broker.create_topic(&topic, 4).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(
            kafka_input(broker.bootstrap(), &topic),
            workers,
            window,
            dir.path(),
        );
        if let streamgauge::engine::Input::Kafka(k) = &mut s.input {
            k.until_end = false;
        }
        let (metrics, stop) = (s.metrics.clone(), s.stop.clone());
        let run = std::thread::spawn(move || run_ok(s));
        let mut p = ReadingProducer::new(&ClientSettings::new(broker.bootstrap()), &topic).unwrap();
        let started = std::time::Instant::now();
        for (i, r) in readings.iter().enumerate() {
            p.send(r).unwrap();
            if i % 5000 == 4999 {
                // Keep the producer within the broker's retention of the consumer.
                p.flush(Duration::from_secs(30)).unwrap();
                while metrics.snapshot().readings_in + 10_000 < i as u64
                    && started.elapsed() < Duration::from_secs(120)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        p.flush(Duration::from_secs(30)).unwrap();
        while metrics.snapshot().readings_in < readings.len() as u64 {
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "{dataset}: only {} of {} readings arrived",
                metrics.snapshot().readings_in,
                readings.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let report = run.join().unwrap();
        assert_eq!(
            report.metrics.readings_in,
            readings.len() as u64,
            "{dataset} w={workers}"
        );
        assert_eq!(report.metrics.late, 0);
        assert_windows_eq(
            &read_windows(dir.path()),
            &want,
            &format!("{dataset} live via Kafka, {workers} workers"),
        );
    }
    same_from_dataset(dataset, &readings, &want, window);
}

fn same_from_dataset(
    dataset: &str,
    readings: &[streamgauge::record::Reading],
    want: &std::collections::BTreeMap<WinKey, WinVal>,
    window: Duration,
) {
    // The same dataflow fed straight from the dataset gives the same windows.
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let input = Input::memory(readings.to_vec());
        run_ok(spec(input, workers, window, dir.path()));
        assert_windows_eq(
            &read_windows(dir.path()),
            want,
            &format!("{dataset} from dataset, {workers} workers"),
        );
    }
}

#[test]
fn nab_machine_temperature_matches_batch_oracle() {
    until_end_through_broker(
        "nab:machine_temperature_system_failure",
        Duration::from_secs(3600),
    );
}

#[test]
fn gas_turbine_eleven_channels_match_batch_oracle() {
    live_through_broker("gas_turbine_emission_hourly", Duration::from_secs(6 * 3600));
}

#[test]
fn all_58_nab_series_load_and_match_at_default_window() {
    let readings = load("nab");
    let series: std::collections::BTreeSet<_> = readings.iter().map(|r| r.series).collect();
    assert_eq!(series.len(), 58);
    assert_eq!(readings.len(), 365_558);
    let want = oracle(&readings, 10_000);
    let dir = tempfile::tempdir().unwrap();
    let input = Input::memory(readings);
    run_ok(spec(input, 2, Duration::from_secs(10), dir.path()));
    assert_windows_eq(&read_windows(dir.path()), &want, "all of NAB, 2 workers");
}

#[test]
fn w1_csv_blocks_match_batch_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, readings) = w1_csv(dir.path(), 300_000, 3);
    let want = oracle(&readings, 10_000);
    for workers in [1, 2, 4] {
        let out = dir.path().join(format!("out{workers}"));
        let report = run_ok(spec(
            Input::Csv(csv.clone()),
            workers,
            Duration::from_secs(10),
            &out,
        ));
        assert_eq!(report.metrics.readings_in, 300_000);
        assert_windows_eq(
            &read_windows(&out),
            &want,
            &format!("W1 CSV, {workers} workers"),
        );
    }
    // The CSV writer (which formats a one-reading window's number once and each window's
    // times once) writes the very text the JSON writer does. One worker, so both runs add
    // each window's readings in the same order (with more, the readers' interleaving can
    // change the last bit of a sum).
    let raw = |line: &str, key: &str| -> String {
        let at = line.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
        let len = line[at..].find([',', '}']).unwrap();
        line[at..at + len].to_string()
    };
    let fields = [
        "window_start",
        "window_end",
        "count",
        "mean",
        "min",
        "max",
        "std",
    ];
    let mut json = std::collections::BTreeMap::new();
    for line in common::read_lines(&dir.path().join("out1"), "series_stats") {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let key = format!(
            "{},{}",
            v["series"].as_str().unwrap(),
            v["field"].as_str().unwrap()
        );
        let rest: Vec<String> = fields.iter().map(|k| raw(&line, k)).collect();
        json.insert((key, rest[0].clone()), rest.join(","));
    }
    let out = dir.path().join("csv1");
    let mut s = spec(Input::Csv(csv), 1, Duration::from_secs(10), &out);
    s.output_format = streamgauge::engine::output::OutputFormat::Csv;
    run_ok(s);
    let text = std::fs::read_to_string(out.join("series_stats.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("series,field,window_start,window_end,count,mean,min,max,std")
    );
    let (mut rows, mut ones) = (0, 0);
    for line in lines {
        let c: Vec<&str> = line.splitn(3, ',').collect();
        let rest = c[2];
        let start = rest.split(',').next().unwrap();
        let want = json
            .get(&(format!("{},{}", c[0], c[1]), start.to_string()))
            .unwrap_or_else(|| panic!("not in the JSON output: {line}"));
        assert_eq!(rest, want, "{line}");
        rows += 1;
        ones += usize::from(rest.split(',').nth(2) == Some("1"));
    }
    assert_eq!(rows, json.len());
    assert!(ones > 1000, "one-reading windows: {ones}");
}

#[test]
fn every_builtin_manifest_loads_every_row() {
    // (dataset, data rows in its files, series, rows quarantined)
    let expected = [
        ("nab", 365_558, 58, 0),
        ("weather_vega", 8_759 * 2, 2, 0),
        ("stocks_vega", 5_105, 1, 0),
        // 104 hours without values: two are the hours daylight saving skips.
        ("traffic_i94", 17_520 - 104, 1, 104),
        ("gas_turbine_emission_hourly", 36_733, 1, 0),
        ("melbourne_pedestrian_counts_hourly", 66_037, 4, 0),
        ("flights_3m_vega", 3_000_000, 0, 0),
        ("stocks_gafa_tsibbledata", 5_032, 4, 0),
        ("vic_electricity", 52_608, 1, 0),
        // Twelve rows of the Yosemite file hold "NaN" (a sensor gap).
        ("weather_yosemite_5min_prophet", 18_721 - 12, 1, 12),
    ];
    assert_eq!(
        expected.len(),
        streamgauge::dataset::manifest::BUILTIN.len(),
        "a new manifest needs a row here"
    );
    for (name, rows, series, bad) in expected {
        let m = streamgauge::dataset::Manifest::builtin(name).unwrap();
        let folder = streamgauge::dataset::locate(&m, Some(&common::data_dir())).unwrap();
        let loaded = streamgauge::dataset::load::load_manifest(&m, &folder, None).unwrap();
        assert_eq!(loaded.quarantined.len(), bad, "{name}: quarantined");
        assert!(
            loaded
                .quarantined
                .iter()
                .all(|q| q.reason.contains("non-finite")
                    || (name == "traffic_i94"
                        && (q.reason.contains("empty") || q.reason.contains("does not exist")))),
            "{name}: {:?}",
            loaded.quarantined.first()
        );
        let readings = loaded.readings;
        assert_eq!(readings.len(), rows, "{name}: rows");
        assert!(
            readings.windows(2).all(|w| w[0].ts <= w[1].ts),
            "{name}: sorted by event time"
        );
        let distinct: std::collections::HashSet<_> = readings.iter().map(|r| r.series).collect();
        if series > 0 {
            assert_eq!(distinct.len(), series, "{name}: series");
        }
        if name == "flights_3m_vega" {
            // The Parquet loader: origins as series, two values, the destination as a tag.
            assert!(
                distinct.len() > 200,
                "flights: {} origin airports",
                distinct.len()
            );
            let r = &readings[0];
            assert_eq!(
                r.values.iter().map(|(n, _)| &**n).collect::<Vec<_>>(),
                ["delay_min", "distance_mi"]
            );
            assert_eq!(r.ts, 978_307_260_000, "2001-01-01 00:01:00 UTC");
            assert_eq!(&*r.tags[0].0, "destination");
            let want = oracle(&readings, 86_400_000);
            let dir = tempfile::tempdir().unwrap();
            let input = Input::memory(readings);
            run_ok(spec(input, 2, Duration::from_secs(86_400), dir.path()));
            assert_windows_eq(
                &read_windows(dir.path()),
                &want,
                "flights (Parquet), daily windows, 2 workers",
            );
        }
    }
}

/// US daylight saving since 2007, as the law states it (an oracle written without a tz
/// library): from 02:00 local standard time on the second Sunday of March to 02:00 local
/// daylight time on the first Sunday of November. The UTC offset of Central time, in hours,
/// for a local date and hour that exist (in the repeated hour of November: its first pass).
fn us_central_offset(y: i32, m: u32, d: u32, h: u32) -> i64 {
    use chrono::Datelike;
    // The n-th Sunday of a month.
    let sunday = |month: u32, n: u32| {
        let first = chrono::NaiveDate::from_ymd_opt(y, month, 1).unwrap();
        let to_sunday = (7 - first.weekday().num_days_from_sunday()) % 7;
        1 + to_sunday + 7 * (n - 1)
    };
    let (start, end) = (sunday(3, 2), sunday(11, 1));
    let daylight = match m {
        4..=10 => true,
        3 => d > start || (d == start && h >= 2),
        11 => d < end || (d == end && h < 2),
        _ => false,
    };
    if daylight {
        -5
    } else {
        -6
    }
}

#[test]
fn local_times_in_a_named_zone_follow_daylight_saving_on_the_i94_traffic_data() {
    use chrono::{Datelike, Timelike};
    let m = streamgauge::dataset::Manifest::builtin("traffic_i94").unwrap();
    let folder = streamgauge::dataset::locate(&m, Some(&common::data_dir())).unwrap();
    let loaded = streamgauge::dataset::load::load_manifest(&m, &folder, None).unwrap();
    // The file's own local times, row by row, with their volumes.
    let text = std::fs::read_to_string(folder.join("autots_traffic_hourly_2016_2018.csv")).unwrap();
    let rows: Vec<(chrono::NaiveDateTime, &str)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split(',');
            let t = chrono::NaiveDateTime::parse_from_str(f.next().unwrap(), "%Y-%m-%d %H:%M:%S")
                .unwrap();
            (t, f.nth(4).unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 17_520);
    // Every row with a volume is a reading at its local time minus the lawful offset.
    let kept: Vec<_> = rows.iter().filter(|(_, v)| !v.is_empty()).collect();
    assert_eq!(kept.len(), loaded.readings.len());
    for ((local, volume), r) in kept.iter().zip(&loaded.readings) {
        let offset = us_central_offset(local.year(), local.month(), local.day(), local.hour());
        let want = local.and_utc().timestamp_millis() - offset * 3_600_000;
        assert_eq!(r.ts, want, "{local}");
        assert_eq!(r.value("vehicles"), volume.parse().ok(), "{local}");
    }
    // The hours the clocks skip (2017-03-12 and 2018-03-11, 02:00) are quarantined as such,
    // and across them the readings are one hour apart in UTC (with a fixed -06:00 they would
    // be two, and a summer of readings an hour off).
    let skipped: Vec<_> = loaded
        .quarantined
        .iter()
        .filter(|q| q.reason.contains("does not exist in America/Chicago"))
        .map(|q| q.payload.clone())
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].starts_with("2017-03-12 02:00:00")
            && skipped[1].starts_with("2018-03-11 02:00:00")
    );
    for day in ["2017-03-12T07:00:00Z", "2018-03-11T07:00:00Z"] {
        let t = chrono::DateTime::parse_from_rfc3339(day)
            .unwrap()
            .timestamp_millis();
        let i = loaded
            .readings
            .iter()
            .position(|r| r.ts == t)
            .expect("01:00 CST");
        assert_eq!(
            loaded.readings[i + 1].ts - t,
            3_600_000,
            "03:00 CDT follows"
        );
    }
}

#[test]
fn a_repeated_hour_is_resolved_per_series_by_its_previous_reading() {
    // Two series interleaved, every half hour through the night the clocks go back
    // (2017-11-05 in America/Chicago: 01:00-01:59 happens twice).
    let dir = tempfile::tempdir().unwrap();
    let local = ["00:30", "01:00", "01:30", "01:00", "01:30", "02:00"];
    let mut csv = String::from("time,site,count\n");
    for (i, t) in local.iter().enumerate() {
        for site in ["a", "b"] {
            csv += &format!("2017-11-05 {t}:00,{site},{i}\n");
        }
    }
    std::fs::write(dir.path().join("counts.csv"), csv).unwrap();
    let m = streamgauge::dataset::Manifest::from_toml(
        "fold",
        r#"
name = "fold"
description = "two counters through the autumn fold"
folder = "."
license = "test"
[[files]]
path = "counts.csv"
series = "site/{col:site}"
time = { column = "time", format = "%Y-%m-%d %H:%M:%S", timezone = "America/Chicago" }
values = [{ column = "count" }]
"#,
    )
    .unwrap();
    let loaded = streamgauge::dataset::load::load_manifest(&m, dir.path(), None).unwrap();
    assert!(loaded.quarantined.is_empty());
    // 00:30 and the first pass are daylight time (UTC-5), the second pass and 02:00 standard.
    let utc = ["05:30", "06:00", "06:30", "07:00", "07:30", "08:00"];
    for site in ["site/a", "site/b"] {
        let got: Vec<(i64, f64)> = loaded
            .readings
            .iter()
            .filter(|r| &*r.series == site)
            .map(|r| (r.ts, r.value("count").unwrap()))
            .collect();
        let want: Vec<(i64, f64)> = utc
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let at = format!("2017-11-05T{t}:00Z");
                let ms = chrono::DateTime::parse_from_rfc3339(&at)
                    .unwrap()
                    .timestamp_millis();
                (ms, i as f64)
            })
            .collect();
        assert_eq!(got, want, "{site}");
    }
}

/// `series_stats --window 1d --window-zone America/Chicago` over the I-94 data: one window per
/// local day, from local midnight to the next (23 hours in March, 25 in November), each with
/// the statistics of exactly that day's rows, on 1, 2 and 4 workers. The oracle groups the
/// file's rows by the date written in them and finds midnight by the law's rule.
#[test]
fn daily_windows_in_a_named_zone_follow_local_days_on_1_2_4_workers() {
    use chrono::Datelike;
    let m = streamgauge::dataset::Manifest::builtin("traffic_i94").unwrap();
    let folder = streamgauge::dataset::locate(&m, Some(&common::data_dir())).unwrap();
    let text = std::fs::read_to_string(folder.join("autots_traffic_hourly_2016_2018.csv")).unwrap();
    let midnight = |d: chrono::NaiveDate| {
        let offset = us_central_offset(d.year(), d.month(), d.day(), 0);
        d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis() - offset * 3_600_000
    };
    // (field, local midnight) -> (next midnight, values)
    let mut days: std::collections::BTreeMap<(String, i64), (i64, Vec<f64>)> =
        std::collections::BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f[5].is_empty() {
            continue; // quarantined
        }
        let date = chrono::NaiveDate::parse_from_str(&f[0][..10], "%Y-%m-%d").unwrap();
        let (start, end) = (midnight(date), midnight(date.succ_opt().unwrap()));
        for (field, v) in [("vehicles", f[5]), ("temp_k", f[4])] {
            let e = days
                .entry((field.to_string(), start))
                .or_insert((end, Vec::new()));
            e.1.push(v.parse().unwrap());
        }
    }
    let lengths: std::collections::BTreeSet<i64> = days
        .iter()
        .map(|((_, s), (e, _))| (e - s) / 3_600_000)
        .collect();
    assert_eq!(lengths, [23, 24, 25].into(), "days of 23, 24 and 25 hours");
    for workers in [1, 2, 4] {
        assert_i94_windows(&i94_windows(workers, None), &days, workers);
    }
}

/// `series_stats --window 1d --window-zone America/Chicago [--slide]` over the I-94 data on
/// `workers`: (field, window start) -> (window end, count, mean, min, max, std).
fn i94_windows(workers: usize, slide: Option<Duration>) -> I94Windows {
    let m = streamgauge::dataset::Manifest::builtin("traffic_i94").unwrap();
    let folder = streamgauge::dataset::locate(&m, Some(&common::data_dir())).unwrap();
    let loaded = streamgauge::dataset::load::load_manifest(&m, &folder, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::spec(
        Input::memory(loaded.readings),
        workers,
        Duration::from_secs(86_400),
        dir.path(),
    );
    spec.slide = slide;
    spec.window_zone = streamgauge::dataset::timefmt::Zone::parse("America/Chicago").unwrap();
    common::run_ok(spec);
    let mut got = I94Windows::new();
    for line in common::read_lines(dir.path(), "series_stats") {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let key = (
            v["field"].as_str().unwrap().to_string(),
            v["window_start"].as_i64().unwrap(),
        );
        let row = (
            v["window_end"].as_i64().unwrap(),
            v["count"].as_u64().unwrap(),
            ["mean", "min", "max", "std"].map(|k| v[k].as_f64().unwrap()),
        );
        assert!(got.insert(key, row).is_none(), "duplicate window");
    }
    got
}

type I94Windows = std::collections::BTreeMap<(String, i64), (i64, u64, [f64; 4])>;

/// Every window of `want` ((field, start) -> (end, values)) in `got`, with its end, count and
/// statistics (within 1e-9), and no other.
fn assert_i94_windows(
    got: &I94Windows,
    want: &std::collections::BTreeMap<(String, i64), (i64, Vec<f64>)>,
    workers: usize,
) {
    assert_eq!(got.len(), want.len(), "{workers} workers: windows");
    for (key, (end, vs)) in want {
        let g = got.get(key).unwrap_or_else(|| panic!("{key:?} missing"));
        let s = streamgauge::analytics::window::batch_stats(vs);
        let std = (s.m2 / s.count as f64).sqrt();
        assert_eq!((g.0, g.1), (*end, s.count), "{key:?}");
        for (a, b) in g.2.iter().zip([s.mean, s.min, s.max, std]) {
            assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                "{key:?}: {a} vs {b}"
            );
        }
    }
}

/// The hopping-window oracle: every reading goes into each window `[e - width, e)` that holds
/// it, `e` on the slide's grid of the local clock (`offset_ms` ahead of UTC), computed
/// per window from scratch.
fn hopping_oracle(
    readings: &[streamgauge::record::Reading],
    width: i64,
    slide: i64,
    offset_ms: i64,
) -> std::collections::BTreeMap<WinKey, WinVal> {
    let mut groups: std::collections::BTreeMap<WinKey, Vec<f64>> = Default::default();
    for r in readings {
        let local = r.ts + offset_ms;
        let first_end = local.div_euclid(slide) * slide + slide;
        for k in 0..width / slide {
            let start_utc = first_end + k * slide - width - offset_ms;
            assert!(start_utc <= r.ts && r.ts < start_utc + width);
            for (f, v) in &r.values {
                groups
                    .entry((r.series.to_string(), f.to_string(), start_utc))
                    .or_default()
                    .push(*v);
            }
        }
    }
    groups
        .into_iter()
        .map(|(k, vs)| {
            let s = streamgauge::analytics::window::batch_stats(&vs);
            let std = (s.m2 / s.count as f64).sqrt();
            (k, (s.count, s.mean, s.min, s.max, std))
        })
        .collect()
}

#[test]
fn hopping_windows_match_a_batch_oracle_on_1_2_4_workers() {
    // W1 (10,000 sensors, 300 s of event time), 1-minute windows every 10 s; then the same in
    // a half-hour offset zone, where the panes and windows move with the local clock.
    let dir = tempfile::tempdir().unwrap();
    let (csv, readings) = w1_csv(dir.path(), 300_000, 5);
    for (zone, offset_ms) in [("UTC", 0), ("+05:30", 19_800_000)] {
        let want = hopping_oracle(&readings, 60_000, 10_000, offset_ms);
        // Six windows per reading: far more windows than readings per sensor.
        assert!(want.len() > 5 * 20_000, "{} windows", want.len());
        for workers in [1, 2, 4] {
            let out = dir.path().join(format!("hop{workers}{offset_ms}"));
            let mut s = spec(
                Input::Csv(csv.clone()),
                workers,
                Duration::from_secs(60),
                &out,
            );
            s.slide = Some(Duration::from_secs(10));
            s.window_zone = streamgauge::dataset::timefmt::Zone::parse(zone).unwrap();
            let report = run_ok(s);
            assert_eq!(report.metrics.late, 0);
            assert_windows_eq(
                &read_windows(&out),
                &want,
                &format!("hopping, {zone}, {workers} workers"),
            );
        }
    }
    // Readings far apart in time: the windows between them are skipped, not emitted empty.
    let mut sparse = readings[..2_000].to_vec();
    for r in &mut sparse[1_000..] {
        r.ts += 3_600_000;
    }
    let want = hopping_oracle(&sparse, 60_000, 10_000, 0);
    let out = dir.path().join("sparse");
    let mut s = spec(Input::memory(sparse), 2, Duration::from_secs(60), &out);
    s.slide = Some(Duration::from_secs(10));
    run_ok(s);
    assert_windows_eq(&read_windows(&out), &want, "sparse hopping");
}

#[test]
fn hopping_daily_windows_in_a_named_zone_follow_the_local_clock_on_1_2_4_workers() {
    // I-94, `--window 1d --slide 6h --window-zone America/Chicago`: windows are the 24 local
    // hours before each local 00:00, 06:00, 12:00 and 18:00, so 23 or 25 real hours across a
    // change of the clocks. The oracle reads each row's local date and hour from the file's
    // own text and finds the UTC instants of local boundaries by the law's rule.
    use chrono::{Duration as Days, NaiveDate};
    let m = streamgauge::dataset::Manifest::builtin("traffic_i94").unwrap();
    let folder = streamgauge::dataset::locate(&m, Some(&common::data_dir())).unwrap();
    let text = std::fs::read_to_string(folder.join("autots_traffic_hourly_2016_2018.csv")).unwrap();
    use chrono::Datelike;
    let utc_of = |d: NaiveDate, h: u32| {
        let offset = us_central_offset(d.year(), d.month(), d.day(), h);
        d.and_hms_opt(h, 0, 0).unwrap().and_utc().timestamp_millis() - offset * 3_600_000
    };
    // (field, window start UTC) -> (window end UTC, values)
    let mut windows: std::collections::BTreeMap<(String, i64), (i64, Vec<f64>)> =
        Default::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f[5].is_empty() {
            continue; // quarantined
        }
        let date = NaiveDate::parse_from_str(&f[0][..10], "%Y-%m-%d").unwrap();
        let hour: u32 = f[0][11..13].parse().unwrap();
        // Ends of the four windows holding the row, as (local date, hour).
        let pane_end = hour / 6 * 6 + 6;
        for k in 0..4 {
            let h = pane_end + 6 * k;
            let (end_day, end_h) = (date + Days::days(i64::from(h / 24)), h % 24);
            let start = utc_of(end_day - Days::days(1), end_h);
            let end = utc_of(end_day, end_h);
            for (field, v) in [("vehicles", f[5]), ("temp_k", f[4])] {
                windows
                    .entry((field.to_string(), start))
                    .or_insert((end, Vec::new()))
                    .1
                    .push(v.parse().unwrap());
            }
        }
    }
    let spans: std::collections::BTreeSet<i64> = windows
        .iter()
        .map(|((_, s), (e, _))| (e - s) / 3_600_000)
        .collect();
    assert_eq!(spans, [23, 24, 25].into());
    for workers in [1, 2, 4] {
        let got = i94_windows(workers, Some(Duration::from_secs(6 * 3_600)));
        assert_i94_windows(&got, &windows, workers);
    }
}
