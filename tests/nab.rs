//! NAB: the scorer reproduces the published numbers from Numenta's own per-row results.

mod common;

use streamgauge::nab::score::{Scorer, PROFILES};
use streamgauge::nab::Corpus;

#[test]
fn scorer_reproduces_published_numenta_scores() {
    let dir = common::data_dir().join("nab");
    let corpus = Corpus::load(&dir).expect("NAB corpus");
    assert_eq!(corpus.files.len(), 58);
    assert_eq!(corpus.window_count(), 116);
    let scorer = Scorer::new(&corpus);
    let scores = corpus
        .read_scores(&dir.join("results"), "numenta")
        .expect("numenta results");
    let thresholds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config/thresholds.json")).unwrap())
            .unwrap();
    let published: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("results/final_results.json")).unwrap(),
    )
    .unwrap();
    for p in &PROFILES {
        let t = thresholds["numenta"][p.name]["threshold"].as_f64().unwrap();
        let want = published["numenta"][p.name].as_f64().unwrap();
        let raw_want = thresholds["numenta"][p.name]["score"].as_f64().unwrap();
        let got = scorer.at(&scores, p, t);
        eprintln!(
            "{}: {got:?} (published {want:.4}, raw {raw_want:.4})",
            p.name
        );
        assert!(
            (got.normalised - want).abs() < 0.01,
            "{}: {} vs {want}",
            p.name,
            got.normalised
        );
        assert!(
            (got.raw - raw_want).abs() < 0.01,
            "{}: raw {} vs {raw_want}",
            p.name,
            got.raw
        );
        // Sweeping finds a threshold at least as good as the published one.
        let best = scorer.best(&scores, p);
        eprintln!("{}: best {best:?}", p.name);
        assert!(best.raw >= got.raw - 1e-9);
        assert_eq!(scorer.at(&scores, p, best.threshold).raw, best.raw);
    }
    // The null detector scores 0 and a perfect one 100.
    let null: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| vec![0.0; f.values.len()])
        .collect();
    assert_eq!(scorer.at(&null, &PROFILES[0], 0.5).normalised, 0.0);
    let perfect: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| {
            let mut s = vec![0.0; f.values.len()];
            for &(l, _) in &f.windows {
                s[l] = 1.0;
            }
            s
        })
        .collect();
    let o = scorer.at(&perfect, &PROFILES[0], 0.5);
    assert_eq!((o.normalised, o.false_positives), (100.0, 0));
}
