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
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Last known descriptor (entries exist only after a first fetch).
    descriptor: RwLock<Arc<SegmentDescriptor>>,
    /// Set when the peer was unreachable or its descriptor was deleted or
    /// unreadable: the next use re-fetches.
    stale: AtomicBool,
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

    /// The last known descriptor (possibly stale; transfers re-fetch stale
    /// descriptors themselves).
    pub fn descriptor(&self) -> Arc<SegmentDescriptor> {
        Arc::clone(&self.entry.descriptor.read())
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
        auth: mooncake_security::AuthMode,
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
                auth,
                connect_timeout,
            } => {
                let (host, port) = split_host_port(name).ok_or_else(|| {
                    TransferError::UnknownSegment(format!(
                        "{name} (P2P handshake mode needs segment names of the form host:port)"
                    ))
                })?;
                fetch_descriptor(name, &host, port, auth, *connect_timeout).await?
            }
        };
        Ok(Arc::new(desc))
    }

    /// Resolve `name`, fetching if it is not cached (or stale).
    pub async fn open(&self, name: &str) -> Result<SegmentHandle, TransferError> {
        let existing = self.entries.lock().get(name).cloned();
        if let Some(entry) = existing {
            let handle = SegmentHandle { entry };
            self.current(&handle).await?;
            return Ok(handle);
        }
        let fresh = self.fetch(name).await?;
        let entry = Arc::clone(
            self.entries
                .lock()
                .entry(name.to_string())
                .or_insert_with(|| {
                    Arc::new(Entry {
                        name: name.to_string(),
                        descriptor: RwLock::new(fresh),
                        stale: AtomicBool::new(false),
                    })
                }),
        );
        Ok(SegmentHandle { entry })
    }

    /// The handle's descriptor, re-fetching it if stale.
    pub async fn current(
        &self,
        handle: &SegmentHandle,
    ) -> Result<Arc<SegmentDescriptor>, TransferError> {
        if !handle.entry.stale.load(Ordering::Acquire) {
            return Ok(handle.descriptor());
        }
        let fresh = self.fetch(handle.name()).await?;
        *handle.entry.descriptor.write() = Arc::clone(&fresh);
        handle.entry.stale.store(false, Ordering::Release);
        Ok(fresh)
    }

    /// The handle's descriptor after checking that `[addr, addr+len)` lies in
    /// one of its buffers. A refusal by a cached descriptor is confirmed
    /// against a freshly fetched one first: the peer may have restarted with
    /// new buffers (P2P mode has no watch to tell us).
    pub async fn check(
        &self,
        handle: &SegmentHandle,
        addr: u64,
        len: u64,
    ) -> Result<Arc<SegmentDescriptor>, TransferError> {
        let cached = self.current(handle).await?;
        if cached.find_buffer(addr, len).is_ok() {
            return Ok(cached);
        }
        let fresh = self.fetch(handle.name()).await?;
        *handle.entry.descriptor.write() = Arc::clone(&fresh);
        handle.entry.stale.store(false, Ordering::Release);
        fresh.find_buffer(addr, len)?;
        Ok(fresh)
    }

    /// Mark the cached descriptor of `name` stale (peer unreachable).
    pub fn invalidate(&self, name: &str) {
        if let Some(e) = self.entries.lock().get(name) {
            e.stale.store(true, Ordering::Release);
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
        let Some(new) = new else {
            entry.stale.store(true, Ordering::Release);
            return Some(name.to_string());
        };
        let mut slot = entry.descriptor.write();
        let changed = slot.epoch != new.epoch;
        *slot = new;
        entry.stale.store(false, Ordering::Release);
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
