//! Tumbling event-time windows and the per-window summary statistics kernel.
//!
//! [`WindowStats`] keeps count, mean, min, max and the population variance of one window
//! in O(1) memory (five numbers) with Welford's update, which stays accurate to a few ulps
//! of the two-pass batch computation even for long windows with a large mean.

use crate::dataset::timefmt::Zone;
use crate::record::EventTime;

/// Summary of the values that fell into one window: O(1) state, O(1) per update.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowStats {
    /// Number of values.
    pub count: u64,
    /// Running mean (Welford).
    pub mean: f64,
    /// Sum of squared deviations from the mean (Welford's M2).
    pub m2: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Default for WindowStats {
    fn default() -> Self {
        WindowStats {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl WindowStats {
    /// Adds one value.
    #[inline]
    pub fn update(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
    }

    /// Population variance (0 for fewer than two values).
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            (self.m2 / self.count as f64).max(0.0)
        }
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        self.variance().sqrt()
    }

    /// Combines two summaries of disjoint sets of values (Chan et al.), for merging partials.
    pub fn merge(&mut self, other: &WindowStats) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let n = (self.count + other.count) as f64;
        let delta = other.mean - self.mean;
        self.m2 += other.m2 + delta * delta * (self.count as f64) * (other.count as f64) / n;
        self.mean += delta * other.count as f64 / n;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// A first-in first-out queue of summaries (the panes of a sliding window) that gives the
/// merge of everything in it in O(1) amortized, with no subtraction (so no drift, and min and
/// max work): two stacks, pushed onto the back one, popped from the front one, which holds
/// for each entry the merge of it and every newer entry of the front; when the front runs
/// empty the back is moved over in one pass. Each summary is merged about three times in all.
///
/// Memory: two summaries per entry (80 bytes) plus one.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PaneQueue {
    /// Oldest last: (key, merge of this entry and the newer ones of the front).
    front: Vec<(EventTime, WindowStats)>,
    /// Oldest first: (key, its summary).
    back: Vec<(EventTime, WindowStats)>,
    /// Merge of `back`.
    back_sum: WindowStats,
}

impl PaneQueue {
    /// Appends the newest summary, under `key` (keys must not decrease).
    pub fn push(&mut self, key: EventTime, s: WindowStats) {
        self.back.push((key, s));
        self.back_sum.merge(&s);
    }

    /// The key of the oldest summary.
    pub fn oldest(&self) -> Option<EventTime> {
        self.front
            .last()
            .or_else(|| self.back.first())
            .map(|(k, _)| *k)
    }

    /// Drops the oldest summary.
    pub fn pop(&mut self) {
        if self.front.is_empty() {
            let mut acc = WindowStats::default();
            for (k, s) in self.back.drain(..).rev() {
                let mut m = s;
                m.merge(&acc);
                acc = m;
                self.front.push((k, acc));
            }
            self.back_sum = WindowStats::default();
        }
        self.front.pop();
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.front.is_empty() && self.back.is_empty()
    }

    /// Number of summaries held.
    pub fn len(&self) -> usize {
        self.front.len() + self.back.len()
    }

    /// The merge of every summary held.
    pub fn total(&self) -> WindowStats {
        let mut t = self.front.last().map_or_else(WindowStats::default, |e| e.1);
        t.merge(&self.back_sum);
        t
    }
}

/// Tumbling windows of a fixed width, aligned to the Unix epoch: `[k*w, (k+1)*w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tumbling {
    /// Window width in milliseconds (> 0).
    pub width_ms: i64,
}

impl Tumbling {
    /// Start of the window that holds `ts` (floor division, so negative times work too).
    #[inline]
    pub fn start(&self, ts: EventTime) -> EventTime {
        ts.div_euclid(self.width_ms) * self.width_ms
    }

    /// Exclusive end of the window that holds `ts`.
    #[inline]
    pub fn end(&self, ts: EventTime) -> EventTime {
        self.start(ts) + self.width_ms
    }
}

