//! The shm transport: same-host peers' managed buffers are mapped into this
//! process (`/proc/<pid>/fd/<fd>` of the owner's memfd) and copied with memcpy.
//!
//! Chosen when the peer's `host_id` equals ours, the peer enables `shm`, and
//! the target range lies in a buffer that publishes `shm` info (a managed
//! buffer). If mapping fails (another user, another container) the peer's
//! epoch is remembered as unmappable and tcp takes over.
//!
//! Same-host device memory (the reference's intra-node NVLink path): a local
//! device buffer is exported as a CUDA IPC handle, published in the
//! descriptor extension `transports.shm.cuda_ipc` (`addr`, `length`,
//! `device`, `offset` inside the allocation, hex `handle`). A peer opens the
//! handle once and copies device-to-device with the copy engine. Where IPC
//! is unavailable (no CUDA here, the allocation cannot be exported, opening
//! fails) the buffer is simply not reachable by shm and tcp stages it.
//! A local device buffer on the other side of a memfd copy is moved by the
//! copy engine too, never by the CPU.
//!
//! Invariants:
//! - A peer's memfd is mapped only after [`Memfd::map_peer`] checked that it
//!   is a sealed managed-buffer memfd (name [`memfd::SEGMENT_NAME`]) of at
//!   least the buffer's size, held by the pid the descriptor names; any other
//!   file (a poisoned descriptor) is refused, logged, and tcp used instead.
//! - Copies stay inside the mapping: the range is checked against the
//!   descriptor's buffer and the mapping length (the memfd's sealed size).
//! - Before every copy the owner's fd is re-checked (same device and inode as
//!   our mapping), so a restarted peer (same name, new process) is detected
//!   instead of writing into an orphaned buffer.
//! - Mappings are keyed by (segment, epoch, buffer address), made once and
//!   populated (writable page-table entries, on a helper thread) so puts into
//!   fresh parts of a peer's buffer do not fault per page, and unmapped when
//!   the peer is forgotten or the transport shuts down.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{MemoryKey, SharedTransport, Slice, Transport, TransportContext};
use crate::cuda::{self, staging};
use crate::descriptor::{BufferDesc, SegmentDescriptor, ShmDesc};
use crate::memfd::{self, Memfd};
use crate::memory::{MemoryRegistry, RegionInfo};
use crate::{Opcode, Protocol, TransferError};

/// A peer's managed buffer mapped here, with the identity of its memfd.
#[derive(Debug)]
struct PeerMapping {
    map: Memfd,
    dev: u64,
    ino: u64,
    path: String,
}

type Key = (String, u64, u64);

/// Remembered (segment, epoch) refusals before the list is reset.
const MAX_UNMAPPABLE: usize = 4096;

/// A peer's device allocation opened through CUDA IPC; closed on drop.
#[derive(Debug)]
struct IpcMapping {
    /// Address of the peer's registered buffer start in this process.
    base: usize,
    /// Start of the opened allocation (what `ipc_close` takes).
    alloc: usize,
    device: i32,
}

impl Drop for IpcMapping {
    fn drop(&mut self) {
        if let Ok(e) = cuda::engine() {
            e.ipc_close(self.alloc, self.device);
        }
    }
}

/// One exported device buffer as published under `transports.shm.cuda_ipc`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct IpcEntry {
    addr: u64,
    length: u64,
    device: i32,
    offset: u64,
    handle: String,
}

/// See the module docs.
#[derive(Debug)]
pub struct ShmTransport {
    host_id: String,
    registry: Arc<MemoryRegistry>,
    maps: Mutex<HashMap<Key, Arc<PeerMapping>>>,
    ipc_maps: Mutex<HashMap<Key, Arc<IpcMapping>>>,
    unmappable: Mutex<HashSet<(String, u64)>>,
    /// Our device buffers exported for IPC, by address.
    exports: Mutex<BTreeMap<u64, IpcEntry>>,
}

