//! `mooncake indexer`: the global KV prefix index as a standalone service,
//! in the shape of the Mooncake Conductor indexer API (`POST /register`,
//! `/unregister`, `/query`, `/query_by_hash`, `GET /status`). Engines are
//! registered at run time, or with `--register` at start. The service is
//! `mooncake_router::indexer::service`; this module binds and waits.

use anyhow::Context;
use mooncake_router::indexer::service::{standalone_app, IndexerService, Register};
use mooncake_router::kv_events::hash::{HashAlgo, DEFAULT_BLOCK_SIZE, DEFAULT_SEED};
use mooncake_router::server::Server;

/// Flags of `mooncake indexer`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bind address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Bind port (0 = any free port; the address is printed).
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Engines' --prefix-caching-hash-algo (for `/query` by token ids).
    #[arg(long, default_value = "sha256")]
    hash_algo: String,
    /// Engines' PYTHONHASHSEED (vLLM's default otherwise).
    #[arg(long, default_value = DEFAULT_SEED)]
    hash_seed: String,
    /// Block size whose root hashes are checked against the engines'.
    #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE)]
    block_size: u32,
    /// Register a publisher at start: a `/register` JSON body (repeat).
    #[arg(long)]
    register: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let algo: HashAlgo = args.hash_algo.parse().map_err(anyhow::Error::msg)?;
    let svc = IndexerService::new(algo, &args.hash_seed, args.block_size);
    for r in &args.register {
        let reg: Register = serde_json::from_str(r).with_context(|| format!("--register {r}"))?;
        svc.register(reg).map_err(anyhow::Error::msg)?;
    }
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let server = Server::spawn(listener, standalone_app(&svc))?;
    println!("mooncake indexer listening on {}", server.url());
    super::ready::announce(
        "indexer",
        serde_json::json!({"url": server.url(), "addr": server.addr().to_string()}),
    )?;
    super::router::shutdown_signal().await?;
    server.shutdown().await?;
    Ok(())
}
