//! `mooncake.p2p.P2PStore`: the P2P store ([`mooncake_p2p`]) for Python.
//!
//! Buffers are buffer-protocol objects (numpy arrays, bytearrays,
//! memoryviews; the Python wrapper turns CPU torch tensors into numpy views)
//! or raw `(address, length)` pairs of caller memory. Each is registered with
//! this node's transfer engine for as long as the object is served, and the
//! Python objects are kept referenced until then (`delete_replica`,
//! `unregister`, `close`), so they cannot be freed under a transfer. Raw
//! pairs carry the reference's `register_memory` contract: valid until
//! withdrawn. Blocking calls release the GIL; results come back as JSON text
//! that the wrapper decodes; errors raise `KeyError` (unknown name),
//! `ValueError` (bad input) or `RuntimeError`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mooncake_p2p::{P2pConfig, P2pError, P2pStore, Region};
use mooncake_transfer::{Protocol, TransferEngine, TransferEngineConfig};
use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::pybuf::PyBuf;
use crate::runtime::{block_on, runtime};

/// What a served object pins: its Python objects and registered addresses.
type Held = (Vec<Py<PyAny>>, Vec<usize>);

struct Node {
    store: P2pStore,
    engine: Arc<TransferEngine>,
    /// Per served object: the Python objects kept alive and the addresses
    /// registered for them.
    held: Mutex<HashMap<String, Held>>,
}

#[pyclass(name = "P2PStore", module = "mooncake.p2p")]
pub struct PyP2pStore {
    node: Mutex<Option<Arc<Node>>>,
}

fn to_py(e: P2pError) -> PyErr {
    match e {
        P2pError::NotFound(_) => PyKeyError::new_err(e.to_string()),
        P2pError::InvalidName(..)
        | P2pError::InvalidArgument(_)
        | P2pError::BuffersTooSmall { .. }
        | P2pError::NotRegistered { .. }
        | P2pError::AlreadyRegistered(_)
        | P2pError::AlreadyServing(_)
        | P2pError::NotServing(_) => PyValueError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialisable")
}

impl PyP2pStore {
    fn node(&self) -> PyResult<Arc<Node>> {
        self.node
            .lock()
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("P2PStore is closed"))
    }
}

