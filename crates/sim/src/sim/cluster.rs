//! The simulated cluster's state: prefill instances (FIFO queue + local KV
//! cache), decode instances (continuous batching under a memory limit), and
//! the [`ClusterView`] policies read.
//!
//! Invariants: a decode batch's reserved tokens never exceed its capacity
//! (requests that do not fit wait, FIFO); `inbound` counts exactly the
//! requests assigned to a decode instance that have not joined its batch.

use super::nic::{finish_both, Nic};
use super::ChunkedPrefill;
use crate::cache::BlockCache;
use crate::cost::CostModel;
use crate::policy::forecast::{peak_tokens, running_stay_start};
use crate::policy::{ClusterView, DecodeLoad, PrefillLoad, Slo};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// One prefill instance.
#[derive(Debug)]
pub struct PrefillInstance {
    /// Its KV cache (GPU + its share of the DRAM pool), in blocks.
    pub cache: Box<dyn BlockCache>,
    /// When the work queued so far finishes (FIFO, durations known at
    /// enqueue: a prefill instance runs one request or chunk at a time).
    pub busy_until: f64,
    /// Load counters published to policies.
    pub load: PrefillLoad,
    /// Seconds spent computing (for utilisation and Figure 10's prefill time).
    pub busy_s: f64,
    /// Its NIC (prefix fetches in and out, KV streams out).
    pub nic: Nic,
}

/// One decode instance.
#[derive(Debug, Default)]
pub struct DecodeInstance {
    /// Slots of the requests in the running batch.
    pub batch: Vec<usize>,
    /// Slots that arrived but wait for memory, FIFO.
    pub waiting: VecDeque<usize>,
    /// Tokens the waiting requests will reserve.
    pub waiting_tokens: u64,
    /// Requests still in prefill or transfer towards this instance, by
    /// predicted arrival.
    pub arrivals: Arrivals,
    /// Join time and reserved tokens of each request in the batch, by slot.
    pub batch_joined: HashMap<usize, (f64, u64)>,
    /// Whether a step is in flight.
    pub stepping: bool,
    /// Load counters published to policies.
    pub load: DecodeLoad,
    /// Integral of the reserved share over time, and the last update time.
    pub load_integral: f64,
    /// Time of the last `load_integral` update.
    pub load_t: f64,
    /// Its NIC (KV streams in).
    pub nic: Nic,
}

impl DecodeInstance {
    /// Reserved share of memory including waiting requests (may exceed 1).
    pub fn occupancy(&self) -> f64 {
        (self.load.reserved_tokens + self.waiting_tokens) as f64
            / self.load.capacity_tokens.max(1) as f64
    }

    /// Accumulates the time-weighted load up to `now`.
    pub fn account(&mut self, now: f64) {
        let share = self.load.reserved_tokens as f64 / self.load.capacity_tokens.max(1) as f64;
        self.load_integral += share * (now - self.load_t).max(0.0);
        self.load_t = now;
    }
}

/// Inbound requests keyed by `(predicted arrival time bits, request id)`.
/// Non-negative `f64` bit patterns order like the numbers.
#[derive(Debug, Default)]
pub struct Arrivals {
    by_time: BTreeMap<(u64, u64), u64>,
    key_of: HashMap<u64, (u64, u64)>,
}

impl Arrivals {
    /// Records request `key.1` arriving at `key.0` needing `tokens`.
    pub fn insert(&mut self, key: (u64, u64), tokens: u64) {
        self.by_time.insert(key, tokens);
        self.key_of.insert(key.1, key);
    }

    /// Forgets request `id` (it arrived or needs no decode).
    pub fn clear_request(&mut self, id: u64) {
        if let Some(k) = self.key_of.remove(&id) {
            self.by_time.remove(&k);
        }
    }

    /// `(predicted arrival, tokens)` of every inbound request.
    pub fn iter(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.by_time.iter().map(|(k, v)| (f64::from_bits(k.0), *v))
    }
}

/// Everything a policy may look at, plus the instances themselves.
#[derive(Debug)]
pub struct ClusterState {
    /// Current simulated time.
    pub now: f64,
    /// The cost model.
    pub cost: CostModel,
    /// SLOs.
    pub slo: Slo,
    /// Tokens per block.
    pub block_tokens: u32,
    /// Prefill instances.
    pub prefill: Vec<PrefillInstance>,
    /// Decode instances.
    pub decode: Vec<DecodeInstance>,
    /// Chunked pipeline prefill, if the cluster runs it.
    pub chunked: Option<ChunkedPrefill>,
    /// Whether transfers queue on the nodes' NICs.
    pub nic_queues: bool,
    /// `prefill[i].load` with `queue_s` refreshed for `now`.
    prefill_loads: Vec<PrefillLoad>,
    /// `decode[j].load`, refreshed before each routing.
    decode_loads: Vec<DecodeLoad>,
}

