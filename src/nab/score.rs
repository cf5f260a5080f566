//! NAB's scorer, written from `SCORING.md`: per-row weights from the scaled sigmoid around the
//! label windows, the per-file score at a threshold, the corpus threshold sweep and the
//! normalised score.
//!
//! The sweep sorts every scored row of every file once by anomaly score and lowers the
//! threshold through each distinct score, updating the total incrementally (a window's value is
//! its best detected row), so it costs O(N log N) for N rows rather than O(N) per threshold.

use super::Corpus;

/// A NAB cost profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Name as NAB writes it (`standard`, `reward_low_FP_rate`, `reward_low_FN_rate`).
    pub name: &'static str,
    /// Short label for tables.
    pub label: &'static str,
    /// Weight of a true positive (A_TP).
    pub tp: f64,
    /// Weight of a false positive (A_FP).
    pub fp: f64,
    /// Weight of a missed window (A_FN).
    pub fn_: f64,
}

/// NAB's three profiles, in the order NAB reports them.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        label: "standard",
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        label: "low FP",
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        label: "low FN",
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
    },
];

/// NAB's scaled sigmoid: `2 / (1 + e^(5y)) - 1` for `y <= 3`, else `-1`.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// One scored row (after probation): where it is and what a detection there is worth.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// Index into [`Scorer::windows`] when inside a window; then `unit` is the TP value
    /// before the profile weight. Outside, `unit` is the (negative) FP value before weight.
    window: Option<u32>,
    unit: f64,
}

/// The corpus' rows with their unweighted values, ready to score any detector.
#[derive(Debug, Clone)]
pub struct Scorer {
    /// Per file, the scored rows (row index = probation + position).
    rows: Vec<Vec<Row>>,
    probation: Vec<usize>,
    windows: usize,
}

/// The outcome at one threshold, for one profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The threshold (a row is a detection when its score >= this).
    pub threshold: f64,
    /// Raw score (sum over files).
    pub raw: f64,
    /// Normalised score, 0 = never fires, 100 = perfect.
    pub normalised: f64,
    /// Windows with at least one detection.
    pub detected_windows: usize,
    /// Detections outside every window.
    pub false_positives: usize,
}

impl Scorer {
    /// Computes every row's weight from the corpus' windows.
    pub fn new(corpus: &Corpus) -> Scorer {
        let mut rows = Vec::with_capacity(corpus.files.len());
        let mut probation = Vec::with_capacity(corpus.files.len());
        let mut windows = 0usize;
        let s_minus_1 = scaled_sigmoid(-1.0);
        for f in &corpus.files {
            let n = f.values.len();
            let skip = f.probation();
            let mut out = Vec::with_capacity(n.saturating_sub(skip));
            let mut next = 0usize; // next window of this file
            let mut prev: Option<(usize, usize)> = None; // (right index, width) of the last window passed
            for i in 0..n {
                let current = f.windows.get(next).filter(|&&(l, r)| l <= i && i <= r);
                let row = match current {
                    Some(&(l, r)) => {
                        let width = (r - l + 1) as f64;
                        let y = -((r - i + 1) as f64) / width;
                        Row {
                            window: Some((windows + next) as u32),
                            unit: scaled_sigmoid(y) / s_minus_1,
                        }
                    }
                    None => {
                        let unit = match prev {
                            None => -1.0,
                            Some((r, w)) if w > 1 => {
                                scaled_sigmoid((i - r) as f64 / (w - 1) as f64)
                            }
                            Some(_) => -1.0,
                        };
                        Row { window: None, unit }
                    }
                };
                if i >= skip {
                    out.push(row);
                }
                if let Some(&(l, r)) = current {
                    if i == r {
                        prev = Some((r, r - l + 1));
                        next += 1;
                    }
                }
            }
            windows += f.windows.len();
            rows.push(out);
            probation.push(skip);
        }
        Scorer {
            rows,
            probation,
            windows,
        }
    }

    /// Number of label windows.
    pub fn windows(&self) -> usize {
        self.windows
    }

    /// Normalises a raw score: `100 (S - S_null) / (S_perfect - S_null)`.
    pub fn normalise(&self, raw: f64, p: &Profile) -> f64 {
        let perfect = p.tp * self.windows as f64;
        let null = -p.fn_ * self.windows as f64;
        100.0 * (raw - null) / (perfect - null)
    }

    /// Scores `scores` (one per row of each file, in corpus order) at one threshold.
    pub fn at(&self, scores: &[Vec<f64>], p: &Profile, threshold: f64) -> Outcome {
        let mut best = vec![f64::NEG_INFINITY; self.windows];
        let mut fp_sum = 0.0;
        let mut fps = 0;
        for ((rows, skip), s) in self.rows.iter().zip(&self.probation).zip(scores) {
            for (row, &score) in rows.iter().zip(&s[(*skip).min(s.len())..]) {
                if score < threshold {
                    continue;
                }
                match row.window {
                    Some(w) => {
                        let w = w as usize;
                        best[w] = best[w].max(row.unit);
                    }
                    None => {
                        fp_sum += row.unit;
                        fps += 1;
                    }
                }
            }
        }
        let detected = best.iter().filter(|b| b.is_finite()).count();
        let tp: f64 = best.iter().filter(|b| b.is_finite()).sum();
        let raw = p.tp * tp + p.fp * fp_sum - p.fn_ * (self.windows - detected) as f64;
        Outcome {
            threshold,
            raw,
            normalised: self.normalise(raw, p),
            detected_windows: detected,
            false_positives: fps,
        }
    }

