//! The store client's typed error, and its mapping to the reference's
//! negative return codes (for the Python module).

use mooncake_store_protocol::ErrorCode;
use mooncake_transfer::TransferError;

/// The reference's `TRANSFER_FAIL`.
pub const CODE_TRANSFER_FAIL: i32 = -800;
/// The reference's `INVALID_PARAMS`.
pub const CODE_INVALID_PARAMS: i32 = -600;
/// The reference's `BUFFER_OVERFLOW`.
pub const CODE_BUFFER_OVERFLOW: i32 = -10;
/// The reference's `INVALID_READ` (a replica did not read back as listed).
pub const CODE_INVALID_READ: i32 = -701;
/// The reference's `UNAVAILABLE_IN_CURRENT_STATUS` (client closed / not set up).
pub const CODE_UNAVAILABLE: i32 = -1010;
/// The reference's `INTERNAL_ERROR`.
pub const CODE_INTERNAL: i32 = -1;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The master answered an error (object not found, already exists, no space, ...).
    #[error("master: {0}")]
    Master(#[from] ErrorCode),
    /// Moving bytes failed (peer dead, out-of-range address, timeout).
    #[error("transfer failed: {0}")]
    Transfer(#[from] TransferError),
    /// A parameter is out of range.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// The caller's buffer is smaller than the object.
    #[error("buffer too small: object is {need} bytes, buffer holds {have}")]
    BufferTooSmall { need: u64, have: u64 },
    /// `local_buffer_size` is 0, so operations on plain (unregistered) memory
    /// have nowhere to stage their bytes.
    #[error("no local staging buffer (local_buffer_size = 0): use put_from/get_into with registered memory")]
    NoStagingBuffer,
    /// Every replica failed to read consistently (sizes disagree, or the read
    /// outlasted the object's lease each time).
    #[error("could not read a consistent replica of {key:?}: {reason}")]
    InconsistentRead { key: String, reason: String },
    /// No replica's bytes matched the CRC32C recorded with the object
    /// (corrupted or overwritten everywhere).
    #[error("no replica of {key:?} matched its CRC32C checksum")]
    ChecksumMismatch { key: String },
    /// The client was closed.
    #[error("client is closed")]
    Closed,
    /// Setup failed (metadata, engine start, master connection).
    #[error("setup failed: {0}")]
    Setup(String),
}

impl ClientError {
    /// The reference's negative return code for this error.
    pub fn code(&self) -> i32 {
        match self {
            ClientError::Master(e) => e.code(),
            ClientError::Transfer(_) => CODE_TRANSFER_FAIL,
            ClientError::InvalidParams(_) => CODE_INVALID_PARAMS,
            ClientError::BufferTooSmall { .. } => CODE_BUFFER_OVERFLOW,
            ClientError::NoStagingBuffer => CODE_INVALID_PARAMS,
            ClientError::InconsistentRead { .. } => CODE_INVALID_READ,
            ClientError::ChecksumMismatch { .. } => CODE_INVALID_READ,
            ClientError::Closed => CODE_UNAVAILABLE,
            ClientError::Setup(_) => CODE_INTERNAL,
        }
    }

    /// True for "no such object".
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Master(ErrorCode::ObjectNotFound))
    }

    /// The master's error code, if the master answered this error.
    pub fn master_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Master(e) => Some(*e),
            _ => None,
        }
    }
}

/// Result of a store client operation.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The return code of an operation as the reference's Python API reports it:
/// `ok` (0 or a byte count) on success, the negative code on failure.
pub fn to_return_code<T>(r: &Result<T>, ok: impl FnOnce(&T) -> i64) -> i64 {
    match r {
        Ok(v) => ok(v),
        Err(e) => i64::from(e.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_negative_and_follow_master() {
        assert_eq!(ClientError::Master(ErrorCode::ObjectNotFound).code(), -704);
        assert_eq!(ClientError::Master(ErrorCode::NoSpace).code(), -200);
        for e in [
            ClientError::InvalidParams("x".into()),
            ClientError::BufferTooSmall { need: 2, have: 1 },
            ClientError::NoStagingBuffer,
            ClientError::Closed,
            ClientError::Setup("x".into()),
        ] {
            assert!(e.code() < 0, "{e}");
        }
        assert!(ClientError::Master(ErrorCode::ObjectNotFound).is_not_found());
        let ok: Result<u64> = Ok(5);
        assert_eq!(to_return_code(&ok, |n| *n as i64), 5);
        let bad: Result<u64> = Err(ErrorCode::ObjectHasLease.into());
        assert_eq!(to_return_code(&bad, |n| *n as i64), -706);
    }
}
