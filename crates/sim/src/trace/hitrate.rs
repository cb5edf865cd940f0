//! Prefix-cache hit ratio of a trace, replayed in request order: with an
//! unbounded cache (the "ideal" or theoretical maximum) and with bounded
//! caches of several capacities under each eviction policy. This is the
//! experiment of the paper's Figure 9.
//!
//! Model (request order only, as the paper's Figure 9): requests arrive one
//! after another; each one reuses the leading run of its `hash_ids` that is
//! resident, then its whole prefix is inserted (prefill writes every block
//! back). No timing, no instance placement: one cache of the given capacity.
//! A request's *hit* is that leading run; ratios are hit blocks / requested
//! blocks (`hit_ratio`) and hit tokens / prompt tokens (`token_hit_ratio`,
//! counting the partial last block at its real length).
//!
//! Memory: the unbounded cache keeps one hash per distinct block (the only
//! part that grows with the trace); bounded caches hold at most their
//! capacity; requests are buffered in chunks of [`SWEEP_CHUNK`].
//!
//! Speed: each bounded cache replays a whole chunk before the next cache
//! runs (interleaving dozens of multi-megabyte caches per request thrashes
//! the CPU caches), and the caches are spread over the available cores.

use super::{TraceError, TraceRecord, TRACE_BLOCK_TOKENS};
use crate::cache::{new_cache, BlockCache, PolicyKind};
use crate::plot::{LineChart, Scale};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The capacity grid used for Figure 9 (tokens): from well under the paper's
/// 3M-token local cache to beyond the ~50M tokens it calls "nearly maximum".
pub const FIGURE9_CAPACITIES_TOKENS: [u64; 10] = [
    1_000_000,
    2_000_000,
    3_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    30_000_000,
    50_000_000,
    70_000_000,
    100_000_000,
];

/// Blocks that fit in `tokens` tokens (whole blocks only).
pub fn tokens_to_blocks(tokens: u64) -> usize {
    (tokens / TRACE_BLOCK_TOKENS as u64).min(usize::MAX as u64) as usize
}

/// Parses a token count such as `3M`, `1.5M`, `500k`, `2G` or `65536`
/// (suffixes k/M/G are powers of 1000, case-insensitive).
pub fn parse_token_count(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid token count `{s}` (expected e.g. 3M, 500k, 65536)"))?;
    if !v.is_finite() || v < 0.0 || v * mult > u64::MAX as f64 {
        return Err(format!("token count `{s}` out of range"));
    }
    Ok((v * mult).round() as u64)
}

/// Parses a comma-separated list of token counts (`3M,10M,50M`).
pub fn parse_token_counts(s: &str) -> Result<Vec<u64>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(parse_token_count)
        .collect()
}

/// One (policy, capacity) result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HitRatioPoint {
    /// Eviction policy.
    pub policy: PolicyKind,
    /// Capacity in tokens as requested.
    pub capacity_tokens: u64,
    /// Capacity in whole blocks.
    pub capacity_blocks: usize,
    /// Hit blocks / requested blocks.
    pub hit_ratio: f64,
    /// Hit tokens / prompt tokens.
    pub token_hit_ratio: f64,
    /// `hit_ratio` / the unbounded cache's hit ratio.
    pub fraction_of_ideal: f64,
}

/// Hit ratios of one replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HitRatioReport {
    /// Requests replayed.
    pub requests: u64,
    /// Blocks requested in total.
    pub total_blocks: u64,
    /// Distinct blocks (the unbounded cache's final size).
    pub unique_blocks: u64,
    /// Hit ratio of an unbounded cache (theoretical maximum), in blocks.
    pub ideal_hit_ratio: f64,
    /// The same, in tokens.
    pub ideal_token_hit_ratio: f64,
    /// Bounded caches, ordered by policy then capacity.
    pub points: Vec<HitRatioPoint>,
}

impl HitRatioReport {
    /// The points of one policy, by increasing capacity.
    pub fn curve(&self, policy: PolicyKind) -> Vec<&HitRatioPoint> {
        self.points.iter().filter(|p| p.policy == policy).collect()
    }

    /// The point of a policy at a capacity (tokens), if measured.
    pub fn at(&self, policy: PolicyKind, capacity_tokens: u64) -> Option<&HitRatioPoint> {
        self.points
            .iter()
            .find(|p| p.policy == policy && p.capacity_tokens == capacity_tokens)
    }

    /// Hit ratio vs capacity, one series per policy plus the unbounded
    /// maximum, log-scaled capacity axis.
    pub fn chart(&self, title: &str) -> LineChart {
        let mut chart = LineChart::new(title)
            .x_label("cache capacity (tokens)")
            .y_label("prefix-cache hit ratio (blocks)")
            .x_scale(Scale::Log10)
            .markers(true)
            .legend_left(true);
        let mut policies: Vec<PolicyKind> = Vec::new();
        for p in &self.points {
            if !policies.contains(&p.policy) {
                policies.push(p.policy);
            }
        }
        for policy in &policies {
            let pts = self
                .curve(*policy)
                .iter()
                .map(|p| (p.capacity_tokens as f64, p.hit_ratio))
                .collect();
            chart = chart.series(policy.paper_name(), pts);
        }
        let caps = self.points.iter().map(|p| p.capacity_tokens as f64);
        let (lo, hi) = caps.fold((f64::INFINITY, 0.0f64), |(a, b), c| (a.min(c), b.max(c)));
        if lo.is_finite() {
            chart = chart.series(
                "unbounded (max)",
                vec![(lo, self.ideal_hit_ratio), (hi, self.ideal_hit_ratio)],
            );
        }
        let top = (self.ideal_hit_ratio * 1.2).clamp(0.05, 1.0);
        chart.y_range(0.0, top)
    }
}

