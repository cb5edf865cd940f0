//! Transfers of `TransferEngine`: sync, batch and async forms and status
//! polling. Every request list goes to one target segment; the engine checks
//! both ends against the registered buffers.

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

impl PyTransferEngine {
    fn run_batch(&self, py: Python<'_>, job: Job<'_>) -> i32 {
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
            return -1;
        };
        let r = block_on(py, async {
            let reqs =
                build_requests(&a.engine, target, opcode, &locals, &remotes, &lengths).await?;
            if reqs.is_empty() {
                return Ok(());
            }
            a.engine.transfer(&reqs).await
        });
        match r {
            Ok(()) => 0,
            Err(e) => {
                log::error(py, &format!("{what} to {target}: {e}"));
                -1
            }
        }
    }

    fn submit_batch(&self, py: Python<'_>, job: Job<'_>) -> u64 {
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
            return 0;
        };
        let r = block_on(py, async {
            let reqs =
                build_requests(&a.engine, target, opcode, &locals, &remotes, &lengths).await?;
            let batch = a.engine.allocate_batch(reqs.len().max(1))?;
            if let Err(e) = a.engine.submit(batch, &reqs) {
                let _ = a.engine.free_batch(batch);
                return Err(e);
            }
            Ok::<_, TransferError>(batch)
        });
        match r {
            Ok(id) => id,
            Err(e) => {
                log::error(py, &format!("{what} to {target}: {e}"));
                0
            }
        }
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
            Job {
                what: "transfer_sync_write",
                target: target_hostname,
                opcode: Opcode::Write,
                locals: vec![buffer],
                remotes: vec![peer_buffer_address],
                lengths: vec![length],
            },
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
            Job {
                what: "transfer_sync_read",
                target: target_hostname,
                opcode: Opcode::Read,
                locals: vec![buffer],
                remotes: vec![peer_buffer_address],
                lengths: vec![length],
            },
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
            Job {
                what: "transfer_sync",
                target: target_hostname,
                opcode: opcode.into(),
                locals: vec![buffer],
                remotes: vec![peer_buffer_address],
                lengths: vec![length],
            },
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
            Job {
                what: "batch_transfer_sync_write",
                target: target_hostname,
                opcode: Opcode::Write,
                locals: buffers,
                remotes: peer_buffer_addresses,
                lengths,
            },
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
            Job {
                what: "batch_transfer_sync_read",
                target: target_hostname,
                opcode: Opcode::Read,
                locals: buffers,
                remotes: peer_buffer_addresses,
                lengths,
            },
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
            Job {
                what: "batch_transfer_sync",
                target: target_hostname,
                opcode: opcode.into(),
                locals: buffers,
                remotes: peer_buffer_addresses,
                lengths,
            },
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
            Job {
                what: "batch_transfer_async_write",
                target: target_hostname,
                opcode: Opcode::Write,
                locals: buffers,
                remotes: peer_buffer_addresses,
                lengths,
            },
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
            Job {
                what: "batch_transfer_async_read",
                target: target_hostname,
                opcode: Opcode::Read,
                locals: buffers,
                remotes: peer_buffer_addresses,
                lengths,
            },
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
            Job {
                what: "batch_transfer_async",
                target: target_hostname,
                opcode: opcode.into(),
                locals: buffers,
                remotes: peer_buffer_addresses,
                lengths,
            },
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

    /// One asynchronous write; a batch id for `transfer_check_status`, or -1.
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
            Job {
                what: "transfer_submit_write",
                target: target_hostname,
                opcode: Opcode::Write,
                locals: vec![buffer],
                remotes: vec![peer_buffer_address],
                lengths: vec![length],
            },
        ) {
            0 => -1,
            id => i64::try_from(id).unwrap_or(-1),
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
