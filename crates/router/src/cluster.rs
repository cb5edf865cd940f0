//! [`LiveCluster`]: the router's model of the real instances behind it, a
//! pure state machine with an injected clock (every call takes `now_s`).
//!
//! Owns, per prefill instance: the requests the router has in flight there
//! with their predicted prefill times (the queue estimate), an approximate
//! prefix cache (a conductor [`BlockCache`] filled with the prompt blocks the
//! router sent there, as SGLang's router keeps its approximate tree), and a
//! health deadline. Per decode instance: requests on their way (in prefill)
//! and running (decoding), their token reservations, and the recent mean
//! decode time. It implements conductor's [`ClusterView`], so every policy
//! runs on it unchanged; [`LiveCluster::route`] shows the policy only the
//! healthy instances.
//!
//! Lifecycle of a request (a *ticket*): [`LiveCluster::route`] (queued on its
//! prefill instance, inbound on its decode instance, prompt blocks inserted
//! into the prefill instance's cache) → [`LiveCluster::prefill_done`] (leaves
//! the prefill queue, joins the decode batch) → [`LiveCluster::finish`]
//! (leaves decode; a completed decode feeds the mean decode time) or
//! [`LiveCluster::abort`] at any point. Unknown or finished tickets are
//! ignored, so a shell may call `abort` defensively.
//!
//! Queue model: an instance is assumed to prefill its requests one after the
//! other in arrival order; the queue is the remaining predicted time of the
//! oldest request (predicted time minus time since it became the oldest)
//! plus the predicted times of the rest. Engines batch prefills, so this is
//! a conservative estimate that resets whenever requests return.
//!
//! The [`ClusterView`] implementations (whole cluster, healthy part) live in
//! the `view` submodule.
//!
//! Colocated mode ([`LiveClusterConfig::colocated`]): instance `i` is one
//! engine that prefills and decodes, so the decode side of a placement is
//! pinned to its prefill side and health covers both.
//!
//! Invariants: every ticket is in at most one prefill queue and one decode
//! instance; loads are recomputed after every change; time never runs
//! backwards (an earlier `now_s` is treated as the latest one seen).

use crate::indexer::PrefixIndex;
use mooncake_conductor::cache::{new_cache, BlockCache, CacheStats, PolicyKind};
use mooncake_conductor::cost::CostModel;
use mooncake_conductor::policy::admission::Admission;
use mooncake_conductor::policy::{
    cached_tokens, decide, uncached_tokens, BadPlacement, ClusterView, DecodeLoad, Placement,
    Policy, PrefillLoad, Refusal, RejectReason, RequestInfo, Slo,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

mod view;
use view::HealthyView;

/// Decode durations averaged for [`DecodeLoad::mean_decode_s`].
const DECODE_WINDOW: usize = 64;

/// Bounds of a prefill instance's learnt speed factor (measured / modelled
/// time): one bad sample (a stalled engine, a tiny prompt dominated by HTTP
/// overhead) cannot make predictions absurd.
pub const SPEED_RANGE: (f64, f64) = (1e-3, 1e3);

/// Largest weight of one sample in the speed's geometric moving average.
const SPEED_WEIGHT: f64 = 0.3;

/// Prior strength of the cost model, in predicted seconds: a sample whose
/// modelled prefill takes `p` seconds gets weight `SPEED_WEIGHT * p / (p +
/// SPEED_PRIOR_S)`, so tiny prompts (whose time is mostly HTTP overhead)
/// barely move the factor and long ones move it quickly, faster or slower.
pub const SPEED_PRIOR_S: f64 = 0.5;

/// Settings of a [`LiveCluster`].
#[derive(Debug, Clone)]
pub struct LiveClusterConfig {
    /// The engine cost model predictions come from.
    pub cost: CostModel,
    /// SLOs the policies reject against.
    pub slo: Slo,
    /// Estimated tokens per prefix block.
    pub block_tokens: u32,
    /// Blocks each prefill instance's approximate cache holds.
    pub prefill_cache_blocks: usize,
    /// Eviction policy of those caches.
    pub cache_policy: PolicyKind,
    /// KV tokens a decode instance holds (its batch memory limit).
    pub decode_capacity_tokens: u64,
    /// Seconds an instance is skipped after a failure.
    pub backoff_s: f64,
    /// Admission control applied after the policy.
    pub admission: Admission,
    /// Learn each prefill instance's speed relative to the cost model from
    /// the measured time to its answers (a geometric moving average of
    /// measured / predicted TTFT, clamped to [`SPEED_RANGE`]) and scale its
    /// prefill predictions by it. Off, the cost model is taken as is.
    pub calibrate: bool,
    /// Every instance both prefills and decodes (no disaggregation): prefill
    /// instance `i` and decode instance `i` are one engine, a request decodes
    /// where it prefilled, and a failure takes both out.
    pub colocated: bool,
}

impl Default for LiveClusterConfig {
    fn default() -> Self {
        let cost = CostModel::default();
        let cap = cost.kv_capacity_tokens();
        Self {
            prefill_cache_blocks: (cap / 512).max(1) as usize,
            decode_capacity_tokens: cap,
            cost,
            slo: Slo::default(),
            block_tokens: 512,
            cache_policy: PolicyKind::Lru,
            backoff_s: 10.0,
            admission: Admission::default(),
            calibrate: true,
            colocated: false,
        }
    }
}

/// Prefill or decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A prefill instance.
    Prefill,
    /// A decode instance.
    Decode,
}

