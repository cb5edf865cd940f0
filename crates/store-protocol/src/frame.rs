//! Framing and payload codec of every framed protocol here (the master's RPC, the real
//! client's service); the connection and serve loops over it are [`crate::rpc`].
//!
//! A frame is `u32 LE len | u64 LE id | payload`, `len` = 8 + payload bytes, bounded by
//! [`MAX_FRAME_LEN`]. Decoding never allocates more than the frame holds: bincode runs with
//! a byte limit equal to the payload length, so a declared `Vec` length larger than the
//! bytes present fails instead of allocating.

use crate::{ErrorCode, Request, Response, MAX_FRAME_LEN};
use bincode::Options;
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of the frame header (`len` + `id`).
pub const HEADER_LEN: usize = 12;

fn opts(limit: usize) -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(limit as u64)
        .with_little_endian()
        .with_varint_encoding()
        .reject_trailing_bytes()
}

/// Append one frame holding `value` to `out`.
pub fn encode_frame<T: serde::Serialize>(out: &mut BytesMut, id: u64, value: &T) {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u64_le(id);
    let mut w = out.writer();
    // Serialising into memory cannot fail for our types (no maps with non-string keys,
    // no limits on the encode side).
    opts(usize::MAX)
        .serialize_into(&mut w, value)
        .expect("encode to memory");
    let out = w.into_inner();
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Decode a request payload.
pub fn decode_request(payload: &[u8]) -> Result<Request, ErrorCode> {
    opts(payload.len())
        .deserialize(payload)
        .map_err(|_| ErrorCode::MalformedFrame)
}

/// Decode a response payload.
pub fn decode_response(payload: &[u8]) -> Result<Result<Response, ErrorCode>, ErrorCode> {
    opts(payload.len())
        .deserialize(payload)
        .map_err(|_| ErrorCode::MalformedFrame)
}

/// Decode a payload of any type framed with [`encode_frame`] (for protocols
/// other than the master's that reuse this framing, e.g. the client service).
pub fn decode_payload<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ErrorCode> {
    opts(payload.len())
        .deserialize(payload)
        .map_err(|_| ErrorCode::MalformedFrame)
}

/// Why reading a frame stopped.
#[derive(Debug)]
pub enum ReadError {
    /// Clean or unclean end of stream / socket error.
    Io(std::io::Error),
    /// Declared length out of bounds; carries the id when the header was complete.
    TooLarge { id: u64, len: u32 },
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Read one frame; returns its id and payload (reusing `buf`).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<u64, ReadError> {
    let h = read_header(r, MAX_FRAME_LEN).await?;
    read_payload(r, buf, h.payload_len).await?;
    Ok(h.id)
}

/// A frame's header, its length checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u64,
    /// Bytes of payload that follow the header.
    pub payload_len: usize,
}

/// Read one frame header and check its declared length against `max_len` (id +
/// payload, at most [`MAX_FRAME_LEN`]) before anything is allocated for the payload.
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    max_len: usize,
) -> Result<Header, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).await?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let id = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
    if (len as usize) < 8 || len as usize > max_len.min(MAX_FRAME_LEN) {
        return Err(ReadError::TooLarge { id, len });
    }
    Ok(Header {
        id,
        payload_len: len as usize - 8,
    })
}

/// Read a payload of `payload_len` bytes (from [`read_header`]) into `buf`.
pub async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    payload_len: usize,
) -> Result<(), ReadError> {
    buf.clear();
    if buf.capacity() > (1 << 20) && payload_len < (64 << 10) {
        // Do not keep a large frame's buffer alive on an idle connection.
        buf.shrink_to(64 << 10);
    }
    // Grow with the bytes that actually arrive, not with the declared length: a peer that
    // announces 16 MiB and sends nothing costs nothing.
    let got = (&mut *r).take(payload_len as u64).read_to_end(buf).await?;
    if got != payload_len {
        return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Fuzz entry point (cargo-fuzz target `store_rpc_frame` and a bounded
/// stable test): `data` as a stream of frames read with [`read_frame`],
/// each payload decoded as a request and as a response. Must never panic,
/// and never hold more buffer than the bytes that arrived.
pub fn fuzz_decode(data: &[u8]) {
    let mut r = data;
    let mut buf = Vec::new();
    while let Ok(_id) = futures::executor::block_on(read_frame(&mut r, &mut buf)) {
        assert!(buf.len() <= data.len(), "payload larger than the input");
        let _ = decode_request(&buf);
        let _ = decode_response(&buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplicateConfig;

    #[test]
    fn random_frames_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut valid = BytesMut::new();
        encode_frame(
            &mut valid,
            1,
            &Request::PutStart {
                key: "k".into(),
                size: 4096,
                config: ReplicateConfig::default(),
            },
        );
        for i in 0..20_000 {
            let mut data: Vec<u8> = if i % 2 == 0 {
                valid.to_vec()
            } else {
                (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
            };
            for _ in 0..rng.gen_range(0..4) {
                if !data.is_empty() {
                    let at = rng.gen_range(0..data.len());
                    data[at] = rng.gen();
                }
            }
            fuzz_decode(&data);
        }
    }

    #[test]
    fn request_round_trip() {
        let req = Request::PutStart {
            key: "k".into(),
            size: 4096,
            config: ReplicateConfig::default(),
        };
        let mut b = BytesMut::new();
        encode_frame(&mut b, 7, &req);
        let len = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, b.len());
        assert_eq!(u64::from_le_bytes(b[4..12].try_into().unwrap()), 7);
        assert_eq!(decode_request(&b[12..]).unwrap(), req);
    }

    #[test]
    fn garbage_is_malformed_not_panic() {
        assert_eq!(decode_request(&[]), Err(ErrorCode::MalformedFrame));
        assert_eq!(decode_request(&[0xff; 64]), Err(ErrorCode::MalformedFrame));
        // Variant BatchExists with a declared vector length of ~2^60 and no bytes behind it.
        let mut evil = vec![18u8, 0xfd];
        evil.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert_eq!(decode_request(&evil), Err(ErrorCode::MalformedFrame));
    }

    #[test]
    fn truncations_never_decode_to_garbage() {
        let req = Request::BatchExists {
            keys: vec!["alpha".into(), "beta".into()],
        };
        let mut b = BytesMut::new();
        encode_frame(&mut b, 1, &req);
        let payload = &b[12..];
        for cut in 0..payload.len() {
            assert!(decode_request(&payload[..cut]).is_err());
        }
    }
}
