//! What session and hopping windows cost at the engine's scale, over the W1 file (10,000
//! sensors, each reading about every 10 s of event time) on 1 and 2 workers, next to
//! `series_stats`' tumbling windows over the same file, in the same sitting.
//!
//! ```text
//! cargo bench --bench windows -- [--rows 10000000] [--cases sessions-1,long-1,spells-1,stats-1,hop6-1,hop60-1] [--reps N]
//! ```
//!
//! Cases (`<case>-<workers>`): `sessions`, a 10 s gap (a session per burst of a sensor's
//! readings; about a third of the readings close one); `long`, a 60 s gap (few pauses that
//! long: sessions last, and their timers are set again every gap); `spells`, the 10 s gap over values above 24 only (excursions: W1's daily cycle
//! puts a sensor above 24 for about a fifth of the day); `stats`, `series_stats` with 10 s
//! windows; `hop6` and `hop60`, `series_stats` with 1-minute and 10-minute windows every
//! 10 s (6 and 60 windows per reading: the cost per reading should not grow with that, the
//! number of rows out does). Each runs in a child process and reports readings/s, wall time, peak RSS and the
//! rows written.

use std::time::Duration;

use anyhow::{bail, Result};
use streamgauge::dataflows::sessions::SessionParams;
use streamgauge::engine::{Input, RunSpec};

mod common;
use common::{arg, run_and_print, run_table, spec_csv, w1_file};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows").map_or(Ok(10_000_000), |s| s.parse())?;
    let (_dir, w1) = w1_file(rows)?;
    if let Some(case) = arg(&args, "--case") {
        return child(&case, &w1);
    }
    let cases = arg(&args, "--cases").unwrap_or_else(|| {
        "sessions-1,long-1,spells-1,stats-1,hop6-1,hop60-1,sessions-2,long-2,spells-2,stats-2,hop6-2,hop60-2"
            .into()
    });
    println!("session and hopping windows over W1, {rows} rows, 10,000 sensors");
    run_table(&cases, rows, "rows_out", |_| Ok("-".into()))
}

fn child(case: &str, w1: &std::path::Path) -> Result<()> {
    let Some((name, workers)) = case.rsplit_once('-') else {
        bail!("a case is <sessions|spells|stats>-<workers>, not {case}");
    };
    let gap = SessionParams {
        gap_ms: 10_000,
        ..SessionParams::default()
    };
    let (dataflow, sessions) = match name {
        "sessions" => ("sessions", gap),
        "spells" => (
            "sessions",
            SessionParams {
                above: Some(24.0),
                ..gap
            },
        ),
        "long" => (
            "sessions",
            SessionParams {
                gap_ms: 60_000,
                ..gap
            },
        ),
        "stats" | "hop6" | "hop60" => ("series_stats", gap),
        _ => bail!("unknown case {case} (sessions-N, long-N, spells-N, stats-N, hop6-N, hop60-N)"),
    };
    let (window, slide) = match name {
        "hop6" => (60, Some(10)),
        "hop60" => (600, Some(10)),
        _ => (10, None),
    };
    let mut spec = RunSpec::new(dataflow, Input::Csv(spec_csv(w1)));
    spec.cluster.workers = workers.parse()?;
    spec.sessions = sessions;
    spec.window = Duration::from_secs(window);
    spec.slide = slide.map(Duration::from_secs);
    run_and_print(spec)
}