impl Role {
    /// `prefill` or `decode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        }
    }
}

/// An admitted request's placement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Routed {
    /// Handle for [`LiveCluster::prefill_done`] / [`LiveCluster::finish`].
    pub ticket: u64,
    /// Prefill instance (index into the configured list).
    pub prefill: usize,
    /// Decode instance.
    pub decode: usize,
    /// The policy planned to reuse a longer prefix held by this prefill
    /// instance (Mooncake's hot-block replication). The router cannot move
    /// KV itself: with a shared KV pool (Mooncake Store connector) the
    /// chosen engine finds the prefix there; otherwise it recomputes it.
    pub fetch_from: Option<usize>,
    /// Prefix blocks the chosen instance was believed to hold.
    pub cached_blocks: usize,
    /// The policy's TTFT prediction (NaN when it makes none).
    pub predicted_ttft_s: f64,
    /// The policy's TBT prediction (NaN when it makes none).
    pub predicted_tbt_s: f64,
    /// Predicted prefill time (what the request adds to the queue).
    pub predicted_prefill_s: f64,
}

/// Why a request was not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The policy or admission control rejected it.
    #[error("rejected by the scheduler: {}", .0.as_str())]
    Rejected(RejectReason),
    /// Every prefill instance is unhealthy or excluded.
    #[error("no healthy prefill instance")]
    NoPrefill,
    /// Every decode instance is unhealthy.
    #[error("no healthy decode instance")]
    NoDecode,
    /// The policy named an instance that does not exist (a policy bug; the
    /// router keeps serving).
    #[error(transparent)]
    BadPlacement(BadPlacement),
}

impl From<Refusal> for RouteError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Rejected(reason) => RouteError::Rejected(reason),
            Refusal::BadPlacement(b) => RouteError::BadPlacement(b),
        }
    }
}

/// Per-instance numbers for metrics and status pages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceStatus {
    /// Requests in flight there (prefill: queued; decode: inbound + running).
    pub in_flight: u32,
    /// Requests routed there since start.
    pub routed: u64,
    /// Not in a failure backoff.
    pub healthy: bool,
    /// Prefill: predicted queue seconds; decode: recent mean decode seconds.
    pub load_s: f64,
    /// Prefill: approximate cache counters; decode: zeros.
    pub cache: CacheStats,
    /// Prefill: learnt speed factor (measured / modelled time); decode: 1.
    pub speed: f64,
    /// Prefill: the prefix cache is known from the engine's KV events
    /// (exact) rather than believed from what the router sent there.
    pub exact: bool,
}

#[derive(Debug, Clone, Copy)]
struct PrefillJob {
    predicted_s: f64,
    uncached: u64,
    input: u64,
    /// When it was sent, the TTFT (queue + prefill) predicted then, and
    /// the instance's speed factor that prediction used.
    dispatched: f64,
    predicted_ttft: f64,
    speed: f64,
}

