//! The only place that knows timely/differential plumbing: cluster flags, event time and
//! watermarks, the shared source operator, output sinks, and running a dataflow.

pub mod barrier;
pub mod cluster;
pub mod cluster_hub;
pub mod keyed;
pub mod metrics;
pub mod output;
pub mod reference;
pub mod route;
pub mod run;
pub mod savepoint;
pub mod source;
pub mod timing;
pub mod watermark;

pub use cluster::ClusterArgs;
pub use metrics::Metrics;
pub use output::{OutputFormat, Row};
pub use run::{run, Input, RunReport, RunSpec};

/// A stable 64-bit hash of a series id (FNV-1a): the same in every process and build, so
/// a series is routed to the same worker everywhere.
#[inline]
pub fn series_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche so that short, similar ids spread over workers.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The worker (of `peers`) that owns a series.
#[inline]
pub fn series_worker(s: &str, peers: usize) -> usize {
    (series_hash(s) % peers as u64) as usize
}

/// A fast hasher for in-operator maps keyed by series (not DoS-resistant; keys are ours).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(w))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
        }
        self.0 = h;
    }
    #[inline]
    fn write_u64(&mut self, w: u64) {
        self.0 = ((self.0 ^ 0xcbf2_9ce4_8422_2325) ^ w)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

/// `BuildHasher` for [`FastHasher`].
pub type FastBuild = std::hash::BuildHasherDefault<FastHasher>;
