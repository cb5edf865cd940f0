//! LiveCluster without sockets: an injected clock, hand-made requests.

use super::*;
use mooncake_conductor::policy::admission::AdmissionMode;
use mooncake_conductor::policy::PolicyName;

fn req(id: u64, input: u32, blocks: &[u64]) -> RequestInfo<'_> {
    RequestInfo {
        id,
        input_tokens: input,
        output_tokens: 64,
        blocks,
    }
}

fn cluster(p: usize, d: usize) -> LiveCluster {
    LiveCluster::new(LiveClusterConfig::default(), p, d)
}

#[test]
fn shared_prefix_follows_the_instance_that_holds_it() {
    let mut c = cluster(2, 1);
    let mut policy = PolicyName::Mooncake.build(1);
    let long: Vec<u64> = (1..=16).collect();
    let a = c
        .route(policy.as_mut(), &req(0, 8192, &long), 0.0, &[])
        .unwrap();
    // While `a` is queued, an unrelated request goes to the idle instance.
    let other = [900, 901];
    let b = c
        .route(policy.as_mut(), &req(1, 1024, &other), 0.01, &[])
        .unwrap();
    assert_ne!(a.prefill, b.prefill);
    c.prefill_done(a.ticket, 1.0);
    c.finish(a.ticket, 2.0, true);
    c.prefill_done(b.ticket, 1.0);
    c.finish(b.ticket, 2.0, true);
    // Same long prefix plus a new block: back to `a`'s instance, with the
    // whole prefix believed cached.
    let mut longer = long.clone();
    longer.push(17);
    let r = c
        .route(policy.as_mut(), &req(2, 8704, &longer), 3.0, &[])
        .unwrap();
    assert_eq!(r.prefill, a.prefill);
    assert_eq!(r.cached_blocks, 16);
    assert!(r.predicted_prefill_s < a.predicted_prefill_s / 4.0);
    assert_eq!(c.prefix_blocks(a.prefill, &longer), 17);
    assert_eq!(c.prefix_blocks(b.prefill, &longer), 0);
}

