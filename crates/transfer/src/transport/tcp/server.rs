//! The RPC port: serves one-sided READ/WRITE into this process's registered
//! buffers, the token handshake, and the P2P descriptor exchange.
//!
//! Invariants:
//! - Every Read/Write is checked against the [`MemoryRegistry`] and holds a
//!   lease while it touches memory; refused ranges are answered with a typed
//!   status and the connection stays usable (a refused Write's payload is
//!   read and discarded into a scratch buffer, never into registered memory).
//! - A malformed or truncated frame closes *that* connection with a logged
//!   error; nothing from the network can panic the server.
//! - With a cluster token configured, nothing but Hello is served until the
//!   peer presented the same token.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use super::frame::{Op, RequestHeader, ResponseHeader, Status, REQUEST_HEADER_LEN};
use super::{tune_socket, write_all_two};
use crate::cuda::staging;
use crate::memory::{Lease, MemoryRegistry};
use crate::TransferError;

/// Produces the current descriptor JSON (for GetDescriptor).
pub type DescriptorFn = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// What the server needs.
#[derive(Clone)]
pub struct ServerContext {
    pub registry: Arc<MemoryRegistry>,
    pub token: Option<String>,
    pub descriptor: DescriptorFn,
    /// Whether one-sided data ops are served (tcp enabled).
    pub serve_data: bool,
    /// The transport answering [`Op::TransportRpc`] (rdma, when enabled).
    pub transport_rpc: Option<crate::transport::SharedTransport>,
    /// Longest time one frame (after its header) may take.
    pub frame_timeout: std::time::Duration,
}

impl ServerContext {
    /// The lease a Read/Write of `req`'s range needs; a range that is not
    /// registered, or any range while data ops are off, is refused.
    fn data_lease(&self, req: &RequestHeader) -> Result<Lease, TransferError> {
        if self.serve_data {
            self.registry.lease(req.addr, req.len)
        } else {
            Err(TransferError::NotRegistered {
                addr: req.addr,
                len: req.len,
            })
        }
    }
}

/// Accept connections until `stop` turns true.
pub async fn serve(listener: TcpListener, ctx: ServerContext, mut stop: watch::Receiver<bool>) {
    let ctx = Arc::new(ctx);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx = Arc::clone(&ctx);
                let mut stop = stop.clone();
                let span = tracing::debug_span!("rpc_conn", %peer);
                tokio::spawn(
                    async move {
                        tokio::select! {
                            r = serve_conn(stream, &ctx) => {
                                if let Err(e) = r {
                                    tracing::error!(error = %e, "closing connection");
                                }
                            }
                            _ = stop.changed() => {}
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Back off briefly on resource exhaustion (EMFILE) instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Read exactly `buf.len()` bytes; `Ok(false)` on a clean EOF before the first byte.
async fn read_header<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("truncated frame header ({got} of {} bytes)", buf.len()),
            ));
        }
        got += n;
    }
    Ok(true)
}

/// Read and drop `len` bytes (the payload of a refused Write).
async fn discard<R: AsyncRead + Unpin>(r: &mut R, mut len: u64) -> std::io::Result<()> {
    let mut scratch = vec![0u8; len.min(64 * 1024) as usize];
    while len > 0 {
        let want = len.min(scratch.len() as u64) as usize;
        r.read_exact(&mut scratch[..want]).await?;
        len -= want as u64;
    }
    Ok(())
}

fn refusal(e: &TransferError) -> Status {
    match e {
        TransferError::OutOfRange { .. } => Status::OutOfRange,
        _ => Status::NotRegistered,
    }
}

async fn respond(stream: &mut TcpStream, status: Status, id: u64) -> std::io::Result<()> {
    let h = ResponseHeader { status, id, len: 0 };
    stream.write_all(&h.encode()).await
}

