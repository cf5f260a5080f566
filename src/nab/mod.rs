//! The Numenta Anomaly Benchmark (NAB): its corpus (58 labelled series and their anomaly
//! windows), NAB's own results layout (read and write), and the scorer in [`score`].
//!
//! Everything here follows `SCORING.md` of the NAB folder in the shared datasets: rows are
//! matched to label windows on the first 19 characters of their timestamps, and a results file
//! is `<results>/<detector>/<category>/<detector>_<file>.csv` with the header
//! `timestamp,value,anomaly_score`.

pub mod score;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Everything that can go wrong reading or writing NAB files.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// A file was read but its content is not what NAB writes.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when known.
        reason: String,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::run::EngineError),
    /// The folder is not a NAB checkout.
    #[error("{0} is not a NAB folder (expected data/ and labels/combined_windows.json in it)")]
    NotNab(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NabError + '_ {
    move |error| NabError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// One labelled series of the corpus.
#[derive(Debug, Clone)]
pub struct NabFile {
    /// Path relative to `data/`, e.g. `realKnownCause/nyc_taxi.csv` (NAB's own key).
    pub key: String,
    /// Row timestamps, first 19 characters (`YYYY-MM-DD HH:MM:SS`).
    pub timestamps: Vec<String>,
    /// Row values.
    pub values: Vec<f64>,
    /// Anomaly windows as inclusive row-index ranges, in time order.
    pub windows: Vec<(usize, usize)>,
}

impl NabFile {
    /// Category folder (`realKnownCause`).
    pub fn category(&self) -> &str {
        self.key.split_once('/').map_or("", |(c, _)| c)
    }

    /// File name (`nyc_taxi.csv`).
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }

    /// The series id the `nab` dataset manifest gives this file (`realKnownCause/nyc_taxi`).
    pub fn series(&self) -> &str {
        self.key.strip_suffix(".csv").unwrap_or(&self.key)
    }

    /// Number of rows NAB does not score (the detector's probation): `min(floor(0.15 n), 750)`.
    pub fn probation(&self) -> usize {
        probation(self.values.len())
    }
}

/// NAB's probationary period for a file of `n` rows.
pub fn probation(n: usize) -> usize {
    ((0.15 * n as f64).floor() as usize).min(750)
}

/// The 58 files and their windows.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Files sorted by key.
    pub files: Vec<NabFile>,
}

