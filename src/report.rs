//! `streamgauge report`: PNG and SVG plots of a finished run's output folder, drawn with
//! plotters (text in DejaVu Sans, embedded; no system fonts needed).
//!
//! From `outlier_scores` (JSON lines or CSV, one file or one per process) it draws, per
//! series, the values with the rolling mean and its ±2σ band and the anomalous readings;
//! from `forecasts` (JSON lines) the last forecast path issued for the series with its 95%
//! interval;
//! from `throughput.jsonl` readings in and rows out per second over the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::dataflows::sensor_outliers::{ForecastPath, OutlierRow};
use crate::record::EventTime;

/// Why a report could not be drawn.
#[derive(Debug, Error)]
pub enum ReportError {
    /// A folder or file that cannot be read (or the output folder created).
    #[error("{path}")]
    Input {
        /// Folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The folder holds nothing to plot.
    #[error("--input {0}: no outlier_scores.jsonl/.csv and no throughput.jsonl; point it at the --output folder of a `run` (e.g. sensor_outliers)")]
    Empty(PathBuf),
    /// A row that does not parse.
    #[error("{file}, line {line}: {why}")]
    Row {
        /// File.
        file: PathBuf,
        /// Line number (1-based).
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// Asked for a series the outputs do not have.
    #[error("--series {0:?} is not in the outputs (keys are series/field, e.g. machine_1/value)")]
    UnknownSeries(String),
    /// Writing or drawing failed.
    #[error("drawing {file}: {why}")]
    Draw {
        /// File.
        file: PathBuf,
        /// Cause.
        why: String,
    },
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct ReportSpec {
    /// A run's output folder.
    pub input: PathBuf,
    /// Where the images go.
    pub output: PathBuf,
    /// Series keys (`series/field`) to draw; empty: the `top` with the most anomalies.
    pub series: Vec<String>,
    /// How many series to draw when none are named.
    pub top: usize,
    /// The last this many readings of each series are drawn.
    pub points: usize,
}

/// Registers DejaVu Sans as plotters' `sans-serif` once.
fn fonts() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            let bytes = match style {
                FontStyle::Bold => dejavu::sans::bold(),
                _ => dejavu::sans::regular(),
            };
            // The font is a fixed, valid TTF embedded by the dejavu crate.
            let _ = plotters::style::register_font("sans-serif", style, bytes);
        }
    });
}

/// Files `<stem>.<ext>` and `<stem>.p<i>.<ext>` in `dir`.
fn files(dir: &Path, stem: &str, ext: &str) -> Result<Vec<PathBuf>, ReportError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| ReportError::Input {
        path: dir.to_path_buf(),
        source: e,
    })?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == format!("{stem}.{ext}")
            || (name.starts_with(&format!("{stem}.p")) && name.ends_with(&format!(".{ext}")))
        {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every row of an output, JSON lines or CSV.
fn rows<T: DeserializeOwned>(dir: &Path, stem: &str) -> Result<Vec<T>, ReportError> {
    let mut out = jsonl_rows(dir, stem)?;
    for f in files(dir, stem, "csv")? {
        let mut r = csv::Reader::from_path(&f).map_err(|e| ReportError::Row {
            file: f.clone(),
            line: 1,
            why: e.to_string(),
        })?;
        for (i, row) in r.deserialize().enumerate() {
            out.push(row.map_err(|e: csv::Error| ReportError::Row {
                file: f.clone(),
                line: i + 2,
                why: e.to_string(),
            })?);
        }
    }
    Ok(out)
}

/// Reads every row of an output's JSON-lines files.
fn jsonl_rows<T: DeserializeOwned>(dir: &Path, stem: &str) -> Result<Vec<T>, ReportError> {
    let mut out = Vec::new();
    for f in files(dir, stem, "jsonl")? {
        let text = std::fs::read_to_string(&f).map_err(|e| ReportError::Input {
            path: f.clone(),
            source: e,
        })?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            out.push(serde_json::from_str(line).map_err(|e| ReportError::Row {
                file: f.clone(),
                line: i + 1,
                why: e.to_string(),
            })?);
        }
    }
    Ok(out)
}

