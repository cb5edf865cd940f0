//! The metadata master.
//!
//! * [`MasterState`] — the pure state machine (no sockets, no tokio, injected [`Clock`]):
//!   segments and their offset allocators ([`allocator`], [`segments`]), objects and
//!   two-phase puts ([`state`]), membership, expiry and eviction ([`lifecycle`]), request
//!   dispatch ([`MasterState::handle`]) and read-only views ([`views`]).
//! * [`server`] — the thin tokio shell: RPC listener, background ticker, HTTP endpoints.
//!
//! Memory: an object costs its key, one map slot and one boxed slice of 24-byte pieces
//! (see the crate README for the measured bytes per object).

pub mod allocator;
pub mod clock;
mod dispatch;
mod http;
pub mod lifecycle;
pub mod segments;
pub mod server;
pub mod state;
pub mod views;

#[cfg(test)]
mod tests;

pub use clock::{Clock, FakeClock, SystemClock};
pub use lifecycle::TickReport;
pub use server::{MasterServer, ServerError};
pub use state::{MasterState, Stats};
