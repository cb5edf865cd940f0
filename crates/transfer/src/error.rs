//! Errors of the Transfer Engine.
//!
//! [`TransferError`] is what API calls return. [`FailureReason`] is the
//! cloneable, comparable form stored in a failed request's
//! [`TransferStatus`](crate::TransferStatus); each maps onto the other.

use mooncake_metadata::MetadataError;

use crate::Protocol;

/// Everything that can go wrong in the Transfer Engine.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("unknown segment {0:?}")]
    UnknownSegment(String),
    #[error(
        "range {addr:#x}+{len} crosses the end of registered buffer {buffer_addr:#x}+{buffer_len}"
    )]
    OutOfRange {
        addr: u64,
        len: u64,
        buffer_addr: u64,
        buffer_len: u64,
    },
    #[error("address {addr:#x}+{len} is not inside any registered buffer")]
    NotRegistered { addr: u64, len: u64 },
    #[error("local address {addr:#x}+{len} is not inside a locally registered buffer")]
    LocalNotRegistered { addr: usize, len: usize },
    #[error("memory {addr:#x}+{len} overlaps an already registered buffer")]
    AlreadyRegistered { addr: usize, len: usize },
    #[error("peer {segment} unreachable: {message}")]
    PeerUnreachable { segment: String, message: String },
    #[error("cluster token mismatch: {0}")]
    TokenMismatch(String),
    #[error("no enabled transport can reach {segment} at {addr:#x}")]
    NoRoute { segment: String, addr: u64 },
    #[error("transport {protocol} not available: {reason}")]
    TransportUnavailable { protocol: Protocol, reason: String },
    #[error("timed out")]
    Timeout,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("batch {0} does not exist")]
    UnknownBatch(u64),
    #[error(
        "batch {batch} holds {capacity} requests; submitting {requested} more would overflow it"
    )]
    BatchFull {
        batch: u64,
        capacity: usize,
        requested: usize,
    },
    #[error("request index {index} out of range for batch {batch}")]
    InvalidIndex { batch: u64, index: usize },
    #[error("batch {0} still has requests in flight")]
    BatchBusy(u64),
    #[error("engine is shut down")]
    ShutDown,
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("transfer failed: {0}")]
    Failed(FailureReason),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Why a request failed (kept in its status; cloneable and comparable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureReason {
    #[error("remote range {addr:#x}+{len} crosses the end of a registered buffer")]
    OutOfRange { addr: u64, len: u64 },
    #[error("remote address {addr:#x}+{len} is not registered")]
    NotRegistered { addr: u64, len: u64 },
    #[error("local address {addr:#x}+{len} is not registered")]
    LocalNotRegistered { addr: usize, len: usize },
    #[error("unknown segment {0:?}")]
    UnknownSegment(String),
    #[error("peer unreachable: {0}")]
    PeerUnreachable(String),
    #[error("cluster token refused")]
    TokenMismatch,
    #[error("no route: {0}")]
    NoRoute(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("engine shut down")]
    ShutDown,
    #[error("{0}")]
    Other(String),
}

impl TransferError {
    /// True when retrying the same slice elsewhere cannot help (the target
    /// itself refused the addresses, or the request is malformed).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TransferError::OutOfRange { .. }
                | TransferError::NotRegistered { .. }
                | TransferError::LocalNotRegistered { .. }
                | TransferError::TokenMismatch(_)
                | TransferError::UnknownSegment(_)
                | TransferError::ShutDown
                | TransferError::InvalidConfig(_)
        )
    }

    /// The status form of this error.
    pub fn reason(&self) -> FailureReason {
        match self {
            TransferError::OutOfRange { addr, len, .. } => FailureReason::OutOfRange {
                addr: *addr,
                len: *len,
            },
            TransferError::NotRegistered { addr, len } => FailureReason::NotRegistered {
                addr: *addr,
                len: *len,
            },
            TransferError::LocalNotRegistered { addr, len } => FailureReason::LocalNotRegistered {
                addr: *addr,
                len: *len,
            },
            TransferError::UnknownSegment(s) => FailureReason::UnknownSegment(s.clone()),
            TransferError::PeerUnreachable { segment, message } => {
                FailureReason::PeerUnreachable(format!("{segment}: {message}"))
            }
            TransferError::TokenMismatch(_) => FailureReason::TokenMismatch,
            TransferError::NoRoute { .. } => FailureReason::NoRoute(self.to_string()),
            TransferError::Protocol(m) => FailureReason::Protocol(m.clone()),
            TransferError::ShutDown => FailureReason::ShutDown,
            TransferError::Failed(r) => r.clone(),
            other => FailureReason::Other(other.to_string()),
        }
    }
}

impl From<FailureReason> for TransferError {
    fn from(r: FailureReason) -> Self {
        match r {
            FailureReason::OutOfRange { addr, len } => TransferError::OutOfRange {
                addr,
                len,
                buffer_addr: 0,
                buffer_len: 0,
            },
            FailureReason::NotRegistered { addr, len } => {
                TransferError::NotRegistered { addr, len }
            }
            FailureReason::LocalNotRegistered { addr, len } => {
                TransferError::LocalNotRegistered { addr, len }
            }
            FailureReason::UnknownSegment(s) => TransferError::UnknownSegment(s),
            FailureReason::TokenMismatch => TransferError::TokenMismatch(String::new()),
            FailureReason::ShutDown => TransferError::ShutDown,
            other => TransferError::Failed(other),
        }
    }
}
