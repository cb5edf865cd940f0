//! The RPC port: serves one-sided READ/WRITE into this process's registered
//! buffers, the P2P descriptor exchange and transport RPCs, to peers that
//! passed the handshake.
//!
//! Invariants:
//! - Every connection runs [`mooncake_security::handshake::accept`] before
//!   anything else; a peer that fails it (wrong or no credential, garbage,
//!   too slow) is closed having been served nothing, and is counted in
//!   [`ServerState::auth`] and logged.
//! - Bounds ([`ServerLimits`]): connections per listener and per peer address
//!   (over-cap connections are closed unread); a connection may wait at most
//!   `idle_timeout` for the next frame header, and a started frame must
//!   finish within `frame_timeout`; bytes the server buffers for frames
//!   (transport RPC bodies) come from one [`ByteBudget`] reserved on the
//!   declared length *before* anything is allocated, and buffers grow with
//!   the bytes actually received. Read/Write payloads move straight between
//!   the socket and registered memory and need no buffer.
//! - Every Read/Write is checked against the [`MemoryRegistry`] and holds a
//!   lease while it touches memory; refused ranges are answered with a typed
//!   status and the connection stays usable (a refused Write's payload is
//!   read and discarded into a fixed scratch buffer, never into registered
//!   memory).
//! - A malformed or truncated frame closes *that* connection with a logged
//!   error; nothing from the network can panic the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mooncake_security::limits::{ByteBudget, ConnectionLimiter};
use mooncake_security::{handshake, AuthMode, AuthStats};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use super::frame::{Op, RequestHeader, ResponseHeader, Status, REQUEST_HEADER_LEN};
use super::{tune_socket, write_all_two, HANDSHAKE_SERVICE};
use crate::cuda::staging;
use crate::memory::{Lease, MemoryRegistry};
use crate::TransferError;

/// Produces the current descriptor JSON (for GetDescriptor).
pub type DescriptorFn = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// What one RPC listener lets its clients make it hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once on this listener.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_connections_per_peer: usize,
    /// Longest wait for the handshake to complete.
    pub handshake_timeout: Duration,
    /// Longest wait for the next frame header to arrive in full (idle and
    /// slowloris bound).
    pub idle_timeout: Duration,
    /// Bytes of frame bodies buffered at once by all connections.
    pub buffer_budget: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_peer: 256,
            handshake_timeout: handshake::DEFAULT_TIMEOUT,
            idle_timeout: Duration::from_secs(60),
            buffer_budget: 64 << 20,
        }
    }
}

/// Live state of one listener: its caps and counters (for metrics and tests).
#[derive(Debug)]
pub struct ServerState {
    /// Handshake outcomes (accepted / refused / failed).
    pub auth: AuthStats,
    /// Connections closed unread because a cap was reached.
    pub over_cap: AtomicU64,
    /// Connections closed for idling or stalling mid-frame.
    pub timed_out: AtomicU64,
    /// Frames refused because the buffer budget was exhausted.
    pub over_budget: AtomicU64,
    /// The connection caps.
    pub connections: Arc<ConnectionLimiter>,
    /// The budget of buffered frame bytes.
    pub budget: Arc<ByteBudget>,
}

impl ServerState {
    /// Fresh state for `limits`.
    pub fn new(limits: &ServerLimits) -> Arc<Self> {
        Arc::new(Self {
            auth: AuthStats::default(),
            over_cap: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            over_budget: AtomicU64::new(0),
            connections: ConnectionLimiter::new(
                limits.max_connections,
                limits.max_connections_per_peer,
            ),
            budget: ByteBudget::new(limits.buffer_budget),
        })
    }
}

