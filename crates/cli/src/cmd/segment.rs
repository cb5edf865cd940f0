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
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub size: usize,
    /// Enabled transports, comma-separated (tcp,shm).
    #[arg(long)]
    pub protocol: Option<String>,
    /// `--cluster-token` (alias `--token`) / `--insecure`.
    #[command(flatten)]
    pub auth: super::auth::AuthArgs,
    /// TOML file with a TransferEngineConfig.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Parse `64MiB`, `1GiB`, `512KiB`, `4k`, `1000`.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} overflows"))
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

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
