//! `sglang`: SGLang router's `cache_aware` policy, in this simulator.
//!
//! The router keeps an *approximate* prefix tree per worker built only from
//! the requests it routed (it never sees the workers' real caches), and:
//! 1. if the load is imbalanced — `max_load − min_load > balance_abs_threshold`
//!    and `max_load > min_load · balance_rel_threshold` (load = outstanding
//!    requests) — it sends the request to the least loaded worker;
//! 2. otherwise it matches the prompt against every worker's tree; if the best
//!    match rate (matched / prompt length) exceeds `cache_threshold` the
//!    request goes to that worker, else to the worker with the smallest tree
//!    (the most free cache, by the router's guess);
//! 3. the prompt is inserted into the chosen worker's tree. Every
//!    `eviction_interval_secs` each tree is trimmed to `max_tree_size` by
//!    evicting least recently used leaves.
//!
//! Our prompts are chains of prefix-block hashes (a hash names its whole
//! prefix), so a worker's radix tree is exactly the set of hashes it has seen
//! with their last access time; LRU over that set evicts leaves first because
//! a parent is always touched when its child is. Tree size is counted in
//! tokens (SGLang counts characters). Defaults are sglang-router's.
//! Decode: the fewest committed tokens (SGLang's decode policies are
//! load-based too). No admission control.

use super::{argmin_by, least_loaded_decode, place, ClusterView, Decision, Policy, RequestInfo};
use std::collections::{BTreeSet, HashMap};

/// sglang-router's cache-aware parameters, named as it names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgLangConfig {
    /// Minimum match rate to route by cache (default 0.3).
    pub cache_threshold: f64,
    /// Absolute load gap that counts as imbalance (default 64 requests).
    pub balance_abs_threshold: u32,
    /// Relative load ratio that counts as imbalance (default 1.5).
    pub balance_rel_threshold: f64,
    /// Seconds between tree evictions (default 120).
    pub eviction_interval_secs: f64,
    /// Tree size limit per worker, tokens (default 2^26).
    pub max_tree_size: u64,
}

impl Default for SgLangConfig {
    fn default() -> Self {
        Self {
            cache_threshold: 0.3,
            balance_abs_threshold: 64,
            balance_rel_threshold: 1.5,
            eviction_interval_secs: 120.0,
            max_tree_size: 1 << 26,
        }
    }
}

/// One worker's approximate tree: block hash → last access, plus LRU order.
#[derive(Debug, Default)]
struct ApproxTree {
    last: HashMap<u64, u64>,
    lru: BTreeSet<(u64, u64)>,
}

impl ApproxTree {
    fn match_len(&self, blocks: &[u64]) -> usize {
        blocks
            .iter()
            .take_while(|b| self.last.contains_key(b))
            .count()
    }

    fn insert(&mut self, blocks: &[u64], clock: &mut u64) {
        // Deeper blocks get older stamps so a prefix is evicted from its leaf.
        let base = *clock;
        *clock += blocks.len() as u64 + 1;
        for (depth, &b) in blocks.iter().enumerate() {
            let stamp = base + (blocks.len() - depth) as u64;
            if let Some(old) = self.last.insert(b, stamp) {
                self.lru.remove(&(old, b));
            }
            self.lru.insert((stamp, b));
        }
    }

    fn evict_to(&mut self, max_blocks: usize) {
        while self.last.len() > max_blocks {
            let Some((stamp, b)) = self.lru.pop_first() else {
                break;
            };
            debug_assert_eq!(self.last.get(&b), Some(&stamp));
            self.last.remove(&b);
        }
    }
}

/// SGLang's cache-aware router.
#[derive(Debug)]
pub struct SgLang {
    cfg: SgLangConfig,
    trees: Vec<ApproxTree>,
    clock: u64,
    last_eviction_s: f64,
}

impl SgLang {
    /// A router with `cfg` and empty trees.
    pub fn new(cfg: SgLangConfig) -> Self {
        Self {
            cfg,
            trees: Vec::new(),
            clock: 0,
            last_eviction_s: 0.0,
        }
    }

    /// Blocks in worker `i`'s approximate tree.
    pub fn tree_blocks(&self, i: usize) -> usize {
        self.trees.get(i).map_or(0, |t| t.last.len())
    }
}

