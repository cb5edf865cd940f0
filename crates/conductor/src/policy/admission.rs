//! Admission control, applied after *any* policy has placed a request, so
//! that placement and admission can be compared separately: the same rule
//! runs for every policy (the simulator turns the policies' own rejection
//! off, [`super::Policy::set_slo_rejection`]).
//!
//! - [`AdmissionMode::None`]: admit everything.
//! - [`AdmissionMode::Slo`]: Algorithm 1's rejection: reject when the
//!   predicted TTFT on the chosen prefill instance (queue + prefix fetch +
//!   prefill, [`estimate_ttft_s`]) exceeds the TTFT SLO, or the predicted
//!   TBT on the chosen decode instance (one decode step of the batch it
//!   will meet, [`super::mooncake::predicted_tbt_s`] without the memory
//!   check) exceeds the TBT SLO. The same predictors for every policy, so
//!   a policy's own (possibly more optimistic) prediction is not used.
//! - [`AdmissionMode::Baseline`]: the rejection experiment's baseline:
//!   `Slo` before prefill, and a request that decode cannot take in time
//!   after its prefill is rejected there (the caller's decode wait limit;
//!   its prefill work is wasted). Nothing is checked against decode load
//!   before prefill.
//! - [`AdmissionMode::Early`]: `Slo`, then *early rejection* (arXiv report,
//!   §"overload-oriented scheduling"): decide before prefill from
//!   the decode instance's load **now** (its reserved memory share). Cheap,
//!   but blind to the requests already in prefill, which all land on decode
//!   later: prefill and decode load swing out of phase.
//! - [`AdmissionMode::Predictive`]: `Slo`, then *prediction-based early rejection*:
//!   predict the decode instance's load at the moment this request would
//!   reach it (now + predicted TTFT `Δ`), as the report defines it. As the
//!   report does, assume a uniform decode time per request `T` (the recent
//!   mean): a running request leaves `T` after it joined, except that one
//!   older than `T/2` is given `T/2` more (its expected residual life; decode
//!   times are long-tailed, so an old request is not about to leave); a
//!   request in prefill or transfer joins when that is predicted to end.
//!   Checking the instant of arrival, not the peak over the whole stay, is
//!   deliberate: a request that has joined keeps its memory, and requests
//!   arriving after it wait for theirs, so the arrival instant is the one
//!   that decides whether it can start. (Checking the peak over the stay
//!   counted every later-landing request against this one and rejected 26%
//!   more than early rejection in `mooncake sim sweep`'s admission setting;
//!   the instant rejects 6% fewer.) Mooncake's own decode check
//!   ([`predicted_peak`]) keeps the peak: it predicts TBT over the stay.
//!
//! Both reject when the (current or predicted) reserved share, including
//! this request, exceeds `threshold`. `Baseline`, `Early` and `Predictive`
//! all keep the late rejection at decode ([`AdmissionMode::rejects_late`]).

use super::{
    cached_tokens, uncached_tokens, ClusterView, DecodeLoad, Placement, RejectReason, RequestInfo,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which admission rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdmissionMode {
    /// Admit everything.
    #[default]
    None,
    /// TTFT-SLO rejection before prefill, late rejection at decode.
    Baseline,
    /// TTFT-SLO rejection before prefill (Algorithm 1's).
    Slo,
    /// `Slo` plus early rejection on current decode load.
    Early,
    /// `Slo` plus prediction-based early rejection.
    Predictive,
}

impl AdmissionMode {
    /// Every mode, in the order reports list them.
    pub const ALL: [AdmissionMode; 5] = [
        AdmissionMode::None,
        AdmissionMode::Baseline,
        AdmissionMode::Slo,
        AdmissionMode::Early,
        AdmissionMode::Predictive,
    ];

    /// The CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            AdmissionMode::None => "none",
            AdmissionMode::Baseline => "baseline",
            AdmissionMode::Slo => "slo",
            AdmissionMode::Early => "early",
            AdmissionMode::Predictive => "predictive",
        }
    }

    /// Whether the SLOs are predicted and checked before prefill.
    pub fn checks_ttft(self) -> bool {
        self != AdmissionMode::None
    }

    /// Whether a prefilled request that decode cannot take in time is
    /// rejected at decode (the rejection experiment's modes).
    pub fn rejects_late(self) -> bool {
        matches!(
            self,
            AdmissionMode::Baseline | AdmissionMode::Early | AdmissionMode::Predictive
        )
    }
}

