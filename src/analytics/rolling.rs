//! Sliding windows by count or by event time, with exact statistics updated in O(1) (count,
//! sum, mean, variances, min, max) or O(log n) (quantiles, median, MAD) per reading, and the
//! exponentially weighted mean and variance.
//!
//! Exactness: sums are kept shifted by a reference value close to the window mean and with
//! Neumaier compensation, and are recomputed from the window's values (amortised O(1): at
//! most once per window length of evictions, or when the mean drifts far from the reference),
//! which keeps results within 1e-9 relative of a two-pass batch computation over arbitrarily
//! long streams. Min and max use monotonic deques; quantiles an [`OrderStat`] multiset
//! (exact, O(log n)) or a [`QuantileSketch`] (bounded error, cost independent of n).
//!
//! Readings of one window must arrive in event-time order (the operators sort them).

use std::collections::VecDeque;

use super::orderstat::OrderStat;
use super::sketch::QuantileSketch;

/// Adds `v` to the compensated sum `(s, c)` (Neumaier's variant of Kahan summation).
#[inline]
pub fn neumaier(s: &mut f64, c: &mut f64, v: f64) {
    let t = *s + v;
    if s.abs() >= v.abs() {
        *c += (*s - t) + v;
    } else {
        *c += (v - t) + *s;
    }
    *s = t;
}

/// What a window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Extent {
    /// The last `n` readings.
    Count(usize),
    /// Readings with event time in `(newest - width, newest]`, width in ms.
    Time(i64),
}

/// Compensated, shifted first and second moments of a multiset of values.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Moments {
    shift: f64,
    s1: f64,
    c1: f64,
    s2: f64,
    c2: f64,
}

impl Moments {
    #[inline]
    fn add(&mut self, x: f64, sign: f64) {
        let d = x - self.shift;
        neumaier(&mut self.s1, &mut self.c1, sign * d);
        neumaier(&mut self.s2, &mut self.c2, sign * d * d);
    }
    /// Mean of `n` values.
    #[inline]
    fn mean(&self, n: usize) -> f64 {
        self.shift + (self.s1 + self.c1) / n as f64
    }
    /// Population variance of `n` values.
    #[inline]
    fn variance(&self, n: usize) -> f64 {
        let n = n as f64;
        let s1 = self.s1 + self.c1;
        let s2 = self.s2 + self.c2;
        ((s2 - s1 * s1 / n) / n).max(0.0)
    }
    /// True when the mean of `n > 1` values has drifted so far from the shift that the
    /// second moment would lose digits.
    #[inline]
    fn drifted(&self, n: usize) -> bool {
        let off = (self.s1 + self.c1) / n as f64;
        n > 1 && off * off > 1e4 * self.variance(n).max(f64::MIN_POSITIVE)
    }
    /// Recomputes the sums from `values`, shifted by their current mean.
    fn rebase<'a>(&mut self, values: impl ExactSizeIterator<Item = &'a f64>) {
        let n = values.len();
        if n == 0 {
            return;
        }
        *self = Moments {
            shift: self.mean(n),
            ..Moments::default()
        };
        for &x in values {
            self.add(x, 1.0);
        }
    }
}

/// How a [`Rolling`] window answers quantiles, median and MAD.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Order {
    /// Not at all.
    Off,
    /// Exactly, from an order-statistic multiset: O(log n) per reading.
    Exact(OrderStat),
    /// Within the [`QuantileSketch`] bounds, at a cost independent of n; `evicted` counts
    /// evictions since the sketch was last re-centred.
    Sketch(QuantileSketch, usize),
}

/// Statistics of a sliding window. Memory per series: the window's readings (24 bytes each)
/// plus the min/max deques (at most the window, 16 bytes each) and, with exact quantiles,
/// 16 bytes per reading in the order-statistic blocks; with the sketch, 16 bytes per bucket
/// (see [`QuantileSketch`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rolling {
    extent: Extent,
    buf: VecDeque<(i64, f64, u64)>,
    seq: u64,
    m: Moments,
    evicted: usize,
    min: VecDeque<(u64, f64)>,
    max: VecDeque<(u64, f64)>,
    order: Order,
}

impl Rolling {
    /// A window of the given extent; `quantiles` turns on the order-statistic tree that
    /// quantiles, median and MAD need.
    pub fn new(extent: Extent, quantiles: bool) -> Self {
        Rolling {
            extent,
            buf: VecDeque::new(),
            seq: 0,
            m: Moments::default(),
            evicted: 0,
            min: VecDeque::new(),
            max: VecDeque::new(),
            order: if quantiles {
                Order::Exact(OrderStat::new())
            } else {
                Order::Off
            },
        }
    }

