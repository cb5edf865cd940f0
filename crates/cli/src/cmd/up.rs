//! `mooncake up`: a whole local store cluster in one command.
//!
//! Starts, in this process, the master (with its embedded HTTP metadata
//! server, `/metrics`, admin views and status page) and one storage node that
//! mounts a segment of this process's memory (default: a quarter of
//! `MemAvailable`, capped at 4 GiB). Prints what a client needs (master
//! address, metadata URL, a Python snippet) and serves until Ctrl-C / SIGTERM,
//! then unmounts the segment and stops the master.
//!
//! The last line printed on stdout is the READY line ([`super::ready`]):
//! `{"ready":"up","pid":..,"master":"<addr>","metadata":"<url>","status":"<url>","segment":"<name>"}`,
//! so scripts and `mooncake bench store` can start a cluster with
//! `--rpc-port 0 --metadata-port 0 --metrics-port 0` and read back the ports
//! actually bound.

use std::io::Write;

use anyhow::Context;
use mooncake_master::MasterConfig;
use mooncake_master::MasterServer;
use mooncake_security::credential::{TOKEN_ENV, TOKEN_FILE_ENV};
use mooncake_security::AuthMode;
use mooncake_store::client::{Client, ClientConfig};

use mooncake_config::{format_size, parse_size, NoFlags};

use super::auth::TokenFile;

use super::store_node::wait_for_shutdown;

/// Cap of the default segment size.
const DEFAULT_SEGMENT_CAP: u64 = 4 << 30;

/// Flags of `mooncake up`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address every server binds (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Master RPC port (0: a free one).
    #[arg(long, default_value_t = 50051)]
    pub rpc_port: u16,
    /// HTTP metadata server port (0: a free one).
    #[arg(long, default_value_t = 8080)]
    pub metadata_port: u16,
    /// Metrics / admin / status page port (0: a free one).
    #[arg(long, default_value_t = 9003)]
    pub metrics_port: u16,
    /// Segment of the storage node (default: min(25% of MemAvailable, 4 GiB); 0: no node).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub segment_size: Option<u64>,
    /// Master settings (TOML with the reference's option names); flags above win.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Print only the READY line.
    #[arg(long)]
    pub quiet: bool,
    /// High availability: start a local etcd (the `etcd` binary; `MOONCAKE_ETCD_BIN`
    /// overrides) and N masters that elect a leader through it. Clients then use
    /// `etcd://host:port/mooncake_cluster` as the master and `etcd://host:port` as
    /// the metadata server.
    #[arg(long, value_name = "N")]
    pub ha: Option<usize>,
    /// `--cluster-token` / `--insecure`; with neither (and nothing in the
    /// environment) a fresh credential is generated into a 0600 file.
    #[command(flatten)]
    pub auth: super::auth::AuthArgs,
    /// Write the cluster credential to this file (mode 0600) instead of a
    /// fresh private directory.
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
}

/// Fail early, naming the port and the flag that moves it, when a fixed port is taken
/// (the servers' own bind error would only say "address in use").
fn check_ports_free(args: &Args) -> anyhow::Result<()> {
    let ports = [
        (args.rpc_port, "master RPC", "--rpc-port"),
        (args.metadata_port, "metadata server", "--metadata-port"),
        (args.metrics_port, "metrics / status", "--metrics-port"),
    ];
    for (port, what, flag) in ports {
        if port == 0 {
            continue;
        }
        if let Err(e) = std::net::TcpListener::bind((args.host.as_str(), port)) {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::bail!(
                    "port {port} ({what}) on {} is already in use: choose another with \
                     {flag} <PORT> (0 picks a free one), or stop what holds it",
                    args.host
                );
            }
        }
    }
    Ok(())
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Default segment: a quarter of the available memory, capped, page-aligned.
pub fn default_segment_size() -> u64 {
    let avail = mem_available().unwrap_or(4 << 30);
    ((avail / 4).min(DEFAULT_SEGMENT_CAP) / 4096 * 4096).max(64 << 20)
}

/// Resolve the cluster's credential (generating one when none is given)
/// and write the file clients read, when `up` made or was asked for one.
pub(crate) fn cluster_credential(args: &Args) -> anyhow::Result<Option<TokenFile>> {
    let (mode, generated) = args.auth.install_or_generate()?;
    match mode {
        AuthMode::Required(c) if generated || args.token_file.is_some() => {
            Ok(Some(TokenFile::create(&c, args.token_file.as_deref())?))
        }
        _ => Ok(None),
    }
}

/// The READY fields both `up` and `up --ha` announce: where clients connect and, when
/// `up` wrote one, the credential file (`MOONCAKE_CLUSTER_TOKEN_FILE`).
pub(crate) fn ready_fields(
    master: &str,
    metadata: &str,
    status: &str,
    segment: &str,
    token_file: &Option<TokenFile>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "master": master,
        "metadata": metadata,
        "status": status,
        "segment": segment,
    });
    if let Some(f) = token_file {
        v["token_file"] = f.path().display().to_string().into();
    }
    v
}

