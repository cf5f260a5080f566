//! An order-statistic multiset of f64 (a treap with subtree sizes in one arena): insert,
//! remove, k-th smallest and rank in O(log n) expected. It gives exact rolling quantiles,
//! medians and the median absolute deviation without rescanning the window.
//!
//! Memory: one 40-byte node per value held, plus a free list; nodes are reused.

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    key: (u64, u64),
    value: f64,
    prio: u32,
    left: u32,
    right: u32,
    size: u32,
}

/// A multiset of f64 ordered by value (NaN is not accepted by callers; `total_cmp` order).
/// Each element carries a caller-chosen sequence number so equal values stay distinct.
#[derive(Debug, Clone)]
pub struct OrderStat {
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
    rng: u64,
}

impl Default for OrderStat {
    fn default() -> Self {
        OrderStat {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

/// Maps an f64 to a u64 with the same order (`total_cmp`).
fn ordered(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

impl OrderStat {
    /// An empty multiset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.size(self.root) as usize
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.root == NIL
    }

    fn size(&self, t: u32) -> u32 {
        if t == NIL {
            0
        } else {
            self.nodes[t as usize].size
        }
    }

    fn fix(&mut self, t: u32) {
        let (l, r) = {
            let n = &self.nodes[t as usize];
            (n.left, n.right)
        };
        self.nodes[t as usize].size = 1 + self.size(l) + self.size(r);
    }

    /// Splits `t` into (keys < key, keys >= key).
    fn split(&mut self, t: u32, key: (u64, u64)) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.nodes[t as usize].key < key {
            let r = self.nodes[t as usize].right;
            let (a, b) = self.split(r, key);
            self.nodes[t as usize].right = a;
            self.fix(t);
            (t, b)
        } else {
            let l = self.nodes[t as usize].left;
            let (a, b) = self.split(l, key);
            self.nodes[t as usize].left = b;
            self.fix(t);
            (a, t)
        }
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].prio > self.nodes[b as usize].prio {
            let r = self.nodes[a as usize].right;
            let m = self.merge(r, b);
            self.nodes[a as usize].right = m;
            self.fix(a);
            a
        } else {
            let l = self.nodes[b as usize].left;
            let m = self.merge(a, l);
            self.nodes[b as usize].left = m;
            self.fix(b);
            b
        }
    }

    /// Inserts `value` tagged `seq` (the pair must not already be present).
    pub fn insert(&mut self, value: f64, seq: u64) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let node = Node {
            key: (ordered(value), seq),
            value,
            prio: (self.rng >> 32) as u32,
            left: NIL,
            right: NIL,
            size: 1,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        let key = self.nodes[idx as usize].key;
        let (a, b) = self.split(self.root, key);
        let left = self.merge(a, idx);
        self.root = self.merge(left, b);
    }

    /// Removes `value` tagged `seq`; returns whether it was present.
    pub fn remove(&mut self, value: f64, seq: u64) -> bool {
        let key = (ordered(value), seq);
        let (a, b) = self.split(self.root, key);
        let next = (key.0, key.1.wrapping_add(1));
        let (m, c) = if key.1 == u64::MAX {
            (b, NIL)
        } else {
            self.split(b, next)
        };
        let found = m != NIL;
        if found {
            self.free.push(m);
        }
        self.root = self.merge(a, c);
        found
    }

    /// The k-th smallest value (0-based), if `k < len`.
    pub fn kth(&self, mut k: usize) -> Option<f64> {
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            let ls = self.size(n.left) as usize;
            if k < ls {
                t = n.left;
            } else if k == ls {
                return Some(n.value);
            } else {
                k -= ls + 1;
                t = n.right;
            }
        }
        None
    }

    /// Number of values strictly less than `x`.
    pub fn rank_below(&self, x: f64) -> usize {
        let key = ordered(x);
        let mut t = self.root;
        let mut r = 0usize;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if n.key.0 < key {
                r += self.size(n.left) as usize + 1;
                t = n.right;
            } else {
                t = n.left;
            }
        }
        r
    }

    /// Quantile `q` in [0, 1] with linear interpolation between closest ranks (numpy's
    /// default, "type 7"): exact.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
        let lo = h.floor() as usize;
        let a = self.kth(lo)?;
        if lo + 1 >= n {
            return Some(a);
        }
        let b = self.kth(lo + 1)?;
        Some(a + (h - lo as f64) * (b - a))
    }

    /// Median (the mean of the two middle values for an even count).
    pub fn median(&self) -> Option<f64> {
        let n = self.len();
        if n == 0 {
            None
        } else if n % 2 == 1 {
            self.kth(n / 2)
        } else {
            Some(0.5 * (self.kth(n / 2 - 1)? + self.kth(n / 2)?))
        }
    }

    /// Median absolute deviation from the median, exact, in O(log² n): the k-th smallest
    /// distance is found by a binary search over the two sorted runs of distances below and
    /// above the median.
    pub fn mad(&self) -> Option<f64> {
        let n = self.len();
        let m = self.median()?;
        let below = self.rank_below(m);
        let nl = below;
        let nr = n - below;
        let l = |i: usize| m - self.kth(below - 1 - i).unwrap_or(f64::NAN);
        let r = |j: usize| self.kth(below + j).unwrap_or(f64::NAN) - m;
        let kth = |k: usize| -> f64 {
            let (mut lo, mut hi) = ((k + 1).saturating_sub(nr), (k + 1).min(nl));
            while lo < hi {
                let i = (lo + hi) / 2;
                let j = k + 1 - i;
                if j == 0 || l(i) >= r(j - 1) {
                    hi = i;
                } else {
                    lo = i + 1;
                }
            }
            let i = lo;
            let j = k + 1 - i;
            let a = if i > 0 { l(i - 1) } else { f64::NEG_INFINITY };
            let b = if j > 0 { r(j - 1) } else { f64::NEG_INFINITY };
            a.max(b)
        };
        Some(if n % 2 == 1 {
            kth(n / 2)
        } else {
            0.5 * (kth(n / 2 - 1) + kth(n / 2))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_sorted_vector() {
        let mut os = OrderStat::new();
        let mut v: Vec<(f64, u64)> = Vec::new();
        let mut s = 7u64;
        for seq in 0..5000u64 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = ((s >> 40) % 50) as f64 - 20.0;
            os.insert(x, seq);
            v.push((x, seq));
            if seq % 3 == 0 && v.len() > 1 {
                let (x, q) = v.remove((s >> 20) as usize % v.len());
                assert!(os.remove(x, q));
            }
            let mut sorted: Vec<f64> = v.iter().map(|p| p.0).collect();
            sorted.sort_by(f64::total_cmp);
            assert_eq!(os.len(), sorted.len());
            let k = (s >> 8) as usize % sorted.len();
            assert_eq!(os.kth(k), Some(sorted[k]));
            let n = sorted.len();
            let med = if n % 2 == 1 {
                sorted[n / 2]
            } else {
                0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
            };
            assert_eq!(os.median(), Some(med));
            let mut dev: Vec<f64> = sorted.iter().map(|x| (x - med).abs()).collect();
            dev.sort_by(f64::total_cmp);
            let mad = if n % 2 == 1 {
                dev[n / 2]
            } else {
                0.5 * (dev[n / 2 - 1] + dev[n / 2])
            };
            assert_eq!(os.mad(), Some(mad), "n={n}");
        }
        assert!(!os.remove(1e9, 0));
    }
}
