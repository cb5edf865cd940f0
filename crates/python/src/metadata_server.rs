//! `mooncake._mooncake.MetadataServer`: the Rust HTTP metadata server
//! (`mooncake_metadata::http::server`) for `mooncake.http_metadata_server`.
//!
//! The Python module keeps only its public names and CLI; the protocol
//! (key rules, revisions, prefix listing) and the serving are the one Rust
//! implementation, the same that `mooncake metadata-server` and the master's
//! `--enable_http_metadata_server` run. Serving happens on the module's
//! tokio runtime ([`crate::runtime`]), not on a Python thread.

use std::time::Duration;

use mooncake_metadata::http::server::{MetadataServer, MetadataService};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::runtime::{block_on, runtime};

/// How long `stop` lets in-flight requests finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A metadata table, served over HTTP between `start` and `stop`.
#[pyclass(name = "MetadataServer", module = "mooncake._mooncake")]
pub struct PyMetadataServer {
    service: MetadataService,
    server: Option<MetadataServer>,
}

#[pymethods]
impl PyMetadataServer {
    /// An empty table. `rpc_meta_write_once`: a present `rpc_meta` key may
    /// only be re-published unchanged (the reference's standalone server).
    #[new]
    #[pyo3(signature = (rpc_meta_write_once = true))]
    fn new(rpc_meta_write_once: bool) -> Self {
        Self {
            service: MetadataService::new().rpc_meta_write_once(rpc_meta_write_once),
            server: None,
        }
    }

    /// Binds `host:port` (port 0 picks a free one) and serves the table;
    /// returns the bound port.
    fn start(&mut self, py: Python<'_>, host: &str, port: u16) -> PyResult<u16> {
        if let Some(s) = &self.server {
            return Ok(s.local_addr().port());
        }
        let service = self.service.clone();
        let addr = format!("{host}:{port}");
        let server = block_on(py, async move {
            // Spawned on the module's runtime, so it outlives this call.
            runtime()
                .spawn(async move { MetadataServer::bind_with(addr, service).await })
                .await
                .map_err(std::io::Error::other)?
        })
        .map_err(|e| PyOSError::new_err(format!("cannot serve metadata on {host}:{port}: {e}")))?;
        let port = server.local_addr().port();
        self.server = Some(server);
        Ok(port)
    }

    /// Stops serving (in-flight requests get up to 2 s); the table stays.
    fn stop(&mut self, py: Python<'_>) {
        if let Some(server) = self.server.take() {
            let _ = block_on(py, async move {
                tokio::time::timeout(STOP_TIMEOUT, server.shutdown()).await
            });
        }
    }

    /// Whether it is serving.
    fn serving(&self) -> bool {
        self.server.is_some()
    }

    /// One request through the protocol core, without sockets:
    /// `(status, body, content_type)`.
    #[pyo3(signature = (method, key, body, prefix = None))]
    fn handle<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        key: Option<&str>,
        body: &[u8],
        prefix: Option<&str>,
    ) -> (u16, Bound<'py, PyBytes>, &'static str) {
        let a = self.service.apply(
            &method.to_ascii_uppercase(),
            key,
            prefix,
            bytes::Bytes::copy_from_slice(body),
        );
        (a.status, PyBytes::new(py, &a.body), a.content_type)
    }

    /// A snapshot of the table: `{key: value}`.
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.service.entries() {
            d.set_item(k, PyBytes::new(py, &v))?;
        }
        Ok(d)
    }

    /// The table's revision.
    #[getter]
    fn revision(&self) -> u64 {
        self.service.revision()
    }
}
