//! Scheduling policies: where a request prefills, where it decodes, or
//! whether it is rejected.
//!
//! One trait, [`Policy`], used unchanged by the simulator and (later) by a
//! live router. A policy sees the cluster only through a read-only
//! [`ClusterView`] (loads, cache residency, the cost model, the SLOs) and
//! returns a [`Decision`]; the caller carries it out. Policies may keep
//! private state (a round-robin cursor, a seeded RNG, SGLang's approximate
//! tree), but never mutate the cluster.
//!
//! Modules, one policy each: [`random`], [`round_robin`], [`least_loaded`],
//! [`load_only`], [`cache_aware`], [`mooncake`] (the paper's Algorithm 1),
//! [`dynamo`] and [`sglang`] (peers). [`admission`] holds the overload
//! controls (early and prediction-based early rejection) applied after any
//! policy. [`pipeline`] owns [`decide`], the one "policy → placement check →
//! admission" sequence the live router and the simulator both call.

pub mod admission;
pub mod cache_aware;
pub mod dynamo;
pub mod forecast;
pub mod least_loaded;
pub mod load_only;
pub mod mooncake;
pub mod pipeline;
pub mod random;
pub mod round_robin;
pub mod sglang;

pub use pipeline::{decide, BadPlacement, Refusal};

use crate::cost::CostModel;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The service-level objectives a request must meet to count as effective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Time to first token, seconds (paper: 30 s).
    pub ttft_s: f64,
    /// Time between tokens, seconds: the mean of a request's longest 10%
    /// inter-token intervals must not exceed it (paper: 0.1 / 0.2 / 0.3 s).
    pub tbt_s: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Self {
            ttft_s: 30.0,
            tbt_s: 0.1,
        }
    }
}

/// A request as a router sees it on arrival.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Caller-assigned id (trace line order in the simulator).
    pub id: u64,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Tokens to generate (a live router passes its estimate, e.g. `max_tokens`).
    pub output_tokens: u32,
    /// Prefix block hashes of the prompt (chained: a hash names its whole prefix).
    pub blocks: &'a [u64],
}

/// Load of one prefill instance.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PrefillLoad {
    /// Predicted seconds until newly queued work would start (the sum of the
    /// predicted prefill times of everything queued or running).
    pub queue_s: f64,
    /// Requests queued or running.
    pub requests: u32,
    /// Uncached prompt tokens still to compute (queued + running).
    pub prefill_tokens: u64,
    /// Prompt tokens (cached or not) of the queued and running requests.
    pub active_tokens: u64,
}

/// Load of one decode instance.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeLoad {
    /// Requests in the running batch.
    pub batch: u32,
    /// KV tokens the running batch holds now.
    pub context_tokens: u64,
    /// Tokens reserved by the batch (prompt + full output per request).
    pub reserved_tokens: u64,
    /// Requests assigned here that have not joined the batch yet (in
    /// prefill, in transfer or waiting for memory).
    pub inbound: u32,
    /// Tokens those inbound requests will reserve.
    pub inbound_tokens: u64,
    /// Part of `inbound_tokens` that has arrived and waits for memory.
    pub waiting_tokens: u64,
    /// The batch's memory limit in tokens.
    pub capacity_tokens: u64,
    /// Mean seconds a request spends decoding here recently (the uniform
    /// decode time of prediction-based admission); 0 before any finished.
    pub mean_decode_s: f64,
}

impl DecodeLoad {
    /// Reserved share of the memory limit, counting inbound requests.
    pub fn committed_fraction(&self) -> f64 {
        (self.reserved_tokens + self.inbound_tokens) as f64 / self.capacity_tokens.max(1) as f64
    }
}

