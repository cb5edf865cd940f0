//! `mooncake real-client`: the reference's standalone store client. Owns one
//! store client (mounts `--global_segment_size` bytes into the pool of the
//! master at `--master_server_address`) and serves *dummy clients* (Python's
//! `MooncakeDistributedStore.setup_dummy(mem_pool_size, local_buffer_size,
//! "127.0.0.1:50052")`) on `--host:--port` until killed.
//!
//! Prints one line `READY service=<host:port> segment=<host:port> size=<bytes>`
//! on stdout once it serves, so scripts and tests can wait for it.

use anyhow::Context;
use mooncake_store::client::{Client, ClientConfig};
use mooncake_store::client_service::{serve, DEFAULT_PORT};

use mooncake_config::parse_size;

use super::store_node::wait_for_shutdown;

/// Flags of `mooncake real-client` (the reference's standalone client's
/// names; the dashed spellings work too): the top layer of [`ClientConfig::load`], by field
/// name. Precedence: built-in defaults (a 1 GiB segment) < `--config` file < environment
/// (`MOONCAKE_CLIENT_<FIELD>`, `MOONCAKE_MASTER`, `MC_METADATA_SERVER`, `LOCAL_HOSTNAME`,
/// `MOONCAKE_PROTOCOL`, ...) < flags.
#[derive(clap::Args, Debug, serde::Serialize)]
pub struct Args {
    /// Address the dummy-client service listens on (keep it loopback: dummies
    /// share memory with this process, so they must run on this host).
    #[arg(long, default_value = "127.0.0.1")]
    #[serde(skip)]
    pub host: String,
    /// Port of the dummy-client service.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    #[serde(skip)]
    pub port: u16,
    /// Store client settings as TOML (the fields of `ClientConfig`:
    /// `master_server_addr`, `metadata_server`, `global_segment_size = "4GB"`, ...).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<std::path::PathBuf>,
    /// Bytes this process contributes to the pool (`4GB`, `512MiB`, ...).
    #[arg(long = "global_segment_size", alias = "global-segment-size", value_name = "SIZE", value_parser = parse_size)]
    pub global_segment_size: Option<u64>,
    /// Staging buffer for dummies' plain-bytes put/get.
    #[arg(long = "local_buffer_size", alias = "local-buffer-size", value_name = "SIZE", value_parser = parse_size)]
    pub local_buffer_size: Option<u64>,
    /// Master RPC address.
    #[arg(
        long = "master_server_address",
        alias = "master-server-address",
        alias = "master"
    )]
    pub master_server_addr: Option<String>,
    /// Metadata connection string (`http://host:port/metadata`, `etcd://...`,
    /// `P2PHANDSHAKE`).
    #[arg(
        long = "metadata_server",
        alias = "metadata-server",
        alias = "metadata"
    )]
    pub metadata_server: Option<String>,
    /// This process's Transfer Engine address (`host` or `host:port`).
    #[arg(long = "local_hostname", alias = "local-hostname")]
    pub local_hostname: Option<String>,
    /// Transport between hosts.
    #[arg(long)]
    pub protocol: Option<String>,
    /// RDMA device names (accepted for compatibility; ignored without RDMA).
    #[arg(long = "device_name", alias = "device-name", default_value = "")]
    #[serde(skip)]
    pub device_name: String,
    /// `--cluster-token` / `--insecure`.
    #[command(flatten)]
    #[serde(skip)]
    pub auth: super::auth::AuthArgs,
}

impl Args {
    /// The store client's settings: defaults, then the file, the
    /// environment, the flags.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        Ok(ClientConfig::load(
            &defaults(),
            self.config.as_deref(),
            self,
        )?)
    }
}

/// A real client's defaults: the store client's, with a 1 GiB segment.
pub fn defaults() -> ClientConfig {
    ClientConfig {
        global_segment_size: 1 << 30,
        ..ClientConfig::default()
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    args.auth.install()?;
    let cfg = args.client_config()?;
    let client = Client::connect(cfg)
        .await
        .context("starting the real client")?;
    let addr = format!("{}:{}", args.host, args.port);
    let service = serve(client.clone(), &addr)
        .await
        .with_context(|| format!("listening for dummy clients on {addr}"))?;
    super::ready::announce(
        "real-client",
        serde_json::json!({
            "service": service.local_addr().to_string(),
            "segment": client.segment_name(),
            "size": client.mounted_size(),
        }),
    )?;
    wait_for_shutdown().await;
    tracing::info!("shutting down: closing dummy sessions and unmounting the segment");
    drop(service);
    client.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(
            &path,
            "master_server_addr = \"10.0.0.1:50051\"\nglobal_segment_size = \"2GB\"\nprotocol = \"rdma\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "x",
            "--config",
            path.to_str().unwrap(),
            "--global-segment-size",
            "16MiB",
            "--protocol",
            "tcp",
        ]);
        let cfg = cli.args.client_config().unwrap();
        assert_eq!(cfg.global_segment_size, 16 << 20, "flag over file");
        assert_eq!(cfg.protocol, "tcp");
        assert_eq!(cfg.local_buffer_size, 64 << 20, "default kept");
        if std::env::var_os("MOONCAKE_MASTER").is_none()
            && std::env::var_os("MASTER_SERVER").is_none()
        {
            assert_eq!(
                cfg.master_server_addr, "10.0.0.1:50051",
                "file over default"
            );
        }
        let cli = Cli::parse_from(["x", "--port", "7"]);
        assert_eq!(cli.args.port, 7);
        assert_eq!(
            cli.args.client_config().unwrap().global_segment_size,
            1 << 30
        );
    }
}