/// Address and length of each buffer, and the objects to keep alive.
fn regions_of(
    buffers: &[Bound<'_, PyAny>],
    writable: bool,
) -> PyResult<(Vec<Region>, Vec<Py<PyAny>>)> {
    let mut regions = Vec::new();
    let mut keep = Vec::new();
    for b in buffers {
        if let Ok((addr, len)) = b.extract::<(u64, u64)>() {
            regions.push(Region { addr, len });
        } else {
            let view = PyBuf::get(b, writable)?;
            regions.push(Region {
                addr: view.addr() as u64,
                len: view.len() as u64,
            });
        }
        keep.push(b.clone().unbind());
    }
    if regions.iter().any(|r| r.addr == 0 || r.len == 0) {
        return Err(PyValueError::new_err("empty buffer"));
    }
    Ok((regions, keep))
}

impl Node {
    /// Register `regions` with the engine; on failure none stay registered.
    async fn register_all(&self, regions: &[Region]) -> Result<Vec<usize>, P2pError> {
        let mut done = Vec::new();
        for r in regions {
            // SAFETY: the memory belongs to a Python object this node keeps
            // referenced until the range is unregistered (buffer-protocol
            // objects), or to caller memory under the reference's
            // register_memory contract (raw pairs).
            let res = unsafe {
                self.engine
                    .register_memory(r.addr as usize, r.len as usize, "cpu:0")
                    .await
            };
            if let Err(e) = res {
                self.unregister_all(&done).await;
                return Err(e.into());
            }
            done.push(r.addr as usize);
        }
        Ok(done)
    }

    async fn unregister_all(&self, addrs: &[usize]) {
        for &a in addrs {
            let _ = self.engine.unregister_memory(a).await;
        }
    }

    /// Forget the buffers held for `name`; returns the Python objects so they
    /// are dropped with the GIL held by the caller.
    async fn release(&self, name: &str) -> Option<Vec<Py<PyAny>>> {
        let held = self.held.lock().remove(name);
        let (objs, addrs) = held?;
        self.unregister_all(&addrs).await;
        Some(objs)
    }
}

#[pymethods]
impl PyP2pStore {
    /// Start a node: a transfer engine on `local_hostname` ("host" or
    /// "host:port") and the P2P store on `metadata_server` (etcd://..,
    /// redis://.., http://..).
    #[new]
    #[pyo3(signature = (metadata_server, local_hostname = "127.0.0.1", protocol = "tcp", ttl_s = 10.0))]
    fn new(
        py: Python<'_>,
        metadata_server: &str,
        local_hostname: &str,
        protocol: &str,
        ttl_s: f64,
    ) -> PyResult<Self> {
        let mut cfg = TransferEngineConfig::default();
        cfg.apply_env()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        cfg.local_hostname = local_hostname.to_string();
        cfg.metadata_server = metadata_server.to_string();
        cfg.protocols =
            Protocol::parse_list(protocol).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let ttl = Duration::try_from_secs_f64(ttl_s)
            .map_err(|e| PyValueError::new_err(format!("ttl_s: {e}")))?;
        let node = block_on(py, async move {
            runtime()
                .spawn(async move {
                    let engine = TransferEngine::start(cfg).await?;
                    let config = P2pConfig {
                        ttl,
                        ..Default::default()
                    };
                    match P2pStore::start(Arc::clone(&engine), config).await {
                        Ok(store) => Ok(Node {
                            store,
                            engine,
                            held: Mutex::new(HashMap::new()),
                        }),
                        Err(e) => {
                            engine.shutdown().await;
                            Err(e)
                        }
                    }
                })
                .await
                .map_err(|e| P2pError::InvalidArgument(e.to_string()))?
        })
        .map_err(to_py)?;
        Ok(Self {
            node: Mutex::new(Some(Arc::new(node))),
        })
    }

    /// This node's segment name (`host:port`).
    fn segment(&self) -> PyResult<String> {
        Ok(self.node()?.store.node().to_string())
    }

    /// Publish `buffers` (in order) as object `name`; JSON manifest summary.
    #[pyo3(signature = (name, buffers, max_shard_size = 64 << 20))]
    fn _register(
        &self,
        py: Python<'_>,
        name: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        max_shard_size: u64,
    ) -> PyResult<String> {
        let node = self.node()?;
        let (regions, keep) = regions_of(&buffers, false)?;
        let n2 = Arc::clone(&node);
        let name2 = name.to_string();
        let r = block_on(py, async move {
            let addrs = n2.register_all(&regions).await?;
            match n2.store.register(&name2, &regions, max_shard_size).await {
                Ok(m) => Ok((m, addrs)),
                Err(e) => {
                    n2.unregister_all(&addrs).await;
                    Err(e)
                }
            }
        });
        let (m, addrs) = r.map_err(to_py)?;
        node.held.lock().insert(name.to_string(), (keep, addrs));
        Ok(json(&serde_json::json!({
            "name": m.name, "size": m.size, "shards": m.shards.len(), "shard_size": m.shard_size,
        })))
    }

    /// Fetch object `name` into `buffers` (writable, in order); this node then
    /// serves it too. JSON report.
    fn _get_replica(
        &self,
        py: Python<'_>,
        name: &str,
        buffers: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let node = self.node()?;
        let (regions, keep) = regions_of(&buffers, true)?;
        let n2 = Arc::clone(&node);
        let name2 = name.to_string();
        let r = block_on(py, async move {
            let m = n2.store.manifest(&name2).await?;
            let room: u64 = regions.iter().map(|r| r.len).sum();
            if room < m.size {
                return Err(P2pError::BuffersTooSmall {
                    name: name2,
                    need: m.size,
                    have: room,
                });
            }
            let addrs = n2.register_all(&regions).await?;
            match n2.store.get_replica(&name2, &regions).await {
                Ok(rep) => Ok((rep, addrs)),
                Err(e) => {
                    n2.unregister_all(&addrs).await;
                    Err(e)
                }
            }
        });
        let (rep, addrs) = r.map_err(to_py)?;
        node.held.lock().insert(name.to_string(), (keep, addrs));
        Ok(json(&rep))
    }

    /// Stop serving this node's copy of `name`.
    fn delete_replica(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let node = self.node()?;
        let name2 = name.to_string();
        let objs = block_on(py, async move {
            node.store.delete_replica(&name2).await?;
            Ok::<_, P2pError>(node.release(&name2).await)
        })
        .map_err(to_py)?;
        drop(objs);
        Ok(())
    }

    /// Withdraw object `name` everywhere (manifest and holder records).
    fn unregister(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let node = self.node()?;
        let name2 = name.to_string();
        let objs = block_on(py, async move {
            node.store.unregister(&name2).await?;
            Ok::<_, P2pError>(node.release(&name2).await)
        })
        .map_err(to_py)?;
        drop(objs);
        Ok(())
    }

    /// Objects whose names start with `prefix`, as JSON.
    #[pyo3(signature = (prefix = ""))]
    fn _list(&self, py: Python<'_>, prefix: &str) -> PyResult<String> {
        let node = self.node()?;
        let prefix = prefix.to_string();
        let list = block_on(py, async move { node.store.list(&prefix).await }).map_err(to_py)?;
        Ok(json(&list))
    }

    /// Withdraw every record of this node and stop its engine. Idempotent.
    fn close(&self, py: Python<'_>) {
        let Some(node) = self.node.lock().take() else {
            return;
        };
        let objs = block_on(py, async move {
            node.store.shutdown().await;
            let names: Vec<String> = node.held.lock().keys().cloned().collect();
            let mut objs = Vec::new();
            for n in names {
                objs.extend(node.release(&n).await.unwrap_or_default());
            }
            node.engine.shutdown().await;
            objs
        });
        drop(objs);
    }
}

impl Drop for PyP2pStore {
    fn drop(&mut self) {
        if let Some(node) = self.node.lock().take() {
            runtime().spawn(async move {
                node.store.shutdown().await;
                node.engine.shutdown().await;
            });
        }
    }
}
