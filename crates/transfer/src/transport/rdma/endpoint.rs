//! One endpoint: the RC QPs to one (peer segment, local NIC, peer NIC), its
//! connection state ([`EndpointState`]) and the reset rules.
//!
//! Invariant: a reset moves the QPs to the error state (their outstanding
//! WRs flush) and drops them from the endpoint; each QP is destroyed only
//! when its last pending WR released it.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Semaphore;

use super::core::EndpointState;
use super::verbs::QueuePair;

#[derive(Debug)]
pub(super) struct QpSlot {
    pub qp: Arc<QueuePair>,
    pub credits: Arc<Semaphore>,
}

#[derive(Debug)]
pub(super) struct Endpoint {
    pub epoch: u64,
    pub state: Mutex<EndpointState>,
    pub qps: RwLock<Vec<QpSlot>>,
    pub connect: tokio::sync::Mutex<()>,
    pub next: AtomicUsize,
}

impl Endpoint {
    pub fn new(epoch: u64) -> Self {
        Endpoint {
            epoch,
            state: Mutex::new(EndpointState::Idle),
            qps: RwLock::new(Vec::new()),
            connect: tokio::sync::Mutex::new(()),
            next: AtomicUsize::new(0),
        }
    }

    /// Drop the QPs (outstanding WRs flush; each QP is destroyed when its
    /// last pending WR completes) and remember the failure.
    pub fn fail(&self) {
        let old = std::mem::take(&mut *self.qps.write());
        for s in &old {
            s.qp.set_error();
            s.credits.close();
        }
        self.state.lock().failed(Instant::now());
    }
}

impl Endpoint {
    /// [`fail`](Self::fail) if `qp` is still one of the current QPs (a late
    /// error from QPs already replaced must not reset their successors).
    pub fn fail_qp(&self, qp: &Arc<QueuePair>) {
        let current = self.qps.read().iter().any(|s| Arc::ptr_eq(&s.qp, qp));
        if current {
            self.fail();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for s in self.qps.get_mut().iter() {
            s.qp.set_error();
        }
    }
}

/// Resets the endpoint unless forgotten (see `post_and_wait`).
pub(super) struct ResetOnDrop<'a>(pub Option<(&'a Endpoint, &'a Arc<QueuePair>)>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some((ep, qp)) = self.0.take() {
            tracing::debug!("rdma work request abandoned; resetting its endpoint");
            ep.fail_qp(qp);
        }
    }
}
