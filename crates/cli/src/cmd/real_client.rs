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
/// names; the dashed spellings work too). Precedence: built-in defaults <
/// `--config` file < environment < flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address the dummy-client service listens on (keep it loopback: dummies
    /// share memory with this process, so they must run on this host).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the dummy-client service.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Store client settings as TOML (the fields of `ClientConfig`:
    /// `master_server_addr`, `metadata_server`, `global_segment_size = "4GB"`, ...).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Bytes this process contributes to the pool (`4GB`, `512MiB`, ...) [default: 1GiB].
    #[arg(long = "global_segment_size", alias = "global-segment-size", value_parser = parse_size_arg)]
    pub global_segment_size: Option<u64>,
    /// Staging buffer for dummies' plain-bytes put/get [default: 64MiB].
    #[arg(long = "local_buffer_size", alias = "local-buffer-size", value_parser = parse_size_arg)]
    pub local_buffer_size: Option<u64>,
    /// Master RPC address [default: 127.0.0.1:50051].
    #[arg(
        long = "master_server_address",
        alias = "master-server-address",
        alias = "master",
        env = "MOONCAKE_MASTER"
    )]
    pub master_server_address: Option<String>,
    /// Metadata connection string (`http://host:port/metadata`, `etcd://...`,
    /// `P2PHANDSHAKE`) [default: http://127.0.0.1:8080/metadata].
    #[arg(
        long = "metadata_server",
        alias = "metadata-server",
        alias = "metadata",
        env = "MC_METADATA_SERVER"
    )]
    pub metadata_server: Option<String>,
    /// This process's Transfer Engine address (`host` or `host:port`) [default: 127.0.0.1].
    #[arg(
        long = "local_hostname",
        alias = "local-hostname",
        env = "LOCAL_HOSTNAME"
    )]
    pub local_hostname: Option<String>,
    /// Transport between hosts [default: tcp].
    #[arg(long, env = "MOONCAKE_PROTOCOL")]
    pub protocol: Option<String>,
    /// RDMA device names (accepted for compatibility; ignored without RDMA).
    #[arg(long = "device_name", alias = "device-name", default_value = "")]
    pub device_name: String,
    /// `--cluster-token` / `--insecure`.
    #[command(flatten)]
    pub auth: super::auth::AuthArgs,
}

impl Args {
    /// The store client's settings: defaults, then the file, the
    /// environment, the flags.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        self.auth.install()?;
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                ClientConfig::from_toml(&text)?
            }
            None => ClientConfig {
                global_segment_size: 1 << 30,
                ..ClientConfig::default()
            },
        };
        cfg.apply_env()?;
        let set = |dst: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                dst.clone_from(v);
            }
        };
        set(&mut cfg.master_server_addr, &self.master_server_address);
        set(&mut cfg.metadata_server, &self.metadata_server);
        set(&mut cfg.local_hostname, &self.local_hostname);
        set(&mut cfg.protocol, &self.protocol);
        if let Some(v) = self.global_segment_size {
            cfg.global_segment_size = v;
        }
        if let Some(v) = self.local_buffer_size {
            cfg.local_buffer_size = v;
        }
        Ok(cfg)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.client_config()?;
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
