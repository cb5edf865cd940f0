//! Mooncake Store client side: a distributed KV-cache pool as seen by the processes that
//! use and contribute memory.
//!
//! One owner per mechanism, in this crate:
//! * [`client`] — the store client ([`client::Client`]): put/get/remove over the Transfer
//!   Engine, segments, heartbeats, staging buffers.
//! * [`client_service`] — the real client's local RPC service and the dummy clients
//!   that forward to it (shared-memory pools for zero-copy buffers).
//!
//! Not here: the wire protocol and the master client (`mooncake-store-protocol`, re-exported
//! as [`protocol`]) and the master itself (`mooncake-master`), which this crate does not link.

pub mod client;
pub mod client_service;

/// The client↔master protocol (crate `mooncake-store-protocol`).
pub use mooncake_store_protocol as protocol;

pub use client::{Client, ClientConfig, ClientError, RangeRead, Region};
pub use client_service::DummyClient;
pub use mooncake_store_protocol::{ErrorCode, MasterClient, Piece, Replica, ReplicateConfig};
