//! Slice execution: splitting requests, routing each slice to a transport,
//! retrying elsewhere, and enforcing the per-request deadline.
//!
//! Invariants:
//! - A slice touches local memory only while holding a lease on it.
//! - A slice ends (and is counted) exactly once: Ok, Failed or Timeout.
//!   The deadline drops the slice's future, which cancels its socket I/O.
//! - Permanent errors (refusals) are never retried; other errors are retried
//!   up to `retry_count` times, rotating through the transports that can
//!   reach the target, after forgetting cached state for the peer.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument;

use crate::batch::{Batch, SliceOutcome};
use crate::engine::EngineShared;
use crate::segment::SegmentHandle;
use crate::transport::{local, Slice};
use crate::{TransferError, TransferRequest};

/// Split and start `requests` on `batch`.
pub(crate) fn submit(
    shared: &Arc<EngineShared>,
    batch: &Arc<Batch>,
    requests: &[TransferRequest],
) -> Result<(), TransferError> {
    let base = batch.reserve(requests.len())?;
    let span = tracing::debug_span!(
        "transfer_batch",
        batch = batch.id(),
        requests = requests.len()
    );
    for (i, req) in requests.iter().enumerate() {
        let index = base + i;
        if req.length == 0 {
            batch.start(index, 0);
            continue;
        }
        // Check the whole local range once up front: a bad source fails fast.
        if let Err(e) = shared.registry.lease_local(req.source, req.length) {
            batch.fail_now(index, e.reason());
            continue;
        }
        if req.target_offset.checked_add(req.length as u64).is_none() {
            let (addr, len) = (req.target_offset, req.length as u64);
            batch.fail_now(index, crate::FailureReason::OutOfRange { addr, len });
            continue;
        }
        let slices = req.length.div_ceil(shared.config.slice_size);
        batch.start(index, slices);
        let deadline = Instant::now() + shared.config.transfer_timeout;
        let task = run_request(
            Arc::clone(shared),
            Arc::clone(batch),
            index,
            req.clone(),
            slices,
            deadline,
        );
        shared.runtime.spawn(task.instrument(span.clone()));
    }
    Ok(())
}

/// The `k`-th slice of `req`.
fn slice_of(req: &TransferRequest, slice_size: usize, k: usize) -> Slice {
    let off = k * slice_size;
    Slice {
        opcode: req.opcode,
        local_addr: req.source + off,
        remote_addr: req.target_offset + off as u64,
        len: slice_size.min(req.length - off),
        attempt: 0,
    }
}

/// Check the whole request, then run its slices (the first inline).
async fn run_request(
    shared: Arc<EngineShared>,
    batch: Arc<Batch>,
    index: usize,
    req: TransferRequest,
    slices: usize,
    deadline: Instant,
) {
    // Refuse a request reaching outside the target's buffers before any of
    // its slices runs, so a refused request changes nothing (not even its
    // in-range first slices). The serving side still checks every slice.
    let (addr, len) = (req.target_offset, req.length as u64);
    let precheck = if req.target.name() == shared.segment_name {
        shared.registry.lease(addr, len).map(drop)
    } else {
        match tokio::time::timeout_at(deadline, shared.segments.check(&req.target, addr, len)).await
        {
            Ok(r) => r.map(drop),
            Err(_) => Err(TransferError::Timeout),
        }
    };
    match precheck {
        Err(TransferError::Timeout) => {
            (0..slices).for_each(|_| batch.slice_ended(index, SliceOutcome::Timeout));
            return;
        }
        Err(e) if e.is_permanent() => {
            tracing::warn!(segment = req.target.name(), error = %e, "request refused");
            let outcome = SliceOutcome::Failed(e.reason());
            (0..slices).for_each(|_| batch.slice_ended(index, outcome.clone()));
            return;
        }
        // Unreachable right now: the slices retry on their own.
        _ => {}
    }
    let slice_size = shared.config.slice_size;
    for k in 1..slices {
        let slice = slice_of(&req, slice_size, k);
        let task = run_slice(
            Arc::clone(&shared),
            Arc::clone(&batch),
            index,
            req.target.clone(),
            slice,
            deadline,
        );
        shared.runtime.spawn(task.in_current_span());
    }
    let first = slice_of(&req, slice_size, 0);
    run_slice(shared, batch, index, req.target, first, deadline).await;
}

/// Run one slice under the request deadline and record its outcome.
async fn run_slice(
    shared: Arc<EngineShared>,
    batch: Arc<Batch>,
    index: usize,
    target: SegmentHandle,
    slice: Slice,
    deadline: Instant,
) {
    let outcome = if batch.has_failed(index) {
        // An earlier slice failed: the request is lost anyway.
        SliceOutcome::Ok
    } else {
        match tokio::time::timeout_at(deadline, execute(&shared, &target, slice)).await {
            Ok(Ok(())) => SliceOutcome::Ok,
            Ok(Err(e)) => {
                tracing::warn!(segment = target.name(), error = %e, "slice failed");
                SliceOutcome::Failed(e.reason())
            }
            Err(_) => {
                tracing::warn!(segment = target.name(), "slice timed out");
                SliceOutcome::Timeout
            }
        }
    };
    batch.slice_ended(index, outcome);
}

/// Run one slice with retries.
async fn execute(
    shared: &EngineShared,
    target: &SegmentHandle,
    mut slice: Slice,
) -> Result<(), TransferError> {
    let _local = shared.registry.lease_local(slice.local_addr, slice.len)?;
    if target.name() == shared.segment_name {
        return local::copy(&shared.registry, &slice);
    }
    let attempts = shared.config.retry_count.saturating_add(1);
    let mut last = None;
    for attempt in 0..attempts {
        slice.attempt = attempt;
        let desc = match shared
            .segments
            .check(target, slice.remote_addr, slice.len as u64)
            .await
        {
            Ok(d) => d,
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let candidates: Vec<_> = shared
            .transports
            .iter()
            .filter(|t| t.can_reach(&desc, slice.remote_addr, slice.len))
            .collect();
        if candidates.is_empty() {
            return Err(TransferError::NoRoute {
                segment: target.name().to_string(),
                addr: slice.remote_addr,
            });
        }
        let transport = candidates[attempt as usize % candidates.len()];
        match transport.execute(&desc, &slice).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                tracing::debug!(
                    segment = target.name(),
                    transport = %transport.protocol(),
                    attempt,
                    error = %e,
                    "slice attempt failed; retrying"
                );
                if matches!(e, TransferError::PeerUnreachable { .. }) {
                    shared.segments.invalidate(target.name());
                    for t in &shared.transports {
                        t.forget_peer(target.name());
                    }
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(TransferError::Timeout))
}