impl Corpus {
    /// Loads `data/` and `labels/combined_windows.json` from a NAB folder.
    pub fn load(dir: &Path) -> Result<Corpus, NabError> {
        let labels_path = dir.join("labels").join("combined_windows.json");
        if !labels_path.is_file() || !dir.join("data").is_dir() {
            return Err(NabError::NotNab(dir.to_path_buf()));
        }
        let text = fs::read_to_string(&labels_path).map_err(io(&labels_path))?;
        let labels: BTreeMap<String, Vec<[String; 2]>> =
            serde_json::from_str(&text).map_err(|e| NabError::Format {
                path: labels_path.clone(),
                reason: e.to_string(),
            })?;
        let mut files = Vec::with_capacity(labels.len());
        for (key, windows) in labels {
            let path = dir.join("data").join(&key);
            let (timestamps, values) = read_rows(&path, 1)?;
            let windows = windows
                .iter()
                .map(|[start, end]| {
                    let (s, e) = (prefix19(start), prefix19(end));
                    let first = timestamps.partition_point(|t| t.as_str() < s);
                    let last = timestamps.partition_point(|t| t.as_str() <= e);
                    if first >= last {
                        Err(NabError::Format {
                            path: labels_path.clone(),
                            reason: format!("window {start}..{end} of {key} holds no row"),
                        })
                    } else {
                        Ok((first, last - 1))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            files.push(NabFile {
                key,
                timestamps,
                values,
                windows,
            });
        }
        Ok(Corpus { files })
    }

    /// Total number of label windows (116 for NAB v1.1).
    pub fn window_count(&self) -> usize {
        self.files.iter().map(|f| f.windows.len()).sum()
    }

    /// `splits` random halvings of the corpus, stratified by category, for judging whether a
    /// difference between detectors holds beyond the files it was seen on: within each
    /// category the files are shuffled and dealt alternately to the two halves (the
    /// alternation running on from one category to the next), so each half holds about half
    /// of every category. Each element is two disjoint lists of file indices that cover the
    /// corpus. Deterministic for a `seed`.
    pub fn halvings(&self, splits: usize, seed: u64) -> Vec<[Vec<usize>; 2]> {
        let mut rng = crate::dataset::generate::SplitMix64(seed);
        let mut by_category: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, f) in self.files.iter().enumerate() {
            by_category.entry(f.category()).or_default().push(i);
        }
        (0..splits)
            .map(|_| {
                let mut halves = [Vec::new(), Vec::new()];
                let mut side = (rng.next_u64() & 1) as usize;
                for files in by_category.values() {
                    let mut files = files.clone();
                    for k in (1..files.len()).rev() {
                        files.swap(k, rng.below(k as u64 + 1) as usize);
                    }
                    for i in files {
                        halves[side].push(i);
                        side ^= 1;
                    }
                }
                halves
            })
            .collect()
    }

    /// The corpus of the files at `indices` (in that order).
    pub fn subset(&self, indices: &[usize]) -> Corpus {
        Corpus {
            files: indices.iter().map(|&i| self.files[i].clone()).collect(),
        }
    }

    /// Reads a detector's per-row scores from NAB's results layout under `results`.
    pub fn read_scores(&self, results: &Path, detector: &str) -> Result<Vec<Vec<f64>>, NabError> {
        self.files
            .iter()
            .map(|f| {
                let path = results_path(results, detector, f);
                let (ts, scores) = read_rows(&path, 2)?;
                if ts.len() != f.values.len() || ts.first() != f.timestamps.first() {
                    return Err(NabError::Format {
                        path,
                        reason: format!(
                            "{} rows starting {:?}, but the data file has {} starting {:?}",
                            ts.len(),
                            ts.first(),
                            f.values.len(),
                            f.timestamps.first()
                        ),
                    });
                }
                Ok(scores)
            })
            .collect()
    }

    /// Writes per-row scores in NAB's results layout; returns the files written.
    pub fn write_scores(
        &self,
        results: &Path,
        detector: &str,
        scores: &[Vec<f64>],
    ) -> Result<usize, NabError> {
        for (f, s) in self.files.iter().zip(scores) {
            let path = results_path(results, detector, f);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let file = fs::File::create(&path).map_err(io(&path))?;
            let mut w = BufWriter::new(file);
            let mut write = || -> std::io::Result<()> {
                writeln!(w, "timestamp,value,anomaly_score")?;
                for ((t, v), a) in f.timestamps.iter().zip(&f.values).zip(s) {
                    writeln!(w, "{t},{v},{a}")?;
                }
                w.flush()
            };
            write().map_err(io(&path))?;
        }
        Ok(scores.len().min(self.files.len()))
    }
}

/// `<results>/<detector>/<category>/<detector>_<file>.csv`.
pub fn results_path(results: &Path, detector: &str, file: &NabFile) -> PathBuf {
    results
        .join(detector)
        .join(file.category())
        .join(format!("{detector}_{}", file.file_name()))
}

fn prefix19(s: &str) -> &str {
    s.get(..19).unwrap_or(s)
}

/// Reads `timestamp` (column 0) and the f64 in `column` of a NAB CSV with a header.
fn read_rows(path: &Path, column: usize) -> Result<(Vec<String>, Vec<f64>), NabError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let mut ts = Vec::new();
    let mut vs = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.is_empty() {
            continue;
        }
        let mut cols = line.split(',');
        let t = cols.next().unwrap_or("");
        let v = cols
            .nth(column - 1)
            .and_then(|v| v.trim().parse::<f64>().ok());
        match v {
            Some(v) if t.len() >= 19 => {
                ts.push(prefix19(t).to_string());
                vs.push(v);
            }
            _ => {
                return Err(NabError::Format {
                    path: path.to_path_buf(),
                    reason: format!(
                        "line {}: expected a timestamp and a number in column {column}: {line:?}",
                        i + 1
                    ),
                })
            }
        }
    }
    Ok((ts, vs))
}

/// Parses a NAB timestamp (`YYYY-MM-DD HH:MM:SS`, UTC) to epoch milliseconds.
pub fn timestamp_ms(t: &str) -> Option<i64> {
    use crate::dataset::timefmt::{parse_time, TimeFormat, Zone};
    static FORMAT: std::sync::LazyLock<TimeFormat> =
        std::sync::LazyLock::new(|| TimeFormat::Pattern("%Y-%m-%d %H:%M:%S".into()));
    parse_time(t, &FORMAT, &Zone::default()).ok()
}

/// What a detector run over the corpus produced.
#[derive(Debug, Clone)]
pub struct DetectorRun {
    /// Per file (corpus order), per row, the anomaly score.
    pub scores: Vec<Vec<f64>>,
    /// Readings scored.
    pub readings: u64,
    /// Engine wall time.
    pub elapsed: std::time::Duration,
}

