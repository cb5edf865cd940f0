//! `mooncake.engine.TransferEngine`: the reference's Python Transfer Engine
//! API over [`mooncake_transfer::TransferEngine`].
//!
//! Conventions kept from the reference: methods return 0 on success and a
//! negative number on failure (async submissions return a non-zero batch id,
//! 0 on failure); `initialize` registers a managed pool whose first byte is
//! the segment's first buffer (`get_first_buffer_address`), from which
//! `allocate_managed_buffer` hands out pieces. Requests larger than a pool
//! can hold get a dedicated managed buffer.
//!
//! Safety boundary: addresses from Python are trusted only where the
//! reference trusts them (`register_memory` of caller memory, as its
//! contract). `write_bytes_to_buffer` / `read_bytes_from_buffer` only touch
//! memory inside a buffer registered through this object; transfers are
//! checked by the engine against its registry on both sides.
//!
//! Every blocking call releases the GIL.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mooncake_transfer::{
    ManagedBuffer, Opcode, Protocol, TransferEngine, TransferEngineConfig, TransferError,
    TransferRequest, TransferStatus,
};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::log;
use crate::pool::RangeAllocator;
use crate::pybuf::PyBuf;
use crate::runtime::{block_on, runtime};

/// Default size of the managed pool registered by `initialize`
/// (override: `MOONCAKE_ENGINE_POOL_SIZE`, bytes or "1GiB"; `PASS_ALLOC=1`
/// skips it, as the reference). Pages are only backed once touched.
const DEFAULT_POOL_SIZE: usize = 1 << 30;
/// Pool allocations are aligned to this many bytes.
const POOL_ALIGN: usize = 64;

/// The reference's `TransferOpcode` (`TransferEngine.TransferOpcode.Read`/`.Write`).
#[pyclass(eq, eq_int, name = "TransferOpcode", module = "mooncake.engine")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PyOpcode {
    Read = 0,
    Write = 1,
}

impl From<PyOpcode> for Opcode {
    fn from(o: PyOpcode) -> Opcode {
        match o {
            PyOpcode::Read => Opcode::Read,
            PyOpcode::Write => Opcode::Write,
        }
    }
}

/// An initialized engine and the memory this object registered with it.
struct Active {
    engine: Arc<TransferEngine>,
    pool: Option<ManagedBuffer>,
    alloc: Mutex<RangeAllocator>,
    /// Managed buffers too large for the pool, by address.
    dedicated: Mutex<HashMap<usize, ManagedBuffer>>,
    /// Every range registered through this object (pool, dedicated, caller
    /// memory): start -> length. Gates the raw byte accessors.
    regions: Mutex<BTreeMap<usize, usize>>,
}

impl Active {
    fn inside_region(&self, addr: usize, len: usize) -> bool {
        let regions = self.regions.lock();
        match regions.range(..=addr).next_back() {
            Some((&start, &rlen)) => addr.checked_add(len).is_some_and(|end| end <= start + rlen),
            None => false,
        }
    }

    fn shutdown(&self) {
        self.dedicated.lock().clear();
        let engine = Arc::clone(&self.engine);
        runtime().block_on(async move { engine.shutdown().await });
    }
}

/// The reference's `mooncake.engine.TransferEngine`.
#[pyclass(name = "TransferEngine", module = "mooncake.engine", subclass)]
pub struct PyTransferEngine {
    active: Mutex<Option<Arc<Active>>>,
}

fn pool_size_from_env() -> Result<usize, String> {
    if std::env::var("PASS_ALLOC")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|v| v != 0)
    {
        return Ok(0);
    }
    match std::env::var("MOONCAKE_ENGINE_POOL_SIZE") {
        Ok(v) if !v.trim().is_empty() => crate::size::parse_size(&v)
            .map(|n| n as usize)
            .map_err(|e| format!("MOONCAKE_ENGINE_POOL_SIZE: {e}")),
        _ => Ok(DEFAULT_POOL_SIZE),
    }
}

/// The metadata connection string for `initialize_ext`'s (server, type) pair.
fn conn_string(metadata_server: &str, metadata_type: &str) -> String {
    let s = metadata_server.trim();
    if s == "P2PHANDSHAKE" || s.contains("://") || metadata_type.trim().is_empty() {
        s.to_string()
    } else {
        format!("{}://{s}", metadata_type.trim())
    }
}

