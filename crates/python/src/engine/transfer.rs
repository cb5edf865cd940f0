//! Transfers of `TransferEngine`: sync, batch and async forms and status
//! polling. Every request list goes to one target segment; the engine checks
//! both ends against the registered buffers.

use std::future::Future;
use std::sync::Arc;

use mooncake_transfer::{Opcode, TransferEngine, TransferError, TransferRequest, TransferStatus};
use pyo3::prelude::*;

use super::{PyOpcode, PyTransferEngine};
use crate::log;
use crate::runtime::block_on;

async fn build_requests(
    engine: &TransferEngine,
    target: &str,
    opcode: Opcode,
    locals: &[usize],
    remotes: &[u64],
    lengths: &[usize],
) -> Result<Vec<TransferRequest>, TransferError> {
    if locals.len() != remotes.len() || locals.len() != lengths.len() {
        return Err(TransferError::InvalidConfig(format!(
            "{} buffers, {} peer addresses and {} lengths",
            locals.len(),
            remotes.len(),
            lengths.len()
        )));
    }
    let seg = engine.open_segment(target).await?;
    Ok(locals
        .iter()
        .zip(remotes)
        .zip(lengths)
        .map(|((&source, &target_offset), &length)| TransferRequest {
            opcode,
            source,
            target: seg.clone(),
            target_offset,
            length,
        })
        .collect())
}

fn status_ok(statuses: &[TransferStatus]) -> Result<(), TransferError> {
    for s in statuses {
        match s {
            TransferStatus::Completed => {}
            TransferStatus::Failed(r) => return Err(r.clone().into()),
            TransferStatus::Timeout => return Err(TransferError::Timeout),
            other => return Err(TransferError::Protocol(format!("request ended {other:?}"))),
        }
    }
    Ok(())
}

/// One call's requests, all to one target.
struct Job<'a> {
    what: &'static str,
    target: &'a str,
    opcode: Opcode,
    locals: Vec<usize>,
    remotes: Vec<u64>,
    lengths: Vec<usize>,
}

impl<'a> Job<'a> {
    /// A single request.
    fn one(
        what: &'static str,
        target: &'a str,
        opcode: Opcode,
        local: usize,
        remote: u64,
        length: usize,
    ) -> Self {
        Self::many(
            what,
            target,
            opcode,
            vec![local],
            vec![remote],
            vec![length],
        )
    }

    /// A request list; mismatched list lengths are reported when it runs.
    fn many(
        what: &'static str,
        target: &'a str,
        opcode: Opcode,
        locals: Vec<usize>,
        remotes: Vec<u64>,
        lengths: Vec<usize>,
    ) -> Self {
        Job {
            what,
            target,
            opcode,
            locals,
            remotes,
            lengths,
        }
    }
}

impl PyTransferEngine {
    /// Build `job`'s requests and hand them to `go`; `failed` (after logging)
    /// if the engine is not initialized or any step fails.
    fn drive<T, F, Fut>(&self, py: Python<'_>, job: Job<'_>, failed: T, go: F) -> T
    where
        T: Send,
        F: FnOnce(Arc<TransferEngine>, Vec<TransferRequest>) -> Fut + Send,
        Fut: Future<Output = Result<T, TransferError>> + Send,
    {
        let Job {
            what,
            target,
            opcode,
            locals,
            remotes,
            lengths,
        } = job;
        let Some(a) = self.active() else {
            log::error(py, &format!("{what}: engine not initialized"));
            return failed;
        };
        let r = block_on(py, async {
            let reqs =
                build_requests(&a.engine, target, opcode, &locals, &remotes, &lengths).await?;
            go(Arc::clone(&a.engine), reqs).await
        });
        r.unwrap_or_else(|e| {
            log::error(py, &format!("{what} to {target}: {e}"));
            failed
        })
    }

    /// Run `job` to completion: 0, or -1 on failure.
    fn run_batch(&self, py: Python<'_>, job: Job<'_>) -> i32 {
        self.drive(py, job, -1, |engine, reqs| async move {
            if !reqs.is_empty() {
                engine.transfer(&reqs).await?;
            }
            Ok(0)
        })
    }

    /// Submit `job`: its batch id, or 0 on failure.
    fn submit_batch(&self, py: Python<'_>, job: Job<'_>) -> u64 {
        self.drive(py, job, 0, |engine, reqs| async move {
            let batch = engine.allocate_batch(reqs.len().max(1))?;
            if let Err(e) = engine.submit(batch, &reqs) {
                let _ = engine.free_batch(batch);
                return Err(e);
            }
            Ok(batch)
        })
    }
}

