//! Where objects live: the native half of `get_replica_desc` /
//! `batch_get_replica_desc` (`mooncake.store` wraps the rows in
//! `ReplicaDescriptor` objects). Asking grants the objects a read lease, as
//! in the reference.

use pyo3::prelude::*;

use super::{code, PyStore};
use crate::runtime::block_on;

/// One piece of a replica: (segment, address, bytes).
type PieceRow = (String, u64, u64);

#[pymethods]
impl PyStore {
    /// Per key `(0, replicas)`, each replica a list of pieces
    /// `(segment, address, length)` in byte order, or `(code, [])` with a
    /// negative code (a missing key: OBJECT_NOT_FOUND; INVALID_PARAMS on a
    /// dummy client).
    fn _replica_lists(&self, py: Python<'_>, keys: Vec<String>) -> Vec<(i64, Vec<Vec<PieceRow>>)> {
        let client = match self.ready(py, "get_replica_desc") {
            Ok(c) => c,
            Err(code) => return vec![(code, Vec::new()); keys.len()],
        };
        match block_on(py, async { client.replica_lists(&keys).await }) {
            Ok(lists) => lists
                .into_iter()
                .map(|r| {
                    r.map(|replicas| {
                        replicas
                            .into_iter()
                            .map(|rep| {
                                rep.pieces
                                    .into_iter()
                                    .map(|p| (p.segment, p.addr, p.len))
                                    .collect()
                            })
                            .collect()
                    })
                    .map_or_else(|e| (code(&e), Vec::new()), |l| (0, l))
                })
                .collect(),
            Err(e) => vec![(code(&e), Vec::new()); keys.len()],
        }
    }
}
