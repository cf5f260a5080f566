//! Loading a dataset into memory: every row becomes a [`Reading`] or a [`Quarantined`] record
//! with its reason; readings are sorted by event time (stable), as a replay emits them.
//!
//! [`RowMapper`] is the one place where a row of text cells becomes a reading; the manifest
//! loader, the ad-hoc CSV reader ([`super::csvspec`]) and the file collector all use it.

use std::path::Path;

use super::manifest::{Format, Manifest, ResolvedFile, TagSpec, TimeSpec, ValueSpec};
use super::timefmt::{parse_time, parse_time_after, TimeFormat, Zone};
use super::DatasetError;
use crate::quarantine::Quarantined;
use crate::record::{EventTime, Interner, Reading, Sym};

/// A dataset read into memory.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Good readings, sorted by event time (ties keep file order).
    pub readings: Vec<Reading>,
    /// Rows that could not be read, with reasons.
    pub quarantined: Vec<Quarantined>,
    /// Data rows read (header excluded) = readings + quarantined.
    pub rows: u64,
    /// Files read.
    pub files: Vec<String>,
}

/// Where a tag's value comes from.
enum TagSource {
    Column(usize),
    Constant(Sym),
}

enum SeriesPart {
    Lit(String),
    Col(usize),
}

/// Maps rows of text cells (by column index) to readings, validating every field.
pub struct RowMapper {
    time_idx: usize,
    time_fmt: TimeFormat,
    zone: Zone,
    /// With a named zone: each series' latest reading, to resolve folds (see [`Zone`]).
    last: std::collections::HashMap<Sym, EventTime>,
    series: Vec<SeriesPart>,
    values: Vec<(usize, Sym)>,
    tags: Vec<(Sym, TagSource)>,
    interner: Interner,
    scratch: String,
    width: usize,
}

