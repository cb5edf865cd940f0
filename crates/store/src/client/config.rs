//! [`ClientConfig`]: the store client's settings, with the reference's names
//! (`local_hostname`, `metadata_server`, `global_segment_size`,
//! `local_buffer_size`, `protocol`, `master_server_addr`), loadable from TOML
//! or a JSON/dict-like map; sizes and durations as `mooncake_config::units` reads them
//! (`"16MB"`, `"4 GiB"`, `"5s"`) or plain integers (bytes, milliseconds).

use std::time::Duration;

use mooncake_config::Alias;
use mooncake_transfer::{Protocol, TransferEngineConfig};
use serde::{Deserialize, Serialize};

use super::error::{ClientError, Result};

/// Where a store client's settings come from (the workspace's one configuration layer):
/// `MOONCAKE_CLIENT_<FIELD>` and the reference's names `MASTER_SERVER` / `MOONCAKE_MASTER`,
/// `MC_METADATA_SERVER`, `PROTOCOL` / `MOONCAKE_PROTOCOL`, `LOCAL_HOSTNAME`,
/// `DEFAULT_KV_LEASE_TTL` (ms).
pub const LAYERS: mooncake_config::Layers = mooncake_config::Layers {
    component: "CLIENT",
    aliases: &[
        Alias::new("MASTER_SERVER", "master_server_addr"),
        Alias::new("MOONCAKE_MASTER", "master_server_addr"),
        Alias::new("MC_METADATA_SERVER", "metadata_server"),
        Alias::new("PROTOCOL", "protocol"),
        Alias::new("MOONCAKE_PROTOCOL", "protocol"),
        Alias::new("LOCAL_HOSTNAME", "local_hostname"),
        Alias::with_unit("DEFAULT_KV_LEASE_TTL", "lease_ttl", "ms"),
    ],
};

/// Settings of one store client.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ClientConfig {
    /// `host` or `host:port` of this client's Transfer Engine (port 0 / absent: free port).
    pub local_hostname: String,
    /// Metadata connection string (`http://127.0.0.1:8080/metadata`, `etcd://..`, `embedded`, ..).
    pub metadata_server: String,
    /// The master's RPC address (`host:port`).
    pub master_server_addr: String,
    /// Transport between hosts (`tcp`).
    pub protocol: String,
    /// Read and write same-host segments through shared memory (on by
    /// default; off forces `protocol` even on one host, for measurements).
    pub same_host_shm: bool,
    /// Bytes this client contributes to the pool (0: none).
    #[serde(with = "mooncake_config::units::serde_size")]
    pub global_segment_size: u64,
    /// Bytes of the registered staging buffer for put/get on plain memory (0: none).
    #[serde(with = "mooncake_config::units::serde_size")]
    pub local_buffer_size: u64,
    /// The master's `default_kv_lease_ttl`: a read that takes longer is retried,
    /// because the object may have been replaced under it.
    #[serde(with = "mooncake_config::units::serde_duration_ms")]
    pub lease_ttl: Duration,
    /// Touch every page of the mounted segment at mount time, so puts never
    /// pay first-touch page faults (memory is committed up front, like pinned
    /// RDMA registrations).
    pub prefault_segment: bool,
    /// Deadline of one master RPC.
    #[serde(with = "mooncake_config::units::serde_duration_ms")]
    pub rpc_timeout: Duration,
    /// Deadline of one transfer request.
    #[serde(with = "mooncake_config::units::serde_duration_ms")]
    pub transfer_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            local_hostname: "127.0.0.1".into(),
            metadata_server: "http://127.0.0.1:8080/metadata".into(),
            master_server_addr: "127.0.0.1:50051".into(),
            protocol: "tcp".into(),
            same_host_shm: true,
            global_segment_size: 0,
            local_buffer_size: 64 << 20,
            lease_ttl: Duration::from_millis(5_000),
            prefault_segment: true,
            rpc_timeout: Duration::from_secs(10),
            transfer_timeout: Duration::from_secs(30),
        }
    }
}

impl ClientConfig {
    /// Parse a TOML document (missing fields keep their defaults).
    pub fn from_toml(s: &str) -> Result<Self> {
        toml::from_str(s).map_err(|e| ClientError::InvalidParams(format!("client config: {e}")))
    }

    /// Apply the environment over these settings (see [`LAYERS`]).
    pub fn apply_env(&mut self) -> Result<()> {
        *self = LAYERS
            .apply_env(&*self, std::env::vars())
            .map_err(|e| ClientError::InvalidParams(e.to_string()))?;
        Ok(())
    }

    /// `base` (the caller's defaults) < `file` (TOML) < environment (see [`LAYERS`]) <
    /// `flags` (a struct of `Option`s named as the fields).
    pub fn load(
        base: &Self,
        file: Option<&std::path::Path>,
        flags: &impl Serialize,
    ) -> Result<Self> {
        LAYERS
            .load_over(base, file, std::env::vars(), flags)
            .map_err(|e| ClientError::InvalidParams(e.to_string()))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.master_server_addr.trim().is_empty() {
            return Err(ClientError::InvalidParams(
                "master_server_addr is empty".into(),
            ));
        }
        if self.lease_ttl.is_zero() {
            return Err(ClientError::InvalidParams("lease_ttl must be > 0".into()));
        }
        self.protocol_list()?;
        Ok(())
    }

    fn protocol_list(&self) -> Result<Vec<Protocol>> {
        let mut list = Protocol::parse_list(&self.protocol)
            .map_err(|e| ClientError::InvalidParams(e.to_string()))?;
        if list.is_empty() {
            list.push(Protocol::Tcp);
        }
        // Same-host peers share memory whatever the inter-host transport is.
        if self.same_host_shm && !list.contains(&Protocol::Shm) {
            list.push(Protocol::Shm);
        }
        if !self.same_host_shm {
            list.retain(|p| *p != Protocol::Shm);
            if list.is_empty() {
                list.push(Protocol::Tcp);
            }
        }
        Ok(list)
    }

    /// The Transfer Engine settings this client starts its engine with.
    pub fn engine_config(&self) -> Result<TransferEngineConfig> {
        Ok(TransferEngineConfig {
            local_hostname: self.local_hostname.clone(),
            metadata_server: self.metadata_server.clone(),
            protocols: self.protocol_list()?,
            transfer_timeout: self.transfer_timeout,
            ..TransferEngineConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_string_sizes() {
        let c = ClientConfig::from_toml(
            "master_server_addr = \"10.0.0.1:50051\"\nglobal_segment_size = \"1GB\"\nlocal_buffer_size = 1024\nlease_ttl = 200",
        )
        .unwrap();
        assert_eq!(c.global_segment_size, 1 << 30);
        assert_eq!(c.local_buffer_size, 1024);
        assert_eq!(c.lease_ttl, Duration::from_millis(200));
        assert_eq!(c.master_server_addr, "10.0.0.1:50051");
        let env = [
            ("MASTER_SERVER", "a:1"),
            ("MOONCAKE_MASTER", "b:2"),
            ("DEFAULT_KV_LEASE_TTL", "300"),
            ("MOONCAKE_CLIENT_GLOBAL_SEGMENT_SIZE", "2GiB"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let e = LAYERS.apply_env(&c, env).unwrap();
        assert_eq!(e.master_server_addr, "b:2", "the later alias wins");
        assert_eq!(e.lease_ttl, Duration::from_millis(300));
        assert_eq!(e.global_segment_size, 2 << 30);
        assert_eq!(e.local_buffer_size, 1024, "unset: kept");
        let e = c.engine_config().unwrap();
        assert!(e.protocols.contains(&Protocol::Shm));
    }
}
