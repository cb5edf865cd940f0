//! Where the master leader is: the etcd record a leading master writes (`mooncake/<cluster_id>/master/leader`,
//! JSON [`LeaderInfo`]) and how a client reads it. The master's HA module writes the record; clients
//! ([`crate::MasterClient`] with an `etcd://` address, tools) only read it, so the record's shape lives
//! here, on the protocol side both depend on.

use mooncake_metadata::etcd::EtcdClient;
use serde::{Deserialize, Serialize};

/// The etcd key prefix of a master group.
pub fn key_prefix(cluster_id: &str) -> String {
    format!("mooncake/{cluster_id}/master/")
}

/// The leader key's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// RPC address clients connect to.
    pub rpc: String,
    /// HTTP (metrics/admin) address.
    #[serde(default)]
    pub http: String,
    pub incarnation: u64,
}

/// Find the leader's RPC address of `cluster_id` in etcd, with the term.
pub async fn find_leader(
    etcd: &EtcdClient,
    cluster_id: &str,
) -> Result<Option<(LeaderInfo, u64)>, mooncake_metadata::MetadataError> {
    let key = format!("{}leader", key_prefix(cluster_id)).into_bytes();
    Ok(etcd.get_kv(&key).await?.and_then(|kv| {
        serde_json::from_slice::<LeaderInfo>(&kv.value)
            .ok()
            .map(|l| (l, kv.create_revision as u64))
    }))
}

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
