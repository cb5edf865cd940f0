//! Bounded-memory metrics: log-bucketed histograms for latency quantiles and
//! CDFs, the paper's per-request TBT, and load samples over time.
//!
//! Memory does not grow with the number of requests: histograms have a fixed
//! bucket count, TBT trackers live only while their request decodes, and the
//! load series is bounded by [`LoadSeries::MAX_SAMPLES`] (samples are merged
//! pairwise when it fills).

use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Relative width of a histogram bucket (quantiles are within ±0.5%).
const BUCKET_RATIO: f64 = 1.01;
/// Smallest value distinguished (1 µs); anything below lands in bucket 0.
const MIN_VALUE: f64 = 1e-6;
/// Buckets: 1 µs · 1.01^2600 ≈ 1.7e5 s.
const BUCKETS: usize = 2600;

/// A log-bucketed histogram of non-negative seconds with an exact mean.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    sum: f64,
    max: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            n: 0,
            sum: 0.0,
            max: 0.0,
        }
    }
}

impl Histogram {
    fn bucket(v: f64) -> usize {
        if v <= MIN_VALUE {
            return 0;
        }
        (((v / MIN_VALUE).ln() / BUCKET_RATIO.ln()) as usize + 1).min(BUCKETS - 1)
    }

    fn bucket_value(b: usize) -> f64 {
        if b == 0 {
            return 0.0;
        }
        // Geometric middle of the bucket.
        MIN_VALUE * BUCKET_RATIO.powf(b as f64 - 0.5)
    }

    /// Adds one value (negative values count as 0).
    pub fn record(&mut self, v: f64) {
        let v = if v.is_finite() { v.max(0.0) } else { f64::MAX };
        self.counts[Self::bucket(v)] += 1;
        self.n += 1;
        self.sum += v.min(1e12);
        self.max = self.max.max(v);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Exact mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// The `q`-quantile (`0 ≤ q ≤ 1`), within half a bucket; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::bucket_value(b).min(self.max);
            }
        }
        self.max
    }

    /// The CDF as `(value, share ≤ value)` points, one per non-empty bucket.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let mut seen = 0;
        let mut out = Vec::new();
        for (b, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                seen += c;
                out.push((
                    Self::bucket_value(b).min(self.max),
                    seen as f64 / self.n as f64,
                ));
            }
        }
        out
    }
}

/// Tracks a request's inter-token intervals and yields the paper's TBT: the
/// mean of its longest 10% (at least one) intervals. Holds only those.
#[derive(Debug, Clone)]
pub struct TbtTracker {
    keep: usize,
    longest: BinaryHeap<Reverse<u64>>,
}

impl TbtTracker {
    /// A tracker for a request that will produce `intervals` intervals.
    pub fn new(intervals: u32) -> Self {
        let keep = (intervals as usize).div_ceil(10).max(1);
        Self {
            keep,
            longest: BinaryHeap::with_capacity(keep.min(64)),
        }
    }

    /// Records one interval (seconds).
    pub fn push(&mut self, interval_s: f64) {
        let ns = (interval_s.max(0.0) * 1e9) as u64;
        if self.longest.len() < self.keep {
            self.longest.push(Reverse(ns));
        } else if let Some(Reverse(min)) = self.longest.peek() {
            if ns > *min {
                self.longest.pop();
                self.longest.push(Reverse(ns));
            }
        }
    }

    /// The mean of the longest intervals seen (0 if none).
    pub fn tbt_s(&self) -> f64 {
        if self.longest.is_empty() {
            return 0.0;
        }
        self.longest.iter().map(|r| r.0 as f64).sum::<f64>() / self.longest.len() as f64 / 1e9
    }
}

/// Per-instance load samples over simulated time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadSeries {
    /// Seconds between samples (doubles when the series is compacted).
    pub interval_s: f64,
    /// Sample times.
    pub t_s: Vec<f64>,
    /// Per sample, per prefill instance: predicted queue seconds.
    pub prefill_queue_s: Vec<Vec<f32>>,
    /// Per sample, per decode instance: reserved share of memory (with
    /// waiting requests, so it can exceed 1).
    pub decode_load: Vec<Vec<f32>>,
}

impl LoadSeries {
    /// Upper bound on stored samples.
    pub const MAX_SAMPLES: usize = 4096;

