//! Savepoints (`run --savepoint`): a live run stopped part-way writes its state, and a run
//! from the savepoint, on another number of workers, goes on exactly: the two runs' rows
//! together are the rows of one uninterrupted computation, each once.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use streamgauge::engine::{Input, RunReport, RunSpec};
use streamgauge::kafka::broker::EmbeddedBroker;
use streamgauge::record::{Reading, Sym};

/// 12 series over 6 partitions, a reading a second each, out of order within the lateness
/// here and there (so the keyed operator holds readings at a stop), noisy levels with
/// spikes and a level shift (so the detector's state matters to every score).
fn stream(per_series: i64) -> Vec<(i32, Reading)> {
    twelve_series("sp", per_series, 2026, per_series * 2 / 3)
}

fn produce(brokers: &str, topic: &str, items: &[(i32, Reading)]) {
    produce_to(brokers, topic, items)
}

/// A run of `dataflow` on `topic` with `workers`, resuming from and saving to `savepoint`;
/// `live`: not `--until-end` (it runs until stopped).
fn savepoint_spec(
    dataflow: &str,
    brokers: &str,
    topic: &str,
    workers: usize,
    out: &Path,
    savepoint: &Path,
    live: bool,
) -> RunSpec {
    let mut s = spec(
        kafka_input(brokers, topic),
        workers,
        Duration::from_secs(10),
        out,
    );
    s.dataflow = dataflow.into();
    s.savepoint = Some(savepoint.to_path_buf());
    if let Input::Kafka(k) = &mut s.input {
        k.until_end = !live;
    }
    s
}

/// Runs `s` live until it has read `n` readings, then stops it.
fn run_and_stop(s: RunSpec, n: usize) -> RunReport {
    let (metrics, stop) = (s.metrics.clone(), s.stop.clone());
    let run = std::thread::spawn(move || run_ok(s));
    let t0 = Instant::now();
    while metrics.snapshot().readings_in < n as u64 {
        assert!(t0.elapsed() < Duration::from_secs(60), "not all read");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    run.join().unwrap()
}

#[test]
fn a_run_resumed_from_a_savepoint_on_other_worker_counts_scores_as_one_uninterrupted_run() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let items = stream(2_000);
    let want = anomaly_oracle(items.iter().map(|(_, r)| r));
    let (first, second): (Vec<_>, Vec<_>) = items
        .iter()
        .cloned()
        .partition(|(_, r)| r.ts < T0 + 1_200 * 1000);
    for (a_workers, b_workers) in [(1, 2), (2, 4), (4, 1)] {
        let topic = format!("savepoint{a_workers}{b_workers}");
        broker.create_topic(&topic, 6).unwrap();
        produce(broker.bootstrap(), &topic, &first);
        let out = tempfile::tempdir().unwrap();
        let sp = out.path().join("savepoint");
        let what = format!("{a_workers} then {b_workers} workers");

        let s = savepoint_spec(
            "anomaly",
            broker.bootstrap(),
            &topic,
            a_workers,
            out.path(),
            &sp,
            true,
        );
        let a = run_and_stop(s, first.len());
        assert!(a.resumed_from.is_none(), "{what}: nothing to resume from");
        let written = a.savepoint.clone().expect("the stop wrote a savepoint");
        let saved = written.dir.clone();
        assert_eq!(written.states, 12, "{what}: one detector per series");
        assert!(written.held >= 12 * 5, "{what}: {} held", written.held);
        let a_rows = a.outputs.get("anomaly").copied().unwrap_or(0);
        // At least the last 5 s of each series (the lateness) is past the frontier.
        assert!(
            a_rows <= (first.len() - 12 * 5) as u64,
            "{what}: the readings at or past the frontier are held in the savepoint, not scored ({a_rows} of {})",
            first.len()
        );
        assert_eq!(a.metrics.late, 0, "{what}");

        produce(broker.bootstrap(), &topic, &second);
        let s = savepoint_spec(
            "anomaly",
            broker.bootstrap(),
            &topic,
            b_workers,
            out.path(),
            &sp,
            false,
        );
        let b = run_ok(s);
        assert_eq!(b.resumed_from.as_ref(), Some(&saved), "{what}");
        assert_eq!(b.metrics.late, 0, "{what}");
        assert_eq!(
            b.metrics.skipped_offsets, 0,
            "{what}: each partition resumes at its saved offset"
        );
        assert_eq!(
            b.metrics.readings_in,
            second.len() as u64,
            "{what}: the resumed run reads from the saved offsets on"
        );
        assert!(
            b.savepoint.is_none(),
            "{what}: an input read to its end is no stop"
        );
        assert!(
            !sp.join("g1").exists(),
            "{what}: nothing left of the positions the ended run's sources wrote"
        );

        // The output file holds the stopped run's rows, then the resumed run's.
        assert_scores_eq(&read_scores(&[out.path()]), &want, &what);
    }
}

