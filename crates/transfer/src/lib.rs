//! Mooncake Transfer Engine: batched one-sided READ/WRITE between registered
//! memory of processes, over `tcp` (any host), `shm` (same host, memfd
//! mapping), `file` (io_uring file segments) and `rdma` (cargo feature
//! `rdma`: one-sided verbs over libibverbs; see `docs/rdma.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mooncake_transfer::TransferError> {
//! use mooncake_transfer::*;
//! let engine = TransferEngine::start(TransferEngineConfig::default()).await?;
//! let buf = engine.allocate_managed_buffer(1 << 20).await?;
//! let peer = engine.open_segment("127.0.0.1:17001").await?;
//! let remote = peer.descriptor().buffers[0].addr;
//! engine
//!     .transfer(&[TransferRequest {
//!         opcode: Opcode::Write,
//!         source: buf.addr(),
//!         target: peer,
//!         target_offset: remote,
//!         length: 4096,
//!     }])
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Registered memory may be host or CUDA device memory: registration decides
//! which (see [`cuda`]), tcp stages device memory through pinned buffers, and
//! same-host device buffers are shared by CUDA IPC; CUDA is loaded at run time
//! and optional. Details and GPU measurements: `docs/gpu.md`.
//!
//! Model (as the reference): every engine is a *segment* named `host:port`
//! whose registered buffers peers address by absolute address. The segment
//! descriptor is published in metadata (`mooncake/ram/<segment>`) or, in
//! P2P handshake mode, served by the peer itself on its RPC port.
//!
//! Safety invariants, end to end:
//! - The serving side checks every (address, length) against its own
//!   registry and refuses anything not wholly inside one registered buffer.
//! - Local sources must be inside a locally registered buffer.
//! - Nothing from the network can panic the engine; bad frames close the
//!   offending connection.
//! - A request reports a final status only after all its slices ended.

mod batch;
mod buffer;
mod config;
pub mod cuda;
pub mod descriptor;
mod engine;
mod error;
mod exec;
pub mod memfd;
pub mod memory;
pub mod range_alloc;
mod segment;
pub mod transport;

pub use batch::{BatchId, TransferStatus};
pub use buffer::ManagedBuffer;
pub use config::{Opcode, Protocol, TransferEngineConfig};
pub use descriptor::SegmentDescriptor;
pub use engine::TransferEngine;
pub use error::{FailureReason, TransferError};
pub use segment::SegmentHandle;

/// One transfer: `length` bytes between local `source` and the target
/// segment's absolute address `target_offset`.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    pub opcode: Opcode,
    /// Local address inside a registered buffer.
    pub source: usize,
    pub target: SegmentHandle,
    /// Remote absolute address (as the reference).
    pub target_offset: u64,
    pub length: usize,
}
