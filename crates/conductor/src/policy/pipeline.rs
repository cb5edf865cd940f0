//! The one placement pipeline of the live router and the simulator:
//! policy → placement check → admission.
//!
//! [`decide`] owns the order of the three steps and what a placement that
//! names a non-existent instance means: [`Refusal::BadPlacement`], for every
//! caller. It is a policy bug, not overload, so it is never reported as an
//! SLO rejection; the router answers it as an internal error and keeps
//! serving, the simulator stops the run (its numbers would be wrong).
//!
//! Invariant: an `Ok` placement's `prefill`, `decode` and `fetch.from` are
//! valid indices of the view it was decided on, and it passed `admission`.

use super::admission::Admission;
use super::{ClusterView, Decision, Placement, Policy, RejectReason, RequestInfo};

/// A placement naming an instance the view does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "policy `{policy}` placed a request on prefill {prefill} / decode {decode} (fetch from {fetch_from:?}), but there are {prefill_instances} prefill / {decode_instances} decode instances"
)]
pub struct BadPlacement {
    /// The policy's name.
    pub policy: &'static str,
    /// Prefill index returned.
    pub prefill: usize,
    /// Decode index returned.
    pub decode: usize,
    /// Fetch source returned, if any.
    pub fetch_from: Option<usize>,
    /// Prefill instances in the view.
    pub prefill_instances: usize,
    /// Decode instances in the view.
    pub decode_instances: usize,
}

/// Why [`decide`] placed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The policy or admission control rejected the request.
    #[error("rejected: {}", .0.as_str())]
    Rejected(RejectReason),
    /// The policy returned an instance that does not exist.
    #[error(transparent)]
    BadPlacement(BadPlacement),
}

/// Routes `req` with `policy` on `view`, checks that the placement names
/// instances of `view`, then runs `admission`. Indices are the view's.
pub fn decide(
    policy: &mut dyn Policy,
    admission: &Admission,
    req: &RequestInfo<'_>,
    view: &dyn ClusterView,
) -> Result<Placement, Refusal> {
    let pl = match policy.route(req, view) {
        Decision::Accept(pl) => pl,
        Decision::Reject(r) => return Err(Refusal::Rejected(r)),
    };
    let (np, nd) = (view.prefill().len(), view.decode().len());
    let fetch_from = pl.fetch.map(|f| f.from);
    if pl.prefill >= np || pl.decode >= nd || fetch_from.is_some_and(|f| f >= np) {
        return Err(Refusal::BadPlacement(BadPlacement {
            policy: policy.name(),
            prefill: pl.prefill,
            decode: pl.decode,
            fetch_from,
            prefill_instances: np,
            decode_instances: nd,
        }));
    }
    admission.check(req, &pl, view).map_err(Refusal::Rejected)?;
    Ok(pl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::admission::AdmissionMode;
    use crate::policy::testing::{req, FakeView};
    use crate::policy::Fetch;

    /// Places every request where it was told to.
    struct Fixed(Placement);
    impl Policy for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn route(&mut self, _: &RequestInfo<'_>, _: &dyn ClusterView) -> Decision {
            Decision::Accept(self.0)
        }
    }

    fn at(prefill: usize, decode: usize, fetch_from: Option<usize>) -> Fixed {
        Fixed(Placement {
            prefill,
            decode,
            fetch: fetch_from.map(|from| Fetch {
                from,
                prefix_blocks: 1,
            }),
            predicted_ttft_s: f64::NAN,
            predicted_tbt_s: f64::NAN,
            reuse_limit_blocks: None,
        })
    }

    #[test]
    fn valid_placement_passes_through() {
        let view = FakeView::new(2, 2);
        let r = req(&[1, 2]);
        let pl = decide(&mut at(1, 0, Some(0)), &Admission::default(), &r, &view).unwrap();
        assert_eq!((pl.prefill, pl.decode), (1, 0));
    }

    #[test]
    fn out_of_range_indices_are_bad_placements() {
        let view = FakeView::new(2, 1);
        let r = req(&[1]);
        for (p, d, f) in [(2, 0, None), (0, 1, None), (0, 0, Some(2))] {
            let err = decide(&mut at(p, d, f), &Admission::default(), &r, &view).unwrap_err();
            assert_eq!(
                err,
                Refusal::BadPlacement(BadPlacement {
                    policy: "fixed",
                    prefill: p,
                    decode: d,
                    fetch_from: f,
                    prefill_instances: 2,
                    decode_instances: 1,
                })
            );
        }
    }

    #[test]
    fn bad_placement_is_refused_before_admission() {
        // Admission would reject everything (TTFT SLO of zero); the bad
        // placement is still reported as what it is.
        let mut view = FakeView::new(1, 1);
        view.slo.ttft_s = 0.0;
        let adm = Admission {
            mode: AdmissionMode::Slo,
            ..Admission::default()
        };
        let r = req(&[1]);
        assert!(matches!(
            decide(&mut at(3, 0, None), &adm, &r, &view),
            Err(Refusal::BadPlacement(_))
        ));
        assert_eq!(
            decide(&mut at(0, 0, None), &adm, &r, &view),
            Err(Refusal::Rejected(RejectReason::TtftSlo))
        );
    }
}
