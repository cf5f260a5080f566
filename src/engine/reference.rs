//! Reference data: a small, versioned table of series metadata (location, unit) that
//! dataflows join with their results as a differential collection.
//!
//! The table is a CSV file with the header `series,location,unit[,valid_from]`. `valid_from`
//! (epoch milliseconds or RFC 3339; empty = always) makes a row a new version of the series'
//! metadata from that event time on: the previous version is retracted and the new one
//! inserted at that time, so a replay sees the metadata that held when each reading was taken.
//! The file is re-read when it changes while a run is live; the new table replaces the old one
//! from the current input frontier on. Only worker 0 reads it; joins route the rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use crate::dataset::timefmt::{parse_time, TimeFormat, Zone};
use crate::record::{EventTime, Reading, Sym};

/// Why the reference table cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The file cannot be read.
    #[error("reference table {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        error: std::io::Error,
    },
    /// A line is not `series,location,unit[,valid_from]`.
    #[error("reference table {path}, line {line}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// One version of a series' metadata.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefRow {
    /// Series id.
    pub series: Sym,
    /// Where the series is measured.
    pub location: Sym,
    /// Its unit.
    pub unit: Sym,
    /// Event time from which this version holds (`i64::MIN` = always).
    pub valid_from: EventTime,
}

/// A reference-table update as differential wants it: `((series, (location, unit)), time, diff)`.
pub type RefUpdate = (RefRecord, EventTime, isize);

/// A reference record: `(series, (location, unit))`.
pub type RefRecord = (Sym, (Sym, Sym));

/// Reads the table.
pub fn load(path: &Path) -> Result<Vec<RefRow>, ReferenceError> {
    let text = std::fs::read_to_string(path).map_err(|error| ReferenceError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let mut rows = Vec::new();
    let bad = |line: usize, reason: String| ReferenceError::Format {
        path: path.to_path_buf(),
        line,
        reason,
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("series")) {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if !(3..=4).contains(&f.len()) || f[0].is_empty() {
            return Err(bad(
                i + 1,
                format!("expected series,location,unit[,valid_from], found {line:?}"),
            ));
        }
        let valid_from = match f.get(3).copied().unwrap_or("") {
            "" => i64::MIN,
            t => {
                let format = if t.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                    TimeFormat::EpochMs
                } else {
                    TimeFormat::Rfc3339
                };
                parse_time(t, &format, &Zone::default())
                    .map_err(|e| bad(i + 1, format!("valid_from: {e}")))?
            }
        };
        rows.push(RefRow {
            series: f[0].into(),
            location: f[1].into(),
            unit: f[2].into(),
            valid_from,
        });
    }
    Ok(rows)
}

/// The table as timed updates: each version inserted at its `valid_from`, the series'
/// previous version retracted at the same time. Times are clamped to at least `floor`.
pub fn updates(rows: &[RefRow], floor: EventTime) -> Vec<RefUpdate> {
    let mut by: BTreeMap<&Sym, Vec<&RefRow>> = BTreeMap::new();
    for r in rows {
        by.entry(&r.series).or_default().push(r);
    }
    let mut out = Vec::new();
    for (_, mut versions) in by {
        versions.sort_by_key(|r| r.valid_from);
        let mut prev: Option<&RefRow> = None;
        for v in versions {
            let t = v.valid_from.max(floor);
            if let Some(p) = prev {
                out.push(((p.series, (p.location, p.unit)), t, -1));
            }
            out.push(((v.series, (v.location, v.unit)), t, 1));
            prev = Some(v);
        }
    }
    out
}

/// Accumulates updates with time <= `t` into the set they describe.
fn as_of(updates: &[RefUpdate], t: EventTime) -> BTreeMap<RefRecord, isize> {
    let mut acc = BTreeMap::new();
    for (d, time, diff) in updates {
        if *time <= t {
            *acc.entry(*d).or_insert(0) += diff;
        }
    }
    acc.retain(|_, v| *v != 0);
    acc
}

/// The reference table as a stream of differential updates, following `input`'s frontier (the
/// operator never holds the dataflow back). Worker 0 reads `path`; other workers emit nothing.
/// A table that cannot be read is logged and the previous one stays in force (a run never
/// stops on it); check it before the run with [`load`].
pub fn reference_stream<'s>(
    input: &Stream<'s, EventTime, Vec<Reading>>,
    path: Option<PathBuf>,
    worker: usize,
) -> Stream<'s, EventTime, Vec<RefUpdate>> {
    let path = if worker == 0 { path } else { None };
    input
        .clone()
        .unary_frontier::<CapacityContainerBuilder<Vec<RefUpdate>>, _, _, _>(
            Pipeline,
            "reference",
            move |cap, _info| {
                let mut cap = Some(cap);
                let mut emitted: Vec<RefUpdate> = Vec::new();
                let mut seen: Option<SystemTime> = None;
                let mut checked: Option<Instant> = None;
                move |(input, frontier), output| {
                    input.for_each(|_, _| {});
                    let Some(c) = cap.as_mut() else { return };
                    let now = *c.time();
                    if let Some(p) = &path {
                        if checked.is_none_or(|c| c.elapsed() >= Duration::from_secs(1)) {
                            checked = Some(Instant::now());
                            let mtime = std::fs::metadata(p).and_then(|m| m.modified()).ok();
                            if mtime != seen {
                                seen = mtime;
                                let rows = match load(p) {
                                    Ok(rows) => rows,
                                    Err(e) => {
                                        // Keep the table in force; try again on the next edit.
                                        tracing::warn!("{e}; keeping the previous reference table");
                                        return;
                                    }
                                };
                                let new = updates(&rows, now);
                                // Replace the old table from `now` on: emit the difference of the
                                // two tables as of `now`, then the new table's later versions.
                                let mut diff = as_of(&emitted, now);
                                for v in diff.values_mut() {
                                    *v = -*v;
                                }
                                for (d, n) in as_of(&new, now) {
                                    *diff.entry(d).or_insert(0) += n;
                                }
                                let mut session = output.session(c);
                                // Future versions the old table scheduled are withdrawn.
                                for (d, t, n) in emitted.iter().filter(|u| u.1 > now) {
                                    session.give((*d, *t, -n));
                                }
                                emitted.retain(|u| u.1 <= now);
                                for (d, n) in diff {
                                    if n != 0 {
                                        session.give((d, now, n));
                                        emitted.push((d, now, n));
                                    }
                                }
                                for u in new.into_iter().filter(|u| u.1 > now) {
                                    session.give(u);
                                    emitted.push(u);
                                }
                            }
                        }
                    }
                    match frontier.frontier().iter().min() {
                        Some(t) if *t > now => c.downgrade(t),
                        Some(_) => {}
                        None => cap = None,
                    }
                }
            },
        )
}
