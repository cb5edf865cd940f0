//! `round-robin`: prefill and decode instances in turn, ignoring load and
//! cache.

use super::{place, ClusterView, Decision, Policy, RequestInfo};

/// Cycles through instances.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next_prefill: usize,
    next_decode: usize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn route(&mut self, _req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision {
        let p = self.next_prefill % view.prefill().len().max(1);
        let d = self.next_decode % view.decode().len().max(1);
        self.next_prefill = p + 1;
        self.next_decode = d + 1;
        place(p, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{accepted, req, FakeView};

    #[test]
    fn cycles() {
        let view = FakeView::new(3, 2).busy(0, 9, 100.0);
        let mut rr = RoundRobin::default();
        let b = [1];
        let got: Vec<(usize, usize)> = (0..4)
            .map(|_| {
                let p = accepted(rr.route(&req(&b), &view));
                (p.prefill, p.decode)
            })
            .collect();
        assert_eq!(got, vec![(0, 0), (1, 1), (2, 0), (0, 1)]);
    }
}
