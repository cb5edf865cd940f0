//! `mooncake master`: the Mooncake Store master, flag-compatible with the reference's
//! `mooncake_master` (`--rpc_port=50051`, `--enable_http_metadata_server=true`, ...).
//!
//! Configuration sources, later winning: defaults, `--config <toml>`, environment
//! (`MOONCAKE_MASTER_<NAME>`), flags. Boolean flags accept `--flag`, `--flag=true` and
//! `--flag=false`. A few reference flags for features this master does not have (GC,
//! ...) are accepted and ignored with a warning, so existing scripts keep working.
//! `--snapshot_dir` makes a lone master durable; `--enable_ha --etcd_endpoints
//! --cluster_id` runs it as one of several masters elected through etcd.

use clap::builder::BoolishValueParser;
use mooncake_master::clock::SystemClock;
use mooncake_master::MasterConfig;
use mooncake_master::MasterServer;
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of `mooncake master` (reference names and spellings). They are the top layer of
/// [`MasterConfig::load`], by field name: a flag that is not a `MasterConfig` field must be
/// `#[serde(skip)]`.
#[derive(clap::Args, Debug, Default, serde::Serialize)]
pub struct Args {
    /// TOML file with any of the options below (keys = flag names).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// RPC bind address [default: 127.0.0.1; 0.0.0.0 for every interface].
    #[arg(long = "rpc_address")]
    pub rpc_address: Option<String>,
    /// RPC port.
    #[arg(long = "rpc_port")]
    pub rpc_port: Option<u16>,
    /// Evict when used/total exceeds this.
    #[arg(long = "eviction_high_watermark_ratio")]
    pub eviction_high_watermark_ratio: Option<f64>,
    /// Fraction of objects evicted per round.
    #[arg(long = "eviction_ratio")]
    pub eviction_ratio: Option<f64>,
    /// Lease granted by each get, in ms.
    #[arg(long = "default_kv_lease_ttl")]
    pub default_kv_lease_ttl: Option<u64>,
    /// Soft-pin duration, in ms.
    #[arg(long = "default_kv_soft_pin_ttl")]
    pub default_kv_soft_pin_ttl: Option<u64>,
    /// Allow evicting soft-pinned objects (after all others).
    #[arg(long = "allow_evict_soft_pinned_objects", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub allow_evict_soft_pinned_objects: Option<bool>,
    /// A client silent this many seconds is dead.
    #[arg(long = "client_ttl")]
    pub client_ttl: Option<u64>,
    /// `random` or `free_ratio_first`.
    #[arg(long = "allocation_strategy")]
    pub allocation_strategy: Option<String>,
    /// Serve the HTTP metadata protocol inside the master.
    #[arg(long = "enable_http_metadata_server", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub enable_http_metadata_server: Option<bool>,
    /// Port of the embedded metadata server.
    #[arg(long = "http_metadata_server_port")]
    pub http_metadata_server_port: Option<u16>,
    /// Bind address of the embedded metadata server [default: 127.0.0.1].
    #[arg(long = "http_metadata_server_host")]
    pub http_metadata_server_host: Option<String>,
    /// Port of /metrics, /health and the admin views.
    #[arg(long = "metrics_port")]
    pub metrics_port: Option<u16>,
    /// Bind address of the metrics HTTP server [default: 127.0.0.1].
    #[arg(long = "metrics_host")]
    pub metrics_host: Option<String>,
    /// Seconds before an unfinished put_start is released.
    #[arg(long = "put_start_discard_timeout_sec")]
    pub put_start_discard_timeout_sec: Option<u64>,
    /// Largest piece in bytes; larger objects are striped.
    #[arg(long = "max_slice_size", value_name = "SIZE", value_parser = mooncake_config::parse_size)]
    pub max_slice_size: Option<u64>,
    /// Period of expiry/eviction checks in ms.
    #[arg(long = "tick_interval_ms")]
    pub tick_interval_ms: Option<u64>,
    /// Durable op-log + snapshots of a lone master in this directory: a restarted master
    /// recovers every acknowledged object [default: none].
    #[arg(long = "snapshot_dir")]
    pub snapshot_dir: Option<String>,
    /// Ops between two snapshots (op-log compactions).
    #[arg(long = "snapshot_interval_ops")]
    pub snapshot_interval_ops: Option<u64>,
    /// High availability: elect a leader among masters through etcd.
    #[arg(long = "enable_ha", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub enable_ha: Option<bool>,
    /// etcd endpoints for HA: `host:port[;host:port]`.
    #[arg(long = "etcd_endpoints")]
    pub etcd_endpoints: Option<String>,
    /// Master group name in etcd.
    #[arg(long = "cluster_id")]
    pub cluster_id: Option<String>,
    /// Leader lease TTL in seconds (failover within about this long).
    #[arg(long = "ha_lease_ttl_sec")]
    pub ha_lease_ttl_sec: Option<u64>,
    /// RPC address published for clients when leading [default: rpc_address:rpc_port].
    #[arg(long = "advertise_address")]
    pub advertise_address: Option<String>,