#[test]
fn queue_estimate_drains_with_time() {
    let mut c = cluster(1, 1);
    let mut policy = PolicyName::RoundRobin.build(1);
    let a = c
        .route(policy.as_mut(), &req(0, 8192, &[1]), 10.0, &[])
        .unwrap();
    let p = a.predicted_prefill_s;
    assert!(p > 0.5, "an 8k prefill takes about a second: {p}");
    assert!((c.prefill()[0].queue_s - p).abs() < 1e-9);
    let b = c
        .route(policy.as_mut(), &req(1, 8192, &[2]), 10.0 + p / 2.0, &[])
        .unwrap();
    let q = c.prefill()[0].queue_s;
    assert!((q - (p / 2.0 + b.predicted_prefill_s)).abs() < 1e-9, "{q}");
    assert_eq!(c.prefill()[0].requests, 2);
    assert_eq!(c.prefill()[0].active_tokens, 16384);
    // The head overran its prediction: only the second remains counted.
    c.advance(10.0 + 2.0 * p);
    assert!((c.prefill()[0].queue_s - b.predicted_prefill_s).abs() < 1e-9);
    // The head returns: the second becomes head, its clock starts now.
    c.prefill_done(a.ticket, 10.0 + 2.0 * p);
    assert!((c.prefill()[0].queue_s - b.predicted_prefill_s).abs() < 1e-9);
    c.abort(b.ticket, 10.0 + 2.5 * p);
    assert_eq!(c.prefill()[0], PrefillLoad::default());
    assert_eq!(c.in_flight(), 1, "`a` still decodes");
    c.finish(a.ticket, 10.0 + 3.0 * p, true);
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn decode_lifecycle_and_mean_decode_time() {
    let mut c = cluster(1, 2);
    let mut policy = PolicyName::RoundRobin.build(1);
    let a = c
        .route(policy.as_mut(), &req(0, 1000, &[]), 0.0, &[])
        .unwrap();
    let d = c.decode()[a.decode];
    assert_eq!((d.inbound, d.inbound_tokens, d.batch), (1, 1064, 0));
    c.prefill_done(a.ticket, 0.5);
    let d = c.decode()[a.decode];
    assert_eq!((d.inbound, d.batch, d.reserved_tokens), (0, 1, 1064));
    assert_eq!(d.context_tokens, 1032);
    c.finish(a.ticket, 3.5, true);
    let d = c.decode()[a.decode];
    assert_eq!((d.batch, d.reserved_tokens), (0, 0));
    assert!((d.mean_decode_s - 3.0).abs() < 1e-9);
    // Aborted or unknown tickets change nothing.
    let b = c
        .route(policy.as_mut(), &req(1, 1000, &[]), 4.0, &[])
        .unwrap();
    c.abort(b.ticket, 5.0);
    c.abort(b.ticket, 5.0);
    c.prefill_done(12345, 5.0);
    assert_eq!(c.in_flight(), 0);
    assert!((c.decode()[a.decode].mean_decode_s - 3.0).abs() < 1e-9);
    assert_eq!(c.status(Role::Decode)[a.decode].routed, 1);
}

#[test]
fn unhealthy_instances_are_skipped_until_the_backoff_ends() {
    let mut c = cluster(2, 2);
    let mut policy = PolicyName::RoundRobin.build(1);
    c.mark_unhealthy(Role::Prefill, 0, 1.0);
    c.mark_unhealthy(Role::Decode, 1, 1.0);
    for k in 0..6 {
        let r = c
            .route(policy.as_mut(), &req(k, 100, &[]), 2.0, &[])
            .unwrap();
        assert_eq!((r.prefill, r.decode), (1, 0));
        c.abort(r.ticket, 2.0);
    }
    assert_eq!(
        c.route(policy.as_mut(), &req(9, 100, &[]), 2.0, &[1]),
        Err(RouteError::NoPrefill)
    );
    c.mark_unhealthy(Role::Decode, 0, 2.0);
    assert_eq!(
        c.route(policy.as_mut(), &req(9, 100, &[]), 2.0, &[]),
        Err(RouteError::NoDecode)
    );
    // After the 10 s backoff every instance is back.
    let mut seen = std::collections::HashSet::new();
    for k in 0..4 {
        let r = c
            .route(policy.as_mut(), &req(k, 100, &[]), 20.0, &[])
            .unwrap();
        seen.insert((r.prefill, r.decode));
    }
    assert!(seen.iter().any(|&(p, _)| p == 0), "{seen:?}");
    assert!(seen.iter().any(|&(_, d)| d == 1), "{seen:?}");
}

#[test]
fn a_failed_prefill_instance_loses_its_cache() {
    let mut c = cluster(2, 1);
    let mut policy = PolicyName::CacheAware.build(1);
    let blocks = [7, 8, 9];
    let r = c
        .route(policy.as_mut(), &req(0, 2000, &blocks), 0.0, &[])
        .unwrap();
    assert_eq!(c.prefix_blocks(r.prefill, &blocks), 3);
    c.abort(r.ticket, 0.1);
    c.mark_unhealthy(Role::Prefill, r.prefill, 0.1);
    assert_eq!(c.prefix_blocks(r.prefill, &blocks), 0);
}

#[test]
fn slo_rejections_register_nothing() {
    let mut cfg = LiveClusterConfig::default();
    cfg.slo.tbt_s = 0.001; // below any decode step
    let mut c = LiveCluster::new(cfg, 2, 1);
    let mut policy = PolicyName::Mooncake.build(1);
    assert_eq!(
        c.route(policy.as_mut(), &req(0, 100, &[1]), 0.0, &[]),
        Err(RouteError::Rejected(RejectReason::TbtSlo))
    );
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.prefix_blocks(0, &[1]) + c.prefix_blocks(1, &[1]), 0);

    // TTFT: a queue far beyond the SLO on the only instance.
    let mut cfg = LiveClusterConfig::default();
    cfg.slo.ttft_s = 2.0;
    let mut c = LiveCluster::new(cfg, 1, 1);
    let mut admitted = 0;
    let mut rejected = None;
    for k in 0..20 {
        match c.route(policy.as_mut(), &req(k, 8192, &[k]), 0.0, &[]) {
            Ok(_) => admitted += 1,
            Err(e) => {
                rejected = Some(e);
                break;
            }
        }
    }
    assert!((1..20).contains(&admitted), "{admitted}");
    assert_eq!(rejected, Some(RouteError::Rejected(RejectReason::TtftSlo)));
}

