//! Figure 9 of the paper on the published conversation trace: prefix-cache
//! hit ratio vs cache capacity, request order only. Asserts the *shape* the
//! paper reports: monotone in capacity, a 3M-token cache far below the
//! unbounded maximum (under half for the frequency-based policies, and well
//! under 60% for LRU), and ~50M tokens nearly at the maximum. The numbers
//! are recorded in the crate README ("Figure 9").

use mooncake_conductor::cache::PolicyKind;
use mooncake_sim::trace::hitrate::{figure9, FIGURE9_CAPACITIES_TOKENS};
use mooncake_sim::trace::{published_trace, TraceReader};
use std::path::PathBuf;

fn conversation_trace() -> PathBuf {
    published_trace("conversation_trace.jsonl").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn figure9_shape_on_conversation_trace() {
    let report = figure9(TraceReader::open(conversation_trace()).unwrap()).unwrap();
    assert_eq!(report.requests, 12_031);
    let max = report.ideal_hit_ratio;
    // The unbounded replay is the theoretical maximum in request order.
    assert!(max > 0.3 && max < 0.5, "unbounded hit ratio {max}");
    for policy in PolicyKind::ALL {
        let curve = report.curve(policy);
        assert_eq!(curve.len(), FIGURE9_CAPACITIES_TOKENS.len());
        // monotone non-decreasing in capacity (request order, no timing)
        for w in curve.windows(2) {
            assert!(
                w[1].hit_ratio + 1e-12 >= w[0].hit_ratio,
                "{policy}: {} tokens {:.4} > {} tokens {:.4}",
                w[0].capacity_tokens,
                w[0].hit_ratio,
                w[1].capacity_tokens,
                w[1].hit_ratio
            );
        }
        for p in &curve {
            assert!(
                p.hit_ratio <= max + 1e-12,
                "{policy} beats the unbounded cache"
            );
        }
        let at = |cap: u64| report.at(policy, cap).unwrap().fraction_of_ideal;
        // small local cache (3M tokens, one node's share): far below max
        assert!(
            at(3_000_000) < 0.6,
            "{policy} at 3M: {:.3} of max",
            at(3_000_000)
        );
        // ~50M tokens: nearly the maximum
        assert!(
            at(50_000_000) > 0.85,
            "{policy} at 50M: {:.3} of max",
            at(50_000_000)
        );
        // the largest grid point (100M tokens > all distinct blocks) is the max
        assert!((at(100_000_000) - 1.0).abs() < 1e-9);
    }
    // frequency-based policies reach under half of max at 3M tokens
    for policy in [PolicyKind::Lfu, PolicyKind::LengthAware] {
        let f = report.at(policy, 3_000_000).unwrap().fraction_of_ideal;
        assert!(f < 0.5, "{policy} at 3M: {f:.3} of max");
    }
    // LRU and LFU are essentially at max by 50M tokens
    for policy in [PolicyKind::Lru, PolicyKind::Lfu] {
        let f = report.at(policy, 50_000_000).unwrap().fraction_of_ideal;
        assert!(f > 0.95, "{policy} at 50M: {f:.3} of max");
    }
}
