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

mod replicate;
mod setup;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::join_all;
use mooncake_store::client::{Client, ClientError, Region, CODE_INVALID_PARAMS, CODE_UNAVAILABLE};
use mooncake_store::{ErrorCode, ReplicateConfig};
use parking_lot::Mutex;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::log;
use crate::pybuf::PyBuf;
use crate::runtime::{block_on, runtime};
pub use replicate::{PyReplicateConfig, PySoftPinAction};
use setup::SetupArgs;

/// The reference's `UNAVAILABLE_IN_CURRENT_MODE`.
const CODE_UNAVAILABLE_IN_MODE: i64 = -1011;

/// Which zero-copy put a `many_from` call performs.
#[derive(Clone, Copy)]
struct FromOp {
    what: &'static str,
    upsert: bool,
}

/// The reference's `MooncakeDistributedStore`.
#[pyclass(name = "MooncakeDistributedStore", module = "mooncake.store", subclass)]
pub struct PyStore {
    client: Mutex<Option<Client>>,
    local_buffer_size: AtomicU64,
    /// Ranges registered through `register_buffer`: start -> length.
    buffers: Mutex<BTreeMap<usize, usize>>,
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

/// A size argument: an int, or a string such as "16MB" / "16 MB" / "1GiB".
fn size_arg(v: &Bound<'_, PyAny>, name: &str) -> Result<u64, String> {
    if let Ok(s) = v.downcast::<PyString>() {
        let s = s.to_cow().map_err(|e| e.to_string())?;
        return crate::size::parse_size(&s).map_err(|e| format!("{name}: {e}"));
    }
    v.extract::<u64>()
        .map_err(|_| format!("{name} must be a non-negative int or a size string, got {v}"))
}

impl PyStore {
    fn client(&self) -> Option<Client> {
        self.client.lock().clone()
    }

    /// The client, or the reference's "not set up" code (logged).
    fn ready(&self, py: Python<'_>, what: &str) -> Result<Client, i64> {
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

    fn put_value(
        &self,
        py: Python<'_>,
        what: &str,
        key: &str,
        value: &[u8],
        rc: &ReplicateConfig,
        upsert: bool,
    ) -> i64 {
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return code,
        };
        if !self.can_stage(py, what) {
            return i64::from(CODE_INVALID_PARAMS);
        }
        let r = block_on(py, async {
            if upsert {
                client.upsert(key, value, rc).await
            } else {
                client.put(key, value, rc).await
            }
        });
        if let Err(e) = &r {
            self.report(py, what, key, e);
        }
        if upsert {
            r.as_ref().map_or_else(code, |_| 0)
        } else {
            insert_code(&r)
        }
    }

    fn many_values(
        &self,
        py: Python<'_>,
        what: &str,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        rc: ReplicateConfig,
        upsert: bool,
    ) -> PyResult<i64> {
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        if keys.len() != values.len() {
            log::error(
                py,
                &format!("{what}: {} keys but {} values", keys.len(), values.len()),
            );
            return Ok(i64::from(CODE_INVALID_PARAMS));
        }
        if !self.can_stage(py, what) {
            return Ok(i64::from(CODE_INVALID_PARAMS));
        }
        let bufs = values
            .iter()
            .map(|v| PyBuf::get(v, false))
            .collect::<PyResult<Vec<_>>>()?;
        let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
        let results: Vec<Result<(), ClientError>> = block_on(py, async {
            if upsert {
                let futs = keys
                    .iter()
                    .zip(&slices)
                    .map(|(k, v)| client.upsert(k, v, &rc));
                join_all(futs).await
            } else {
                match client.batch_put(&keys, &slices, &rc).await {
                    Ok(v) => v,
                    Err(e) => vec![Err(e)],
                }
            }
        });
        for (i, r) in results.iter().enumerate() {
            let c = if upsert {
                r.as_ref().map_or_else(code, |_| 0)
            } else {
                insert_code(r)
            };
            if c != 0 {
                if let Err(e) = r {
                    self.report(py, what, keys.get(i).map_or("", |k| k.as_str()), e);
                }
                return Ok(c);
            }
        }
        Ok(0)
    }

