//! Trace statistics in one streaming pass: request count, duration, arrival
//! rate, arrivals over time, input / output length distributions, and the
//! prefix-cache hit ratios of [`super::hitrate`].
//!
//! Memory is bounded by the number of *distinct* values, not of requests:
//! lengths are kept as exact value → count maps (prompt lengths are at most
//! ~128k distinct values), arrivals as bucket → count, and only the unbounded
//! hit-ratio cache grows with distinct blocks. Percentiles are therefore
//! exact, using the nearest-rank definition: the p-th percentile is the
//! smallest value `v` with at least `ceil(p · n)` values `≤ v`.

use super::hitrate::{HitRatioReport, HitRatioSweep};
use super::{TraceError, TraceRecord};
use crate::cache::PolicyKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What to compute besides the basic counts.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsConfig {
    /// Cache capacities (tokens) to replay for the hit ratio; empty for none.
    pub capacities_tokens: Vec<u64>,
    /// Eviction policies to replay at every capacity.
    pub policies: Vec<PolicyKind>,
    /// Width of the arrivals-over-time buckets, in milliseconds (≥ 1).
    pub arrival_bucket_ms: u64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            capacities_tokens: vec![3_000_000, 10_000_000, 50_000_000],
            policies: PolicyKind::ALL.to_vec(),
            arrival_bucket_ms: 60_000,
        }
    }
}

/// Exact value → count distribution of a length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LengthCounts {
    counts: BTreeMap<u32, u64>,
    n: u64,
    sum: u128,
}

impl LengthCounts {
    /// Adds one value.
    pub fn push(&mut self, v: u32) {
        *self.counts.entry(v).or_default() += 1;
        self.n += 1;
        self.sum += v as u128;
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Nearest-rank percentile (`p` in `[0, 100]`); `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u32> {
        if self.n == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * self.n as f64)
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0;
        for (&v, &c) in &self.counts {
            seen += c;
            if seen >= rank {
                return Some(v);
            }
        }
        self.counts.keys().next_back().copied()
    }

    /// `(value, count)` pairs in increasing value order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.counts.iter().map(|(&v, &c)| (v, c))
    }

    /// Summary numbers.
    pub fn summary(&self) -> LengthSummary {
        let p = |q| self.percentile(q).unwrap_or(0);
        LengthSummary {
            count: self.n,
            total: self.sum.min(u64::MAX as u128) as u64,
            mean: if self.n == 0 {
                0.0
            } else {
                self.sum as f64 / self.n as f64
            },
            min: self.counts.keys().next().copied().unwrap_or(0),
            p50: p(50.0),
            p90: p(90.0),
            p99: p(99.0),
            max: self.counts.keys().next_back().copied().unwrap_or(0),
        }
    }
}

/// Summary of a length distribution (tokens).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LengthSummary {
    /// Values counted.
    pub count: u64,
    /// Sum of all values.
    pub total: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: u32,
    /// Median (nearest rank).
    pub p50: u32,
    /// 90th percentile (nearest rank).
    pub p90: u32,
    /// 99th percentile (nearest rank).
    pub p99: u32,
    /// Largest value.
    pub max: u32,
}

/// Statistics of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStats {
    /// Requests (records).
    pub requests: u64,
    /// Smallest timestamp (ms).
    pub first_timestamp_ms: u64,
    /// Largest timestamp (ms).
    pub last_timestamp_ms: u64,
    /// `(last - first) / 1000`.
    pub duration_s: f64,
    /// `requests / duration_s` (0 when the duration is 0).
    pub arrival_rate_rps: f64,
    /// Records whose timestamp is smaller than the previous record's.
    pub out_of_order: u64,
    /// Prompt lengths.
    pub input_length: LengthSummary,
    /// Output lengths.
    pub output_length: LengthSummary,
    /// Mean prefix blocks per request.
    pub mean_blocks: f64,
    /// Prefix-cache hit ratios (unbounded and bounded caches).
    pub hit: HitRatioReport,
    /// Width of the arrival buckets (ms).
    pub arrival_bucket_ms: u64,
    /// `(bucket start ms, requests)` for every non-empty bucket, in order.
    pub arrivals: Vec<(u64, u64)>,
    /// Full input length distribution (for plots; not serialised).
    #[serde(skip)]
    pub input_counts: LengthCounts,
    /// Full output length distribution (for plots; not serialised).
    #[serde(skip)]
    pub output_counts: LengthCounts,
}

/// Accumulates [`TraceStats`] one record at a time.
#[derive(Debug)]
pub struct StatsBuilder {
    bucket_ms: u64,
    requests: u64,
    first: Option<u64>,
    last: u64,
    prev: Option<u64>,
    out_of_order: u64,
    blocks: u64,
    input: LengthCounts,
    output: LengthCounts,
    arrivals: BTreeMap<u64, u64>,
    sweep: HitRatioSweep,
}

impl StatsBuilder {
    /// A builder for `cfg`.
    pub fn new(cfg: &StatsConfig) -> Self {
        StatsBuilder {
            bucket_ms: cfg.arrival_bucket_ms.max(1),
            requests: 0,
            first: None,
            last: 0,
            prev: None,
            out_of_order: 0,
            blocks: 0,
            input: LengthCounts::default(),
            output: LengthCounts::default(),
            arrivals: BTreeMap::new(),
            sweep: HitRatioSweep::new(&cfg.policies, &cfg.capacities_tokens),
        }
    }

    /// Adds one record.
    pub fn push(&mut self, r: &TraceRecord) {
        self.requests += 1;
        let t = r.timestamp;
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        self.last = self.last.max(t);
        if self.prev.is_some_and(|p| t < p) {
            self.out_of_order += 1;
        }
        self.prev = Some(t);
        self.blocks += r.hash_ids.len() as u64;
        self.input.push(r.input_length);
        self.output.push(r.output_length);
        *self
            .arrivals
            .entry(t / self.bucket_ms * self.bucket_ms)
            .or_default() += 1;
        self.sweep.push(r);
    }

    /// The statistics of the records pushed so far.
    pub fn finish(mut self) -> TraceStats {
        let first = self.first.unwrap_or(0);
        let duration_s = (self.last.saturating_sub(first)) as f64 / 1000.0;
        TraceStats {
            requests: self.requests,
            first_timestamp_ms: first,
            last_timestamp_ms: self.last,
            duration_s,
            arrival_rate_rps: if duration_s > 0.0 {
                self.requests as f64 / duration_s
            } else {
                0.0
            },
            out_of_order: self.out_of_order,
            input_length: self.input.summary(),
            output_length: self.output.summary(),
            mean_blocks: if self.requests == 0 {
                0.0
            } else {
                self.blocks as f64 / self.requests as f64
            },
            hit: self.sweep.report(),
            arrival_bucket_ms: self.bucket_ms,
            arrivals: self.arrivals.into_iter().collect(),
            input_counts: self.input,
            output_counts: self.output,
        }
    }
}

/// Computes statistics over a stream of records, stopping at the first error.
pub fn compute_stats<I>(records: I, cfg: &StatsConfig) -> Result<TraceStats, TraceError>
where
    I: IntoIterator<Item = Result<TraceRecord, TraceError>>,
{
    let mut b = StatsBuilder::new(cfg);
    for r in records {
        b.push(&r?);
    }
    Ok(b.finish())
}