#[pymethods]
impl PyTransferEngine {
    #[pyo3(signature = (target_hostname, buffer, peer_buffer_address, length, transport_hint = ""))]
    fn transfer_sync_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: usize,
        peer_buffer_address: u64,
        length: usize,
        transport_hint: &str,
    ) -> i32 {
        let _ = transport_hint;
        self.run_batch(
            py,
            Job::one(
                "transfer_sync_write",
                target_hostname,
                Opcode::Write,
                buffer,
                peer_buffer_address,
                length,
            ),
        )
    }

    #[pyo3(signature = (target_hostname, buffer, peer_buffer_address, length, transport_hint = ""))]
    fn transfer_sync_read(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: usize,
        peer_buffer_address: u64,
        length: usize,
        transport_hint: &str,
    ) -> i32 {
        let _ = transport_hint;
        self.run_batch(
            py,
            Job::one(
                "transfer_sync_read",
                target_hostname,
                Opcode::Read,
                buffer,
                peer_buffer_address,
                length,
            ),
        )
    }

    fn transfer_sync(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: usize,
        peer_buffer_address: u64,
        length: usize,
        opcode: PyOpcode,
    ) -> i32 {
        self.run_batch(
            py,
            Job::one(
                "transfer_sync",
                target_hostname,
                opcode.into(),
                buffer,
                peer_buffer_address,
                length,
            ),
        )
    }

    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, transport_hint = ""))]
    fn batch_transfer_sync_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<usize>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<usize>,
        transport_hint: &str,
    ) -> i32 {
        let _ = transport_hint;
        self.run_batch(
            py,
            Job::many(
                "batch_transfer_sync_write",
                target_hostname,
                Opcode::Write,
                buffers,
                peer_buffer_addresses,
                lengths,
            ),
        )
    }

    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, transport_hint = ""))]
    fn batch_transfer_sync_read(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<usize>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<usize>,
        transport_hint: &str,
    ) -> i32 {
        let _ = transport_hint;
        self.run_batch(
            py,
            Job::many(
                "batch_transfer_sync_read",
                target_hostname,
                Opcode::Read,
                buffers,
                peer_buffer_addresses,
                lengths,
            ),
        )
    }

    fn batch_transfer_sync(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<usize>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<usize>,
        opcode: PyOpcode,
    ) -> i32 {
        self.run_batch(
            py,
            Job::many(
                "batch_transfer_sync",
                target_hostname,
                opcode.into(),
                buffers,
                peer_buffer_addresses,
                lengths,
            ),
        )
    }

    /// Submit writes and return at once: a non-zero batch id to pass to
    /// `get_batch_transfer_status`, or 0 if submission failed.
    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, transport_hint = ""))]
    fn batch_transfer_async_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<usize>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<usize>,
        transport_hint: &str,
    ) -> u64 {
        let _ = transport_hint;
        self.submit_batch(
            py,
            Job::many(
                "batch_transfer_async_write",
                target_hostname,
                Opcode::Write,
                buffers,
                peer_buffer_addresses,
                lengths,
            ),
        )
    }

    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, transport_hint = ""))]
    fn batch_transfer_async_read(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<usize>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<usize>,
        transport_hint: &str,
    ) -> u64 {
        let _ = transport_hint;
        self.submit_batch(
            py,
            Job::many(
                "batch_transfer_async_read",
                target_hostname,
                Opcode::Read,
                buffers,
                peer_buffer_addresses,
                lengths,
            ),
        )
    }

    fn batch_transfer_async(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<usize>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<usize>,
        opcode: PyOpcode,
    ) -> u64 {
        self.submit_batch(
            py,
            Job::many(
                "batch_transfer_async",
                target_hostname,
                opcode.into(),
                buffers,
                peer_buffer_addresses,
                lengths,
            ),
        )
    }

    /// Wait for the batches to finish and free them: 0 if every request
    /// completed, -1 otherwise.
    fn get_batch_transfer_status(&self, py: Python<'_>, batch_ids: Vec<u64>) -> i32 {
        let Some(a) = self.active() else { return -1 };
        let r = block_on(py, async {
            let mut first_err = None;
            for id in batch_ids {
                let r = match a.engine.wait(id).await {
                    Ok(st) => status_ok(&st),
                    Err(e) => Err(e),
                };
                let _ = a.engine.free_batch(id);
                if let (Err(e), None) = (r, &first_err) {
                    first_err = Some(e);
                }
            }
            first_err.map_or(Ok(()), Err)
        });
        match r {
            Ok(()) => 0,
            Err(e) => {
                log::error(py, &format!("get_batch_transfer_status: {e}"));
                -1
            }
        }
    }

    /// One asynchronous write; a batch id for `transfer_check_status`, or 0
    /// (the reference's failure sentinel, e.g. for an unknown peer).
    fn transfer_submit_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: usize,
        peer_buffer_address: u64,
        length: usize,
    ) -> i64 {
        match self.submit_batch(
            py,
            Job::one(
                "transfer_submit_write",
                target_hostname,
                Opcode::Write,
                buffer,
                peer_buffer_address,
                length,
            ),
        ) {
            0 => 0,
            id => i64::try_from(id).unwrap_or(0),
        }
    }

    /// 1 completed, 0 in flight, -1 failed, -2 timed out (the batch is freed
    /// once it completed or failed).
    fn transfer_check_status(&self, batch_id: u64) -> i32 {
        let Some(a) = self.active() else { return -1 };
        match a.engine.status(batch_id, 0) {
            Ok(TransferStatus::Completed) => {
                let _ = a.engine.free_batch(batch_id);
                1
            }
            Ok(TransferStatus::Failed(_)) | Err(_) => {
                let _ = a.engine.free_batch(batch_id);
                -1
            }
            Ok(TransferStatus::Timeout) => -2,
            Ok(_) => 0,
        }
    }
}