impl RowMapper {
    /// Builds a mapper for a header. `stem`/`dir` fill `{stem}`/`{dir}` in the series template.
    pub fn new(
        header: &[&str],
        path: &Path,
        time: &TimeSpec,
        series_template: &str,
        values: &[ValueSpec],
        tags: &[TagSpec],
    ) -> Result<Self, DatasetError> {
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| DatasetError::Column {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                    header: header.join(","),
                })
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut interner = Interner::default();
        let mut series = Vec::new();
        let mut rest = series_template;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let close = rest.find('}').ok_or_else(|| DatasetError::Manifest {
                        name: path.display().to_string(),
                        why: format!("unclosed {{ in series template {series_template:?}"),
                    })?;
                    let token = &rest[1..close];
                    series.push(match token {
                        "stem" => SeriesPart::Lit(stem.clone()),
                        "dir" => SeriesPart::Lit(dir.clone()),
                        t if t.starts_with("col:") => SeriesPart::Col(col(&t[4..])?),
                        other => {
                            return Err(DatasetError::Manifest {
                                name: path.display().to_string(),
                                why: format!("unknown token {{{other}}} in series template (use {{stem}}, {{dir}}, {{col:NAME}})"),
                            })
                        }
                    });
                    rest = &rest[close + 1..];
                }
                Some(i) => {
                    series.push(SeriesPart::Lit(rest[..i].to_string()));
                    rest = &rest[i..];
                }
                None => {
                    series.push(SeriesPart::Lit(rest.to_string()));
                    rest = "";
                }
            }
        }
        let values = values
            .iter()
            .map(|v| {
                Ok((
                    col(&v.column)?,
                    interner.intern(v.name.as_deref().unwrap_or(&v.column)),
                ))
            })
            .collect::<Result<Vec<_>, DatasetError>>()?;
        let tags = tags
            .iter()
            .map(|t| {
                let src = match (&t.column, &t.value) {
                    (Some(c), _) => TagSource::Column(col(c)?),
                    (None, Some(v)) => TagSource::Constant(interner.intern(v)),
                    (None, None) => TagSource::Constant(interner.intern("")),
                };
                Ok((interner.intern(&t.name), src))
            })
            .collect::<Result<Vec<_>, DatasetError>>()?;
        Ok(RowMapper {
            time_idx: col(&time.column)?,
            time_fmt: time.format.clone(),
            zone: time.timezone.clone(),
            last: std::collections::HashMap::new(),
            series,
            values,
            tags,
            interner,
            scratch: String::new(),
            width: header.len(),
        })
    }

    /// Hints that the CSV `line` is mapped soon: when the series id is one column, looks its
    /// cell up and prefetches the interner's slot for it (see [`Interner::prefetch`]).
    #[inline]
    pub fn prefetch_line(&self, line: &[u8]) {
        if let [SeriesPart::Col(c)] = self.series[..] {
            if let Some(cell) = line.split(|&b| b == b',').nth(c) {
                self.interner.prefetch(cell);
            }
        }
    }

    /// Maps one row; `get(i)` returns cell `i` (None when the row is too short).
    pub fn map<'a>(
        &mut self,
        len: usize,
        get: impl Fn(usize) -> Option<&'a str>,
    ) -> Result<Reading, String> {
        let (series, ts) = self.key(len, &get)?;
        let mut values = crate::record::Values::with_capacity(self.values.len());
        for &(i, name) in &self.values {
            values.push((name, value(name, cell(&get, i)?)?));
        }
        let mut tags = Vec::with_capacity(self.tags.len());
        for (name, src) in &self.tags {
            let v = match src {
                TagSource::Column(i) => self.interner.intern(super::num::trim(cell(&get, *i)?)),
                TagSource::Constant(c) => *c,
            };
            tags.push((*name, v));
        }
        Ok(Reading {
            series,
            ts,
            values,
            tags,
        })
    }

    /// Maps one row and appends the reading to `out` (the block reader's hot path). A row of
    /// one value and no tags is pushed as one value built from scalars, so the reading is
    /// written once, into `out`, instead of being assembled on the stack piece by piece and
    /// then copied (a store-forwarding stall per row that profiles put at ~6% of W2's CPU).
    #[inline]
    pub fn map_into<'a>(
        &mut self,
        len: usize,
        get: impl Fn(usize) -> Option<&'a str>,
        out: &mut Vec<Reading>,
    ) -> Result<(), String> {
        if let ([(i, name)], []) = (&self.values[..], &self.tags[..]) {
            let (i, name) = (*i, *name);
            let (series, ts) = self.key(len, &get)?;
            let v = value(name, cell(&get, i)?)?;
            out.push(Reading {
                series,
                ts,
                values: crate::record::Values::from_buf([(name, v)]),
                tags: Vec::new(),
            });
        } else {
            out.push(self.map(len, get)?);
        }
        Ok(())
    }

    /// Checks the row's width and reads its series id and event time.
    #[inline]
    fn key<'a>(
        &mut self,
        len: usize,
        get: &impl Fn(usize) -> Option<&'a str>,
    ) -> Result<(Sym, EventTime), String> {
        if len != self.width {
            return Err(format!("expected {} fields, found {len}", self.width));
        }
        let series = if let [SeriesPart::Col(i)] = self.series[..] {
            let s = super::num::trim(cell(get, i)?);
            if s.is_empty() {
                return Err("empty series id".into());
            }
            self.interner.intern(s)
        } else {
            self.scratch.clear();
            for part in &self.series {
                match part {
                    SeriesPart::Lit(s) => self.scratch.push_str(s),
                    SeriesPart::Col(i) => {
                        let s = super::num::trim(cell(get, *i)?);
                        if s.is_empty() {
                            return Err(format!("empty series column {i}"));
                        }
                        self.scratch.push_str(s)
                    }
                }
            }
            self.interner.intern(&self.scratch)
        };
        let field = cell(get, self.time_idx)?;
        let ts = if self.zone.is_named() {
            // A fold (an hour that happens twice) is resolved by the series' previous reading.
            let prev = self.last.get(&series).copied();
            let ts = parse_time_after(field, &self.time_fmt, &self.zone, prev)?;
            self.last.insert(series, ts);
            ts
        } else {
            parse_time(field, &self.time_fmt, &self.zone)?
        };
        Ok((series, ts))
    }
}

