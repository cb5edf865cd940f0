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
//! the request), plus the stall of the first decode interval: the prompt's
//! KV transfer that prefill compute does not hide, which the paper's TBT
//! (mean of the longest 10% intervals) weighs by `1/k`. When that stall
//! alone breaks the TBT SLO (long cached prompt, short output), reuse only
//! part of the prefix so the recompute hides the transfer
//! ([`hide_kv_transfer`]). Reject if either prediction misses its SLO. A
//! planned fetch is carried out by the caller, which is how hot blocks
//! replicate.
//!
//! With `kvcache_balancing_threshold = ∞` ([`Mooncake::local_only`]) this is
//! the paper's "local cache-aware" scheduler of Figure 5.

use super::admission::predicted_peak;
use super::{
    cached_tokens, uncached_tokens, ClusterView, Decision, DecodeLoad, Fetch, Placement, Policy,
    RejectReason, RequestInfo,
};
use crate::cost::CostModel;

/// Algorithm 1 parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mooncake {
    /// Fetch a remote prefix only when it is longer than the local one by
    /// more than this factor (`best_len / prefix_len > threshold`).
    pub kvcache_balancing_threshold: f64,
    /// Reject requests whose predicted TTFT or TBT misses the SLO (on for
    /// a live router; the simulator turns it off and applies the shared
    /// admission rule instead, [`super::admission`]).
    pub reject_on_slo: bool,
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

    fn set_slo_rejection(&mut self, on: bool) {
        self.reject_on_slo = on;
    }

    fn route(&mut self, req: &RequestInfo<'_>, view: &dyn ClusterView) -> Decision {
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
                let remote = view.fetch_s(best_instance, i, moved) + ttft_with(i, best_len);
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
        let Some((mut ttft, mut prefill, fetch)) = best else {
            return Decision::Reject(RejectReason::TtftSlo);
        };
        let slo = view.slo();
        let pick_decode = |delta: f64| {
            (0..view.decode().len())
                .map(|j| {
                    (
                        j,
                        predicted_tbt_s(view, j, req, delta, self.decode_memory_check),
                    )
                })
                .fold(
                    (0, f64::INFINITY),
                    |acc, x| if x.1 < acc.1 { x } else { acc },
                )
        };
        let (mut decode, step) = pick_decode(ttft);
        if step.is_infinite() {
            // Every decode instance is predicted full: without rejection,
            // the least committed one.
            decode = super::least_loaded_decode(view);
        }
        let used = fetch.map_or(local[prefill], |f| f.prefix_blocks);
        let mut tbt = step + first_interval_stall_s(req, view, used) / longest_intervals(req);
        let mut fetch = fetch;
        let mut reuse_limit_blocks = None;
        if tbt > slo.tbt_s && step <= slo.tbt_s {
            if let Some(plan) = hide_kv_transfer(req, view, &local, step, slo) {
                let (j, step) = pick_decode(plan.ttft);
                let t = step + plan.stall_s / longest_intervals(req);
                if t <= slo.tbt_s {
                    (ttft, prefill, decode, tbt) = (plan.ttft, plan.prefill, j, t);
                    fetch = None;
                    reuse_limit_blocks = Some(plan.reuse_blocks);
                }
            }
        }
        if self.reject_on_slo {
            if ttft > slo.ttft_s {
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
            reuse_limit_blocks,
        })
    }
}

/// How many intervals the paper's TBT averages for `req` (its longest 10%,
/// at least one), so a one-off stall counts `1/k` of itself.
fn longest_intervals(req: &RequestInfo<'_>) -> f64 {
    (req.output_tokens.saturating_sub(1) as f64 / 10.0)
        .ceil()
        .max(1.0)
}

/// The KV transfer to decode that prefill compute cannot hide when `req`
/// reuses `prefix` cached blocks: it stretches the first decode interval
/// (nothing for a one-token output, which never reaches decode).
fn first_interval_stall_s(req: &RequestInfo<'_>, view: &dyn ClusterView, prefix: usize) -> f64 {
    if req.output_tokens <= 1 {
        return 0.0;
    }
    let bt = view.block_tokens();
    let compute = view.cost().prefill_compute_s(
        uncached_tokens(req, prefix, bt),
        cached_tokens(req, prefix, bt),
    );
    view.cost()
        .kv_stream_tail_s(req.input_tokens as u64, compute)
}

