//! Carving a dummy's shared pool into buffers (`alloc_from_mem_pool`): a
//! first-fit allocator over offsets, with neighbouring free ranges merged.
//! Pure: it only does arithmetic on `[0, len)`.
//!
//! Invariants: free ranges never overlap or touch (touching ones are merged);
//! allocated ranges are aligned to [`ALIGN`] and never overlap a free range.

use std::collections::BTreeMap;

/// Alignment of every allocation (a cache line; tensors need no more on CPU).
pub const ALIGN: u64 = 64;

/// Offsets of a pool of `len` bytes.
#[derive(Debug)]
pub struct PoolAllocator {
    /// start -> length of free ranges.
    free: BTreeMap<u64, u64>,
    /// start -> length of allocations.
    used: BTreeMap<u64, u64>,
}

impl PoolAllocator {
    pub fn new(len: u64) -> Self {
        let len = len / ALIGN * ALIGN;
        let mut free = BTreeMap::new();
        if len > 0 {
            free.insert(0, len);
        }
        PoolAllocator {
            free,
            used: BTreeMap::new(),
        }
    }

    /// The offset of a fresh range of `size` bytes, or `None` if no free range fits.
    pub fn alloc(&mut self, size: u64) -> Option<u64> {
        if size == 0 {
            return None;
        }
        let size = size.checked_add(ALIGN - 1)? / ALIGN * ALIGN;
        let (&start, &len) = self.free.iter().find(|(_, &l)| l >= size)?;
        self.free.remove(&start);
        if len > size {
            self.free.insert(start + size, len - size);
        }
        self.used.insert(start, size);
        Some(start)
    }

    /// Give back the allocation starting at `offset`; false if there is none.
    pub fn free(&mut self, offset: u64) -> bool {
        let Some(mut len) = self.used.remove(&offset) else {
            return false;
        };
        let mut start = offset;
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            if ps + pl == start {
                self.free.remove(&ps);
                start = ps;
                len += pl;
            }
        }
        if let Some(nl) = self.free.remove(&(start + len)) {
            len += nl;
        }
        self.free.insert(start, len);
        true
    }

    /// Bytes not allocated.
    pub fn free_bytes(&self) -> u64 {
        self.free.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_with_merging() {
        let mut a = PoolAllocator::new(1024);
        let x = a.alloc(100).unwrap();
        let y = a.alloc(64).unwrap();
        let z = a.alloc(64).unwrap();
        assert_eq!((x, y, z), (0, 128, 192));
        assert!(a.alloc(1024).is_none());
        assert!(a.free(y));
        assert!(!a.free(y), "double free refused");
        assert!(!a.free(5), "unknown offset refused");
        assert_eq!(a.alloc(10), Some(128), "hole reused");
        assert!(a.free(128));
        assert!(a.free(x));
        assert!(a.free(z));
        assert_eq!(a.free_bytes(), 1024);
        assert_eq!(a.alloc(1024), Some(0), "everything merged back");
        assert!(a.alloc(0).is_none());
        assert!(a.alloc(u64::MAX).is_none());
    }
}
