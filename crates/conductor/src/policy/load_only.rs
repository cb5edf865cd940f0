//! `load-only`: the paper's "load-balancing" baseline of Figure 5. Picks the
//! prefill instance with the smallest predicted queue time (sum of predicted
//! prefill times), ignoring every cache; decode by fewest committed tokens.

use super::{
    argmin_by, least_loaded_decode, ClusterView, Decision, Placement, Policy, RequestInfo,
};

/// Shortest predicted queue.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadOnly;

impl Policy for LoadOnly {
    fn name(&self) -> &'static str {
        "load-only"
    }

    fn route(&mut self, req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision {
        let p = argmin_by(view.prefill().len(), |i| view.prefill()[i].queue_s).unwrap_or(0);
        let prefill = view.cost().prefill_s(req.input_tokens as u64, 0);
        Decision::Accept(Placement {
            prefill: p,
            decode: least_loaded_decode(view),
            fetch: None,
            predicted_ttft_s: view.prefill().get(p).map_or(0.0, |l| l.queue_s) + prefill,
            predicted_tbt_s: f64::NAN,
            reuse_limit_blocks: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{accepted, req, FakeView};

    #[test]
    fn picks_shortest_queue_ignoring_cache() {
        let b = [1, 2, 3, 4];
        let view = FakeView::new(2, 1)
            .busy(0, 1, 0.5)
            .busy(1, 3, 0.2)
            .cached(0, &b);
        assert_eq!(accepted(LoadOnly.route(&req(&b), &view)).prefill, 1);
    }
}
