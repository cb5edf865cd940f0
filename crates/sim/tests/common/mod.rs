//! Shared helpers for the simulator's trace tests.
#![allow(dead_code)]

use mooncake_conductor::policy::{Policy, PolicyName};
use mooncake_sim::sim::{simulate, NoObserver, SimConfig, SimSummary};
use mooncake_sim::trace::{published_trace, read_trace, TraceRecord};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The conversation trace (`../shared/traces` from the repository root).
pub fn trace_path() -> PathBuf {
    published_trace("conversation_trace.jsonl").expect("the published conversation trace")
}

/// The conversation trace, parsed once per test binary.
pub fn trace() -> &'static [TraceRecord] {
    static TRACE: OnceLock<Vec<TraceRecord>> = OnceLock::new();
    TRACE.get_or_init(|| {
        let p = trace_path();
        read_trace(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
    })
}

/// Runs `policy` over the conversation trace.
pub fn run(policy: PolicyName, cfg: &SimConfig) -> SimSummary {
    run_with(policy.build(cfg.seed), cfg)
}

/// Runs a policy object over the conversation trace.
pub fn run_with(policy: Box<dyn Policy>, cfg: &SimConfig) -> SimSummary {
    let recs = trace()
        .iter()
        .cloned()
        .map(Ok::<_, std::convert::Infallible>);
    simulate(cfg.clone(), policy, recs, &mut NoObserver)
        .expect("simulation runs")
        .summary
}