/// One line of `throughput.jsonl`.
#[derive(Debug, Clone, serde::Deserialize)]
struct Tick {
    elapsed_s: f64,
    in_rate: f64,
    out_rate: f64,
}

fn draw_err(file: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |why| ReportError::Draw {
        file: file.to_path_buf(),
        why,
    }
}

fn time_label(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Draws one series chart on `area`.
fn series_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    key: &str,
    rows: &[&OutlierRow],
    forecast: &[(EventTime, f64, f64, f64)],
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(e)?;
    let x0 = rows.first().map_or(0, |r| r.ts);
    let x1 = forecast
        .iter()
        .map(|f| f.0)
        .chain(rows.last().map(|r| r.ts))
        .max()
        .unwrap_or(x0 + 1)
        .max(x0 + 1);
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for r in rows {
        lo = lo.min(r.value);
        hi = hi.max(r.value);
        if let Some((mean, std)) = r.stats() {
            lo = lo.min(mean - 2.0 * std);
            hi = hi.max(mean + 2.0 * std);
        }
    }
    for f in forecast {
        lo = lo.min(f.2);
        hi = hi.max(f.3);
    }
    if !(lo.is_finite() && hi.is_finite()) {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let mut chart = ChartBuilder::on(area)
        .caption(key, ("sans-serif", 22).into_font().style(FontStyle::Bold))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| time_label(*x))
        .light_line_style(RGBColor(235, 238, 242))
        .draw()
        .map_err(e)?;
    let band: Vec<&&OutlierRow> = rows.iter().filter(|r| r.stats().is_some()).collect();
    if band.len() > 1 {
        let mut poly: Vec<(i64, f64)> = band.iter().map(|r| (r.ts, r.mean + 2.0 * r.std)).collect();
        poly.extend(band.iter().rev().map(|r| (r.ts, r.mean - 2.0 * r.std)));
        chart
            .draw_series(std::iter::once(Polygon::new(
                poly,
                RGBColor(31, 111, 235).mix(0.15),
            )))
            .map_err(e)?
            .label("±2σ band")
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 18, y + 5)],
                    RGBColor(31, 111, 235).mix(0.15).filled(),
                )
            });
        chart
            .draw_series(LineSeries::new(
                band.iter().map(|r| (r.ts, r.mean)),
                RGBColor(31, 111, 235),
            ))
            .map_err(e)?
            .label("rolling mean")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(31, 111, 235)));
    }
    chart
        .draw_series(LineSeries::new(
            rows.iter().map(|r| (r.ts, r.value)),
            BLACK.stroke_width(1),
        ))
        .map_err(e)?
        .label("value")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
    let red = RGBColor(209, 36, 47);
    chart
        .draw_series(
            rows.iter()
                .filter(|r| r.anomalous)
                .map(|r| Circle::new((r.ts, r.value), 4, red.stroke_width(2))),
        )
        .map_err(e)?
        .label("anomalous")
        .legend(move |(x, y)| Circle::new((x + 9, y), 4, red.stroke_width(2)));
    if !forecast.is_empty() {
        let amber = RGBColor(191, 135, 0);
        let mut poly: Vec<(i64, f64)> = forecast.iter().map(|f| (f.0, f.3)).collect();
        poly.extend(forecast.iter().rev().map(|f| (f.0, f.2)));
        chart
            .draw_series(std::iter::once(Polygon::new(poly, amber.mix(0.25))))
            .map_err(e)?
            .label("95% interval")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 18, y + 5)], amber.mix(0.25).filled())
            });
        chart
            .draw_series(LineSeries::new(
                forecast.iter().map(|f| (f.0, f.1)),
                amber.stroke_width(2),
            ))
            .map_err(e)?
            .label("forecast")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], amber.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 205, 212))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    area.present().map_err(e)
}

