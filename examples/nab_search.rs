//! Cross-validated random search over the `gauge` detector's parameters on NAB: does tuning
//! on NAB find parameters that are better, or only luckier?
//!
//! Candidate 0 is the defaults; every other candidate moves each parameter away from its
//! default with probability 0.15, 0.3 or 0.6 (in turn), by a random step within a range.
//! Each candidate is scored on the whole corpus and on six random halvings of it (12 halves,
//! stratified by category). For each half, the best threshold is found on that half ("training") and the
//! other half is scored at it ("test"), as NAB's own per-profile threshold would be.
//!
//! At the end it prints, per profile:
//! - the best candidates on the whole corpus;
//! - **selection on the training half**: for each of the 12 (split, half) pairs, the candidate
//!   best on the training half, and its test score minus the defaults' test score;
//! - **rank agreement**: among the candidates within 2 points of the best on the training
//!   half, the rank correlation of training and test scores (near 0: their differences are
//!   noise).
//!
//! The defaults were themselves tuned on the whole corpus, so they have an in-sample edge on
//! every test half; the rank agreement has no such bias.
//!
//! `cargo run --release --example nab_search -- [candidates] [seed] [out.csv]` (defaults 2800,
//! 1, `nab_search.csv` in the temporary folder); one line per candidate goes to the CSV. About
//! 0.7 s per candidate per core here (2,800 in 17 minutes on 2 cores). `STREAMGAUGE_DATA` points at the datasets (default `../shared/datasets`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use streamgauge::analytics::detector::DetectorParams;
use streamgauge::dataset::generate::SplitMix64;
use streamgauge::nab::score::{Scorer, PROFILES};
use streamgauge::nab::Corpus;

/// Random halvings of the corpus.
const SPLITS: usize = 6;

/// The searched parameters, in CSV order.
const NAMES: [&str; 16] = [
    "alpha",
    "smooth",
    "trim",
    "init",
    "quantile",
    "forget",
    "min_excesses",
    "p_floor",
    "bins",
    "suppress",
    "alarm",
    "w_season",
    "season_min",
    "season_div",
    "habituation",
    "habituation_alpha",
];

fn values(p: &DetectorParams) -> [f64; 16] {
    [
        p.alpha,
        p.smooth as f64,
        p.trim as f64,
        p.tail.init as f64,
        p.tail.quantile,
        p.tail.forget,
        p.tail.min_excesses,
        p.p_floor,
        p.bins,
        p.suppress as f64,
        p.alarm,
        p.w_season,
        p.season_min as f64,
        p.season_div as f64,
        p.habituation,
        p.habituation_alpha,
    ]
}

/// A random factor in [1/spread, spread], log-uniform.
fn factor(rng: &mut SplitMix64, spread: f64) -> f64 {
    (spread.ln() * (2.0 * rng.next_f64() - 1.0)).exp()
}

/// A random step in [-step, step].
fn step(rng: &mut SplitMix64, step: f64) -> f64 {
    step * (2.0 * rng.next_f64() - 1.0)
}

