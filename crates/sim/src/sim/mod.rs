//! A discrete-event simulator of a disaggregated Mooncake cluster, driven by
//! a request trace.
//!
//! Owns the request life cycle: arrival → policy ([`crate::policy`]) →
//! admission → prefill (FIFO per instance, local KV cache reuse, optional
//! fetch of a longer prefix from a peer, optional chunked pipeline across a
//! group of instances) → layer-wise KV transfer to the decode instance →
//! continuous batching under a memory limit → done. Times come from
//! [`crate::cost::CostModel`].
//!
//! Invariants (property-tested): every request read ends exactly once,
//! completed or rejected; a decode batch never reserves more than its
//! memory; cache sizes never exceed their capacity (the cache's own
//! invariant). Memory is bounded while streaming: only in-flight requests are
//! held, metrics are fixed-size histograms and a capped load series.
//!
//! Simplifications (documented in the crate README): prefix hits are decided
//! at scheduling time; a prefill instance runs one request (or pipeline
//! stage) at a time; decode reserves prompt + full output on joining, so
//! nothing is preempted.
//!
//! Layout: `config` holds the settings; `events` the queue and main
//! loop; `prefill` arrival, routing and prefill; `decode` the decode
//! instances' waiting queues and batches; `accounting` the slots and
//! outcomes; `cluster` the state policies see; `nic` the per-node NIC
//! queues; [`metrics`] and `report`
//! what a run measures and returns. This file holds the simulator's state.

mod accounting;
mod cluster;
mod config;
mod decode;
mod events;
pub mod metrics;
mod nic;
mod prefill;
mod report;
pub mod sweep;

pub use config::{ChunkedPrefill, SimConfig};
pub use report::{Outcome, OutcomeKind, SimReport, SimSummary};

use crate::cache::new_cache;
use crate::cost::{CostConfigError, CostModel};
use crate::policy::{BadPlacement, Policy, RejectReason};
use crate::trace::TraceRecord;
use cluster::{ClusterState, DecodeInstance, PrefillInstance};
use events::Event;
use metrics::{Histogram, LoadSeries, TbtTracker};
use std::collections::{BTreeMap, BinaryHeap};

/// Simulation errors.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A configuration value is invalid.
    #[error("invalid simulation config: {0}")]
    Config(String),
    /// The cost model's configuration is invalid.
    #[error(transparent)]
    Cost(#[from] CostConfigError),
    /// The trace could not be read.
    #[error("trace error: {0}")]
    Trace(String),
    /// The policy returned an instance that does not exist (see
    /// [`crate::policy::decide`]: the router refuses the same request).
    #[error("request {id}: {bad}")]
    BadPlacement {
        /// Request id.
        id: u64,
        /// What the policy returned.
        #[source]
        bad: BadPlacement,
    },
}

/// Hooks into a run: outcomes and progress.
pub trait Observer {
    /// Called once per request when it completes or is rejected.
    fn on_outcome(&mut self, _outcome: &Outcome) {}
    /// Called every 256 requests read, with the count so far.
    fn on_progress(&mut self, _requests_read: u64) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;
impl Observer for NoObserver {}

/// A request in flight.
#[derive(Debug)]
struct Req {
    id: u64,
    arrival: f64,
    input: u32,
    output: u32,
    blocks: Vec<u64>,
    prefill: usize,
    decode: usize,
    need: u64,
    uncached: u64,
    kv_arrive: f64,
    first_token: f64,
    last_token: f64,
    generated: u32,
    context: u64,
    joined: f64,
    tbt: TbtTracker,
}

/// Running totals.
#[derive(Debug, Default)]
struct Totals {
    requests: u64,
    completed: u64,
    rejected: BTreeMap<RejectReason, u64>,
    effective: u64,
    input_tokens: u64,
    cached_tokens: u64,
    fetched_blocks: u64,
    prefill_compute_s: f64,
    first_arrival: Option<f64>,
    last_arrival: f64,
    last_done: f64,
    ttft: Histogram,
    tbt: Histogram,
    mean_decode_s: Vec<f64>,
}

/// The simulator: one run of one policy over one trace.
pub struct Simulator {
    cfg: SimConfig,
    policy: Box<dyn Policy>,
    state: ClusterState,
    events: BinaryHeap<Event>,
    seq: u64,
    slots: Vec<Option<Req>>,
    free: Vec<usize>,
    in_flight: usize,
    totals: Totals,
    load: LoadSeries,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("policy", &self.policy.name())
            .field("now", &self.state.now)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl Simulator {
    /// A cluster per `cfg`, scheduled by `policy`.
    pub fn new(cfg: SimConfig, mut policy: Box<dyn Policy>) -> Result<Self, SimError> {
        // Admission (`cfg.admission`) is the one place requests are
        // rejected, the same rule for every policy.
        policy.set_slo_rejection(false);
        if cfg.prefill == 0 || cfg.decode == 0 {
            return Err(SimError::Config(
                "need at least one prefill and one decode instance".into(),
            ));
        }
        if !(cfg.speedup.is_finite() && cfg.speedup > 0.0) {
            return Err(SimError::Config(format!(
                "speedup must be > 0, got {}",
                cfg.speedup
            )));
        }
        if cfg.block_tokens == 0 {
            return Err(SimError::Config("block_tokens must be > 0".into()));
        }
        if !(cfg.sample_interval_s.is_finite() && cfg.sample_interval_s > 0.0) {
            return Err(SimError::Config("sample_interval_s must be > 0".into()));
        }
        if let Some(c) = &cfg.chunked_prefill {
            if c.group_size == 0 || c.chunk_tokens == 0 {
                return Err(SimError::Config(
                    "chunked prefill needs group_size and chunk_tokens > 0".into(),
                ));
            }
        }
        let cost = CostModel::new(cfg.cost.clone())?;
        let decode_cap = cfg
            .decode_capacity_tokens
            .unwrap_or_else(|| cost.kv_capacity_tokens());
        let cache_blocks = (cfg.cache_capacity_tokens / cfg.block_tokens as u64) as usize;
        let prefill = (0..cfg.prefill)
            .map(|_| PrefillInstance {
                cache: new_cache(cfg.cache_policy, cache_blocks),
                busy_until: 0.0,
                load: Default::default(),
                busy_s: 0.0,
                nic: Default::default(),
            })
            .collect();
        let decode = (0..cfg.decode)
            .map(|_| {
                let mut d = DecodeInstance::default();
                d.load.capacity_tokens = decode_cap;
                d
            })
            .collect();
        let mut state = ClusterState::new(cost, cfg.slo, cfg.block_tokens, prefill, decode);
        state.chunked = cfg.chunked_prefill;
        state.nic_queues = cfg.nic_queues;
        let load = LoadSeries {
            interval_s: cfg.sample_interval_s,
            ..LoadSeries::default()
        };
        Ok(Self {
            totals: Totals {
                mean_decode_s: vec![0.0; cfg.decode],
                ..Totals::default()
            },
            cfg,
            policy,
            state,
            events: BinaryHeap::new(),
            seq: 0,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            load,
        })
    }
}

/// Runs `policy` over `trace` with `cfg`: the one-call entry point.
pub fn simulate<I, E>(
    cfg: SimConfig,
    policy: Box<dyn Policy>,
    trace: I,
    obs: &mut dyn Observer,
) -> Result<SimReport, SimError>
where
    I: IntoIterator<Item = Result<TraceRecord, E>>,
    E: std::fmt::Display,
{
    Simulator::new(cfg, policy)?.run(trace, obs)
}

#[cfg(test)]
mod tests;
