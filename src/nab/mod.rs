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
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file was read but its content is not what NAB writes.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when known.
        reason: String,
    },
    /// The folder is not a NAB checkout.
    #[error("{0} is not a NAB folder (expected data/ and labels/combined_windows.json in it)")]
    NotNab(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NabError + '_ {
    move |source| NabError::Io {
        path: path.to_path_buf(),
        source,
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