#[derive(Debug)]
struct PrefillInstance {
    /// Tickets in arrival order.
    jobs: BTreeMap<u64, PrefillJob>,
    /// When the oldest job became the oldest.
    head_since: f64,
    cache: Box<dyn BlockCache>,
    unhealthy_until: f64,
    routed: u64,
    /// Calibration: measured / cost-model prefill time (see
    /// [`LiveClusterConfig::calibrate`]).
    speed: f64,
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    /// In prefill; predicted to join the batch then.
    Inbound { predicted_join: f64 },
    /// Decoding since then.
    Running { joined: f64 },
}

#[derive(Debug, Clone, Copy)]
struct DecodeJob {
    input: u64,
    output: u64,
    stage: Stage,
}

#[derive(Debug, Default)]
struct DecodeInstance {
    jobs: HashMap<u64, DecodeJob>,
    recent: VecDeque<f64>,
    unhealthy_until: f64,
    routed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Ticket {
    prefill: usize,
    decode: usize,
}

/// The router's live model of its instances (see the module docs).
#[derive(Debug)]
pub struct LiveCluster {
    cfg: LiveClusterConfig,
    now: f64,
    next_ticket: u64,
    prefill: Vec<PrefillInstance>,
    decode: Vec<DecodeInstance>,
    prefill_loads: Vec<PrefillLoad>,
    decode_loads: Vec<DecodeLoad>,
    tickets: HashMap<u64, Ticket>,
    /// Event-built prefix index and each prefill instance's name in it.
    index: Option<(Arc<Mutex<PrefixIndex>>, Vec<String>)>,
}

impl LiveCluster {
    /// A cluster of idle, healthy instances with empty caches (colocated:
    /// `prefill` engines, `decode` is ignored).
    pub fn new(cfg: LiveClusterConfig, prefill: usize, decode: usize) -> Self {
        let decode = if cfg.colocated { prefill } else { decode };
        let prefill = (0..prefill)
            .map(|_| PrefillInstance {
                jobs: BTreeMap::new(),
                head_since: 0.0,
                cache: new_cache(cfg.cache_policy, cfg.prefill_cache_blocks),
                unhealthy_until: 0.0,
                routed: 0,
                speed: 1.0,
            })
            .collect::<Vec<_>>();
        let decode = (0..decode).map(|_| DecodeInstance::default()).collect();
        let mut c = Self {
            prefill_loads: vec![PrefillLoad::default(); prefill.len()],
            decode_loads: Vec::new(),
            cfg,
            now: 0.0,
            next_ticket: 0,
            prefill,
            decode,
            tickets: HashMap::new(),
            index: None,
        };
        c.decode_loads = (0..c.decode.len()).map(|j| c.decode_load(j)).collect();
        c
    }

    /// Reads prefix hits of prefill instance `i` from `index` (under the
    /// name `names[i]`) whenever the index has a stream for it: its cache
    /// is then exact, and the router no longer adds beliefs to it.
    pub fn set_index(&mut self, index: Arc<Mutex<PrefixIndex>>, names: Vec<String>) {
        self.index = Some((index, names));
    }

    /// Whether prefill instance `i`'s cache is known from events.
    pub fn is_exact(&self, i: usize) -> bool {
        self.index
            .as_ref()
            .is_some_and(|(ix, names)| names.get(i).is_some_and(|n| ix.lock().has_instance(n)))
    }

    /// Leading run of `blocks` prefill instance `i` holds: from its events
    /// when exact, else from the router's belief.
    pub fn lookup_prefix(&self, i: usize, blocks: &[u64]) -> usize {
        if let Some((ix, names)) = &self.index {
            if let Some(n) = names.get(i) {
                let ix = ix.lock();
                if ix.has_instance(n) {
                    return ix.longest_prefix(n, blocks);
                }
            }
        }
        self.prefill
            .get(i)
            .map_or(0, |p| p.cache.lookup_prefix(blocks))
    }

