//! File segments through the engine: register a file with the engine's file
//! transport, publish its descriptor in the engine's metadata store, and
//! unpublish it on unregister (and on engine shutdown). The file transport
//! itself knows neither the engine nor metadata.

use std::path::Path;
use std::sync::Arc;

use mooncake_metadata::{segment_key, P2P_HANDSHAKE};

use super::TransferEngine;
use crate::transport::file::FileTransport;
use crate::{Protocol, SegmentHandle, TransferError};

impl TransferEngine {
    /// Register `path` (a file, created and sized to `len` with `create`, or a block
    /// device) as the segment `name` and publish its descriptor, so engines on this
    /// host can `open_segment(name)` and READ/WRITE it at file offsets
    /// `[0, len)`. Needs the `file` protocol enabled and a metadata service
    /// (embedded, http, etcd or redis; not the P2P handshake).
    pub async fn register_file_segment(
        &self,
        name: &str,
        path: &Path,
        len: Option<u64>,
        create: bool,
    ) -> Result<SegmentHandle, TransferError> {
        let transport = self.file_transport_or_err()?;
        if name == self.segment_name() {
            return Err(TransferError::InvalidConfig(format!(
                "a file segment cannot take the engine's own segment name {name:?}"
            )));
        }
        if self.config().metadata_server.trim() == P2P_HANDSHAKE {
            return Err(TransferError::InvalidConfig(
                "file segments are published in metadata; the P2P handshake mode has none".into(),
            ));
        }
        let desc = transport.register_file(name, path, len, create)?;
        let metadata = &self.shared.metadata;
        if let Err(e) = metadata.put(&segment_key(name), &desc.to_json()).await {
            let _ = transport.unregister_file(name);
            return Err(e.into());
        }
        self.shared.published_files.lock().insert(name.to_string());
        self.open_segment(name).await
    }

    /// Unpublish and close the file segment `name` registered by this engine.
    pub async fn unregister_file_segment(&self, name: &str) -> Result<(), TransferError> {
        let transport = self.file_transport_or_err()?;
        transport.unregister_file(name)?;
        if self.shared.published_files.lock().remove(name) {
            self.shared.metadata.delete(&segment_key(name)).await?;
        }
        Ok(())
    }

    /// The file transport, if the `file` protocol is enabled (for its
    /// file-specific API: `direct_io`, `sync`, `registered_files`).
    pub fn file_transport(&self) -> Option<Arc<FileTransport>> {
        self.shared.file.clone()
    }

    fn file_transport_or_err(&self) -> Result<Arc<FileTransport>, TransferError> {
        self.file_transport()
            .ok_or(TransferError::TransportUnavailable {
                protocol: Protocol::File,
                reason: "the `file` protocol is not enabled on this engine".into(),
            })
    }
}
