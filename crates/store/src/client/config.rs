//! [`ClientConfig`]: the store client's settings, with the reference's names
//! (`local_hostname`, `metadata_server`, `global_segment_size`,
//! `local_buffer_size`, `protocol`, `master_server_addr`), loadable from TOML
//! or a JSON/dict-like map; sizes accept `"16MB"`, `"4 GiB"` or plain integers.

use std::time::Duration;

use mooncake_transfer::{Protocol, TransferEngineConfig};
use serde::{Deserialize, Deserializer};

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
    #[serde(deserialize_with = "de_size")]
    pub global_segment_size: u64,
    /// Bytes of the registered staging buffer for put/get on plain memory (0: none).
    #[serde(deserialize_with = "de_size")]
    pub local_buffer_size: u64,
    /// The master's `default_kv_lease_ttl`: a read that takes longer is retried,
    /// because the object may have been replaced under it.
    #[serde(with = "ms")]
    pub lease_ttl: Duration,
    /// Touch every page of the mounted segment at mount time, so puts never
    /// pay first-touch page faults (memory is committed up front, like pinned
    /// RDMA registrations).
    pub prefault_segment: bool,
    /// Deadline of one master RPC.
    #[serde(with = "ms")]
    pub rpc_timeout: Duration,
    /// Deadline of one transfer request.
    #[serde(with = "ms")]
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

/// Parse a size: an integer byte count, or a number with a unit
/// (`K`/`KB`/`KiB`, `M`.., `G`.., `T`..; powers of 1024, as the reference),
/// spaces allowed (`"16 MB"`). Percentages are refused.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let bad = || ClientError::InvalidParams(format!("invalid size {s:?}"));
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if num.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let v = f * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SizeRepr {
        N(u64),
        S(String),
    }
    match SizeRepr::deserialize(d)? {
        SizeRepr::N(n) => Ok(n),
        SizeRepr::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

mod ms {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("16MB").unwrap(), 16 << 20);
        assert_eq!(parse_size("16 MB").unwrap(), 16 << 20);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("1.5GB").unwrap(), 3 << 29);
        assert!(parse_size("50%").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("MB").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }

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
