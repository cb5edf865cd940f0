//! [`MasterConfig`]: every knob of the master, with the reference's `mooncake_master` flag
//! names. [`MasterConfig::load`] assembles it through the workspace's one configuration layer
//! (`mooncake_config::layer`): defaults, a TOML file, environment variables
//! `MOONCAKE_MASTER_<NAME>`, command-line flags (the CLI's flag struct, same names), later
//! ones winning.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// How the master picks a segment for each piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AllocationStrategy {
    /// A random segment that has room (spreads load).
    #[default]
    Random,
    /// The segment with the largest free fraction (balances fill).
    #[serde(alias = "free-ratio-first")]
    FreeRatioFirst,
}

impl std::str::FromStr for AllocationStrategy {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "random" => Ok(AllocationStrategy::Random),
            "free_ratio_first" | "free-ratio-first" => Ok(AllocationStrategy::FreeRatioFirst),
            _ => Err(ConfigError::Invalid(
                "allocation_strategy".into(),
                format!("{s:?}: expected random or free_ratio_first"),
            )),
        }
    }
}

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for {0}: {1}")]
    Invalid(String, String),
    #[error("reading config file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("parsing config file {0}: {1}")]
    Toml(String, String),
    #[error(transparent)]
    Layer(#[from] mooncake_config::ConfigError),
}

/// Configuration of the master. Field names are the reference's flag names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    /// Address the RPC server binds.
    pub rpc_address: String,
    /// RPC port (reference default 50051).
    pub rpc_port: u16,
    /// Address of the HTTP server with `/metrics`, `/health` and the admin views.
    pub metrics_host: String,
    /// Its port (reference default 9003; 0 picks a free one).
    pub metrics_port: u16,
    /// Evict when used/total exceeds this.
    pub eviction_high_watermark_ratio: f64,
    /// Fraction of objects evicted per eviction round.
    pub eviction_ratio: f64,
    /// Lease granted by each get, milliseconds.
    pub default_kv_lease_ttl: u64,
    /// Soft-pin duration from the put, milliseconds, for puts that give no
    /// `soft_pin_ttl_ms` of their own (reads do not extend it).
    pub default_kv_soft_pin_ttl: u64,
    /// Whether soft-pinned objects may be evicted (after all others).
    pub allow_evict_soft_pinned_objects: bool,
    /// A client silent this many seconds is dead.
    pub client_ttl: u64,
    /// Segment choice per piece.
    pub allocation_strategy: AllocationStrategy,
    /// Serve the HTTP metadata protocol (`/metadata`) inside the master.
    pub enable_http_metadata_server: bool,
    /// Its port.
    pub http_metadata_server_port: u16,
    /// Its bind address.
    pub http_metadata_server_host: String,
    /// A put_start not ended or revoked within this many seconds is released.
    pub put_start_discard_timeout_sec: u64,
    /// Largest piece (bytes, or a size such as `"16MiB"`); larger objects are striped
    /// across segments.
    #[serde(with = "mooncake_config::units::serde_size")]
    pub max_slice_size: u64,
    /// Period of the background ticker (expiry, eviction), milliseconds.
    pub tick_interval_ms: u64,
    /// Directory of the durable op-log and snapshots of a lone master (empty: none). A
    /// master restarted on the same directory recovers every acknowledged object.
    pub snapshot_dir: String,
    /// Ops between two snapshots (compactions of the op-log).
    pub snapshot_interval_ops: u64,
    /// Run as one of several masters elected through etcd (`etcd_endpoints`).
    pub enable_ha: bool,
    /// etcd endpoints for HA, `host:port` separated by `;` or `,`.
    pub etcd_endpoints: String,
    /// Name of this master group in etcd (masters of one cluster share it).
    pub cluster_id: String,
    /// TTL of the leader's etcd lease, seconds: a dead leader is replaced after at
    /// most this long.
    pub ha_lease_ttl_sec: u64,
    /// Address clients should use to reach this master's RPC port when it leads
    /// (published in etcd; empty: `rpc_address:rpc_port`, with 0.0.0.0 read as
    /// 127.0.0.1).
    pub advertise_address: String,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            rpc_address: "127.0.0.1".into(),
            rpc_port: 50051,
            metrics_host: "127.0.0.1".into(),
            metrics_port: 9003,
            eviction_high_watermark_ratio: 0.9,
            eviction_ratio: 0.05,
            default_kv_lease_ttl: 5_000,
            default_kv_soft_pin_ttl: 30 * 60 * 1000,
            allow_evict_soft_pinned_objects: true,
            client_ttl: 10,
            allocation_strategy: AllocationStrategy::Random,
            enable_http_metadata_server: false,
            http_metadata_server_port: 8080,
            http_metadata_server_host: "127.0.0.1".into(),
            put_start_discard_timeout_sec: 30,
            max_slice_size: 16 << 20,
            tick_interval_ms: 100,
            snapshot_dir: String::new(),
            snapshot_interval_ops: 100_000,
            enable_ha: false,
            etcd_endpoints: String::new(),
            cluster_id: "mooncake_cluster".into(),
            ha_lease_ttl_sec: 5,
            advertise_address: String::new(),
        }
    }
}

