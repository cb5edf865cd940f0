//! Conductor: the KVCache-centric scheduler of the Mooncake paper (FAST'25),
//! its baseline and peer policies, and a trace-driven simulator.
//!
//! Layout (pure cores; no I/O except the trace reader):
//! - [`trace`]: the published trace format, a streaming loader, statistics.
//! - [`cache`]: KV-cache block bookkeeping with LRU / LFU / LengthAware eviction.
//! - [`cost`]: the engine cost model (prefill, KV transfer, decode step).
//! - [`policy`]: scheduling policies (Algorithm 1, baselines, peers) and admission control.
//! - [`sim`]: the trace-driven discrete-event simulator of a disaggregated cluster.
//! - [`plot`]: dependency-free SVG charts (lines, histograms, CDFs).

pub mod cache;
pub mod cost;
pub mod plot;
pub mod policy;
pub mod sim;
pub mod trace;
