//! Client side of the tcp transport: one connection's request/response
//! exchange, and the P2P descriptor fetch.
//!
//! Invariants: a `Conn` exists only after the mutual handshake
//! ([`mooncake_security::handshake`]) succeeded: the peer proved the cluster
//! secret (or both sides run insecure). A `Conn` is used by one slice at a time; after any I/O or
//! framing error it is dropped (never returned to the pool), so a
//! half-consumed stream is never reused. Refusals (typed statuses) leave the
//! stream in sync and the connection reusable.

use std::time::Duration;

use mooncake_security::{handshake, AuthMode, SecurityError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{
    Op, RequestHeader, ResponseHeader, Status, MAX_DESCRIPTOR_LEN, MAX_RPC_LEN, RESPONSE_HEADER_LEN,
};
use super::{tune_socket, write_all_two, HANDSHAKE_SERVICE};
use crate::cuda::staging;
use crate::descriptor::SegmentDescriptor;
use crate::TransferError;

/// One authenticated connection to a peer's RPC port.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    next_id: u64,
    segment: String,
}

fn unreachable(segment: &str, e: impl std::fmt::Display) -> TransferError {
    TransferError::PeerUnreachable {
        segment: segment.to_string(),
        message: e.to_string(),
    }
}

/// Authentication failures are permanent ([`TransferError::TokenMismatch`]);
/// a handshake that broke off is an unreachable peer (retried elsewhere).
fn auth_error(segment: &str, e: SecurityError) -> TransferError {
    match e {
        SecurityError::Refused(_)
        | SecurityError::CredentialRequired
        | SecurityError::PeerInsecure => TransferError::TokenMismatch(format!("{segment}: {e}")),
        SecurityError::Malformed(_) => {
            TransferError::Protocol(format!("{segment} is not a Mooncake RPC port: {e}"))
        }
        other => unreachable(segment, other),
    }
}

