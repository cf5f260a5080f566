//! Datasets: manifests that map files and columns to [`Reading`](crate::record::Reading)s,
//! their discovery on disk, loaders for CSV and Parquet, and generators (W1).
//!
//! Manifests live in the repository's `datasets/` folder and are compiled into the binary,
//! so `streamgauge datasets` works from any directory. Data files are found under
//! `--data-dir`, else `$STREAMGAUGE_DATA`, else `../shared/datasets` (relative to the working
//! directory and to the executable's checkout).

pub mod csvspec;
pub mod generate;
pub mod load;
pub mod manifest;
pub mod num;
pub mod timefmt;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use load::Loaded;
pub use manifest::Manifest;

/// Everything that can go wrong finding or reading a dataset (bad rows are not errors: they
/// are quarantined).
#[derive(Debug, Error)]
pub enum DatasetError {
    /// No manifest with that name.
    #[error("unknown dataset {name:?}; known: {known}")]
    Unknown {
        /// What was asked for.
        name: String,
        /// Comma-separated list of known names.
        known: String,
    },
    /// The dataset's folder was not found in any data directory.
    #[error("dataset {name:?} not found; looked for {folder:?} in: {tried}. Pass --data-dir or set STREAMGAUGE_DATA")]
    Missing {
        /// Dataset name.
        name: String,
        /// Folder the manifest expects.
        folder: String,
        /// Every directory tried, in order.
        tried: String,
    },
    /// A manifest is malformed.
    #[error("manifest {name}: {why}")]
    Manifest {
        /// Manifest name or path.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The filter after `:` matched no file.
    #[error("dataset {name:?}: no file matches {filter:?}")]
    NoMatch {
        /// Dataset name.
        name: String,
        /// The filter.
        filter: String,
    },
    /// Reading a file failed as a whole (not a bad row).
    #[error("reading {path}: {source}")]
    Io {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The CSV header lacks a configured column.
    #[error("{path}: column {column:?} not in header {header:?}")]
    Column {
        /// File path.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The header found.
        header: String,
    },
    /// Parquet decoding failed as a whole.
    #[error("parquet {path}: {why}")]
    Parquet {
        /// File path.
        path: PathBuf,
        /// Error text.
        why: String,
    },
}

/// Data directories in search order: `--data-dir`, `$STREAMGAUGE_DATA`, `../shared/datasets`
/// (from the working directory, then from the executable's checkout).
pub fn data_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(p) = explicit {
        dirs.push(p.to_path_buf());
        return dirs;
    }
    if let Some(p) = std::env::var_os("STREAMGAUGE_DATA") {
        dirs.push(PathBuf::from(p));
    }
    dirs.push(PathBuf::from("../shared/datasets"));
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/streamgauge -> <checkout>/../shared/datasets
        for anc in exe.ancestors().skip(1).take(5) {
            let cand = anc.join("../shared/datasets");
            if cand.is_dir() && !dirs.iter().any(|d| same(d, &cand)) {
                dirs.push(cand);
            }
        }
    }
    dirs
}

fn same(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Finds the folder of a manifest's data: the first data dir that holds it.
pub fn locate(manifest: &Manifest, explicit: Option<&Path>) -> Result<PathBuf, DatasetError> {
    let dirs = data_dirs(explicit);
    for d in &dirs {
        let p = d.join(&manifest.folder);
        if p.is_dir() {
            return Ok(p);
        }
    }
    Err(DatasetError::Missing {
        name: manifest.name.clone(),
        folder: manifest.folder.clone(),
        tried: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// A dataset name as users write it, `name` or `name:filter` (a part of a file's path).
pub fn split_name(name: &str) -> (&str, Option<&str>) {
    match name.split_once(':') {
        Some((b, f)) => (b, Some(f)),
        None => (name, None),
    }
}

/// Loads a built-in dataset, `name` or `name:filter`, found as [`locate`] says.
pub fn load_builtin(name: &str, data_dir: Option<&Path>) -> Result<Loaded, DatasetError> {
    let (base, filter) = split_name(name);
    let manifest = Manifest::builtin(base)?;
    let folder = locate(&manifest, data_dir)?;
    load::load_manifest(&manifest, &folder, filter)
}

/// Replay pace (`replay`, the file collector).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the broker takes it.
    Max,
    /// Event time runs this many times faster than the wall clock.
    Factor(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        match s.strip_suffix('x').and_then(|n| n.parse::<f64>().ok()) {
            Some(f) if f > 0.0 && f.is_finite() => Ok(Speed::Factor(f)),
            _ => Err(format!(
                "--speed {s:?}: use max, 1x, 60x (a positive factor followed by x)"
            )),
        }
    }
}