struct Bounded {
    policy: PolicyKind,
    capacity_tokens: u64,
    cache: Box<dyn BlockCache>,
    hit_tokens: u64,
}

/// Requests buffered before the bounded caches replay them.
pub const SWEEP_CHUNK: usize = 1024;

/// Replays requests through an unbounded cache and a set of bounded ones.
pub struct HitRatioSweep {
    chunk: Vec<(Vec<u64>, u32)>,
    threads: usize,
    seen: HashSet<u64>,
    requests: u64,
    total_blocks: u64,
    total_tokens: u64,
    ideal_hit_blocks: u64,
    ideal_hit_tokens: u64,
    bounded: Vec<Bounded>,
}

impl std::fmt::Debug for HitRatioSweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HitRatioSweep")
            .field("requests", &self.requests)
            .field("caches", &self.bounded.len())
            .finish()
    }
}

impl HitRatioSweep {
    /// A sweep over every `policies × capacities_tokens` pair.
    pub fn new(policies: &[PolicyKind], capacities_tokens: &[u64]) -> Self {
        let mut caps = capacities_tokens.to_vec();
        caps.sort_unstable();
        caps.dedup();
        let bounded = policies
            .iter()
            .flat_map(|&policy| {
                caps.iter().map(move |&capacity_tokens| Bounded {
                    policy,
                    capacity_tokens,
                    cache: new_cache(policy, tokens_to_blocks(capacity_tokens)),
                    hit_tokens: 0,
                })
            })
            .collect();
        HitRatioSweep {
            chunk: Vec::with_capacity(SWEEP_CHUNK),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seen: HashSet::new(),
            requests: 0,
            total_blocks: 0,
            total_tokens: 0,
            ideal_hit_blocks: 0,
            ideal_hit_tokens: 0,
            bounded,
        }
    }

    /// Replays one request.
    pub fn push(&mut self, rec: &TraceRecord) {
        let ids = &rec.hash_ids;
        self.requests += 1;
        self.total_blocks += ids.len() as u64;
        self.total_tokens += rec.input_length as u64;
        let hit = ids.iter().take_while(|h| self.seen.contains(h)).count();
        self.ideal_hit_blocks += hit as u64;
        self.ideal_hit_tokens += rec.prefix_tokens(hit);
        self.seen.extend(ids.iter().skip(hit));
        if !self.bounded.is_empty() {
            self.chunk.push((ids.clone(), rec.input_length));
            if self.chunk.len() >= SWEEP_CHUNK {
                self.flush();
            }
        }
    }

    /// Replays the buffered requests through every bounded cache.
    fn flush(&mut self) {
        let chunk = std::mem::take(&mut self.chunk);
        let replay = |caches: &mut [Bounded]| {
            for b in caches {
                for (ids, input_length) in &chunk {
                    let hit = b.cache.access(ids);
                    b.hit_tokens +=
                        (hit as u64 * TRACE_BLOCK_TOKENS as u64).min(*input_length as u64);
                }
            }
        };
        let per = self.bounded.len().div_ceil(self.threads.max(1)).max(1);
        if self.threads <= 1 || self.bounded.len() <= 1 {
            replay(&mut self.bounded);
        } else {
            std::thread::scope(|s| {
                for part in self.bounded.chunks_mut(per) {
                    s.spawn(|| replay(part));
                }
            });
        }
        self.chunk = chunk;
        self.chunk.clear();
    }

    /// The hit ratios so far.
    pub fn report(&mut self) -> HitRatioReport {
        self.flush();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let ideal = ratio(self.ideal_hit_blocks, self.total_blocks);
        let points = self
            .bounded
            .iter()
            .map(|b| {
                let s = b.cache.stats();
                let hit_ratio = s.hit_ratio();
                HitRatioPoint {
                    policy: b.policy,
                    capacity_tokens: b.capacity_tokens,
                    capacity_blocks: b.cache.capacity_blocks(),
                    hit_ratio,
                    token_hit_ratio: ratio(b.hit_tokens, self.total_tokens),
                    fraction_of_ideal: if ideal > 0.0 { hit_ratio / ideal } else { 0.0 },
                }
            })
            .collect();
        HitRatioReport {
            requests: self.requests,
            total_blocks: self.total_blocks,
            unique_blocks: self.seen.len() as u64,
            ideal_hit_ratio: ideal,
            ideal_token_hit_ratio: ratio(self.ideal_hit_tokens, self.total_tokens),
            points,
        }
    }
}

/// Reproduces the paper's Figure 9 for a trace: hit ratio vs cache capacity
/// ([`FIGURE9_CAPACITIES_TOKENS`]) for LRU, LFU and LengthAware eviction,
/// replaying requests in order, plus the unbounded maximum. Stops at the
/// first malformed record.
///
/// The paper reports that a 3M-token cache reaches under half of the
/// theoretical maximum in most workloads and ~50M tokens nearly all of it;
/// `tests/trace_figure9.rs` checks that shape on the conversation trace and
/// the crate README records the numbers.
pub fn figure9<I>(records: I) -> Result<HitRatioReport, TraceError>
where
    I: IntoIterator<Item = Result<TraceRecord, TraceError>>,
{
    let mut sweep = HitRatioSweep::new(&PolicyKind::ALL, &FIGURE9_CAPACITIES_TOKENS);
    figure9_with(records, &mut sweep)
}

/// Like [`figure9`] with a caller-built sweep (other policies or capacities).
pub fn figure9_with<I>(records: I, sweep: &mut HitRatioSweep) -> Result<HitRatioReport, TraceError>
where
    I: IntoIterator<Item = Result<TraceRecord, TraceError>>,
{
    for r in records {
        sweep.push(&r?);
    }
    Ok(sweep.report())
}
