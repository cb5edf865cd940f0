//! `mooncake`: the paper's Algorithm 1, KVCache-centric scheduling with cache
//! load balancing.
//!
//! For each prefill instance `i` with local prefix `p_i` (blocks) and the best
//! prefix `best` anywhere in the cluster:
//! - if `best / p_i > kvcache_balancing_threshold` (and the fetch makes this
//!   instance's TTFT smaller: hot-spot migration only when moving the blocks
//!   beats recomputing them), plan to fetch `best − p_i` blocks from the
//!   holder: `TTFT_i = transfer + queue_i + prefill(uncached | best)`;
//! - else `TTFT_i = queue_i + prefill(uncached | p_i)`.
//!
//! Pick the smallest `TTFT_i`; pick the decode instance with the smallest
//! predicted TBT (one decode step with the batch it will join, infinite when
//! the batch's memory, counting requests already on their way, cannot take
//! the request); reject if either prediction misses its SLO. A planned fetch
//! is carried out by the caller, which is how hot blocks replicate.
//!
//! With `kvcache_balancing_threshold = ∞` ([`Mooncake::local_only`]) this is
//! the paper's "local cache-aware" scheduler of Figure 5.

use super::admission::predicted_peak;
use super::{
    cached_tokens, uncached_tokens, ClusterView, Decision, DecodeLoad, Fetch, Placement, Policy,
    RejectReason, RequestInfo,
};
use crate::cost::CostModel;

/// A prefill instance counts as idle for [`Mooncake::serve_hopeless_when_idle`]
/// when its queue is at most this share of the TTFT SLO. Requiring an
/// exactly empty queue made the outcome hinge on sub-second noise (a 0.1 s
/// tail of a short prefill turned a best-effort serve into a rejection);
/// a queue this short next to the SLO is not overload, which is all the
/// SLO rejection is for. Under overload the shortest queue is longer and
/// hopeless requests are rejected as before.
pub const NEARLY_IDLE_SLO_FRACTION: f64 = 0.1;

/// Algorithm 1 parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mooncake {
    /// Fetch a remote prefix only when it is longer than the local one by
    /// more than this factor (`best_len / prefix_len > threshold`).
    pub kvcache_balancing_threshold: f64,
    /// Reject requests whose predicted TTFT or TBT misses the SLO.
    pub reject_on_slo: bool,
    /// A request that misses the TTFT SLO even on an idle instance (a huge
    /// prompt) is not an overload symptom: when its best instance is idle
    /// or nearly so ([`NEARLY_IDLE_SLO_FRACTION`]), serve it there
    /// best-effort instead of rejecting it. It
    /// cannot be effective, but it delays nobody and its KV seeds the
    /// conversation's next turn (rejecting it would make the next turn
    /// hopeless too).
    pub serve_hopeless_when_idle: bool,
    /// Count a decode instance whose memory is predicted to be full while
    /// the request decodes as missing the TBT SLO (∞). Off, the TBT
    /// prediction is the step time alone and overload is left to the
    /// admission control ([`super::admission`]).
    pub decode_memory_check: bool,
}

impl Default for Mooncake {
    fn default() -> Self {
        Self {
            kvcache_balancing_threshold: 1.0,
            reject_on_slo: true,
            serve_hopeless_when_idle: true,
            decode_memory_check: true,
        }
    }
}

impl Mooncake {
    /// Algorithm 1 without cache load balancing: local prefixes only.
    pub fn local_only() -> Self {
        Self {
            kvcache_balancing_threshold: f64::INFINITY,
            ..Self::default()
        }
    }
}

