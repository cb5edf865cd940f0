//! A hand-built [`ClusterView`] for policy unit tests.

use super::*;
use std::collections::HashSet;

/// A static cluster: loads and cache contents set by the test.
pub(crate) struct FakeView {
    pub cost: CostModel,
    pub slo: Slo,
    pub prefill: Vec<PrefillLoad>,
    pub decode: Vec<DecodeLoad>,
    pub caches: Vec<HashSet<u64>>,
}

impl FakeView {
    /// `p` idle prefill and `d` idle decode instances, empty caches.
    pub fn new(p: usize, d: usize) -> Self {
        let cost = CostModel::default();
        let cap = cost.kv_capacity_tokens();
        Self {
            cost,
            slo: Slo::default(),
            prefill: vec![PrefillLoad::default(); p],
            decode: vec![
                DecodeLoad {
                    capacity_tokens: cap,
                    ..DecodeLoad::default()
                };
                d
            ],
            caches: vec![HashSet::new(); p],
        }
    }

    /// Sets prefill instance `i`'s queue to `requests` requests worth `queue_s`.
    pub fn busy(mut self, i: usize, requests: u32, queue_s: f64) -> Self {
        self.prefill[i] = PrefillLoad {
            queue_s,
            requests,
            prefill_tokens: (queue_s * 8000.0) as u64,
            active_tokens: requests as u64 * 8000,
        };
        self
    }

    /// Puts `blocks` in prefill instance `i`'s cache.
    pub fn cached(mut self, i: usize, blocks: &[u64]) -> Self {
        self.caches[i].extend(blocks.iter().copied());
        self
    }
}

impl ClusterView for FakeView {
    fn now_s(&self) -> f64 {
        0.0
    }
    fn cost(&self) -> &CostModel {
        &self.cost
    }
    fn block_tokens(&self) -> u32 {
        512
    }
    fn slo(&self) -> Slo {
        self.slo
    }
    fn prefill(&self) -> &[PrefillLoad] {
        &self.prefill
    }
    fn decode(&self) -> &[DecodeLoad] {
        &self.decode
    }
    /// Running requests all leave `mean_decode_s` from now (or never, if
    /// it is 0); inbound ones arrive now and stay.
    fn decode_peak_tokens(&self, decode: usize, from: f64, _to: f64, _hold_s: f64) -> u64 {
        let d = &self.decode[decode];
        let running_left = d.mean_decode_s > 0.0 && from >= d.mean_decode_s;
        let running = if running_left { 0 } else { d.reserved_tokens };
        running + d.inbound_tokens
    }
    fn prefix_blocks(&self, instance: usize, blocks: &[u64]) -> usize {
        blocks
            .iter()
            .take_while(|b| self.caches[instance].contains(b))
            .count()
    }
}

/// A request of `blocks` full blocks.
pub(crate) fn req(blocks: &[u64]) -> RequestInfo<'_> {
    RequestInfo {
        id: 0,
        input_tokens: blocks.len() as u32 * 512,
        output_tokens: 100,
        blocks,
    }
}

/// The placement of an accepted decision (panics on reject).
pub(crate) fn accepted(d: Decision) -> Placement {
    match d {
        Decision::Accept(p) => p,
        Decision::Reject(r) => panic!("rejected: {r:?}"),
    }
}
