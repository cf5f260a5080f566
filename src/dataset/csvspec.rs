//! Ad-hoc CSV inputs given by path and column flags (`--time-col`, `--series-col`,
//! `--value-col`), read in parallel: the file is cut into fixed byte blocks; process `p` of
//! `P` owns blocks `p, p+P, p+2P, ...`, and its worker threads claim those in file order, each
//! taking the next unclaimed block when it is ready for one ([`BlockShare`]), so a thread on a
//! busier core reads fewer blocks instead of holding the others back. A line belongs to the
//! block where it starts.
//!
//! Rows are streamed, never held in memory as a whole, so a 10-million-row file costs a few
//! megabytes per worker. Bad rows become [`Quarantined`] records (source `file@byte N`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::load::RowMapper;
use super::manifest::{TimeSpec, ValueSpec};
use super::timefmt::{TimeFormat, Zone};
use super::DatasetError;
use crate::quarantine::Quarantined;
use crate::record::Reading;

/// Rows ahead of the one being mapped whose series id is prefetched.
const PREFETCH_AHEAD: usize = 8;

/// Bytes per block (one unit of work for a worker). Small enough that a block, its readings
/// and the interner's table stay in a core's cache together.
pub const BLOCK_BYTES: u64 = 1 << 17;

/// How to read a CSV given on the command line.
#[derive(Debug, Clone)]
pub struct CsvSpec {
    /// The file.
    pub path: PathBuf,
    /// Time column name.
    pub time_col: String,
    /// Time format.
    pub time_format: TimeFormat,
    /// Zone of local times.
    pub zone: Zone,
    /// Series id column; when absent the file stem is the series.
    pub series_col: Option<String>,
    /// Value columns (at least one).
    pub value_cols: Vec<String>,
}

impl CsvSpec {
    /// A CSV with epoch-millisecond times, a series column and value columns (W1's shape).
    pub fn epoch_ms(
        path: impl Into<PathBuf>,
        time_col: &str,
        series_col: &str,
        value_cols: &[&str],
    ) -> Self {
        CsvSpec {
            path: path.into(),
            time_col: time_col.into(),
            time_format: TimeFormat::EpochMs,
            zone: Zone::default(),
            series_col: Some(series_col.into()),
            value_cols: value_cols.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// Reads the header line and builds a mapper for it.
    pub fn mapper(&self) -> Result<(RowMapper, u64), DatasetError> {
        let io = |e| DatasetError::Io {
            path: self.path.clone(),
            source: e,
        };
        let mut r = BufReader::new(File::open(&self.path).map_err(io)?);
        let mut header = String::new();
        let header_len = r.read_line(&mut header).map_err(io)? as u64;
        let cols: Vec<&str> = header.trim_end_matches(['\n', '\r']).split(',').collect();
        let time = TimeSpec {
            column: self.time_col.clone(),
            format: self.time_format.clone(),
            timezone: self.zone.clone(),
        };
        let series = match &self.series_col {
            Some(c) => format!("{{col:{c}}}"),
            None => "{stem}".to_string(),
        };
        let values: Vec<ValueSpec> = self
            .value_cols
            .iter()
            .map(|c| ValueSpec {
                column: c.clone(),
                name: None,
            })
            .collect();
        Ok((
            RowMapper::new(&cols, &self.path, &time, &series, &values, &[])?,
            header_len,
        ))
    }

    /// Total size of the file in bytes.
    pub fn len(&self) -> Result<u64, DatasetError> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| DatasetError::Io {
                path: self.path.clone(),
                source: e,
            })
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> Result<bool, DatasetError> {
        Ok(self.len()? == 0)
    }
}

/// The blocks of a CSV file one process owns, handed out in file order to whichever of its
/// worker threads asks next. Clones share the count.
#[derive(Debug, Clone)]
pub struct BlockShare {
    claimed: Arc<AtomicU64>,
    process: u64,
    processes: u64,
}

impl BlockShare {
    /// The share of process `process` of `processes` (blocks `process + k * processes`).
    pub fn new(process: usize, processes: usize) -> Self {
        assert!(process < processes, "process {process} of {processes}");
        BlockShare {
            claimed: Arc::default(),
            process: process as u64,
            processes: processes as u64,
        }
    }

    /// The whole file, for one reader.
    pub fn whole() -> Self {
        BlockShare::new(0, 1)
    }