/// Draws readings in and rows out per second over the run.
fn throughput_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    ticks: &[Tick],
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(e)?;
    let x1 = ticks.iter().map(|t| t.elapsed_s).fold(1.0, f64::max);
    let y1 = ticks
        .iter()
        .map(|t| t.in_rate.max(t.out_rate))
        .fold(1.0, f64::max)
        * 1.08;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "throughput",
            ("sans-serif", 22).into_font().style(FontStyle::Bold),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x1, 0.0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("per second")
        .light_line_style(RGBColor(235, 238, 242))
        .draw()
        .map_err(e)?;
    let blue = RGBColor(31, 111, 235);
    let green = RGBColor(26, 127, 55);
    chart
        .draw_series(LineSeries::new(
            ticks.iter().map(|t| (t.elapsed_s, t.in_rate)),
            blue.stroke_width(2),
        ))
        .map_err(e)?
        .label("readings in/s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], blue.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            ticks.iter().map(|t| (t.elapsed_s, t.out_rate)),
            green.stroke_width(2),
        ))
        .map_err(e)?
        .label("rows out/s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], green.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 205, 212))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    area.present().map_err(e)
}

/// A file name for a series key.
fn file_stem(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Draws the report; returns the files written.
pub fn render(spec: &ReportSpec) -> Result<Vec<PathBuf>, ReportError> {
    fonts();
    let scores: Vec<OutlierRow> = rows(&spec.input, "outlier_scores")?;
    let paths: Vec<ForecastPath> = jsonl_rows(&spec.input, "forecasts")?;
    let ticks: Vec<Tick> = rows(&spec.input, "throughput")?;
    if scores.is_empty() && ticks.is_empty() {
        return Err(ReportError::Empty(spec.input.clone()));
    }
    std::fs::create_dir_all(&spec.output).map_err(|e| ReportError::Input {
        path: spec.output.clone(),
        source: e,
    })?;
    let mut by: BTreeMap<String, Vec<&OutlierRow>> = BTreeMap::new();
    for r in &scores {
        by.entry(format!("{}/{}", r.series, r.field))
            .or_default()
            .push(r);
    }
    for v in by.values_mut() {
        v.sort_by_key(|r| r.ts);
    }
    let keys: Vec<String> = if spec.series.is_empty() {
        let mut ranked: Vec<(usize, &String)> = by
            .iter()
            .map(|(k, v)| (v.iter().filter(|r| r.anomalous).count(), k))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        ranked
            .into_iter()
            .take(spec.top)
            .map(|(_, k)| k.clone())
            .collect()
    } else {
        for k in &spec.series {
            if !by.contains_key(k) {
                return Err(ReportError::UnknownSeries(k.clone()));
            }
        }
        spec.series.clone()
    };
    let mut written = Vec::new();
    for key in keys {
        let all = &by[&key];
        let shown = &all[all.len().saturating_sub(spec.points.max(2))..];
        // The last forecast path issued for this series.
        let path: &[(EventTime, f64, f64, f64)] = paths
            .iter()
            .filter(|p| format!("{}/{}", p.series, p.field) == key)
            .max_by_key(|p| p.issued_ts)
            .map_or(&[], |p| &p.steps);
        let stem = spec.output.join(format!("series_{}", file_stem(&key)));
        let png = stem.with_extension("png");
        let svg = stem.with_extension("svg");
        series_chart(
            &BitMapBackend::new(&png, (1200, 480)).into_drawing_area(),
            &key,
            shown,
            path,
        )
        .map_err(draw_err(&png))?;
        series_chart(
            &SVGBackend::new(&svg, (1200, 480)).into_drawing_area(),
            &key,
            shown,
            path,
        )
        .map_err(draw_err(&svg))?;
        written.extend([png, svg]);
    }
    if !ticks.is_empty() {
        let png = spec.output.join("throughput.png");
        let svg = spec.output.join("throughput.svg");
        throughput_chart(
            &BitMapBackend::new(&png, (1200, 420)).into_drawing_area(),
            &ticks,
        )
        .map_err(draw_err(&png))?;
        throughput_chart(
            &SVGBackend::new(&svg, (1200, 420)).into_drawing_area(),
            &ticks,
        )
        .map_err(draw_err(&svg))?;
        written.extend([png, svg]);
    }
    Ok(written)
}
