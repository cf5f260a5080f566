//! Does detector B beat detector A on NAB, or only on these 58 files? Compares two folders of
//! per-row scores in NAB's results layout (as `streamgauge nab --out` writes them) on the whole
//! corpus and on 6 random halvings of it (stratified by category, the same halvings as
//! `nab_search`): per profile, B's score minus A's on each of the 12 halves, each detector at
//! its own best threshold for that half, and on how many halves B is ahead.
//!
//! A change worth keeping is ahead on (nearly) every half. Session 14 measured that one fixed
//! detector scores within about +-2.4 points (standard) across these halves, and that the best
//! of many parameter sets on the whole corpus is ahead of the defaults on only 6-9 of 12.
//!
//! ```text
//! cargo run --release --example nab_compare -- <results A> <results B> [detector A] [detector B]
//! ```
//!
//! Detectors default to `gauge`; `STREAMGAUGE_DATA` points at the datasets (default
//! `../shared/datasets`).

use anyhow::{bail, Context, Result};
use streamgauge::nab::score::{Scorer, PROFILES};
use streamgauge::nab::Corpus;

/// Random halvings of the corpus (as in `nab_search`).
const SPLITS: usize = 6;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 4 {
        bail!("usage: nab_compare <results A> <results B> [detector A] [detector B]");
    }
    let det_a = args.get(2).map_or("gauge", String::as_str);
    let det_b = args.get(3).map_or(det_a, String::as_str);
    let data = std::env::var_os("STREAMGAUGE_DATA").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"),
        std::path::PathBuf::from,
    );
    let corpus = Corpus::load(&data.join("nab"))?;
    let a = corpus
        .read_scores(args[0].as_ref(), det_a)
        .with_context(|| format!("results A ({det_a} under {})", args[0]))?;
    let b = corpus
        .read_scores(args[1].as_ref(), det_b)
        .with_context(|| format!("results B ({det_b} under {})", args[1]))?;
    let scorer = Scorer::new(&corpus);
    let halves = corpus.halvings(SPLITS, 12345);
    let pick = |s: &[Vec<f64>], idx: &[usize]| -> Vec<Vec<f64>> {
        idx.iter().map(|&i| s[i].clone()).collect()
    };
    println!("B = {det_b} in {}, A = {det_a} in {}", args[1], args[0]);
    for p in &PROFILES {
        let (fa, fb) = (scorer.best(&a, p), scorer.best(&b, p));
        let mut diffs = Vec::new();
        for h in &halves {
            for idx in h {
                let s = Scorer::new(&corpus.subset(idx));
                diffs.push(
                    s.best(&pick(&b, idx), p).normalised - s.best(&pick(&a, idx), p).normalised,
                );
            }
        }
        let ahead = diffs.iter().filter(|&&d| d > 1e-9).count();
        let behind = diffs.iter().filter(|&&d| d < -1e-9).count();
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        let (lo, hi) = diffs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &d| {
                (l.min(d), h.max(d))
            });
        println!(
            "{:<9} whole corpus: A {:.2}, B {:.2} ({:+.2}); halves: B ahead on {ahead}, behind on \
             {behind} of {}, mean {mean:+.2} ({lo:+.2} to {hi:+.2})",
            p.label,
            fa.normalised,
            fb.normalised,
            fb.normalised - fa.normalised,
            diffs.len()
        );
    }
    Ok(())
}
