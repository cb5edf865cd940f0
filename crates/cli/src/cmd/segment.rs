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

/// Flags of this subcommand: the top layer of [`TransferEngineConfig::load`], by field name
/// (a flag that is not an engine setting is `#[serde(skip)]`).
#[derive(clap::Args, Debug, serde::Serialize)]
pub struct Args {
    /// `host` or `host:port` to serve on (port 0: pick a free one).
    #[arg(long)]
    pub local_hostname: Option<String>,
    /// Metadata connection string (`P2PHANDSHAKE`, `http://..`, `etcd://..`, `redis://..`).
    #[arg(long = "metadata", value_name = "URL")]
    pub metadata_server: Option<String>,
    /// Size of the served buffer (e.g. 64MiB, 1GiB, 4096).
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size_usize)]
    #[serde(skip)]
    pub size: usize,
    /// Enabled transports, comma-separated (tcp,shm).
    #[arg(long = "protocol", value_name = "PROTOCOL", value_delimiter = ',')]
    pub protocols: Option<Vec<Protocol>>,
    /// `--cluster-token` (alias `--token`) / `--insecure`.
    #[command(flatten)]
    #[serde(skip)]
    pub auth: super::auth::AuthArgs,
    /// TOML file with a TransferEngineConfig.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// A segment's defaults: the engine's, with `P2PHANDSHAKE` metadata.
pub fn defaults() -> TransferEngineConfig {
    TransferEngineConfig {
        metadata_server: mooncake_metadata::P2P_HANDSHAKE.into(),
        ..Default::default()
    }
}

/// [`defaults`] < `--config` < environment < flags.
fn build_config(args: &Args) -> anyhow::Result<TransferEngineConfig> {
    let mut config = TransferEngineConfig::load(&defaults(), args.config.as_deref(), args)?;
    args.auth.apply_to_engine(&mut config);
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
    args.auth.install()?;
    let config = build_config(&args)?;
    let engine = TransferEngine::start(config)
        .await
        .context("starting the transfer engine")?;
    let buffer = engine
        .allocate_managed_buffer(args.size)
        .await
        .context("allocating the segment buffer")?;
    super::ready::announce(
        "segment",
        serde_json::json!({
            "segment": engine.segment_name(),
            "rpc_port": engine.rpc_port(),
            "buffer_addr": buffer.addr(),
            "buffer_len": buffer.len(),
        }),
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: Args,
    }

    #[test]
    fn flags_overlay_the_engine_config() {
        let a = T::try_parse_from(["segment", "--protocol", "tcp", "--token", "k"])
            .unwrap()
            .a;
        let c = build_config(&a).unwrap();
        assert_eq!(c.protocols, vec![Protocol::Tcp]);
        assert_eq!(c.cluster_token.as_deref(), Some("k"));
        assert_eq!(c.metadata_server, mooncake_metadata::P2P_HANDSHAKE);
        let a = T::try_parse_from(["segment", "--metadata", "http://h/metadata"])
            .unwrap()
            .a;
        let c = build_config(&a).unwrap();
        assert_eq!(c.metadata_server, "http://h/metadata");
        assert_eq!(c.slice_size, TransferEngineConfig::default().slice_size);
    }
}