/// What a policy may read about the cluster.
pub trait ClusterView {
    /// Current time, seconds.
    fn now_s(&self) -> f64;
    /// The engine cost model.
    fn cost(&self) -> &CostModel;
    /// Tokens per prefix block.
    fn block_tokens(&self) -> u32;
    /// The SLOs requests are held to.
    fn slo(&self) -> Slo;
    /// One entry per prefill instance.
    fn prefill(&self) -> &[PrefillLoad];
    /// One entry per decode instance.
    fn decode(&self) -> &[DecodeLoad];
    /// Length of the leading run of `blocks` resident in prefill instance
    /// `instance`'s cache (the global view of which blocks live where).
    fn prefix_blocks(&self, instance: usize, blocks: &[u64]) -> usize;
    /// Predicted seconds for `instance` to prefill `new_tokens` on top of
    /// `cached_tokens` (Conductor's prefill-time predictor). Defaults to the
    /// cost model; a cluster that runs long prompts as a chunked pipeline
    /// overrides it.
    fn predict_prefill_s(&self, instance: usize, new_tokens: u64, cached_tokens: u64) -> f64 {
        let _ = instance;
        self.cost().prefill_s(new_tokens, cached_tokens)
    }
    /// Predicted seconds until `tokens` of prefix KV fetched from prefill
    /// instance `from` have landed on instance `to`, queueing behind the
    /// transfers both NICs already carry. The default, for views without
    /// NIC queues, is the bare transfer time.
    fn fetch_s(&self, from: usize, to: usize, tokens: u64) -> f64 {
        let _ = (from, to);
        self.cost().transfer_tokens_s(tokens)
    }
    /// The most tokens decode instance `decode` is predicted to hold at any
    /// time in `[from, to]` if every request stays `hold_s` seconds after it
    /// joins (the report's uniform decode time): running requests leave at
    /// `joined + hold_s`, waiting ones join now, inbound ones join when their
    /// prefill and transfer are predicted to end. The default, for views
    /// without per-request timing, assumes nobody leaves and everybody
    /// inbound arrives: `reserved + inbound`.
    fn decode_peak_tokens(&self, decode: usize, from: f64, to: f64, hold_s: f64) -> u64 {
        let _ = (from, to, hold_s);
        self.decode()
            .get(decode)
            .map_or(0, |d| d.reserved_tokens + d.inbound_tokens)
    }
}

/// A planned copy of prefix blocks from another prefill instance's cache
/// (the paper's hot-block replication) before prefill starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    /// Instance holding the longer prefix.
    pub from: usize,
    /// Prefix length (blocks) the chosen instance will hold after the fetch.
    pub prefix_blocks: usize,
}

/// Where an admitted request goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Prefill instance.
    pub prefill: usize,
    /// Decode instance.
    pub decode: usize,
    /// Prefix blocks to fetch from a peer first, if any.
    pub fetch: Option<Fetch>,
    /// The policy's TTFT prediction (NaN when it makes none).
    pub predicted_ttft_s: f64,
    /// The policy's TBT prediction (NaN when it makes none).
    pub predicted_tbt_s: f64,
    /// Reuse at most this many leading cached blocks and recompute the
    /// rest (`None`: reuse every cached block). Recomputing lets prefill
    /// compute hide the KV transfer to decode of a long cached prompt.
    pub reuse_limit_blocks: Option<usize>,
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// Predicted TTFT above the SLO.
    TtftSlo,
    /// Predicted TBT above the SLO.
    TbtSlo,
    /// Admission control: decode pool overloaded (early rejection).
    DecodeOverload,
    /// The request can never fit a decode instance's memory.
    TooLarge,
    /// Prefilled, but waited longer than the decode wait limit for decode
    /// memory (a late rejection: its prefill work is wasted).
    DecodeTimeout,
}

impl RejectReason {
    /// The kebab-case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TtftSlo => "ttft-slo",
            RejectReason::TbtSlo => "tbt-slo",
            RejectReason::DecodeOverload => "decode-overload",
            RejectReason::TooLarge => "too-large",
            RejectReason::DecodeTimeout => "decode-timeout",
        }
    }
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Run it here.
    Accept(Placement),
    /// Reject it (the live router answers HTTP 503).
    Reject(RejectReason),
}

/// A scheduling policy.
pub trait Policy: Send {
    /// The policy's CLI name.
    fn name(&self) -> &'static str;
    /// Decides where `req` goes given the cluster's state.
    fn route(&mut self, req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision;
    /// Turns the policy's own SLO rejection on or off (default: on, for
    /// the policies that have one). The simulator turns it off so that the
    /// admission rule ([`admission`]), the same for every policy, is the
    /// only place requests are rejected and placement compares alone.
    fn set_slo_rejection(&mut self, on: bool) {
        let _ = on;
    }
}

/// The policies by CLI name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// [`random::Random`].
    Random,
    /// [`round_robin::RoundRobin`].
    RoundRobin,
    /// [`least_loaded::LeastLoaded`].
    LeastLoaded,
    /// [`load_only::LoadOnly`].
    LoadOnly,
    /// [`cache_aware::CacheAware`].
    CacheAware,
    /// [`cache_aware::CacheAware::paper`]: the paper's literal "local
    /// cache-aware" arm (longest local hit only).
    LocalCacheAware,
    /// [`mooncake::Mooncake`] without fetching remote prefixes (the paper's
    /// "local cache-aware" scheduling of Figure 5).
    MooncakeLocal,
    /// [`mooncake::Mooncake`]: Algorithm 1 with cache load balancing.
    Mooncake,
    /// [`dynamo::Dynamo`].
    Dynamo,
    /// [`sglang::SgLang`].
    Sglang,
}

