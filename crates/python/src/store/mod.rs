//! `mooncake.store.MooncakeDistributedStore`: the reference's Python store
//! API over [`mooncake_store::client::Client`].
//!
//! Conventions kept from the reference: 0 (or a byte count) on success, the
//! reference's negative error code on failure; `get` of a missing key gives
//! `b""`; `put` of a key that already exists succeeds without replacing it
//! (use `upsert` to replace); a client set up with `local_buffer_size = 0`
//! cannot put plain bytes (only `put_from` registered memory).
//!
//! Zero-copy paths (`put_from`, `get_into` and their batch forms) only accept
//! ranges inside a buffer registered through `register_buffer` on this
//! object, so the engine never touches memory it was not lent. Every blocking
//! call releases the GIL.
//!
//! Files: this one holds the class, setup and lifecycle; `values.rs` the
//! operations on plain bytes, `zero_copy.rs` those on registered memory,
//! `keys.rs` existence and removal, `multi.rs` objects over several buffers
//! (`*_multi_buffers`, get sessions), `ranges.rs` byte-range reads
//! (`get_into_ranges`), `replicate.rs` the config objects,
//! `setup.rs` the configuration building, `dummy.rs` the dummy-client mode
//! (`setup_dummy`) and the `Backend` every operation calls.

mod dummy;
mod keys;
mod multi;
mod put_session;
mod ranges;
mod replicas;
mod replicate;
mod setup;
mod values;
mod zero_copy;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use mooncake_store::client::{Client, ClientError, Region, CODE_INVALID_PARAMS, CODE_UNAVAILABLE};
use mooncake_store::{ErrorCode, ReplicateConfig};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::log;
use crate::runtime::{block_on, runtime};
use dummy::Backend;
pub use replicate::{PyObjectDataType, PyReplicateConfig, PySoftPinAction};
use setup::SetupArgs;

/// The reference's `MooncakeDistributedStore`.
#[pyclass(name = "MooncakeDistributedStore", module = "mooncake.store", subclass)]
pub struct PyStore {
    client: Mutex<Option<Backend>>,
    local_buffer_size: AtomicU64,
    /// Ranges registered through `register_buffer`: start -> length.
    buffers: Mutex<BTreeMap<usize, usize>>,
    /// Keys of open get sessions (`batch_get_session_start`) -> object size.
    get_sessions: Mutex<HashMap<String, u64>>,
    /// Started puts (`batch_put_session_start`) by key.
    put_sessions: Mutex<HashMap<String, mooncake_store::client::PutSession>>,
}

fn code(e: &ClientError) -> i64 {
    i64::from(e.code())
}

/// An insert's result as the reference reports it: an existing key is a
/// success (the object stays as it was).
fn insert_code(r: &Result<(), ClientError>) -> i64 {
    match r {
        Ok(()) => 0,
        Err(ClientError::Master(ErrorCode::ObjectAlreadyExists)) => 0,
        Err(e) => code(e),
    }
}

fn replicate(config: Option<PyRef<'_, PyReplicateConfig>>) -> ReplicateConfig {
    config.map(|c| c.to_store()).unwrap_or_default()
}

/// The reference's master refuses a soft-pin TTL without
/// `soft_pin_action = ENABLE` (INVALID_PARAMS); logged here.
fn pin_conflict(py: Python<'_>, what: &str, rc: &ReplicateConfig) -> bool {
    let bad = !rc.with_soft_pin && rc.soft_pin_ttl_ms != 0;
    if bad {
        log::error(
            py,
            &format!("{what}: soft_pin_ttl_ms needs soft_pin_action = ENABLE"),
        );
    }
    bad
}

/// A size argument: an int, or a string such as "16MB" / "16 MB" / "1GiB".
fn size_arg(v: &Bound<'_, PyAny>, name: &str) -> Result<u64, String> {
    if let Ok(s) = v.downcast::<PyString>() {
        let s = s.to_cow().map_err(|e| e.to_string())?;
        return mooncake_config::parse_size(&s).map_err(|e| format!("{name}: {e}"));
    }
    v.extract::<u64>()
        .map_err(|_| format!("{name} must be a non-negative int or a size string, got {v}"))
}

impl PyStore {
    fn client(&self) -> Option<Backend> {
        self.client.lock().clone()
    }

    /// The client, or the reference's "not set up" code (logged).
    fn ready(&self, py: Python<'_>, what: &str) -> Result<Backend, i64> {
        self.client().ok_or_else(|| {
            log::error(
                py,
                &format!("{what}: store is not set up (call setup first)"),
            );
            i64::from(CODE_UNAVAILABLE)
        })
    }

    /// Whether `[addr, addr + len)` lies inside one registered buffer.
    fn registered(&self, addr: usize, len: usize) -> bool {
        let b = self.buffers.lock();
        match b.range(..=addr).next_back() {
            Some((&start, &blen)) => addr.checked_add(len).is_some_and(|e| e <= start + blen),
            None => false,
        }
    }

