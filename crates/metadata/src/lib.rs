//! The metadata service: a small key-value store where Transfer Engine segments
//! publish their descriptors (`mooncake/ram/<segment>`) and RPC endpoints
//! (`mooncake/rpc_meta/<segment>`), and where peers look them up.
//!
//! One trait, [`MetadataStore`], with four backends chosen by a connection
//! string (see [`connect`]):
//!
//! | connection string            | backend                                   | watch |
//! |------------------------------|-------------------------------------------|-------|
//! | `embedded` (or empty)        | in-process map, shared by all engines of one process | pushed in-process |
//! | `http://host:port[/metadata]`| our `mooncake metadata-server` ([`http`]) or the reference's | polling, 500 ms |
//! | `etcd://host:port[,host:port]` or `host:port` | etcd v3 through its JSON gateway ([`etcd`]) | etcd watch stream, resumed by revision |
//! | `redis://host:port[/db]`     | redis ([`redis`])                         | keyspace notifications, else polling |
//! | `P2PHANDSHAKE`               | no server: peers exchange descriptors on connect | — |
//!
//! Invariants: values are opaque bytes (the transfer crate stores JSON);
//! `put` overwrites; `get` of a missing key is `Ok(None)`, never an error;
//! a malformed connection string is [`MetadataError::InvalidConnectionString`]
//! before any I/O; a server that cannot be reached is
//! [`MetadataError::Unreachable`] within bounded connect and request
//! timeouts, never a hang. A watcher reports every change made after `watch`
//! returns (polling ones report the latest value of a key written several
//! times between two polls); its task ends when the receiver or the store is
//! dropped.
//!
//! [`http::server`] holds the HTTP metadata server (standalone, or as an
//! `axum::Router` mounted by another server). Tests start real etcd and redis
//! servers with `mooncake-testkit`.

mod error;
pub use error::MetadataError;

use std::sync::Arc;

/// Key prefix under which segment descriptors are stored (reference-compatible).
pub const SEGMENT_KEY_PREFIX: &str = "mooncake/ram/";
/// Key prefix under which RPC endpoints are stored (reference-compatible).
pub const RPC_META_KEY_PREFIX: &str = "mooncake/rpc_meta/";

/// The connection string that selects the P2P handshake mode (no server).
pub const P2P_HANDSHAKE: &str = "P2PHANDSHAKE";

/// Key of a segment's descriptor.
pub fn segment_key(segment: &str) -> String {
    format!("{SEGMENT_KEY_PREFIX}{segment}")
}

/// Key of a segment's RPC endpoint record.
pub fn rpc_meta_key(segment: &str) -> String {
    format!("{RPC_META_KEY_PREFIX}{segment}")
}

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// A key-value metadata backend. Implementations are cheap to clone behind an `Arc`
/// and safe to call from many tasks at once.
#[async_trait::async_trait]
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    /// Value of `key`, or `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, MetadataError>;
    /// Store `value` under `key`, replacing any previous value.
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), MetadataError>;
    /// Remove `key`; removing an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<(), MetadataError>;
    /// All keys that start with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, MetadataError>;
    /// Changes to keys under `prefix` from now on (see the crate docs for how
    /// each backend watches). The receiver closes when the store is dropped.
    async fn watch(
        &self,
        prefix: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<WatchEvent>, MetadataError>;
    /// Human-readable backend name, for logs.
    fn backend(&self) -> &'static str;
}

/// Shared handle to a metadata backend.
pub type SharedMetadata = Arc<dyn MetadataStore>;

mod conn;
mod embedded;
pub mod etcd;
pub mod http;
pub mod redis;
pub mod watch;

pub use conn::{parse as parse_connection_string, ConnSpec};
pub use embedded::EmbeddedMetadata;
pub use etcd::EtcdMetadata;
pub use http::client::{HttpMetadata, HttpOptions};
pub use redis::RedisMetadata;

/// Open the backend named by a connection string (see the module docs).
///
/// Network backends are contacted once before this returns: an unreachable
/// server fails with [`MetadataError::Unreachable`] within a few seconds
/// (bounded connect timeouts), a malformed string with
/// [`MetadataError::InvalidConnectionString`] without any I/O.
///
/// `P2PHANDSHAKE` is not a store: the transfer engine handles it itself, so
/// here it returns an isolated embedded store that only holds this process's
/// own descriptors.
pub async fn connect(conn: &str) -> Result<SharedMetadata, MetadataError> {
    Ok(match conn::parse(conn)? {
        ConnSpec::Embedded => Arc::new(EmbeddedMetadata::global()),
        ConnSpec::P2pHandshake => Arc::new(EmbeddedMetadata::new()),
        ConnSpec::Http(url) => Arc::new(HttpMetadata::connect(url, HttpOptions::default()).await?),
        ConnSpec::Etcd(endpoints) => Arc::new(EtcdMetadata::connect(&endpoints).await?),
        ConnSpec::Redis(url) => Arc::new(RedisMetadata::connect(&url).await?),
    })
}
