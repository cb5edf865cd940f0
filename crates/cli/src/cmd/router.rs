//! `mooncake router`: the Conductor's live router in front of real prefill
//! and decode instances (vLLM / SGLang with a KV connector, or
//! `mooncake fake-engine`).
//!
//! Configuration sources, later winning: defaults, `--config <toml>` (router
//! keys at the top level, the cost model in `[model]` / `[hardware]`
//! sections as `mooncake sim --config` reads them), environment
//! (`MOONCAKE_ROUTER_<KEY>`, lists comma-separated), flags. The router
//! itself is `mooncake_router::server`; this module only assembles the
//! config, binds, prints the address and waits for SIGINT / SIGTERM.

use anyhow::Context;
use mooncake_router::config::RouterConfig;
use mooncake_router::server::{RouterService, Server};
use std::path::PathBuf;

/// Flags of `mooncake router`.
/// They are the top layer of [`RouterConfig::load`], by key name.
#[derive(clap::Args, Debug, Default, serde::Serialize)]
pub struct Args {
    /// TOML file: router keys (flag names with `_`) and `[model]` / `[hardware]`.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// disaggregated (prefill + decode instances, two legs per request) or
    /// colocated (workers that prefill and decode) [default: disaggregated].
    #[arg(long)]
    pub mode: Option<String>,
    /// A prefill instance's base URL (repeat for several).
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefill: Vec<String>,
    /// A decode instance's base URL (repeat for several).
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decode: Vec<String>,
    /// Colocated mode: an engine's base URL (repeat for several).
    #[arg(long)]
    #[serde(rename = "workers", skip_serializing_if = "Vec::is_empty")]
    pub worker: Vec<String>,
    /// Scheduling policy: mooncake, mooncake-local, dynamo, sglang, cache-aware,
    /// load-only, least-loaded, round-robin, random [default: mooncake].
    #[arg(long)]
    pub policy: Option<String>,
    /// Admission control after the policy: none, early, predictive [default: none].
    #[arg(long)]
    pub admission: Option<String>,
    /// Reject when the decode memory share would exceed this [default: 1.0].
    #[arg(long)]
    pub admission_threshold: Option<f64>,
    /// Bind address [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,
    /// Bind port, 0 for any [default: 8000].
    #[arg(long)]
    pub port: Option<u16>,
    /// TTFT SLO in seconds [default: 30].
    #[arg(long)]
    pub slo_ttft: Option<f64>,
    /// TBT SLO in seconds [default: 0.1].
    #[arg(long)]
    pub slo_tbt: Option<f64>,
    /// Characters per prefix block, ≈ 4 per token [default: 2048].
    #[arg(long)]
    pub block_chars: Option<usize>,
    /// Output tokens assumed without `max_tokens` [default: 256].
    #[arg(long)]
    pub default_max_tokens: Option<u32>,
    /// Tokens each prefill instance's approximate cache holds [default: the
    /// cost model's KV capacity].
    #[arg(long)]
    pub cache_tokens: Option<u64>,
    /// Eviction policy of those caches: lru, lfu, length-aware [default: lru].
    #[arg(long)]
    pub cache_policy: Option<String>,
    /// Seconds a failed instance is skipped [default: 10].
    #[arg(long)]
    pub backoff_secs: Option<f64>,
    /// Learn each prefill instance's speed vs the cost model from measured
    /// answer times: true or false [default: true].
    #[arg(long)]
    pub calibrate: Option<bool>,
    /// Seed of randomised policies [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// KV-event ZMQ PUB endpoint of each prefill instance, in order (repeat;
    /// `""` for one without events): its prefix cache becomes exact.
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kv_events: Vec<String>,
    /// KV-event replay (ROUTER) endpoint of each, in order (repeat).
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kv_replay: Vec<String>,
    /// Engines' KV block size in tokens [default: 16].
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Engines' --prefix-caching-hash-algo: sha256, sha256_cbor [default: sha256].
    #[arg(long)]
    pub hash_algo: Option<String>,
    /// Engines' PYTHONHASHSEED [default: vLLM's `vllm-none-hash`].
    #[arg(long)]
    pub hash_seed: Option<String>,
    /// Seconds between health probes of failed instances, 0 = off [default: 1].
    #[arg(long)]
    pub probe_secs: Option<f64>,
    /// Model context length: longer requests get a 400, 0 = none [default: 0].
    #[arg(long)]
    pub max_model_len: Option<u64>,
}

impl Args {
    /// The effective configuration: defaults < file < env < flags.
    pub fn to_config(&self) -> anyhow::Result<RouterConfig> {
        Ok(RouterConfig::load(
            self.config.as_deref(),
            std::env::vars(),
            self,
        )?)
    }
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
    let service = RouterService::new(cfg.clone())?;
    let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .with_context(|| format!("binding {}:{}", cfg.host, cfg.port))?;
    let server = Server::spawn(listener, service.app())?;
    // Tests and scripts read this line to learn the port (`--port 0`).
    println!(
        "mooncake router listening on {} (policy {}, {:?}: {} prefill, {} decode)",
        server.url(),
        cfg.policy,
        cfg.mode,
        cfg.prefill_urls().len(),
        cfg.decode_urls().len()
    );
    super::ready::announce(
        "router",
        serde_json::json!({"url": server.url(), "addr": server.addr().to_string()}),
    )?;
    tracing::info!(addr = %server.addr(), policy = %cfg.policy, "router started");
    shutdown_signal().await?;
    server.shutdown().await?;
    Ok(())
}
