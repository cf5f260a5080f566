//! A quantile sketch for sliding windows: a histogram of the window's values in buckets of
//! bounded relative width, with a Fenwick tree over the bucket counts. Values can be removed
//! as well as added, so it follows a window exactly as [`crate::analytics::orderstat`] does,
//! but its cost per operation depends on the number of buckets (the spread of the data), not
//! on the number of values held: a window of a million costs what a window of a hundred does.
//!
//! # Design
//! A value `x` is bucketed by its offset `d = x - center` from a center chosen by the owner
//! (the window's median at its last rebuild, see [`QuantileSketch::rebuild`]), against a
//! knee `K`, a power of two near the window's spread (its MAD at the last rebuild). Offsets
//! with `|d| < K` fall in `2^bits` equal buckets of width `K 2^-bits` on each side; larger
//! ones by their binary exponent and the top `bits` bits of their mantissa, so a bucket is at
//! most `2^-bits |d|` wide. The two meet seamlessly at `K`. A bucket keeps its count and the
//! sum of its offsets; its representative is the mean of what it holds, clamped into its
//! bounds, so every value is represented within its bucket's width.
//!
//! # Error bounds (tested in `tests/kernels.rs` over 10 million updates)
//! Let `w(x) = 2^-bits max(|x - center|, K)` (the width of `x`'s bucket) and let `W` be the
//! largest `w(x)` over the window. Then
//! - `kth(k)` is within `w(x_(k))` of the exact k-th smallest value `x_(k)`;
//! - `quantile(q)` (type 7, interpolating ranks `lo` and `lo + 1`) and `median` are within
//!   `max(w(x_(lo)), w(x_(lo+1)))` of the exact ones;
//! - `mad` is within `2 W` of the exact median absolute deviation (each value moves by at
//!   most `W`, so the median moves by at most `W` and every distance by at most `2 W`).
//!
//! Plus a few ulps of `center` for the subtraction. Because offsets are taken from a center
//! near the data and the knee follows its spread, the bounds scale with the spread of the
//! window, not with its level: readings near 20 with a MAD of 0.7 get errors of about
//! `2^-bits` (0.4% at the default 8 bits) of their distance from the median, and no less
//! than `2^-bits` of the knee near it.
//!
//! Memory: 16 bytes per bucket between the lowest and the highest offset seen since the last
//! rebuild: `2^bits` buckets per side below the knee, plus `2^bits` per binary order of
//! magnitude of `|x - center| / K` above it (about 20 KB for a sensor with occasional spikes
//! of 40 MADs), independent of the window length.

/// Default mantissa bits: buckets at most 0.4% of the offset (or of the knee) wide.
pub const DEFAULT_BITS: u32 = 8;

/// A removable quantile sketch over f64 values (finite values; see the module docs).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QuantileSketch {
    shift: u32,
    bits: u32,
    center: f64,
    /// The knee `K` (a power of two).
    knee: f64,
    /// `2^bits / K`: offsets below the knee times this give their linear bucket.
    inv_lin: f64,
    /// `K.to_bits() >> shift`.
    knee_key: i64,
    /// Key of bucket 0 of the dense arrays.
    base: i64,
    counts: Vec<u32>,
    sums: Vec<f64>,
    /// 1-based Fenwick tree over `counts` (`fen[0]` unused).
    fen: Vec<u32>,
    len: usize,
    /// The knee is a guess (no spread was known when the frame was set), and every value
    /// held is at the center: the first value elsewhere sets the knee (see
    /// [`QuantileSketch::insert`]).
    guessed: bool,
}

impl QuantileSketch {
    /// An empty sketch with `bits` mantissa bits (1..=30) per bucket, centred on `center`,
    /// with its knee at the power of two at or above `scale` (the expected spread; a
    /// non-positive scale means "unknown" and puts the knee at 2^-10 of the center).
    pub fn new(bits: u32, center: f64, scale: f64) -> Self {
        let bits = bits.clamp(1, 30);
        let mut s = QuantileSketch {
            shift: 52 - bits,
            bits,
            center: 0.0,
            knee: 1.0,
            inv_lin: 0.0,
            knee_key: 0,
            base: 0,
            counts: Vec::new(),
            sums: Vec::new(),
            fen: Vec::new(),
            len: 0,
            guessed: false,
        };
        s.set_frame(center, scale);
        s
    }

