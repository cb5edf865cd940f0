//! The local memory registry: which address ranges of this process peers may
//! read and write.
//!
//! Invariants:
//! - Registered ranges never overlap.
//! - Every access by a transport goes through a [`Lease`], obtained by
//!   [`MemoryRegistry::lease`], which checks that `[addr, addr+len)` lies wholly
//!   inside one registered buffer. No lease, no access.
//! - [`MemoryRegistry::remove_and_drain`] returns only after every lease on
//!   the buffer is dropped, so memory the caller frees after
//!   `unregister_memory` is never touched again.
//! - Managed buffers keep their mapping alive through the region itself, so a
//!   `ManagedBuffer` dropped mid-transfer is unmapped only after in-flight
//!   leases end.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::memfd::Memfd;
use crate::TransferError;

/// A memory-registration key pair, as RDMA produces (`lkey` used locally in
/// work requests, `rkey` handed to peers for one-sided access).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryKey {
    pub lkey: u32,
    pub rkey: u32,
}

/// Permits in a region's gate; a lease takes one, draining takes them all.
const GATE_PERMITS: u32 = 1 << 30;

/// Where a registered buffer can be shared from (same-host peers open
/// `/proc/<pid>/fd/<fd>` and map it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmExport {
    pub pid: u32,
    pub fd: i32,
}

/// Public facts about a registered buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    pub addr: usize,
    pub len: usize,
    /// The reference's location string (`cpu:0`, `cuda:0`, ...).
    pub location: String,
    /// Present for managed (memfd-backed) buffers.
    pub shm: Option<ShmExport>,
    /// Keys from transports that register memory (rdma), in registration order.
    pub keys: Vec<MemoryKey>,
}

impl RegionInfo {
    /// The CUDA device holding this buffer, `None` for host memory (the
    /// location was decided once, at registration: see [`crate::cuda`]).
    pub fn device(&self) -> Option<i32> {
        crate::cuda::device_of_location(&self.location)
    }
}

#[derive(Debug)]
struct Region {
    info: RegionInfo,
    gate: Arc<Semaphore>,
    /// Keeps a managed buffer's memory mapped while leases exist.
    _mapping: Option<Arc<Memfd>>,
}

/// Check that `[addr, addr+len)` lies inside `[buf_addr, buf_addr+buf_len)`.
/// Overflowing ranges are out of range. Pure; shared by local and remote checks.
pub fn check_range(buf_addr: u64, buf_len: u64, addr: u64, len: u64) -> Result<(), TransferError> {
    let buf_end = buf_addr.saturating_add(buf_len);
    if addr < buf_addr || addr >= buf_end && !(len == 0 && addr == buf_end) {
        return Err(TransferError::NotRegistered { addr, len });
    }
    match addr.checked_add(len) {
        Some(end) if end <= buf_end => Ok(()),
        _ => Err(TransferError::OutOfRange {
            addr,
            len,
            buffer_addr: buf_addr,
            buffer_len: buf_len,
        }),
    }
}

/// A checked, live reference to `[addr, addr+len)` of a registered buffer.
/// While it exists the buffer cannot finish unregistering.
#[derive(Debug)]
pub struct Lease {
    addr: usize,
    len: usize,
    _region: Arc<Region>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    pub fn addr(&self) -> usize {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// The CUDA device holding the leased bytes (`None`: host memory the CPU
    /// may touch). Device memory must only be moved by the copy engine.
    pub fn device(&self) -> Option<i32> {
        self._region.info.device()
    }

    /// The leased bytes as a shared slice.
    ///
    /// # Safety
    /// No one may write these bytes while the slice is alive (the engine
    /// treats registered memory like DMA memory: concurrent overlapping
    /// requests are the caller's race, as in the reference).
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the lease proves the range is inside a registered buffer,
        // which the registrant keeps valid until unregistering completes,
        // and that cannot complete while this lease lives.
        std::slice::from_raw_parts(self.ptr(), self.len)
    }

    /// The leased bytes as a mutable slice.
    ///
    /// # Safety
    /// No one else may access these bytes while the slice is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as for `as_slice`; registered memory is writable by contract.
        std::slice::from_raw_parts_mut(self.ptr(), self.len)
    }
}