/// Tumbling windows aligned to local time in a zone: `[k*w, (k+1)*w)` of the local clock,
/// each turned into UTC at its earliest instant (see [`Zone::earliest_utc`]). With daylight
/// saving a local day lasts 23 or 25 hours, and a local hour that happens twice is one window
/// of two hours. A fixed offset only shifts the boundaries (`+10:00`: days from local
/// midnight). For a zone with daylight saving the width must divide a day into whole hours
/// or be whole days (see [`LocalTumbling::new`]), so that no boundary falls inside an hour the
/// clocks repeat.
#[derive(Debug, Clone)]
pub struct LocalTumbling {
    width_ms: i64,
    zone: Zone,
}

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// Milliseconds in an hour.
const HOUR_MS: i64 = 3_600_000;

impl LocalTumbling {
    /// Windows `width_ms` wide in `zone`; an error says why a width does not fit the zone.
    pub fn new(width_ms: i64, zone: Zone) -> Result<Self, String> {
        let whole = width_ms > 0
            && (width_ms % DAY_MS == 0 || (width_ms % HOUR_MS == 0 && DAY_MS % width_ms == 0));
        if zone.is_named() && !whole {
            return Err(format!(
                "a window of {width_ms} ms in a zone with daylight saving: use whole hours that divide a day (1h, 2h, 3h, 4h, 6h, 8h, 12h) or whole days"
            ));
        }
        Ok(LocalTumbling {
            width_ms: width_ms.max(1),
            zone,
        })
    }

    /// Start of the window that holds `ts`.
    pub fn start(&self, ts: EventTime) -> EventTime {
        let local = self.zone.local_ms(ts);
        self.zone
            .earliest_utc(local.div_euclid(self.width_ms) * self.width_ms)
    }

    /// Exclusive end of the window that holds `ts`.
    pub fn end(&self, ts: EventTime) -> EventTime {
        let local = self.zone.local_ms(ts);
        self.zone
            .earliest_utc(local.div_euclid(self.width_ms) * self.width_ms + self.width_ms)
    }
}

