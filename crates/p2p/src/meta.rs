//! The P2P store's records in the metadata service, and how they expire.
//!
//! Keys (values are JSON):
//! - `mooncake/p2p/objects/<name>` — the [`Manifest`], written by `register`,
//!   deleted by `unregister`; not leased (peers that finished a copy may keep
//!   serving after the seeder is gone);
//! - `mooncake/p2p/holders/<name>/<segment>` — a [`HolderRecord`]: which
//!   shards that node serves and where they are in its memory, rewritten as
//!   soon as it has a new verified shard.
//!
//! Leases: every holder record carries `expires_at_ms` (wall clock), renewed
//! every TTL/3; readers ignore expired records and delete them, so a crashed
//! holder disappears within one TTL on every backend. On etcd the records are
//! also attached to a real etcd lease kept alive by this node, so etcd itself
//! deletes them when the node stops refreshing. (The wall-clock check assumes
//! hosts' clocks agree to well within the TTL, as NTP keeps them.)

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mooncake_metadata::etcd::{EtcdClient, LeaseKeeper};
use mooncake_metadata::{ConnSpec, EtcdMetadata, SharedMetadata};
use serde::{Deserialize, Serialize};

use crate::error::P2pError;
use crate::layout::{Manifest, Part, Region, ShardSet};

pub const OBJECTS_PREFIX: &str = "mooncake/p2p/objects/";
pub const HOLDERS_PREFIX: &str = "mooncake/p2p/holders/";

pub fn object_key(name: &str) -> String {
    format!("{OBJECTS_PREFIX}{name}")
}

pub fn holders_prefix(name: &str) -> String {
    format!("{HOLDERS_PREFIX}{name}/")
}

pub fn holder_key(name: &str, node: &str) -> String {
    format!("{HOLDERS_PREFIX}{name}/{node}")
}

/// Names are UTF-8, 1..=256 bytes, without control characters.
pub fn check_name(name: &str) -> Result<(), P2pError> {
    if name.is_empty() {
        return Err(P2pError::InvalidName(name.into(), "empty"));
    }
    if name.len() > 256 {
        return Err(P2pError::InvalidName(name.into(), "longer than 256 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(P2pError::InvalidName(
            name.into(),
            "contains control characters",
        ));
    }
    Ok(())
}

/// One node's offer of (part of) an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// Transfer Engine segment (`host:port`) to read from.
    pub segment: String,
    /// [`Manifest::id`] of the registration these shards belong to.
    pub object_id: u64,
    /// True for the node that registered the object.
    pub origin: bool,
    /// The object laid out over these regions of the holder's memory.
    pub regions: Vec<Region>,
    /// Verified shards, as half-open runs.
    pub have: Vec<[usize; 2]>,
    /// Shards this node is fetching now (so other readers prefer other
    /// shards from the same source and fetch these from it later).
    #[serde(default)]
    pub fetching: Vec<[usize; 2]>,
    /// Wall-clock expiry (ms since the Unix epoch).
    pub expires_at_ms: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A holder record that is live and consistent with `manifest`, parsed.
#[derive(Debug, Clone)]
pub struct LiveHolder {
    pub record: HolderRecord,
    pub have: ShardSet,
    pub fetching: ShardSet,
}

/// Why a stored holder record is not usable.
#[derive(Debug, PartialEq, Eq)]
pub enum Stale {
    Expired,
    Invalid(String),
}

/// Parse and check a holder record against `manifest` at wall time `now_ms`.
pub fn parse_holder(manifest: &Manifest, bytes: &[u8], now_ms: u64) -> Result<LiveHolder, Stale> {
    let record: HolderRecord =
        serde_json::from_slice(bytes).map_err(|e| Stale::Invalid(e.to_string()))?;
    if record.expires_at_ms <= now_ms {
        return Err(Stale::Expired);
    }
    if record.object_id != manifest.id {
        return Err(Stale::Invalid("from another registration".into()));
    }
    let room = record
        .regions
        .iter()
        .try_fold(0u64, |a, r| a.checked_add(r.len));
    if !matches!(room, Some(r) if r >= manifest.size) {
        return Err(Stale::Invalid("regions smaller than the object".into()));
    }
    let n = manifest.shards.len();
    let have = ShardSet::from_ranges(n, &record.have).map_err(Stale::Invalid)?;
    let fetching = ShardSet::from_ranges(n, &record.fetching).map_err(Stale::Invalid)?;
    Ok(LiveHolder {
        record,
        have,
        fetching,
    })
}

/// This node's handle on the metadata service, with its lease on etcd.
#[derive(Debug)]
pub struct Meta {
    pub store: SharedMetadata,
    etcd: Option<(EtcdClient, LeaseKeeper)>,
    pub ttl: Duration,
}

impl Meta {
    /// Connect to the service named by `conn` (the engine's
    /// `metadata_server`); on etcd, grant and keep alive a lease of `ttl`.
    pub async fn connect(conn: &str, ttl: Duration) -> Result<Self, P2pError> {
        match mooncake_metadata::parse_connection_string(conn)? {
            ConnSpec::P2pHandshake => Err(P2pError::NoSharedMetadata(conn.into())),
            ConnSpec::Etcd(endpoints) => {
                let etcd = EtcdMetadata::connect(&endpoints).await?;
                let client = etcd.client().clone();
                let lease = client.lease_grant(ttl).await?;
                let keeper = client.keep_alive(lease);
                Ok(Self {
                    store: Arc::new(etcd),
                    etcd: Some((client, keeper)),
                    ttl,
                })
            }
            _ => Ok(Self {
                store: mooncake_metadata::connect(conn).await?,
                etcd: None,
                ttl,
            }),
        }
    }

