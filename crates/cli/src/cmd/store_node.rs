//! `mooncake store-node`: a storage process. Mounts a segment of this
//! process's memory into the pool of the master at `--master` and heartbeats
//! until killed (Ctrl-C / SIGTERM unmounts cleanly first).
//!
//! Prints one line `READY segment=<host:port> size=<bytes>` on stdout once the
//! segment is mounted, so scripts and tests can wait for it.

use anyhow::Context;
use mooncake_config::parse_size;
use mooncake_store::client::Client;

use super::client::ConnArgs;

/// Flags of `mooncake store-node`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Bytes to contribute to the pool (`1GiB`, `512MB`, ...).
    #[arg(long, default_value = "1GiB", value_name = "SIZE", value_parser = parse_size)]
    pub segment_size: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = args.conn.config()?;
    cfg.global_segment_size = args.segment_size;
    cfg.local_buffer_size = 0;
    let client = Client::connect(cfg)
        .await
        .context("starting the storage node")?;
    super::ready::announce(
        "store-node",
        serde_json::json!({
            "segment": client.segment_name(),
            "size": client.mounted_size(),
        }),
    )?;
    wait_for_shutdown().await;
    tracing::info!("shutting down: unmounting the segment");
    client.close().await?;
    Ok(())
}

/// Resolve on Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
