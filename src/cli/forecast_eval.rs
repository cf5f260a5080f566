//! `streamgauge forecast-eval`: every forecaster one step ahead over the weather, energy,
//! industrial and stock datasets; MASE against the seasonal naive forecast and 95% interval
//! coverage, one table row per dataset and forecaster (see `analytics::evaluate`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::analytics::evaluate::{evaluate, Score, SeriesKind, FORECASTERS};
use crate::config::Settings;
use crate::dataset::{self, Manifest};

/// `forecast-eval` flags.
#[derive(Debug, Args)]
pub struct ForecastEvalArgs {
    /// Directory that holds the datasets (default: $STREAMGAUGE_DATA, then ../shared/datasets).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Also write the table as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One evaluated dataset.
pub struct EvalSet {
    /// Label in the table.
    pub label: &'static str,
    /// Built-in dataset name.
    pub dataset: &'static str,
    /// Value names evaluated (empty = all).
    pub fields: &'static [&'static str],
    /// How its series are modelled.
    pub kind: SeriesKind,
    /// Whether its seasonal naive is seasonal (the MASE < 1 goal applies).
    pub seasonal: bool,
}

/// The datasets `forecast-eval` runs over.
pub const SETS: &[EvalSet] = &[
    EvalSet {
        label: "hourly temperature, Seattle + SF (m=24)",
        dataset: "weather_vega",
        fields: &[],
        kind: SeriesKind {
            period: 24,
            prices: false,
        },
        seasonal: true,
    },
    EvalSet {
        label: "5-min temperature, Yosemite (m=288)",
        dataset: "weather_yosemite_5min_prophet",
        fields: &[],
        kind: SeriesKind {
            period: 288,
            prices: false,
        },
        seasonal: true,
    },
    EvalSet {
        label: "electricity demand, Victoria (m=48)",
        dataset: "vic_electricity",
        fields: &["demand_mw"],
        kind: SeriesKind {
            period: 48,
            prices: false,
        },
        seasonal: true,
    },
    EvalSet {
        label: "gas turbine, 11 channels (m=1)",
        dataset: "gas_turbine_emission_hourly",
        fields: &[],
        kind: SeriesKind {
            period: 1,
            prices: false,
        },
        seasonal: false,
    },
    EvalSet {
        label: "S&P 500 daily close (m=1)",
        dataset: "stocks_vega",
        fields: &["close"],
        kind: SeriesKind {
            period: 1,
            prices: true,
        },
        seasonal: false,
    },
    EvalSet {
        label: "AAPL/AMZN/FB/GOOG daily close (m=1)",
        dataset: "stocks_gafa_tsibbledata",
        fields: &["close"],
        kind: SeriesKind {
            period: 1,
            prices: true,
        },
        seasonal: false,
    },
];

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalRow {
    /// Dataset label.
    pub dataset: String,
    /// Forecaster.
    pub forecaster: String,
    /// Series evaluated.
    pub series: usize,
    /// Points scored.
    pub points: u64,
    /// Mean over series of each series' MASE.
    pub mase: f64,
    /// Pooled share of actuals inside the 95% interval.
    pub coverage: f64,
    /// Whether MASE < 1 is a goal for this dataset.
    pub seasonal: bool,
}

/// Evaluates every set; the data directory as for datasets.
pub fn run_all(data_dir: Option<&std::path::Path>) -> Result<Vec<EvalRow>> {
    let mut rows = Vec::new();
    for set in SETS {
        let m = Manifest::builtin(set.dataset)?;
        let folder = dataset::locate(&m, data_dir)?;
        let loaded = dataset::load::load_manifest(&m, &folder, None)
            .with_context(|| format!("loading {}", set.dataset))?;
        let mut series: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
        for r in &loaded.readings {
            for (f, v) in &r.values {
                if set.fields.is_empty() || set.fields.contains(&&**f) {
                    series
                        .entry((r.series.to_string(), f.to_string()))
                        .or_default()
                        .push(*v);
                }
            }
        }
        let per: Vec<[Score; 3]> = series.values().map(|v| evaluate(v, set.kind)).collect();
        for (k, name) in FORECASTERS.iter().enumerate() {
            let pooled = per.iter().fold(Score::default(), |a, s| Score {
                abs_err: a.abs_err + s[k].abs_err,
                naive_abs_err: a.naive_abs_err + s[k].naive_abs_err,
                covered: a.covered + s[k].covered,
                n: a.n + s[k].n,
            });
            let mases: Vec<f64> = per
                .iter()
                .map(|s| s[k].mase())
                .filter(|m| m.is_finite())
                .collect();
            rows.push(EvalRow {
                dataset: set.label.to_string(),
                forecaster: name.to_string(),
                series: per.len(),
                points: pooled.n,
                mase: mases.iter().sum::<f64>() / mases.len().max(1) as f64,
                coverage: pooled.coverage(),
                seasonal: set.seasonal,
            });
        }
    }
    Ok(rows)
}

/// Runs the command.
pub fn run(a: ForecastEvalArgs, settings: &Settings) -> Result<()> {
    let dir = a.data_dir.clone().or_else(|| settings.data_dir.clone());
    let rows = run_all(dir.as_deref())?;
    println!(
        "{:<42} {:<13} {:>6} {:>9} {:>7} {:>9}",
        "dataset", "forecaster", "series", "points", "MASE", "coverage"
    );
    for r in &rows {
        println!(
            "{:<42} {:<13} {:>6} {:>9} {:>7.3} {:>8.1}%",
            r.dataset,
            r.forecaster,
            r.series,
            r.points,
            r.mase,
            100.0 * r.coverage
        );
    }
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