/// The batch oracle: two-pass statistics over a slice, as a test or a user would compute them.
pub fn batch_stats(values: &[f64]) -> WindowStats {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let m2 = values.iter().map(|x| (x - mean) * (x - mean)).sum();
    WindowStats {
        count: values.len() as u64,
        mean,
        m2,
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_windows_partition_time_through_daylight_saving() {
        let hour = 3_600_000;
        for name in [
            "UTC",
            "+05:30",
            "America/Chicago",
            "Europe/Berlin",
            "Australia/Melbourne",
            "Australia/Lord_Howe", // half-hour daylight saving
            "America/Santiago",    // clocks change at midnight
        ] {
            let zone = Zone::parse(name).unwrap();
            for width in [hour, 2 * hour, 24 * hour, 7 * 24 * hour] {
                let w = LocalTumbling::new(width, zone.clone()).unwrap();
                // 2017 and 2018, every 17 minutes.
                let mut ts = 1_483_228_800_000i64;
                while ts < 1_546_300_800_000 {
                    let (start, end) = (w.start(ts), w.end(ts));
                    assert!(
                        start <= ts && ts < end,
                        "{name} {width}: {start} {ts} {end}"
                    );
                    assert_eq!(w.start(end), end, "{name} {width}: contiguous at {end}");
                    let len = end - start;
                    assert!(
                        (len - width).abs() <= hour,
                        "{name} {width}: a window of {len} ms"
                    );
                    ts += 17 * 60_000;
                }
            }
        }
        // A Chicago day: 23 hours in March, 25 in November, from local midnight.
        let w = LocalTumbling::new(24 * hour, Zone::parse("America/Chicago").unwrap()).unwrap();
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        let spring = at("2017-03-12T12:00:00Z");
        assert_eq!(w.start(spring), at("2017-03-12T06:00:00Z"));
        assert_eq!(w.end(spring), at("2017-03-13T05:00:00Z"));
        let fall = at("2017-11-05T12:00:00Z");
        assert_eq!(w.end(fall) - w.start(fall), 25 * hour);
        // Sub-hour windows, or hours that do not divide a day, do not fit a zone with daylight
        // saving; any width fits a fixed offset.
        let chicago = Zone::parse("America/Chicago").unwrap();
        for bad in [hour / 2, 5 * hour, 36 * hour] {
            assert!(LocalTumbling::new(bad, chicago.clone())
                .unwrap_err()
                .contains("whole hours"));
        }
        assert!(LocalTumbling::new(hour / 2, Zone::parse("+10:00").unwrap()).is_ok());
    }

    use super::*;

    fn close(a: f64, b: f64, scale: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(scale)
    }

    #[test]
    fn matches_two_pass_oracle_on_long_offset_streams() {
        // Large mean, small spread: the case where naive sum-of-squares loses every digit.
        let mut state = 0x9E3779B97F4A7C15u64;
        let mut values = Vec::new();
        let mut w = WindowStats::default();
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = 1e6 + (state % 10_000) as f64 / 1000.0;
            values.push(x);
            w.update(x);
        }
        let b = batch_stats(&values);
        assert_eq!(w.count, b.count);
        assert!(close(w.mean, b.mean, 1.0));
        assert!(
            close(w.std(), (b.m2 / b.count as f64).sqrt(), 1e-6),
            "{} vs {}",
            w.std(),
            b.m2
        );
        assert_eq!((w.min, w.max), (b.min, b.max));
    }

    #[test]
    fn pane_queue_total_equals_a_batch_over_the_panes_held() {
        // Random pushes and pops (the queue's length wandering between 0 and ~70), each
        // pane a few values around a large mean; the total against two passes over the
        // values of the panes held, at every step.
        let mut next = crate::testing::xorshift(0xfeed);
        let mut q = PaneQueue::default();
        let mut held: std::collections::VecDeque<Vec<f64>> = Default::default();
        let mut key = 0;
        for step in 0..60_000 {
            if held.is_empty() || next() % 100 < 52 {
                let n = 1 + next() % 5;
                let vals: Vec<f64> = (0..n)
                    .map(|_| 1e6 + (next() % 10_000) as f64 / 7.0)
                    .collect();
                key += 1 + (next() % 3) as i64;
                q.push(key, batch_stats(&vals));
                held.push_back(vals);
            } else {
                q.pop();
                held.pop_front();
            }
            assert_eq!(q.len(), held.len());
            if held.is_empty() {
                assert!(q.is_empty() && q.oldest().is_none() && q.total().count == 0);
                continue;
            }
            let all: Vec<f64> = held.iter().flatten().copied().collect();
            let (got, want) = (q.total(), batch_stats(&all));
            assert_eq!(
                (got.count, got.min, got.max),
                (want.count, want.min, want.max)
            );
            assert!(
                (got.mean - want.mean).abs() <= 1e-9 * want.mean.abs(),
                "{step}"
            );
            assert!(
                (got.m2 - want.m2).abs() <= 1e-9 * want.m2.abs().max(1.0),
                "{step}: {} vs {}",
                got.m2,
                want.m2
            );
        }
    }

    #[test]
    fn merge_equals_single_pass() {
        let xs: Vec<f64> = (0..1000)
            .map(|i| ((i * 37) % 101) as f64 * 0.5 - 7.0)
            .collect();
        let mut whole = WindowStats::default();
        xs.iter().for_each(|&x| whole.update(x));
        let (mut a, mut b) = (WindowStats::default(), WindowStats::default());
        xs[..333].iter().for_each(|&x| a.update(x));
        xs[333..].iter().for_each(|&x| b.update(x));
        a.merge(&b);
        assert_eq!(a.count, whole.count);
        assert!(close(a.mean, whole.mean, 1.0) && close(a.std(), whole.std(), 1.0));
    }

    #[test]
    fn windows_floor_negative_times() {
        let t = Tumbling { width_ms: 10_000 };
        assert_eq!(t.start(12_345), 10_000);
        assert_eq!(t.end(12_345), 20_000);
        assert_eq!(t.start(-1), -10_000);
        assert_eq!(t.start(0), 0);
    }
}
