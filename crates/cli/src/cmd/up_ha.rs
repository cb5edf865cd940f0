//! `mooncake up --ha N`: a local high-availability store cluster — one `etcd` child
//! process (temporary data directory, free loopback ports), N masters in this process
//! electing a leader through it, and one storage node. Clients find the leader through
//! etcd (`etcd://h:p/mooncake_cluster`); transfer descriptors live in the same etcd.
//!
//! Prints the same READY line as `up` (`"ready":"up"`), with `etcd://` locators, plus
//! `etcd` (its client endpoint) and `masters` (each master's `rpc` and `http` address). Ctrl-C stops the node, the masters and etcd.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mooncake_master::MasterConfig;
use mooncake_master::MasterServer;

use super::store_node::wait_for_shutdown;
use mooncake_config::{format_size, NoFlags};

use super::up::{default_segment_size, start_storage_node, Args};

/// The `etcd` binary: `MOONCAKE_ETCD_BIN`, else the first `etcd` on `PATH`.
pub fn find_etcd() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("MOONCAKE_ETCD_BIN") {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .context(
            "HA needs etcd, and no `etcd` binary is on PATH: install it \\
             (Debian/Ubuntu: `apt-get install etcd-server`; or a release from \\
             https://github.com/etcd-io/etcd/releases) or set MOONCAKE_ETCD_BIN",
        )
}

fn free_port(host: &str) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((host, 0))?.local_addr()?.port())
}

/// A child etcd killed on drop, with its data directory.
pub struct LocalEtcd {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalEtcd {
    /// Start etcd on free ports of `host` and wait (15 s at most) until it answers.
    pub async fn start(host: &str) -> anyhow::Result<LocalEtcd> {
        let bin = find_etcd()?;
        let dir = tempfile::Builder::new()
            .prefix("mooncake-up-etcd-")
            .tempdir()?;
        let cport = free_port(host)?;
        let pport = free_port(host)?;
        let client = format!("http://{host}:{cport}");
        let peer = format!("http://{host}:{pport}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let mut cmd = Command::new(&bin);
        // etcd must not outlive us, even when we are killed -9 (Drop does not run then).
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .args(["--name", "mooncake-up", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("mooncake-up={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let etcd = LocalEtcd {
            child,
            _dir: dir,
            endpoint: format!("{host}:{cport}"),
        };
        let url = format!("{client}/health");
        let t0 = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.text().await.is_ok_and(|t| t.contains("true")) {
                    return Ok(etcd);
                }
            }
            if t0.elapsed() > Duration::from_secs(15) {
                bail!(
                    "etcd at {} did not become healthy within 15 s",
                    etcd.endpoint
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn run(
    args: Args,
    n: usize,
    token_file: Option<super::auth::TokenFile>,
) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--ha needs at least one master");
    }
    let etcd = LocalEtcd::start(&args.host).await?;
    let mut base = MasterConfig::load(args.config.as_deref(), std::env::vars(), &NoFlags {})?;
    base.enable_ha = true;
    base.etcd_endpoints = etcd.endpoint.clone();
    base.enable_http_metadata_server = false;
    let port = |p: u16, i: usize| if p == 0 { 0 } else { p + i as u16 };
    let mut masters = Vec::new();
    for i in 0..n {
        let mut cfg = base.clone();
        cfg.rpc_address = args.host.clone();
        cfg.rpc_port = port(args.rpc_port, i);
        cfg.metrics_host = args.host.clone();
        cfg.metrics_port = port(args.metrics_port, i);
        masters.push(
            MasterServer::start_with_auth(
                cfg,
                std::sync::Arc::new(mooncake_master::clock::SystemClock),
                mooncake_store::protocol::auth_from_env()?,
            )
            .await
            .with_context(|| format!("starting master {i}"))?,
        );
    }
    let master_addr = format!("etcd://{}/{}", etcd.endpoint, base.cluster_id);
    let metadata = format!("etcd://{}", etcd.endpoint);
    let status = format!("http://{}/", masters[0].http_addr());
    let segment_size = args.segment_size.unwrap_or_else(default_segment_size);
    let (node, segment) = start_storage_node(&args, &metadata, &master_addr, segment_size).await?;
    let mut out = std::io::stdout().lock();
    if !args.quiet {
        writeln!(out, "Mooncake store (HA: {n} masters) is up.")?;
        writeln!(out, "  etcd:            {}", etcd.endpoint)?;
        writeln!(out, "  master locator:  {master_addr}")?;
        for (i, m) in masters.iter().enumerate() {
            writeln!(
                out,
                "  master {i}:        rpc {}  http://{}/health  /role  /leader",
                m.rpc_addr(),
                m.http_addr()
            )?;
        }
        writeln!(out, "  metadata:        {metadata}")?;
        super::up::print_credential_hint(&mut out, &token_file)?;
        if node.is_some() {
            writeln!(
                out,
                "  storage segment: {segment}, {}",
                format_size(segment_size)
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "  mooncake client --master {master_addr} --metadata {metadata} put hello FILE"
        )?;
        writeln!(out, "Ctrl-C to stop.")?;
    }
    out.flush()?;
    drop(out);
    let each: Vec<serde_json::Value> = masters
        .iter()
        .map(|m| {
            serde_json::json!({
                "rpc": m.rpc_addr().to_string(),
                "http": m.http_addr().to_string(),
            })
        })
        .collect();
    super::ready::announce("up", {
        let mut v =
            super::up::ready_fields(&master_addr, &metadata, &status, &segment, &token_file);
        v["etcd"] = etcd.endpoint.clone().into();
        v["masters"] = each.into();
        v
    })?;
    wait_for_shutdown().await;
    if let Some(n) = node {
        n.close().await.ok();
    }
    for m in masters {
        m.shutdown().await;
    }
    drop(etcd);
    Ok(())
}
