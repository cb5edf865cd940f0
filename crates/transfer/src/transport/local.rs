//! Local-segment transfers: a request whose target is this engine's own
//! segment is a memcpy between two leased ranges of the local registry (no
//! socket). Both ranges are checked exactly as a remote peer's would be.
//! Device memory on either side is copied by the copy engine (`cuda`).

use crate::cuda::staging;
use crate::memory::MemoryRegistry;
use crate::transport::Slice;
use crate::{Opcode, TransferError};

/// Copy one slice within this process.
pub fn copy(registry: &MemoryRegistry, slice: &Slice) -> Result<(), TransferError> {
    let remote = registry.lease(slice.remote_addr, slice.len as u64)?;
    let local = registry.lease_local(slice.local_addr, slice.len)?;
    let (l, r) = (
        (local.addr(), local.device()),
        (remote.addr(), remote.device()),
    );
    let ((dst, dst_dev), (src, src_dev)) = match slice.opcode {
        Opcode::Write => (r, l),
        Opcode::Read => (l, r),
    };
    // SAFETY: both ranges are live leases on registered memory; host-to-host
    // is a memmove (overlap tolerated), anything with a device side goes
    // through the copy engine.
    unsafe { staging::copy(dst, dst_dev, src, src_dev, slice.len) }
}
