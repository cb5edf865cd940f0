//! `random`: a uniformly random prefill and decode instance (seeded, so runs
//! repeat). The paper's worst baseline in Figure 5.

use super::{place, ClusterView, Decision, Policy, RequestInfo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Uniform random placement.
#[derive(Debug)]
pub struct Random {
    rng: StdRng,
}

impl Random {
    /// A policy drawing from a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn route(&mut self, _req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision {
        let p = self.rng.gen_range(0..view.prefill().len().max(1));
        let d = self.rng.gen_range(0..view.decode().len().max(1));
        place(p, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{accepted, req, FakeView};

    #[test]
    fn covers_all_instances_and_repeats_with_seed() {
        let view = FakeView::new(4, 2);
        let blocks = [1, 2];
        let picks = |seed| {
            let mut p = Random::new(seed);
            (0..200)
                .map(|_| accepted(p.route(&req(&blocks), &view)).prefill)
                .collect::<Vec<_>>()
        };
        let a = picks(7);
        assert_eq!(a, picks(7));
        for i in 0..4 {
            assert!(a.contains(&i), "instance {i} never picked");
        }
    }
}