impl Policy for SgLang {
    fn name(&self) -> &'static str {
        "sglang"
    }

    fn route(&mut self, req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision {
        let n = view.prefill().len();
        if self.trees.len() < n {
            self.trees.resize_with(n, ApproxTree::default);
        }
        let now = view.now_s();
        if now - self.last_eviction_s >= self.cfg.eviction_interval_secs {
            let max_blocks = (self.cfg.max_tree_size / view.block_tokens().max(1) as u64) as usize;
            for t in &mut self.trees {
                t.evict_to(max_blocks);
            }
            self.last_eviction_s = now;
        }
        let loads: Vec<u32> = view.prefill().iter().map(|l| l.requests).collect();
        let max_load = loads.iter().copied().max().unwrap_or(0);
        let min_load = loads.iter().copied().min().unwrap_or(0);
        let imbalanced = max_load - min_load > self.cfg.balance_abs_threshold
            && max_load as f64 > min_load as f64 * self.cfg.balance_rel_threshold;
        let p = if imbalanced {
            argmin_by(n, |i| loads[i] as f64).unwrap_or(0)
        } else {
            let matches: Vec<usize> = (0..n)
                .map(|i| self.trees[i].match_len(req.blocks))
                .collect();
            let best = argmin_by(n, |i| -(matches[i] as f64)).unwrap_or(0);
            let rate =
                matches.get(best).copied().unwrap_or(0) as f64 / req.blocks.len().max(1) as f64;
            if rate > self.cfg.cache_threshold {
                best
            } else {
                argmin_by(n, |i| self.trees[i].last.len() as f64).unwrap_or(0)
            }
        };
        if let Some(t) = self.trees.get_mut(p) {
            t.insert(req.blocks, &mut self.clock);
        }
        place(p, least_loaded_decode(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{accepted, req, FakeView};

    #[test]
    fn sticks_to_the_worker_it_sent_the_prefix_to() {
        let view = FakeView::new(3, 1);
        let mut s = SgLang::new(SgLangConfig::default());
        let a: Vec<u64> = (1..=10).collect();
        let first = accepted(s.route(&req(&a), &view)).prefill;
        // A different prompt goes to an empty (smallest) tree.
        let other: Vec<u64> = (100..=110).collect();
        let second = accepted(s.route(&req(&other), &view)).prefill;
        assert_ne!(first, second);
        // The next turn of `a` (longer prompt, same prefix) returns to `first`:
        // match rate 10/12 > 0.3.
        let turn2: Vec<u64> = (1..=12).collect();
        assert_eq!(accepted(s.route(&req(&turn2), &view)).prefill, first);
        // A short shared head (1 of 10 blocks = 0.1 ≤ 0.3) does not count.
        let mut weak: Vec<u64> = vec![1];
        weak.extend(200..209);
        assert_ne!(accepted(s.route(&req(&weak), &view)).prefill, first);
    }

    #[test]
    fn imbalance_overrides_cache() {
        let a: Vec<u64> = (1..=10).collect();
        let cfg = SgLangConfig {
            balance_abs_threshold: 2,
            ..SgLangConfig::default()
        };
        let mut s = SgLang::new(cfg);
        let idle = FakeView::new(2, 1);
        let first = accepted(s.route(&req(&a), &idle)).prefill;
        let skewed = FakeView::new(2, 1).busy(first, 10, 10.0);
        assert_ne!(accepted(s.route(&req(&a), &skewed)).prefill, first);
    }

    #[test]
    fn eviction_trims_trees_to_max_size() {
        let cfg = SgLangConfig {
            max_tree_size: 4 * 512,
            eviction_interval_secs: 0.0,
            ..SgLangConfig::default()
        };
        let mut s = SgLang::new(cfg);
        let view = FakeView::new(1, 1);
        let a: Vec<u64> = (1..=10).collect();
        s.route(&req(&a), &view);
        assert_eq!(s.tree_blocks(0), 10);
        let b: Vec<u64> = (1..=2).collect();
        s.route(&req(&b), &view);
        // Trimmed to 4 blocks before inserting `b`, keeping the prefix head.
        assert!(s.tree_blocks(0) <= 4, "{}", s.tree_blocks(0));
        assert_eq!(s.trees[0].match_len(&a), 4);
    }
}
