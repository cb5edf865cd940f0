//! The simulated cluster's state: prefill instances (FIFO queue + local KV
//! cache), decode instances (continuous batching under a memory limit), and
//! the [`ClusterView`] policies read.
//!
//! Invariants: a decode batch's reserved tokens never exceed its capacity
//! (requests that do not fit wait, FIFO); `inbound` counts exactly the
//! requests assigned to a decode instance that have not joined its batch.

use super::ChunkedPrefill;
use crate::cache::BlockCache;
use crate::cost::CostModel;
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

    /// Inbound requests.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }
}

/// Effective start of a running request's predicted stay: one that outlived
/// the uniform decode time is still there, so it is given half a stay more
/// (its expected residual life) instead of being counted as gone.
fn running_start(joined: f64, now: f64, hold_s: f64) -> f64 {
    joined.max(now - hold_s / 2.0)
}

/// Tokens held at time `t` under the uniform-stay model.
fn level_at(
    running: &HashMap<usize, (f64, u64)>,
    waiting: u64,
    arrivals: &Arrivals,
    now: f64,
    t: f64,
    hold_s: f64,
) -> i64 {
    let live = |start: f64| start <= t && t < start + hold_s;
    let mut sum = 0i64;
    for &(joined, need) in running.values() {
        if live(running_start(joined, now, hold_s)) {
            sum += need as i64;
        }
    }
    if live(now) {
        sum += waiting as i64;
    }
    for (a, need) in arrivals.iter() {
        if live(a) {
            sum += need as i64;
        }
    }
    sum
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
        }
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
        // Sweep (time, ±tokens) over every request's predicted stay.
        let mut ev: Vec<(f64, i64)> =
            Vec::with_capacity(2 * (d.batch_joined.len() + d.arrivals.len()) + 2);
        let mut push = |start: f64, tokens: u64| {
            ev.push((start, tokens as i64));
            ev.push((start + hold_s, -(tokens as i64)));
        };
        for &(joined, need) in d.batch_joined.values() {
            push(running_start(joined, self.now, hold_s), need);
        }
        push(self.now, d.waiting_tokens);
        for (t, need) in d.arrivals.iter() {
            push(t, need);
        }
        // Ends before starts at equal times.
        ev.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let (mut cur, mut peak) = (0i64, 0i64);
        for (t, delta) in ev {
            if t > to {
                break;
            }
            cur += delta;
            if t >= from {
                peak = peak.max(cur);
            }
        }
        // The level at `from` itself counts even if no event falls in range.
        let at_from = peak.max(level_at(
            &d.batch_joined,
            d.waiting_tokens,
            &d.arrivals,
            self.now,
            from,
            hold_s,
        ));
        at_from.max(0) as u64
    }
    fn predict_prefill_s(&self, instance: usize, new_tokens: u64, cached_tokens: u64) -> f64 {
        let full = self.cost.prefill_s(new_tokens, cached_tokens);
        let pipelined = self.chunked.and_then(|c| {
            let k = c.group(instance, self.prefill.len())?.len();
            let compute = self.cost.prefill_compute_s(new_tokens, cached_tokens);
            let setup = full - compute;
            Some(setup + c.pipelined_s(compute, new_tokens, k)?)
        });
        pipelined.unwrap_or(full)
    }
}
