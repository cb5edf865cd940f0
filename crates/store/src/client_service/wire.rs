//! Messages of the client service: what a dummy client asks the real client,
//! and what comes back. Carried in the master protocol's frames
//! ([`mooncake_store_protocol::frame`]): `u32 LE len | u64 LE id | bincode payload`,
//! one request answered by one response with the same id, in order.
//!
//! Zero-copy ranges are *offsets into the attached shared pool*, never
//! addresses: the server checks each against the pool's length before
//! anything moves, so a dummy can only name memory it shared.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::client::ClientError;
use mooncake_store_protocol::{ErrorCode, ReplicateConfig};
use mooncake_transfer::TransferError;

/// The dummy's shared pool: a sealed memfd the server maps through
/// `/proc/<pid>/fd/<fd>` (same host, same user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDesc {
    pub pid: u32,
    pub fd: i32,
    /// Bytes of the pool (the memfd is at least this long and sealed against shrinking).
    pub len: u64,
}

/// `[offset, offset + len)` of the attached pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRange {
    pub offset: u64,
    pub len: u64,
}

/// A value on the wire: bincode writes it as one length-prefixed block (a
/// plain `Vec<u8>` would go element by element, ~10x slower for big values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A dummy's request. Variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServiceRequest {
    /// Map the pool and register it with the real client's engine. At most
    /// once per connection.
    Attach(PoolDesc),
    /// put (or upsert) values carried in the frame, one result per key.
    Put {
        keys: Vec<String>,
        values: Vec<Blob>,
        config: ReplicateConfig,
        upsert: bool,
    },
    /// Values of `keys`, carried back in the frame.
    Get {
        keys: Vec<String>,
    },
    /// put (or upsert) ranges of the attached pool, zero-copy.
    PutFrom {
        keys: Vec<String>,
        ranges: Vec<PoolRange>,
        config: ReplicateConfig,
        upsert: bool,
    },
    /// Read `keys` into ranges of the attached pool, zero-copy.
    GetInto {
        keys: Vec<String>,
        ranges: Vec<PoolRange>,
    },
    IsExist {
        keys: Vec<String>,
    },
    GetSize {
        key: String,
    },
    Remove {
        keys: Vec<String>,
        force: bool,
    },
    RemoveByRegex {
        pattern: String,
        force: bool,
    },
    RemoveAll {
        force: bool,
    },
    /// The reference's `health_check` of the real client.
    Health,
    /// Byte ranges of objects (`(key, offset in the object, destination)`)
    /// read into ranges of the attached pool, zero-copy.
    GetRangesInto {
        reads: Vec<(String, u64, PoolRange)>,
    },
}

/// A failed operation, mirroring [`ClientError`] closely enough that the
/// dummy reports the same return codes the real client would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    #[error("master: {0}")]
    Master(ErrorCode),
    #[error("transfer failed: {0}")]
    Transfer(String),
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    #[error("buffer too small: object is {need} bytes, buffer holds {have}")]
    BufferTooSmall { need: u64, have: u64 },
    #[error("no staging buffer")]
    NoStagingBuffer,
    #[error("inconsistent read of {key:?}: {reason}")]
    InconsistentRead { key: String, reason: String },
    #[error("closed")]
    Closed,
    #[error("{0}")]
    Setup(String),
    #[error("no replica of {key:?} matched its CRC32C checksum")]
    ChecksumMismatch { key: String },
}

impl From<&ClientError> for WireError {
    fn from(e: &ClientError) -> Self {
        match e {
            ClientError::Master(c) => WireError::Master(*c),
            ClientError::Transfer(t) => WireError::Transfer(t.to_string()),
            ClientError::InvalidParams(s) => WireError::InvalidParams(s.clone()),
            ClientError::BufferTooSmall { need, have } => WireError::BufferTooSmall {
                need: *need,
                have: *have,
            },
            ClientError::NoStagingBuffer => WireError::NoStagingBuffer,
            ClientError::InconsistentRead { key, reason } => WireError::InconsistentRead {
                key: key.clone(),
                reason: reason.clone(),
            },
            ClientError::Closed => WireError::Closed,
            ClientError::Setup(s) => WireError::Setup(s.clone()),
            ClientError::ChecksumMismatch { key } => {
                WireError::ChecksumMismatch { key: key.clone() }
            }
        }
    }
}

impl From<WireError> for ClientError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Master(c) => ClientError::Master(c),
            WireError::Transfer(s) => ClientError::Transfer(TransferError::Protocol(s)),
            WireError::InvalidParams(s) => ClientError::InvalidParams(s),
            WireError::BufferTooSmall { need, have } => ClientError::BufferTooSmall { need, have },
            WireError::NoStagingBuffer => ClientError::NoStagingBuffer,
            WireError::InconsistentRead { key, reason } => {
                ClientError::InconsistentRead { key, reason }
            }
            WireError::Closed => ClientError::Closed,
            WireError::Setup(s) => ClientError::Setup(s),
            WireError::ChecksumMismatch { key } => ClientError::ChecksumMismatch { key },
        }
    }
}

/// One key's outcome.
pub type KeyResult<T> = Result<T, WireError>;

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServiceReply {
    /// Attach succeeded; the real client's segment name.
    Attached { segment: String },
    /// One result per key of a put / put_from / remove.
    Done(Vec<KeyResult<()>>),
    /// One value per key of a get.
    Values(Vec<KeyResult<Blob>>),
    /// One object size per key of a get_into.
    Sizes(Vec<KeyResult<u64>>),
    /// One answer per key of is_exist.
    Exists(Vec<KeyResult<bool>>),
    /// get_size, remove_by_regex, remove_all.
    Count(u64),
    /// health_check code.
    Health(i32),
}

/// What the server sends back for one request.
pub type ServiceResponse = Result<ServiceReply, WireError>;

/// Fuzz entry point (cargo-fuzz target `real_client_frame` and a bounded
/// stable test): `data` as client-service frames, each payload decoded as
/// a request and as a reply. Must never panic.
pub fn fuzz_decode(data: &[u8]) {
    let mut r = data;
    let mut buf = Vec::new();
    while let Ok(_id) =
        futures::executor::block_on(crate::protocol::frame::read_frame(&mut r, &mut buf))
    {
        let _ = crate::protocol::frame::decode_payload::<ServiceRequest>(&buf);
        let _ = crate::protocol::frame::decode_payload::<ServiceReply>(&buf);
    }
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use bytes::BytesMut;
    use rand::{Rng, SeedableRng};

    /// The fuzz target on stable for a bounded number of inputs: mutated
    /// valid frames and random bytes.
    #[test]
    fn random_frames_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut valid = BytesMut::new();
        crate::protocol::frame::encode_frame(
            &mut valid,
            3,
            &PoolRange {
                offset: 4096,
                len: 1 << 20,
            },
        );
        for i in 0..20_000 {
            let mut data: Vec<u8> = if i % 2 == 0 {
                valid.to_vec()
            } else {
                (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
            };
            if !data.is_empty() {
                let at = rng.gen_range(0..data.len());
                data[at] = rng.gen();
            }
            fuzz_decode(&data);
        }
    }
}