/// Cell `i` of a row, or the reason it is missing.
#[inline]
fn cell<'a>(get: &impl Fn(usize) -> Option<&'a str>, i: usize) -> Result<&'a str, String> {
    get(i).ok_or_else(|| format!("missing field {i}"))
}

/// Reads one value cell: numeric and finite, or the reason it is not.
#[inline]
fn value(name: Sym, cell: &str) -> Result<f64, String> {
    let raw = super::num::trim(cell);
    if raw.is_empty() {
        return Err(format!("empty value for {name}"));
    }
    let v: f64 = match super::num::decimal(raw) {
        Some(v) => v,
        None => raw
            .parse()
            .map_err(|_| format!("non-numeric value {raw:?} for {name}"))?,
    };
    if !v.is_finite() {
        return Err(format!("non-finite value {raw:?} for {name}"));
    }
    Ok(v)
}

/// Loads the files of a manifest found in `folder` (see [`super::locate`]).
pub fn load_manifest(
    manifest: &Manifest,
    folder: &Path,
    filter: Option<&str>,
) -> Result<Loaded, DatasetError> {
    let files = manifest.resolve(folder, filter)?;
    let mut loaded = Loaded::default();
    for f in &files {
        match f.format {
            Format::Csv => load_csv(f, &mut loaded)?,
            Format::Parquet => load_parquet(f, &mut loaded)?,
            Format::Jsonl => load_jsonl(f, &mut loaded)?,
        }
        loaded.files.push(f.rel.clone());
    }
    loaded.readings.sort_by_key(|r| r.ts);
    Ok(loaded)
}

fn load_csv(f: &ResolvedFile, out: &mut Loaded) -> Result<(), DatasetError> {
    let io = |e: std::io::Error| DatasetError::Io {
        path: f.path.clone(),
        source: e,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&f.path)
        .map_err(|e| io(std::io::Error::other(e)))?;
    let header = rdr
        .headers()
        .map_err(|e| io(std::io::Error::other(e)))?
        .clone();
    let cols: Vec<&str> = header.iter().collect();
    let mut mapper = RowMapper::new(&cols, &f.path, &f.time, &f.series, &f.values, &f.tags)?;
    let mut rec = csv::StringRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                out.rows += 1;
                match mapper.map(rec.len(), |i| rec.get(i)) {
                    Ok(r) => out.readings.push(r),
                    Err(why) => {
                        let payload = rec.iter().collect::<Vec<_>>().join(",");
                        out.quarantined.push(Quarantined::new(
                            format!("{}:{line}", f.rel),
                            why,
                            payload.as_bytes(),
                        ));
                    }
                }
            }
            Err(e) => {
                // Invalid UTF-8 or a broken quote: the row is lost to the parser, not to us.
                out.rows += 1;
                out.quarantined.push(Quarantined::new(
                    format!("{}:{line}", f.rel),
                    format!("unreadable CSV row: {e}"),
                    b"",
                ));
            }
        }
    }
    Ok(())
}