    // Reference flags for features not implemented here: accepted, ignored.
    #[serde(skip)]
    #[arg(long = "enable_gc", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_gc: Option<String>,
    #[serde(skip)]
    #[arg(long = "enable_metric_reporting", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_metric_reporting: Option<String>,
    #[serde(skip)]
    #[arg(long = "rpc_enable_tcp_no_delay", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub rpc_enable_tcp_no_delay: Option<String>,
    #[serde(skip)]
    #[arg(long = "rpc_thread_num", hide = true)]
    pub rpc_thread_num: Option<String>,
    #[serde(skip)]
    #[arg(long = "rpc_conn_timeout_seconds", hide = true)]
    pub rpc_conn_timeout_seconds: Option<String>,
    #[serde(skip)]
    #[arg(long = "memory_allocator", hide = true)]
    pub memory_allocator: Option<String>,
    #[serde(skip)]
    #[arg(long = "root_fs_dir", hide = true)]
    pub root_fs_dir: Option<String>,
    /// `--cluster-token` / `--insecure`.
    #[command(flatten)]
    #[serde(skip)]
    pub auth: super::auth::AuthArgs,
}

impl Args {
    /// The effective configuration: defaults < file < env < flags.
    pub fn to_config(&self) -> anyhow::Result<MasterConfig> {
        let cfg = MasterConfig::load(self.config.as_deref(), std::env::vars(), self)?;
        for (name, v) in [
            ("enable_gc", &self.enable_gc),
            ("enable_metric_reporting", &self.enable_metric_reporting),
            ("rpc_enable_tcp_no_delay", &self.rpc_enable_tcp_no_delay),
            ("rpc_thread_num", &self.rpc_thread_num),
            ("rpc_conn_timeout_seconds", &self.rpc_conn_timeout_seconds),
            ("memory_allocator", &self.memory_allocator),
            ("root_fs_dir", &self.root_fs_dir),
        ] {
            if let Some(v) = v {
                tracing::warn!("--{name}={v} is accepted for compatibility and ignored");
            }
        }
        Ok(cfg)
    }
}

/// Run the master until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let auth = args.auth.install()?;
    let cfg = args.to_config()?;
    let srv = MasterServer::start_with_auth(cfg.clone(), Arc::new(SystemClock), auth).await?;
    let http = srv.http_addr();
    eprintln!("mooncake master: rpc {}", srv.rpc_addr());
    if cfg.enable_ha {
        eprintln!(
            "  ha        standby until elected (etcd {}, cluster {}); clients: etcd://{}/{}",
            cfg.etcd_endpoints,
            cfg.cluster_id,
            cfg.etcd_endpoint_list().join(";"),
            cfg.cluster_id
        );
    } else if !cfg.snapshot_dir.is_empty() {
        eprintln!("  durable   op-log + snapshots in {}", cfg.snapshot_dir);
    }
    eprintln!("  metrics   http://{http}/metrics  (health: /health, admin: /api/segments /api/clients /api/keys)");
    if let Some(md) = srv.metadata_addr() {
        eprintln!("  metadata  http://{md}/metadata");
    }
    super::ready::announce(
        "master",
        serde_json::json!({
            "rpc": srv.rpc_addr().to_string(),
            "http": http.to_string(),
            "metadata": srv.metadata_addr().map(|md| format!("http://{md}/metadata")),
        }),
    )?;
    wait_for_signal().await;
    eprintln!("mooncake master: shutting down");
    srv.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
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

    fn parse(v: &[&str]) -> MasterConfig {
        let mut argv = vec!["master"];
        argv.extend_from_slice(v);
        T::try_parse_from(argv).unwrap().a.to_config().unwrap()
    }

    #[test]
    fn reference_spellings() {
        let c = parse(&[
            "--rpc_port=6001",
            "--enable_http_metadata_server=true",
            "--http_metadata_server_port",
            "8081",
            "--allow_evict_soft_pinned_objects=false",
            "--eviction_high_watermark_ratio=0.8",
            "--default_kv_lease_ttl=200",
            "--allocation_strategy=free_ratio_first",
            "--enable_gc=false",
            "--metrics_port=0",
        ]);
        assert_eq!(c.rpc_port, 6001);
        assert!(c.enable_http_metadata_server);
        assert_eq!(c.http_metadata_server_port, 8081);
        assert!(!c.allow_evict_soft_pinned_objects);
        assert_eq!(c.eviction_high_watermark_ratio, 0.8);
        assert_eq!(c.default_kv_lease_ttl, 200);
        assert_eq!(c.metrics_port, 0);
        let c = parse(&["--enable_http_metadata_server"]);
        assert!(c.enable_http_metadata_server);
        let c = parse(&[]);
        assert_eq!(c, MasterConfig::default());
        assert!(T::try_parse_from(["master", "--rpc_port=abc"]).is_err());
        assert!(T::try_parse_from(["master", "--allocation_strategy=bogus"])
            .unwrap()
            .a
            .to_config()
            .is_err());
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile_dir();
        let path = dir.join("master.toml");
        std::fs::write(
            &path,
            "rpc_port = 7000\nclient_ttl = 30\nmetrics_port = 9100\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = parse(&["--config", p, "--rpc_port=7001"]);
        assert_eq!((c.rpc_port, c.client_ttl, c.metrics_port), (7001, 30, 9100));
        std::fs::write(&path, "no_such_option = 1\n").unwrap();
        let bad = T::try_parse_from(["master", "--config", p])
            .unwrap()
            .a
            .to_config();
        assert!(bad.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mooncake-master-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