    fn set_frame(&mut self, center: f64, scale: f64) {
        self.center = if center.is_finite() { center } else { 0.0 };
        self.guessed = !(scale.is_finite() && scale > 0.0);
        let scale = if self.guessed {
            self.center.abs() * (-10f64).exp2()
        } else {
            scale
        };
        // Never below a few ulps of the center (no nonzero offset is smaller), nor subnormal.
        let scale = scale
            .max(self.center.abs() * f64::EPSILON * 4.0)
            .max(f64::MIN_POSITIVE * 2f64.powi(self.bits as i32 + 1));
        // The power of two at or above the scale.
        let e = scale.log2().ceil().clamp(-1000.0, 1000.0) as i32;
        self.knee = 2f64.powi(e);
        self.inv_lin = 2f64.powi(self.bits as i32 - e);
        self.knee_key = (self.knee.to_bits() >> self.shift) as i64;
    }

    /// Mantissa bits per bucket.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The center offsets are taken from.
    pub fn center(&self) -> f64 {
        self.center
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of buckets allocated (the memory is 16 bytes per bucket).
    pub fn buckets(&self) -> usize {
        self.counts.len()
    }

    /// The knee `K`: offsets below it fall in equal buckets.
    pub fn knee(&self) -> f64 {
        self.knee
    }

    /// The largest error `w(x)` the bounds allow for a value `x` (module docs).
    pub fn width(&self, x: f64) -> f64 {
        (x - self.center).abs().max(self.knee) * (-(self.bits as f64)).exp2()
    }

    /// Key of an offset: ±(1 + linear bucket) below the knee, ±(2^bits + 1 + log bucket
    /// above the knee) from it on; monotone in `d`.
    #[inline]
    fn key_of_offset(&self, d: f64) -> i64 {
        let a = d.abs();
        let k = if a < self.knee {
            // Exact: inv_lin is a power of two.
            (a * self.inv_lin) as i64 + 1
        } else if a.is_nan() {
            1
        } else {
            (1i64 << self.bits) + 1 + ((a.to_bits() >> self.shift) as i64 - self.knee_key)
        };
        if d < 0.0 {
            -k
        } else {
            k
        }
    }

    /// Offset-space bounds `[lo, hi]` of the bucket with key `k`.
    #[inline]
    fn bounds(&self, k: i64) -> (f64, f64) {
        let m = k.abs();
        let lin = 1i64 << self.bits;
        let (lo, hi) = if m == 0 {
            (0.0, 0.0)
        } else if m <= lin {
            ((m - 1) as f64 / self.inv_lin, m as f64 / self.inv_lin)
        } else {
            let t = (m - lin - 1 + self.knee_key) as u64;
            let hi = f64::from_bits((t + 1) << self.shift);
            (
                f64::from_bits(t << self.shift),
                if hi.is_nan() { f64::INFINITY } else { hi },
            )
        };
        if k >= 0 {
            (lo, hi)
        } else {
            (-hi, -lo)
        }
    }

    /// Offset-space representative of bucket `i` of the dense arrays (its lower bound when
    /// empty, so representatives never decrease with `i`).
    #[inline]
    fn rep(&self, i: usize) -> f64 {
        let (lo, hi) = self.bounds(self.base + i as i64);
        match self.counts[i] {
            0 => lo,
            c => (self.sums[i] / c as f64).clamp(lo, hi),
        }
    }

    /// Index in the dense arrays of the bucket with key `k`, if allocated.
    #[inline]
    fn index(&self, k: i64) -> Option<usize> {
        let i = k - self.base;
        (i >= 0 && (i as usize) < self.counts.len()).then_some(i as usize)
    }

    fn fen_add(&mut self, i: usize, up: bool) {
        let mut j = i + 1;
        while j < self.fen.len() {
            if up {
                self.fen[j] += 1;
            } else {
                self.fen[j] -= 1;
            }
            j += j & j.wrapping_neg();
        }
    }

    /// Values in buckets `[0, i)`.
    #[inline]
    fn prefix(&self, i: usize) -> usize {
        let mut s = 0usize;
        let mut j = i;
        while j > 0 {
            s += self.fen[j] as usize;
            j &= j - 1;
        }
        s
    }

    fn build_fenwick(&mut self) {
        let n = self.counts.len();
        self.fen.clear();
        self.fen.push(0);
        self.fen.extend_from_slice(&self.counts);
        for i in 1..=n {
            let j = i + (i & i.wrapping_neg());
            if j <= n {
                self.fen[j] += self.fen[i];
            }
        }
    }

    /// Makes room for key `k` (amortised: the range grows by half its size at least).
    fn ensure(&mut self, k: i64) {
        if self.index(k).is_some() {
            return;
        }
        let n = self.counts.len() as i64;
        let (lo, hi) = if n == 0 {
            (k - 32, k + 32)
        } else {
            let slack = (n / 2).max(32);
            let lo = if k < self.base { k - slack } else { self.base };
            let hi = if k >= self.base + n {
                k + 1 + slack
            } else {
                self.base + n
            };
            (lo, hi)
        };
        let size = (hi - lo) as usize;
        let mut counts = vec![0u32; size];
        let mut sums = vec![0f64; size];
        let at = (self.base - lo) as usize;
        if n > 0 {
            counts[at..at + n as usize].copy_from_slice(&self.counts);
            sums[at..at + n as usize].copy_from_slice(&self.sums);
        }
        self.base = lo;
        self.counts = counts;
        self.sums = sums;
        self.build_fenwick();
    }

    /// Adds `x`.
    ///
    /// While the knee is a guess (a frame set without a spread: the first value of a
    /// window, or a window of equal values), every value held is at the center, and the
    /// first one elsewhere re-frames the sketch around the same center with its distance
    /// as the spread. Otherwise a guessed knee far below the data (`2^-10` of the center, or
    /// the smallest normal number when the center is 0) would put the data thousands of
    /// binary orders of magnitude above it, at `2^bits` buckets each: a series whose first
    /// reading is 0 allocated 385,000 buckets (6 MB) for its next one. The values held
    /// stay in the zero-offset bucket, so the re-frame loses nothing.
    pub fn insert(&mut self, x: f64) {
        let d = x - self.center;
        if self.guessed && d != 0.0 && d.is_finite() {
            let (n, center) = (self.len, self.center);
            self.rebuild(center, d.abs(), std::iter::repeat_n(center, n));
        }
        let k = self.key_of_offset(d);
        self.ensure(k);
        let i = (k - self.base) as usize;
        self.counts[i] += 1;
        self.sums[i] += d;
        self.fen_add(i, true);
        self.len += 1;
    }

    /// Removes one `x` (as inserted); returns whether its bucket held a value.
    pub fn remove(&mut self, x: f64) -> bool {
        let d = x - self.center;
        let Some(i) = self.index(self.key_of_offset(d)) else {
            return false;
        };
        if self.counts[i] == 0 {
            return false;
        }
        self.counts[i] -= 1;
        // An emptied bucket forgets its rounding: sums never drift over long streams.
        self.sums[i] = if self.counts[i] == 0 {
            0.0
        } else {
            self.sums[i] - d
        };
        self.fen_add(i, false);
        self.len -= 1;
        true
    }

    /// Empties the sketch and refills it with `values`, centred on `center` with the knee at
    /// `scale` (the owner calls this about once per window of evictions, with the current
    /// median and MAD: O(n) then, O(1) amortised, and the allocated range shrinks to what the
    /// window spans).
    pub fn rebuild<I>(&mut self, center: f64, scale: f64, values: I)
    where
        I: Iterator<Item = f64> + Clone,
    {
        // Without a spread, the values' own: the knee is a guess only when they are all at
        // the center (see `insert`).
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            let c = if center.is_finite() { center } else { 0.0 };
            values
                .clone()
                .map(|x| (x - c).abs())
                .filter(|a| a.is_finite())
                .fold(0.0, f64::max)
        };
        self.set_frame(center, scale);
        self.len = 0;
        // One pass for the range of keys, so the arrays are allocated once.
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for x in values.clone() {
            let k = self.key_of_offset(x - self.center);
            lo = lo.min(k);
            hi = hi.max(k);
        }
        self.counts.clear();
        self.sums.clear();
        if lo <= hi {
            self.base = lo;
            let size = (hi - lo + 1) as usize;
            // The arrays shrink to what the window spans: a spike that has left the window
            // (or a first frame before the knee was known) keeps no memory.
            if self.counts.capacity() > 2 * size + 64 {
                self.counts.shrink_to(size);
                self.sums.shrink_to(size);
                self.fen.shrink_to(size + 1);
            }
            self.counts.resize(size, 0);
            self.sums.resize(size, 0.0);
            for x in values {
                let d = x - self.center;
                let i = (self.key_of_offset(d) - self.base) as usize;
                self.counts[i] += 1;
                self.sums[i] += d;
                self.len += 1;
            }
        }
        self.build_fenwick();
    }

