//! Python extension module `mooncake._mooncake`, re-exported by the pure
//! Python package `mooncake` as `mooncake.engine` and `mooncake.store`.
//!
//! * [`engine`] — `TransferEngine`, `TransferOpcode` (Transfer Engine API);
//! * [`store`] — `MooncakeDistributedStore`, `ReplicateConfig`,
//!   `SoftPinAction` (Mooncake Store API);
//! * [`runtime`] — the shared tokio runtime blocking calls run on with the
//!   GIL released;
//! * [`pybuf`] — zero-copy access to buffer-protocol objects;
//! * [`metadata_server`] — `MetadataServer`, the Rust HTTP metadata server
//!   behind `mooncake.http_metadata_server`.
//!
//! Return conventions are the reference's: 0 or a byte count on success, a
//! negative code on failure; errors are also logged on the "mooncake" logger.

mod engine;
mod log;
mod metadata_server;
mod p2p;
mod pybuf;
mod runtime;
mod store;

use pyo3::prelude::*;

#[pymodule]
fn _mooncake(m: &Bound<'_, PyModule>) -> PyResult<()> {
    log::init_tracing();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<engine::PyTransferEngine>()?;
    m.add_class::<engine::PyOpcode>()?;
    m.add_class::<store::PyStore>()?;
    m.add_class::<store::PyReplicateConfig>()?;
    m.add_class::<store::PySoftPinAction>()?;
    m.add_class::<store::PyObjectDataType>()?;
    m.add_function(wrap_pyfunction!(store::parse_size, m)?)?;
    m.add_class::<p2p::PyP2pStore>()?;
    m.add_class::<metadata_server::PyMetadataServer>()?;
    Ok(())
}
