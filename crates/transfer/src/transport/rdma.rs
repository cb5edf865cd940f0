//! RDMA transport — **not implemented; a later issue.**
//!
//! This module exists so the `rdma` cargo feature and the
//! [`Transport`](super::Transport) contract (memory-registration keys, one-sided
//! verbs) have a fixed home. Building it always fails with a typed
//! [`TransferError::TransportUnavailable`]; nothing here pretends to move data.

use super::{SharedTransport, TransportContext};
use crate::{Protocol, TransferError};

/// Always `TransportUnavailable`: RDMA verbs are not implemented yet.
pub fn build(_ctx: &TransportContext) -> Result<SharedTransport, TransferError> {
    Err(TransferError::TransportUnavailable {
        protocol: Protocol::Rdma,
        reason: "RDMA transport not implemented yet (later issue); use tcp or shm".into(),
    })
}