/// A random neighbour of the defaults: each parameter moves with probability `share`.
fn sample(rng: &mut SplitMix64, share: f64) -> DetectorParams {
    let mut p = DetectorParams::default();
    let pick = |rng: &mut SplitMix64| rng.next_f64() < share;
    if pick(rng) {
        p.alpha = (p.alpha * factor(rng, 2.0)).clamp(0.003, 0.03);
    }
    if pick(rng) {
        p.smooth = (p.smooth as f64 + step(rng, 10.0)).clamp(8.0, 40.0).round() as usize;
    }
    if pick(rng) {
        p.trim = (p.trim as f64 + step(rng, 2.0)).clamp(0.0, 4.0).round() as usize;
    }
    if pick(rng) {
        p.tail.init = (p.tail.init as f64 + step(rng, 60.0))
            .clamp(80.0, 300.0)
            .round() as usize;
    }
    if pick(rng) {
        p.tail.quantile = (p.tail.quantile + step(rng, 0.03)).clamp(0.9, 0.98);
    }
    if pick(rng) {
        p.tail.forget = 1.0 - ((1.0 - p.tail.forget) * factor(rng, 4.0)).clamp(1e-4, 5e-3);
    }
    if pick(rng) {
        p.tail.min_excesses = (p.tail.min_excesses + step(rng, 4.0))
            .clamp(2.0, 20.0)
            .round();
    }
    if pick(rng) {
        p.p_floor = (p.p_floor * factor(rng, 3.0)).clamp(2e-5, 5e-4);
    }
    if pick(rng) {
        p.bins = (p.bins + step(rng, 12.0)).clamp(20.0, 64.0).round();
    }
    if pick(rng) {
        p.suppress = (p.suppress as f64 + step(rng, 50.0))
            .clamp(40.0, 200.0)
            .round() as u64;
    }
    if pick(rng) {
        p.alarm = (p.alarm + step(rng, 0.06)).clamp(0.8, 0.97);
    }
    if pick(rng) {
        p.w_season = (p.w_season + step(rng, 0.06)).clamp(0.85, 1.0);
    }
    if pick(rng) {
        p.season_min = (p.season_min as f64 + step(rng, 50.0))
            .clamp(50.0, 250.0)
            .round() as u64;
    }
    if pick(rng) {
        p.season_div = (p.season_div as f64 + step(rng, 4.0))
            .clamp(3.0, 14.0)
            .round() as i64;
    }
    if pick(rng) {
        p.habituation = (p.habituation * factor(rng, 2.5)).clamp(4.0, 80.0);
    }
    if pick(rng) {
        p.habituation_alpha = (p.habituation_alpha * factor(rng, 2.5)).clamp(2e-4, 5e-3);
    }
    p
}

/// One candidate's results.
struct Scored {
    params: DetectorParams,
    /// Per profile, the normalised score on the whole corpus at its best threshold.
    full: [f64; 3],
    /// `[split][half][profile]`: (training score, test score at the training threshold).
    halves: Vec<[[(f64, f64); 3]; 2]>,
}