/// How clients get the credential (printed unless `--quiet`).
pub(crate) fn print_credential_hint(
    out: &mut impl Write,
    f: &Option<TokenFile>,
) -> std::io::Result<()> {
    match f {
        Some(f) => {
            writeln!(out, "  credential:      {} (mode 0600)", f.path().display())?;
            writeln!(out)?;
            writeln!(out, "Clients prove the cluster credential; give it to them with")?;
            writeln!(
                out,
                "  export {TOKEN_FILE_ENV}={}    (or {TOKEN_ENV}=<token>, or --cluster-token)",
                f.path().display()
            )
        }
        None => writeln!(
            out,
            "  credential:      from --cluster-token / {TOKEN_ENV} / {TOKEN_FILE_ENV} (or none: --insecure)"
        ),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let token_file = cluster_credential(&args)?;
    if let Some(n) = args.ha {
        return super::up_ha::run(args, n, token_file).await;
    }
    check_ports_free(&args)?;
    // Master settings: defaults < --config < MOONCAKE_MASTER_*; up's own flags below win.
    let mut cfg = MasterConfig::load(args.config.as_deref(), std::env::vars(), &NoFlags {})?;
    cfg.rpc_address = args.host.clone();
    cfg.rpc_port = args.rpc_port;
    cfg.metrics_host = args.host.clone();
    cfg.metrics_port = args.metrics_port;
    cfg.enable_http_metadata_server = true;
    cfg.http_metadata_server_host = args.host.clone();
    cfg.http_metadata_server_port = args.metadata_port;
    let master = MasterServer::start_with_auth(
        cfg,
        std::sync::Arc::new(mooncake_master::clock::SystemClock),
        mooncake_store::protocol::auth_from_env()?,
    )
    .await
    .context("starting the master")?;
    let master_addr = master.rpc_addr().to_string();
    let metadata = format!(
        "http://{}/metadata",
        master.metadata_addr().context("metadata server")?
    );
    let status = format!("http://{}/", master.http_addr());

    let segment_size = args.segment_size.unwrap_or_else(default_segment_size);
    let (node, segment) = start_storage_node(&args, &metadata, &master_addr, segment_size).await?;

    let mut out = std::io::stdout().lock();
    if !args.quiet {
        writeln!(out, "Mooncake store is up.")?;
        writeln!(out, "  master (rpc):    {master_addr}")?;
        writeln!(out, "  metadata:        {metadata}")?;
        writeln!(out, "  status page:     {status}   (/metrics, /health)")?;
        print_credential_hint(&mut out, &token_file)?;
        if node.is_some() {
            writeln!(
                out,
                "  storage segment: {segment}, {}",
                format_size(segment_size)
            )?;
        }
        writeln!(out)?;
        writeln!(out, "Python:")?;
        writeln!(out, "  from mooncake.store import MooncakeDistributedStore")?;
        writeln!(out, "  store = MooncakeDistributedStore()")?;
        writeln!(
            out,
            "  store.setup(\"{}\", \"{metadata}\", 0, 64 << 20, \"tcp\", \"\", \"{master_addr}\")",
            args.host
        )?;
        writeln!(
            out,
            "  store.put(\"hello\", b\"world\"); print(store.get(\"hello\"))"
        )?;
        writeln!(out)?;
        writeln!(out, "Terminal:")?;
        writeln!(
            out,
            "  mooncake client --master {master_addr} --metadata {metadata} put hello FILE"
        )?;
        writeln!(out)?;
        writeln!(out, "Ctrl-C to stop.")?;
    }
    out.flush()?;
    drop(out);
    super::ready::announce(
        "up",
        ready_fields(&master_addr, &metadata, &status, &segment, &token_file),
    )?;

    wait_for_shutdown().await;
    tracing::info!("shutting down");
    if let Some(n) = node {
        n.close().await.ok();
    }
    master.shutdown().await;
    Ok(())
}

/// The local storage node of `mooncake up` (plain and `--ha`): a store client
/// that mounts `segment_size` bytes (none when 0), and its segment's name.
pub(crate) async fn start_storage_node(
    args: &Args,
    metadata: &str,
    master_addr: &str,
    segment_size: u64,
) -> anyhow::Result<(Option<Client>, String)> {
    if segment_size == 0 {
        return Ok((None, String::new()));
    }
    let ccfg = ClientConfig {
        local_hostname: args.host.clone(),
        metadata_server: metadata.to_string(),
        master_server_addr: master_addr.to_string(),
        global_segment_size: segment_size,
        local_buffer_size: 0,
        ..ClientConfig::default()
    };
    let node = Client::connect(ccfg)
        .await
        .context("starting the storage node")?;
    let segment = node.segment_name().to_string();
    Ok((Some(node), segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_segment_is_capped() {
        let s = default_segment_size();
        assert!((64 << 20..=DEFAULT_SEGMENT_CAP).contains(&s) && s.is_multiple_of(4096));
    }
}