    /// A window whose quantiles, median and MAD come from a [`QuantileSketch`] with `bits`
    /// mantissa bits per bucket (errors within its documented bounds; the cost per reading
    /// does not grow with the window). The sketch is re-centred on the window's median once
    /// per window length of evictions (O(n) then, O(1) amortised).
    pub fn sketched(extent: Extent, bits: u32) -> Self {
        Rolling {
            order: Order::Sketch(QuantileSketch::new(bits, 0.0, 0.0), 0),
            ..Rolling::new(extent, false)
        }
    }

    /// Adds a reading at event time `ts` and evicts what falls out of the window.
    pub fn push(&mut self, ts: i64, x: f64) {
        if self.buf.is_empty() {
            self.m = Moments {
                shift: x,
                ..Moments::default()
            };
        }
        let seq = self.seq;
        self.seq += 1;
        self.buf.push_back((ts, x, seq));
        self.m.add(x, 1.0);
        while self.min.back().is_some_and(|&(_, v)| v >= x) {
            self.min.pop_back();
        }
        self.min.push_back((seq, x));
        while self.max.back().is_some_and(|&(_, v)| v <= x) {
            self.max.pop_back();
        }
        self.max.push_back((seq, x));
        match &mut self.order {
            Order::Off => {}
            Order::Exact(o) => o.insert(x, seq),
            Order::Sketch(s, _) => {
                if s.is_empty() {
                    s.rebuild(x, 0.0, std::iter::empty());
                }
                s.insert(x);
            }
        }
        match self.extent {
            Extent::Count(n) => {
                while self.buf.len() > n.max(1) {
                    self.pop();
                }
            }
            Extent::Time(_) => self.advance(ts),
        }
        self.maybe_rebuild();
    }

    /// For time windows: evicts readings at or before `now - width` (call when time moves
    /// without a reading of this series).
    pub fn advance(&mut self, now: i64) {
        if let Extent::Time(w) = self.extent {
            while self.buf.front().is_some_and(|&(t, _, _)| t <= now - w) {
                self.pop();
            }
        }
    }

    fn pop(&mut self) {
        let Some((_, x, seq)) = self.buf.pop_front() else {
            return;
        };
        self.m.add(x, -1.0);
        self.evicted += 1;
        if self.min.front().is_some_and(|&(s, _)| s == seq) {
            self.min.pop_front();
        }
        if self.max.front().is_some_and(|&(s, _)| s == seq) {
            self.max.pop_front();
        }
        match &mut self.order {
            Order::Off => {}
            Order::Exact(o) => {
                o.remove(x, seq);
            }
            Order::Sketch(s, evicted) => {
                s.remove(x);
                *evicted += 1;
            }
        }
    }

    fn maybe_rebuild(&mut self) {
        let n = self.buf.len();
        // Rebuild once per window of evictions, or when the mean has drifted.
        if n > 0 && (self.evicted >= n.max(16) || self.m.drifted(n)) {
            self.m.rebase(self.buf.iter().map(|(_, x, _)| x));
            self.evicted = 0;
        }
        if let Order::Sketch(s, evicted) = &mut self.order {
            // Re-centre once per window of evictions, and once early (at 32 readings) so the
            // first window gets a knee from real data.
            if n > 0 && (*evicted >= n.max(16) || (*evicted == 0 && n == 32)) {
                let center = s.median().unwrap_or(0.0);
                let mad = s.mad().unwrap_or(0.0);
                let scale = if mad > 0.0 {
                    mad
                } else {
                    self.m.variance(n).sqrt()
                };
                s.rebuild(center, scale, self.buf.iter().map(|&(_, x, _)| x));
                *evicted = 0;
            }
        }
    }

    /// Readings in the window.
    pub fn count(&self) -> usize {
        self.buf.len()
    }

    /// Sum of the window's values.
    pub fn sum(&self) -> f64 {
        self.m.shift * self.buf.len() as f64 + self.m.s1 + self.m.c1
    }

    /// Mean (NaN when empty).
    pub fn mean(&self) -> f64 {
        self.m.mean(self.buf.len())
    }

    /// Population variance (0 for fewer than two readings).
    pub fn variance(&self) -> f64 {
        if self.buf.len() < 2 {
            0.0
        } else {
            self.m.variance(self.buf.len())
        }
    }

    /// Sample variance (n - 1 denominator; 0 for fewer than two readings).
    pub fn sample_variance(&self) -> f64 {
        let n = self.buf.len();
        if n < 2 {
            0.0
        } else {
            self.m.variance(n) * n as f64 / (n - 1) as f64
        }
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        self.variance().sqrt()
    }

    /// Smallest value (None when empty).
    pub fn min(&self) -> Option<f64> {
        self.min.front().map(|&(_, v)| v)
    }

    /// Largest value (None when empty).
    pub fn max(&self) -> Option<f64> {
        self.max.front().map(|&(_, v)| v)
    }

