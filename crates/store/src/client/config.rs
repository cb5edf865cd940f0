//! [`ClientConfig`]: the store client's settings, with the reference's names
//! (`local_hostname`, `metadata_server`, `global_segment_size`,
//! `local_buffer_size`, `protocol`, `master_server_addr`), loadable from TOML
//! or a JSON/dict-like map; sizes and durations as `mooncake_config::units` reads them
//! (`"16MB"`, `"4 GiB"`, `"5s"`) or plain integers (bytes, milliseconds).

use std::time::Duration;

use mooncake_transfer::{Protocol, TransferEngineConfig};
use serde::Deserialize;

use super::error::{ClientError, Result};

/// Settings of one store client.
#[derive(Debug, Clone, Deserialize)]
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

    /// Apply the reference's environment variables where set: `MASTER_SERVER`,
    /// `MC_METADATA_SERVER`, `PROTOCOL`, `LOCAL_HOSTNAME`,
    /// `DEFAULT_KV_LEASE_TTL` (ms).
    pub fn apply_env(&mut self) -> Result<()> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("MASTER_SERVER") {
            self.master_server_addr = v;
        }
        if let Some(v) = var("MC_METADATA_SERVER") {
            self.metadata_server = v;
        }
        if let Some(v) = var("PROTOCOL") {
            self.protocol = v;
        }
        if let Some(v) = var("LOCAL_HOSTNAME") {
            self.local_hostname = v;
        }
        if let Some(v) = var("DEFAULT_KV_LEASE_TTL") {
            let ms: u64 = v.parse().map_err(|_| {
                ClientError::InvalidParams(format!("DEFAULT_KV_LEASE_TTL={v:?} is not a number"))
            })?;
            self.lease_ttl = Duration::from_millis(ms);
        }
        Ok(())
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
        let e = c.engine_config().unwrap();
        assert!(e.protocols.contains(&Protocol::Shm));
    }
}
