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
//!   names; regions outside the pool and small plain values are copied
//!   through the socket (at most [`dummy::MAX_INLINE_VALUE`] bytes per value
//!   unless the staging area holds it).
//! * [`shm`] — the pool (sealed memfd) and its mapping in the real client.
//! * pool buffers (`alloc_from_mem_pool`) are carved by the Transfer
//!   Engine's `range_alloc::RangeAllocator`, the one range allocator.
//! * `staging` — the dummy's staging area (`local_buffer_size`): large plain
//!   values move through shared memory instead of the socket.
//!
//! Same host and same user only: the real client opens the dummy's memfd
//! through `/proc/<pid>/fd/<fd>` (and maps only memfds named
//! [`shm::POOL_NAME`], sealed against shrinking).
//!
//! # Measured
//!
//! `mooncake bench dummy` (release build, 2-core development machine shared
//! with parallel builds, load average ~3, 2026-11-26; 1 MiB values, objects
//! in the real client's segment; two runs of 3 s per row, GB/s):
//!
//! | get_into by                              | run 1 | run 2 | p50 µs (run 2) |
//! |------------------------------------------|-------|-------|----------------|
//! | the real client itself, 1 in flight      | 7.14  | 5.24  | 193            |
//! | a separate client (own engine, shm read) | 8.37  | 5.60  | 179            |
//! | a dummy, into its shared pool            | 5.41  | 5.16  | 198            |
//! | a dummy, into other memory (socket copy) | 1.43  | 1.52  | 673            |
//! | the real client, 4 in flight             | 15.25 | 9.58  | 398            |
//! | a dummy into its pool, 4 in flight       | 15.12 | 11.14 | 319            |
//!
//! Zero-copy through the pool reaches 0.76–0.98x of the real client's own
//! rate with one read in flight (the local round trip, ~60 µs, is the
//! difference) and 0.99–1.16x with four (its connections run concurrently);
//! buffers outside the pool pay the socket copy (0.20–0.29x). The machine's
//! noise between runs is larger than the dummy's overhead.

pub mod dummy;
pub mod server;
pub mod shm;
mod staging;
pub mod wire;

pub use dummy::{DummyClient, CONNECTIONS};
pub use server::{serve, ServiceHandle};

/// The reference's default port of the standalone real client.
pub const DEFAULT_PORT: u16 = 50052;
