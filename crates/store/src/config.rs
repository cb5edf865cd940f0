//! [`MasterConfig`]: every knob of the master, with the reference's `mooncake_master` flag
//! names. Sources, later ones winning: defaults, a TOML file ([`MasterConfig::from_toml_file`]),
//! environment variables `MOONCAKE_MASTER_<NAME>` ([`MasterConfig::apply_env`]), command-line
//! flags (the CLI calls [`MasterConfig::set`] with the same names).

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
    #[error("unknown master option {0:?}")]
    Unknown(String),
    #[error("invalid value for {0}: {1}")]
    Invalid(String, String),
    #[error("reading config file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("parsing config file {0}: {1}")]
    Toml(String, String),
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
    /// Largest piece (bytes); larger objects are striped across segments.
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

/// Names accepted by [`MasterConfig::set`] (and as `MOONCAKE_MASTER_<NAME>` upper-cased).
pub const OPTION_NAMES: [&str; 24] = [
    "rpc_address",
    "rpc_port",
    "metrics_host",
    "metrics_port",
    "eviction_high_watermark_ratio",
    "eviction_ratio",
    "default_kv_lease_ttl",
    "default_kv_soft_pin_ttl",
    "allow_evict_soft_pinned_objects",
    "client_ttl",
    "allocation_strategy",
    "enable_http_metadata_server",
    "http_metadata_server_port",
    "http_metadata_server_host",
    "put_start_discard_timeout_sec",
    "max_slice_size",
    "tick_interval_ms",
    "snapshot_dir",
    "snapshot_interval_ops",
    "enable_ha",
    "etcd_endpoints",
    "cluster_id",
    "ha_lease_ttl_sec",
    "advertise_address",
];

/// Split `h:p;h:p` (or `,`-separated) endpoint lists, dropping an `etcd://` or
/// `http://` scheme and empty entries.
pub fn split_endpoints(s: &str) -> Vec<String> {
    let s = s.trim();
    let s = s.strip_prefix("etcd://").unwrap_or(s);
    s.split([';', ','])
        .map(|e| e.trim().trim_start_matches("http://").trim_end_matches('/'))
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parse a boolean the way gflags does (`true/false`, `1/0`, `yes/no`, `t/f`, `y/n`).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "t" | "y" | "on" => Some(true),
        "false" | "0" | "no" | "f" | "n" | "off" => Some(false),
        _ => None,
    }
}

fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::Invalid(name.into(), format!("{v:?} is not a valid number")))
}

impl MasterConfig {
    /// Parse a TOML document (keys = field names; unknown keys are an error).
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        let c: MasterConfig =
            toml::from_str(s).map_err(|e| ConfigError::Toml("<string>".into(), e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Load a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let s = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io(path.display().to_string(), e))?;
        toml::from_str::<MasterConfig>(&s)
            .map_err(|e| ConfigError::Toml(path.display().to_string(), e.to_string()))
            .and_then(|c| c.validate().map(|_| c))
    }

    /// Set one option by its reference name from a string.
    pub fn set(&mut self, name: &str, v: &str) -> Result<(), ConfigError> {
        let boolean = |v: &str| {
            parse_bool(v)
                .ok_or_else(|| ConfigError::Invalid(name.into(), format!("{v:?} is not a boolean")))
        };
        match name {
            "rpc_address" => self.rpc_address = v.to_string(),
            "rpc_port" => self.rpc_port = num(name, v)?,
            "metrics_host" => self.metrics_host = v.to_string(),
            "metrics_port" => self.metrics_port = num(name, v)?,
            "eviction_high_watermark_ratio" => self.eviction_high_watermark_ratio = num(name, v)?,
            "eviction_ratio" => self.eviction_ratio = num(name, v)?,
            "default_kv_lease_ttl" => self.default_kv_lease_ttl = num(name, v)?,
            "default_kv_soft_pin_ttl" => self.default_kv_soft_pin_ttl = num(name, v)?,
            "allow_evict_soft_pinned_objects" => self.allow_evict_soft_pinned_objects = boolean(v)?,
            "client_ttl" => self.client_ttl = num(name, v)?,
            "allocation_strategy" => self.allocation_strategy = v.parse()?,
            "enable_http_metadata_server" => self.enable_http_metadata_server = boolean(v)?,
            "http_metadata_server_port" => self.http_metadata_server_port = num(name, v)?,
            "http_metadata_server_host" => self.http_metadata_server_host = v.to_string(),
            "put_start_discard_timeout_sec" => self.put_start_discard_timeout_sec = num(name, v)?,
            "max_slice_size" => self.max_slice_size = num(name, v)?,
            "tick_interval_ms" => self.tick_interval_ms = num(name, v)?,
            "snapshot_dir" => self.snapshot_dir = v.to_string(),
            "snapshot_interval_ops" => self.snapshot_interval_ops = num(name, v)?,
            "enable_ha" => self.enable_ha = boolean(v)?,
            "etcd_endpoints" => self.etcd_endpoints = v.to_string(),
            "cluster_id" => self.cluster_id = v.to_string(),
            "ha_lease_ttl_sec" => self.ha_lease_ttl_sec = num(name, v)?,
            "advertise_address" => self.advertise_address = v.to_string(),
            other => return Err(ConfigError::Unknown(other.into())),
        }
        Ok(())
    }

    /// Apply `MOONCAKE_MASTER_<NAME>` variables from `vars` (pass `std::env::vars()`).
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (k, v) in vars {
            let Some(rest) = k.strip_prefix("MOONCAKE_MASTER_") else {
                continue;
            };
            let name = rest.to_ascii_lowercase();
            if OPTION_NAMES.contains(&name.as_str()) {
                self.set(&name, &v)?;
            }
        }
        Ok(())
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
    fn toml_env_and_set() {
        let mut c = MasterConfig::from_toml_str(
            "rpc_port = 6000\nallocation_strategy = \"free_ratio_first\"\neviction_ratio = 0.1\n",
        )
        .unwrap();
        assert_eq!(c.rpc_port, 6000);
        assert_eq!(c.allocation_strategy, AllocationStrategy::FreeRatioFirst);
        assert_eq!(c.metrics_port, 9003);
        c.apply_env([
            ("MOONCAKE_MASTER_RPC_PORT".to_string(), "7000".to_string()),
            (
                "MOONCAKE_MASTER_ENABLE_HTTP_METADATA_SERVER".into(),
                "true".into(),
            ),
            ("OTHER".into(), "x".into()),
        ])
        .unwrap();
        assert_eq!(c.rpc_port, 7000);
        assert!(c.enable_http_metadata_server);
        assert!(c.set("client_ttl", "abc").is_err());
        assert!(c.set("nope", "1").is_err());
        assert!(MasterConfig::from_toml_str("bogus = 1").is_err());
        assert!(MasterConfig::from_toml_str("eviction_ratio = 2.0").is_err());
        for n in OPTION_NAMES {
            let v = toml::to_string(&MasterConfig::default()).unwrap();
            assert!(v.contains(n), "{n} missing from serialized config");
        }
    }
}
