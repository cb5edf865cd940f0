//! Conductor: the KVCache-centric scheduler of the Mooncake paper (FAST'25),
//! its baseline and peer policies, and a trace-driven simulator.
//!
//! Layout (pure cores; no I/O except the trace reader):
//! - [`trace`]: the published trace format, a streaming loader, statistics.
//! - [`cache`]: KV-cache block bookkeeping with LRU / LFU / LengthAware eviction.
//! - [`plot`]: dependency-free SVG charts (lines, histograms, CDFs).

pub mod cache;
pub mod plot;
pub mod trace;