impl fmt::Display for AdmissionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown admission mode name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown admission mode `{0}` (expected none, baseline, slo, early or predictive)")]
pub struct UnknownAdmission(pub String);

impl FromStr for AdmissionMode {
    type Err = UnknownAdmission;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(AdmissionMode::None),
            "baseline" => Ok(AdmissionMode::Baseline),
            "slo" => Ok(AdmissionMode::Slo),
            "early" => Ok(AdmissionMode::Early),
            "predictive" | "prediction" => Ok(AdmissionMode::Predictive),
            _ => Err(UnknownAdmission(s.to_string())),
        }
    }
}

/// Admission control settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Admission {
    /// The rule.
    pub mode: AdmissionMode,
    /// Reject when the decode memory share (with this request) would exceed it.
    pub threshold: f64,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            mode: AdmissionMode::None,
            threshold: 1.0,
        }
    }
}

impl Admission {
    /// `Ok` to admit `req` as placed, or the reason to reject it.
    pub fn check(
        &self,
        req: &RequestInfo<'_>,
        placement: &Placement,
        view: &dyn ClusterView,
    ) -> Result<(), RejectReason> {
        if self.mode.checks_ttft() {
            if estimate_ttft_s(req, placement, view) > view.slo().ttft_s {
                return Err(RejectReason::TtftSlo);
            }
            if placement.decode < view.decode().len()
                && super::mooncake::predicted_tbt_s(view, placement.decode, req, 0.0, false)
                    > view.slo().tbt_s
            {
                return Err(RejectReason::TbtSlo);
            }
        }
        let Some(d) = view.decode().get(placement.decode) else {
            return Ok(());
        };
        let need = (req.input_tokens as u64 + req.output_tokens as u64) as f64;
        let cap = d.capacity_tokens.max(1) as f64;
        let share = match self.mode {
            AdmissionMode::None | AdmissionMode::Baseline | AdmissionMode::Slo => return Ok(()),
            AdmissionMode::Early => {
                (d.reserved_tokens as f64 + d.waiting_tokens as f64 + need) / cap
            }
            AdmissionMode::Predictive => {
                let delta = if placement.predicted_ttft_s.is_finite() {
                    placement.predicted_ttft_s
                } else {
                    estimate_ttft_s(req, placement, view)
                };
                (predicted_level(view, placement.decode, delta, req) + need) / cap
            }
        };
        if share > self.threshold {
            Err(RejectReason::DecodeOverload)
        } else {
            Ok(())
        }
    }
}

/// Predicted TTFT of `req` as placed, for policies that make no
/// prediction: Algorithm 1's `transfer + queue + prefill` with the prefix
/// the placement will use (its local one, or the fetched one).
pub fn estimate_ttft_s(
    req: &RequestInfo<'_>,
    placement: &Placement,
    view: &dyn ClusterView,
) -> f64 {
    let bt = view.block_tokens();
    let p = placement.prefill;
    let local = view.prefix_blocks(p, req.blocks);
    let mut hit = local;
    let mut fetch_s = 0.0;
    if let Some(f) = placement.fetch {
        if f.prefix_blocks > local {
            hit = f.prefix_blocks;
            let moved = cached_tokens(req, hit, bt) - cached_tokens(req, local, bt);
            fetch_s = view.fetch_s(f.from, p, moved);
        }
    }
    if let Some(limit) = placement.reuse_limit_blocks {
        hit = hit.min(limit);
    }
    fetch_s
        + view.prefill().get(p).map_or(0.0, |l| l.queue_s)
        + view.predict_prefill_s(
            p,
            uncached_tokens(req, hit, bt),
            cached_tokens(req, hit, bt),
        )
}

/// Seconds a request is predicted to hold decode memory on `d`: the recent
/// mean decode time, or before any finished, one step of the current batch
/// per output token of `req`.
pub fn uniform_decode_s(view: &dyn ClusterView, d: &DecodeLoad, req: &RequestInfo<'_>) -> f64 {
    if d.mean_decode_s > 0.0 {
        return d.mean_decode_s;
    }
    let step = view
        .cost()
        .decode_step_s(d.batch.max(1) as u64, d.context_tokens);
    step * req.output_tokens.max(1) as f64
}