#[test]
fn without_the_state_the_resumed_scores_would_differ() {
    // The check above can fail: scores of a detector started afresh at the resume point
    // differ from the uninterrupted ones (so restoring the state is what makes them equal).
    let items = stream(2_000);
    let want = anomaly_oracle(items.iter().map(|(_, r)| r));
    let second: Vec<_> = items
        .iter()
        .filter(|(_, r)| r.ts >= T0 + 1_200 * 1000)
        .cloned()
        .collect();
    let fresh = anomaly_oracle(second.iter().map(|(_, r)| r));
    let differ = fresh.iter().filter(|(k, s)| want[*k] != **s).count();
    assert!(differ > second.len() / 2, "{differ} of {}", second.len());
}

#[test]
fn savepoints_refuse_what_they_cannot_resume() {
    let out = tempfile::tempdir().unwrap();
    let sp = out.path().join("sp");
    // A dataset is read whole.
    let mut s = spec(
        Input::memory(vec![Reading::single(Sym::new("x"), T0, 1.0)]),
        1,
        Duration::from_secs(10),
        out.path(),
    );
    s.dataflow = "anomaly".into();
    s.savepoint = Some(sp.clone());
    let err = streamgauge::engine::run(s).unwrap_err().to_string();
    assert!(err.contains("--savepoint needs a Kafka input"), "{err}");

    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("refuse", 2).unwrap();
    produce(
        broker.bootstrap(),
        "refuse",
        &[(0, Reading::single(Sym::new("x"), T0, 1.0))],
    );
    // The error a run of `flow` on the topic with the savepoint fails with, after `edit`.
    let b = broker.bootstrap();
    let refused = |flow: &str, edit: &dyn Fn(&mut RunSpec)| {
        let mut s = savepoint_spec(flow, b, "refuse", 1, out.path(), &sp, false);
        edit(&mut s);
        streamgauge::engine::run(s).unwrap_err().to_string()
    };

    // A savepoint of one dataflow is not resumed by another.
    let a = run_and_stop(
        savepoint_spec("anomaly", b, "refuse", 1, out.path(), &sp, true),
        1,
    );
    assert!(a.savepoint.is_some());
    let err = refused("trend", &|_| {});
    assert!(err.contains("dataflow = anomaly"), "{err}");
    // --from and a savepoint to resume from contradict each other.
    let err = refused("anomaly", &|s| {
        if let Input::Kafka(k) = &mut s.input {
            k.start = streamgauge::kafka::source::StartAt::End;
        }
    });
    assert!(err.contains("--from with a savepoint"), "{err}");
}

/// All rows of output `stem` in `dir`, sorted (a multiset).
fn rows(dir: &Path, stem: &str) -> Vec<String> {
    let mut r = read_lines(dir, stem);
    r.sort();
    r
}

#[test]
fn every_dataflow_with_savepoints_resumes_to_the_rows_of_an_uninterrupted_run() {
    // Each dataflow whose state goes to savepoints (besides anomaly, above): stopped live
    // after 1,200 s on 2 workers and resumed on 1 (trend, sessions, hopping windows) or 3
    // (series_stats, zscore, stock_forecast), against one uninterrupted run over the whole
    // topic. Windows open at the stop (tumbling 20 s, or 20 s every 5 s: their panes and
    // pane queues) are saved, not written cut short. Sessions (at most
    // 30 s long here) open at the stop are saved, not cut short; forecasts waiting for their
    // actual price are realised after the resume.
    let broker = EmbeddedBroker::start(1).unwrap();
    let items = stream(2_000);
    let (first, second): (Vec<_>, Vec<_>) = items
        .iter()
        .cloned()
        .partition(|(_, r)| r.ts < T0 + 1_200 * 1000);
    let whole = "savepoint-whole";
    broker.create_topic(whole, 6).unwrap();
    produce(broker.bootstrap(), whole, &items);
    for (flow, output, b_workers, slide) in [
        ("series_stats", "series_stats", 3, None),
        (
            "series_stats",
            "series_stats",
            1,
            Some(Duration::from_secs(5)),
        ),
        ("zscore", "zscore", 3, None),
        ("trend", "trend", 1, None),
        ("stock_forecast", "forecasts", 3, None),
        ("sessions", "sessions", 1, None),
    ] {
        let set = |s: &mut RunSpec| {
            s.readings = 50;
            s.threshold = 3.0;
            s.sessions.gap_ms = 1_000;
            s.sessions.max_ms = Some(30_000);
            s.window = Duration::from_secs(20);
            s.slide = slide;
        };
        let once = tempfile::tempdir().unwrap();
        let mut s = spec(
            kafka_input(broker.bootstrap(), whole),
            1,
            Duration::from_secs(10),
            once.path(),
        );
        s.dataflow = flow.into();
        set(&mut s);
        run_ok(s);
        let want = rows(once.path(), output);
        assert!(want.len() >= 50, "{flow}: only {} rows", want.len());

        let topic = format!("savepoint-{flow}-{}", slide.is_some());
        broker.create_topic(&topic, 6).unwrap();
        produce(broker.bootstrap(), &topic, &first);
        let out = tempfile::tempdir().unwrap();
        let sp = out.path().join("sp");
        let mut s = savepoint_spec(flow, broker.bootstrap(), &topic, 2, out.path(), &sp, true);
        set(&mut s);
        let a = run_and_stop(s, first.len());
        assert!(a.savepoint.is_some(), "{flow}");
        produce(broker.bootstrap(), &topic, &second);
        let mut s = savepoint_spec(
            flow,
            broker.bootstrap(),
            &topic,
            b_workers,
            out.path(),
            &sp,
            false,
        );
        set(&mut s);
        let b = run_ok(s);
        assert!(b.resumed_from.is_some(), "{flow}");
        assert!(
            a.cut_short_from.is_none(),
            "{flow}: with a savepoint the stop cuts no window short"
        );
        let got = rows(out.path(), output);
        if got != want {
            let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
            let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
            panic!(
                "{flow}: {} rows against {} uninterrupted; not in the uninterrupted run: {extra:?}; missing: {missing:?}",
                got.len(),
                want.len()
            );
        }
    }
}