    /// Dense index of the bucket holding rank `k` (0-based), `k < len`.
    #[inline]
    fn kth_index(&self, k: usize) -> usize {
        let n = self.counts.len();
        let mut pos = 0usize;
        let mut rem = k;
        let mut step = if n == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        while step > 0 {
            let next = pos + step;
            if next <= n && (self.fen[next] as usize) <= rem {
                pos = next;
                rem -= self.fen[next] as usize;
            }
            step >>= 1;
        }
        pos
    }

    /// Offset-space k-th smallest.
    #[inline]
    fn kth_offset(&self, k: usize) -> f64 {
        self.rep(self.kth_index(k))
    }

    /// The k-th smallest value (0-based), within `w(x_(k))`; None if `k >= len`.
    pub fn kth(&self, k: usize) -> Option<f64> {
        (k < self.len).then(|| self.center + self.kth_offset(k))
    }

    /// Quantile `q` in [0, 1], type 7 (linear between closest ranks), within the bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.len;
        if n == 0 {
            return None;
        }
        let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
        let lo = h.floor() as usize;
        let a = self.kth_offset(lo);
        if lo + 1 >= n {
            return Some(self.center + a);
        }
        let b = self.kth_offset(lo + 1);
        Some(self.center + (a + (h - lo as f64) * (b - a)))
    }

    fn median_offset(&self) -> f64 {
        let n = self.len;
        if n % 2 == 1 {
            self.kth_offset(n / 2)
        } else {
            0.5 * (self.kth_offset(n / 2 - 1) + self.kth_offset(n / 2))
        }
    }

    /// Median (mean of the two middle values for an even count), within the bound.
    pub fn median(&self) -> Option<f64> {
        (self.len > 0).then(|| self.center + self.median_offset())
    }

    /// Median absolute deviation from the median, within `2 W` (module docs), in
    /// O(log² buckets): two binary searches over bucket representatives above and below the
    /// median, each step counting the values within a distance with two Fenwick prefixes.
    pub fn mad(&self) -> Option<f64> {
        let n = self.len;
        if n == 0 {
            return None;
        }
        let m = self.median_offset();
        let nb = self.counts.len();
        // First bucket whose representative is at or above the median.
        let s = partition_point(0, nb, |i| self.rep(i) < m);
        let below_s = self.prefix(s);
        // Where the key of a value puts it, give or take one bucket.
        let near = |v: f64| -> usize {
            let k = self.key_of_offset(v);
            match self.index(k) {
                Some(i) => i,
                None if k < self.base => 0,
                None => nb - 1,
            }
        };
        // End (exclusive) of the upper buckets within distance d, and start of the lower
        // ones: distances compared exactly as the candidates compute them, so a bucket at
        // distance d is always counted whatever `m ± d` rounds to.
        let upper_end = |d: f64| -> usize {
            let mut e = (near(m + d) + 1).clamp(s, nb);
            while e > s && self.rep(e - 1) - m > d {
                e -= 1;
            }
            while e < nb && self.rep(e) - m <= d {
                e += 1;
            }
            e
        };
        let lower_start = |d: f64| -> usize {
            let mut b = near(m - d).min(s);
            while b < s && m - self.rep(b) > d {
                b += 1;
            }
            while b > 0 && m - self.rep(b - 1) <= d {
                b -= 1;
            }
            b
        };
        // The k-th smallest distance: a binary search over the upper buckets finds the
        // nearest one whose distance covers k + 1 values; the values below the median that
        // come before it then decide (one Fenwick descent).
        let kth_distance = |k: usize| -> f64 {
            let need = k + 1;
            let j = partition_point(s, nb, |j| {
                let d = self.rep(j) - m;
                let lower = below_s - self.prefix(lower_start(d));
                self.prefix(j + 1) - below_s + lower < need
            });
            let d_hi = if j < nb {
                self.rep(j) - m
            } else {
                f64::INFINITY
            };
            // Upper values nearer than d_hi; the rest must come from below.
            let rest = need - (self.prefix(j) - below_s);
            let d_lo = if rest <= below_s {
                m - self.kth_offset(below_s - rest)
            } else {
                f64::INFINITY
            };
            d_hi.min(d_lo)
        };
        // The smallest distance covering `need` values, given that `d` covers `need - 1`.
        let next_distance = |d: f64, need: usize| -> f64 {
            let up = self.prefix(upper_end(d));
            let low = self.prefix(lower_start(d));
            if up - low >= need {
                return d;
            }
            let mut best = f64::INFINITY;
            if up < n {
                best = self.kth_offset(up) - m;
            }
            if low > 0 {
                best = best.min(m - self.kth_offset(low - 1));
            }
            best
        };
        Some(if n % 2 == 1 {
            kth_distance(n / 2)
        } else {
            let a = kth_distance(n / 2 - 1);
            0.5 * (a + next_distance(a, n / 2 + 1))
        })
    }
}

