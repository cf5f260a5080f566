//! Tuning harness for the `gauge` detector: runs the kernel over the NAB corpus with
//! parameters from `SG_DET_*` environment variables and prints the three best scores
//! (`PERFILE=1` adds a per-file breakdown; `NAB_OUT=DIR` also writes the per-row scores in
//! NAB's results layout under `DIR/gauge/`, for `nab_compare`).
//! `cargo run --release --example nab_tune`.

use streamgauge::analytics::detector::DetectorParams;
use streamgauge::nab::score::{Scorer, PROFILES};
use streamgauge::nab::Corpus;

fn main() {
    let data = std::env::var_os("STREAMGAUGE_DATA").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"),
        std::path::PathBuf::from,
    );
    let corpus = Corpus::load(&data.join("nab")).unwrap();
    let scorer = Scorer::new(&corpus);
    let params = match DetectorParams::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("nab_tune: {e}");
            std::process::exit(2);
        }
    };
    let t = std::time::Instant::now();
    let scores = streamgauge::nab::kernel_scores(&corpus, &params).unwrap();
    let el = t.elapsed();
    let mut line = String::new();
    for p in &PROFILES {
        let o = scorer.best(&scores, p);
        line += &format!(
            "{}: {:.2} (t={:.4} det={} fp={})  ",
            p.label, o.normalised, o.threshold, o.detected_windows, o.false_positives
        );
    }
    println!(
        "{line} [{:.0} rows/ms]",
        365558.0 / el.as_secs_f64() / 1000.0
    );
    if let Some(out) = std::env::var_os("NAB_OUT") {
        let written = corpus.write_scores(out.as_ref(), "gauge", &scores).unwrap();
        println!("{written} files of scores under {}", out.to_string_lossy());
    }
    if std::env::var("PERFILE").is_ok() {
        let p = &PROFILES[0];
        let o = scorer.best(&scores, p);
        for (i, f) in corpus.files.iter().enumerate() {
            let one = Corpus {
                files: vec![f.clone()],
            };
            let s1 = Scorer::new(&one);
            let r = s1.at(&scores[i..i + 1], p, o.threshold);
            println!(
                "{:60} raw {:6.2} det {}/{} fp {}",
                f.key,
                r.raw,
                r.detected_windows,
                f.windows.len(),
                r.false_positives
            );
        }
    }
}
