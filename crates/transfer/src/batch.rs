//! Batches and request statuses.
//!
//! A batch is a fixed-capacity list of requests; each request is split into
//! slices that run concurrently. A request's status is decided only when its
//! last slice has ended, so once a request reports a final status (Completed,
//! Failed, Timeout) no transfer touches its memory any more.
//!
//! Pure bookkeeping: no I/O, no clock; the engine feeds slice outcomes in.

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{FailureReason, TransferError};

/// Identifies a batch within one engine.
pub type BatchId = u64;

/// Status of one request of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferStatus {
    /// Reserved in the batch but not submitted.
    Waiting,
    /// Submitted; slices in flight.
    Pending,
    Completed,
    Failed(FailureReason),
    /// The request's deadline passed before all slices completed.
    Timeout,
}

impl TransferStatus {
    /// Completed, Failed or Timeout.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TransferStatus::Completed | TransferStatus::Failed(_) | TransferStatus::Timeout
        )
    }
}

/// How one slice ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceOutcome {
    Ok,
    Failed(FailureReason),
    Timeout,
}

#[derive(Debug)]
struct RequestState {
    status: TransferStatus,
    slices_left: usize,
    failure: Option<SliceOutcome>,
}

#[derive(Debug)]
struct State {
    requests: Vec<RequestState>,
    /// Requests submitted but not final.
    in_flight: usize,
}

/// One batch.
#[derive(Debug)]
pub struct Batch {
    id: BatchId,
    capacity: usize,
    state: Mutex<State>,
    done: Notify,
}

impl Batch {
    pub fn new(id: BatchId, capacity: usize) -> Self {
        Batch {
            id,
            capacity,
            state: Mutex::new(State {
                requests: Vec::new(),
                in_flight: 0,
            }),
            done: Notify::new(),
        }
    }

    pub fn id(&self) -> BatchId {
        self.id
    }

    /// Reserve `n` request slots; returns the index of the first.
    pub fn reserve(&self, n: usize) -> Result<usize, TransferError> {
        let mut s = self.state.lock();
        let base = s.requests.len();
        if base + n > self.capacity {
            return Err(TransferError::BatchFull {
                batch: self.id,
                capacity: self.capacity,
                requested: n,
            });
        }
        for _ in 0..n {
            s.requests.push(RequestState {
                status: TransferStatus::Waiting,
                slices_left: 0,
                failure: None,
            });
        }
        Ok(base)
    }

    /// Mark request `index` as started with `slices` slices (0 completes it).
    pub fn start(&self, index: usize, slices: usize) {
        let mut s = self.state.lock();
        let r = &mut s.requests[index];
        if slices == 0 {
            r.status = TransferStatus::Completed;
            return;
        }
        r.status = TransferStatus::Pending;
        r.slices_left = slices;
        s.in_flight += 1;
    }

    /// Fail request `index` before any slice ran (e.g. unknown segment).
    pub fn fail_now(&self, index: usize, reason: FailureReason) {
        self.start(index, 1);
        self.slice_ended(index, SliceOutcome::Failed(reason));
    }

    /// Whether request `index` already has a failure (later slices may skip).
    pub fn has_failed(&self, index: usize) -> bool {
        self.state.lock().requests[index].failure.is_some()
    }

    /// Record one slice's end; the last slice decides the request's status.
    pub fn slice_ended(&self, index: usize, outcome: SliceOutcome) {
        let mut s = self.state.lock();
        let r = &mut s.requests[index];
        if outcome != SliceOutcome::Ok && r.failure.is_none() {
            r.failure = Some(outcome);
        }
        r.slices_left -= 1;
        if r.slices_left > 0 {
            return;
        }
        r.status = match r.failure.take() {
            None => TransferStatus::Completed,
            Some(SliceOutcome::Timeout) => TransferStatus::Timeout,
            Some(SliceOutcome::Failed(reason)) => TransferStatus::Failed(reason),
            Some(SliceOutcome::Ok) => TransferStatus::Completed,
        };
        s.in_flight -= 1;
        if s.in_flight == 0 {
            drop(s);
            self.done.notify_waiters();
        }
    }

    pub fn status(&self, index: usize) -> Result<TransferStatus, TransferError> {
        let s = self.state.lock();
        s.requests
            .get(index)
            .map(|r| r.status.clone())
            .ok_or(TransferError::InvalidIndex {
                batch: self.id,
                index,
            })
    }

    /// Statuses of all reserved requests.
    pub fn statuses(&self) -> Vec<TransferStatus> {
        self.state
            .lock()
            .requests
            .iter()
            .map(|r| r.status.clone())
            .collect()
    }

    pub fn is_idle(&self) -> bool {
        self.state.lock().in_flight == 0
    }

    /// Wait until no submitted request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_idle() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lifecycle() {
        let b = Batch::new(1, 3);
        assert_eq!(b.reserve(2).unwrap(), 0);
        assert!(b.reserve(2).is_err());
        assert_eq!(b.status(0).unwrap(), TransferStatus::Waiting);
        assert!(b.status(5).is_err());
        b.start(0, 2);
        b.start(1, 0);
        assert_eq!(b.status(1).unwrap(), TransferStatus::Completed);
        b.slice_ended(0, SliceOutcome::Failed(FailureReason::TokenMismatch));
        assert_eq!(b.status(0).unwrap(), TransferStatus::Pending);
        assert!(b.has_failed(0));
        assert!(!b.is_idle());
        b.slice_ended(0, SliceOutcome::Timeout);
        assert_eq!(
            b.status(0).unwrap(),
            TransferStatus::Failed(FailureReason::TokenMismatch)
        );
        b.wait_idle().await;
        assert_eq!(b.reserve(1).unwrap(), 2);
        b.start(2, 1);
        b.slice_ended(2, SliceOutcome::Timeout);
        assert_eq!(b.status(2).unwrap(), TransferStatus::Timeout);
    }
}
