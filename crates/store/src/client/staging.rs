//! The client's staging buffer: one registered Transfer Engine buffer
//! (`local_buffer_size` bytes) carved into regions for operations whose caller
//! handed us plain memory (`put(&[u8])`, `get() -> Vec<u8>`).
//!
//! The Transfer Engine only moves bytes from and to registered memory, so such
//! an operation copies through a region of this buffer. Regions are handed out
//! first-fit from a free list that coalesces on release; a request that does
//! not fit right now waits until enough is released. A region is returned when
//! its [`StagingRegion`] guard drops, so a cancelled operation cannot leak it.
//!
//! Invariants: live regions never overlap, all lie inside the buffer, and the
//! free list plus the live regions always cover the buffer exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use mooncake_transfer::ManagedBuffer;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Region offsets and lengths are rounded up to this (cache-line) alignment.
const ALIGN: usize = 64;

/// First-fit free list over `[0, capacity)`; pure bookkeeping, no memory.
#[derive(Debug)]
pub(crate) struct FreeList {
    capacity: usize,
    /// offset -> length of each free extent; extents never touch (coalesced).
    free: BTreeMap<usize, usize>,
}

impl FreeList {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity / ALIGN * ALIGN;
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        FreeList { capacity, free }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn round(len: usize) -> usize {
        len.max(1).div_ceil(ALIGN) * ALIGN
    }

    /// Take `len` bytes (rounded up); `None` if no extent is large enough now.
    pub(crate) fn alloc(&mut self, len: usize) -> Option<(usize, usize)> {
        let len = Self::round(len);
        let (&off, &ext) = self.free.iter().find(|(_, &ext)| ext >= len)?;
        self.free.remove(&off);
        if ext > len {
            self.free.insert(off + len, ext - len);
        }
        Some((off, len))
    }

    /// Give back an extent previously returned by [`FreeList::alloc`].
    pub(crate) fn release(&mut self, off: usize, len: usize) {
        let mut start = off;
        let mut end = off + len;
        if let Some((&poff, &plen)) = self.free.range(..off).next_back() {
            if poff + plen == off {
                self.free.remove(&poff);
                start = poff;
            }
        }
        if let Some(nlen) = self.free.remove(&end) {
            end += nlen;
        }
        debug_assert!(end <= self.capacity);
        self.free.insert(start, end - start);
    }

    #[cfg(test)]
    pub(crate) fn free_bytes(&self) -> usize {
        self.free.values().sum()
    }
}

/// The staging buffer shared by all operations of one client.
pub(crate) struct Staging {
    buffer: ManagedBuffer,
    list: Mutex<FreeList>,
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
            list: Mutex::new(FreeList::new(cap)),
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
            if let Some((off, alen)) = self.list.lock().alloc(len) {
                return StagingRegion {
                    staging: Arc::clone(self),
                    off,
                    alloc_len: alen,
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
    alloc_len: usize,
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
        // SAFETY: the region lies inside the staging buffer (FreeList invariant)
        // and the range was checked against the region just above; the buffer
        // stays mapped while `self` holds its Arc.
        unsafe { super::io::copy_out(self.staging.buffer.as_ptr(), self.off + at, dst) }
    }
}

impl Drop for StagingRegion {
    fn drop(&mut self) {
        self.staging.list.lock().release(self.off, self.alloc_len);
        self.staging.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_release_coalesces_back_to_one_extent() {
        let mut fl = FreeList::new(1 << 20);
        let a = fl.alloc(1000).unwrap();
        let b = fl.alloc(5000).unwrap();
        let c = fl.alloc(64).unwrap();
        assert_eq!(a.0, 0);
        assert!(b.0 >= a.0 + a.1 && c.0 >= b.0 + b.1, "no overlap");
        fl.release(b.0, b.1);
        fl.release(a.0, a.1);
        fl.release(c.0, c.1);
        assert_eq!(fl.free.len(), 1);
        assert_eq!(fl.free_bytes(), 1 << 20);
    }

    #[test]
    fn alloc_fails_when_full_and_succeeds_after_release() {
        let mut fl = FreeList::new(4096);
        let a = fl.alloc(4096).unwrap();
        assert!(fl.alloc(1).is_none());
        fl.release(a.0, a.1);
        assert!(fl.alloc(4096).is_some());
    }

    #[test]
    fn random_alloc_release_keeps_cover_invariant() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cap = 1 << 16;
        let mut fl = FreeList::new(cap);
        let mut live: Vec<(usize, usize)> = Vec::new();
        for _ in 0..5000 {
            if rng.gen_bool(0.55) {
                if let Some(r) = fl.alloc(rng.gen_range(1..4000)) {
                    for &(o, l) in &live {
                        assert!(r.0 + r.1 <= o || o + l <= r.0, "overlap");
                    }
                    assert!(r.0 + r.1 <= cap);
                    live.push(r);
                }
            } else if !live.is_empty() {
                let i = rng.gen_range(0..live.len());
                let (o, l) = live.swap_remove(i);
                fl.release(o, l);
            }
            let used: usize = live.iter().map(|r| r.1).sum();
            assert_eq!(used + fl.free_bytes(), cap);
        }
    }
}