/// Runs the `gauge` detector kernel with `params` over every file of the corpus, without the
/// engine (for tuning harnesses): per file, per row, the score. Rows go in file order; the
/// engine ([`run_detector`]) breaks ties of time by value, so files with repeated timestamps
/// can differ after the first tie (no NAB score does, on the defaults).
pub fn kernel_scores(
    corpus: &Corpus,
    params: &crate::analytics::detector::DetectorParams,
) -> Result<Vec<Vec<f64>>, NabError> {
    corpus
        .files
        .iter()
        .map(|f| {
            let mut d = crate::analytics::detector::Detector::new(params.clone());
            f.values
                .iter()
                .zip(&f.timestamps)
                .map(|(&v, t)| {
                    let ts = timestamp_ms(t).ok_or_else(|| NabError::Format {
                        path: PathBuf::from(&f.key),
                        reason: format!("bad timestamp {t:?}"),
                    })?;
                    Ok(d.update(ts, v))
                })
                .collect()
        })
        .collect()
}

/// Runs the `anomaly` dataflow (the `gauge` detector with `params`) through the engine over
/// every file of the corpus, as one stream in event-time order on `workers` workers, and maps
/// the scores back to the corpus rows. `scratch` receives the engine's CSV output.
pub fn run_detector(
    corpus: &Corpus,
    workers: usize,
    params: &crate::analytics::detector::DetectorParams,
    scratch: &Path,
) -> Result<DetectorRun, NabError> {
    use crate::engine::output::OutputFormat;
    use crate::engine::run::{run, Input, RunSpec};
    use crate::engine::ClusterArgs;
    use crate::record::Reading;
    use crate::record::Sym;

    let mut readings = Vec::with_capacity(corpus.files.iter().map(|f| f.values.len()).sum());
    let mut order: Vec<Vec<usize>> = Vec::with_capacity(corpus.files.len());
    for f in &corpus.files {
        let series = Sym::new(f.series());
        let mut ts = Vec::with_capacity(f.values.len());
        for t in &f.timestamps {
            ts.push(timestamp_ms(t).ok_or_else(|| NabError::Format {
                path: PathBuf::from(&f.key),
                reason: format!("bad timestamp {t:?}"),
            })?);
        }
        // The order the engine scores rows in: (event time, value).
        let mut idx: Vec<usize> = (0..f.values.len()).collect();
        idx.sort_by(|&a, &b| ts[a].cmp(&ts[b]).then(f.values[a].total_cmp(&f.values[b])));
        for (&t, &v) in ts.iter().zip(&f.values) {
            readings.push(Reading::single(series, t, v));
        }
        order.push(idx);
    }
    readings.sort_by_key(|r| r.ts);
    let n = readings.len() as u64;
    let _ = fs::remove_dir_all(scratch);
    let mut spec = RunSpec::new("anomaly", Input::memory(readings));
    spec.cluster = ClusterArgs {
        workers,
        ..ClusterArgs::default()
    };
    spec.detector = params.clone();
    spec.output_dir = Some(scratch.to_path_buf());
    spec.output_format = OutputFormat::Csv;
    let report = run(spec)?;

    let path = scratch.join("anomaly.csv");
    let mut rows: BTreeMap<String, Vec<(i64, f64, f64)>> = BTreeMap::new();
    let mut reader = csv::Reader::from_path(&path).map_err(|e| NabError::Format {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    for rec in reader.records() {
        let rec = rec.map_err(|e| NabError::Format {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let num = |i: usize| rec.get(i).and_then(|s| s.parse::<f64>().ok());
        match (
            rec.get(0),
            rec.get(2).and_then(|s| s.parse::<i64>().ok()),
            num(3),
            num(4),
        ) {
            (Some(s), Some(ts), Some(v), Some(score)) => {
                rows.entry(s.to_string()).or_default().push((ts, v, score))
            }
            _ => {
                return Err(NabError::Format {
                    path: path.clone(),
                    reason: format!("unreadable row {rec:?}"),
                })
            }
        }
    }
    let mut scores = Vec::with_capacity(corpus.files.len());
    for (f, idx) in corpus.files.iter().zip(&order) {
        let mut got = rows.remove(f.series()).unwrap_or_default();
        if got.len() != f.values.len() {
            return Err(NabError::Format {
                path: path.clone(),
                reason: format!(
                    "{} rows for {}, expected {}",
                    got.len(),
                    f.key,
                    f.values.len()
                ),
            });
        }
        got.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut s = vec![0.0; f.values.len()];
        for (&i, &(_, _, score)) in idx.iter().zip(&got) {
            s[i] = score;
        }
        scores.push(s);
    }
    Ok(DetectorRun {
        scores,
        readings: n,
        elapsed: report.elapsed,
    })
}