/// Ranks (1-based, ties averaged).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation; `None` for fewer than 5 points or no spread.
fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 5 {
        return None;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, name: &str, default: u64| -> anyhow::Result<u64> {
        args.get(i).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{name} must be a whole number, got {v:?}"))
        })
    };
    let candidates = arg(1, "candidates", 2800)? as usize;
    let seed = arg(2, "seed", 1)?;
    let out_path = args.get(3).cloned().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("nab_search.csv")
            .to_string_lossy()
            .into_owned()
    });
    let data = std::env::var_os("STREAMGAUGE_DATA").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"),
        std::path::PathBuf::from,
    );
    let corpus = Corpus::load(&data.join("nab"))?;
    // The timestamps do not depend on the parameters: one run checks them for all.
    streamgauge::nab::kernel_scores(&corpus, &DetectorParams::default())?;
    let scorer = Scorer::new(&corpus);
    let halves = corpus.halvings(SPLITS, 12345);
    let half_scorers: Vec<[Scorer; 2]> = halves
        .iter()
        .map(|h| {
            [
                Scorer::new(&corpus.subset(&h[0])),
                Scorer::new(&corpus.subset(&h[1])),
            ]
        })
        .collect();

    let mut rng = SplitMix64(seed);
    let params: Vec<DetectorParams> = (0..candidates)
        .map(|id| match id {
            0 => DetectorParams::default(),
            _ => sample(&mut rng, [0.15, 0.3, 0.6][id % 3]),
        })
        .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Scored>>> = Mutex::new((0..candidates).map(|_| None).collect());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = params.get(id) else { break };
                let scores = streamgauge::nab::kernel_scores(&corpus, p)
                    .expect("timestamps were checked before the search");
                let full = [0, 1, 2].map(|k| scorer.best(&scores, &PROFILES[k]).normalised);
                let halves = halves
                    .iter()
                    .zip(&half_scorers)
                    .map(|(h, sc)| {
                        let part = |idx: &[usize]| -> Vec<Vec<f64>> {
                            idx.iter().map(|&i| scores[i].clone()).collect()
                        };
                        let s = [part(&h[0]), part(&h[1])];
                        [0, 1].map(|d| {
                            [0, 1, 2].map(|k| {
                                let train = sc[d].best(&s[d], &PROFILES[k]);
                                let test = sc[1 - d].at(&s[1 - d], &PROFILES[k], train.threshold);
                                (train.normalised, test.normalised)
                            })
                        })
                    })
                    .collect();
                let scored = Scored {
                    params: p.clone(),
                    full,
                    halves,
                };
                if let Ok(mut r) = results.lock() {
                    r[id] = Some(scored);
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 100 == 0 {
                    eprintln!(
                        "{n} of {candidates} ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    let results: Vec<Scored> = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a search thread panicked"))?
        .into_iter()
        .flatten()
        .collect();

    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(&out_path)?);
    let mut header: Vec<String> = vec!["id".into()];
    header.extend(NAMES.iter().map(|s| s.to_string()));
    header.extend(PROFILES.iter().map(|p| format!("full_{}", p.name)));
    for s in 0..SPLITS {
        for d in 0..2 {
            for p in &PROFILES {
                header.push(format!("train_{s}_{d}_{}", p.name));
                header.push(format!("test_{s}_{d}_{}", p.name));
            }
        }
    }
    writeln!(w, "{}", header.join(","))?;
    for (id, r) in results.iter().enumerate() {
        let mut row = vec![id.to_string()];
        row.extend(values(&r.params).iter().map(|v| v.to_string()));
        row.extend(r.full.iter().map(|v| format!("{v:.3}")));
        for split in &r.halves {
            for half in split {
                for (train, test) in half {
                    row.push(format!("{train:.3}"));
                    row.push(format!("{test:.3}"));
                }
            }
        }
        writeln!(w, "{}", row.join(","))?;
    }
    w.flush()?;

    println!(
        "{} candidates in {:.0} s on {threads} threads; CSV in {out_path}",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    let Some(defaults) = results.first() else {
        return Ok(());
    };
    for (k, p) in PROFILES.iter().enumerate() {
        let mut by_full: Vec<&Scored> = results.iter().collect();
        by_full.sort_by(|a, b| b.full[k].total_cmp(&a.full[k]));
        println!(
            "\n{}: defaults {:.2}; best of the search on the whole corpus {}",
            p.label,
            defaults.full[k],
            by_full
                .iter()
                .take(3)
                .map(|r| format!("{:.2}", r.full[k]))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (mut gains, mut rhos) = (Vec::new(), Vec::new());
        for s in 0..SPLITS {
            for d in 0..2 {
                let train = |r: &Scored| r.halves[s][d][k].0;
                let test = |r: &Scored| r.halves[s][d][k].1;
                let chosen = results
                    .iter()
                    .max_by(|a, b| train(a).total_cmp(&train(b)))
                    .unwrap_or(defaults);
                gains.push(test(chosen) - test(defaults));
                let top = train(chosen);
                let near: Vec<&Scored> = results.iter().filter(|r| train(r) >= top - 2.0).collect();
                let a: Vec<f64> = near.iter().map(|r| train(r)).collect();
                let b: Vec<f64> = near.iter().map(|r| test(r)).collect();
                if let Some(rho) = spearman(&a, &b) {
                    rhos.push(rho);
                }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (lo, hi) = gains
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &g| {
                (l.min(g), h.max(g))
            });
        println!(
            "  selection on the training half: test score {:+.2} against the defaults (mean \
             of {}; from {lo:+.2} to {hi:+.2})",
            mean(&gains),
            gains.len()
        );
        println!(
            "  rank agreement of training and test among the near-best: mean {:.2} over {} \
             halves ({})",
            mean(&rhos),
            rhos.len(),
            rhos.iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}
