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
    let slice_size = shared.config.slice_size;
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
            batch.fail_now(
                index,
                crate::FailureReason::OutOfRange {
                    addr: req.target_offset,
                    len: req.length as u64,
                },
            );
            continue;
        }
        let slices = req.length.div_ceil(slice_size);
        batch.start(index, slices);
        let deadline = Instant::now() + shared.config.transfer_timeout;
        for k in 0..slices {
            let off = k * slice_size;
            let slice = Slice {
                opcode: req.opcode,
                local_addr: req.source + off,
                remote_addr: req.target_offset + off as u64,
                len: slice_size.min(req.length - off),
                attempt: 0,
            };
            let (shared, batch, target) =
                (Arc::clone(shared), Arc::clone(batch), req.target.clone());
            shared.runtime.clone().spawn(
                async move {
                    let outcome = if batch.has_failed(index) {
                        // An earlier slice failed: the request is lost anyway.
                        SliceOutcome::Ok
                    } else {
                        match tokio::time::timeout_at(deadline, execute(&shared, &target, slice))
                            .await
                        {
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
                .instrument(span.clone()),
            );
        }
    }
    Ok(())
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
        let desc = match shared.segments.current(target).await {
            Ok(d) => d,
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        desc.find_buffer(slice.remote_addr, slice.len as u64)?;
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
