//! Peer checks and host facts of the reference's `TransferEngine`:
//! `send_probe` (SGLang's failed-session recovery asks whether a peer is back),
//! `get_local_topology`, and `warmup_efa_segment` (no EFA here: nothing to warm,
//! 0 as in the reference's build without EFA).

use pyo3::prelude::*;

use super::PyTransferEngine;
use crate::log;
use crate::runtime::block_on;

/// NUMA nodes of this host (`/sys/devices/system/node/node*`), `[0]` when the
/// kernel shows none.
fn numa_nodes() -> Vec<u32> {
    let mut nodes: Vec<u32> = std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    nodes.sort_unstable();
    if nodes.is_empty() {
        nodes.push(0);
    }
    nodes
}

#[pymethods]
impl PyTransferEngine {
    /// 0 when `peer_server_name`'s segment can be opened (its descriptor is
    /// published and readable), -1 otherwise (or before `initialize`).
    fn send_probe(&self, py: Python<'_>, peer_server_name: &str) -> i32 {
        let Some(a) = self.active() else { return -1 };
        let engine = a.engine.clone();
        match block_on(
            py,
            async move { engine.open_segment(peer_server_name).await },
        ) {
            Ok(_) => 0,
            Err(e) => {
                log::error(py, &format!("send_probe({peer_server_name}): {e}"));
                -1
            }
        }
    }

    /// The host's topology as the reference's JSON: one entry per location
    /// (`cpu:N` per NUMA node, `cuda:N` per GPU where the CUDA driver was
    /// found), each `[preferred NICs, available NICs]` (empty: no RDMA NIC is
    /// reported here yet).
    #[pyo3(signature = (device_name = None))]
    fn get_local_topology(&self, device_name: Option<&str>) -> String {
        let _ = device_name;
        let mut doc = serde_json::Map::new();
        for n in numa_nodes() {
            doc.insert(format!("cpu:{n}"), serde_json::json!([[], []]));
        }
        if let Ok(e) = mooncake_transfer::cuda::engine() {
            for d in 0..e.device_count() {
                doc.insert(format!("cuda:{d}"), serde_json::json!([[], []]));
            }
        }
        serde_json::Value::Object(doc).to_string()
    }

    fn warmup_efa_segment(&self, segment_name: &str) -> i32 {
        let _ = segment_name;
        0
    }
}
