//! The client's staging buffer: one registered Transfer Engine buffer
//! (`local_buffer_size` bytes) carved into regions for operations whose caller
//! handed us plain memory (`put(&[u8])`, `get() -> Vec<u8>`).
//!
//! The Transfer Engine only moves bytes from and to registered memory, so such
//! an operation copies through a region of this buffer. Regions are handed out
//! by the Transfer Engine's first-fit [`RangeAllocator`] (coalescing on release); a request that does
//! not fit right now waits until enough is released. A region is returned when
//! its [`StagingRegion`] guard drops, so a cancelled operation cannot leak it.
//!
//! Invariants: live regions never overlap and all lie inside the buffer (the
//! allocator's invariants, property-tested there).

use std::sync::Arc;

use mooncake_transfer::range_alloc::RangeAllocator;
use mooncake_transfer::ManagedBuffer;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Region offsets and lengths are rounded up to this (cache-line) alignment.
const ALIGN: usize = 64;

/// The staging buffer shared by all operations of one client.
pub(crate) struct Staging {
    buffer: ManagedBuffer,
    list: Mutex<RangeAllocator>,
    released: Notify,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("addr", &self.buffer.addr())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Staging {
    pub(crate) fn new(buffer: ManagedBuffer) -> Arc<Self> {
        let cap = buffer.len();
        Arc::new(Staging {
            buffer,
            list: Mutex::new(RangeAllocator::new(cap, ALIGN)),
            released: Notify::new(),
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.list.lock().capacity()
    }

    /// Largest window one operation takes at once: a quarter of the buffer (at
    /// least 64 KiB, at most the buffer), so several operations proceed together.
    pub(crate) fn window(&self) -> usize {
        let cap = self.capacity();
        (cap / 4).max(64 << 10).min(cap)
    }

    /// A region of `len` bytes (`len` ≤ capacity), waiting until one is free.
    pub(crate) async fn acquire(self: &Arc<Self>, len: usize) -> StagingRegion {
        debug_assert!(len <= self.capacity());
        loop {
            // Register interest before checking, so a release between the check
            // and the await still wakes us.
            let notified = self.released.notified();
            if let Some(off) = self.list.lock().alloc(len.max(1)) {
                return StagingRegion {
                    staging: Arc::clone(self),
                    off,
                    len,
                };
            }
            notified.await;
        }
    }
}

/// A region of the staging buffer, returned on drop.
pub(crate) struct StagingRegion {
    staging: Arc<Staging>,
    off: usize,
    len: usize,
}

impl StagingRegion {
    /// Absolute address of the region (inside a registered buffer).
    pub(crate) fn addr(&self) -> usize {
        self.staging.buffer.addr() + self.off
    }

    /// Copy `src` into the region at `at`.
    pub(crate) fn write(&self, at: usize, src: &[u8]) {
        assert!(at + src.len() <= self.len, "staging write out of region");
        self.staging.buffer.write_at(self.off + at, src);
    }

    /// Copy from the region at `at` into (possibly uninitialised) `dst`.
    pub(crate) fn read_uninit(&self, at: usize, dst: &mut [std::mem::MaybeUninit<u8>]) {
        assert!(at + dst.len() <= self.len, "staging read out of region");
        // SAFETY: the region lies inside the staging buffer (allocator invariant)
        // and the range was checked against the region just above; the buffer
        // stays mapped while `self` holds its Arc.
        unsafe { super::io::copy_out(self.staging.buffer.as_ptr(), self.off + at, dst) }
    }
}

impl Drop for StagingRegion {
    fn drop(&mut self) {
        self.staging.list.lock().free(self.off);
        self.staging.released.notify_waiters();
    }
}