/// First index in `[lo, hi)` where `pred` is false (`pred` true then false).
#[inline]
fn partition_point(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(v: &[f64]) -> (Vec<f64>, f64, f64) {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let med = if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        };
        let mut dev: Vec<f64> = s.iter().map(|x| (x - med).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let mad = if n % 2 == 1 {
            dev[n / 2]
        } else {
            0.5 * (dev[n / 2 - 1] + dev[n / 2])
        };
        (s, med, mad)
    }

    #[test]
    fn small_windows_stay_within_the_bounds() {
        let mut rng = 11u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        for bits in [4, 10] {
            let mut sk = QuantileSketch::new(bits, 5.0, 3.0);
            let mut win: Vec<f64> = Vec::new();
            for i in 0..20_000 {
                let x = if i % 7 == 0 {
                    5.0
                } else {
                    (next() - 0.3) * 40.0
                };
                sk.insert(x);
                win.push(x);
                while win.len() > 36 + (i / 100) % 2 {
                    assert!(sk.remove(win.remove(0)));
                }
                let (s, med, mad) = exact(&win);
                let wmax = win.iter().map(|&x| sk.width(x)).fold(0.0, f64::max);
                for (k, &x) in s.iter().enumerate() {
                    let got = sk.kth(k).unwrap();
                    assert!(
                        (got - x).abs() <= sk.width(x) * 1.000001,
                        "kth {k}: {got} vs {x}"
                    );
                }
                let got = sk.median().unwrap();
                assert!((got - med).abs() <= wmax, "median {got} vs {med}");
                let got = sk.mad().unwrap();
                assert!(
                    (got - mad).abs() <= 2.0 * wmax,
                    "bits {bits} i {i}: mad {got} vs {mad}"
                );
                // The search itself is exact: the MAD of the representatives.
                let reps: Vec<f64> = (0..win.len()).map(|k| sk.kth(k).unwrap()).collect();
                let (_, _, rep_mad) = exact(&reps);
                assert!(
                    (got - rep_mad).abs() <= 1e-12 * (1.0 + rep_mad),
                    "bits {bits} i {i}: mad {got} vs MAD of representatives {rep_mad}"
                );
            }
            assert!(!sk.remove(1e300));
        }
    }

    #[test]
    fn a_first_value_far_from_the_data_does_not_allocate_its_orders_of_magnitude() {
        // A window whose first reading is 0 (no spread known, so the knee was a guess at the
        // smallest normal number): the next reading, 3, used to put the data about 1,000
        // binary orders of magnitude above the knee, 256 buckets each (385,000 buckets). A
        // level of 22.7 with a guessed knee of 2^-10 of it: 5,400 buckets by the 32nd value.
        use crate::analytics::rolling::{Extent, Rolling};
        for first in [0.0, 22.7, -1e9] {
            let mut r = Rolling::sketched(Extent::Count(100), DEFAULT_BITS);
            let mut all = vec![first];
            r.push(0, first);
            let mut peak = 0;
            for i in 1..300i64 {
                let x = first + ((i * 37) % 61) as f64 / 10.0 - 3.0;
                all.push(x);
                r.push(i, x);
                let sk = r.sketch().unwrap();
                peak = peak.max(sk.counts.capacity());
                // Still within the bounds.
                let w: Vec<f64> = all[all.len().saturating_sub(100)..].to_vec();
                let (_, med, _) = exact(&w);
                let got = sk.median().unwrap();
                assert!(
                    (got - med).abs() <= sk.width(med) * 2.0,
                    "{first}: median {got} against {med}"
                );
            }
            assert!(peak < 4_000, "{first}: {peak} buckets");
        }
        // Equal values keep the guess; the first different one sets the knee from its
        // distance, and the values held come back exactly.
        let mut sk = QuantileSketch::new(DEFAULT_BITS, 0.0, 0.0);
        for _ in 0..5 {
            sk.insert(0.0);
        }
        sk.insert(1e6);
        assert!(sk.buckets() < 2_000, "{} buckets", sk.buckets());
        assert_eq!(sk.kth(0), Some(0.0));
        assert_eq!(sk.kth(4), Some(0.0));
        assert!((sk.kth(5).unwrap() - 1e6).abs() <= sk.width(1e6));
    }

    #[test]
    fn equal_values_come_back_exactly() {
        let mut sk = QuantileSketch::new(10, 0.0, 1.0);
        for _ in 0..1000 {
            sk.insert(3.0);
        }
        sk.insert(-2.0);
        assert_eq!(sk.median(), Some(3.0));
        assert_eq!(sk.kth(0), Some(-2.0));
        assert_eq!(sk.mad(), Some(0.0));
    }
}
