//! Forecast quality on real data (`forecast-eval`): every forecaster's 95% intervals cover
//! 93-97% of actual values on every dataset, and the seasonal models beat the seasonal naive
//! forecast (MASE < 1) on the seasonal sets.

mod common;

#[test]
fn forecasters_meet_coverage_and_mase_goals_on_real_data() {
    let rows = streamgauge::cli::forecast_eval::run_all(Some(&common::data_dir())).unwrap();
    assert_eq!(rows.len(), streamgauge::cli::forecast_eval::SETS.len() * 3);
    for r in &rows {
        eprintln!(
            "{:<42} {:<13} MASE {:.3} coverage {:.3} ({} points)",
            r.dataset, r.forecaster, r.mase, r.coverage, r.points
        );
        assert!(r.points > 4000, "{r:?}");
        assert!((0.93..=0.97).contains(&r.coverage), "{r:?}");
        if r.seasonal && r.forecaster != "linear_trend" {
            assert!(r.mase < 1.0, "{r:?}");
        }
    }
}