    /// The configuration.
    pub fn config(&self) -> &LiveClusterConfig {
        &self.cfg
    }

    /// Number of prefill / decode instances.
    pub fn len(&self, role: Role) -> usize {
        match role {
            Role::Prefill => self.prefill.len(),
            Role::Decode => self.decode.len(),
        }
    }

    /// Requests admitted and not yet finished or aborted.
    pub fn in_flight(&self) -> usize {
        self.tickets.len()
    }

    /// Moves the clock to `now_s` (never backwards) and refreshes the
    /// time-dependent loads.
    pub fn advance(&mut self, now_s: f64) {
        if now_s.is_finite() && now_s > self.now {
            self.now = now_s;
        }
        for i in 0..self.prefill.len() {
            self.prefill_loads[i] = self.prefill_load(i);
        }
    }

    /// Whether instance `i` of `role` is outside its failure backoff.
    pub fn is_healthy(&self, role: Role, i: usize) -> bool {
        let until = match role {
            Role::Prefill => self.prefill.get(i).map(|p| p.unhealthy_until),
            Role::Decode => self.decode.get(i).map(|d| d.unhealthy_until),
        };
        until.is_some_and(|u| self.now >= u)
    }

    /// Marks instance `i` failed at `now_s`: routing skips it for the
    /// backoff period. A failed prefill engine that comes back has lost its
    /// cache, so the approximate cache is cleared too.
    pub fn mark_unhealthy(&mut self, role: Role, i: usize, now_s: f64) {
        self.advance(now_s);
        let until = self.now + self.cfg.backoff_s;
        let both = self.cfg.colocated;
        if both || role == Role::Decode {
            if let Some(d) = self.decode.get_mut(i) {
                d.unhealthy_until = until;
            }
        }
        match role {
            Role::Prefill => {
                if let Some(p) = self.prefill.get_mut(i) {
                    p.unhealthy_until = until;
                    p.cache = new_cache(self.cfg.cache_policy, self.cfg.prefill_cache_blocks);
                }
            }
            Role::Decode if both => {
                if let Some(p) = self.prefill.get_mut(i) {
                    p.unhealthy_until = until;
                    p.cache = new_cache(self.cfg.cache_policy, self.cfg.prefill_cache_blocks);
                }
            }
            Role::Decode => {}
        }
    }

    /// Instance `i` answered a health probe: it is routable again now
    /// (colocated: both sides).
    pub fn mark_healthy(&mut self, role: Role, i: usize) {
        let both = self.cfg.colocated;
        if both || role == Role::Prefill {
            if let Some(p) = self.prefill.get_mut(i) {
                p.unhealthy_until = 0.0;
            }
        }
        if both || role == Role::Decode {
            if let Some(d) = self.decode.get_mut(i) {
                d.unhealthy_until = 0.0;
            }
        }
    }

    /// Routes `req` at `now_s` with `policy`, then admission control, over
    /// the healthy prefill instances not in `exclude_prefill`; on success the
    /// request is registered (see the module docs).
    pub fn route(
        &mut self,
        policy: &mut dyn Policy,
        req: &RequestInfo<'_>,
        now_s: f64,
        exclude_prefill: &[usize],
    ) -> Result<Routed, RouteError> {
        self.advance(now_s);
        let p_ok: Vec<usize> = (0..self.prefill.len())
            .filter(|&i| self.is_healthy(Role::Prefill, i) && !exclude_prefill.contains(&i))
            .collect();
        let d_ok: Vec<usize> = if self.cfg.colocated {
            p_ok.clone()
        } else {
            (0..self.decode.len())
                .filter(|&j| self.is_healthy(Role::Decode, j))
                .collect()
        };
        if p_ok.is_empty() {
            return Err(RouteError::NoPrefill);
        }
        if d_ok.is_empty() {
            return Err(RouteError::NoDecode);
        }
        let all = p_ok.len() == self.prefill.len() && d_ok.len() == self.decode.len();
        let (mut placement, fetch) = if all {
            let pl = decide(policy, &self.cfg.admission, req, self)?;
            (pl, pl.fetch.map(|f| (f.from, f.prefix_blocks)))
        } else {
            let view = HealthyView::new(self, p_ok, d_ok);
            // `decide` checked the indices against this view.
            let mut pl = decide(policy, &self.cfg.admission, req, &view)?;
            pl.prefill = view.p[pl.prefill];
            pl.decode = view.d[pl.decode];
            (pl, pl.fetch.map(|f| (view.p[f.from], f.prefix_blocks)))
        };
        if self.cfg.colocated {
            // One engine: it decodes what it prefilled.
            placement.decode = placement.prefill;
        }
        Ok(self.admit(req, placement, fetch))
    }