#[test]
fn early_admission_rejects_on_decode_memory() {
    let mut cfg = LiveClusterConfig {
        decode_capacity_tokens: 5000,
        ..LiveClusterConfig::default()
    };
    cfg.admission.mode = AdmissionMode::Early;
    let mut c = LiveCluster::new(cfg, 1, 1);
    let mut policy = PolicyName::RoundRobin.build(1);
    let a = c
        .route(policy.as_mut(), &req(0, 3000, &[]), 0.0, &[])
        .unwrap();
    c.prefill_done(a.ticket, 0.5);
    assert_eq!(
        c.route(policy.as_mut(), &req(1, 3000, &[]), 0.6, &[]),
        Err(RouteError::Rejected(RejectReason::DecodeOverload))
    );
    c.finish(a.ticket, 1.0, true);
    assert!(c
        .route(policy.as_mut(), &req(2, 3000, &[]), 1.1, &[])
        .is_ok());
}

#[test]
fn decode_peak_follows_the_uniform_stay_model() {
    let mut c = cluster(1, 1);
    let mut policy = PolicyName::RoundRobin.build(1);
    let a = c
        .route(policy.as_mut(), &req(0, 936, &[]), 0.0, &[])
        .unwrap(); // 1000 tokens
    c.prefill_done(a.ticket, 0.0);
    let b = c
        .route(policy.as_mut(), &req(1, 1936, &[]), 0.0, &[])
        .unwrap(); // 2000, inbound
    let join = b.predicted_ttft_s;
    assert!(join.is_nan(), "round-robin makes no prediction");
    let join = b.predicted_prefill_s; // queue 0 after `a` left prefill
    let hold = 10.0;
    assert_eq!(c.decode_peak_tokens(0, 0.0, 0.0, hold), 1000);
    assert_eq!(c.decode_peak_tokens(0, 0.0, join, hold), 3000);
    // `a` leaves at 10 s, `b` at join + 10 s.
    assert_eq!(c.decode_peak_tokens(0, 10.0, 10.0, hold), 2000);
    assert_eq!(c.decode_peak_tokens(0, join + hold, 100.0, hold), 0);
}

#[test]
fn every_policy_runs_on_a_partly_healthy_cluster() {
    for name in PolicyName::ALL {
        let mut c = cluster(3, 2);
        c.mark_unhealthy(Role::Prefill, 1, 0.0);
        let mut policy = name.build(7);
        for k in 0..30u64 {
            let blocks: Vec<u64> = (0..(k % 5)).map(|b| b + 100 * (k % 3)).collect();
            // Health changes mid-way (the view shrinks, then grows back).
            let now = if k < 20 {
                k as f64 * 0.05
            } else {
                30.0 + k as f64
            };
            if k == 10 {
                c.mark_unhealthy(Role::Decode, 0, now);
            }
            match c.route(policy.as_mut(), &req(k, 2000, &blocks), now, &[]) {
                Ok(r) => {
                    if k < 20 {
                        assert_ne!(r.prefill, 1, "{name}");
                    }
                    if (10..20).contains(&k) {
                        assert_eq!(r.decode, 1, "{name}");
                    }
                    assert!(r.prefill < 3 && r.decode < 2);
                    if k % 2 == 0 {
                        c.prefill_done(r.ticket, now);
                        c.finish(r.ticket, now + 0.01, true);
                    }
                }
                Err(e) => assert!(matches!(e, RouteError::Rejected(_)), "{name}: {e}"),
            }
        }
    }
}

#[test]
fn time_never_runs_backwards() {
    let mut c = cluster(1, 1);
    c.advance(5.0);
    c.advance(1.0);
    c.advance(f64::NAN);
    assert_eq!(c.now_s(), 5.0);
}

