//! `mooncake metadata-server`: the standalone HTTP metadata server
//! (reference-compatible `/metadata` endpoint, plus `/health`).
//!
//! It prints the address it listens on and the connection string clients
//! pass as their metadata server, then serves until Ctrl-C or SIGTERM, when
//! it stops accepting connections and lets in-flight requests finish.
//! With a cluster credential (`--cluster-token`, `MC_CLUSTER_TOKEN` or
//! `MOONCAKE_CLUSTER_TOKEN_FILE`) every `/metadata` request must be signed
//! with it; `--insecure` serves unsigned requests (as the reference's server).
//! Until every component passes the credential on, a server started with
//! neither runs insecure and says so in a warning.
//! The table lives in memory: restarting the server empties it, and segments
//! re-publish their descriptors when they reconnect.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use mooncake_metadata::http::server::{MetadataServer, MetadataService, TableCaps};
use mooncake_security::AuthMode;

/// Flags of `mooncake metadata-server`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080, env = "MC_METADATA_SERVER_PORT")]
    pub port: u16,
    /// Address to bind (127.0.0.1: this host only; 0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1", env = "MC_METADATA_SERVER_HOST")]
    pub host: IpAddr,
    /// Cluster token clients must sign their requests with (else
    /// `MC_CLUSTER_TOKEN` / `MOONCAKE_CLUSTER_TOKEN_FILE`).
    #[arg(long)]
    pub cluster_token: Option<String>,
    /// Serve without authentication.
    #[arg(long)]
    pub insecure: bool,
}

/// The server's authentication: the flag, else the token, else the
/// environment; with none, insecure with a warning (see the module docs).
fn auth_mode(args: &Args) -> anyhow::Result<AuthMode> {
    let explicit = args.insecure || args.cluster_token.is_some();
    match AuthMode::resolve(args.insecure, args.cluster_token.as_deref()) {
        Ok(m) => Ok(m),
        Err(e) if !explicit && mooncake_security::Credential::from_env()?.is_none() => {
            tracing::warn!(
                "no cluster credential given: serving metadata WITHOUT authentication \
                 (set MC_CLUSTER_TOKEN, or pass --insecure to silence this): {e}"
            );
            Ok(AuthMode::Insecure)
        }
        Err(e) => Err(e.into()),
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is
/// called (before the address is announced), so a signal sent as soon as the
/// address is known is never lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let stop = shutdown_signal()?;
    let bind = SocketAddr::new(args.host, args.port);
    let service = MetadataService::with_auth(auth_mode(&args)?, TableCaps::default());
    let server = MetadataServer::bind_with(bind, service)
        .await
        .with_context(|| format!("binding the metadata server to {bind}"))?;
    let addr = server.local_addr();
    // Clients cannot dial the unspecified address; show a loopback URL for it.
    let client_addr = if addr.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), addr.port())
    } else {
        addr
    };
    println!("mooncake metadata server listening on {addr}");
    println!("metadata connection string: http://{client_addr}/metadata");
    super::ready::announce(
        "metadata-server",
        serde_json::json!({
            "addr": addr.to_string(),
            "metadata": format!("http://{client_addr}/metadata"),
        }),
    )?;

    stop.await?;
    tracing::info!("shutting down the metadata server");
    server
        .shutdown()
        .await
        .context("stopping the metadata server")?;
    println!("mooncake metadata server stopped");
    Ok(())
}
