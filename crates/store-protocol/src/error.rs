//! The master's typed error, shared by both ends of the RPC.
//!
//! Every variant has a stable negative `i32` code ([`ErrorCode::code`]); where the
//! reference defines the same condition we use its number, so the Python API can
//! return the codes callers of the reference already test for.

use serde::{Deserialize, Serialize};

/// Error answered by the master (or raised by the RPC layer on its behalf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum ErrorCode {
    /// An invariant broke inside the master; a bug.
    #[error("internal error")]
    Internal,
    /// A value does not fit the buffer it was meant for; also the master's answer when a
    /// reply would exceed the frame limit (split the batch). The request itself was applied.
    #[error("buffer overflow (reply too large: split the batch)")]
    BufferOverflow,
    /// The named segment is not mounted.
    #[error("segment not found")]
    SegmentNotFound,
    /// A segment of that name is already mounted (with a different owner or range).
    #[error("segment already exists")]
    SegmentAlreadyExists,
    /// No space: no segment can hold the object, even after eviction.
    #[error("no space: no segment can hold the object (pool full)")]
    NoSpace,
    /// The key is empty or longer than [`crate::MAX_KEY_LEN`].
    #[error("invalid key (empty or too long)")]
    InvalidKey,
    /// A request parameter is out of range (size 0, replica_num 0, bad regex, ...).
    #[error("invalid parameters")]
    InvalidParams,
    /// put_end / put_revoke for a key that has no put in progress.
    #[error("invalid write: no put in progress for this key")]
    InvalidWrite,
    /// The object exists but is not complete yet (put_start without put_end).
    #[error("replica is not ready")]
    ReplicaNotReady,
    /// No such object (or none of its replicas survived).
    #[error("object not found")]
    ObjectNotFound,
    /// put_start for a key that exists or is being written.
    #[error("object already exists")]
    ObjectAlreadyExists,
    /// The object is leased (recently read); remove it later or with force.
    #[error("object has a lease")]
    ObjectHasLease,
    /// The RPC failed: connection lost, timeout, master unreachable.
    #[error("rpc failed")]
    RpcFail,
    /// The request frame could not be decoded.
    #[error("malformed request frame")]
    MalformedFrame,
    /// The request frame is larger than [`crate::MAX_FRAME_LEN`].
    #[error("request frame too large")]
    FrameTooLarge,
    /// The client is unknown to the master (expired or never mounted); remount.
    #[error("client not found")]
    ClientNotFound,
    /// This master does not serve: a standby, or a leader that lost its etcd lease
    /// (fenced). Find the current leader and retry.
    #[error("not the leader master (standby or fenced): retry on the leader")]
    NotLeader,
    /// The master could not make the change durable (op-log or etcd write failed); the
    /// change was not acknowledged.
    #[error("master could not persist the change")]
    NotDurable,
    /// The caller lacks the credential the request needs: the master refused the
    /// connection's cluster credential (or the master could not prove it), or the
    /// operation is cluster-wide (`remove_all`, `remove_by_regex`) and needs the admin one.
    #[error("permission denied: cluster credential refused, or the operation needs the admin credential")]
    PermissionDenied,
}

impl ErrorCode {
    /// All variants, for tests and code tables.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::Internal,
        ErrorCode::BufferOverflow,
        ErrorCode::SegmentNotFound,
        ErrorCode::SegmentAlreadyExists,
        ErrorCode::NoSpace,
        ErrorCode::InvalidKey,
        ErrorCode::InvalidParams,
        ErrorCode::InvalidWrite,
        ErrorCode::ReplicaNotReady,
        ErrorCode::ObjectNotFound,
        ErrorCode::ObjectAlreadyExists,
        ErrorCode::ObjectHasLease,
        ErrorCode::RpcFail,
        ErrorCode::MalformedFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::ClientNotFound,
        ErrorCode::NotLeader,
        ErrorCode::NotDurable,
        ErrorCode::PermissionDenied,
    ];

    /// Stable negative code. Reference numbers where the reference has the condition
    /// (`NO_AVAILABLE_HANDLE` = -200, `OBJECT_NOT_FOUND` = -704, ...); ours otherwise.
    pub const fn code(self) -> i32 {
        match self {
            ErrorCode::Internal => -1,
            ErrorCode::BufferOverflow => -10,
            ErrorCode::SegmentNotFound => -101,
            ErrorCode::SegmentAlreadyExists => -102,
            ErrorCode::NoSpace => -200,
            ErrorCode::InvalidKey => -400,
            ErrorCode::InvalidParams => -600,
            ErrorCode::InvalidWrite => -700,
            ErrorCode::ReplicaNotReady => -703,
            ErrorCode::ObjectNotFound => -704,
            ErrorCode::ObjectAlreadyExists => -705,
            ErrorCode::ObjectHasLease => -706,
            ErrorCode::RpcFail => -900,
            ErrorCode::MalformedFrame => -901,
            ErrorCode::FrameTooLarge => -902,
            ErrorCode::ClientNotFound => -1012,
            ErrorCode::NotLeader => -1100,
            ErrorCode::NotDurable => -1101,
            ErrorCode::PermissionDenied => -1200,
        }
    }

    /// Inverse of [`ErrorCode::code`].
    pub fn from_code(code: i32) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_negative_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for e in ErrorCode::ALL {
            assert!(e.code() < 0, "{e:?}");
            assert!(seen.insert(e.code()), "duplicate code {}", e.code());
            assert_eq!(ErrorCode::from_code(e.code()), Some(e));
        }
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(ErrorCode::ObjectNotFound.code(), -704);
    }
}
