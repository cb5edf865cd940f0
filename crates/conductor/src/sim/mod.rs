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

mod cluster;
pub mod metrics;
mod report;
pub mod sweep;

pub use report::{Outcome, OutcomeKind, SimReport, SimSummary};

use crate::cache::{new_cache, PolicyKind};
use crate::cost::{CostConfig, CostConfigError, CostModel};
use crate::policy::admission::Admission;
use crate::policy::{cached_tokens, Decision, Policy, RejectReason, RequestInfo, Slo};
use crate::trace::{TraceRecord, TRACE_BLOCK_TOKENS};
use cluster::{ClusterState, DecodeInstance, PrefillInstance};
use metrics::{Histogram, LoadSeries, TbtTracker};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

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
    /// it waits as long as it takes (and its TBT shows the wait).
    pub decode_wait_limit_s: Option<f64>,
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
            seed: 42,
            cost: CostConfig::default(),
        }
    }
}

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
    /// The policy returned an instance that does not exist.
    #[error(
        "policy `{policy}` placed request {id} on a non-existent instance ({prefill}, {decode})"
    )]
    BadPlacement {
        /// Policy name.
        policy: String,
        /// Request id.
        id: u64,
        /// Prefill index returned.
        prefill: usize,
        /// Decode index returned.
        decode: usize,
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
    compute_s: f64,
    first_token: f64,
    last_token: f64,
    generated: u32,
    context: u64,
    joined: f64,
    tbt: TbtTracker,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    PrefillDone(usize),
    DecodeArrive(usize),
    DecodeTimeout(usize, u64),
    DecodeStep(usize),
    Sample,
}