#[test]
fn colocated_requests_decode_where_they_prefill() {
    let cfg = LiveClusterConfig {
        colocated: true,
        ..LiveClusterConfig::default()
    };
    let mut c = LiveCluster::new(cfg, 3, 99);
    assert_eq!(c.len(Role::Decode), 3);
    for name in [
        PolicyName::Mooncake,
        PolicyName::RoundRobin,
        PolicyName::Dynamo,
    ] {
        let mut policy = name.build(3);
        for k in 0..9 {
            let r = c
                .route(policy.as_mut(), &req(k, 1000, &[k]), 0.0, &[])
                .unwrap();
            assert_eq!(r.decode, r.prefill, "{name}");
            c.abort(r.ticket, 0.0);
        }
    }
    // A failure takes the engine out on both sides, and an exclusion too.
    c.mark_unhealthy(Role::Decode, 1, 1.0);
    assert!(!c.is_healthy(Role::Prefill, 1));
    let mut policy = PolicyName::RoundRobin.build(1);
    for k in 0..6 {
        let r = c
            .route(policy.as_mut(), &req(k, 100, &[]), 2.0, &[0])
            .unwrap();
        assert_eq!((r.prefill, r.decode), (2, 2));
        c.abort(r.ticket, 2.0);
    }
}

#[test]
fn prefill_predictions_learn_the_engines_speed() {
    // An engine 10x faster than the cost model.
    let mut c = cluster(1, 1);
    let mut policy = PolicyName::RoundRobin.build(1);
    let model = c.cost().prefill_s(4096, 0);
    let mut now = 0.0;
    for k in 0..40 {
        let r = c
            .route(policy.as_mut(), &req(k, 4096, &[]), now, &[])
            .unwrap();
        now += model / 10.0;
        c.prefill_done(r.ticket, now);
        c.finish(r.ticket, now, true);
    }
    let speed = c.status(Role::Prefill)[0].speed;
    assert!((speed - 0.1).abs() < 0.01, "{speed}");
    let r = c
        .route(policy.as_mut(), &req(99, 4096, &[]), now, &[])
        .unwrap();
    assert!((r.predicted_prefill_s / model - speed).abs() < 1e-9);
    assert!((c.prefill()[0].queue_s - r.predicted_prefill_s).abs() < 1e-9);

    // One absurd sample moves it a bounded step; the factor stays in range.
    c.prefill_done(r.ticket, now + 1e6);
    let after = c.status(Role::Prefill)[0].speed;
    assert!(after > speed && after <= SPEED_RANGE.1, "{after}");

    // Off: the cost model is taken as is.
    let cfg = LiveClusterConfig {
        calibrate: false,
        ..LiveClusterConfig::default()
    };
    let mut c = LiveCluster::new(cfg, 1, 1);
    let r = c
        .route(policy.as_mut(), &req(0, 4096, &[]), 0.0, &[])
        .unwrap();
    c.prefill_done(r.ticket, model / 10.0);
    assert_eq!(c.status(Role::Prefill)[0].speed, 1.0);
}

#[test]
fn speed_prior_ignores_tiny_prompts_and_learns_from_long_ones_both_ways() {
    let mut c = cluster(1, 1);
    let mut policy = PolicyName::RoundRobin.build(1);
    let tiny = c.cost().prefill_s(8, 0);
    let long = c.cost().prefill_s(16_384, 0);
    assert!(tiny < 0.02 && long > 0.5, "{tiny} {long}");
    let mut now = 0.0;
    let mut serve = |c: &mut LiveCluster, k: u64, tokens: u32, took: f64| {
        let r = c
            .route(policy.as_mut(), &req(k, tokens, &[]), now, &[])
            .unwrap();
        now += took;
        c.prefill_done(r.ticket, now);
        c.finish(r.ticket, now, true);
    };
    // Cold start: ten tiny prompts answered 50x slower than modelled (HTTP
    // overhead) barely move the prior.
    for k in 0..10 {
        serve(&mut c, k, 8, tiny * 50.0);
    }
    let s = c.status(Role::Prefill)[0].speed;
    assert!(s < 1.5, "tiny prompts moved the factor to {s}");
    // Long prompts teach it quickly: faster than modelled...
    for k in 10..20 {
        serve(&mut c, k, 16_384, long * 0.2);
    }
    let fast = c.status(Role::Prefill)[0].speed;
    assert!(fast < 0.3, "{fast}");
    // ...and slower again.
    for k in 20..30 {
        serve(&mut c, k, 16_384, long * 2.0);
    }
    let slow = c.status(Role::Prefill)[0].speed;
    assert!(slow > 1.5, "{slow}");
}