/// Registered buffers of this process, keyed by start address.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    regions: RwLock<BTreeMap<usize, Arc<Region>>>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a buffer. Fails if it is empty, wraps around, or overlaps another.
    pub(crate) fn insert(
        &self,
        info: RegionInfo,
        mapping: Option<Arc<Memfd>>,
    ) -> Result<(), TransferError> {
        let end = info.addr.checked_add(info.len);
        if info.len == 0 || end.is_none() || info.addr == 0 {
            return Err(TransferError::InvalidConfig(format!(
                "cannot register {:#x}+{}",
                info.addr, info.len
            )));
        }
        let end = end.unwrap_or(usize::MAX);
        let mut regions = self.regions.write();
        let before = regions.range(..end).next_back();
        if let Some((_, r)) = before {
            if r.info.addr + r.info.len > info.addr {
                return Err(TransferError::AlreadyRegistered {
                    addr: info.addr,
                    len: info.len,
                });
            }
        }
        let region = Region {
            info,
            gate: Arc::new(Semaphore::new(GATE_PERMITS as usize)),
            _mapping: mapping,
        };
        regions.insert(region.info.addr, Arc::new(region));
        Ok(())
    }

    /// Remove the buffer starting at `addr` and wait until no lease on it is
    /// left. Returns its info, or `None` if nothing starts at `addr`.
    pub async fn remove_and_drain(&self, addr: usize) -> Option<RegionInfo> {
        let region = self.regions.write().remove(&addr)?;
        // Waiting for every permit means every lease has been dropped; new
        // leases cannot be taken because the region is out of the map.
        if let Ok(p) = region.gate.acquire_many(GATE_PERMITS).await {
            p.forget();
        }
        region.gate.close();
        Some(region.info.clone())
    }

    /// Remove without waiting (managed buffers: their mapping outlives leases).
    pub(crate) fn remove_now(&self, addr: usize) -> Option<RegionInfo> {
        let region = self.regions.write().remove(&addr)?;
        Some(region.info.clone())
    }

    /// Lease `[addr, addr+len)` after checking it lies inside one buffer.
    pub fn lease(&self, addr: u64, len: u64) -> Result<Lease, TransferError> {
        let regions = self.regions.read();
        let key = usize::try_from(addr).map_err(|_| TransferError::NotRegistered { addr, len })?;
        let (_, region) = regions
            .range(..=key)
            .next_back()
            .ok_or(TransferError::NotRegistered { addr, len })?;
        check_range(region.info.addr as u64, region.info.len as u64, addr, len)?;
        let permit = Arc::clone(&region.gate)
            .try_acquire_owned()
            .map_err(|_| TransferError::NotRegistered { addr, len })?;
        Ok(Lease {
            addr: key,
            len: len as usize,
            _region: Arc::clone(region),
            _permit: permit,
        })
    }

    /// Lease a local range, reporting failures as local errors.
    pub fn lease_local(&self, addr: usize, len: usize) -> Result<Lease, TransferError> {
        self.lease(addr as u64, len as u64)
            .map_err(|_| TransferError::LocalNotRegistered { addr, len })
    }

    /// All registered buffers, by address.
    pub fn snapshot(&self) -> Vec<RegionInfo> {
        self.regions
            .read()
            .values()
            .map(|r| r.info.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(addr: usize, len: usize) -> RegionInfo {
        RegionInfo {
            addr,
            len,
            location: "cpu:0".into(),
            shm: None,
            keys: vec![],
        }
    }

    #[test]
    fn range_checks() {
        assert!(check_range(100, 50, 100, 50).is_ok());
        assert!(check_range(100, 50, 149, 1).is_ok());
        assert!(check_range(100, 50, 150, 0).is_ok());
        assert!(matches!(
            check_range(100, 50, 149, 2),
            Err(TransferError::OutOfRange { .. })
        ));
        assert!(matches!(
            check_range(100, 50, 99, 1),
            Err(TransferError::NotRegistered { .. })
        ));
        assert!(matches!(
            check_range(100, 50, 151, 0),
            Err(TransferError::NotRegistered { .. })
        ));
        assert!(matches!(
            check_range(100, 50, 120, u64::MAX),
            Err(TransferError::OutOfRange { .. })
        ));
    }

    #[tokio::test]
    async fn overlap_lease_and_drain() {
        let r = MemoryRegistry::new();
        r.insert(info(0x1000, 0x1000), None).unwrap();
        assert!(r.insert(info(0x1800, 0x1000), None).is_err());
        assert!(r.insert(info(0x800, 0x900), None).is_err());
        r.insert(info(0x2000, 0x10), None).unwrap();
        assert!(r.lease(0x1000, 0x1000).is_ok());
        assert!(r.lease(0x1fff, 2).is_err());
        assert!(r.lease(0x2100, 1).is_err());
        let lease = r.lease(0x1000, 16).unwrap();
        let reg = Arc::new(r);
        let r2 = Arc::clone(&reg);
        let drain = tokio::spawn(async move { r2.remove_and_drain(0x1000).await });
        tokio::task::yield_now().await;
        assert!(!drain.is_finished());
        assert!(reg.lease(0x1000, 1).is_err());
        drop(lease);
        assert_eq!(drain.await.unwrap().unwrap().addr, 0x1000);
    }
}