impl PolicyName {
    /// Every policy, baselines first.
    pub const ALL: [PolicyName; 10] = [
        PolicyName::Random,
        PolicyName::RoundRobin,
        PolicyName::LeastLoaded,
        PolicyName::LoadOnly,
        PolicyName::CacheAware,
        PolicyName::LocalCacheAware,
        PolicyName::MooncakeLocal,
        PolicyName::Mooncake,
        PolicyName::Dynamo,
        PolicyName::Sglang,
    ];

    /// The CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::Random => "random",
            PolicyName::RoundRobin => "round-robin",
            PolicyName::LeastLoaded => "least-loaded",
            PolicyName::LoadOnly => "load-only",
            PolicyName::CacheAware => "cache-aware",
            PolicyName::LocalCacheAware => "local-cache-aware",
            PolicyName::MooncakeLocal => "mooncake-local",
            PolicyName::Mooncake => "mooncake",
            PolicyName::Dynamo => "dynamo",
            PolicyName::Sglang => "sglang",
        }
    }

    /// Builds the policy with its default parameters (`seed` feeds the
    /// randomised ones).
    pub fn build(self, seed: u64) -> Box<dyn Policy> {
        match self {
            PolicyName::Random => Box::new(random::Random::new(seed)),
            PolicyName::RoundRobin => Box::new(round_robin::RoundRobin::default()),
            PolicyName::LeastLoaded => Box::new(least_loaded::LeastLoaded),
            PolicyName::LoadOnly => Box::new(load_only::LoadOnly),
            PolicyName::CacheAware => Box::new(cache_aware::CacheAware::default()),
            PolicyName::LocalCacheAware => Box::new(cache_aware::CacheAware::paper()),
            PolicyName::MooncakeLocal => Box::new(mooncake::Mooncake::local_only()),
            PolicyName::Mooncake => Box::new(mooncake::Mooncake::default()),
            PolicyName::Dynamo => {
                Box::new(dynamo::Dynamo::new(dynamo::DynamoConfig::default(), seed))
            }
            PolicyName::Sglang => Box::new(sglang::SgLang::new(sglang::SgLangConfig::default())),
        }
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy `{0}` (expected one of: random, round-robin, least-loaded, load-only, cache-aware, local-cache-aware, mooncake-local, mooncake, dynamo, sglang)")]
pub struct UnknownPolicyName(pub String);

impl FromStr for PolicyName {
    type Err = UnknownPolicyName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.to_ascii_lowercase().replace('_', "-");
        PolicyName::ALL
            .into_iter()
            .find(|p| p.as_str() == norm)
            .ok_or_else(|| UnknownPolicyName(s.to_string()))
    }
}

/// Index of the minimum of `key` over `0..n` (first on ties); `None` if `n == 0`.
pub(crate) fn argmin_by<F: FnMut(usize) -> f64>(n: usize, mut key: F) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for i in 0..n {
        let k = key(i);
        match best {
            Some((_, b)) if k >= b => {}
            _ => best = Some((i, k)),
        }
    }
    best.map(|(i, _)| i)
}

/// The decode instance with the fewest committed tokens (batch + inbound).
pub(crate) fn least_loaded_decode(view: &dyn ClusterView) -> usize {
    argmin_by(view.decode().len(), |j| {
        let d = &view.decode()[j];
        (d.reserved_tokens + d.inbound_tokens) as f64
    })
    .unwrap_or(0)
}

/// The uncached prompt tokens of `req` given a reused prefix of `blocks`.
pub fn uncached_tokens(req: &RequestInfo<'_>, blocks: usize, block_tokens: u32) -> u64 {
    req.input_tokens as u64 - cached_tokens(req, blocks, block_tokens)
}

/// Cached prompt tokens of `req` given a reused prefix of `blocks` (at most
/// `input - 1`: the last token is always computed to produce the first
/// output token).
pub fn cached_tokens(req: &RequestInfo<'_>, blocks: usize, block_tokens: u32) -> u64 {
    (blocks as u64 * block_tokens as u64).min((req.input_tokens as u64).saturating_sub(1))
}

/// An accept with no predictions.
pub(crate) fn place(prefill: usize, decode: usize) -> Decision {
    Decision::Accept(Placement {
        prefill,
        decode,
        fetch: None,
        predicted_ttft_s: f64::NAN,
        predicted_tbt_s: f64::NAN,
        reuse_limit_blocks: None,
    })
}

#[cfg(test)]
pub(crate) mod testing;
