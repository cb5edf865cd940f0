//! `cache-aware` and `local-cache-aware`: the instance holding the longest
//! prefix of the prompt in its *local* cache; ties go to the shortest
//! predicted queue, and ties of that (idle instances) rotate over every
//! instance. No load balancing beyond ties, no remote prefixes. Decode by
//! fewest committed tokens.
//!
//! - `local-cache-aware` ([`CacheAware::paper`]) is the paper's definition
//!   taken literally: only the instances with the longest hit tie. When
//!   every prompt starts with the same block (a shared system prompt: every
//!   request of the conversation trace does), a new conversation's best hit
//!   is that one block, held only by the instances that have served
//!   before, so the instances beyond the first few never get work.
//! - `cache-aware` ([`CacheAware::default`]) counts hits within
//!   [`TIE_BLOCKS`] blocks or [`TIE_FRACTION`] of the best as ties, so a
//!   shared first block is no reason to pile onto a busy instance and every
//!   instance is used.

use super::{least_loaded_decode, place, ClusterView, Decision, Policy, RequestInfo};

/// Hits this many blocks shorter than the best still tie (`cache-aware`).
pub const TIE_BLOCKS: usize = 1;
/// Hits within this share of the best still tie (`cache-aware`).
pub const TIE_FRACTION: f64 = 0.1;

/// Longest local prefix hit.
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheAware {
    /// Where the next tie-break scan starts.
    next: usize,
    /// Only exactly-longest hits tie (the literal paper arm).
    strict: bool,
}

impl CacheAware {
    /// The paper's literal "local cache-aware" arm: `local-cache-aware`.
    pub fn paper() -> Self {
        Self {
            next: 0,
            strict: true,
        }
    }

    /// The shortest hit that still ties with `best`.
    fn tie_floor(&self, best: usize) -> usize {
        if self.strict {
            return best;
        }
        let slack = TIE_BLOCKS.max((best as f64 * TIE_FRACTION) as usize);
        best.saturating_sub(slack)
    }
}

impl Policy for CacheAware {
    fn name(&self) -> &'static str {
        if self.strict {
            "local-cache-aware"
        } else {
            "cache-aware"
        }
    }

    fn route(&mut self, req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision {
        let n = view.prefill().len();
        if n == 0 {
            return place(0, least_loaded_decode(view));
        }
        let hits: Vec<usize> = (0..n).map(|i| view.prefix_blocks(i, req.blocks)).collect();
        let best = hits.iter().copied().max().unwrap_or(0);
        let floor = self.tie_floor(best);
        // Among the instances with the longest hit, the least queued; on a
        // tie, the first from the rotating cursor.
        let mut pick: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (self.next + k) % n;
            if hits[i] < floor {
                continue;
            }
            let q = view.prefill()[i].queue_s;
            if pick.is_none_or(|(_, b)| q < b) {
                pick = Some((i, q));
            }
        }
        let p = pick.map_or(0, |(i, _)| i);
        self.next = (p + 1) % n;
        place(p, least_loaded_decode(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{accepted, req, FakeView};

    #[test]
    fn follows_longest_prefix_even_when_busy() {
        let b = [1, 2, 3, 4];
        let view = FakeView::new(3, 1)
            .busy(1, 5, 20.0)
            .cached(0, &b[..1])
            .cached(1, &b[..3]);
        let mut p = CacheAware::default();
        assert_eq!(accepted(p.route(&req(&b), &view)).prefill, 1);
    }

    #[test]
    fn ties_go_to_shortest_queue() {
        let b = [1, 2];
        let view = FakeView::new(3, 1)
            .busy(0, 1, 2.0)
            .busy(1, 1, 1.0)
            .busy(2, 1, 3.0);
        let mut p = CacheAware::default();
        assert_eq!(accepted(p.route(&req(&b), &view)).prefill, 1);
    }

    #[test]
    fn a_shared_first_block_is_a_tie_except_for_the_literal_arm() {
        let b = [0, 5, 6];
        let view = FakeView::new(3, 1).busy(0, 3, 10.0).cached(0, &b[..1]);
        let mut p = CacheAware::default();
        assert_ne!(accepted(p.route(&req(&b), &view)).prefill, 0);
        let mut p = CacheAware::paper();
        assert_eq!(accepted(p.route(&req(&b), &view)).prefill, 0);
        // A real conversation prefix still wins.
        let c: Vec<u64> = (0..20).collect();
        let view = FakeView::new(3, 1).busy(0, 3, 10.0).cached(0, &c[..18]);
        let mut p = CacheAware::default();
        assert_eq!(accepted(p.route(&req(&c), &view)).prefill, 0);
    }

    #[test]
    fn idle_ties_use_every_instance() {
        let b = [1, 2];
        let view = FakeView::new(16, 1);
        let mut p = CacheAware::default();
        let mut used: Vec<usize> = (0..32)
            .map(|_| accepted(p.route(&req(&b), &view)).prefill)
            .collect();
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), 16);
    }
}