    /// put_from/upsert_from on many keys; one code per key.
    fn many_from(
        &self,
        py: Python<'_>,
        op: FromOp,
        keys: Vec<String>,
        ptrs: Vec<usize>,
        sizes: Vec<usize>,
        rc: ReplicateConfig,
    ) -> Vec<i64> {
        let FromOp { what, upsert } = op;
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if keys.len() != ptrs.len() || keys.len() != sizes.len() {
            log::error(
                py,
                &format!("{what}: keys, buffer_ptrs and sizes differ in length"),
            );
            return vec![i64::from(CODE_INVALID_PARAMS); keys.len()];
        }
        let mut out = vec![i64::from(CODE_INVALID_PARAMS); keys.len()];
        let mut idx = Vec::with_capacity(keys.len());
        let mut ks = Vec::with_capacity(keys.len());
        let mut regions = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            match self.region(ptrs[i], sizes[i]) {
                Some(r) => {
                    idx.push(i);
                    ks.push(k.clone());
                    regions.push(r);
                }
                None => log::error(
                    py,
                    &format!(
                        "{what}({k}): buffer {:#x}+{} is not registered",
                        ptrs[i], sizes[i]
                    ),
                ),
            }
        }
        let results: Result<Vec<Result<(), ClientError>>, ClientError> = block_on(py, async {
            if upsert {
                let futs = ks.iter().zip(&regions).map(|(k, r)| {
                    // SAFETY: `r` is inside registered caller memory (checked
                    // by `region`), readable for its whole length.
                    let data =
                        unsafe { std::slice::from_raw_parts(r.addr() as *const u8, r.len()) };
                    client.upsert(k, data, &rc)
                });
                Ok(join_all(futs).await)
            } else {
                client.batch_put_from(&ks, &regions, &rc).await
            }
        });
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                log::error(py, &format!("{what}: {e}"));
                for &i in &idx {
                    out[i] = code(&e);
                }
                return out;
            }
        };
        for (j, r) in results.iter().enumerate() {
            let Some(&i) = idx.get(j) else { break };
            out[i] = if upsert {
                r.as_ref().map_or_else(code, |_| 0)
            } else {
                insert_code(r)
            };
            if let Err(e) = r {
                self.report(py, what, &keys[i], e);
            }
        }
        out
    }

    fn joined_parts(parts: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<Vec<u8>> {
        let bufs = parts
            .iter()
            .map(|p| PyBuf::get(&p, false).map(|b| b.as_slice().to_vec()))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(bufs.concat())
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
        }
    }

    /// Connect to the master, start the Transfer Engine, mount
    /// `global_segment_size` bytes and allocate the staging buffer.
    /// 0 on success, a negative code on failure. (The dict and
    /// environment forms are handled by `mooncake.store`.)
    #[pyo3(signature = (local_hostname, metadata_server, global_segment_size = None, local_buffer_size = None,
        protocol = "tcp", rdma_devices = "", master_server_addr = "127.0.0.1:50051", engine = None,
        enable_ssd_offload = false, ssd_offload_path = "", tenant_id = "default",
        enable_client_http_server = false, client_http_port = 9300))]
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
        let cfg = match setup::client_config(&args) {
            Ok(c) => c,
            Err(e) => {
                log::error(py, &format!("setup: {e}"));
                return i64::from(CODE_INVALID_PARAMS);
            }
        };
        let r = block_on(py, async move {
            match runtime().spawn(Client::connect(cfg)).await {
                Ok(r) => r,
                Err(e) => Err(ClientError::Setup(e.to_string())),
            }
        });
        match r {
            Ok(client) => {
                let old = self.client.lock().replace(client);
                self.local_buffer_size.store(local, Ordering::Relaxed);
                self.buffers.lock().clear();
                if let Some(old) = old {
                    let _ = block_on(py, async move { old.close().await });
                }
                0
            }
            Err(e) => {
                log::error(py, &format!("setup: {e}"));
                code(&e)
            }
        }
    }

    /// Attach to a local standalone client over IPC (the reference's "dummy"
    /// client). Not available in this implementation: returns -1011
    /// (UNAVAILABLE_IN_CURRENT_MODE); use `setup`.
    #[pyo3(signature = (mem_pool_size, local_buffer_size, server_address))]
    fn setup_dummy(
        &self,
        py: Python<'_>,
        mem_pool_size: u64,
        local_buffer_size: u64,
        server_address: &str,
    ) -> i64 {
        let _ = (mem_pool_size, local_buffer_size, server_address);
        log::error(
            py,
            "setup_dummy: IPC-attached dummy clients are not supported; call setup() instead",
        );
        CODE_UNAVAILABLE_IN_MODE
    }

    /// Store `value` (any bytes-like object) under `key`.
    #[pyo3(signature = (key, value, config = None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        let buf = PyBuf::get(value, false)
            .map_err(|_| PyTypeError::new_err("value must be a bytes-like object"))?;
        Ok(self.put_value(py, "put", key, buf.as_slice(), &replicate(config), false))
    }

    /// Store `value` under `key`, replacing an existing object.
    #[pyo3(signature = (key, value, config = None))]
    fn upsert(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        let buf = PyBuf::get(value, false)
            .map_err(|_| PyTypeError::new_err("value must be a bytes-like object"))?;
        Ok(self.put_value(py, "upsert", key, buf.as_slice(), &replicate(config), true))
    }

    /// Store the concatenation of `parts` under `key`.
    #[pyo3(signature = (key, *parts, config = None))]
    fn put_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &Bound<'_, pyo3::types::PyTuple>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        let data = Self::joined_parts(parts)?;
        Ok(self.put_value(py, "put_parts", key, &data, &replicate(config), false))
    }

    #[pyo3(signature = (key, *parts, config = None))]
    fn upsert_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &Bound<'_, pyo3::types::PyTuple>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        let data = Self::joined_parts(parts)?;
        Ok(self.put_value(py, "upsert_parts", key, &data, &replicate(config), true))
    }

    /// Put many values; 0 if all succeeded, else the first failure's code.
    #[pyo3(signature = (keys, values, config = None))]
    fn put_batch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        self.many_values(py, "put_batch", keys, values, replicate(config), false)
    }

    #[pyo3(signature = (keys, values, config = None))]
    fn upsert_batch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        self.many_values(py, "upsert_batch", keys, values, replicate(config), true)
    }

    /// The value of `key`; `b""` if it is missing (or on any failure).
    fn get<'py>(&self, py: Python<'py>, key: &str) -> Bound<'py, PyBytes> {
        let Ok(client) = self.ready(py, "get") else {
            return PyBytes::new(py, b"");
        };
        match block_on(py, async { client.get(key).await }) {
            Ok(v) => PyBytes::new(py, &v),
            Err(e) => {
                self.report(py, "get", key, &e);
                PyBytes::new(py, b"")
            }
        }
    }

    /// Values of `keys`, `b""` for each missing one.
    fn get_batch<'py>(&self, py: Python<'py>, keys: Vec<String>) -> Vec<Bound<'py, PyBytes>> {
        let Ok(client) = self.ready(py, "get_batch") else {
            return keys.iter().map(|_| PyBytes::new(py, b"")).collect();
        };
        let r = block_on(py, async { client.batch_get(&keys).await });
        match r {
            Ok(list) => list
                .into_iter()
                .zip(&keys)
                .map(|(r, k)| match r {
                    Ok(v) => PyBytes::new(py, &v),
                    Err(e) => {
                        self.report(py, "get_batch", k, &e);
                        PyBytes::new(py, b"")
                    }
                })
                .collect(),
            Err(e) => {
                log::error(py, &format!("get_batch: {e}"));
                keys.iter().map(|_| PyBytes::new(py, b"")).collect()
            }
        }
    }

    /// Store `size` bytes of registered memory at `buffer_ptr`, zero-copy.
    #[pyo3(signature = (key, buffer_ptr, size, config = None))]
    fn put_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: usize,
        size: usize,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> i64 {
        self.many_from(
            py,
            FromOp {
                what: "put_from",
                upsert: false,
            },
            vec![key.to_string()],
            vec![buffer_ptr],
            vec![size],
            replicate(config),
        )[0]
    }

    #[pyo3(signature = (key, buffer_ptr, size, config = None))]
    fn upsert_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: usize,
        size: usize,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> i64 {
        self.many_from(
            py,
            FromOp {
                what: "upsert_from",
                upsert: true,
            },
            vec![key.to_string()],
            vec![buffer_ptr],
            vec![size],
            replicate(config),
        )[0]
    }

    #[pyo3(signature = (keys, buffer_ptrs, sizes, config = None))]
    fn batch_put_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<usize>,
        sizes: Vec<usize>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> Vec<i64> {
        self.many_from(
            py,
            FromOp {
                what: "batch_put_from",
                upsert: false,
            },
            keys,
            buffer_ptrs,
            sizes,
            replicate(config),
        )
    }

    #[pyo3(signature = (keys, buffer_ptrs, sizes, config = None))]
    fn batch_upsert_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<usize>,
        sizes: Vec<usize>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> Vec<i64> {
        self.many_from(
            py,
            FromOp {
                what: "batch_upsert_from",
                upsert: true,
            },
            keys,
            buffer_ptrs,
            sizes,
            replicate(config),
        )
    }

    /// Read `key` into registered memory at `buffer_ptr` (room for `size`
    /// bytes), zero-copy: the object's size, or a negative code.
    fn get_into(&self, py: Python<'_>, key: &str, buffer_ptr: usize, size: usize) -> i64 {
        self.batch_get_into(py, vec![key.to_string()], vec![buffer_ptr], vec![size])[0]
    }

    fn batch_get_into(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<usize>,
        sizes: Vec<usize>,
    ) -> Vec<i64> {
        let what = "batch_get_into";
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if keys.len() != buffer_ptrs.len() || keys.len() != sizes.len() {
            log::error(
                py,
                &format!("{what}: keys, buffer_ptrs and sizes differ in length"),
            );
            return vec![i64::from(CODE_INVALID_PARAMS); keys.len()];
        }
        let mut out = vec![i64::from(CODE_INVALID_PARAMS); keys.len()];
        let mut idx = Vec::with_capacity(keys.len());
        let mut ks = Vec::with_capacity(keys.len());
        let mut regions = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            match self.region(buffer_ptrs[i], sizes[i]) {
                Some(r) => {
                    idx.push(i);
                    ks.push(k.clone());
                    regions.push(r);
                }
                None => log::error(
                    py,
                    &format!(
                        "{what}({k}): buffer {:#x}+{} is not registered",
                        buffer_ptrs[i], sizes[i]
                    ),
                ),
            }
        }
        if ks.is_empty() {
            return out;
        }
        let r = block_on(py, async { client.batch_get_into(&ks, &regions).await });
        match r {
            Ok(list) => {
                for (j, r) in list.into_iter().enumerate() {
                    let i = idx[j];
                    out[i] = match r {
                        Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
                        Err(e) => {
                            self.report(py, what, &keys[i], &e);
                            code(&e)
                        }
                    };
                }
            }
            Err(e) => {
                log::error(py, &format!("{what}: {e}"));
                for &i in &idx {
                    out[i] = code(&e);
                }
            }
        }
        out
    }

    /// 1 if `key` exists, 0 if not, a negative code on failure.
    fn is_exist(&self, py: Python<'_>, key: &str) -> i64 {
        self.batch_is_exist(py, vec![key.to_string()])[0]
    }

    fn batch_is_exist(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i64> {
        let client = match self.ready(py, "batch_is_exist") {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if keys.is_empty() {
            return Vec::new();
        }
        match block_on(py, async { client.batch_is_exist(&keys).await }) {
            Ok(list) => list
                .iter()
                .map(|r| match r {
                    Ok(true) => 1,
                    Ok(false) => 0,
                    Err(e) if e.is_not_found() => 0,
                    Err(_) => -1,
                })
                .collect(),
            Err(e) => {
                log::error(py, &format!("batch_is_exist: {e}"));
                vec![-1; keys.len()]
            }
        }
    }

    /// Size of the object in bytes, or a negative code.
    fn get_size(&self, py: Python<'_>, key: &str) -> i64 {
        let client = match self.ready(py, "get_size") {
            Ok(c) => c,
            Err(code) => return code,
        };
        match block_on(py, async { client.get_size(key).await }) {
            Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Err(e) => code(&e),
        }
    }

    /// Remove `key` (refused while a reader holds its lease unless `force`).
    #[pyo3(signature = (key, force = false))]
    fn remove(&self, py: Python<'_>, key: &str, force: bool) -> i64 {
        let client = match self.ready(py, "remove") {
            Ok(c) => c,
            Err(code) => return code,
        };
        match block_on(py, async { client.remove(key, force).await }) {
            Ok(()) => 0,
            Err(e) => code(&e),
        }
    }

    #[pyo3(signature = (keys, force = false))]
    fn batch_remove(&self, py: Python<'_>, keys: Vec<String>, force: bool) -> Vec<i64> {
        let client = match self.ready(py, "batch_remove") {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if keys.is_empty() {
            return Vec::new();
        }
        match block_on(py, async { client.batch_remove(&keys, force).await }) {
            Ok(list) => list
                .iter()
                .map(|r| r.as_ref().map_or_else(code, |_| 0))
                .collect(),
            Err(e) => vec![code(&e); keys.len()],
        }
    }

    /// Remove every key matching `regex_pattern`: how many were removed, or
    /// a negative code.
    #[pyo3(signature = (regex_pattern, force = false))]
    fn remove_by_regex(&self, py: Python<'_>, regex_pattern: &str, force: bool) -> i64 {
        let client = match self.ready(py, "remove_by_regex") {
            Ok(c) => c,
            Err(code) => return code,
        };
        match block_on(py, async {
            client.remove_by_regex(regex_pattern, force).await
        }) {
            Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Err(e) => {
                log::error(py, &format!("remove_by_regex({regex_pattern}): {e}"));
                code(&e)
            }
        }
    }

    #[pyo3(signature = (force = false))]
    fn remove_all(&self, py: Python<'_>, force: bool) -> i64 {
        let client = match self.ready(py, "remove_all") {
            Ok(c) => c,
            Err(code) => return code,
        };
        match block_on(py, async { client.remove_all(force).await }) {
            Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Err(e) => code(&e),
        }
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
