//! The dataset manifest (TOML): which files, which column is the time (format, zone), which
//! columns are values, and how the series id is formed. One manifest per dataset in
//! `datasets/`, compiled into the binary through [`BUILTIN`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::timefmt::{TimeFormat, Zone};
use super::DatasetError;

/// Manifests shipped with streamgauge. Adding a dataset: one TOML file and one line here.
pub const BUILTIN: &[(&str, &str)] = &[
    ("nab", include_str!("../../datasets/nab.toml")),
    (
        "weather_vega",
        include_str!("../../datasets/weather_vega.toml"),
    ),
    (
        "stocks_vega",
        include_str!("../../datasets/stocks_vega.toml"),
    ),
    (
        "traffic_i94",
        include_str!("../../datasets/traffic_i94.toml"),
    ),
    (
        "gas_turbine_emission_hourly",
        include_str!("../../datasets/gas_turbine_emission_hourly.toml"),
    ),
    (
        "melbourne_pedestrian_counts_hourly",
        include_str!("../../datasets/melbourne_pedestrian_counts_hourly.toml"),
    ),
    (
        "flights_3m_vega",
        include_str!("../../datasets/flights_3m_vega.toml"),
    ),
    (
        "stocks_gafa_tsibbledata",
        include_str!("../../datasets/stocks_gafa_tsibbledata.toml"),
    ),
    (
        "vic_electricity",
        include_str!("../../datasets/vic_electricity.toml"),
    ),
    (
        "weather_yosemite_5min_prophet",
        include_str!("../../datasets/weather_yosemite_5min_prophet.toml"),
    ),
];

/// A parsed dataset manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Dataset name (the CLI argument).
    pub name: String,
    /// One line on what it is.
    #[serde(default)]
    pub description: String,
    /// Folder under a data directory that holds the files.
    pub folder: String,
    /// Licence, as the dataset's provenance states it.
    #[serde(default)]
    pub license: String,
    /// Defaults every file inherits.
    #[serde(default)]
    pub defaults: FileSpec,
    /// The files (or globs) that make up the dataset.
    pub files: Vec<FileSpec>,
}

/// File format of a dataset file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// JSON lines: one object per line; its fields are the columns (named as in the first
    /// object).
    Jsonl,
}

/// How one file (or all files matching a glob) map to readings; unset fields inherit defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Path relative to the dataset folder.
    pub path: Option<String>,
    /// `*.csv` (this folder) or `**/*.csv` (recursive).
    pub glob: Option<String>,
    /// csv, parquet or jsonl; inferred from the extension (`.parquet`, `.jsonl`/`.ndjson`,
    /// else csv) when unset.
    pub format: Option<Format>,
    /// The event-time column.
    pub time: Option<TimeSpec>,
    /// Series id template: literal text with `{stem}` (file name without extension), `{dir}`
    /// (parent folder name) and `{col:NAME}` (a column's value).
    pub series: Option<String>,
    /// Value columns.
    pub values: Option<Vec<ValueSpec>>,
    /// Tags: from a column or a constant.
    pub tags: Option<Vec<TagSpec>>,
}

/// The event-time column and how it is written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSpec {
    /// Column name.
    pub column: String,
    /// `epoch_s`, `epoch_ms`, `epoch_us`, `rfc3339` or a strftime pattern.
    pub format: TimeFormat,
    /// Zone of local timestamps (`UTC`, `+10:00`, or a tz database name such as
    /// `America/Chicago`, with daylight saving); ignored for epoch and RFC 3339 times.
    #[serde(default)]
    pub timezone: Zone,
}

/// A value column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueSpec {
    /// Column name.
    pub column: String,
    /// Value name in the reading (defaults to the column name).
    pub name: Option<String>,
}

/// A tag.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagSpec {
    /// Tag name.
    pub name: String,
    /// Column to read it from ...
    pub column: Option<String>,
    /// ... or a constant.
    pub value: Option<String>,
}

/// A file of a dataset with its fully resolved mapping.
#[derive(Debug, Clone)]
pub struct ResolvedFile {
    /// Absolute or data-dir-relative path.
    pub path: PathBuf,
    /// Path relative to the dataset folder (used by filters and `{dir}`).
    pub rel: String,
    /// File format.
    pub format: Format,
    /// Time column.
    pub time: TimeSpec,
    /// Series template.
    pub series: String,
    /// Value columns.
    pub values: Vec<ValueSpec>,
    /// Tags.
    pub tags: Vec<TagSpec>,
}