/// What the server needs.
#[derive(Clone)]
pub struct ServerContext {
    pub registry: Arc<MemoryRegistry>,
    /// The credential peers must prove (or explicitly none).
    pub auth: AuthMode,
    pub limits: ServerLimits,
    /// Shared with the engine (metrics) and tests; built from `limits`.
    pub state: Arc<ServerState>,
    pub descriptor: DescriptorFn,
    /// Whether one-sided data ops are served (tcp enabled).
    pub serve_data: bool,
    /// The transport answering [`Op::TransportRpc`] (rdma, when enabled).
    pub transport_rpc: Option<crate::transport::SharedTransport>,
    /// Longest time one frame (after its header) may take.
    pub frame_timeout: Duration,
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
                let permit = match ctx.state.connections.try_acquire(peer.ip()) {
                    Ok(p) => p,
                    Err(e) => {
                        ctx.state.over_cap.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, error = %e, "closing an over-cap connection unread");
                        drop(stream);
                        continue;
                    }
                };
                let ctx = Arc::clone(&ctx);
                let mut stop = stop.clone();
                let span = tracing::debug_span!("rpc_conn", %peer);
                tokio::spawn(
                    async move {
                        let _permit = permit;
                        tokio::select! {
                            r = authenticate_and_serve(stream, &ctx, peer) => {
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
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Run the handshake, then serve frames; a refused peer is closed unserved.
async fn authenticate_and_serve(
    mut stream: TcpStream,
    ctx: &ServerContext,
    peer: std::net::SocketAddr,
) -> Result<(), TransferError> {
    tune_socket(&stream);
    if handshake::accept_counted(
        &mut stream,
        &ctx.auth,
        HANDSHAKE_SERVICE,
        ctx.limits.handshake_timeout,
        &ctx.state.auth,
        &peer,
    )
    .await
    .is_err()
    {
        // Counted and logged by accept_counted; nothing is served.
        return Ok(());
    }
    serve_conn(stream, ctx).await
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

/// Read and drop `len` bytes (the payload of a refused Write) through a
/// fixed scratch buffer: a declared length costs no allocation.
async fn discard<R: AsyncRead + Unpin>(r: &mut R, mut len: u64) -> std::io::Result<()> {
    let mut scratch = [0u8; 4096];
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
    let mut hdr = [0u8; REQUEST_HEADER_LEN];
    loop {
        match tokio::time::timeout(ctx.limits.idle_timeout, read_header(&mut stream, &mut hdr))
            .await
        {
            Ok(r) => {
                if !r? {
                    return Ok(());
                }
            }
            Err(_) => {
                ctx.state.timed_out.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(idle = ?ctx.limits.idle_timeout, "closing an idle connection");
                return Ok(());
            }
        }
        let req = match RequestHeader::decode(&hdr) {
            Ok(r) => r,
            Err(e) => {
                // Best effort: tell the peer why before closing.
                let _ = respond(&mut stream, Status::BadRequest, 0).await;
                return Err(TransferError::Protocol(format!("malformed frame: {e}")));
            }
        };
        // A frame, once started, must finish in time: a stalled peer must not
        // hold a lease (and so block unregister_memory) forever.
        match tokio::time::timeout(ctx.frame_timeout, handle(&mut stream, ctx, req)).await {
            Ok(r) => r?,
            Err(_) => {
                ctx.state.timed_out.fetch_add(1, Ordering::Relaxed);
                return Err(TransferError::Protocol(format!(
                    "{:?} frame not completed within {:?}",
                    req.op, ctx.frame_timeout
                )));
            }
        }
    }
}

/// Read a frame body of `len` bytes (already checked against the op's
/// limit) into a buffer reserved from the server's budget first and grown
/// only as bytes arrive. `None`: the budget is exhausted (nothing read).
async fn read_body(
    stream: &mut TcpStream,
    ctx: &ServerContext,
    len: u64,
) -> Result<Option<Vec<u8>>, TransferError> {
    let Some(_permit) = ctx.state.budget.try_reserve(len) else {
        ctx.state.over_budget.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    };
    let mut body = Vec::new();
    (&mut *stream).take(len).read_to_end(&mut body).await?;
    if body.len() as u64 != len {
        return Err(TransferError::Protocol(format!(
            "frame body cut short ({} of {len} bytes)",
            body.len()
        )));
    }
    Ok(Some(body))
}

/// Serve one decoded request.
async fn handle(
    stream: &mut TcpStream,
    ctx: &ServerContext,
    req: RequestHeader,
) -> Result<(), TransferError> {
    match req.op {
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
            let Some(body) = read_body(stream, ctx, req.len).await? else {
                let _ = respond(stream, Status::BadRequest, req.id).await;
                return Err(TransferError::Protocol(format!(
                    "transport rpc of {} bytes refused: server buffer budget exhausted",
                    req.len
                )));
            };
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