/// A plan that reuses only part of a local prefix.
struct PartialReuse {
    prefill: usize,
    reuse_blocks: usize,
    ttft: f64,
    stall_s: f64,
}

/// A long cached prompt with a short output can miss the TBT SLO on its
/// first interval alone: its whole KV must reach decode and there is little
/// prefill compute to hide the transfer behind. Recomputing part of the
/// prefix trades TTFT for that stall: on each instance, reuse the longest
/// local prefix whose stall keeps TBT within the SLO (the stall shrinks as
/// reuse shrinks, so a binary search finds it), and pick the smallest TTFT
/// that also meets the TTFT SLO.
fn hide_kv_transfer(
    req: &RequestInfo<'_>,
    view: &dyn ClusterView,
    local: &[usize],
    step: f64,
    slo: super::Slo,
) -> Option<PartialReuse> {
    let k = longest_intervals(req);
    let fits = |q: usize| step + first_interval_stall_s(req, view, q) / k <= slo.tbt_s;
    let bt = view.block_tokens();
    if !fits(0) {
        return None;
    }
    let mut best: Option<PartialReuse> = None;
    for (i, &p) in local.iter().enumerate() {
        // Largest q in [0, p] with fits(q); fits(0) holds.
        let (mut lo, mut hi) = (0usize, p);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let ttft = view.prefill()[i].queue_s
            + view.predict_prefill_s(i, uncached_tokens(req, lo, bt), cached_tokens(req, lo, bt));
        if ttft <= slo.ttft_s && best.as_ref().is_none_or(|b| ttft < b.ttft) {
            best = Some(PartialReuse {
                prefill: i,
                reuse_blocks: lo,
                ttft,
                stall_s: first_interval_stall_s(req, view, lo),
            });
        }
    }
    best
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
    fn without_slo_rejection_it_places_what_it_would_reject() {
        let b = [1, 2];
        let view = FakeView::new(2, 1).busy(0, 9, 40.0).busy(1, 9, 35.0);
        let mut m = Mooncake::default();
        m.set_slo_rejection(false);
        let p = accepted(m.route(&req(&b), &view));
        assert_eq!(p.prefill, 1, "the shorter queue");
        assert!(p.predicted_ttft_s > view.slo.ttft_s);
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

    #[test]
    fn recomputes_part_of_a_long_cached_prompt_to_hide_its_kv_transfer() {
        // 146 cached blocks (~75k tokens), 17 output tokens: reusing all of
        // it leaves ~0.27 s of KV transfer after a near-empty prefill, and
        // with only 16 intervals that stall alone breaks the 100 ms TBT.
        let b: Vec<u64> = (1..=146).collect();
        let view = FakeView::new(2, 1).cached(0, &b);
        let r = RequestInfo {
            output_tokens: 17,
            ..req(&b)
        };
        assert!(step_free_tbt(&r, &view, b.len()) > view.slo.tbt_s);
        let p = accepted(Mooncake::default().route(&r, &view));
        let reuse = p.reuse_limit_blocks.expect("partial reuse");
        assert!(reuse < b.len() && reuse > 0, "reuse {reuse}");
        assert_eq!(p.prefill, 0, "the instance with the prefix");
        assert!(p.predicted_tbt_s <= view.slo.tbt_s);
        assert!(p.predicted_ttft_s <= view.slo.ttft_s);
        // Reusing one block more would break the TBT SLO again.
        assert!(step_free_tbt(&r, &view, reuse + 1) > view.slo.tbt_s - 0.03);
        // A long output spreads the stall over many intervals: full reuse.
        let long = RequestInfo {
            output_tokens: 500,
            ..req(&b)
        };
        let p = accepted(Mooncake::default().route(&long, &view));
        assert_eq!(p.reuse_limit_blocks, None);
    }

    /// The stall's share of TBT (without the decode step) at `prefix` reuse.
    fn step_free_tbt(r: &RequestInfo<'_>, view: &FakeView, prefix: usize) -> f64 {
        first_interval_stall_s(r, view, prefix) / longest_intervals(r)
    }
}
