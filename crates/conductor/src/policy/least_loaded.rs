//! `least-loaded`: the prefill instance with the fewest queued or running
//! requests (what a plain HTTP load balancer does), the decode instance with
//! the fewest committed tokens. Ignores caches and request sizes.

use super::{argmin_by, least_loaded_decode, place, ClusterView, Decision, Policy, RequestInfo};

/// Fewest outstanding requests.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastLoaded;

impl Policy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }

    fn route(&mut self, _req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision {
        let p = argmin_by(view.prefill().len(), |i| view.prefill()[i].requests as f64).unwrap_or(0);
        place(p, least_loaded_decode(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{accepted, req, FakeView};

    #[test]
    fn picks_fewest_requests_even_if_slower() {
        // Instance 0: 1 huge request (50 s); instance 1: 2 small ones (1 s).
        let view = FakeView::new(2, 1).busy(0, 1, 50.0).busy(1, 2, 1.0);
        let b = [1];
        assert_eq!(accepted(LeastLoaded.route(&req(&b), &view)).prefill, 0);
    }
}