    /// The next unclaimed block's index. Indices only rise, so each reader's blocks come in
    /// file order, and a reader that is slow to come back holds up only the block it has.
    fn claim(&self) -> u64 {
        self.claimed.fetch_add(1, Ordering::Relaxed) * self.processes + self.process
    }
}

/// Streams blocks of a CSV file, claimed one at a time from a [`BlockShare`].
pub struct BlockReader {
    path: PathBuf,
    file: File,
    mapper: RowMapper,
    data_start: u64,
    len: u64,
    share: BlockShare,
    done: bool,
    buf: Vec<u8>,
    /// Start and end of each line of the block at hand.
    lines: Vec<(usize, usize)>,
    /// Rows read so far.
    pub rows: u64,
}

impl BlockReader {
    /// A reader of the blocks it claims from `share`.
    pub fn new(spec: &CsvSpec, share: BlockShare) -> Result<Self, DatasetError> {
        let (mapper, data_start) = spec.mapper()?;
        let file = File::open(&spec.path).map_err(|e| DatasetError::Io {
            path: spec.path.clone(),
            source: e,
        })?;
        Ok(BlockReader {
            path: spec.path.clone(),
            file,
            mapper,
            data_start,
            len: spec.len()?,
            share,
            done: false,
            buf: Vec::with_capacity(BLOCK_BYTES as usize + 4096),
            lines: Vec::new(),
            rows: 0,
        })
    }

    /// Claims and reads the next block, appending its readings to `good` in file order and its
    /// bad rows to `bad`; `false` when the share is exhausted.
    pub fn next_block(
        &mut self,
        good: &mut Vec<Reading>,
        bad: &mut Vec<Quarantined>,
    ) -> Result<bool, DatasetError> {
        let io = |e| DatasetError::Io {
            path: self.path.clone(),
            source: e,
        };
        if self.done {
            return Ok(false);
        }
        let start = self.data_start + self.share.claim() * BLOCK_BYTES;
        if start >= self.len {
            self.done = true;
            return Ok(false);
        }
        let end = (start + BLOCK_BYTES).min(self.len);
        // Read from one byte before the block (to know whether it starts a line) to the end of
        // the line that crosses `end`.
        let from = if start > self.data_start {
            start - 1
        } else {
            start
        };
        self.file.seek(SeekFrom::Start(from)).map_err(io)?;
        self.buf.clear();
        (&mut self.file)
            .take(end - from)
            .read_to_end(&mut self.buf)
            .map_err(io)?;
        if end < self.len && self.buf.last() != Some(&b'\n') {
            let mut rest = BufReader::new(&mut self.file);
            rest.read_until(b'\n', &mut self.buf).map_err(io)?;
        }
        let mut pos = 0usize;
        if from < start {
            // Skip the line that began in the previous block (unless it ended right at `from`).
            pos = match self.buf.iter().position(|&b| b == b'\n') {
                Some(nl) => nl + 1,
                None => self.buf.len(),
            };
        }
        let base = from;
        let buf = std::mem::take(&mut self.buf);
        // The block's lines first, so that each row can prefetch the interner slot of the
        // row PREFETCH_AHEAD lines on (a random series id is a cache miss otherwise).
        let mut lines = std::mem::take(&mut self.lines);
        lines.clear();
        while pos < buf.len() {
            let line_end = memchr::memchr(b'\n', &buf[pos..])
                .map(|i| pos + i)
                .unwrap_or(buf.len());
            lines.push((pos, line_end));
            pos = line_end + 1;
        }
        // UTF-8 checked once for the whole block (lines are cut at '\n', always a character
        // boundary); a block that is not valid as a whole is checked line by line, so a bad
        // line is quarantined alone.
        let start = lines.first().map_or(buf.len(), |&(a, _)| a);
        let block_text = std::str::from_utf8(&buf[start..]).ok();
        let mut fields: Vec<(usize, usize)> = Vec::with_capacity(8);
        for (n, &(pos, line_end)) in lines.iter().enumerate() {
            if let Some(&(a, b)) = lines.get(n + PREFETCH_AHEAD) {
                self.mapper.prefetch_line(&buf[a..b]);
            }
            let mut line = &buf[pos..line_end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let offset = base + pos as u64;
            if line.is_empty() {
                continue;
            }
            self.rows += 1;
            let text = match block_text {
                Some(t) => Ok(&t[pos - start..pos - start + line.len()]),
                None => std::str::from_utf8(line),
            };
            match text {
                Ok(text) => {
                    fields.clear();
                    split_fields(&buf, pos, pos + line.len(), &mut fields);
                    let f = &fields;
                    match self.mapper.map_into(
                        f.len(),
                        |i| f.get(i).map(|&(a, b)| &text[a..b]),
                        good,
                    ) {
                        Ok(()) => {}
                        Err(why) => bad.push(Quarantined::new(
                            format!("{}@byte {offset}", self.path.display()),
                            why,
                            line,
                        )),
                    }
                }
                Err(_) => bad.push(Quarantined::new(
                    format!("{}@byte {offset}", self.path.display()),
                    "row is not UTF-8",
                    line,
                )),
            }
        }
        self.buf = buf;
        self.lines = lines;
        Ok(true)
    }
}

/// Pushes the `(start, end)` of every comma-separated field of `buf[from..to]` onto `fields`,
/// relative to `from`. Eight bytes at a time: a word's commas are found with exact zero-byte
/// arithmetic (no false matches), so the cost per field is a few instructions instead of a
/// comparison per byte. Words may extend past `to` (the block buffer goes on); their bytes
/// beyond `to` are masked out.
#[inline]
fn split_fields(buf: &[u8], from: usize, to: usize, fields: &mut Vec<(usize, usize)>) {
    const LOW: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const COMMAS: u64 = 0x2c2c_2c2c_2c2c_2c2c;
    let mut start = from;
    let mut i = from;
    while i < to {
        let Some(word) = buf.get(i..i + 8) else {
            break;
        };
        let x = u64::from_le_bytes(word.try_into().unwrap_or([0; 8])) ^ COMMAS;
        // High bit of each byte set where that byte of `x` is zero, i.e. a comma.
        let mut commas = !(((x & LOW) + LOW) | x | LOW);
        if to - i < 8 {
            commas &= (1u64 << ((to - i) * 8)) - 1;
        }
        while commas != 0 {
            let at = i + (commas.trailing_zeros() / 8) as usize;
            fields.push((start - from, at - from));
            start = at + 1;
            commas &= commas - 1;
        }
        i += 8;
    }
    // The last few bytes of the buffer, one at a time.
    while i < to {
        if buf[i] == b',' {
            fields.push((start - from, i - from));
            start = i + 1;
        }
        i += 1;
    }
    fields.push((start - from, to - from));
}

/// Reads a whole CSV spec sequentially (tests and small files).
pub fn read_all(spec: &CsvSpec) -> Result<(Vec<Reading>, Vec<Quarantined>, u64), DatasetError> {
    let mut r = BlockReader::new(spec, BlockShare::whole())?;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    while r.next_block(&mut good, &mut bad)? {}
    Ok((good, bad, r.rows))
}

/// Is `path` an existing file (as opposed to a dataset name)?
pub fn is_path(s: &str) -> bool {
    Path::new(s).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn split_fields_matches_a_byte_scan() {
        let mut rng = crate::dataset::generate::SplitMix64(7);
        let alphabet = b",,a1.\xff\x2c\xacz";
        let mut fields = Vec::new();
        for _ in 0..2000 {
            let len = (rng.next_u64() % 40) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize])
                .collect();
            let from = (rng.next_u64() % (len as u64 + 1)) as usize;
            let to = from + (rng.next_u64() % ((len - from) as u64 + 1)) as usize;
            fields.clear();
            split_fields(&buf, from, to, &mut fields);
            let mut expect = Vec::new();
            let mut s = 0;
            for (i, &b) in buf[from..to].iter().enumerate() {
                if b == b',' {
                    expect.push((s, i));
                    s = i + 1;
                }
            }
            expect.push((s, to - from));
            assert_eq!(fields, expect, "{buf:?} {from}..{to}");
        }
    }

