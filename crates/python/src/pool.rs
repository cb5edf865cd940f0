//! A first-fit range allocator with coalescing: hands out pieces of one
//! registered region (the engine's managed pool) by offset.
//!
//! Pure bookkeeping, no memory access. Invariants: free ranges never touch or
//! overlap (neighbours are merged on free); every live allocation is exactly
//! one range that is in `used` and in no free range.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
pub struct RangeAllocator {
    align: usize,
    /// offset -> length of each free range.
    free: BTreeMap<usize, usize>,
    /// offset -> length of each live allocation.
    used: HashMap<usize, usize>,
}

impl RangeAllocator {
    /// `align` must be a power of two.
    pub fn new(len: usize, align: usize) -> Self {
        assert!(align.is_power_of_two());
        let mut free = BTreeMap::new();
        if len > 0 {
            free.insert(0, len);
        }
        RangeAllocator {
            align,
            free,
            used: HashMap::new(),
        }
    }

    /// Offset of a fresh range of at least `size` bytes, or None when no free
    /// range is large enough.
    pub fn alloc(&mut self, size: usize) -> Option<usize> {
        if size == 0 {
            return None;
        }
        let size = size.checked_add(self.align - 1)? & !(self.align - 1);
        let (&off, &len) = self.free.iter().find(|(_, &l)| l >= size)?;
        self.free.remove(&off);
        if len > size {
            self.free.insert(off + size, len - size);
        }
        self.used.insert(off, size);
        Some(off)
    }

    /// Return the allocation at `offset`; false if none starts there.
    pub fn free(&mut self, offset: usize) -> bool {
        let Some(size) = self.used.remove(&offset) else {
            return false;
        };
        let mut start = offset;
        let mut end = offset + size;
        if let Some((&p, &pl)) = self.free.range(..offset).next_back() {
            if p + pl == offset {
                self.free.remove(&p);
                start = p;
            }
        }
        if let Some(nl) = self.free.remove(&end) {
            end += nl;
        }
        self.free.insert(start, end - start);
        true
    }

    /// Bytes in free ranges.
    #[cfg(test)]
    pub fn free_bytes(&self) -> usize {
        self.free.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_coalesces_back_to_one_range() {
        let mut a = RangeAllocator::new(1 << 20, 64);
        let x = a.alloc(100).unwrap();
        let y = a.alloc(4096).unwrap();
        let z = a.alloc(1).unwrap();
        assert_eq!(x, 0);
        assert_eq!(y, 128);
        assert_eq!(z, 128 + 4096);
        assert!(a.free(y));
        assert!(!a.free(y), "double free refused");
        assert!(a.free(x));
        assert!(a.free(z));
        assert_eq!(a.free_bytes(), 1 << 20);
        assert_eq!(a.free.len(), 1);
    }

    #[test]
    fn exhaustion_and_reuse() {
        let mut a = RangeAllocator::new(1024, 64);
        let v: Vec<usize> = (0..16).map(|_| a.alloc(64).unwrap()).collect();
        assert!(a.alloc(1).is_none());
        assert!(a.free(v[5]));
        assert_eq!(a.alloc(64), Some(v[5]));
        assert!(a.alloc(0).is_none());
        assert!(!a.free(3));
    }

    #[test]
    fn random_ops_keep_invariants() {
        let mut a = RangeAllocator::new(1 << 16, 16);
        let mut live: Vec<(usize, usize)> = Vec::new();
        let mut seed = 12345u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            if next() % 3 != 0 {
                let size = (next() % 2000 + 1) as usize;
                if let Some(off) = a.alloc(size) {
                    for &(o, s) in &live {
                        assert!(off + size <= o || o + s <= off, "overlap");
                    }
                    assert!(off + size <= 1 << 16);
                    live.push((off, size));
                }
            } else if !live.is_empty() {
                let i = (next() as usize) % live.len();
                let (off, _) = live.swap_remove(i);
                assert!(a.free(off));
            }
        }
        for (off, _) in live.drain(..) {
            assert!(a.free(off));
        }
        assert_eq!(a.free_bytes(), 1 << 16);
        assert_eq!(a.free.len(), 1);
    }
}