/// Tokens decode instance `j` is predicted to hold at the moment `req`
/// would reach it, `delta` seconds from now.
pub fn predicted_level(view: &dyn ClusterView, j: usize, delta: f64, req: &RequestInfo<'_>) -> f64 {
    let Some(d) = view.decode().get(j) else {
        return 0.0;
    };
    let hold = uniform_decode_s(view, d, req);
    let at = view.now_s() + delta.max(0.0);
    view.decode_peak_tokens(j, at, at, hold) as f64
}

/// The most tokens decode instance `j` is predicted to hold while `req`
/// would decode there, if it reaches decode `delta` seconds from now.
pub fn predicted_peak(view: &dyn ClusterView, j: usize, delta: f64, req: &RequestInfo<'_>) -> f64 {
    let Some(d) = view.decode().get(j) else {
        return 0.0;
    };
    let hold = uniform_decode_s(view, d, req);
    let from = view.now_s() + delta.max(0.0);
    view.decode_peak_tokens(j, from, from + hold, hold) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{accepted, req, FakeView};
    use crate::policy::{least_loaded::LeastLoaded, Policy};

    #[test]
    fn parse_names() {
        assert_eq!(
            "predictive".parse::<AdmissionMode>(),
            Ok(AdmissionMode::Predictive)
        );
        assert!("sometimes".parse::<AdmissionMode>().is_err());
    }

    #[test]
    fn early_sees_current_load_predictive_sees_the_future() {
        let b = [1, 2];
        let mut view = FakeView::new(1, 1);
        let cap = view.decode[0].capacity_tokens;
        // Decode is 99% full now, but its requests finish in ~10 s while this
        // request's prefill queue is 25 s: by then the memory is free.
        // (A batch of long prompts early in their outputs: few requests,
        // so the predicted step stays within the TBT SLO.)
        view.decode[0].reserved_tokens = cap * 99 / 100;
        view.decode[0].context_tokens = cap / 2;
        view.decode[0].batch = 20;
        view.decode[0].mean_decode_s = 10.0;
        view.prefill[0].queue_s = 25.0;
        let p = accepted(LeastLoaded.route(&req(&b), &view));
        let early = Admission {
            mode: AdmissionMode::Early,
            threshold: 0.95,
        };
        let predictive = Admission {
            mode: AdmissionMode::Predictive,
            threshold: 0.95,
        };
        assert_eq!(
            early.check(&req(&b), &p, &view),
            Err(RejectReason::DecodeOverload)
        );
        assert_eq!(predictive.check(&req(&b), &p, &view), Ok(()));
        // Conversely: decode is empty now but 100% is already inbound.
        view.decode[0].reserved_tokens = 0;
        view.decode[0].inbound_tokens = cap;
        assert_eq!(early.check(&req(&b), &p, &view), Ok(()));
        assert_eq!(
            predictive.check(&req(&b), &p, &view),
            Err(RejectReason::DecodeOverload)
        );
        // Early counts requests already waiting at decode for memory.
        view.decode[0].inbound_tokens = cap;
        view.decode[0].waiting_tokens = cap;
        assert_eq!(
            early.check(&req(&b), &p, &view),
            Err(RejectReason::DecodeOverload)
        );
        let none = Admission::default();
        assert_eq!(none.check(&req(&b), &p, &view), Ok(()));
    }

    #[test]
    fn slo_rejects_a_long_queue_for_every_mode_but_none() {
        let b = [1, 2];
        let view = FakeView::new(1, 1).busy(0, 5, 40.0);
        let p = accepted(LeastLoaded.route(&req(&b), &view));
        for mode in AdmissionMode::ALL {
            let got = Admission {
                mode,
                threshold: 1.0,
            }
            .check(&req(&b), &p, &view);
            if mode == AdmissionMode::None {
                assert_eq!(got, Ok(()));
            } else {
                assert_eq!(got, Err(RejectReason::TtftSlo), "{mode}");
            }
            assert_eq!(mode.as_str().parse::<AdmissionMode>(), Ok(mode));
        }
        let short = FakeView::new(1, 1).busy(0, 1, 5.0);
        let slo = Admission {
            mode: AdmissionMode::Slo,
            threshold: 1.0,
        };
        assert_eq!(slo.check(&req(&b), &p, &short), Ok(()));
    }
}