/// Predicted TBT if `req` joins decode instance `d` in `delta` seconds: one
/// decode step of the batch it will find (running + inbound + itself), or ∞
/// when its memory reservation will not fit while it decodes (see
/// [`predicted_peak`]).
pub fn predicted_tbt_s(
    view: &dyn ClusterView,
    j: usize,
    req: &RequestInfo<'_>,
    delta: f64,
    memory_check: bool,
) -> f64 {
    let d: &DecodeLoad = &view.decode()[j];
    let need = (req.input_tokens as u64 + req.output_tokens as u64) as f64;
    if memory_check && predicted_peak(view, j, delta, req) + need > d.capacity_tokens as f64 {
        return f64::INFINITY;
    }
    let cost: &CostModel = view.cost();
    // Inbound requests hold their prompt plus on average half their output.
    let ctx = d.context_tokens + d.inbound_tokens / 2 + req.input_tokens as u64;
    cost.decode_step_s(d.batch as u64 + d.inbound as u64 + 1, ctx)
}

impl Policy for Mooncake {
    fn name(&self) -> &'static str {
        if self.kvcache_balancing_threshold.is_infinite() {
            "mooncake-local"
        } else {
            "mooncake"
        }
    }

    fn route(&mut self, req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision {
        let cost = view.cost();
        let bt = view.block_tokens();
        let n = view.prefill().len();
        let local: Vec<usize> = (0..n).map(|i| view.prefix_blocks(i, req.blocks)).collect();
        let (best_instance, best_len) = local
            .iter()
            .copied()
            .enumerate()
            .max_by_key(|&(i, l)| (l, std::cmp::Reverse(i)))
            .unwrap_or((0, 0));
        let ttft_with = |i: usize, prefix: usize| {
            view.prefill()[i].queue_s
                + view.predict_prefill_s(
                    i,
                    uncached_tokens(req, prefix, bt),
                    cached_tokens(req, prefix, bt),
                )
        };
        let mut best: Option<(f64, usize, Option<Fetch>)> = None;
        for (i, &p) in local.iter().enumerate() {
            let mut ttft = ttft_with(i, p);
            let mut fetch = None;
            let ratio = if p == 0 {
                f64::INFINITY
            } else {
                best_len as f64 / p as f64
            };
            if best_len > p && ratio > self.kvcache_balancing_threshold {
                let moved = cached_tokens(req, best_len, bt) - cached_tokens(req, p, bt);
                let remote = cost.transfer_tokens_s(moved) + ttft_with(i, best_len);
                if remote < ttft {
                    ttft = remote;
                    fetch = Some(Fetch {
                        from: best_instance,
                        prefix_blocks: best_len,
                    });
                }
            }
            if best.as_ref().is_none_or(|b| ttft < b.0) {
                best = Some((ttft, i, fetch));
            }
        }
        let Some((ttft, prefill, fetch)) = best else {
            return Decision::Reject(RejectReason::TtftSlo);
        };
        let (decode, tbt) = view
            .decode()
            .iter()
            .enumerate()
            .map(|(j, _)| {
                (
                    j,
                    predicted_tbt_s(view, j, req, ttft, self.decode_memory_check),
                )
            })
            .fold(
                (0, f64::INFINITY),
                |acc, x| if x.1 < acc.1 { x } else { acc },
            );
        let slo = view.slo();
        if self.reject_on_slo {
            // Hopeless: the SLO is missed even without the queue, so the
            // miss is not a load symptom and rejecting it sheds no overload.
            let queue_s = view.prefill()[prefill].queue_s;
            let idle_and_hopeless = self.serve_hopeless_when_idle
                && ttft - queue_s > slo.ttft_s
                && queue_s <= NEARLY_IDLE_SLO_FRACTION * slo.ttft_s
                && tbt <= slo.tbt_s;
            if ttft > slo.ttft_s && !idle_and_hopeless {
                return Decision::Reject(RejectReason::TtftSlo);
            }
            if tbt > slo.tbt_s {
                return Decision::Reject(RejectReason::TbtSlo);
            }
        }
        Decision::Accept(Placement {
            prefill,
            decode,
            fetch,
            predicted_ttft_s: ttft,
            predicted_tbt_s: tbt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{accepted, req, FakeView};

    #[test]
    fn fetches_long_remote_prefix_to_idle_instance() {
        // Instance 0 holds the whole prefix but is busy for 20 s; instance 1
        // is idle and empty. Fetching beats both waiting and recomputing.
        let b: Vec<u64> = (1..=32).collect();
        let view = FakeView::new(2, 1).busy(0, 3, 20.0).cached(0, &b);
        let p = accepted(Mooncake::default().route(&req(&b), &view));
        assert_eq!(p.prefill, 1);
        assert_eq!(
            p.fetch,
            Some(Fetch {
                from: 0,
                prefix_blocks: 32
            })
        );
        // Local-only goes to the idle instance and recomputes, or waits:
        // either way its prediction is worse.
        let local = accepted(Mooncake::local_only().route(&req(&b), &view));
        assert!(local.fetch.is_none());
        assert!(local.predicted_ttft_s > p.predicted_ttft_s);
    }

    #[test]
    fn prefers_local_hit_when_queues_equal() {
        let b: Vec<u64> = (1..=16).collect();
        let view = FakeView::new(3, 1).cached(2, &b);
        let p = accepted(Mooncake::default().route(&req(&b), &view));
        assert_eq!((p.prefill, p.fetch), (2, None));
    }

    #[test]
    fn threshold_blocks_small_gains() {
        // Instance 1 has 10 of 12 blocks, instance 0 has 12: ratio 1.2 ≤ 1.5.
        let b: Vec<u64> = (1..=12).collect();
        let view = FakeView::new(2, 1)
            .busy(0, 2, 30.0)
            .cached(0, &b)
            .cached(1, &b[..10]);
        let mut m = Mooncake {
            kvcache_balancing_threshold: 1.5,
            ..Mooncake::default()
        };
        let p = accepted(m.route(&req(&b), &view));
        assert_eq!((p.prefill, p.fetch), (1, None));
    }

    #[test]
    fn rejects_when_ttft_slo_cannot_be_met() {
        let b = [1, 2];
        let view = FakeView::new(2, 1).busy(0, 9, 40.0).busy(1, 9, 35.0);
        assert_eq!(
            Mooncake::default().route(&req(&b), &view),
            Decision::Reject(RejectReason::TtftSlo)
        );
    }

    #[test]
    fn serves_hopeless_prompt_only_on_a_nearly_idle_instance() {
        // ~123k uncached tokens: the prefill alone misses the 30 s SLO.
        let b: Vec<u64> = (1..=240).collect();
        let slo = FakeView::new(1, 1).slo.ttft_s;
        let short = 0.5 * NEARLY_IDLE_SLO_FRACTION * slo;
        let view = FakeView::new(2, 1).busy(0, 1, short).busy(1, 3, 10.0);
        let p = accepted(Mooncake::default().route(&req(&b), &view));
        assert_eq!(p.prefill, 0);
        assert!(p.predicted_ttft_s - short > slo);
        // Every queue is long: that is load, and the request is rejected.
        let long = 2.0 * NEARLY_IDLE_SLO_FRACTION * slo;
        let view = FakeView::new(2, 1).busy(0, 1, long).busy(1, 3, 10.0);
        assert_eq!(
            Mooncake::default().route(&req(&b), &view),
            Decision::Reject(RejectReason::TtftSlo)
        );
    }

    #[test]
    fn picks_decode_by_predicted_tbt_and_rejects_full_pool() {
        let b = [1, 2];
        let mut view = FakeView::new(1, 2);
        let cap = view.decode[0].capacity_tokens;
        view.decode[0].batch = 60;
        view.decode[0].context_tokens = cap / 2;
        view.decode[0].reserved_tokens = cap / 2;
        view.decode[1].batch = 10;
        view.decode[1].context_tokens = cap / 10;
        view.decode[1].reserved_tokens = cap / 10;
        let p = accepted(Mooncake::default().route(&req(&b), &view));
        assert_eq!(p.decode, 1);
        assert!(p.predicted_tbt_s < view.decode.len() as f64);
        for d in &mut view.decode {
            d.inbound_tokens = cap;
        }
        assert_eq!(
            Mooncake::default().route(&req(&b), &view),
            Decision::Reject(RejectReason::TbtSlo)
        );
    }
}