async fn serve_conn(mut stream: TcpStream, ctx: &ServerContext) -> Result<(), TransferError> {
    tune_socket(&stream);
    let mut authenticated = ctx.token.is_none();
    let mut hdr = [0u8; REQUEST_HEADER_LEN];
    loop {
        if !read_header(&mut stream, &mut hdr).await? {
            return Ok(());
        }
        let req = match RequestHeader::decode(&hdr) {
            Ok(r) => r,
            Err(e) => {
                // Best effort: tell the peer why before closing.
                let _ = respond(&mut stream, Status::BadRequest, 0).await;
                return Err(TransferError::Protocol(format!("malformed frame: {e}")));
            }
        };
        if req.op != Op::Hello && !authenticated {
            let _ = respond(&mut stream, Status::TokenMismatch, req.id).await;
            return Err(TransferError::TokenMismatch(
                "peer sent requests without presenting the cluster token".into(),
            ));
        }
        // A frame, once started, must finish in time: a stalled peer must not
        // hold a lease (and so block unregister_memory) forever.
        match tokio::time::timeout(
            ctx.frame_timeout,
            handle(&mut stream, ctx, req, &mut authenticated),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => {
                return Err(TransferError::Protocol(format!(
                    "{:?} frame not completed within {:?}",
                    req.op, ctx.frame_timeout
                )))
            }
        }
    }
}

/// Serve one decoded request.
async fn handle(
    stream: &mut TcpStream,
    ctx: &ServerContext,
    req: RequestHeader,
    authenticated: &mut bool,
) -> Result<(), TransferError> {
    match req.op {
        Op::Hello => {
            let mut token = vec![0u8; req.len as usize];
            stream.read_exact(&mut token).await?;
            let ok = match &ctx.token {
                None => true,
                Some(t) => constant_time_eq(t.as_bytes(), &token),
            };
            if !ok {
                let _ = respond(stream, Status::TokenMismatch, req.id).await;
                return Err(TransferError::TokenMismatch(
                    "peer presented a wrong cluster token".into(),
                ));
            }
            *authenticated = true;
            respond(stream, Status::Ok, req.id).await?;
        }
        Op::GetDescriptor => {
            let body = (ctx.descriptor)();
            let h = ResponseHeader {
                status: Status::Ok,
                id: req.id,
                len: body.len() as u64,
            };
            write_all_two(stream, &h.encode(), &body).await?;
        }
        Op::TransportRpc => {
            let mut body = vec![0u8; req.len as usize];
            stream.read_exact(&mut body).await?;
            let reply = match &ctx.transport_rpc {
                Some(t) => t.handle_rpc(&body),
                None => Err(TransferError::Protocol(
                    "no transport serves RPCs here".into(),
                )),
            };
            match reply {
                Ok(out) => {
                    let h = ResponseHeader {
                        status: Status::Ok,
                        id: req.id,
                        len: out.len() as u64,
                    };
                    write_all_two(stream, &h.encode(), &out).await?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refused transport rpc");
                    respond(stream, Status::BadRequest, req.id).await?;
                }
            }
        }
        Op::Read => {
            match ctx.data_lease(&req) {
                Ok(lease) => {
                    let h = ResponseHeader {
                        status: Status::Ok,
                        id: req.id,
                        len: req.len,
                    };
                    if let Some(device) = lease.device() {
                        // Device memory: header, then the bytes staged
                        // through pinned host chunks by the copy engine.
                        stream.write_all(&h.encode()).await?;
                        staging::device_to_writer(stream, lease.addr(), lease.len(), device)
                            .await?;
                    } else {
                        // SAFETY: the lease keeps [addr, addr+len) registered and
                        // mapped host memory; we only read it.
                        let data = unsafe { lease.as_slice() };
                        write_all_two(stream, &h.encode(), data).await?;
                    }
                }
                Err(e) => {
                    tracing::warn!(addr = req.addr, len = req.len, error = %e, "refused read");
                    respond(stream, refusal(&e), req.id).await?;
                }
            }
        }
        Op::Write => {
            match ctx.data_lease(&req) {
                Ok(lease) => {
                    if let Some(device) = lease.device() {
                        staging::reader_to_device(stream, lease.addr(), lease.len(), device)
                            .await?;
                    } else {
                        // SAFETY: the lease keeps the range registered and mapped
                        // host memory; the payload goes straight into it.
                        let target = unsafe { lease.as_mut_slice() };
                        stream.read_exact(target).await?;
                    }
                    drop(lease);
                    respond(stream, Status::Ok, req.id).await?;
                }
                Err(e) => {
                    tracing::warn!(addr = req.addr, len = req.len, error = %e, "refused write");
                    discard(stream, req.len).await?;
                    respond(stream, refusal(&e), req.id).await?;
                }
            }
        }
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
