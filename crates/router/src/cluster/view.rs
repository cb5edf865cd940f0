//! What policies read: [`ClusterView`] over the whole [`LiveCluster`], and
//! over its healthy part with indices renumbered (`HealthyView`).

use super::{LiveCluster, Stage};
use mooncake_conductor::cost::CostModel;
use mooncake_conductor::policy::forecast;
use mooncake_conductor::policy::{ClusterView, DecodeLoad, PrefillLoad, Slo};

impl ClusterView for LiveCluster {
    fn now_s(&self) -> f64 {
        self.now
    }
    fn cost(&self) -> &CostModel {
        &self.cfg.cost
    }
    fn block_tokens(&self) -> u32 {
        self.cfg.block_tokens
    }
    fn slo(&self) -> Slo {
        self.cfg.slo
    }
    fn prefill(&self) -> &[PrefillLoad] {
        &self.prefill_loads
    }
    fn decode(&self) -> &[DecodeLoad] {
        &self.decode_loads
    }
    fn prefix_blocks(&self, instance: usize, blocks: &[u64]) -> usize {
        self.lookup_prefix(instance, blocks)
    }
    /// The cost model scaled by the instance's learnt speed.
    fn predict_prefill_s(&self, instance: usize, new_tokens: u64, cached_tokens: u64) -> f64 {
        let speed = self.prefill.get(instance).map_or(1.0, |p| p.speed);
        self.cfg.cost.prefill_s(new_tokens, cached_tokens) * speed
    }
    /// Conductor's uniform-stay forecast ([`forecast`]) over the requests
    /// the router placed: running requests from when they joined, inbound
    /// ones from their predicted TTFT.
    fn decode_peak_tokens(&self, decode: usize, from: f64, to: f64, hold_s: f64) -> u64 {
        let Some(d) = self.decode.get(decode) else {
            return 0;
        };
        let now = self.now;
        let stays = d.jobs.values().map(|job| {
            let start = match job.stage {
                Stage::Running { joined } => forecast::running_stay_start(joined, now, hold_s),
                Stage::Inbound { predicted_join } => predicted_join.max(now),
            };
            (start, job.input + job.output)
        });
        forecast::peak_tokens(stays, from, to, hold_s)
    }
}

/// The cluster restricted to some instances, indices renumbered `0..n`.
pub(super) struct HealthyView<'a> {
    c: &'a LiveCluster,
    /// View index → cluster index, prefill and decode.
    pub(super) p: Vec<usize>,
    pub(super) d: Vec<usize>,
    pl: Vec<PrefillLoad>,
    dl: Vec<DecodeLoad>,
}

impl<'a> HealthyView<'a> {
    pub(super) fn new(c: &'a LiveCluster, p: Vec<usize>, d: Vec<usize>) -> Self {
        let pl = p.iter().map(|&i| c.prefill_loads[i]).collect();
        let dl = d.iter().map(|&j| c.decode_loads[j]).collect();
        Self { c, p, d, pl, dl }
    }
}

impl ClusterView for HealthyView<'_> {
    fn now_s(&self) -> f64 {
        self.c.now
    }
    fn cost(&self) -> &CostModel {
        &self.c.cfg.cost
    }
    fn block_tokens(&self) -> u32 {
        self.c.cfg.block_tokens
    }
    fn slo(&self) -> Slo {
        self.c.cfg.slo
    }
    fn prefill(&self) -> &[PrefillLoad] {
        &self.pl
    }
    fn decode(&self) -> &[DecodeLoad] {
        &self.dl
    }
    fn prefix_blocks(&self, instance: usize, blocks: &[u64]) -> usize {
        self.p
            .get(instance)
            .map_or(0, |&i| self.c.prefix_blocks(i, blocks))
    }
    fn predict_prefill_s(&self, instance: usize, new_tokens: u64, cached_tokens: u64) -> f64 {
        let i = self.p.get(instance).copied().unwrap_or(0);
        self.c.predict_prefill_s(i, new_tokens, cached_tokens)
    }
    fn decode_peak_tokens(&self, decode: usize, from: f64, to: f64, hold_s: f64) -> u64 {
        self.d
            .get(decode)
            .map_or(0, |&j| self.c.decode_peak_tokens(j, from, to, hold_s))
    }
}