    #[test]
    fn blocks_cover_every_line_once_for_any_worker_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        let mut f = File::create(&path).unwrap();
        writeln!(f, "sensor_id,ts_ms,value").unwrap();
        let n = 120_000;
        for i in 0..n {
            writeln!(f, "s{:03},{},{}.25", i % 7, 1_000_000 + i, i % 100).unwrap();
        }
        drop(f);
        let spec = CsvSpec::epoch_ms(path, "ts_ms", "sensor_id", &["value"]);
        // (processes, threads per process); the threads of a process take turns in an order
        // drawn at random, as threads on unevenly busy cores would.
        let mut rng = crate::dataset::generate::SplitMix64(3);
        for (processes, threads) in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 2)] {
            let mut all = Vec::new();
            for p in 0..processes {
                let share = BlockShare::new(p, processes);
                let mut readers: Vec<(BlockReader, Vec<Reading>)> = (0..threads)
                    .map(|_| (BlockReader::new(&spec, share.clone()).unwrap(), Vec::new()))
                    .collect();
                let mut live: Vec<usize> = (0..threads).collect();
                while !live.is_empty() {
                    let k = (rng.next_u64() % live.len() as u64) as usize;
                    let (r, got) = &mut readers[live[k]];
                    let mut bad = Vec::new();
                    if !r.next_block(got, &mut bad).unwrap() {
                        live.swap_remove(k);
                    }
                    assert!(bad.is_empty());
                }
                for (_, got) in readers {
                    // Each reader's rows come in file order.
                    assert!(got.windows(2).all(|w| w[0].ts < w[1].ts));
                    all.extend(got);
                }
            }
            let mut ts: Vec<i64> = all.iter().map(|r| r.ts).collect();
            ts.sort();
            assert_eq!(
                ts,
                (1_000_000..1_000_000 + n).collect::<Vec<_>>(),
                "{processes} processes of {threads} threads"
            );
        }
    }
}
