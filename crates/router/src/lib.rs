//! The Conductor's live router: Mooncake's scheduling policies in front of
//! real, OpenAI-compatible prefill and decode instances (vLLM, SGLang).
//!
//! Pure core, thin shell:
//! - [`prompt`]: request parsing and tokenizer-free prefix block hashing.
//! - [`cluster`]: [`cluster::LiveCluster`], the router's model of its
//!   instances (queues, approximate prefix caches, decode load, health);
//!   implements conductor's `ClusterView`, tested without sockets.
//! - [`config`]: [`config::RouterConfig`], loadable from TOML, env and flags.
//! - [`metrics`]: Prometheus counters and histograms of the router.
//! - [`server`]: the HTTP shell (axum): the disaggregated request flow.
//! - [`fake_engine`]: a fake LLM engine with cost-model latencies, for tests
//!   and demos where no GPU is available.
//! - [`error`]: OpenAI-style error bodies.
//! - [`kv_events`]: vLLM's KV-cache events (wire format, block hash, ZMQ).
//! - [`indexer`]: the global prefix index built from those events, and its
//!   HTTP service (Mooncake Conductor indexer API).

pub mod cluster;
pub mod config;
pub mod error;
pub mod fake_engine;
pub mod indexer;
pub mod kv_events;
pub mod metrics;
pub mod prompt;
pub mod server;
