//! `mooncake segment`: serve one Transfer Engine segment holding one managed
//! (memfd-backed) buffer until SIGTERM or Ctrl-C.
//!
//! When ready it prints exactly one JSON line on stdout —
//! `{"segment": "host:port", "rpc_port": N, "buffer_addr": N, "buffer_len": N}` —
//! so scripts and tests can address the buffer. Logs go to stderr.
//! Configuration: `--config file.toml` (a `TransferEngineConfig`), then the
//! reference's `MC_*` environment variables, then flags.

use std::path::PathBuf;

use anyhow::Context;
use mooncake_config::parse_size_usize;
use mooncake_transfer::{Protocol, TransferEngine, TransferEngineConfig};

/// Flags of this subcommand.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// `host` or `host:port` to serve on (port 0: pick a free one).
    #[arg(long)]
    pub local_hostname: Option<String>,
    /// Metadata connection string (`P2PHANDSHAKE`, `http://..`, `etcd://..`, `redis://..`).
    #[arg(long)]
    pub metadata: Option<String>,
    /// Size of the served buffer (e.g. 64MiB, 1GiB, 4096).
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size_usize)]
    pub size: usize,
    /// Enabled transports, comma-separated (tcp,shm).
    #[arg(long)]
    pub protocol: Option<String>,
    /// Cluster token peers must present.
    #[arg(long)]
    pub token: Option<String>,
    /// TOML file with a TransferEngineConfig.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn build_config(args: &Args) -> anyhow::Result<TransferEngineConfig> {
    let mut config = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            TransferEngineConfig::from_toml(&text)?
        }
        None => TransferEngineConfig {
            metadata_server: mooncake_metadata::P2P_HANDSHAKE.into(),
            ..Default::default()
        },
    };
    config.apply_env()?;
    if let Some(h) = &args.local_hostname {
        config.local_hostname = h.clone();
    }
    if let Some(m) = &args.metadata {
        config.metadata_server = m.clone();
    }
    if let Some(p) = &args.protocol {
        config.protocols = Protocol::parse_list(p)?;
    }
    if let Some(t) = &args.token {
        config.cluster_token = Some(t.clone());
    }
    Ok(config)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = build_config(&args)?;
    let engine = TransferEngine::start(config)
        .await
        .context("starting the transfer engine")?;
    let buffer = engine
        .allocate_managed_buffer(args.size)
        .await
        .context("allocating the segment buffer")?;
    let ready = serde_json::json!({
        "segment": engine.segment_name(),
        "rpc_port": engine.rpc_port(),
        "buffer_addr": buffer.addr(),
        "buffer_len": buffer.len(),
    });
    println!("{ready}");
    tracing::info!(
        segment = engine.segment_name(),
        size = args.size,
        "serving segment"
    );
    wait_for_signal().await?;
    drop(buffer);
    engine.shutdown().await;
    Ok(())
}
