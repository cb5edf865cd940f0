//! Conductor: the KVCache-centric scheduler of the Mooncake paper (FAST'25),
//! its baseline and peer policies, admission control and the cost model.
//! This is the core the live router (`mooncake-router`) links; the offline
//! tools (trace reader, simulator, plots) live in `mooncake-sim`.
//!
//! Layout (pure cores; no I/O except reading a cost-model file):
//! - [`cache`]: KV-cache block bookkeeping with LRU / LFU / LengthAware eviction.
//! - [`cost`]: the engine cost model (prefill, KV transfer, decode step).
//! - [`policy`]: scheduling policies (Algorithm 1, baselines, peers),
//!   admission control, and [`policy::decide`], the one
//!   "policy → placement check → admission" pipeline of router and simulator.

pub mod cache;
pub mod cost;
pub mod policy;
