//! Engine configuration: one typed struct, assembled by the workspace's one
//! configuration layer ([`LAYERS`], `mooncake_config::layer`): defaults < TOML file <
//! environment (`MC_*`, the reference's names, and `MOONCAKE_TRANSFER_<FIELD>`) < flags.
//!
//! Invariants: `0 < slice_size <= 1 GiB` (one tcp frame), `connections_per_peer > 0` (checked by
//! [`TransferEngineConfig::validate`], which `TransferEngine::start` calls).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mooncake_config::Alias;
use mooncake_security::{AuthMode, Credential};
use serde::{Deserialize, Serialize};

use crate::TransferError;

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Protocol {
    /// Any host: one-sided READ/WRITE served by the target's RPC port.
    Tcp,
    /// Same host: map the peer's memfd-backed buffers and memcpy.
    Shm,
    /// Local file or block device registered as a segment (io_uring).
    File,
    /// RDMA verbs (cargo feature `rdma`). Without the feature or a device,
    /// enabling it fails with [`TransferError::TransportUnavailable`] — unless
    /// `tcp` is enabled too, which then carries the traffic (a warning says so).
    Rdma,
}

impl Protocol {
    /// The lower-case name used in configuration and descriptors.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Shm => "shm",
            Protocol::File => "file",
            Protocol::Rdma => "rdma",
        }
    }

    /// Parse a comma-separated list such as `"tcp,shm"`.
    pub fn parse_list(s: &str) -> Result<Vec<Protocol>, TransferError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let p: Protocol = part.parse()?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Protocol {
    type Error = TransferError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for Protocol {
    type Err = TransferError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "shm" => Ok(Protocol::Shm),
            "file" | "nvmeof" => Ok(Protocol::File),
            "rdma" => Ok(Protocol::Rdma),
            other => Err(TransferError::InvalidConfig(format!(
                "unknown protocol {other:?} (expected tcp, shm, file or rdma)"
            ))),
        }
    }
}

/// Transfer direction, from the initiator's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Opcode {
    /// Remote -> local.
    Read,
    /// Local -> remote.
    Write,
}

impl FromStr for Opcode {
    type Err = TransferError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Opcode::Read),
            "write" => Ok(Opcode::Write),
            other => Err(TransferError::InvalidConfig(format!(
                "unknown opcode {other:?} (expected read or write)"
            ))),
        }
    }
}

/// Where the engine's settings come from (the workspace's one configuration layer):
/// `MOONCAKE_TRANSFER_<FIELD>` and the reference's `MC_*` names.
pub const LAYERS: mooncake_config::Layers = mooncake_config::Layers {
    component: "TRANSFER",
    aliases: &[
        Alias::new("MC_METADATA_SERVER", "metadata_server"),
        Alias::new("MC_LOCAL_HOSTNAME", "local_hostname"),
        Alias::new("MC_PROTOCOL", "protocols"),
        Alias::new("MC_CLUSTER_TOKEN", "cluster_token"),
        Alias::new("MC_SLICE_SIZE", "slice_size"),
        Alias::new("MC_RETRY_COUNT", "retry_count"),
        Alias::with_unit("MC_TRANSFER_TIMEOUT", "transfer_timeout", "s"),
        Alias::new("MC_CONNECTIONS_PER_PEER", "connections_per_peer"),
    ],
};

/// Configuration of one [`TransferEngine`](crate::TransferEngine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransferEngineConfig {
    /// `host` or `host:port`; port 0 or absent picks a free port. The segment
    /// name is `host:port` with the port actually bound.
    pub local_hostname: String,
    /// Metadata connection string: `embedded`, `http://..`, `etcd://..`,
    /// `redis://..` or `P2PHANDSHAKE`.
    pub metadata_server: String,
    /// Enabled transports, in no particular order (the engine prefers
    /// local memcpy, then shm, then file, then tcp).
    pub protocols: Vec<Protocol>,
    /// The cluster token peers prove (mutual HMAC handshake on every tcp
    /// connection, see [`Self::auth_mode`]); else `MC_CLUSTER_TOKEN` /
    /// `MOONCAKE_CLUSTER_TOKEN_FILE`.
    pub cluster_token: Option<String>,
    /// Run without authentication (explicit; logged as a warning).
    pub insecure: bool,
    /// Requests longer than this are split into slices spread over connections
    /// (bytes, or a size string such as `"1MiB"`).
    #[serde(with = "mooncake_config::units::serde_size")]
    pub slice_size: usize,
    /// Retries of a failed slice (on another connection or transport).
    pub retry_count: u32,
    /// Deadline of one request, from submission to completion.
    #[serde(with = "mooncake_config::units::serde_duration_ms")]
    pub transfer_timeout: Duration,
    /// Pooled tcp connections per peer.
    pub connections_per_peer: usize,
    /// Timeout for connecting to a peer (and for the handshake).
    #[serde(with = "mooncake_config::units::serde_duration_ms")]
    pub connect_timeout: Duration,
    /// RDMA devices to use (the reference's `device_name`, e.g. `mlx5_0,mlx5_1`);
    /// empty: `MC_RDMA_DEVICES`, else every device with an active port.
    #[serde(default)]
    pub rdma_devices: Vec<String>,
}

impl Default for TransferEngineConfig {
    fn default() -> Self {
        Self {
            local_hostname: "127.0.0.1:0".into(),
            metadata_server: "embedded".into(),
            protocols: vec![Protocol::Tcp, Protocol::Shm],
            cluster_token: None,
            insecure: false,
            slice_size: 1 << 20,
            retry_count: 2,
            transfer_timeout: Duration::from_secs(30),
            connections_per_peer: 4,
            connect_timeout: Duration::from_secs(5),
            rdma_devices: Vec::new(),
        }
    }
}