/// GPU memory: the reference's `*_on_cuda` transfers (the topology report
/// is in `probe.rs`). A `*_on_cuda` call is ordered after the work already queued on
/// `stream` (torch's `stream.cuda_stream`; 0 = default stream) and completes
/// before it returns, so work queued on the stream afterwards sees the
/// transferred bytes. (The reference enqueues a host callback instead; the
/// ordering the caller observes is the same, ours blocks the calling thread.)
#[pymethods]
impl PyTransferEngine {
    #[pyo3(signature = (target_hostname, buffer, peer_buffer_address, length, stream = 0))]
    fn transfer_write_on_cuda(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: usize,
        peer_buffer_address: u64,
        length: usize,
        stream: usize,
    ) -> i32 {
        self.on_cuda(
            py,
            stream,
            Job::one(
                "transfer_write_on_cuda",
                target_hostname,
                Opcode::Write,
                buffer,
                peer_buffer_address,
                length,
            ),
        )
    }

    #[pyo3(signature = (target_hostname, buffer, peer_buffer_address, length, stream = 0))]
    fn transfer_read_on_cuda(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: usize,
        peer_buffer_address: u64,
        length: usize,
        stream: usize,
    ) -> i32 {
        self.on_cuda(
            py,
            stream,
            Job::one(
                "transfer_read_on_cuda",
                target_hostname,
                Opcode::Read,
                buffer,
                peer_buffer_address,
                length,
            ),
        )
    }

    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, stream = 0))]
    fn batch_transfer_write_on_cuda(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<usize>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<usize>,
        stream: usize,
    ) -> i32 {
        self.on_cuda(
            py,
            stream,
            Job::many(
                "batch_transfer_write_on_cuda",
                target_hostname,
                Opcode::Write,
                buffers,
                peer_buffer_addresses,
                lengths,
            ),
        )
    }

    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, stream = 0))]
    fn batch_transfer_read_on_cuda(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<usize>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<usize>,
        stream: usize,
    ) -> i32 {
        self.on_cuda(
            py,
            stream,
            Job::many(
                "batch_transfer_read_on_cuda",
                target_hostname,
                Opcode::Read,
                buffers,
                peer_buffer_addresses,
                lengths,
            ),
        )
    }
}

impl PyTransferEngine {
    /// Wait for `stream`, then run `job` to completion (0, or -1).
    fn on_cuda(&self, py: Python<'_>, stream: usize, job: Job<'_>) -> i32 {
        let e = match mooncake_transfer::cuda::engine() {
            Ok(e) => e,
            Err(why) => {
                log::error(py, &format!("{}: {why}", job.what));
                return -1;
            }
        };
        let device = job
            .locals
            .first()
            .and_then(|&a| match e.classify(a) {
                mooncake_transfer::cuda::PointerKind::Device(d)
                | mooncake_transfer::cuda::PointerKind::Managed(d) => Some(d),
                _ => None,
            })
            .unwrap_or(0);
        if let Err(err) = py.allow_threads(|| e.synchronize_stream(stream, device)) {
            log::error(py, &format!("{}: waiting for the stream: {err}", job.what));
            return -1;
        }
        self.run_batch(py, job)
    }
}
