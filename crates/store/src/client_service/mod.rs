//! The client service: the reference's "real client / dummy client" split.
//!
//! A long-running *real client* (`mooncake real-client`, port 50052 by
//! default) owns a [`crate::client::Client`]: it contributes the global
//! segment, talks to the master and moves data with its Transfer Engine.
//! Light *dummy clients* (inference worker processes; Python's
//! `MooncakeDistributedStore.setup_dummy`) hold only a [`DummyClient`]: every
//! store operation is forwarded over a local TCP connection
//! ([`wire`], in the master protocol's frames), and their zero-copy buffers
//! live in a shared-memory pool the real client maps and registers, so
//! `put_from`/`get_into` on pool memory move no bytes through the socket.
//!
//! * [`server`] — [`serve`]: the real client's side; validates every request
//!   (malformed frames and ranges outside the attached pool get typed
//!   errors), releases a dummy's pool when its connection ends.
//! * [`dummy`] — [`DummyClient`]: the dummy's side, with the `Client` method
//!   names; regions outside the pool and plain values are copied through the
//!   socket (at most [`dummy::MAX_INLINE_VALUE`] bytes per value).
//! * [`shm`] — the pool (sealed memfd) and its mapping in the real client.
//! * [`alloc`] — carving the pool into buffers (`alloc_from_mem_pool`).
//!
//! Same host and same user only: the real client opens the dummy's memfd
//! through `/proc/<pid>/fd/<fd>` (and maps only memfds named
//! [`shm::POOL_NAME`], sealed against shrinking).
//!
//! # Measured
//!
//! `mooncake bench dummy` (release build, 2-core development machine at load
//! average ~5 from parallel builds, 2026-11-26; 1 MiB values, one read in
//! flight, objects in the real client's segment):
//!
//! | get_into by                        | GB/s  | p50 µs | vs real client |
//! |------------------------------------|-------|--------|----------------|
//! | the real client itself             | 4.27  | 223    | 1.00           |
//! | a separate client (own engine)     | 2.27  | 226    | 0.53           |
//! | a dummy, into its shared pool      | 4.12  | 195    | 0.96           |
//! | a dummy, into other memory (copy)  | 1.27  | 647    | 0.30           |
//!
//! Zero-copy through the pool costs the dummy ~4% against being the real
//! client; buffers outside the pool pay the socket copy (~3x slower).

pub mod alloc;
pub mod dummy;
pub mod server;
pub mod shm;
pub mod wire;

pub use dummy::{DummyClient, CONNECTIONS};
pub use server::{serve, ServiceHandle};

/// The reference's default port of the standalone real client.
pub const DEFAULT_PORT: u16 = 50052;
