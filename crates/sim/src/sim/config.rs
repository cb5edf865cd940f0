//! Simulation settings: the cluster shape, SLOs, cache and decode sizing,
//! chunked pipeline prefill, admission and the cost model.
//!
//! Owns only plain, serialisable data and its defaults; validation happens
//! in [`super::Simulator::new`], so a `SimConfig` read from a file is checked
//! once, where the simulator is built.

use crate::cache::PolicyKind;
use crate::cost::CostConfig;
use crate::policy::admission::Admission;
use crate::policy::Slo;
use crate::trace::TRACE_BLOCK_TOKENS;
use serde::{Deserialize, Serialize};

/// Chunked pipeline parallelism for long prefills (paper §"prefill"): the
/// uncached part is split into chunks that flow through a group of
/// instances, each holding a slice of the layers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChunkedPrefill {
    /// Use the pipeline when the uncached part exceeds this many tokens.
    pub threshold_tokens: u64,
    /// Instances per pipeline group (instances `g·k .. g·k+k`).
    pub group_size: usize,
    /// Tokens per chunk.
    pub chunk_tokens: u64,
}

impl ChunkedPrefill {
    /// The pipeline group of instance `p` among `n`, if pipelining applies
    /// to groups of more than one instance.
    pub fn group(&self, p: usize, n: usize) -> Option<std::ops::Range<usize>> {
        let start = p / self.group_size.max(1) * self.group_size.max(1);
        let members = start..(start + self.group_size).min(n);
        (members.len() > 1).then_some(members)
    }

    /// Seconds a `k`-stage pipeline needs for `compute_s` of work on
    /// `uncached` tokens, or `None` below the threshold: `k` stages of `l/k`
    /// layers each, plus `k − 1` chunk slots to fill the pipeline.
    pub fn pipelined_s(&self, compute_s: f64, uncached: u64, k: usize) -> Option<f64> {
        if k < 2 || uncached <= self.threshold_tokens {
            return None;
        }
        let k = k as f64;
        let chunks = uncached.div_ceil(self.chunk_tokens.max(1)) as f64;
        Some(compute_s / k * (1.0 + (k - 1.0) / chunks))
    }
}

impl Default for ChunkedPrefill {
    fn default() -> Self {
        Self {
            threshold_tokens: 16_384,
            group_size: 2,
            chunk_tokens: 4_096,
        }
    }
}

/// Simulation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Prefill instances.
    pub prefill: usize,
    /// Decode instances.
    pub decode: usize,
    /// SLOs.
    pub slo: Slo,
    /// Arrival times are divided by this (2 = twice the load).
    pub speedup: f64,
    /// Tokens per block (the trace's `hash_ids` granularity).
    pub block_tokens: u32,
    /// KV cache per prefill instance (its DRAM share of the pool), tokens.
    pub cache_capacity_tokens: u64,
    /// Eviction policy of those caches.
    pub cache_policy: PolicyKind,
    /// Decode batch memory limit per instance, tokens (default: what the
    /// cost model's GPU memory holds beside the weights).
    pub decode_capacity_tokens: Option<u64>,
    /// Chunked pipeline prefill, if enabled.
    pub chunked_prefill: Option<ChunkedPrefill>,
    /// Admission control after the policy.
    pub admission: Admission,
    /// Replace every request's output length (Figure 10 uses 1).
    pub output_tokens_override: Option<u32>,
    /// Seconds of simulated time between load samples.
    pub sample_interval_s: f64,
    /// A prefilled request that cannot join a decode batch within this many
    /// seconds is rejected there (late rejection, prefill wasted). `None`:
    /// under admission modes that reject late
    /// ([`crate::policy::admission::AdmissionMode::rejects_late`]) the wait
    /// that alone would break its TBT SLO (`k · TBT SLO` for its `k`
    /// longest intervals), otherwise it waits as long as it takes (and its
    /// TBT shows the wait).
    pub decode_wait_limit_s: Option<f64>,
    /// Per-node NIC queues for prefix fetches and KV streams (`false`: every
    /// transfer gets the full bandwidth at once, however many share a NIC).
    #[serde(default = "default_true")]
    pub nic_queues: bool,
    /// Seed for randomised policies.
    pub seed: u64,
    /// Model and hardware.
    pub cost: CostConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            prefill: 12,
            decode: 4,
            slo: Slo::default(),
            speedup: 1.0,
            block_tokens: TRACE_BLOCK_TOKENS,
            cache_capacity_tokens: 3_000_000,
            cache_policy: PolicyKind::Lru,
            decode_capacity_tokens: None,
            chunked_prefill: None,
            admission: Admission::default(),
            output_tokens_override: None,
            sample_interval_s: 1.0,
            decode_wait_limit_s: None,
            nic_queues: true,
            seed: 42,
            cost: CostConfig::default(),
        }
    }
}

fn default_true() -> bool {
    true
}
