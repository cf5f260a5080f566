//! Analytics: pure kernels first (plain structs, no timely), then thin operators over them.
//!
//! Kernels own the numerics and state-size contract of each analytic; operators in
//! [`crate::engine`] or in `dataflows/` key them by series and drive them in event time.

pub mod detector;
pub mod evaluate;
pub mod forecast;
pub mod orderstat;
pub mod outlier;
pub mod rolling;
pub mod sketch;
pub mod tail;
pub mod trend;
pub mod window;
