//! `mooncake real-client`: the reference's standalone store client. Owns one
//! store client (mounts `--global_segment_size` bytes into the pool of the
//! master at `--master_server_address`) and serves *dummy clients* (Python's
//! `MooncakeDistributedStore.setup_dummy(mem_pool_size, local_buffer_size,
//! "127.0.0.1:50052")`) on `--host:--port` until killed.
//!
//! Prints one line `READY service=<host:port> segment=<host:port> size=<bytes>`
//! on stdout once it serves, so scripts and tests can wait for it.

use std::io::Write;

use anyhow::Context;
use mooncake_store::client::{Client, ClientConfig};
use mooncake_store::client_service::{serve, DEFAULT_PORT};

use super::store_node::{parse_size_arg, wait_for_shutdown};

/// Flags of `mooncake real-client` (the reference's standalone client's
/// names; the dashed spellings work too).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address the dummy-client service listens on (keep it loopback: dummies
    /// share memory with this process, so they must run on this host).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the dummy-client service.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Bytes this process contributes to the pool (`4GB`, `512MiB`, ...).
    #[arg(long = "global_segment_size", alias = "global-segment-size", default_value = "1GiB", value_parser = parse_size_arg)]
    pub global_segment_size: u64,
    /// Staging buffer for dummies' plain-bytes put/get.
    #[arg(long = "local_buffer_size", alias = "local-buffer-size", default_value = "64MiB", value_parser = parse_size_arg)]
    pub local_buffer_size: u64,
    /// Master RPC address.
    #[arg(
        long = "master_server_address",
        alias = "master-server-address",
        alias = "master",
        env = "MOONCAKE_MASTER",
        default_value = "127.0.0.1:50051"
    )]
    pub master_server_address: String,
    /// Metadata connection string (`http://host:port/metadata`, `etcd://...`, `P2PHANDSHAKE`).
    #[arg(
        long = "metadata_server",
        alias = "metadata-server",
        alias = "metadata",
        env = "MC_METADATA_SERVER",
        default_value = "http://127.0.0.1:8080/metadata"
    )]
    pub metadata_server: String,
    /// This process's Transfer Engine address (`host` or `host:port`).
    #[arg(
        long = "local_hostname",
        alias = "local-hostname",
        env = "LOCAL_HOSTNAME",
        default_value = "127.0.0.1"
    )]
    pub local_hostname: String,
    /// Transport between hosts.
    #[arg(long, env = "MOONCAKE_PROTOCOL", default_value = "tcp")]
    pub protocol: String,
    /// RDMA device names (accepted for compatibility; ignored without RDMA).
    #[arg(long = "device_name", alias = "device-name", default_value = "")]
    pub device_name: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::default();
    cfg.apply_env()?;
    cfg.master_server_addr = args.master_server_address.clone();
    cfg.metadata_server = args.metadata_server.clone();
    cfg.local_hostname = args.local_hostname.clone();
    cfg.protocol = args.protocol.clone();
    cfg.global_segment_size = args.global_segment_size;
    cfg.local_buffer_size = args.local_buffer_size;
    let client = Client::connect(cfg)
        .await
        .context("starting the real client")?;
    let addr = format!("{}:{}", args.host, args.port);
    let service = serve(client.clone(), &addr)
        .await
        .with_context(|| format!("listening for dummy clients on {addr}"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "READY service={} segment={} size={}",
            service.local_addr(),
            client.segment_name(),
            client.mounted_size()
        )?;
        out.flush()?;
    }
    wait_for_shutdown().await;
    tracing::info!("shutting down: closing dummy sessions and unmounting the segment");
    drop(service);
    client.close().await?;
    Ok(())
}
