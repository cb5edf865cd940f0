//! Shared helpers for the simulator's trace tests.
#![allow(dead_code)]

use mooncake_conductor::policy::PolicyName;
use mooncake_conductor::sim::{simulate, NoObserver, SimConfig, SimSummary};
use mooncake_conductor::trace::TraceRecord;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The conversation trace, resolved from the repository root.
pub fn trace_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/traces/conversation_trace.jsonl")
}

/// The conversation trace, parsed once per test binary.
pub fn trace() -> &'static [TraceRecord] {
    static TRACE: OnceLock<Vec<TraceRecord>> = OnceLock::new();
    TRACE.get_or_init(|| {
        let p = trace_path();
        let text = std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("valid trace line"))
            .collect()
    })
}

/// Runs `policy` over the conversation trace.
pub fn run(policy: PolicyName, cfg: &SimConfig) -> SimSummary {
    let recs = trace().iter().cloned().map(Ok::<_, std::convert::Infallible>);
    simulate(cfg.clone(), policy.build(cfg.seed), recs, &mut NoObserver)
        .expect("simulation runs")
        .summary
}