impl TransferEngineConfig {
    /// Check the invariants.
    pub fn validate(&self) -> Result<(), TransferError> {
        if self.slice_size == 0 {
            return Err(TransferError::InvalidConfig(
                "slice_size must be > 0".into(),
            ));
        }
        if self.connections_per_peer == 0 {
            return Err(TransferError::InvalidConfig(
                "connections_per_peer must be > 0".into(),
            ));
        }
        if self.transfer_timeout.is_zero() {
            return Err(TransferError::InvalidConfig(
                "transfer_timeout must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// Apply the environment over these settings: the reference's variables
    /// `MC_METADATA_SERVER`, `MC_LOCAL_HOSTNAME`, `MC_PROTOCOL`, `MC_CLUSTER_TOKEN`,
    /// `MC_SLICE_SIZE`, `MC_RETRY_COUNT`, `MC_TRANSFER_TIMEOUT` (seconds),
    /// `MC_CONNECTIONS_PER_PEER`, and `MOONCAKE_TRANSFER_<FIELD>` for every field (which win);
    /// see [`LAYERS`].
    pub fn apply_env(&mut self) -> Result<(), TransferError> {
        *self = LAYERS
            .apply_env(&*self, std::env::vars())
            .map_err(|e| TransferError::InvalidConfig(e.to_string()))?;
        Ok(())
    }

    /// `base` (the caller's defaults; `&Self::default()` for none) < `file` (TOML) <
    /// environment (as [`TransferEngineConfig::apply_env`]) < `flags` (a struct of `Option`s
    /// named as the fields).
    pub fn load(
        base: &Self,
        file: Option<&std::path::Path>,
        flags: &impl Serialize,
    ) -> Result<Self, TransferError> {
        LAYERS
            .load_over(base, file, std::env::vars(), flags)
            .map_err(|e| TransferError::InvalidConfig(e.to_string()))
    }

    /// How this engine authenticates its tcp connections: `insecure` wins
    /// (with a warning), then `cluster_token`, then the environment
    /// (`MC_CLUSTER_TOKEN`, `MOONCAKE_CLUSTER_TOKEN_FILE`). With none of them
    /// the engine runs without authentication and says so in a warning (the
    /// reference has no credential; `mooncake up` always passes one).
    /// Only the cluster role is used: the transfer engine has no admin
    /// operations.
    pub fn auth_mode(&self) -> Result<AuthMode, TransferError> {
        let bad = |e: mooncake_security::SecurityError| TransferError::InvalidConfig(e.to_string());
        if self.insecure {
            tracing::warn!("transfer engine runs without authentication (insecure): any process that reaches its port can read and write registered memory");
            return Ok(AuthMode::Insecure);
        }
        if let Some(t) = self
            .cluster_token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        {
            return Ok(AuthMode::Required(Credential::from_token(t).map_err(bad)?));
        }
        match Credential::from_env().map_err(bad)? {
            Some(c) => Ok(AuthMode::Required(c.without_admin())),
            None => {
                tracing::warn!("no cluster credential (MC_CLUSTER_TOKEN / MOONCAKE_CLUSTER_TOKEN_FILE): transfer engine runs WITHOUT authentication; set one, or pass insecure to silence this");
                Ok(AuthMode::Insecure)
            }
        }
    }

    /// Load from a TOML document (missing fields take their defaults).
    pub fn from_toml(text: &str) -> Result<Self, TransferError> {
        toml::from_str(text).map_err(|e| TransferError::InvalidConfig(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_list_and_toml() {
        assert_eq!(
            Protocol::parse_list("tcp, shm,tcp").unwrap(),
            vec![Protocol::Tcp, Protocol::Shm]
        );
        assert!(Protocol::parse_list("tcp,carrier-pigeon").is_err());
        let c = TransferEngineConfig::from_toml(
            "metadata_server = \"P2PHANDSHAKE\"\nprotocols = [\"tcp\"]\ntransfer_timeout = 1500\n",
        )
        .unwrap();
        assert_eq!(c.metadata_server, "P2PHANDSHAKE");
        assert_eq!(c.protocols, vec![Protocol::Tcp]);
        assert_eq!(c.transfer_timeout, Duration::from_millis(1500));
        assert_eq!(c.slice_size, TransferEngineConfig::default().slice_size);
        let env = [
            ("MC_PROTOCOL", "TCP,rdma"),
            ("MC_TRANSFER_TIMEOUT", "2"),
            ("MC_SLICE_SIZE", "64KiB"),
            ("MC_RETRY_COUNT", "1"),
            ("MOONCAKE_TRANSFER_RETRY_COUNT", "5"),
            ("MC_CLUSTER_TOKEN", "t"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let e = LAYERS.apply_env(&c, env).unwrap();
        assert_eq!(e.protocols, vec![Protocol::Tcp, Protocol::Rdma]);
        assert_eq!(
            e.transfer_timeout,
            Duration::from_secs(2),
            "MC_TRANSFER_TIMEOUT is seconds"
        );
        assert_eq!(e.slice_size, 64 << 10);
        assert_eq!(e.retry_count, 5, "MOONCAKE_TRANSFER_* wins over MC_*");
        assert_eq!(e.cluster_token.as_deref(), Some("t"));
        assert_eq!(
            e.metadata_server, "P2PHANDSHAKE",
            "unset variables keep the base"
        );
        let bad = TransferEngineConfig {
            slice_size: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