    /// Registers an accepted placement (global indices).
    fn admit(
        &mut self,
        req: &RequestInfo<'_>,
        pl: Placement,
        fetch: Option<(usize, usize)>,
    ) -> Routed {
        let bt = self.cfg.block_tokens;
        let (i, j) = (pl.prefill, pl.decode);
        let local = self.lookup_prefix(i, req.blocks);
        let exact = self.is_exact(i);
        let prefix = fetch.map_or(local, |(_, n)| n.max(local));
        let cached = cached_tokens(req, prefix, bt);
        let uncached = uncached_tokens(req, prefix, bt);
        let predicted_prefill_s = self.predict_prefill_s(i, uncached, cached);
        let queue_s = self.prefill_loads[i].queue_s;
        let join_in = if pl.predicted_ttft_s.is_finite() {
            pl.predicted_ttft_s
        } else {
            queue_s + predicted_prefill_s
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let now = self.now;
        let p = &mut self.prefill[i];
        // Like SGLang's router tree: the blocks count as cached there from
        // the moment the request is sent (unless the engine tells us).
        if !exact {
            p.cache.access(req.blocks);
        }
        if p.jobs.is_empty() {
            p.head_since = now;
        }
        p.jobs.insert(
            ticket,
            PrefillJob {
                predicted_s: predicted_prefill_s,
                uncached,
                input: req.input_tokens as u64,
                dispatched: now,
                predicted_ttft: queue_s + predicted_prefill_s,
                speed: p.speed,
            },
        );
        p.routed += 1;
        let d = &mut self.decode[j];
        d.jobs.insert(
            ticket,
            DecodeJob {
                input: req.input_tokens as u64,
                output: req.output_tokens as u64,
                stage: Stage::Inbound {
                    predicted_join: now + join_in.max(0.0),
                },
            },
        );
        d.routed += 1;
        self.tickets.insert(
            ticket,
            Ticket {
                prefill: i,
                decode: j,
            },
        );
        self.prefill_loads[i] = self.prefill_load(i);
        self.decode_loads[j] = self.decode_load(j);
        Routed {
            ticket,
            prefill: i,
            decode: j,
            fetch_from: fetch.map(|(from, _)| from),
            cached_blocks: local,
            predicted_ttft_s: pl.predicted_ttft_s,
            predicted_tbt_s: pl.predicted_tbt_s,
            predicted_prefill_s,
        }
    }

    /// Removes `ticket` from its prefill queue; returns its job.
    fn leave_prefill(&mut self, ticket: u64, i: usize) -> Option<PrefillJob> {
        let now = self.now;
        let p = &mut self.prefill[i];
        let was_head = p.jobs.keys().next() == Some(&ticket);
        let job = p.jobs.remove(&ticket);
        if job.is_some() && was_head {
            p.head_since = now;
        }
        self.prefill_loads[i] = self.prefill_load(i);
        job
    }

    /// The prefill instance answered: the request leaves its queue and
    /// joins the decode batch.
    pub fn prefill_done(&mut self, ticket: u64, now_s: f64) {
        self.advance(now_s);
        let Some(t) = self.tickets.get(&ticket).copied() else {
            return;
        };
        let now = self.now;
        if let Some(job) = self.leave_prefill(ticket, t.prefill) {
            let measured = now - job.dispatched;
            if self.cfg.calibrate && job.predicted_ttft > 0.0 && measured > 0.0 {
                let p = &mut self.prefill[t.prefill];
                let sample = (job.speed * measured / job.predicted_ttft).ln();
                // The cost model's own time for it: how informative it is.
                let modelled = job.predicted_ttft / job.speed;
                let w = SPEED_WEIGHT * modelled / (modelled + SPEED_PRIOR_S);
                let ln = (1.0 - w) * p.speed.ln() + w * sample;
                p.speed = ln.exp().clamp(SPEED_RANGE.0, SPEED_RANGE.1);
            }
        }
        if let Some(job) = self.decode[t.decode].jobs.get_mut(&ticket) {
            if let Stage::Inbound { .. } = job.stage {
                job.stage = Stage::Running { joined: now };
            }
        }
        self.decode_loads[t.decode] = self.decode_load(t.decode);
    }

    /// The request ended. A `completed` decode contributes its duration to
    /// the instance's mean decode time.
    pub fn finish(&mut self, ticket: u64, now_s: f64, completed: bool) {
        self.advance(now_s);
        let Some(t) = self.tickets.remove(&ticket) else {
            return;
        };
        let _ = self.leave_prefill(ticket, t.prefill);
        let now = self.now;
        let d = &mut self.decode[t.decode];
        if let Some(job) = d.jobs.remove(&ticket) {
            if let (true, Stage::Running { joined }) = (completed, job.stage) {
                if d.recent.len() == DECODE_WINDOW {
                    d.recent.pop_front();
                }
                d.recent.push_back((now - joined).max(0.0));
            }
        }
        self.decode_loads[t.decode] = self.decode_load(t.decode);
    }

    /// The request failed or was cancelled at any stage.
    pub fn abort(&mut self, ticket: u64, now_s: f64) {
        self.finish(ticket, now_s, false);
    }

    /// Per-instance numbers of `role`, in configured order.
    pub fn status(&self, role: Role) -> Vec<InstanceStatus> {
        match role {
            Role::Prefill => (0..self.prefill.len())
                .map(|i| InstanceStatus {
                    in_flight: self.prefill[i].jobs.len() as u32,
                    routed: self.prefill[i].routed,
                    healthy: self.is_healthy(role, i),
                    load_s: self.prefill_loads[i].queue_s,
                    cache: self.prefill[i].cache.stats(),
                    speed: self.prefill[i].speed,
                    exact: self.is_exact(i),
                })
                .collect(),
            Role::Decode => (0..self.decode.len())
                .map(|j| InstanceStatus {
                    in_flight: self.decode[j].jobs.len() as u32,
                    routed: self.decode[j].routed,
                    healthy: self.is_healthy(role, j),
                    load_s: self.decode_loads[j].mean_decode_s,
                    cache: CacheStats::default(),
                    speed: 1.0,
                    exact: false,
                })
                .collect(),
        }
    }

    fn prefill_load(&self, i: usize) -> PrefillLoad {
        let p = &self.prefill[i];
        let mut load = PrefillLoad {
            requests: p.jobs.len() as u32,
            ..PrefillLoad::default()
        };
        for (k, job) in p.jobs.values().enumerate() {
            load.queue_s += if k == 0 {
                (job.predicted_s - (self.now - p.head_since)).max(0.0)
            } else {
                job.predicted_s
            };
            load.prefill_tokens += job.uncached;
            load.active_tokens += job.input;
        }
        load
    }

    fn decode_load(&self, j: usize) -> DecodeLoad {
        let d = &self.decode[j];
        let mut load = DecodeLoad {
            capacity_tokens: self.cfg.decode_capacity_tokens,
            mean_decode_s: if d.recent.is_empty() {
                0.0
            } else {
                d.recent.iter().sum::<f64>() / d.recent.len() as f64
            },
            ..DecodeLoad::default()
        };
        for job in d.jobs.values() {
            let need = job.input + job.output;
            match job.stage {
                Stage::Running { .. } => {
                    load.batch += 1;
                    // Output progress is not observed: assume half done.
                    load.context_tokens += job.input + job.output / 2;
                    load.reserved_tokens += need;
                }
                Stage::Inbound { .. } => {
                    load.inbound += 1;
                    load.inbound_tokens += need;
                }
            }
        }
        load
    }
}

#[cfg(test)]
mod tests;