    /// Appends a sample, halving the resolution when full.
    pub fn push(&mut self, t: f64, prefill: Vec<f32>, decode: Vec<f32>) {
        if self.t_s.len() >= Self::MAX_SAMPLES {
            self.compact();
        }
        self.t_s.push(t);
        self.prefill_queue_s.push(prefill);
        self.decode_load.push(decode);
    }

    fn compact(&mut self) {
        fn keep_even<T: Clone>(v: &mut Vec<T>) {
            *v = v.iter().step_by(2).cloned().collect();
        }
        keep_even(&mut self.t_s);
        keep_even(&mut self.prefill_queue_s);
        keep_even(&mut self.decode_load);
        self.interval_s *= 2.0;
    }

    /// Mean over instances of each decode sample.
    pub fn decode_pool(&self) -> Vec<f64> {
        self.decode_load.iter().map(|s| mean(s)).collect()
    }

    /// Mean over instances of each prefill sample.
    pub fn prefill_pool(&self) -> Vec<f64> {
        self.prefill_queue_s.iter().map(|s| mean(s)).collect()
    }
}

fn mean(s: &[f32]) -> f64 {
    if s.is_empty() {
        0.0
    } else {
        s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64
    }
}

/// Standard deviation of `xs` (0 for fewer than two values).
pub fn std_dev(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64).sqrt()
}

/// Correlation between `a` at sample `i` and `b` at sample `i + lag`
/// (0 when undefined: too few samples or a constant series).
pub fn lagged_correlation(a: &[f64], b: &[f64], lag: usize) -> f64 {
    let n = a.len().min(b.len());
    if n < lag + 2 {
        return 0.0;
    }
    let (x, y) = (&a[..n - lag], &b[lag..n]);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mx, my) = (mean(x), mean(y));
    let cov: f64 = x.iter().zip(y).map(|(p, q)| (p - mx) * (q - my)).sum();
    let var = |v: &[f64], m: f64| v.iter().map(|p| (p - m) * (p - m)).sum::<f64>();
    let denom = (var(x, mx) * var(y, my)).sqrt();
    if denom > 0.0 {
        cov / denom
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagged_correlation_sees_out_of_phase_series() {
        let a: Vec<f64> = (0..200).map(|i| (i as f64 / 5.0).sin()).collect();
        let shifted: Vec<f64> = (0..200).map(|i| -((i as f64 - 3.0) / 5.0).sin()).collect();
        assert!(lagged_correlation(&a, &shifted, 3) < -0.99);
        assert!(lagged_correlation(&a, &a, 0) > 0.99);
        assert_eq!(lagged_correlation(&a, &[1.0; 200], 0), 0.0);
        assert_eq!(lagged_correlation(&a[..2], &a[..2], 1), 0.0);
    }

    #[test]
    fn histogram_quantiles_within_a_percent() {
        let mut h = Histogram::default();
        for i in 1..=1000 {
            h.record(i as f64 / 100.0);
        }
        assert_eq!(h.count(), 1000);
        assert!((h.mean() - 5.005).abs() < 1e-9);
        for (q, want) in [(0.5, 5.0), (0.9, 9.0), (0.99, 9.9)] {
            let got = h.quantile(q);
            assert!((got / want - 1.0).abs() < 0.01, "q{q}: {got} vs {want}");
        }
        let cdf = h.cdf();
        assert_eq!(cdf.last().unwrap().1, 1.0);
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn tbt_is_mean_of_longest_tenth() {
        let mut t = TbtTracker::new(20);
        for i in 0..20 {
            t.push(if i == 3 {
                1.0
            } else if i == 7 {
                0.5
            } else {
                0.05
            });
        }
        // 20 intervals → longest 2: (1.0 + 0.5) / 2.
        assert!((t.tbt_s() - 0.75).abs() < 1e-6);
        let mut one = TbtTracker::new(3);
        one.push(0.2);
        one.push(0.1);
        assert!((one.tbt_s() - 0.2).abs() < 1e-6);
    }

    #[test]
    fn load_series_stays_bounded() {
        let mut s = LoadSeries {
            interval_s: 1.0,
            ..LoadSeries::default()
        };
        for i in 0..10_000 {
            s.push(i as f64, vec![1.0], vec![0.5]);
        }
        assert!(s.t_s.len() <= LoadSeries::MAX_SAMPLES);
        assert!(s.interval_s > 1.0);
        assert_eq!(s.decode_pool()[0], 0.5);
    }
}