    /// Finds the threshold that maximises the raw score, sweeping every distinct score the
    /// detector produced (and "never fire"). Ties keep the highest threshold.
    pub fn best(&self, scores: &[Vec<f64>], p: &Profile) -> Outcome {
        let mut all: Vec<(f64, Row)> = Vec::new();
        for ((rows, skip), s) in self.rows.iter().zip(&self.probation).zip(scores) {
            for (row, &score) in rows.iter().zip(&s[(*skip).min(s.len())..]) {
                if score.is_finite() {
                    all.push((score, *row));
                }
            }
        }
        all.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut best = vec![f64::NEG_INFINITY; self.windows];
        let mut raw = -p.fn_ * self.windows as f64;
        let mut top = (f64::INFINITY, raw);
        let mut i = 0;
        while i < all.len() {
            let threshold = all[i].0;
            while i < all.len() && all[i].0 == threshold {
                let row = all[i].1;
                match row.window {
                    Some(w) => {
                        let w = w as usize;
                        if best[w] == f64::NEG_INFINITY {
                            raw += p.fn_ + p.tp * row.unit;
                            best[w] = row.unit;
                        } else if row.unit > best[w] {
                            raw += p.tp * (row.unit - best[w]);
                            best[w] = row.unit;
                        }
                    }
                    None => raw += p.fp * row.unit,
                }
                i += 1;
            }
            if raw > top.1 {
                top = (threshold, raw);
            }
        }
        // Recompute at the chosen threshold: exact sums and the counts.
        self.at(scores, p, top.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nab::NabFile;

    fn corpus() -> Corpus {
        let n = 100;
        Corpus {
            files: vec![NabFile {
                key: "c/f.csv".into(),
                timestamps: (0..n).map(|i| format!("2020-01-01 00:{i:02}:00")).collect(),
                values: vec![0.0; n],
                windows: vec![(40, 49), (70, 79)],
            }],
        }
    }

    #[test]
    fn sigmoid_matches_the_definition() {
        assert!((scaled_sigmoid(0.0)).abs() < 1e-15);
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298).abs() < 1e-9);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn early_detection_earns_about_a_tp_and_misses_cost_fn() {
        let c = corpus();
        let s = Scorer::new(&c);
        let p = &PROFILES[0];
        let mut scores = vec![vec![0.0; 100]];
        scores[0][40] = 1.0; // first row of window 1
        let o = s.at(&scores, p, 0.5);
        assert_eq!(o.detected_windows, 1);
        assert!((o.raw - (1.0 - 1.0)).abs() < 1e-12, "{o:?}"); // +1 TP, -1 FN
                                                               // A false positive long before any window costs exactly A_FP.
        scores[0][20] = 1.0;
        let o2 = s.at(&scores, p, 0.5);
        assert!((o2.raw - (o.raw - 0.11)).abs() < 1e-12);
        assert_eq!(o2.false_positives, 1);
        // The sweep finds the threshold that keeps the TP and drops the FP.
        scores[0][20] = 0.6;
        assert_eq!(s.best(&scores, p).threshold, 1.0);
    }

    #[test]
    fn probation_rows_are_not_scored() {
        let c = corpus();
        let s = Scorer::new(&c);
        let mut scores = vec![vec![0.0; 100]];
        scores[0][5] = 1.0; // inside probation (15 rows)
        let o = s.at(&scores, &PROFILES[0], 0.5);
        assert_eq!(o.false_positives, 0);
        assert_eq!(o.raw, -2.0);
    }

    #[test]
    fn halvings_are_disjoint_cover_the_corpus_and_split_every_category() {
        let file = |key: String| NabFile {
            key,
            timestamps: vec!["2020-01-01 00:00:00".into()],
            values: vec![0.0],
            windows: vec![],
        };
        // Categories of 1, 6 and 7 files.
        let c = Corpus {
            files: (0..14)
                .map(|i| {
                    file(format!(
                        "c{}/f{i}.csv",
                        [0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2][i]
                    ))
                })
                .collect(),
        };
        let splits = c.halvings(6, 9);
        assert_eq!(splits.len(), 6);
        for [a, b] in &splits {
            let mut all: Vec<usize> = a.iter().chain(b).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..14).collect::<Vec<_>>());
            for cat in ["c1", "c2"] {
                let n =
                    |h: &Vec<usize>| h.iter().filter(|&&i| c.files[i].category() == cat).count();
                assert!(n(a).abs_diff(n(b)) <= 1, "{cat}: {a:?} {b:?}");
            }
            assert_eq!(c.subset(a).files.len(), a.len());
        }
        assert_ne!(splits[0], splits[1], "the halvings differ");
        assert_eq!(splits, c.halvings(6, 9), "and are deterministic");
    }
}