pub use mooncake_store_protocol::leader::split_endpoints;

/// Where the master's settings come from: `MOONCAKE_MASTER_<NAME>` (the reference's master
/// has flags only, so there are no other variable names).
pub const LAYERS: mooncake_config::Layers = mooncake_config::Layers {
    component: "MASTER",
    aliases: &[],
};

impl MasterConfig {
    /// Defaults < `file` (TOML) < `env` (`MOONCAKE_MASTER_<NAME>`; pass `std::env::vars()`) <
    /// `flags` (a struct of `Option`s named as the fields, `None` meaning not given), then
    /// [`MasterConfig::validate`].
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &impl Serialize,
    ) -> Result<Self, ConfigError> {
        let c: MasterConfig = LAYERS.load(file, env, flags)?;
        c.validate()?;
        Ok(c)
    }

    /// Parse a TOML document (keys = field names; unknown keys are an error).
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        let c: MasterConfig =
            toml::from_str(s).map_err(|e| ConfigError::Toml("<string>".into(), e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// The etcd endpoints of `etcd_endpoints`, split on `;` and `,`.
    pub fn etcd_endpoint_list(&self) -> Vec<String> {
        split_endpoints(&self.etcd_endpoints)
    }

    /// Check ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ratio = |n: &str, x: f64| {
            if (0.0..=1.0).contains(&x) {
                Ok(())
            } else {
                Err(ConfigError::Invalid(
                    n.into(),
                    format!("{x} is not within [0, 1]"),
                ))
            }
        };
        ratio(
            "eviction_high_watermark_ratio",
            self.eviction_high_watermark_ratio,
        )?;
        ratio("eviction_ratio", self.eviction_ratio)?;
        if self.client_ttl == 0 {
            return Err(ConfigError::Invalid(
                "client_ttl".into(),
                "must be > 0".into(),
            ));
        }
        if self.max_slice_size < 4096 {
            return Err(ConfigError::Invalid(
                "max_slice_size".into(),
                "must be >= 4096".into(),
            ));
        }
        if self.enable_ha && self.etcd_endpoints.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "etcd_endpoints".into(),
                "enable_ha needs etcd endpoints (host:port[;host:port])".into(),
            ));
        }
        if self.ha_lease_ttl_sec == 0 || self.snapshot_interval_ops == 0 {
            return Err(ConfigError::Invalid(
                "ha_lease_ttl_sec / snapshot_interval_ops".into(),
                "must be > 0".into(),
            ));
        }
        if self.tick_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "tick_interval_ms".into(),
                "must be > 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_env_flags() {
        let dir =
            std::env::temp_dir().join(format!("mooncake-master-layer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        std::fs::write(
            &path,
            "rpc_port = 6000\nallocation_strategy = \"free_ratio_first\"\neviction_ratio = 0.1\nmax_slice_size = \"4MiB\"\n",
        )
        .unwrap();
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        #[derive(Serialize)]
        struct Flags {
            client_ttl: Option<u64>,
            rpc_port: Option<u16>,
        }
        let no_flags = Flags {
            client_ttl: None,
            rpc_port: None,
        };
        let c = MasterConfig::load(Some(&path), env(&[]), &no_flags).unwrap();
        assert_eq!(c.rpc_port, 6000);
        assert_eq!(c.allocation_strategy, AllocationStrategy::FreeRatioFirst);
        assert_eq!(c.max_slice_size, 4 << 20);
        assert_eq!(c.metrics_port, 9003);
        let c = MasterConfig::load(
            Some(&path),
            env(&[
                ("MOONCAKE_MASTER_RPC_PORT", "7000"),
                ("MOONCAKE_MASTER_ENABLE_HTTP_METADATA_SERVER", "true"),
                ("MOONCAKE_MASTER_CLIENT_TTL", "20"),
                ("MOONCAKE_MASTER_HTTP", "not a master option"),
                ("OTHER", "x"),
            ]),
            &Flags {
                client_ttl: Some(30),
                rpc_port: None,
            },
        )
        .unwrap();
        assert_eq!((c.rpc_port, c.client_ttl), (7000, 30));
        assert!(c.enable_http_metadata_server);
        assert!(MasterConfig::load(
            None,
            env(&[("MOONCAKE_MASTER_CLIENT_TTL", "abc")]),
            &no_flags
        )
        .is_err());
        assert!(
            MasterConfig::load(None, env(&[("MOONCAKE_MASTER_CLIENT_TTL", "0")]), &no_flags)
                .is_err()
        );
        assert!(MasterConfig::from_toml_str("bogus = 1").is_err());
        assert!(MasterConfig::from_toml_str("eviction_ratio = 2.0").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