/// Engine protocols for the reference's `protocol` argument. Same-host
/// peers always share memory (shm) besides the named transport.
fn protocols_for(protocol: &str) -> Result<Vec<Protocol>, TransferError> {
    let mut list = Protocol::parse_list(protocol)?;
    if list.is_empty() {
        list.push(Protocol::Tcp);
    }
    if list.contains(&Protocol::Tcp) && !list.contains(&Protocol::Shm) {
        list.push(Protocol::Shm);
    }
    Ok(list)
}

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
    fn active(&self) -> Option<Arc<Active>> {
        self.active.lock().clone()
    }

    fn init_inner(
        &self,
        py: Python<'_>,
        local_hostname: &str,
        conn: String,
        protocol: &str,
    ) -> Result<(), String> {
        let mut cfg = TransferEngineConfig::default();
        cfg.apply_env().map_err(|e| e.to_string())?;
        cfg.local_hostname = local_hostname.trim().to_string();
        cfg.metadata_server = conn;
        cfg.protocols = protocols_for(protocol).map_err(|e| e.to_string())?;
        let pool_size = pool_size_from_env()?;
        let (engine, pool) = block_on(py, async move {
            let engine = runtime()
                .spawn(TransferEngine::start(cfg))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let pool = if pool_size > 0 {
                match engine.allocate_managed_buffer(pool_size).await {
                    Ok(b) => Some(b),
                    Err(e) => {
                        engine.shutdown().await;
                        return Err(format!("managed pool of {pool_size} bytes: {e}"));
                    }
                }
            } else {
                None
            };
            Ok::<_, String>((engine, pool))
        })?;
        let mut regions = BTreeMap::new();
        if let Some(p) = &pool {
            regions.insert(p.addr(), p.len());
        }
        let active = Active {
            engine,
            alloc: Mutex::new(RangeAllocator::new(
                pool.as_ref().map_or(0, |p| p.len()),
                POOL_ALIGN,
            )),
            pool,
            dedicated: Mutex::new(HashMap::new()),
            regions: Mutex::new(regions),
        };
        if let Some(old) = self.active.lock().replace(Arc::new(active)) {
            py.allow_threads(|| old.shutdown());
        }
        Ok(())
    }

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
    #[new]
    fn new() -> Self {
        PyTransferEngine {
            active: Mutex::new(None),
        }
    }

    #[classattr]
    #[allow(non_snake_case)]
    fn TransferOpcode(py: Python<'_>) -> Py<PyType> {
        py.get_type::<PyOpcode>().unbind()
    }

    /// Start the engine as segment `local_hostname` ("host" or "host:port")
    /// publishing to `metadata_server` ("http://..", "etcd://..", "host:port"
    /// = etcd, "redis://..", "P2PHANDSHAKE"). 0 on success, -1 on failure.
    #[pyo3(signature = (local_hostname, metadata_server, protocol = "tcp", device_name = ""))]
    fn initialize(
        &self,
        py: Python<'_>,
        local_hostname: &str,
        metadata_server: &str,
        protocol: &str,
        device_name: &str,
    ) -> i32 {
        let _ = device_name; // RDMA device filter: no RDMA NICs are driven yet.
        match self.init_inner(
            py,
            local_hostname,
            metadata_server.trim().to_string(),
            protocol,
        ) {
            Ok(()) => 0,
            Err(e) => {
                log::error(py, &format!("TransferEngine.initialize: {e}"));
                -1
            }
        }
    }

    /// `initialize` with the metadata backend named apart ("etcd", "redis",
    /// "http") for a `metadata_server` given without a scheme.
    #[pyo3(signature = (local_hostname, metadata_server, protocol, device_name, metadata_type))]
    fn initialize_ext(
        &self,
        py: Python<'_>,
        local_hostname: &str,
        metadata_server: &str,
        protocol: &str,
        device_name: &str,
        metadata_type: &str,
    ) -> i32 {
        let _ = device_name;
        let conn = conn_string(metadata_server, metadata_type);
        match self.init_inner(py, local_hostname, conn, protocol) {
            Ok(()) => 0,
            Err(e) => {
                log::error(py, &format!("TransferEngine.initialize_ext: {e}"));
                -1
            }
        }
    }

    /// The RPC port peers reach this engine on (-1 before `initialize`).
    fn get_rpc_port(&self) -> i32 {
        self.active().map_or(-1, |a| i32::from(a.engine.rpc_port()))
    }

    /// This engine's segment name ("host:port").
    fn get_local_segment_name(&self) -> Option<String> {
        self.active().map(|a| a.engine.segment_name().to_string())
    }

    /// Register caller memory `[buffer_addr, buffer_addr + capacity)` so peers
    /// can read and write it. The memory must stay valid until
    /// `unregister_memory` (the reference's contract).
    #[pyo3(signature = (buffer_addr, capacity, location = "*"))]
    fn register_memory(
        &self,
        py: Python<'_>,
        buffer_addr: usize,
        capacity: usize,
        location: &str,
    ) -> i32 {
        let Some(a) = self.active() else { return -1 };
        if buffer_addr == 0 || capacity == 0 {
            log::error(py, "register_memory: null address or zero capacity");
            return -1;
        }
        let loc = if location == "*" { "cpu:0" } else { location };
        // SAFETY: the Python caller promises (as with the reference) that the
        // range is valid, writable memory that lives until unregister_memory.
        let r = block_on(py, async {
            unsafe { a.engine.register_memory(buffer_addr, capacity, loc).await }
        });
        match r {
            Ok(()) => {
                a.regions.lock().insert(buffer_addr, capacity);
                0
            }
            Err(e) => {
                log::error(
                    py,
                    &format!("register_memory({buffer_addr:#x}, {capacity}): {e}"),
                );
                -1
            }
        }
    }

    fn unregister_memory(&self, py: Python<'_>, buffer_addr: usize) -> i32 {
        let Some(a) = self.active() else { return -1 };
        match block_on(py, a.engine.unregister_memory(buffer_addr)) {
            Ok(()) => {
                a.regions.lock().remove(&buffer_addr);
                0
            }
            Err(e) => {
                log::error(py, &format!("unregister_memory({buffer_addr:#x}): {e}"));
                -1
            }
        }
    }

    /// Register several ranges; 0 if all succeeded, else -1 (those that
    /// succeeded stay registered, as the reference).
    fn batch_register_memory(
        &self,
        py: Python<'_>,
        buffer_addresses: Vec<usize>,
        capacities: Vec<usize>,
    ) -> i32 {
        if buffer_addresses.len() != capacities.len() {
            log::error(
                py,
                "batch_register_memory: addresses and capacities differ in length",
            );
            return -1;
        }
        let mut rc = 0;
        for (addr, cap) in buffer_addresses.into_iter().zip(capacities) {
            if self.register_memory(py, addr, cap, "*") != 0 {
                rc = -1;
            }
        }
        rc
    }

    fn batch_unregister_memory(&self, py: Python<'_>, buffer_addresses: Vec<usize>) -> i32 {
        let mut rc = 0;
        for addr in buffer_addresses {
            if self.unregister_memory(py, addr) != 0 {
                rc = -1;
            }
        }
        rc
    }

    /// A registered buffer of `length` bytes from the managed pool (or a
    /// dedicated one when the pool cannot hold it); 0 on failure.
    fn allocate_managed_buffer(&self, py: Python<'_>, length: usize) -> usize {
        let Some(a) = self.active() else { return 0 };
        if length == 0 {
            return 0;
        }
        if let Some(pool) = &a.pool {
            if let Some(off) = a.alloc.lock().alloc(length) {
                return pool.addr() + off;
            }
        }
        match block_on(py, a.engine.allocate_managed_buffer(length)) {
            Ok(buf) => {
                let addr = buf.addr();
                a.regions.lock().insert(addr, buf.len());
                a.dedicated.lock().insert(addr, buf);
                addr
            }
            Err(e) => {
                log::error(py, &format!("allocate_managed_buffer({length}): {e}"));
                0
            }
        }
    }

    /// Give back a buffer from `allocate_managed_buffer`; 0, or -1 if
    /// `buffer_addr` is not one.
    #[pyo3(signature = (buffer_addr, length = 0))]
    fn free_managed_buffer(&self, py: Python<'_>, buffer_addr: usize, length: usize) -> i32 {
        let _ = length;
        let Some(a) = self.active() else { return -1 };
        if let Some(pool) = &a.pool {
            if buffer_addr >= pool.addr() && buffer_addr < pool.addr() + pool.len() {
                return if a.alloc.lock().free(buffer_addr - pool.addr()) {
                    0
                } else {
                    -1
                };
            }
        }
        let buf = a.dedicated.lock().remove(&buffer_addr);
        match buf {
            Some(buf) => {
                a.regions.lock().remove(&buffer_addr);
                // Dropping unregisters and unmaps once no transfer uses it.
                py.allow_threads(move || drop(buf));
                0
            }
            None => -1,
        }
    }

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

    /// Address of the first registered buffer of `segment_name` (this
    /// engine's own, or a peer's); 0 if unknown.
    fn get_first_buffer_address(&self, py: Python<'_>, segment_name: &str) -> u64 {
        let Some(a) = self.active() else { return 0 };
        if segment_name == a.engine.segment_name() {
            if let Some(p) = &a.pool {
                return p.addr() as u64;
            }
        }
        let r = block_on(py, async {
            let seg = a.engine.open_segment(segment_name).await?;
            Ok::<_, TransferError>(seg.descriptor().buffers.first().map(|b| b.addr))
        });
        match r {
            Ok(Some(addr)) => addr,
            Ok(None) => 0,
            Err(e) => {
                log::error(
                    py,
                    &format!("get_first_buffer_address({segment_name}): {e}"),
                );
                0
            }
        }
    }

    /// Copy `length` bytes of `src_data` (any bytes-like object) to
    /// `dest_address`, which must lie in memory registered through this
    /// engine. 0, or -1.
    fn write_bytes_to_buffer(
        &self,
        py: Python<'_>,
        dest_address: usize,
        src_data: &Bound<'_, PyAny>,
        length: usize,
    ) -> i32 {
        let Some(a) = self.active() else { return -1 };
        let Ok(src) = PyBuf::get(src_data, false) else {
            log::error(
                py,
                "write_bytes_to_buffer: source is not a bytes-like object",
            );
            return -1;
        };
        if length > src.len() || !a.inside_region(dest_address, length) {
            log::error(py, &format!("write_bytes_to_buffer: {dest_address:#x}+{length} outside registered memory or source"));
            return -1;
        }
        let data = &src.as_slice()[..length];
        // SAFETY: the destination range lies inside a buffer registered through
        // this engine (checked above), which is valid writable memory.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dest_address as *mut u8, length) };
        0
    }

    /// `length` bytes at `source_address` (inside memory registered through
    /// this engine) as `bytes`.
    fn read_bytes_from_buffer<'py>(
        &self,
        py: Python<'py>,
        source_address: usize,
        length: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let Some(a) = self.active() else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "engine not initialized",
            ));
        };
        if !a.inside_region(source_address, length) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "{source_address:#x}+{length} is outside memory registered through this engine"
            )));
        }
        PyBytes::new_with(py, length, |out| {
            // SAFETY: the source range lies inside registered memory (checked).
            unsafe {
                std::ptr::copy_nonoverlapping(source_address as *const u8, out.as_mut_ptr(), length)
            };
            Ok(())
        })
    }

    /// Stop serving and unpublish the segment (also done when the object is
    /// collected). Idempotent.
    fn shutdown(&self, py: Python<'_>) {
        if let Some(a) = self.active.lock().take() {
            py.allow_threads(|| a.shutdown());
        }
    }
}

impl Drop for PyTransferEngine {
    fn drop(&mut self) {
        if let Some(a) = self.active.get_mut().take() {
            a.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        assert_eq!(
            conn_string("127.0.0.1:2379", "etcd"),
            "etcd://127.0.0.1:2379"
        );
        assert_eq!(
            conn_string("http://h:8080/metadata", "etcd"),
            "http://h:8080/metadata"
        );
        assert_eq!(conn_string("P2PHANDSHAKE", "etcd"), "P2PHANDSHAKE");
        assert_eq!(conn_string("h:6379", "redis"), "redis://h:6379");
    }

    #[test]
    fn protocol_lists() {
        assert_eq!(
            protocols_for("tcp").unwrap(),
            vec![Protocol::Tcp, Protocol::Shm]
        );
        assert_eq!(
            protocols_for("").unwrap(),
            vec![Protocol::Tcp, Protocol::Shm]
        );
        assert_eq!(protocols_for("shm").unwrap(), vec![Protocol::Shm]);
        assert!(protocols_for("carrier-pigeon").is_err());
    }
}
