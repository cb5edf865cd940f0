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
//! Every blocking call releases the GIL. Transfers are in `transfer.rs`,
//! registration, managed buffers and byte access in `memory.rs`.

mod memory;
mod probe;
mod transfer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mooncake_transfer::{
    ManagedBuffer, Opcode, Protocol, TransferEngine, TransferEngineConfig, TransferError,
};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::log;
use crate::runtime::{block_on, runtime};
use mooncake_transfer::range_alloc::RangeAllocator;

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
        Ok(v) if !v.trim().is_empty() => mooncake_config::parse_size(&v)
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

/// The credential keywords of `initialize` (`cluster_token`, `insecure`);
/// absent, the engine takes the credential from the environment.
struct PyAuth {
    cluster_token: Option<String>,
    insecure: bool,
}

impl PyAuth {
    fn apply(&self, cfg: &mut TransferEngineConfig) {
        if let Some(t) = &self.cluster_token {
            cfg.cluster_token = Some(t.clone());
        }
        cfg.insecure |= self.insecure;
    }
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
        device_name: &str,
        auth: &PyAuth,
    ) -> Result<(), String> {
        let mut cfg = TransferEngineConfig {
            rdma_devices: device_name
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect(),
            ..Default::default()
        };
        cfg.apply_env().map_err(|e| e.to_string())?;
        cfg.local_hostname = local_hostname.trim().to_string();
        cfg.metadata_server = conn;
        cfg.protocols = protocols_for(protocol).map_err(|e| e.to_string())?;
        auth.apply(&mut cfg);
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

    /// `init_inner` as the reference reports it: 0, or -1 after logging.
    #[allow(clippy::too_many_arguments)]
    fn init_status(
        &self,
        py: Python<'_>,
        what: &str,
        local_hostname: &str,
        conn: String,
        protocol: &str,
        device_name: &str,
        auth: &PyAuth,
    ) -> i32 {
        match self.init_inner(py, local_hostname, conn, protocol, device_name, auth) {
            Ok(()) => 0,
            Err(e) => {
                log::error(py, &format!("TransferEngine.{what}: {e}"));
                -1
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
    /// `cluster_token` (default: `MC_CLUSTER_TOKEN` /
    /// `MOONCAKE_CLUSTER_TOKEN_FILE`) is the credential peers prove;
    /// `insecure=True` runs without one (logged as a warning).
    #[pyo3(signature = (local_hostname, metadata_server, protocol = "tcp", device_name = "",
        *, cluster_token = None, insecure = false))]
    #[allow(clippy::too_many_arguments)]
    fn initialize(
        &self,
        py: Python<'_>,
        local_hostname: &str,
        metadata_server: &str,
        protocol: &str,
        device_name: &str,
        cluster_token: Option<String>,
        insecure: bool,
    ) -> i32 {
        let conn = metadata_server.trim().to_string();
        self.init_status(
            py,
            "initialize",
            local_hostname,
            conn,
            protocol,
            device_name,
            &PyAuth {
                cluster_token,
                insecure,
            },
        )
    }

    /// `initialize` with the metadata backend named apart ("etcd", "redis",
    /// "http") for a `metadata_server` given without a scheme.
    #[pyo3(signature = (local_hostname, metadata_server, protocol, device_name, metadata_type,
        *, cluster_token = None, insecure = false))]
    #[allow(clippy::too_many_arguments)]
    fn initialize_ext(
        &self,
        py: Python<'_>,
        local_hostname: &str,
        metadata_server: &str,
        protocol: &str,
        device_name: &str,
        metadata_type: &str,
        cluster_token: Option<String>,
        insecure: bool,
    ) -> i32 {
        let conn = conn_string(metadata_server, metadata_type);
        self.init_status(
            py,
            "initialize_ext",
            local_hostname,
            conn,
            protocol,
            device_name,
            &PyAuth {
                cluster_token,
                insecure,
            },
        )
    }

    /// The RPC port peers reach this engine on (-1 before `initialize`).
    fn get_rpc_port(&self) -> i32 {
        self.active().map_or(-1, |a| i32::from(a.engine.rpc_port()))
    }

    /// This engine's segment name ("host:port").
    fn get_local_segment_name(&self) -> Option<String> {
        self.active().map(|a| a.engine.segment_name().to_string())
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
