//! Typed errors of the P2P store.

use mooncake_metadata::MetadataError;
use mooncake_transfer::TransferError;

use crate::layout::format_shards;

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("invalid object name {0:?}: {1}")]
    InvalidName(String, &'static str),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("object {0:?} not found")]
    NotFound(String),
    #[error("object {0:?} is already registered (unregister it first)")]
    AlreadyRegistered(String),
    #[error("this node already serves object {0:?} (delete_replica it first)")]
    AlreadyServing(String),
    #[error("object {0:?} is not served by this node")]
    NotServing(String),
    #[error("buffers too small for {name:?}: need {need} bytes, got {have}")]
    BuffersTooSmall { name: String, need: u64, have: u64 },
    #[error("buffer [{addr:#x}, +{len}) is not inside memory registered with the transfer engine")]
    NotRegistered { addr: u64, len: u64 },
    #[error(
        "{name:?}: no live holder has shard(s) {} of {total}; gave up after {secs:.1} s without progress",
        format_shards(.shards)
    )]
    MissingShards {
        name: String,
        shards: Vec<usize>,
        total: usize,
        secs: f64,
    },
    #[error("malformed P2P metadata under {key}: {message}")]
    Malformed { key: String, message: String },
    #[error("the P2P store needs a shared metadata service (etcd://, redis://, http:// or embedded), not {0}")]
    NoSharedMetadata(String),
    #[error("metadata: {0}")]
    Metadata(#[from] MetadataError),
    #[error("transfer engine: {0}")]
    Transfer(#[from] TransferError),
}