    /// Quantile (type 7): exact, or within the sketch's bounds; None when empty or
    /// quantiles are off.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        match &self.order {
            Order::Off => None,
            Order::Exact(o) => o.quantile(q),
            Order::Sketch(s, _) => s.quantile(q),
        }
    }

    /// Median: exact, or within the sketch's bounds; None when empty or quantiles are off.
    pub fn median(&self) -> Option<f64> {
        match &self.order {
            Order::Off => None,
            Order::Exact(o) => o.median(),
            Order::Sketch(s, _) => s.median(),
        }
    }

    /// Median absolute deviation: exact, or within the sketch's bounds; None when empty or
    /// quantiles are off.
    pub fn mad(&self) -> Option<f64> {
        match &self.order {
            Order::Off => None,
            Order::Exact(o) => o.mad(),
            Order::Sketch(s, _) => s.mad(),
        }
    }

    /// The quantile sketch, when the window was made with [`Rolling::sketched`].
    pub fn sketch(&self) -> Option<&QuantileSketch> {
        match &self.order {
            Order::Sketch(s, _) => Some(s),
            _ => None,
        }
    }

    /// The window's values, oldest first (for oracles and debugging).
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.buf.iter().map(|&(_, x, _)| x)
    }
}

/// Exponentially weighted mean and variance: `m += a (x - m)`,
/// `v = (1 - a) (v + a (x - m_prev)^2)`. O(1) memory (three numbers).
///
/// Equivalent batch definition: weights `(1-a)^(t-1)` for the first value and `a (1-a)^(t-i)`
/// for value `i > 1` (they sum to one); the mean is the weighted mean and the variance the
/// weighted population variance around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    /// Smoothing factor in (0, 1].
    pub alpha: f64,
    /// Current mean (NaN before the first value).
    pub mean: f64,
    /// Current variance.
    pub var: f64,
    /// Values seen.
    pub n: u64,
}

impl Ewma {
    /// A fresh average with smoothing `alpha`.
    pub fn new(alpha: f64) -> Self {
        Ewma {
            alpha,
            mean: f64::NAN,
            var: 0.0,
            n: 0,
        }
    }

    /// Adds a value.
    #[inline]
    pub fn update(&mut self, x: f64) {
        self.n += 1;
        if self.n == 1 {
            self.mean = x;
            self.var = 0.0;
            return;
        }
        let d = x - self.mean;
        self.mean += self.alpha * d;
        self.var = (1.0 - self.alpha) * (self.var + self.alpha * d * d);
    }

    /// Standard deviation.
    pub fn std(&self) -> f64 {
        self.var.sqrt()
    }
}

/// The last `n` values of a series in a ring buffer, with their exact mean and population
/// variance: the lean count window for hot paths (W2's "previous 100 readings"). O(1) per
/// value (amortised: the sums are rebuilt from the ring once per `n` values); memory
/// `8 n + 48` bytes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CountWindow {
    ring: Vec<f64>,
    cap: usize,
    head: usize,
    m: Moments,
    since: usize,
}

impl CountWindow {
    /// A window of the last `n >= 1` values.
    pub fn new(n: usize) -> Self {
        CountWindow {
            ring: Vec::with_capacity(n.max(1)),
            cap: n.max(1),
            head: 0,
            m: Moments::default(),
            since: 0,
        }
    }

    /// Values held (at most `n`).
    #[inline]
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True before the first value.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Adds a value, dropping the oldest when full.
    #[inline]
    pub fn push(&mut self, x: f64) {
        if self.ring.is_empty() {
            self.m.shift = x;
        }
        if self.ring.len() < self.cap {
            self.ring.push(x);
        } else {
            let old = std::mem::replace(&mut self.ring[self.head], x);
            self.head += 1;
            if self.head == self.cap {
                self.head = 0;
            }
            self.m.add(old, -1.0);
        }
        self.m.add(x, 1.0);
        self.since += 1;
        // Rebuild once per window, or at once when the mean drifts.
        if self.since >= self.cap || self.m.drifted(self.ring.len()) {
            self.m.rebase(self.ring.iter());
            self.since = 0;
        }
    }

    /// Prefetches the ring slot the next [`push`](Self::push) writes (a hint for callers that
    /// know their next values' series; see `engine::keyed::InOrder::ahead`).
    #[inline]
    pub fn prefetch(&self) {
        let next = if self.ring.len() < self.cap {
            self.ring.len()
        } else {
            self.head
        };
        crate::prefetch(self.ring.as_ptr().wrapping_add(next));
    }

    /// Mean and population variance of the values held (None when empty).
    #[inline]
    pub fn mean_var(&self) -> Option<(f64, f64)> {
        if self.ring.is_empty() {
            return None;
        }
        let n = self.ring.len();
        Some((self.m.mean(n), self.m.variance(n)))
    }

    /// The values held, in no particular order.
    pub fn values(&self) -> &[f64] {
        &self.ring
    }
}
