//! streamgauge: a real-time analytics engine. Collectors clean live and replayed data into one
//! record type and produce it into Kafka; timely-dataflow workers each own a deterministic
//! share of the partitions and keep analytics up to date in event time; results go to Kafka
//! topics, files and (later) a live dashboard.
//!
//! Map of the crate: [`record`] (the reading and its wire format), [`dataset`] (manifests,
//! loaders, generators), [`kafka`] (client, producer, source feed, embedded broker),
//! [`engine`] (cluster, watermarks, source operator, sinks, runs), [`analytics`] (kernels),
//! [`dataflows`] (what runs), [`cli`] (the command line).

#![warn(missing_docs)]

pub mod analytics;
pub mod cli;
pub mod collect;
pub mod config;
pub mod dashboard;
pub mod dataset;
pub mod duration;
pub mod engine;
pub mod kafka;
pub mod nab;
pub mod quarantine;
pub mod record;
pub mod report;
pub mod sym;

#[path = "../dataflows/mod.rs"]
pub mod dataflows;

/// Asks the CPU to bring the cache line at `p` in: a hint for hot loops that know which
/// per-series state they touch a few readings from now (never faults, whatever `p` is).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it does not access memory architecturally and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Helpers shared by the library's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A deterministic xorshift64 generator seeded with `seed` (non-zero): reproducible
    /// random input for property tests, without a dependency.
    pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }
}