    /// A region for caller memory, if registered here.
    fn region(&self, addr: usize, len: usize) -> Option<Region<'static>> {
        if addr == 0 || !self.registered(addr, len) {
            return None;
        }
        // SAFETY: the range lies inside a buffer registered with this client's
        // engine through `register_buffer`, whose caller promised (the
        // reference's contract) it stays valid until `unregister_buffer`.
        Some(unsafe { Region::from_raw(addr, len) })
    }

    /// Make `backend` this store's client (closing the previous one).
    fn install(&self, py: Python<'_>, backend: Backend, local_buffer_size: u64) {
        let old = self.client.lock().replace(backend);
        self.local_buffer_size
            .store(local_buffer_size, Ordering::Relaxed);
        self.buffers.lock().clear();
        self.get_sessions.lock().clear();
        self.put_sessions.lock().clear();
        if let Some(old) = old {
            let _ = block_on(py, async move { old.close().await });
        }
    }

    fn report(&self, py: Python<'_>, what: &str, key: &str, e: &ClientError) {
        let quiet =
            e.is_not_found() || matches!(e, ClientError::Master(ErrorCode::ObjectAlreadyExists));
        if !quiet {
            log::error(py, &format!("{what}({key}): {e}"));
        }
    }

    fn can_stage(&self, py: Python<'_>, what: &str) -> bool {
        if self.local_buffer_size.load(Ordering::Relaxed) == 0 {
            log::error(
                py,
                &format!("{what}: local_buffer_size is 0, so plain bytes cannot be staged; use put_from with a registered buffer"),
            );
            return false;
        }
        true
    }
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        _args: &Bound<'_, pyo3::types::PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> Self {
        PyStore {
            client: Mutex::new(None),
            local_buffer_size: AtomicU64::new(0),
            buffers: Mutex::new(BTreeMap::new()),
            get_sessions: Mutex::new(HashMap::new()),
            put_sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Connect to the master, start the Transfer Engine, mount
    /// `global_segment_size` bytes and allocate the staging buffer.
    /// 0 on success, a negative code on failure. (The dict and
    /// environment forms are handled by `mooncake.store`.)
    #[pyo3(signature = (local_hostname, metadata_server, global_segment_size = None, local_buffer_size = None,
        protocol = "tcp", rdma_devices = "", master_server_addr = "127.0.0.1:50051", engine = None,
        enable_ssd_offload = false, ssd_offload_path = "", tenant_id = "default",
        enable_client_http_server = false, client_http_port = 9300, cluster_token = None, insecure = false))]
    #[allow(clippy::too_many_arguments)]
    fn _setup_positional(
        &self,
        py: Python<'_>,
        local_hostname: &str,
        metadata_server: &str,
        global_segment_size: Option<&Bound<'_, PyAny>>,
        local_buffer_size: Option<&Bound<'_, PyAny>>,
        protocol: &str,
        rdma_devices: &str,
        master_server_addr: &str,
        engine: Option<&Bound<'_, PyAny>>,
        enable_ssd_offload: bool,
        ssd_offload_path: &str,
        tenant_id: &str,
        enable_client_http_server: bool,
        client_http_port: u16,
        cluster_token: Option<String>,
        insecure: bool,
    ) -> i64 {
        let _ = (rdma_devices, ssd_offload_path, tenant_id, client_http_port);
        if engine.is_some_and(|e| !e.is_none()) {
            log::error(py, "setup: sharing an external TransferEngine is not supported; the store starts its own");
        }
        if enable_ssd_offload || enable_client_http_server {
            log::error(
                py,
                "setup: SSD offload and the client HTTP server are not available; ignored",
            );
        }
        let size = |v: Option<&Bound<'_, PyAny>>, name: &str, default: u64| match v {
            None => Ok(default),
            Some(v) => size_arg(v, name),
        };
        let parsed = size(global_segment_size, "global_segment_size", 3200 << 20)
            .and_then(|g| size(local_buffer_size, "local_buffer_size", 512 << 20).map(|l| (g, l)));
        let (global, local) = match parsed {
            Ok(x) => x,
            Err(e) => {
                log::error(py, &format!("setup: {e}"));
                return i64::from(CODE_INVALID_PARAMS);
            }
        };
        let args = SetupArgs {
            local_hostname: local_hostname.to_string(),
            metadata_server: metadata_server.to_string(),
            global_segment_size: global,
            local_buffer_size: local,
            protocol: protocol.to_string(),
            master_server_addr: master_server_addr.to_string(),
        };
        if let Err(e) = setup::install_credential(cluster_token.as_deref(), insecure) {
            log::error(py, &format!("setup: {e}"));
            return i64::from(CODE_INVALID_PARAMS);
        }
        let cfg = match setup::client_config(&args) {
            Ok(c) => c,
            Err(e) => {
                log::error(py, &format!("setup: {e}"));
                return i64::from(CODE_INVALID_PARAMS);
            }
        };
        let r = dummy::on_runtime(py, Client::connect(cfg));
        match r {
            Ok(client) => {
                self.install(py, Backend::Real(client), local);
                0
            }
            Err(e) => {
                log::error(py, &format!("setup: {e}"));
                code(&e)
            }
        }
    }

    /// Attach to a local real client (`mooncake real-client`) at
    /// `server_address` as the reference's "dummy" client, with a shared
    /// pool of `mem_pool_size` bytes for zero-copy buffers
    /// (`alloc_from_mem_pool`). 0, or a negative code (RPC_FAIL when no real
    /// client answers there).
    #[pyo3(signature = (mem_pool_size, local_buffer_size, server_address))]
    fn setup_dummy(
        &self,
        py: Python<'_>,
        mem_pool_size: u64,
        local_buffer_size: u64,
        server_address: &str,
    ) -> i64 {
        self.setup_dummy_impl(py, mem_pool_size, local_buffer_size, server_address)
    }

    /// Register `[buffer_ptr, buffer_ptr + size)` for zero-copy operations.
    /// The memory must stay valid until `unregister_buffer`.
    fn register_buffer(&self, py: Python<'_>, buffer_ptr: usize, size: usize) -> i64 {
        let client = match self.ready(py, "register_buffer") {
            Ok(c) => c,
            Err(code) => return code,
        };
        if buffer_ptr == 0 || size == 0 {
            log::error(py, "register_buffer: null pointer or zero size");
            return i64::from(CODE_INVALID_PARAMS);
        }
        // SAFETY: the caller promises (the reference's contract) the range is
        // valid, writable memory until unregister_buffer.
        match block_on(py, async {
            unsafe { client.register_buffer(buffer_ptr, size).await }
        }) {
            Ok(()) => {
                self.buffers.lock().insert(buffer_ptr, size);
                0
            }
            Err(e) => {
                log::error(
                    py,
                    &format!("register_buffer({buffer_ptr:#x}, {size}): {e}"),
                );
                code(&e)
            }
        }
    }

    fn unregister_buffer(&self, py: Python<'_>, buffer_ptr: usize) -> i64 {
        let client = match self.ready(py, "unregister_buffer") {
            Ok(c) => c,
            Err(code) => return code,
        };
        match block_on(py, async { client.unregister_buffer(buffer_ptr).await }) {
            Ok(()) => {
                self.buffers.lock().remove(&buffer_ptr);
                0
            }
            Err(e) => {
                log::error(py, &format!("unregister_buffer({buffer_ptr:#x}): {e}"));
                code(&e)
            }
        }
    }

    /// The staging buffer's size given to setup (0: none), for `BufferPool`.
    fn _local_buffer_size(&self) -> u64 {
        match self.client() {
            Some(_) => self.local_buffer_size.load(Ordering::Relaxed),
            None => 0,
        }
    }

    /// This client's "host:port" (its Transfer Engine segment).
    fn get_hostname(&self) -> String {
        self.client()
            .map(|c| c.segment_name().to_string())
            .unwrap_or_default()
    }

    /// 0 healthy, 1 not set up or closed, 2 master unreachable.
    fn health_check(&self, py: Python<'_>) -> i32 {
        match self.client() {
            None => 1,
            Some(c) => block_on(py, async { c.health_check().await }),
        }
    }

    /// Unmount the segment, stop the engine; the object can be set up again.
    fn close(&self, py: Python<'_>) -> i64 {
        let Some(client) = self.client.lock().take() else {
            return 0;
        };
        self.buffers.lock().clear();
        match block_on(py, async { client.close().await }) {
            Ok(()) => 0,
            Err(e) => code(&e),
        }
    }
}

#[pymethods]
impl PyStore {
    /// `close` bounded to `timeout_s` (the interpreter-exit hook: a dead master
    /// must not hang the exit; it expires an unannounced client by itself).
    fn _close_bounded(&self, py: Python<'_>, timeout_s: f64) -> i64 {
        let Some(client) = self.client.lock().take() else {
            return 0;
        };
        self.buffers.lock().clear();
        let limit = std::time::Duration::from_secs_f64(timeout_s.clamp(0.0, 60.0));
        match block_on(py, async move {
            tokio::time::timeout(limit, client.close()).await
        }) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => code(&e),
            Err(_) => i64::from(CODE_UNAVAILABLE),
        }
    }
}

impl Drop for PyStore {
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            // Bounded: a dead master must not hang garbage collection or exit;
            // it expires an unannounced client by itself.
            runtime().block_on(async move {
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(2), client.close()).await;
            });
        }
    }
}

/// Parse a size string ("16MB", "16 MB", "1GiB") or int; ValueError otherwise.
#[pyfunction]
pub fn parse_size(v: &Bound<'_, PyAny>) -> PyResult<u64> {
    size_arg(v, "size").map_err(pyo3::exceptions::PyValueError::new_err)
}