/// Build the shm transport.
pub fn build(ctx: &TransportContext) -> Result<SharedTransport, TransferError> {
    Ok(Arc::new(ShmTransport {
        host_id: ctx.host_id.clone(),
        registry: Arc::clone(&ctx.registry),
        maps: Mutex::new(HashMap::new()),
        ipc_maps: Mutex::new(HashMap::new()),
        unmappable: Mutex::new(HashSet::new()),
        exports: Mutex::new(BTreeMap::new()),
    }))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The peer's IPC export covering `[addr, addr+len)`, if any.
fn ipc_entry(peer: &SegmentDescriptor, addr: u64, len: u64) -> Option<IpcEntry> {
    let list = peer.transports.get("shm")?.get("cuda_ipc")?.as_array()?;
    list.iter().find_map(|v| {
        let (a, l) = (v.get("addr")?.as_u64()?, v.get("length")?.as_u64()?);
        (addr >= a && addr.checked_add(len)? <= a.checked_add(l)?)
            .then(|| serde_json::from_value(v.clone()).ok())
            .flatten()
    })
}

/// Whether CUDA IPC can work in this process (a real driver).
fn ipc_capable() -> bool {
    cuda::engine().is_ok_and(|e| !e.is_standin())
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    pid != 0 && unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
}

/// Map the peer's memfd for `buf`, only after [`Memfd::map_peer`] checked it
/// is a sealed managed-buffer memfd of at least the buffer's size, held by
/// the process the descriptor names.
fn map_peer(
    peer: &SegmentDescriptor,
    shm: ShmDesc,
    want: u64,
) -> Result<PeerMapping, TransferError> {
    let refused = |m: String| TransferError::PeerUnreachable {
        segment: peer.name.clone(),
        message: m,
    };
    if shm.pid != peer.pid {
        return Err(refused(format!(
            "buffer names pid {} but the segment is pid {}",
            shm.pid, peer.pid
        )));
    }
    let map = Memfd::map_peer(shm.pid, shm.fd, memfd::SEGMENT_NAME, want)
        .map_err(|e| refused(e.to_string()))?;
    let (dev, ino) = map.file_id()?;
    Ok(PeerMapping {
        map,
        dev,
        ino,
        path: format!("/proc/{}/fd/{}", shm.pid, shm.fd),
    })
}

/// Chunk of a peer mapping populated at a time (the populating thread stops
/// between chunks once the mapping is forgotten).
const POPULATE_CHUNK: usize = 64 << 20;

/// Populate the whole mapping, writable, on a helper thread, so writes into
/// it (puts into fresh allocations of the peer) do not page-fault once per
/// 4 KiB. Copies proceed meanwhile (a page not yet populated just faults).
/// `MC_SHM_POPULATE=0` turns it off (to measure the difference).
fn populate_in_background(m: &Arc<PeerMapping>) {
    if std::env::var("MC_SHM_POPULATE").is_ok_and(|v| v.trim() == "0") {
        return;
    }
    let weak = Arc::downgrade(m);
    let spawned = std::thread::Builder::new()
        .name("mc-shm-populate".into())
        .spawn(move || {
            let mut off = 0;
            while let Some(m) = weak.upgrade() {
                if off >= m.map.len() {
                    return;
                }
                m.map.populate_write(off, POPULATE_CHUNK);
                off += POPULATE_CHUNK;
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "no thread to populate an shm mapping");
    }
}

impl ShmTransport {
    fn ipc_mapping(
        &self,
        peer: &SegmentDescriptor,
        entry: &IpcEntry,
    ) -> Result<Arc<IpcMapping>, TransferError> {
        let key = (peer.name.clone(), peer.epoch, entry.addr);
        if let Some(m) = self.ipc_maps.lock().get(&key) {
            return Ok(Arc::clone(m));
        }
        let e = cuda::engine().map_err(|why| TransferError::Cuda(why.to_string()))?;
        let device = if entry.device < e.device_count() {
            entry.device
        } else {
            0
        };
        let handle = unhex(&entry.handle)
            .ok_or_else(|| TransferError::Protocol("malformed CUDA IPC handle".into()))?;
        let opened = e.ipc_open(&handle, device).and_then(|alloc| {
            let m = IpcMapping {
                base: alloc + entry.offset as usize,
                alloc,
                device,
            };
            // The export must cover the buffer the descriptor announces.
            let (_, size) = e.allocation_range(alloc, device)?;
            if entry.offset.saturating_add(entry.length) > size as u64 {
                return Err(TransferError::Protocol(
                    "CUDA IPC export smaller than its buffer".into(),
                ));
            }
            Ok(m)
        });
        let m = match opened {
            Ok(m) => Arc::new(m),
            Err(err) => {
                tracing::info!(segment = %peer.name, error = %err, "CUDA IPC open failed; staging over other transports");
                self.unmappable
                    .lock()
                    .insert((peer.name.clone(), peer.epoch));
                return Err(TransferError::PeerUnreachable {
                    segment: peer.name.clone(),
                    message: err.to_string(),
                });
            }
        };
        self.ipc_maps.lock().insert(key, Arc::clone(&m));
        Ok(m)
    }

    /// Device-to-device (or host) copy through a peer's IPC export.
    fn execute_ipc(
        &self,
        peer: &SegmentDescriptor,
        entry: &IpcEntry,
        slice: &Slice,
        local_device: Option<i32>,
    ) -> Result<(), TransferError> {
        if !pid_alive(peer.pid) {
            self.forget_peer(&peer.name);
            return Err(TransferError::PeerUnreachable {
                segment: peer.name.clone(),
                message: "peer process is gone".into(),
            });
        }
        let m = self.ipc_mapping(peer, entry)?;
        let remote = m.base + (slice.remote_addr - entry.addr) as usize;
        let (l, r) = ((slice.local_addr, local_device), (remote, Some(m.device)));
        let ((dst, dd), (src, sd)) = match slice.opcode {
            Opcode::Write => (r, l),
            Opcode::Read => (l, r),
        };
        // SAFETY: the remote range lies inside the opened export (checked
        // against the entry, whose extent was checked against the allocation),
        // the local one is leased by the engine.
        unsafe { staging::copy(dst, dd, src, sd, slice.len) }
    }

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
        let m = match map_peer(peer, shm, buf.length) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                tracing::warn!(segment = %peer.name, pid = shm.pid, fd = shm.fd, error = %e, "shm mapping refused; using other transports");
                self.unmappable
                    .lock()
                    .insert((peer.name.clone(), peer.epoch));
                return Err(e);
            }
        };
        self.maps.lock().insert(key, Arc::clone(&m));
        populate_in_background(&m);
        Ok(m)
    }
}

