//! `mooncake fake-engine`: a fake OpenAI-compatible LLM engine whose
//! latencies follow the conductor's cost model (scaled by `--time-scale`),
//! for testing and demonstrating `mooncake router` without GPUs. The engine
//! is `mooncake_router::fake_engine`; this module parses flags, binds and
//! prints the address.

use anyhow::Context;
use mooncake_conductor::cost::CostConfig;
use mooncake_router::fake_engine::{EngineRole, FakeEngine, FakeEngineConfig, KvEventsConfig};
use mooncake_router::server::Server;
use std::path::PathBuf;

/// Flags of `mooncake fake-engine`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bind address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Bind port (0 = any free port; the address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// prefill or decode (reported in /stats).
    #[arg(long, default_value = "prefill")]
    role: EngineRole,
    /// Multiplier on modelled latencies (0 = instant).
    #[arg(long, default_value_t = 0.01)]
    time_scale: f64,
    /// Characters per prefix block (match the router's).
    #[arg(long, default_value_t = mooncake_router::prompt::DEFAULT_BLOCK_CHARS)]
    block_chars: usize,
    /// Model name served.
    #[arg(long, default_value = "fake-llama3-70b")]
    model: String,
    /// Tokens its prefix cache holds.
    #[arg(long, default_value_t = 1_000_000)]
    cache_tokens: u64,
    /// Output tokens when a request gives no max_tokens.
    #[arg(long, default_value_t = 16)]
    default_max_tokens: u32,
    /// Model and hardware config (TOML, or JSON by extension).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Publish KV-cache events as vLLM does on this ZMQ PUB endpoint
    /// (`tcp://127.0.0.1:5557`); blocks become `--block-size`-token blocks.
    #[arg(long)]
    kv_events: Option<String>,
    /// ZMQ ROUTER endpoint answering replay requests (`tcp://127.0.0.1:5558`).
    #[arg(long, requires = "kv_events")]
    kv_replay: Option<String>,
    /// Tokens per KV block (vLLM's --block-size).
    #[arg(long, default_value_t = mooncake_router::kv_events::hash::DEFAULT_BLOCK_SIZE)]
    block_size: u32,
    /// vLLM's --prefix-caching-hash-algo: sha256 or sha256_cbor.
    #[arg(long, default_value = "sha256")]
    hash_algo: String,
    /// NONE_HASH seed (vLLM: PYTHONHASHSEED, else `vllm-none-hash`).
    #[arg(long, default_value = mooncake_router::kv_events::hash::DEFAULT_SEED)]
    hash_seed: String,
    /// Data-parallel rank stamped on event batches.
    #[arg(long, default_value_t = 0)]
    dp_rank: u32,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale >= 0.0,
        "--time-scale must be >= 0"
    );
    anyhow::ensure!(args.block_chars > 0, "--block-chars must be > 0");
    let cost = match &args.config {
        Some(p) => CostConfig::from_file(p)?,
        None => CostConfig::default(),
    };
    anyhow::ensure!(args.block_size > 0, "--block-size must be > 0");
    let kv_events = match &args.kv_events {
        Some(ep) => Some(KvEventsConfig {
            endpoint: ep.clone(),
            replay_endpoint: args.kv_replay.clone(),
            block_size: args.block_size,
            hash_algo: args.hash_algo.parse().map_err(anyhow::Error::msg)?,
            hash_seed: args.hash_seed.clone(),
            dp_rank: args.dp_rank,
        }),
        None => None,
    };
    let engine = FakeEngine::new(FakeEngineConfig {
        role: args.role,
        time_scale: args.time_scale,
        block_chars: args.block_chars,
        model: args.model,
        cache_tokens: args.cache_tokens,
        default_max_tokens: args.default_max_tokens,
        cost,
        kv_events,
    })?;
    engine.start_events().await.map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let server = Server::spawn(listener, engine.app())?;
    println!(
        "mooncake fake-engine ({}) listening on {}",
        args.role,
        server.url()
    );
    super::ready::announce(
        "fake-engine",
        serde_json::json!({"url": server.url(), "addr": server.addr().to_string()}),
    )?;
    super::router::shutdown_signal().await?;
    server.shutdown().await?;
    engine.stop_events().await;
    Ok(())
}
