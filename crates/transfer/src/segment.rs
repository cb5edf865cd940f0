//! Peer segment handles and the descriptor cache.
//!
//! `open_segment(name)` resolves a descriptor once and hands out a cheap
//! [`SegmentHandle`]. The cache stays fresh three ways:
//! - a metadata watch on `mooncake/ram/` replaces descriptors on change and
//!   clears them on delete (not in P2P mode, which has no shared store);
//! - a transfer that finds the peer unreachable marks the entry stale, and
//!   the next use re-fetches (this is how P2P mode notices restarts);
//! - a cleared entry is re-fetched on next use.
//!
//! Invariant: a handle never dangles — it names a segment, and each slice
//! reads the entry's current descriptor at execution time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mooncake_metadata::{segment_key, SharedMetadata, WatchEvent, SEGMENT_KEY_PREFIX};
use parking_lot::{Mutex, RwLock};

use crate::descriptor::SegmentDescriptor;
use crate::transport::tcp::client::fetch_descriptor;
use crate::TransferError;

#[derive(Debug)]
struct Entry {
    name: String,
    descriptor: RwLock<Option<Arc<SegmentDescriptor>>>,
}

/// A resolved peer segment. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SegmentHandle {
    entry: Arc<Entry>,
}

impl SegmentHandle {
    /// The segment name (`host:port`).
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The descriptor currently cached, if any.
    pub fn descriptor(&self) -> Option<Arc<SegmentDescriptor>> {
        self.entry.descriptor.read().clone()
    }
}

impl PartialEq for SegmentHandle {
    fn eq(&self, other: &Self) -> bool {
        self.entry.name == other.entry.name
    }
}

/// How descriptors are fetched.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Metadata(SharedMetadata),
    /// P2P handshake: ask the peer at `host:port` itself.
    P2p {
        token: Option<String>,
        connect_timeout: Duration,
    },
}

#[derive(Debug)]
pub(crate) struct SegmentCache {
    source: Source,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl SegmentCache {
    pub fn new(source: Source) -> Self {
        SegmentCache {
            source,
            entries: Mutex::new(HashMap::new()),
        }
    }

    async fn fetch(&self, name: &str) -> Result<Arc<SegmentDescriptor>, TransferError> {
        let desc = match &self.source {
            Source::Metadata(m) => {
                let bytes = m
                    .get(&segment_key(name))
                    .await?
                    .ok_or_else(|| TransferError::UnknownSegment(name.to_string()))?;
                SegmentDescriptor::from_json(name, &bytes)?
            }
            Source::P2p {
                token,
                connect_timeout,
            } => {
                let (host, port) = split_host_port(name).ok_or_else(|| {
                    TransferError::UnknownSegment(format!(
                        "{name} (P2P handshake mode needs segment names of the form host:port)"
                    ))
                })?;
                fetch_descriptor(name, &host, port, token.as_deref(), *connect_timeout).await?
            }
        };
        Ok(Arc::new(desc))
    }

    /// Resolve `name`, fetching if it is not cached.
    pub async fn open(&self, name: &str) -> Result<SegmentHandle, TransferError> {
        let entry = {
            let mut entries = self.entries.lock();
            Arc::clone(entries.entry(name.to_string()).or_insert_with(|| {
                Arc::new(Entry {
                    name: name.to_string(),
                    descriptor: RwLock::new(None),
                })
            }))
        };
        let handle = SegmentHandle { entry };
        self.current(&handle).await?;
        Ok(handle)
    }

    /// The handle's descriptor, fetching it if cleared or stale.
    pub async fn current(
        &self,
        handle: &SegmentHandle,
    ) -> Result<Arc<SegmentDescriptor>, TransferError> {
        if let Some(d) = handle.descriptor() {
            return Ok(d);
        }
        let fresh = self.fetch(handle.name()).await?;
        *handle.entry.descriptor.write() = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Forget the cached descriptor of `name` (peer unreachable or deleted).
    pub fn invalidate(&self, name: &str) {
        if let Some(e) = self.entries.lock().get(name) {
            *e.descriptor.write() = None;
        }
    }

    /// Apply one metadata change. Returns the segment name whose descriptor
    /// changed identity (new epoch or deleted), so transports can drop state.
    pub fn apply(&self, event: &WatchEvent) -> Option<String> {
        let (key, value) = match event {
            WatchEvent::Put { key, value } => (key, Some(value)),
            WatchEvent::Delete { key } => (key, None),
        };
        let name = key.strip_prefix(SEGMENT_KEY_PREFIX)?;
        let entry = self.entries.lock().get(name).cloned()?;
        let new = match value {
            Some(v) => match SegmentDescriptor::from_json(name, v) {
                Ok(d) => Some(Arc::new(d)),
                Err(e) => {
                    tracing::warn!(segment = name, error = %e, "ignoring malformed descriptor update");
                    None
                }
            },
            None => None,
        };
        let mut slot = entry.descriptor.write();
        let changed = match (&*slot, &new) {
            (Some(old), Some(new)) => old.epoch != new.epoch,
            _ => true,
        };
        *slot = new;
        changed.then(|| name.to_string())
    }
}

/// Split `host:port` (IPv6 in brackets allowed).
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("127.0.0.1:80"),
            Some(("127.0.0.1".into(), 80))
        );
        assert_eq!(split_host_port("[::1]:9"), Some(("::1".into(), 9)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }
}
