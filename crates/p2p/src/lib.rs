//! Mooncake P2P Store: large read-mostly objects (checkpoints, RL weights)
//! shared between many nodes without a central data server. Every reader
//! becomes a source: it announces each shard as soon as it has verified it,
//! and later readers fetch from whoever holds a shard, least loaded first.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mooncake_p2p::{P2pConfig, P2pStore, Region};
//! use mooncake_transfer::{TransferEngine, TransferEngineConfig};
//! let engine = TransferEngine::start(TransferEngineConfig {
//!     metadata_server: "etcd://127.0.0.1:2379".into(),
//!     ..Default::default()
//! })
//! .await?;
//! let buf = engine.allocate_managed_buffer(64 << 20).await?;
//! let node = P2pStore::start(engine, P2pConfig::default()).await?;
//! let region = Region { addr: buf.addr() as u64, len: buf.len() as u64 };
//! node.register("ckpt", &[region], 4 << 20).await?;
//! // elsewhere: node.get_replica("ckpt", &[their_region]).await?;
//! # Ok(()) }
//! ```
//!
//! Layers: [`layout`] (manifest, shards, buffer mapping) and [`scheduler`]
//! (which shard from which holder) are pure and unit-tested without I/O;
//! [`meta`] owns the records in the metadata service and their leases;
//! [`store`] is the I/O shell on the Transfer Engine.
//!
//! Guarantees: a shard is announced (and so served to others) only after its
//! CRC-32 matched the registered one; a holder that served a bad shard is
//! never used again by that reader; a holder that failed a transfer is
//! avoided for a while and the shard is fetched elsewhere; a crashed
//! holder's records vanish within one TTL.

mod error;
pub mod layout;
pub mod meta;
pub mod scheduler;
mod store;

pub use error::P2pError;
pub use layout::{Manifest, Part, Region, Shard};
pub use meta::{list_objects, ObjectInfo};
pub use store::{GetReport, P2pConfig, P2pStore, Progress, TestHooks};