#[derive(Debug)]
struct Event {
    t: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    // Min-heap on (t, seq) inside std's max-heap.
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
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
    pub fn new(cfg: SimConfig, policy: Box<dyn Policy>) -> Result<Self, SimError> {
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

    /// Simulates the whole trace, streaming it, and reports.
    pub fn run<I, E>(mut self, trace: I, obs: &mut dyn Observer) -> Result<SimReport, SimError>
    where
        I: IntoIterator<Item = Result<TraceRecord, E>>,
        E: std::fmt::Display,
    {
        let started = std::time::Instant::now();
        let mut trace = trace.into_iter();
        let mut next = self.pull(&mut trace)?;
        if let Some((t, _)) = &next {
            self.push(*t, Ev::Sample);
        }
        let mut read = 0u64;
        loop {
            let t_ev = self.events.peek().map(|e| e.t);
            match (&next, t_ev) {
                (Some((t, _)), Some(te)) if *t <= te => {}
                (Some(_), None) => {}
                (_, Some(_)) => {
                    let e = self.events.pop().expect("peeked");
                    self.state.now = self.state.now.max(e.t);
                    self.handle(e.ev, &next, obs);
                    continue;
                }
                (None, None) => break,
            }
            let (t, rec) = next.take().expect("matched Some");
            self.state.now = self.state.now.max(t);
            read += 1;
            self.arrive(rec, obs)?;
            if read.is_multiple_of(256) {
                obs.on_progress(read);
            }
            next = self.pull(&mut trace)?;
        }
        obs.on_progress(read);
        debug_assert_eq!(self.in_flight, 0);
        Ok(report::build(self, started.elapsed().as_secs_f64()))
    }

    fn pull<I, E>(&mut self, trace: &mut I) -> Result<Option<(f64, TraceRecord)>, SimError>
    where
        I: Iterator<Item = Result<TraceRecord, E>>,
        E: std::fmt::Display,
    {
        match trace.next() {
            None => Ok(None),
            Some(Err(e)) => Err(SimError::Trace(e.to_string())),
            Some(Ok(r)) => Ok(Some((r.timestamp as f64 / 1000.0 / self.cfg.speedup, r))),
        }
    }

    fn push(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.events.push(Event {
            t,
            seq: self.seq,
            ev,
        });
    }

    fn handle(&mut self, ev: Ev, next: &Option<(f64, TraceRecord)>, obs: &mut dyn Observer) {
        match ev {
            Ev::PrefillDone(s) => self.prefill_done(s, obs),
            Ev::DecodeArrive(s) => self.decode_arrive(s),
            Ev::DecodeTimeout(s, id) => self.decode_timeout(s, id, obs),
            Ev::DecodeStep(j) => self.decode_step(j, obs),
            Ev::Sample => {
                self.sample();
                if self.in_flight > 0 || next.is_some() {
                    let t = self.state.now + self.load.interval_s;
                    self.push(t, Ev::Sample);
                }
            }
        }
    }

    fn arrive(&mut self, rec: TraceRecord, obs: &mut dyn Observer) -> Result<(), SimError> {
        let now = self.state.now;
        let id = self.totals.requests;
        self.totals.requests += 1;
        self.totals.first_arrival.get_or_insert(now);
        self.totals.last_arrival = now;
        let input = rec.input_length.max(1);
        let output = self
            .cfg
            .output_tokens_override
            .unwrap_or(rec.output_length)
            .max(1);
        let info = RequestInfo {
            id,
            input_tokens: input,
            output_tokens: output,
            blocks: &rec.hash_ids,
        };
        let need = input as u64 + output as u64;
        let max_cap = self
            .state
            .decode
            .iter()
            .map(|d| d.load.capacity_tokens)
            .max()
            .unwrap_or(0);
        if output > 1 && need > max_cap {
            self.reject(id, now, RejectReason::TooLarge, obs);
            return Ok(());
        }
        self.state.refresh();
        let placement = match self.policy.route(&info, &self.state) {
            Decision::Reject(r) => {
                self.reject(id, now, r, obs);
                return Ok(());
            }
            Decision::Accept(p) => p,
        };
        if placement.prefill >= self.cfg.prefill || placement.decode >= self.cfg.decode {
            return Err(SimError::BadPlacement {
                policy: self.policy.name().into(),
                id,
                prefill: placement.prefill,
                decode: placement.decode,
            });
        }
        if let Err(r) = self.cfg.admission.check(&info, &placement, &self.state) {
            self.reject(id, now, r, obs);
            return Ok(());
        }
        let bt = self.cfg.block_tokens;
        let p = placement.prefill;
        let local = self.state.prefill[p].cache.lookup_prefix(&rec.hash_ids);
        let mut prefix = local;
        if let Some(f) = placement.fetch {
            if let Some(src) = self.state.prefill.get_mut(f.from) {
                // Only what the source really holds can be fetched.
                let avail = src
                    .cache
                    .touch(&rec.hash_ids[..f.prefix_blocks.min(rec.hash_ids.len())]);
                prefix = prefix.max(avail);
            }
        }
        self.state.prefill[p].cache.touch(&rec.hash_ids[..local]);
        let cached = cached_tokens(&info, prefix, bt);
        let local_cached = cached_tokens(&info, local, bt);
        let uncached = input as u64 - cached;
        let cost = &self.state.cost;
        let fetch_s = cost.transfer_tokens_s(cached - local_cached);
        let setup_s = fetch_s + cost.h2d_load_s(cached);
        let compute_s = cost.prefill_compute_s(uncached, cached);
        self.totals.fetched_blocks += (prefix - local) as u64;
        self.totals.input_tokens += input as u64;
        self.totals.cached_tokens += cached;
        let finish = self.schedule_prefill(p, uncached, setup_s, compute_s);
        let inst = &mut self.state.prefill[p];
        inst.load.requests += 1;
        inst.load.prefill_tokens += uncached;
        inst.load.active_tokens += input as u64;
        let cost = &self.state.cost;
        let arrive_at = finish
            + if output > 1 {
                transfer_tail_s(cost, input, compute_s)
            } else {
                0.0
            };
        let d = &mut self.state.decode[placement.decode];
        d.load.inbound += 1;
        d.load.inbound_tokens += need;
        d.arrivals.insert((arrive_at.to_bits(), id), need);
        let slot = self.alloc(Req {
            id,
            arrival: now,
            input,
            output,
            blocks: rec.hash_ids,
            prefill: p,
            decode: placement.decode,
            need,
            uncached,
            compute_s,
            first_token: 0.0,
            last_token: 0.0,
            generated: 0,
            context: 0,
            joined: 0.0,
            tbt: TbtTracker::new(output - 1),
        });
        self.push(finish, Ev::PrefillDone(slot));
        Ok(())
    }

    /// Books prefill time on instance `p` (or its pipeline group) and
    /// returns the finish time.
    fn schedule_prefill(&mut self, p: usize, uncached: u64, setup_s: f64, compute_s: f64) -> f64 {
        let now = self.state.now;
        let n = self.state.prefill.len();
        let group = self.cfg.chunked_prefill.and_then(|c| {
            let members = c.group(p, n)?;
            let busy = c.pipelined_s(compute_s, uncached, members.len())?;
            Some((members, busy))
        });
        let (members, busy) = group.unwrap_or((p..p + 1, compute_s));
        let start = members
            .clone()
            .map(|i| self.state.prefill[i].busy_until)
            .fold(now, f64::max);
        let finish = start + setup_s + busy;
        for i in members {
            let inst = &mut self.state.prefill[i];
            inst.busy_until = finish;
            inst.busy_s += busy;
            self.totals.prefill_compute_s += busy;
        }
        finish
    }

    fn alloc(&mut self, r: Req) -> usize {
        self.in_flight += 1;
        if let Some(s) = self.free.pop() {
            self.slots[s] = Some(r);
            s
        } else {
            self.slots.push(Some(r));
            self.slots.len() - 1
        }
    }

    fn req(&mut self, s: usize) -> &mut Req {
        self.slots[s].as_mut().expect("live slot")
    }

    fn reject(&mut self, id: u64, arrival_s: f64, reason: RejectReason, obs: &mut dyn Observer) {
        self.totals.last_done = self.totals.last_done.max(self.state.now);
        *self.totals.rejected.entry(reason).or_default() += 1;
        obs.on_outcome(&Outcome {
            id,
            arrival_s,
            kind: OutcomeKind::Rejected(reason),
        });
    }

    fn prefill_done(&mut self, s: usize, obs: &mut dyn Observer) {
        let now = self.state.now;
        let r = self.slots[s].as_mut().expect("live slot");
        r.first_token = now;
        r.last_token = now;
        r.generated = 1;
        r.context = r.input as u64 + 1;
        let inst = &mut self.state.prefill[r.prefill];
        inst.load.requests -= 1;
        inst.load.prefill_tokens -= r.uncached;
        inst.load.active_tokens -= r.input as u64;
        inst.cache.insert(&r.blocks);
        r.blocks = Vec::new();
        if r.output <= 1 {
            let d = &mut self.state.decode[r.decode];
            d.arrivals.clear_request(r.id);
            let d = &mut d.load;
            d.inbound -= 1;
            d.inbound_tokens -= r.need;
            self.complete(s, obs);
            return;
        }
        let tail = transfer_tail_s(&self.state.cost, r.input, r.compute_s);
        self.push(now + tail, Ev::DecodeArrive(s));
    }

    fn decode_arrive(&mut self, s: usize) {
        let (j, need, id) = {
            let r = self.req(s);
            (r.decode, r.need, r.id)
        };
        // `id` also guards the timeout below against slot reuse.
        let d = &mut self.state.decode[j];
        d.arrivals.clear_request(id);
        d.waiting.push_back(s);
        d.waiting_tokens += need;
        d.load.waiting_tokens += need;
        self.admit_waiting(j);
        self.maybe_step(j);
        if let Some(limit) = self.cfg.decode_wait_limit_s {
            if self.state.decode[j].waiting.contains(&s) {
                let t = self.state.now + limit;
                self.push(t, Ev::DecodeTimeout(s, id));
            }
        }
    }

    /// Rejects request `id` in slot `s` if it still waits for decode memory
    /// (the slot may have been reused since: the id guards against that).
    fn decode_timeout(&mut self, s: usize, id: u64, obs: &mut dyn Observer) {
        let Some(r) = self.slots[s].as_ref().filter(|r| r.id == id) else {
            return;
        };
        let (j, need, arrival) = (r.decode, r.need, r.arrival);
        let d = &mut self.state.decode[j];
        let Some(pos) = d.waiting.iter().position(|&w| w == s) else {
            return;
        };
        d.account(self.state.now);
        d.waiting.remove(pos);
        d.waiting_tokens -= need;
        d.load.waiting_tokens -= need;
        d.load.inbound -= 1;
        d.load.inbound_tokens -= need;
        self.slots[s] = None;
        self.free.push(s);
        self.in_flight -= 1;
        self.reject(id, arrival, RejectReason::DecodeTimeout, obs);
        // Head-of-line blocking may have ended.
        self.admit_waiting(j);
        self.maybe_step(j);
    }

    fn admit_waiting(&mut self, j: usize) {
        let now = self.state.now;
        let d = &mut self.state.decode[j];
        d.account(now);
        while let Some(&s) = d.waiting.front() {
            let r = self.slots[s].as_mut().expect("live slot");
            if d.load.reserved_tokens + r.need > d.load.capacity_tokens {
                break;
            }
            d.waiting.pop_front();
            d.waiting_tokens -= r.need;
            d.load.waiting_tokens -= r.need;
            d.batch.push(s);
            d.batch_joined.insert(s, (now, r.need));
            d.load.reserved_tokens += r.need;
            d.load.context_tokens += r.context;
            d.load.inbound -= 1;
            d.load.inbound_tokens -= r.need;
            d.load.batch += 1;
            r.joined = now;
        }
    }

    fn maybe_step(&mut self, j: usize) {
        let d = &self.state.decode[j];
        if d.stepping || d.batch.is_empty() {
            return;
        }
        let dt = self
            .state
            .cost
            .decode_step_s(d.batch.len() as u64, d.load.context_tokens);
        self.state.decode[j].stepping = true;
        let t = self.state.now + dt;
        self.push(t, Ev::DecodeStep(j));
    }

    fn decode_step(&mut self, j: usize, obs: &mut dyn Observer) {
        let now = self.state.now;
        self.state.decode[j].stepping = false;
        self.state.decode[j].account(now);
        let batch = std::mem::take(&mut self.state.decode[j].batch);
        let mut keep = Vec::with_capacity(batch.len());
        for s in batch {
            let r = self.slots[s].as_mut().expect("live slot");
            r.tbt.push(now - r.last_token);
            r.last_token = now;
            r.generated += 1;
            r.context += 1;
            let d = &mut self.state.decode[j];
            d.load.context_tokens += 1;
            if r.generated >= r.output {
                d.batch_joined.remove(&s);
                d.load.reserved_tokens -= r.need;
                d.load.context_tokens -= r.context;
                d.load.batch -= 1;
                let took = now - r.joined;
                let m = &mut self.totals.mean_decode_s[j];
                // Exponential average: recent behaviour matters for prediction.
                *m = if *m == 0.0 {
                    took
                } else {
                    0.9 * *m + 0.1 * took
                };
                d.load.mean_decode_s = *m;
                self.complete(s, obs);
            } else {
                keep.push(s);
            }
        }
        self.state.decode[j].batch = keep;
        self.admit_waiting(j);
        self.maybe_step(j);
    }

    fn complete(&mut self, s: usize, obs: &mut dyn Observer) {
        let r = self.slots[s].take().expect("live slot");
        self.free.push(s);
        self.in_flight -= 1;
        let ttft = r.first_token - r.arrival;
        let tbt = r.tbt.tbt_s();
        let slo = self.cfg.slo;
        let effective = ttft <= slo.ttft_s && tbt <= slo.tbt_s;
        self.totals.completed += 1;
        self.totals.last_done = self.totals.last_done.max(r.first_token.max(r.last_token));
        self.totals.effective += effective as u64;
        self.totals.ttft.record(ttft);
        if r.output > 1 {
            self.totals.tbt.record(tbt);
        }
        obs.on_outcome(&Outcome {
            id: r.id,
            arrival_s: r.arrival,
            kind: OutcomeKind::Completed {
                ttft_s: ttft,
                tbt_s: tbt,
                effective,
            },
        });
    }

    fn sample(&mut self) {
        let now = self.state.now;
        let prefill = self
            .state
            .prefill
            .iter()
            .map(|p| (p.busy_until - now).max(0.0) as f32)
            .collect();
        let decode = self
            .state
            .decode
            .iter()
            .map(|d| d.occupancy() as f32)
            .collect();
        self.load.push(now, prefill, decode);
    }
}

/// Seconds of KV transfer left after prefill ends: KV streams layer by layer
/// while prefill computes, so only what outlasts the compute remains, and at
/// least one layer's share.
fn transfer_tail_s(cost: &CostModel, input: u32, compute_s: f64) -> f64 {
    let kv_s = cost.transfer_tokens_s(input as u64);
    let layers = cost.config().model.layers as f64;
    (kv_s - compute_s).max(kv_s / layers)
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
