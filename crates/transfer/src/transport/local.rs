//! Local-segment transfers: a request whose target is this engine's own
//! segment is a memcpy between two leased ranges of the local registry (no
//! socket). Both ranges are checked exactly as a remote peer's would be.

use crate::memory::MemoryRegistry;
use crate::transport::Slice;
use crate::{Opcode, TransferError};

/// Copy one slice within this process.
pub fn copy(registry: &MemoryRegistry, slice: &Slice) -> Result<(), TransferError> {
    let remote = registry.lease(slice.remote_addr, slice.len as u64)?;
    let local = slice.local_addr as *mut u8;
    // SAFETY: `remote` is a live lease on registered memory; the local range is
    // leased by the caller. `copy` (memmove) tolerates overlapping ranges.
    unsafe {
        match slice.opcode {
            Opcode::Write => std::ptr::copy(local as *const u8, remote.ptr(), slice.len),
            Opcode::Read => std::ptr::copy(remote.ptr() as *const u8, local, slice.len),
        }
    }
    Ok(())
}