impl ClusterState {
    /// A cluster of the given instances.
    pub fn new(
        cost: CostModel,
        slo: Slo,
        block_tokens: u32,
        prefill: Vec<PrefillInstance>,
        decode: Vec<DecodeInstance>,
    ) -> Self {
        Self {
            now: 0.0,
            cost,
            slo,
            block_tokens,
            prefill_loads: vec![PrefillLoad::default(); prefill.len()],
            decode_loads: vec![DecodeLoad::default(); decode.len()],
            prefill,
            decode,
            chunked: None,
            nic_queues: true,
        }
    }

    /// End of a transfer of `dur` seconds (at full bandwidth) from prefill
    /// instance `from` to prefill instance `to` starting at `t0`.
    pub fn fetch_end(&self, from: usize, to: usize, t0: f64, dur: f64) -> f64 {
        if !self.nic_queues || from == to {
            return t0 + dur;
        }
        finish_both(
            &self.prefill[from].nic.egress,
            &self.prefill[to].nic.ingress,
            t0,
            dur,
        )
    }

    /// End of a KV stream of `dur` seconds from prefill instance `p` to
    /// decode instance `d` starting at `t0`.
    pub fn stream_end(&self, p: usize, d: usize, t0: f64, dur: f64) -> f64 {
        if !self.nic_queues {
            return t0 + dur;
        }
        finish_both(
            &self.prefill[p].nic.egress,
            &self.decode[d].nic.ingress,
            t0,
            dur,
        )
    }

    /// Refreshes the published loads for the current time.
    pub fn refresh(&mut self) {
        for (dst, p) in self.prefill_loads.iter_mut().zip(&self.prefill) {
            *dst = PrefillLoad {
                queue_s: (p.busy_until - self.now).max(0.0),
                ..p.load
            };
        }
        for (dst, d) in self.decode_loads.iter_mut().zip(&self.decode) {
            *dst = d.load;
        }
    }
}

impl ClusterView for ClusterState {
    fn now_s(&self) -> f64 {
        self.now
    }
    fn cost(&self) -> &CostModel {
        &self.cost
    }
    fn block_tokens(&self) -> u32 {
        self.block_tokens
    }
    fn slo(&self) -> Slo {
        self.slo
    }
    fn prefill(&self) -> &[PrefillLoad] {
        &self.prefill_loads
    }
    fn decode(&self) -> &[DecodeLoad] {
        &self.decode_loads
    }
    fn prefix_blocks(&self, instance: usize, blocks: &[u64]) -> usize {
        self.prefill
            .get(instance)
            .map_or(0, |p| p.cache.lookup_prefix(blocks))
    }
    fn decode_peak_tokens(&self, decode: usize, from: f64, to: f64, hold_s: f64) -> u64 {
        let Some(d) = self.decode.get(decode) else {
            return 0;
        };
        let now = self.now;
        let running = d
            .batch_joined
            .values()
            .map(|&(joined, need)| (running_stay_start(joined, now, hold_s), need));
        let waiting = std::iter::once((now, d.waiting_tokens));
        peak_tokens(
            running.chain(waiting).chain(d.arrivals.iter()),
            from,
            to,
            hold_s,
        )
    }
    fn predict_prefill_s(&self, instance: usize, new_tokens: u64, cached_tokens: u64) -> f64 {
        let compute = self.cost.prefill_compute_s(new_tokens, cached_tokens);
        let busy = self
            .chunked
            .and_then(|c| {
                let k = c.group(instance, self.prefill.len())?.len();
                c.pipelined_s(compute, new_tokens, k)
            })
            .unwrap_or(compute);
        self.cost
            .layerwise_s(self.cost.h2d_load_s(cached_tokens), busy)
    }
    fn fetch_s(&self, from: usize, to: usize, tokens: u64) -> f64 {
        let dur = self.cost.transfer_tokens_s(tokens);
        if from >= self.prefill.len() || to >= self.prefill.len() {
            return dur;
        }
        self.fetch_end(from, to, self.now, dur) - self.now
    }
}
