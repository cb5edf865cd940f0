//! Transports: how one slice of a request moves between local registered
//! memory and a peer segment.
//!
//! The engine owns routing: for every slice it asks the enabled transports,
//! in preference order (`rdma`, `shm`, `file`, `tcp`), whether they
//! [`can_reach`](Transport::can_reach) the target range, runs the first that
//! can, and on a retryable failure moves to the next attempt — the same
//! transport with a different path (`attempt` grows; tcp picks another
//! connection) or the next transport that can reach the target.
//!
//! # Contract for implementors
//!
//! - **Memory registration keys.** [`Transport::register_memory`] is called for
//!   every buffer added to the local segment before it is published; the
//!   returned [`MemoryKey`] (an RDMA lkey/rkey pair, say) is stored with the
//!   buffer and published in the segment descriptor (`lkey`/`rkey` arrays, one
//!   entry per key-producing transport, as the reference does). Transports
//!   without keys return `Ok(None)`. [`Transport::unregister_memory`] is called
//!   after the buffer is drained (no in-flight leases).
//! - **One-sided ops.** [`Transport::execute`] performs a READ (remote → local)
//!   or WRITE (local → remote) of `slice.len` bytes. The engine has already
//!   leased the local range (it is registered and stays valid for the whole
//!   call) and checked the remote range against the peer's descriptor; the
//!   *serving* side must still check it again against its own registry (the
//!   descriptor may be stale or forged). `execute` must be cancel-safe in the
//!   sense that dropping its future leaves no dangling access to local memory
//!   after the drop returns (tokio socket reads/writes satisfy this).
//! - **Errors.** Return [`TransferError::is_permanent`] errors for refusals
//!   (out of range, unregistered, token mismatch) so the engine does not retry
//!   them; anything else (I/O, connection loss) is retried elsewhere.
//! - **Descriptor extension.** A transport may publish extra, transport-specific
//!   data in the local segment descriptor under `transports.<name>`
//!   ([`Transport::descriptor_extension`]); after changing it, call
//!   [`TransferEngine::republish`](crate::TransferEngine::republish).
//! - Implementations are `Send + Sync`, shared as `Arc<dyn Transport>`, and
//!   reachable by users through [`TransferEngine::transport`](crate::TransferEngine::transport)
//!   plus [`Transport::as_any`] for transport-specific APIs (e.g. the file
//!   transport's file registration).
//!
//! Module layout: `tcp` (client pool + RPC server), `shm` (memfd mapping),
//! `local` (own-segment memcpy), `file` (io_uring file segments; owned by the
//! file transport), `rdma` (feature `rdma`: verbs over libibverbs; its
//! handshake arrives through [`Transport::handle_rpc`]).
//!
//! Construction: [`build`] makes one transport per enabled protocol. Each
//! transport module provides `pub fn build(ctx: &TransportContext) ->
//! Result<SharedTransport, TransferError>`.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::descriptor::SegmentDescriptor;
use crate::memory::{MemoryRegistry, RegionInfo};
use crate::{Opcode, Protocol, TransferEngineConfig, TransferError};

pub mod file;
pub mod local;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod shm;
pub mod tcp;

pub use crate::memory::MemoryKey;

/// One contiguous piece of a request, executed by a single transport call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub opcode: Opcode,
    /// Start in local registered memory (already leased by the engine).
    pub local_addr: usize,
    /// Absolute address in the peer's registered memory.
    pub remote_addr: u64,
    pub len: usize,
    /// 0 on the first try; transports use it to choose a different path.
    pub attempt: u32,
}

/// What a transport gets when it is built.
#[derive(Debug, Clone)]
pub struct TransportContext {
    /// This engine's segment name (`host:port`).
    pub segment_name: String,
    pub config: Arc<TransferEngineConfig>,
    /// This process's registered memory (the serving side of one-sided ops).
    pub registry: Arc<MemoryRegistry>,
    /// Identifies this host (and pid namespace); equal ids ⇒ same host.
    pub host_id: String,
    /// How connections to peers' RPC ports authenticate
    /// ([`TransferEngineConfig::auth_mode`], resolved once at start).
    pub auth: mooncake_security::AuthMode,
}