impl Manifest {
    /// Parses a manifest from TOML text.
    pub fn from_toml(name: &str, text: &str) -> Result<Self, DatasetError> {
        toml::from_str(text).map_err(|e| DatasetError::Manifest {
            name: name.into(),
            why: e.to_string(),
        })
    }

    /// Looks up a built-in manifest by name.
    pub fn builtin(name: &str) -> Result<Self, DatasetError> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Manifest::from_toml(n, text),
            None => Err(DatasetError::Unknown {
                name: name.into(),
                known: BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// All built-in manifests.
    pub fn all_builtin() -> Result<Vec<Self>, DatasetError> {
        BUILTIN
            .iter()
            .map(|(n, t)| Manifest::from_toml(n, t))
            .collect()
    }

    /// Expands files and globs under `folder`, resolving inherited fields. `filter` keeps the
    /// files whose relative path contains it.
    pub fn resolve(
        &self,
        folder: &Path,
        filter: Option<&str>,
    ) -> Result<Vec<ResolvedFile>, DatasetError> {
        let err = |why: String| DatasetError::Manifest {
            name: self.name.clone(),
            why,
        };
        let mut out = Vec::new();
        for spec in &self.files {
            let rels: Vec<String> = match (&spec.path, &spec.glob) {
                (Some(p), None) => vec![p.clone()],
                (None, Some(g)) => expand_glob(folder, g).map_err(|e| DatasetError::Io {
                    path: folder.into(),
                    source: e,
                })?,
                _ => {
                    return Err(err(
                        "each [[files]] entry needs exactly one of path or glob".into(),
                    ))
                }
            };
            for rel in rels {
                let format = pick(&spec.format, &self.defaults.format).unwrap_or(
                    if rel.ends_with(".parquet") {
                        Format::Parquet
                    } else if rel.ends_with(".jsonl") || rel.ends_with(".ndjson") {
                        Format::Jsonl
                    } else {
                        Format::Csv
                    },
                );
                let time = pick(&spec.time, &self.defaults.time)
                    .ok_or_else(|| err(format!("{rel}: no time column")))?;
                let series = pick(&spec.series, &self.defaults.series)
                    .ok_or_else(|| err(format!("{rel}: no series template")))?;
                let values = pick(&spec.values, &self.defaults.values)
                    .ok_or_else(|| err(format!("{rel}: no value columns")))?;
                if values.is_empty() {
                    return Err(err(format!("{rel}: no value columns")));
                }
                let tags = pick(&spec.tags, &self.defaults.tags).unwrap_or_default();
                for t in &tags {
                    if t.column.is_some() == t.value.is_some() {
                        return Err(err(format!(
                            "tag {}: give exactly one of column or value",
                            t.name
                        )));
                    }
                }
                out.push(ResolvedFile {
                    path: folder.join(&rel),
                    rel,
                    format,
                    time,
                    series,
                    values,
                    tags,
                });
            }
        }
        if let Some(f) = filter {
            out.retain(|r| r.rel.contains(f));
            if out.is_empty() {
                return Err(DatasetError::NoMatch {
                    name: self.name.clone(),
                    filter: f.into(),
                });
            }
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }
}

fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
    a.clone().or_else(|| b.clone())
}

fn expand_glob(folder: &Path, glob: &str) -> std::io::Result<Vec<String>> {
    let (recursive, pat) = match glob.strip_prefix("**/") {
        Some(p) => (true, p),
        None => (false, glob),
    };
    let suffix = pat.strip_prefix('*').unwrap_or(pat);
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(folder.join(&rel))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = rel.join(&name);
            if entry.file_type()?.is_dir() {
                if recursive {
                    stack.push(child);
                }
            } else if name.ends_with(suffix) {
                out.push(child.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_parse() {
        let all = Manifest::all_builtin().unwrap();
        assert_eq!(all.len(), BUILTIN.len());
        for (m, (n, _)) in all.iter().zip(BUILTIN) {
            assert_eq!(&m.name, n, "manifest name must match its registry key");
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = Manifest::builtin("nope").unwrap_err().to_string();
        assert!(e.contains("unknown dataset") && e.contains("nab"), "{e}");
    }
}
