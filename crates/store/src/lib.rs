//! Mooncake Store: a distributed KV-cache pool.
//!
//! * [`master`] — the metadata master: a pure state machine ([`master::MasterState`],
//!   driven by an injected clock) plus a thin tokio/axum shell ([`master::server`]).
//! * [`protocol`] — the client↔master RPC: message types, the framed binary codec and
//!   the async [`protocol::MasterClient`].
//! * [`client`] — the store client ([`client::Client`]): put/get/remove over the Transfer
//!   Engine, segments, heartbeats.
//! * [`client_service`] — the real client's local RPC service and the dummy clients
//!   that forward to it (shared-memory pools for zero-copy buffers).
//! * [`config`] — [`config::MasterConfig`], loadable from TOML, env and flags.
//! * [`metrics`] — Prometheus counters and histograms kept by the master server.

pub mod client;
pub mod client_service;
pub mod config;
pub mod master;
pub mod metrics;
pub mod protocol;

pub use config::MasterConfig;
pub use protocol::{ErrorCode, MasterClient, Piece, Replica, ReplicateConfig};
