//! The tcp transport: one-sided READ/WRITE against a peer's RPC port over a
//! pool of connections per peer.
//!
//! Data path: a Write sends header and payload with vectored writes straight
//! from registered memory; a Read's payload is read straight into the leased
//! local range. No staging copies on either side for host memory; device
//! memory (either side) is staged through pinned host chunks by
//! [`crate::cuda::staging`], double-buffered against the socket.
//!
//! Every connection starts with the mutual handshake of
//! [`mooncake_security::handshake`] (service [`HANDSHAKE_SERVICE`]); the
//! server side bounds connections, idle time and buffered bytes
//! ([`server::ServerLimits`]).
//!
//! Invariants: at most `connections_per_peer` connections per peer exist;
//! slices beyond that wait (fairly) for a free one. A connection that saw an
//! I/O error is dropped; `forget_peer` drops all idle ones. A pool belongs
//! to one peer epoch: a restarted peer gets a fresh pool.

pub mod client;
pub mod frame;
pub mod server;

use std::any::Any;
use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::{SharedTransport, Slice, Transport, TransportContext};
use crate::descriptor::SegmentDescriptor;
use crate::{Opcode, Protocol, TransferError};
use client::Conn;

/// Service name both ends bind into the handshake's HMAC: a proof made
/// for another Mooncake service (master RPC, real client) is refused here.
pub const HANDSHAKE_SERVICE: &str = "transfer";

/// Socket buffer size requested on both ends (bytes) unless
/// `MC_TCP_SOCKET_BUFFER` says otherwise; 0 leaves the kernel's autotuning.
const SOCKET_BUFFER: usize = 4 << 20;

fn socket_buffer() -> libc::c_int {
    static SIZE: std::sync::OnceLock<libc::c_int> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::env::var("MC_TCP_SOCKET_BUFFER")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(SOCKET_BUFFER)
            .min(i32::MAX as usize) as libc::c_int
    })
}

/// TCP_NODELAY and large socket buffers (best effort: failures only cost speed).
pub(crate) fn tune_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let size = socket_buffer();
    if size == 0 {
        return;
    }
    let fd = stream.as_raw_fd();
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: fd is a live socket owned by `stream`; the option value is a
        // c_int of the size passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Write `a` then `b` with vectored writes, handling partial writes.
pub(crate) async fn write_all_two(
    stream: &mut TcpStream,
    a: &[u8],
    b: &[u8],
) -> std::io::Result<()> {
    let total = a.len() + b.len();
    let mut done = 0;
    while done < total {
        let n = if done < a.len() {
            let bufs = [IoSlice::new(&a[done..]), IoSlice::new(b)];
            stream.write_vectored(&bufs).await?
        } else {
            stream.write(&b[done - a.len()..]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

#[derive(Debug)]
struct PeerPool {
    epoch: u64,
    host: String,
    port: u16,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
}

/// See the module docs.
#[derive(Debug)]
pub struct TcpTransport {
    ctx: TransportContext,
    pools: Mutex<HashMap<String, Arc<PeerPool>>>,
}

/// Build the tcp transport.
pub fn build(ctx: &TransportContext) -> Result<SharedTransport, TransferError> {
    Ok(Arc::new(TcpTransport {
        ctx: ctx.clone(),
        pools: Mutex::new(HashMap::new()),
    }))
}

impl TcpTransport {
    fn pool(&self, peer: &SegmentDescriptor) -> Arc<PeerPool> {
        let mut pools = self.pools.lock();
        if let Some(p) = pools.get(&peer.name) {
            if p.epoch == peer.epoch && p.port == peer.rpc_port && p.host == peer.rpc_host {
                return Arc::clone(p);
            }
        }
        let p = Arc::new(PeerPool {
            epoch: peer.epoch,
            host: peer.rpc_host.clone(),
            port: peer.rpc_port,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(self.ctx.config.connections_per_peer),
        });
        pools.insert(peer.name.clone(), Arc::clone(&p));
        p
    }
}

#[async_trait::async_trait]
impl Transport for TcpTransport {
    fn protocol(&self) -> Protocol {
        Protocol::Tcp
    }

    fn can_reach(&self, peer: &SegmentDescriptor, _remote_addr: u64, _len: usize) -> bool {
        peer.has_protocol("tcp") && peer.rpc_port != 0
    }

    async fn execute(
        &self,
        peer: &Arc<SegmentDescriptor>,
        slice: &Slice,
    ) -> Result<(), TransferError> {
        let pool = self.pool(peer);
        let _slot = pool
            .slots
            .acquire()
            .await
            .map_err(|_| TransferError::ShutDown)?;
        let idle = pool.idle.lock().pop();
        let mut conn = match idle {
            Some(c) => c,
            None => {
                Conn::connect(
                    &peer.name,
                    &pool.host,
                    pool.port,
                    &self.ctx.auth,
                    self.ctx.config.connect_timeout,
                )
                .await?
            }
        };
        // Device memory moves through pinned staging chunks, never the CPU.
        let device = self
            .ctx
            .registry
            .lease_local(slice.local_addr, slice.len)?
            .device();
        let result = match (slice.opcode, device) {
            (Opcode::Write, Some(d)) => {
                conn.write_device(slice.remote_addr, slice.local_addr, slice.len, d)
                    .await
            }
            (Opcode::Read, Some(d)) => {
                conn.read_device(slice.remote_addr, slice.local_addr, slice.len, d)
                    .await
            }
            (Opcode::Write, None) => {
                // SAFETY: the engine leased [local_addr, +len) for this call; we
                // only read it.
                let data =
                    unsafe { std::slice::from_raw_parts(slice.local_addr as *const u8, slice.len) };
                conn.write(slice.remote_addr, data).await
            }
            (Opcode::Read, None) => {
                // SAFETY: the engine leased [local_addr, +len) for this call;
                // registered memory is writable by the registration contract.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(slice.local_addr as *mut u8, slice.len)
                };
                conn.read(slice.remote_addr, out).await
            }
        };
        // Refusals leave the stream in sync; anything else poisons it.
        if result.is_ok() || result.as_ref().is_err_and(|e| e.is_permanent()) {
            pool.idle.lock().push(conn);
        }
        result
    }

    fn forget_peer(&self, segment: &str) {
        self.pools.lock().remove(segment);
    }

    async fn shutdown(&self) {
        let pools: Vec<_> = self.pools.lock().drain().collect();
        for (_, p) in pools {
            p.slots.close();
            p.idle.lock().clear();
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
