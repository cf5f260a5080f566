//! The file collector: CSV, JSON lines and Parquet files read through a dataset manifest (the
//! same loader and row mapper as `replay` and `run --dataset`, not a second parser), then the
//! shared cleaning (units, ranges, duplicates) and into Kafka, in event-time order, paced at
//! `max`, `1x` or `Nx` like `replay`.
//!
//! The manifest is a built-in one (`dataset = "weather_vega"`, `"nab:machine_temperature"`) or
//! a manifest file of your own (`manifest = "my.toml"`, its data under `data_dir`). Rows the
//! loader cannot read are quarantined with their file and line, and counted as received. A
//! single-valued reading's `unit` tag (set by the manifest) is taken as the unit its value is
//! given in, so `clean.units` can convert it. The collector ends when the files are done
//! (`collect` ends when every collector has).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::clean::{Candidate, CleanConfig, RawTime, RawValue};
use super::{CollectError, Collector, Sink};
use crate::dataset::{self, Manifest, Speed};
use crate::record::Reading;

/// One file collector's config (a `[[file]]` table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Name in logs, counters and quarantine sources.
    #[serde(default = "default_name")]
    pub name: String,
    /// A built-in manifest, with an optional file filter: `nab:machine_temperature`.
    pub dataset: Option<String>,
    /// A manifest file of your own (instead of `dataset`).
    pub manifest: Option<PathBuf>,
    /// Where the data is (default: `--data-dir` rules: `$STREAMGAUGE_DATA`,
    /// `../shared/datasets`).
    pub data_dir: Option<PathBuf>,
    /// Pace: `max` (default), `1x`, `60x` ...
    #[serde(default = "default_speed")]
    pub speed: String,
    /// The unit each value is given in (overrides a manifest's `unit` tag).
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// Kafka topic the readings go to.
    pub kafka_topic: String,
    /// Tags added to every reading.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Cleaning rules.
    #[serde(default)]
    pub clean: CleanConfig,
}

fn default_name() -> String {
    "file".into()
}
fn default_speed() -> String {
    "max".into()
}

impl FileConfig {
    /// Loads the files (every row a reading or a quarantined record).
    pub fn load(&self) -> Result<dataset::Loaded, String> {
        match (&self.dataset, &self.manifest) {
            (Some(name), None) => {
                dataset::load_builtin(name, self.data_dir.as_deref()).map_err(|e| e.to_string())
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("manifest {}: {e}", path.display()))?;
                let stem = path
                    .file_stem()
                    .map_or("manifest".into(), |s| s.to_string_lossy());
                let manifest = Manifest::from_toml(&stem, &text).map_err(|e| e.to_string())?;
                // A manifest of one's own: its folder is relative to data_dir, else to the
                // manifest file.
                let base = match &self.data_dir {
                    Some(d) => d.clone(),
                    None => path
                        .parent()
                        .unwrap_or(std::path::Path::new("."))
                        .to_path_buf(),
                };
                dataset::load::load_manifest(&manifest, &base.join(&manifest.folder), None)
                    .map_err(|e| e.to_string())
            }
            _ => Err("give exactly one of dataset or manifest".into()),
        }
    }

    /// A loaded reading as a candidate for the cleaner.
    pub fn candidate(&self, r: &Reading) -> Candidate {
        let single = r.values.len() == 1;
        let tag_unit = r
            .tags
            .iter()
            .find(|(k, _)| &**k == "unit")
            .map(|(_, v)| v.to_string());
        let values = r
            .values
            .iter()
            .map(|(name, v)| {
                let unit = self
                    .units
                    .get(&**name)
                    .cloned()
                    .or_else(|| tag_unit.clone().filter(|_| single));
                (name.to_string(), RawValue::Number(*v), unit)
            })
            .collect();
        let mut tags: Vec<(String, String)> = r
            .tags
            .iter()
            .filter(|(k, _)| !(single && &**k == "unit"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tags.extend(self.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        Candidate {
            series: Some(r.series.to_string()),
            time: Some(RawTime::Millis(r.ts)),
            values,
            tags,
        }
    }
}

impl Collector for FileConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "file"
    }
    fn kafka_topic(&self) -> &str {
        &self.kafka_topic
    }
    fn clean(&self) -> &CleanConfig {
        &self.clean
    }

    fn validate(&self) -> Result<(), CollectError> {
        let bad = |why: String| CollectError::Config {
            collector: self.name.clone(),
            why,
        };
        if self.dataset.is_some() == self.manifest.is_some() {
            return Err(bad(
                "give exactly one of dataset (a built-in manifest) or manifest (a file)".into(),
            ));
        }
        if let Some(d) = &self.dataset {
            Manifest::builtin(dataset::split_name(d).0).map_err(|e| bad(e.to_string()))?;
        }
        if let Some(m) = &self.manifest {
            let text = std::fs::read_to_string(m)
                .map_err(|e| bad(format!("manifest {}: {e}", m.display())))?;
            Manifest::from_toml("manifest", &text)
                .map_err(|e| bad(format!("manifest {}: {e}", m.display())))?;
        }
        self.speed
            .parse::<Speed>()
            .map_err(|e| bad(e.replace("--speed", "speed =")))?;
        Ok(())
    }

    fn run(&self, sink: &mut Sink, stop: &AtomicBool) -> Result<(), CollectError> {
        let speed: Speed = self.speed.parse().map_err(|why| CollectError::Config {
            collector: self.name.clone(),
            why,
        })?;
        let loaded = self.load().map_err(|why| CollectError::Source {
            collector: self.name.clone(),
            why,
        })?;
        tracing::info!(collector = %self.name, rows = loaded.rows, files = loaded.files.len(), "files loaded");
        for q in &loaded.quarantined {
            sink.offer(&q.source, q.payload.as_bytes(), Err(q.reason.clone()))?;
        }
        let source = format!(
            "file://{}",
            self.dataset
                .clone()
                .or_else(|| self.manifest.as_ref().map(|m| m.display().to_string()))
                .unwrap_or_default()
        );
        let start = Instant::now();
        let first = loaded.readings.first().map_or(0, |r| r.ts);
        for r in &loaded.readings {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Speed::Factor(f) = speed {
                let due = Duration::from_secs_f64((r.ts - first).max(0) as f64 / 1000.0 / f);
                let now = start.elapsed();
                if due > now && super::sleep_unless(stop, due - now) {
                    break;
                }
            }
            let mut payload = Vec::new();
            crate::record::WireFormat::Json.encode(r, &mut payload);
            sink.offer(&source, &payload, Ok(self.candidate(r)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_unit_tags_become_given_units() {
        let c: FileConfig =
            toml::from_str("dataset = \"weather_vega\"\nkafka_topic = \"w\"").unwrap();
        c.validate().unwrap();
        let r = Reading {
            series: "s".into(),
            ts: 5,
            values: smallvec::smallvec![("temp_f".into(), 50.0)],
            tags: vec![("unit".into(), "F".into()), ("site".into(), "x".into())],
        };
        let cand = c.candidate(&r);
        assert_eq!(cand.values[0].2.as_deref(), Some("F"));
        assert_eq!(cand.tags, [("site".to_string(), "x".to_string())]);
        let e: FileConfig = toml::from_str("kafka_topic = \"w\"").unwrap();
        assert!(e
            .validate()
            .unwrap_err()
            .to_string()
            .contains("exactly one"));
        let e: FileConfig = toml::from_str("dataset = \"nope\"\nkafka_topic = \"w\"").unwrap();
        assert!(e.validate().is_err());
    }
}