/// JSON lines: the columns are the fields of the first object; each line's fields are handed
/// to the mapper as text (strings as they are, numbers as written). A line that is not a JSON
/// object, or lacks a field, is quarantined.
fn load_jsonl(f: &ResolvedFile, out: &mut Loaded) -> Result<(), DatasetError> {
    use serde_json::Value;
    use std::io::BufRead;
    let io = |e: std::io::Error| DatasetError::Io {
        path: f.path.clone(),
        source: e,
    };
    let file = std::io::BufReader::new(std::fs::File::open(&f.path).map_err(io)?);
    let mut mapper: Option<(Vec<String>, RowMapper)> = None;
    let mut cells: Vec<Option<String>> = Vec::new();
    for (n, line) in file.split(b'\n').enumerate() {
        let line = line.map_err(io)?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.rows += 1;
        let source = format!("{}:{}", f.rel, n + 1);
        let obj = match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                out.quarantined
                    .push(Quarantined::new(source, "line is not a JSON object", &line));
                continue;
            }
            Err(e) => {
                out.quarantined
                    .push(Quarantined::new(source, format!("not JSON: {e}"), &line));
                continue;
            }
        };
        if mapper.is_none() {
            let names: Vec<String> = obj.keys().cloned().collect();
            let cols: Vec<&str> = names.iter().map(String::as_str).collect();
            let m = RowMapper::new(&cols, &f.path, &f.time, &f.series, &f.values, &f.tags)?;
            mapper = Some((names, m));
        }
        let Some((names, m)) = mapper.as_mut() else {
            continue;
        };
        cells.clear();
        cells.extend(names.iter().map(|k| match obj.get(k) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) => Some(String::new()),
            Some(v) => Some(v.to_string()),
        }));
        match m.map(cells.len(), |i| cells[i].as_deref()) {
            Ok(r) => out.readings.push(r),
            Err(why) => {
                let why = match cells.iter().position(Option::is_none) {
                    Some(i) => format!("missing field {:?}", names[i]),
                    None => why,
                };
                out.quarantined.push(Quarantined::new(source, why, &line));
            }
        }
    }
    Ok(())
}

fn load_parquet(f: &ResolvedFile, out: &mut Loaded) -> Result<(), DatasetError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let perr = |e: parquet::errors::ParquetError| DatasetError::Parquet {
        path: f.path.clone(),
        why: e.to_string(),
    };
    let file = std::fs::File::open(&f.path).map_err(|e| DatasetError::Io {
        path: f.path.clone(),
        source: e,
    })?;
    let reader = SerializedFileReader::new(file).map_err(perr)?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let names: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let cols: Vec<&str> = names.iter().map(String::as_str).collect();
    // Timestamps are handed to the mapper as epoch microseconds text, whatever the unit.
    let mut time = f.time.clone();
    time.format = TimeFormat::EpochUs;
    let mut mapper = RowMapper::new(&cols, &f.path, &time, &f.series, &f.values, &f.tags)?;
    let mut cells: Vec<String> = vec![String::new(); cols.len()];
    let mut present = vec![true; cols.len()];
    for (n, row) in reader.get_row_iter(None).map_err(perr)?.enumerate() {
        out.rows += 1;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                out.quarantined.push(Quarantined::new(
                    format!("{}#{n}", f.rel),
                    format!("unreadable row: {e}"),
                    b"",
                ));
                continue;
            }
        };
        for (i, (_, field)) in row.get_column_iter().enumerate().take(cols.len()) {
            let c = &mut cells[i];
            c.clear();
            present[i] = true;
            use std::fmt::Write;
            let _ = match field {
                Field::Null => {
                    present[i] = false;
                    Ok(())
                }
                Field::TimestampMicros(v) => write!(c, "{v}"),
                Field::TimestampMillis(v) => write!(c, "{}", v.saturating_mul(1000)),
                Field::Str(s) => write!(c, "{s}"),
                other => write!(c, "{other}"),
            };
        }
        match mapper.map(cols.len(), |i| {
            if present[i] {
                Some(cells[i].as_str())
            } else {
                Some("")
            }
        }) {
            Ok(r) => out.readings.push(r),
            Err(why) => {
                let payload = cells.join(",");
                out.quarantined.push(Quarantined::new(
                    format!("{}#{n}", f.rel),
                    why,
                    payload.as_bytes(),
                ));
            }
        }
    }
    Ok(())
}
