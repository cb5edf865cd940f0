//! `cache-aware`: the instance holding the longest prefix of the prompt in
//! its *local* cache; ties (e.g. nobody has it) go to the shortest predicted
//! queue. No load balancing beyond ties, no remote prefixes: the "cache-aware
//! only" baseline. Decode by fewest committed tokens.

use super::{argmin_by, least_loaded_decode, place, ClusterView, Decision, Policy, RequestInfo};

/// Longest local prefix hit.
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheAware;

impl Policy for CacheAware {
    fn name(&self) -> &'static str {
        "cache-aware"
    }

    fn route(&mut self, req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision {
        let n = view.prefill().len();
        let hits: Vec<usize> = (0..n).map(|i| view.prefix_blocks(i, req.blocks)).collect();
        let best = hits.iter().copied().max().unwrap_or(0);
        // Among the instances with the longest hit, the least queued.
        let p = argmin_by(n, |i| {
            if hits[i] == best {
                view.prefill()[i].queue_s
            } else {
                f64::INFINITY
            }
        })
        .unwrap_or(0);
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
        assert_eq!(accepted(CacheAware.route(&req(&b), &view)).prefill, 1);
    }

    #[test]
    fn ties_go_to_shortest_queue() {
        let b = [1, 2];
        let view = FakeView::new(3, 1)
            .busy(0, 1, 2.0)
            .busy(1, 1, 1.0)
            .busy(2, 1, 3.0);
        assert_eq!(accepted(CacheAware.route(&req(&b), &view)).prefill, 1);
    }
}
