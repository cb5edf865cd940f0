//! Wire format of the tcp transport and the RPC port (pure encode/decode).
//!
//! A connection starts with the handshake of [`mooncake_security::handshake`]
//! (service `"transfer"`); frames follow only once it succeeded.
//!
//! Every request starts with a 32-byte header, every response with a 24-byte
//! header, all little-endian:
//!
//! ```text
//! request:  magic u32 | version u8 | op u8 | flags u16 | id u64 | addr u64 | len u64
//!           followed by `len` payload bytes for Write and TransportRpc
//! response: magic u32 | version u8 | status u8 | reserved u16 | id u64 | len u64
//!           followed by `len` payload bytes (Read data, descriptor JSON)
//! ```
//!
//! Invariants: decoding never panics and never trusts a length beyond the
//! per-op limit; a frame with a wrong magic, version or op is an error (the
//! server then closes the connection).

/// "MCTE" as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MCTE");
pub const VERSION: u8 = 1;
pub const REQUEST_HEADER_LEN: usize = 32;
pub const RESPONSE_HEADER_LEN: usize = 24;
/// Largest payload of one Read/Write frame.
pub const MAX_DATA_LEN: u64 = 1 << 30;
/// Largest transport-specific RPC payload (request or reply).
pub const MAX_RPC_LEN: u64 = 64 << 10;
/// Largest descriptor a client accepts.
pub const MAX_DESCRIPTOR_LEN: u64 = 64 << 20;

/// Request kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    // 1 was Hello (a plain token on the wire), replaced by the handshake.
    /// Read `len` bytes at `addr`; the response carries them.
    Read = 2,
    /// Write the `len` payload bytes at `addr`.
    Write = 3,
    /// The response carries the server's segment descriptor (P2P handshake).
    GetDescriptor = 4,
    /// A transport-specific request (the rdma handshake); the response
    /// carries the transport's reply.
    TransportRpc = 5,
}

/// Response statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    NotRegistered = 1,
    OutOfRange = 2,
    TokenMismatch = 3,
    BadRequest = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub op: Op,
    pub id: u64,
    pub addr: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    pub status: Status,
    pub id: u64,
    pub len: u64,
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("unsupported version {0}")]
    BadVersion(u8),
    #[error("unknown op {0}")]
    BadOp(u8),
    #[error("unknown status {0}")]
    BadStatus(u8),
    #[error("payload of {len} bytes exceeds the {max}-byte limit for {op:?}")]
    TooLong { op: Op, len: u64, max: u64 },
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn check_prefix(b: &[u8]) -> Result<(), FrameError> {
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if b[4] != VERSION {
        return Err(FrameError::BadVersion(b[4]));
    }
    Ok(())
}

impl RequestHeader {
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4] = VERSION;
        b[5] = self.op as u8;
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..24].copy_from_slice(&self.addr.to_le_bytes());
        b[24..32].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; REQUEST_HEADER_LEN]) -> Result<Self, FrameError> {
        check_prefix(b)?;
        let op = match b[5] {
            2 => Op::Read,
            3 => Op::Write,
            4 => Op::GetDescriptor,
            5 => Op::TransportRpc,
            other => return Err(FrameError::BadOp(other)),
        };
        let h = RequestHeader {
            op,
            id: u64_at(b, 8),
            addr: u64_at(b, 16),
            len: u64_at(b, 24),
        };
        let max = match op {
            Op::Read | Op::Write => MAX_DATA_LEN,
            Op::GetDescriptor => 0,
            Op::TransportRpc => MAX_RPC_LEN,
        };
        if h.len > max {
            return Err(FrameError::TooLong {
                op,
                len: h.len,
                max,
            });
        }
        Ok(h)
    }
}

impl ResponseHeader {
    pub fn encode(&self) -> [u8; RESPONSE_HEADER_LEN] {
        let mut b = [0u8; RESPONSE_HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4] = VERSION;
        b[5] = self.status as u8;
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; RESPONSE_HEADER_LEN]) -> Result<Self, FrameError> {
        check_prefix(b)?;
        let status = match b[5] {
            0 => Status::Ok,
            1 => Status::NotRegistered,
            2 => Status::OutOfRange,
            3 => Status::TokenMismatch,
            4 => Status::BadRequest,
            other => return Err(FrameError::BadStatus(other)),
        };
        Ok(ResponseHeader {
            status,
            id: u64_at(b, 8),
            len: u64_at(b, 16),
        })
    }
}

/// Fuzz entry point (cargo-fuzz target `transfer_frame` and the bounded
/// stable test): decode `data` as request and response headers; a decoded
/// request must respect its op's length limit and re-encode to the same
/// bytes. Panics only if an invariant is broken.
pub fn fuzz_decode(data: &[u8]) {
    if data.len() >= REQUEST_HEADER_LEN {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b.copy_from_slice(&data[..REQUEST_HEADER_LEN]);
        if let Ok(h) = RequestHeader::decode(&b) {
            let max = match h.op {
                Op::Read | Op::Write => MAX_DATA_LEN,
                Op::GetDescriptor => 0,
                Op::TransportRpc => MAX_RPC_LEN,
            };
            assert!(h.len <= max, "decoded a request beyond its limit");
            assert_eq!(RequestHeader::decode(&h.encode()), Ok(h));
        }
    }
    if data.len() >= RESPONSE_HEADER_LEN {
        let mut b = [0u8; RESPONSE_HEADER_LEN];
        b.copy_from_slice(&data[..RESPONSE_HEADER_LEN]);
        if let Ok(h) = ResponseHeader::decode(&b) {
            assert_eq!(ResponseHeader::decode(&h.encode()), Ok(h));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects() {
        let h = RequestHeader {
            op: Op::Write,
            id: 7,
            addr: 0xdead_beef,
            len: 4096,
        };
        assert_eq!(RequestHeader::decode(&h.encode()).unwrap(), h);
        let r = ResponseHeader {
            status: Status::OutOfRange,
            id: 9,
            len: 0,
        };
        assert_eq!(ResponseHeader::decode(&r.encode()).unwrap(), r);

        let mut bad = h.encode();
        bad[0] ^= 1;
        assert!(matches!(
            RequestHeader::decode(&bad),
            Err(FrameError::BadMagic(_))
        ));
        let mut bad = h.encode();
        bad[4] = 99;
        assert_eq!(RequestHeader::decode(&bad), Err(FrameError::BadVersion(99)));
        let mut bad = h.encode();
        bad[5] = 42;
        assert_eq!(RequestHeader::decode(&bad), Err(FrameError::BadOp(42)));
        let huge = RequestHeader {
            len: MAX_DATA_LEN + 1,
            ..h
        };
        assert!(matches!(
            RequestHeader::decode(&huge.encode()),
            Err(FrameError::TooLong { .. })
        ));
        let rpc = RequestHeader {
            op: Op::TransportRpc,
            len: MAX_RPC_LEN + 1,
            ..h
        };
        assert!(RequestHeader::decode(&rpc.encode()).is_err());
        let mut hello = h.encode();
        hello[5] = 1;
        assert_eq!(RequestHeader::decode(&hello), Err(FrameError::BadOp(1)));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..10_000 {
            let mut b = [0u8; REQUEST_HEADER_LEN];
            rng.fill(&mut b[..]);
            if rng.gen_bool(0.5) {
                b[0..5].copy_from_slice(&[b'M', b'C', b'T', b'E', VERSION]);
            }
            fuzz_decode(&b);
        }
    }
}