#[async_trait::async_trait]
impl Transport for ShmTransport {
    fn protocol(&self) -> Protocol {
        Protocol::Shm
    }

    fn register_memory(&self, region: &RegionInfo) -> Result<Option<MemoryKey>, TransferError> {
        let Some(device) = region.device() else {
            return Ok(None);
        };
        if !ipc_capable() {
            return Ok(None);
        }
        let e = cuda::engine().map_err(|why| TransferError::Cuda(why.to_string()))?;
        match e.ipc_handle(region.addr, device) {
            Ok(h) => {
                let entry = IpcEntry {
                    addr: region.addr as u64,
                    length: region.len as u64,
                    device,
                    offset: h.offset,
                    handle: hex(&h.handle),
                };
                self.exports.lock().insert(entry.addr, entry);
            }
            Err(err) => {
                tracing::info!(addr = region.addr, error = %err, "device buffer not exportable by CUDA IPC; peers will stage it over tcp");
            }
        }
        Ok(None)
    }

    fn unregister_memory(&self, region: &RegionInfo) -> Result<(), TransferError> {
        self.exports.lock().remove(&(region.addr as u64));
        Ok(())
    }

    fn descriptor_extension(&self) -> Option<serde_json::Value> {
        let exports = self.exports.lock();
        if exports.is_empty() {
            return None;
        }
        let list: Vec<&IpcEntry> = exports.values().collect();
        Some(serde_json::json!({ "cuda_ipc": list }))
    }

    fn can_reach(&self, peer: &SegmentDescriptor, remote_addr: u64, len: usize) -> bool {
        peer.host_id == self.host_id
            && !self.host_id.is_empty()
            && peer.has_protocol("shm")
            && peer.find_buffer(remote_addr, len as u64).is_ok_and(|b| {
                b.shm.is_some()
                    || ipc_capable()
                        && peer.pid != std::process::id()
                        && ipc_entry(peer, remote_addr, len as u64).is_some()
            })
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
        let local_device = self
            .registry
            .lease_local(slice.local_addr, slice.len)?
            .device();
        if buf.shm.is_none() {
            let entry = ipc_entry(peer, slice.remote_addr, slice.len as u64).ok_or(
                TransferError::NoRoute {
                    segment: peer.name.clone(),
                    addr: slice.remote_addr,
                },
            )?;
            return self.execute_ipc(peer, &entry, slice, local_device);
        }
        let map = self.mapping(peer, buf)?;
        let offset = (slice.remote_addr - buf.addr) as usize;
        if offset
            .checked_add(slice.len)
            .is_none_or(|end| end > map.map.len())
        {
            return Err(TransferError::OutOfRange {
                addr: slice.remote_addr,
                len: slice.len as u64,
                buffer_addr: buf.addr,
                buffer_len: map.map.len() as u64,
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
        let remote = map.map.addr() + offset;
        let (l, r) = ((slice.local_addr, local_device), (remote, None));
        let ((dst, dd), (src, sd)) = match slice.opcode {
            Opcode::Write => (r, l),
            Opcode::Read => (l, r),
        };
        // SAFETY: [offset, offset+len) is inside the mapping (checked above) and
        // the local range is leased by the engine. Host-to-host is a memmove
        // (overlap tolerated should a process map its own memfd through another
        // segment name); a local device side goes through the copy engine.
        unsafe { staging::copy(dst, dd, src, sd, slice.len) }
    }

    fn forget_peer(&self, segment: &str) {
        self.maps.lock().retain(|k, _| k.0 != segment);
        self.ipc_maps.lock().retain(|k, _| k.0 != segment);
        // Refusals are kept: they are per (segment, epoch), so a restarted
        // peer (new epoch) gets a fresh chance, while a retry after our own
        // refusal goes straight to another transport. Bounded anyway.
        let mut unmappable = self.unmappable.lock();
        if unmappable.len() > MAX_UNMAPPABLE {
            unmappable.clear();
        }
    }

    async fn shutdown(&self) {
        self.maps.lock().clear();
        self.ipc_maps.lock().clear();
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