    /// Put a holder record, leased where the backend has leases.
    pub async fn put_holder(&self, key: &str, record: &HolderRecord) -> Result<(), P2pError> {
        let value = serde_json::to_vec(record).expect("holder record serialises");
        match &self.etcd {
            Some((client, keeper)) if keeper.is_alive() => {
                client
                    .put(key.as_bytes(), &value, Some(keeper.lease().id))
                    .await?
            }
            _ => self.store.put(key, &value).await?,
        }
        Ok(())
    }

    /// Revoke the etcd lease (every leased record goes at once).
    pub async fn revoke(&self) {
        if let Some((client, keeper)) = &self.etcd {
            let _ = client.lease_revoke(keeper.lease().id).await;
        }
    }
}

/// The manifest of `name`, or `None` when absent; malformed ones are errors.
pub async fn read_manifest(
    store: &SharedMetadata,
    name: &str,
) -> Result<Option<Manifest>, P2pError> {
    let key = object_key(name);
    let Some(bytes) = store.get(&key).await? else {
        return Ok(None);
    };
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| P2pError::Malformed {
        key: key.clone(),
        message: e.to_string(),
    })?;
    m.check().map_err(|message| P2pError::Malformed {
        key: key.clone(),
        message,
    })?;
    Ok(Some(m))
}

/// Live holder records of `m`, by node; expired ones are deleted on the way.
pub async fn read_holders(
    store: &SharedMetadata,
    m: &Manifest,
) -> Result<Vec<(String, LiveHolder)>, P2pError> {
    let prefix = holders_prefix(&m.name);
    let now = now_ms();
    let mut out = Vec::new();
    for key in store.list(&prefix).await? {
        let node = &key[prefix.len()..];
        if node.contains('/') {
            continue;
        }
        let Some(bytes) = store.get(&key).await? else {
            continue;
        };
        match parse_holder(m, &bytes, now) {
            Ok(h) => out.push((node.to_string(), h)),
            Err(Stale::Expired) => {
                tracing::debug!(key, "deleting an expired holder record");
                let _ = store.delete(&key).await;
            }
            Err(Stale::Invalid(why)) => tracing::debug!(key, why, "ignoring holder record"),
        }
    }
    Ok(out)
}

/// One object as `list` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    pub shards: usize,
    pub parts: Vec<Part>,
    /// Live holders, and how many of them have every shard.
    pub holders: usize,
    pub complete_holders: usize,
}

/// Objects whose names start with `prefix`, with their live holders.
pub async fn list_objects(
    store: &SharedMetadata,
    prefix: &str,
) -> Result<Vec<ObjectInfo>, P2pError> {
    let mut out = Vec::new();
    for key in store.list(&format!("{OBJECTS_PREFIX}{prefix}")).await? {
        let name = &key[OBJECTS_PREFIX.len()..];
        let Some(m) = read_manifest(store, name).await? else {
            continue;
        };
        let holders = read_holders(store, &m).await?;
        out.push(ObjectInfo {
            name: m.name.clone(),
            size: m.size,
            shards: m.shards.len(),
            parts: m.parts.clone(),
            holders: holders.len(),
            complete_holders: holders.iter().filter(|(_, h)| h.have.is_full()).count(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Part, Shard};

    fn manifest() -> Manifest {
        Manifest {
            name: "m".into(),
            id: 7,
            size: 8,
            shard_size: 4,
            parts: vec![Part {
                name: String::new(),
                len: 8,
            }],
            shards: vec![
                Shard {
                    offset: 0,
                    len: 4,
                    crc32: 0,
                },
                Shard {
                    offset: 4,
                    len: 4,
                    crc32: 0,
                },
            ],
        }
    }

    fn record() -> HolderRecord {
        HolderRecord {
            segment: "127.0.0.1:1".into(),
            object_id: 7,
            origin: false,
            regions: vec![Region { addr: 4096, len: 8 }],
            have: vec![[1, 2]],
            fetching: vec![],
            expires_at_ms: 2000,
        }
    }

    #[test]
    fn holder_records_are_checked() {
        let m = manifest();
        let ok = serde_json::to_vec(&record()).unwrap();
        let live = parse_holder(&m, &ok, 1000).unwrap();
        assert!(live.have.contains(1) && !live.have.contains(0));
        assert_eq!(parse_holder(&m, &ok, 2000).unwrap_err(), Stale::Expired);
        let mut r = record();
        r.object_id = 8;
        let b = serde_json::to_vec(&r).unwrap();
        assert!(matches!(parse_holder(&m, &b, 0), Err(Stale::Invalid(_))));
        let mut r = record();
        r.regions[0].len = 7;
        let b = serde_json::to_vec(&r).unwrap();
        assert!(matches!(parse_holder(&m, &b, 0), Err(Stale::Invalid(_))));
        let mut r = record();
        r.have = vec![[0, 3]];
        let b = serde_json::to_vec(&r).unwrap();
        assert!(matches!(parse_holder(&m, &b, 0), Err(Stale::Invalid(_))));
        assert!(matches!(parse_holder(&m, b"{", 0), Err(Stale::Invalid(_))));
    }

    #[test]
    fn names() {
        assert!(check_name("ckpt/llama-7b").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(257)).is_err());
    }
}
