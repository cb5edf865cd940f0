//! The shm transport: same-host peers' managed buffers are mapped into this
//! process (`/proc/<pid>/fd/<fd>` of the owner's memfd) and copied with memcpy.
//!
//! Chosen when the peer's `host_id` equals ours, the peer enables `shm`, and
//! the target range lies in a buffer that publishes `shm` info (a managed
//! buffer). If mapping fails (another user, another container) the peer's
//! epoch is remembered as unmappable and tcp takes over.
//!
//! Invariants:
//! - Copies stay inside the mapping: the range is checked against the
//!   descriptor's buffer and the mapping length (the memfd's sealed size).
//! - Before every copy the owner's fd is re-checked (same device and inode as
//!   our mapping), so a restarted peer (same name, new process) is detected
//!   instead of writing into an orphaned buffer.
//! - Mappings are keyed by (segment, epoch, buffer address) and unmapped
//!   when the peer is forgotten or the transport shuts down.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{SharedTransport, Slice, Transport, TransportContext};
use crate::descriptor::{BufferDesc, SegmentDescriptor, ShmDesc};
use crate::{Opcode, Protocol, TransferError};

#[derive(Debug)]
struct PeerMapping {
    ptr: *mut u8,
    len: usize,
    dev: u64,
    ino: u64,
    path: String,
}

// SAFETY: a shared mapping of another process's memfd; plain memory with no
// thread affinity.
unsafe impl Send for PeerMapping {}
// SAFETY: as above; concurrent copies into disjoint ranges are the caller's contract.
unsafe impl Sync for PeerMapping {}

impl Drop for PeerMapping {
    fn drop(&mut self) {
        // SAFETY: exactly the region mmap returned; no copy is running (the
        // last Arc is being dropped).
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

type Key = (String, u64, u64);

/// See the module docs.
#[derive(Debug)]
pub struct ShmTransport {
    host_id: String,
    maps: Mutex<HashMap<Key, Arc<PeerMapping>>>,
    unmappable: Mutex<HashSet<(String, u64)>>,
}

/// Build the shm transport.
pub fn build(ctx: &TransportContext) -> Result<SharedTransport, TransferError> {
    Ok(Arc::new(ShmTransport {
        host_id: ctx.host_id.clone(),
        maps: Mutex::new(HashMap::new()),
        unmappable: Mutex::new(HashSet::new()),
    }))
}

fn map_peer(segment: &str, shm: ShmDesc, want: u64) -> Result<PeerMapping, TransferError> {
    let path = format!("/proc/{}/fd/{}", shm.pid, shm.fd);
    let unreachable = |m: String| TransferError::PeerUnreachable {
        segment: segment.to_string(),
        message: m,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| unreachable(format!("cannot open {path}: {e}")))?;
    let meta = file.metadata()?;
    let len = meta.len();
    if len < want {
        return Err(unreachable(format!(
            "{path} holds {len} bytes, descriptor says {want}"
        )));
    }
    let ptr = crate::buffer::map_shared(file.as_raw_fd(), len as usize)?;
    Ok(PeerMapping {
        ptr,
        len: len as usize,
        dev: meta.dev(),
        ino: meta.ino(),
        path,
    })
}

impl ShmTransport {
    fn mapping(
        &self,
        peer: &SegmentDescriptor,
        buf: &BufferDesc,
    ) -> Result<Arc<PeerMapping>, TransferError> {
        let key = (peer.name.clone(), peer.epoch, buf.addr);
        if let Some(m) = self.maps.lock().get(&key) {
            return Ok(Arc::clone(m));
        }
        let shm = buf.shm.ok_or_else(|| TransferError::NoRoute {
            segment: peer.name.clone(),
            addr: buf.addr,
        })?;
        let m = match map_peer(&peer.name, shm, buf.length) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                tracing::info!(segment = %peer.name, error = %e, "shm mapping failed; using other transports");
                self.unmappable
                    .lock()
                    .insert((peer.name.clone(), peer.epoch));
                return Err(e);
            }
        };
        self.maps.lock().insert(key, Arc::clone(&m));
        Ok(m)
    }
}

#[async_trait::async_trait]
impl Transport for ShmTransport {
    fn protocol(&self) -> Protocol {
        Protocol::Shm
    }

    fn can_reach(&self, peer: &SegmentDescriptor, remote_addr: u64, len: usize) -> bool {
        peer.host_id == self.host_id
            && !self.host_id.is_empty()
            && peer.has_protocol("shm")
            && peer
                .find_buffer(remote_addr, len as u64)
                .is_ok_and(|b| b.shm.is_some())
            && !self
                .unmappable
                .lock()
                .contains(&(peer.name.clone(), peer.epoch))
    }

    async fn execute(
        &self,
        peer: &Arc<SegmentDescriptor>,
        slice: &Slice,
    ) -> Result<(), TransferError> {
        let buf = peer.find_buffer(slice.remote_addr, slice.len as u64)?;
        let map = self.mapping(peer, buf)?;
        let offset = (slice.remote_addr - buf.addr) as usize;
        if offset
            .checked_add(slice.len)
            .is_none_or(|end| end > map.len)
        {
            return Err(TransferError::OutOfRange {
                addr: slice.remote_addr,
                len: slice.len as u64,
                buffer_addr: buf.addr,
                buffer_len: map.len as u64,
            });
        }
        // The owner still holds the same memfd at that fd (not restarted).
        let alive = std::fs::metadata(&map.path)
            .map(|m| m.dev() == map.dev && m.ino() == map.ino)
            .unwrap_or(false);
        if !alive {
            self.forget_peer(&peer.name);
            return Err(TransferError::PeerUnreachable {
                segment: peer.name.clone(),
                message: "peer process no longer holds the shared buffer".into(),
            });
        }
        // SAFETY: [offset, offset+len) is inside the mapping (checked above) and
        // the local range is leased by the engine. The two are different
        // mappings of memory; `copy` tolerates overlap should a process map its
        // own memfd through another segment name.
        unsafe {
            let remote = map.ptr.add(offset);
            let local = slice.local_addr as *mut u8;
            match slice.opcode {
                Opcode::Write => std::ptr::copy(local as *const u8, remote, slice.len),
                Opcode::Read => std::ptr::copy(remote as *const u8, local, slice.len),
            }
        }
        Ok(())
    }

    fn forget_peer(&self, segment: &str) {
        self.maps.lock().retain(|k, _| k.0 != segment);
        self.unmappable.lock().retain(|k| k.0 != segment);
    }

    async fn shutdown(&self) {
        self.maps.lock().clear();
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