#[test]
fn a_run_resumed_and_stopped_again_chains_savepoints() {
    // Three runs: stopped after a third of the stream (1 worker), resumed live and stopped
    // after two thirds (4 workers: the first savepoint's held readings, still partly held,
    // go to the second), resumed to the end (2 workers). Every reading scored once, as one
    // detector per series would.
    let broker = EmbeddedBroker::start(1).unwrap();
    let items = stream(1_800);
    let want = anomaly_oracle(items.iter().map(|(_, r)| r));
    let part = |lo: i64, hi: i64| -> Vec<(i32, Reading)> {
        items
            .iter()
            .filter(|(_, r)| r.ts >= T0 + lo * 1000 && r.ts < T0 + hi * 1000)
            .cloned()
            .collect()
    };
    let thirds = [part(0, 600), part(600, 1_200), part(1_200, 1_800)];
    broker.create_topic("chain", 6).unwrap();
    let out = tempfile::tempdir().unwrap();
    let sp = out.path().join("savepoint");
    let b = broker.bootstrap();
    produce(b, "chain", &thirds[0]);
    let first = run_and_stop(
        savepoint_spec("anomaly", b, "chain", 1, out.path(), &sp, true),
        thirds[0].len(),
    );
    let g0 = first.savepoint.expect("first stop").dir;
    produce(b, "chain", &thirds[1]);
    let second = run_and_stop(
        savepoint_spec("anomaly", b, "chain", 4, out.path(), &sp, true),
        thirds[1].len(),
    );
    assert_eq!(second.resumed_from, Some(g0.clone()));
    let g1 = second.savepoint.expect("second stop").dir;
    assert_ne!(g1, g0, "a new savepoint, the one resumed from kept");
    produce(b, "chain", &thirds[2]);
    let third = run_ok(savepoint_spec(
        "anomaly",
        b,
        "chain",
        2,
        out.path(),
        &sp,
        false,
    ));
    assert_eq!(third.resumed_from, Some(g1));
    assert_eq!(third.metrics.readings_in, thirds[2].len() as u64);
    assert_scores_eq(&read_scores(&[out.path()]), &want, "three runs");
}

#[test]
fn a_worker_that_owns_no_series_still_saves_its_share() {
    // One series on four workers: three keyed operators never see a reading. Each still
    // writes its (empty) file at the stop, so the savepoint is whole and the next run resumes
    // from it (before, an operator with nothing pending wrote nothing, and the resume failed
    // on the missing file).
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("lonely", 1).unwrap();
    let s = Sym::new("sp/lonely");
    let items: Vec<(i32, Reading)> = (0..300)
        .map(|i| (0, Reading::single(s, T0 + i * 1000, (i % 7) as f64)))
        .collect();
    produce(broker.bootstrap(), "lonely", &items[..200]);
    let out = tempfile::tempdir().unwrap();
    let sp = out.path().join("savepoint");
    let spec = savepoint_spec(
        "zscore",
        broker.bootstrap(),
        "lonely",
        4,
        out.path(),
        &sp,
        true,
    );
    let a = run_and_stop(spec, 200);
    let saved = a.savepoint.expect("the stop wrote a savepoint");
    for w in 0..4 {
        assert!(
            saved.dir.join(format!("zscore.w{w}.bin")).exists(),
            "worker {w}'s share"
        );
    }
    produce(broker.bootstrap(), "lonely", &items[200..]);
    let spec = savepoint_spec(
        "zscore",
        broker.bootstrap(),
        "lonely",
        2,
        out.path(),
        &sp,
        false,
    );
    let b = run_ok(spec);
    assert_eq!(b.resumed_from.as_ref(), Some(&saved.dir));
}