/// A way of moving bytes between local memory and a peer segment.
/// See the module docs for the full contract.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Which protocol this is.
    fn protocol(&self) -> Protocol;

    /// A buffer is being added to the local segment. Return its key if this
    /// transport produces one (rdma), else `Ok(None)`.
    fn register_memory(&self, _region: &RegionInfo) -> Result<Option<MemoryKey>, TransferError> {
        Ok(None)
    }

    /// Like [`register_memory`](Self::register_memory) for transports that
    /// produce one key per device (rdma: one per NIC, in device order). The
    /// engine calls this one; the default wraps `register_memory`.
    fn register_memory_keys(&self, region: &RegionInfo) -> Result<Vec<MemoryKey>, TransferError> {
        Ok(self.register_memory(region)?.into_iter().collect())
    }

    /// A buffer left the local segment (after all in-flight use drained).
    fn unregister_memory(&self, _region: &RegionInfo) -> Result<(), TransferError> {
        Ok(())
    }

    /// Transport-specific data to publish under `transports.<name>` in the
    /// local descriptor.
    fn descriptor_extension(&self) -> Option<serde_json::Value> {
        None
    }

    /// Whether this transport can carry `[remote_addr, remote_addr+len)` of
    /// `peer`. Cheap and without I/O.
    fn can_reach(&self, peer: &SegmentDescriptor, remote_addr: u64, len: usize) -> bool;

    /// Perform one one-sided op (see the module docs).
    async fn execute(
        &self,
        peer: &Arc<SegmentDescriptor>,
        slice: &Slice,
    ) -> Result<(), TransferError>;

    /// A transport-specific request that arrived on the RPC port (after the
    /// peer presented the cluster token), e.g. the rdma connection handshake.
    /// Returns the reply payload.
    fn handle_rpc(&self, _request: &[u8]) -> Result<Vec<u8>, TransferError> {
        Err(TransferError::Protocol(format!(
            "transport {} serves no RPC",
            self.protocol()
        )))
    }

    /// The peer restarted, changed or left: drop cached connections/mappings.
    fn forget_peer(&self, _segment: &str) {}

    /// Stop; release connections and mappings.
    async fn shutdown(&self) {}

    /// For transport-specific APIs: `engine.transport(Protocol::File)?.as_any().downcast_ref::<FileTransport>()`.
    fn as_any(&self) -> &dyn Any;
}

/// Shared transport handle.
pub type SharedTransport = Arc<dyn Transport>;

/// Order in which the engine tries transports for a remote slice.
pub const PREFERENCE: [Protocol; 4] =
    [Protocol::Rdma, Protocol::Shm, Protocol::File, Protocol::Tcp];

/// Build the transport for `protocol` (see the module docs).
pub fn build(protocol: Protocol, ctx: &TransportContext) -> Result<SharedTransport, TransferError> {
    match protocol {
        Protocol::Tcp => tcp::build(ctx),
        Protocol::Shm => shm::build(ctx),
        Protocol::File => file::build(ctx),
        Protocol::Rdma => rdma_build(ctx),
    }
}

#[cfg(feature = "rdma")]
fn rdma_build(ctx: &TransportContext) -> Result<SharedTransport, TransferError> {
    rdma::build(ctx)
}

#[cfg(not(feature = "rdma"))]
fn rdma_build(_ctx: &TransportContext) -> Result<SharedTransport, TransferError> {
    Err(TransferError::TransportUnavailable {
        protocol: Protocol::Rdma,
        reason: "built without the `rdma` cargo feature (rebuild with `--features rdma`)".into(),
    })
}
