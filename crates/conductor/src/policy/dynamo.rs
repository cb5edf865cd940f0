//! `dynamo`: NVIDIA Dynamo's KV router cost function, in this simulator.
//!
//! For every worker Dynamo scores
//! `logit = overlap_score_weight · potential_prefill_blocks + potential_active_blocks`
//! where `potential_prefill_blocks` are the blocks the worker would have to
//! compute (its queued prefill tokens plus the request's tokens not covered
//! by the worker's cached overlap, in blocks) and `potential_active_blocks`
//! the KV blocks it would hold (its active blocks plus the request's). Lower
//! is better. With `router_temperature = 0` the lowest logit wins (ties
//! broken at random, as Dynamo does); above 0 a worker is sampled from
//! `softmax(−logit / (max_logit · router_temperature))`.
//!
//! Overlap comes from the workers' real caches (Dynamo's KV events), local
//! to each worker: Dynamo does not move prefixes between workers. Decode:
//! the fewest committed blocks (the same cost with no prefill term). No
//! admission control: Dynamo queues rather than rejects.

use super::{
    least_loaded_decode, place, uncached_tokens, ClusterView, Decision, Policy, RequestInfo,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Dynamo's KV router parameters, named as Dynamo names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamoConfig {
    /// Weight of the prefill (overlap) term (`--kv-overlap-score-weight`, default 1).
    pub overlap_score_weight: f64,
    /// Softmax temperature (`--router-temperature`, default 0: deterministic).
    pub router_temperature: f64,
}

impl Default for DynamoConfig {
    fn default() -> Self {
        Self {
            overlap_score_weight: 1.0,
            router_temperature: 0.0,
        }
    }
}

/// Dynamo's KV-aware worker selection.
#[derive(Debug)]
pub struct Dynamo {
    cfg: DynamoConfig,
    rng: StdRng,
}

impl Dynamo {
    /// A router with `cfg`, sampling with a generator seeded by `seed`.
    pub fn new(cfg: DynamoConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The logit of every prefill worker for `req`.
    pub fn logits(&self, req: &RequestInfo<'_>, view: &dyn ClusterView) -> Vec<f64> {
        let bt = view.block_tokens() as f64;
        view.prefill()
            .iter()
            .enumerate()
            .map(|(i, load)| {
                let overlap = view.prefix_blocks(i, req.blocks);
                let new_tokens = uncached_tokens(req, overlap, view.block_tokens());
                let prefill_blocks = (load.prefill_tokens + new_tokens) as f64 / bt;
                let active_blocks = (load.active_tokens + req.input_tokens as u64) as f64 / bt;
                self.cfg.overlap_score_weight * prefill_blocks + active_blocks
            })
            .collect()
    }

    fn select(&mut self, logits: &[f64]) -> usize {
        if logits.is_empty() {
            return 0;
        }
        let min = logits.iter().copied().fold(f64::INFINITY, f64::min);
        if self.cfg.router_temperature <= 0.0 {
            let ties: Vec<usize> = (0..logits.len()).filter(|&i| logits[i] <= min).collect();
            return ties[self.rng.gen_range(0..ties.len())];
        }
        let max = logits.iter().copied().fold(0.0_f64, f64::max).max(1e-9);
        let t = self.cfg.router_temperature;
        // Shift by the minimum for numerical safety; softmax is shift-invariant.
        let w: Vec<f64> = logits
            .iter()
            .map(|l| (-(l - min) / (max * t)).exp())
            .collect();
        let mut x = self.rng.gen::<f64>() * w.iter().sum::<f64>();
        for (i, wi) in w.iter().enumerate() {
            if x < *wi {
                return i;
            }
            x -= wi;
        }
        logits.len() - 1
    }
}

impl Policy for Dynamo {
    fn name(&self) -> &'static str {
        "dynamo"
    }

    fn route(&mut self, req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision {
        let logits = self.logits(req, view);
        let p = self.select(&logits);
        place(p, least_loaded_decode(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{accepted, req, FakeView};

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 0.01)
    }

    #[test]
    fn overlap_weight_trades_cache_for_load() {
        // Worker 0 caches the whole 8-block prompt (only its last token is
        // recomputed) but has 10 blocks of prefill queued; worker 1 is empty.
        let b: Vec<u64> = (1..=8).collect();
        let mut view = FakeView::new(2, 1).cached(0, &b);
        view.prefill[0].prefill_tokens = 10 * 512;
        view.prefill[0].active_tokens = 10 * 512;
        let mut d = Dynamo::new(DynamoConfig::default(), 1);
        // w0 = 1·(10 + 1/512) + (10 + 8) ≈ 28; w1 = 1·8 + 8 = 16.
        assert!(close(&d.logits(&req(&b), &view), &[28.0, 16.0]));
        assert_eq!(accepted(d.route(&req(&b), &view)).prefill, 1);
        // Without the queue the cached worker wins: w0 ≈ 8, w1 = 16.
        view.prefill[0].prefill_tokens = 0;
        view.prefill[0].active_tokens = 0;
        assert_eq!(accepted(d.route(&req(&b), &view)).prefill, 0);
        // Weight 0 ignores caches: equal loads tie, both get picked.
        let mut d0 = Dynamo::new(
            DynamoConfig {
                overlap_score_weight: 0.0,
                router_temperature: 0.0,
            },
            3,
        );
        let picks: std::collections::HashSet<usize> = (0..64)
            .map(|_| accepted(d0.route(&req(&b), &view)).prefill)
            .collect();
        assert_eq!(picks.len(), 2);
    }

    #[test]
    fn temperature_spreads_choices() {
        let b: Vec<u64> = (1..=8).collect();
        let view = FakeView::new(3, 1).cached(0, &b);
        let mut hot = Dynamo::new(
            DynamoConfig {
                overlap_score_weight: 1.0,
                router_temperature: 10.0,
            },
            5,
        );
        let picks: std::collections::HashSet<usize> = (0..200)
            .map(|_| accepted(hot.route(&req(&b), &view)).prefill)
            .collect();
        assert_eq!(picks.len(), 3);
    }
}