impl Conn {
    /// Connect and run the mutual handshake (both sides prove the cluster
    /// secret; an insecure client only talks to an insecure server).
    pub async fn connect(
        segment: &str,
        host: &str,
        port: u16,
        auth: &AuthMode,
        timeout: Duration,
    ) -> Result<Conn, TransferError> {
        let fut = async {
            let mut stream = TcpStream::connect((host, port))
                .await
                .map_err(|e| unreachable(segment, e))?;
            tune_socket(&stream);
            handshake::connect(&mut stream, auth, HANDSHAKE_SERVICE, timeout)
                .await
                .map_err(|e| auth_error(segment, e))?;
            Ok(Conn {
                stream,
                next_id: 1,
                segment: segment.to_string(),
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| unreachable(segment, "connect/handshake timed out"))?
    }

    fn io(&self, e: std::io::Error) -> TransferError {
        unreachable(&self.segment, e)
    }

    /// Send a request (with payload) and read the response header; maps
    /// refusals to typed errors.
    async fn call(
        &mut self,
        op: Op,
        addr: u64,
        payload: &[u8],
    ) -> Result<ResponseHeader, TransferError> {
        self.request(op, addr, payload.len() as u64, payload).await
    }

    async fn request(
        &mut self,
        op: Op,
        addr: u64,
        len: u64,
        payload: &[u8],
    ) -> Result<ResponseHeader, TransferError> {
        let id = self.next_id;
        self.next_id += 1;
        let h = RequestHeader { op, id, addr, len };
        write_all_two(&mut self.stream, &h.encode(), payload)
            .await
            .map_err(|e| self.io(e))?;
        self.response(id, addr, len).await
    }

    /// Read the response header of request `id`; maps refusals to typed errors.
    async fn response(
        &mut self,
        id: u64,
        addr: u64,
        len: u64,
    ) -> Result<ResponseHeader, TransferError> {
        let mut rb = [0u8; RESPONSE_HEADER_LEN];
        self.stream
            .read_exact(&mut rb)
            .await
            .map_err(|e| self.io(e))?;
        let resp = ResponseHeader::decode(&rb).map_err(|e| {
            TransferError::Protocol(format!("bad response from {}: {e}", self.segment))
        })?;
        if resp.id != id && resp.status == Status::Ok {
            return Err(TransferError::Protocol(format!(
                "response id {} does not match request {id}",
                resp.id
            )));
        }
        match resp.status {
            Status::Ok => Ok(resp),
            Status::NotRegistered => Err(TransferError::NotRegistered { addr, len }),
            Status::OutOfRange => Err(TransferError::OutOfRange {
                addr,
                len,
                buffer_addr: 0,
                buffer_len: 0,
            }),
            Status::TokenMismatch => Err(TransferError::TokenMismatch(self.segment.clone())),
            Status::BadRequest => Err(TransferError::Protocol(format!(
                "{} rejected our frame",
                self.segment
            ))),
        }
    }

    /// One-sided write of `len` bytes of device memory at `src` (on
    /// `device`) to `remote_addr`, staged through pinned host chunks.
    pub async fn write_device(
        &mut self,
        remote_addr: u64,
        src: usize,
        len: usize,
        device: i32,
    ) -> Result<(), TransferError> {
        let id = self.next_id;
        self.next_id += 1;
        let h = RequestHeader {
            op: Op::Write,
            id,
            addr: remote_addr,
            len: len as u64,
        };
        self.stream
            .write_all(&h.encode())
            .await
            .map_err(|e| self.io(e))?;
        staging::device_to_writer(&mut self.stream, src, len, device)
            .await
            .map_err(|e| self.staged(e))?;
        self.response(id, remote_addr, len as u64).await.map(|_| ())
    }

    /// One-sided read of `len` bytes at `remote_addr` into device memory at
    /// `dst` (on `device`), staged through pinned host chunks.
    pub async fn read_device(
        &mut self,
        remote_addr: u64,
        dst: usize,
        len: usize,
        device: i32,
    ) -> Result<(), TransferError> {
        let resp = self.request(Op::Read, remote_addr, len as u64, &[]).await?;
        if resp.len != len as u64 {
            return Err(TransferError::Protocol(format!(
                "read answered with {} bytes, wanted {len}",
                resp.len
            )));
        }
        staging::reader_to_device(&mut self.stream, dst, len, device)
            .await
            .map_err(|e| self.staged(e))
    }

    /// Socket errors while staging mean the peer is unreachable (as for
    /// host transfers); copy-engine errors stay what they are.
    fn staged(&self, e: TransferError) -> TransferError {
        match e {
            TransferError::Io(e) => self.io(e),
            other => other,
        }
    }

    /// One-sided write of `data` to `remote_addr`.
    pub async fn write(&mut self, remote_addr: u64, data: &[u8]) -> Result<(), TransferError> {
        self.call(Op::Write, remote_addr, data).await.map(|_| ())
    }

    /// One-sided read of `out.len()` bytes at `remote_addr` straight into `out`.
    pub async fn read(&mut self, remote_addr: u64, out: &mut [u8]) -> Result<(), TransferError> {
        let resp = self
            .request(Op::Read, remote_addr, out.len() as u64, &[])
            .await?;
        if resp.len != out.len() as u64 {
            return Err(TransferError::Protocol(format!(
                "read answered with {} bytes, wanted {}",
                resp.len,
                out.len()
            )));
        }
        self.stream.read_exact(out).await.map_err(|e| self.io(e))?;
        Ok(())
    }

    /// A transport-specific request (the rdma handshake); returns the reply.
    pub async fn transport_rpc(&mut self, request: &[u8]) -> Result<Vec<u8>, TransferError> {
        let resp = self.call(Op::TransportRpc, 0, request).await?;
        if resp.len > MAX_RPC_LEN {
            return Err(TransferError::Protocol(format!(
                "transport reply of {} bytes is too large",
                resp.len
            )));
        }
        let mut body = vec![0u8; resp.len as usize];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| self.io(e))?;
        Ok(body)
    }

    /// Ask for the peer's descriptor (P2P handshake).
    pub async fn descriptor(&mut self) -> Result<SegmentDescriptor, TransferError> {
        let resp = self.call(Op::GetDescriptor, 0, &[]).await?;
        if resp.len > MAX_DESCRIPTOR_LEN {
            return Err(TransferError::Protocol(format!(
                "descriptor of {} bytes is too large",
                resp.len
            )));
        }
        let mut body = vec![0u8; resp.len as usize];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| self.io(e))?;
        SegmentDescriptor::from_json(&self.segment, &body)
    }
}

/// P2P handshake: fetch `segment`'s descriptor from the peer itself.
pub async fn fetch_descriptor(
    segment: &str,
    host: &str,
    port: u16,
    auth: &AuthMode,
    timeout: Duration,
) -> Result<SegmentDescriptor, TransferError> {
    let mut conn = Conn::connect(segment, host, port, auth, timeout).await?;
    let desc = tokio::time::timeout(timeout, conn.descriptor())
        .await
        .map_err(|_| unreachable(segment, "descriptor exchange timed out"))??;
    if desc.name != segment {
        tracing::debug!(asked = segment, serves = %desc.name, "peer knows itself by another name");
    }
    Ok(desc)
}
