//! Offset allocator of one segment: best-fit over a free list with coalescing.
//!
//! Invariants (checked by the property tests): free extents never overlap and are never
//! adjacent (adjacent ones are merged); `used + sum(free) == capacity`; every allocation
//! lies inside `[0, capacity)`, is [`ALIGN`]-aligned, and overlaps no other live allocation.
//! Both indexes (`by_offset`, `by_size`) always describe the same set of extents.

use std::collections::{BTreeMap, BTreeSet};

/// Granularity of allocations (bytes). Keeps pieces cache-line aligned for memcpy.
pub const ALIGN: u64 = 64;

/// Round `len` up to the allocation granularity (`None` on overflow).
pub fn aligned(len: u64) -> Option<u64> {
    len.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// Best-fit offset allocator over `[0, capacity)`.
#[derive(Debug, Clone)]
pub struct OffsetAllocator {
    capacity: u64,
    used: u64,
    /// offset -> length of each free extent.
    by_offset: BTreeMap<u64, u64>,
    /// (length, offset) of each free extent, for best fit.
    by_size: BTreeSet<(u64, u64)>,
}

impl OffsetAllocator {
    /// An allocator with all of `[0, capacity)` free (capacity rounded down to [`ALIGN`]).
    pub fn new(capacity: u64) -> Self {
        let capacity = capacity & !(ALIGN - 1);
        let mut a = OffsetAllocator {
            capacity,
            used: 0,
            by_offset: BTreeMap::new(),
            by_size: BTreeSet::new(),
        };
        if capacity > 0 {
            a.insert_free(0, capacity);
        }
        a
    }

    /// Usable bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes allocated (aligned sizes).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes free.
    pub fn free(&self) -> u64 {
        self.capacity - self.used
    }

    /// Largest contiguous free extent.
    pub fn largest_free(&self) -> u64 {
        self.by_size.last().map(|&(l, _)| l).unwrap_or(0)
    }

    /// Number of free extents (fragmentation indicator).
    pub fn free_extents(&self) -> usize {
        self.by_offset.len()
    }

    fn insert_free(&mut self, off: u64, len: u64) {
        self.by_offset.insert(off, len);
        self.by_size.insert((len, off));
    }

    fn remove_free(&mut self, off: u64, len: u64) {
        self.by_offset.remove(&off);
        self.by_size.remove(&(len, off));
    }

    /// Allocate `len` bytes (rounded up to [`ALIGN`]); returns the offset, or `None` when no
    /// free extent is large enough. `len == 0` is refused.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        if len == 0 {
            return None;
        }
        let alen = aligned(len)?;
        let &(flen, off) = self.by_size.range((alen, 0)..).next()?;
        self.remove_free(off, flen);
        if flen > alen {
            self.insert_free(off + alen, flen - alen);
        }
        self.used += alen;
        Some(off)
    }

    /// Allocate exactly `[off, off + len)` (rounded up to [`ALIGN`]) — rebuilding an
    /// allocation recorded earlier (op-log replay). False (and nothing changes) when that
    /// range is not wholly free, misaligned or out of bounds.
    pub fn alloc_at(&mut self, off: u64, len: u64) -> bool {
        let Some(alen) = aligned(len) else {
            return false;
        };
        let Some(end) = off.checked_add(alen) else {
            return false;
        };
        if len == 0 || !off.is_multiple_of(ALIGN) || end > self.capacity {
            return false;
        }
        let Some((fo, fl)) = self
            .by_offset
            .range(..=off)
            .next_back()
            .map(|(&o, &l)| (o, l))
        else {
            return false;
        };
        if fo + fl < end {
            return false;
        }
        self.remove_free(fo, fl);
        if fo < off {
            self.insert_free(fo, off - fo);
        }
        if end < fo + fl {
            self.insert_free(end, fo + fl - end);
        }
        self.used += alen;
        true
    }

    /// Free an allocation made by [`alloc`](Self::alloc) with the same `len`. Returns false
    /// (and changes nothing) if the range is out of bounds or overlaps free space, i.e. was
    /// not allocated.
    pub fn free_range(&mut self, off: u64, len: u64) -> bool {
        let Some(alen) = aligned(len) else {
            return false;
        };
        let Some(end) = off.checked_add(alen) else {
            return false;
        };
        if len == 0 || !off.is_multiple_of(ALIGN) || end > self.capacity {
            return false;
        }
        let prev = self
            .by_offset
            .range(..=off)
            .next_back()
            .map(|(&o, &l)| (o, l));
        if let Some((po, pl)) = prev {
            if po + pl > off {
                return false;
            }
        }
        let next = self.by_offset.range(off..).next().map(|(&o, &l)| (o, l));
        if let Some((no, _)) = next {
            if no < end {
                return false;
            }
        }
        let (mut start, mut stop) = (off, end);
        if let Some((po, pl)) = prev {
            if po + pl == off {
                self.remove_free(po, pl);
                start = po;
            }
        }
        if let Some((no, nl)) = next {
            if no == end {
                self.remove_free(no, nl);
                stop = no + nl;
            }
        }
        self.insert_free(start, stop - start);
        self.used -= alen;
        true
    }

    /// Check the invariants; for tests.
    pub fn check(&self) -> Result<(), String> {
        let mut last_end = None::<u64>;
        let mut free = 0u64;
        for (&o, &l) in &self.by_offset {
            if l == 0 || o + l > self.capacity {
                return Err(format!("bad extent {o}+{l}"));
            }
            if let Some(e) = last_end {
                if o <= e {
                    return Err(format!("extent {o} overlaps or touches previous end {e}"));
                }
            }
            if !self.by_size.contains(&(l, o)) {
                return Err("indexes disagree".into());
            }
            last_end = Some(o + l);
            free += l;
        }
        if self.by_size.len() != self.by_offset.len() {
            return Err("index sizes disagree".into());
        }
        if free + self.used != self.capacity {
            return Err(format!(
                "free {free} + used {} != capacity {}",
                self.used, self.capacity
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn best_fit_and_coalesce() {
        let mut a = OffsetAllocator::new(1024);
        let x = a.alloc(100).unwrap();
        let y = a.alloc(64).unwrap();
        let z = a.alloc(256).unwrap();
        assert_eq!((x, y, z), (0, 128, 192));
        assert!(a.free_range(y, 64));
        // A 64-byte request takes the 64-byte hole (best fit), not the tail.
        assert_eq!(a.alloc(10), Some(128));
        assert!(a.free_range(128, 10));
        assert!(a.free_range(x, 100));
        assert!(a.free_range(z, 256));
        assert_eq!(a.free_extents(), 1);
        assert_eq!(a.largest_free(), 1024);
        a.check().unwrap();
    }

    #[test]
    fn refuses_bad_frees_and_full() {
        let mut a = OffsetAllocator::new(256);
        assert_eq!(a.alloc(0), None);
        assert_eq!(a.alloc(257), None);
        assert_eq!(a.alloc(u64::MAX), None);
        let x = a.alloc(256).unwrap();
        assert_eq!(a.alloc(1), None);
        assert!(!a.free_range(x + 64, 64 * 10));
        assert!(!a.free_range(3, 64));
        assert!(a.free_range(x, 256));
        assert!(!a.free_range(x, 256), "double free refused");
        a.check().unwrap();
    }

    proptest! {
        #[test]
        fn never_overlaps(ops in proptest::collection::vec((any::<bool>(), 1u64..5000, any::<prop::sample::Index>()), 1..300)) {
            let mut a = OffsetAllocator::new(64 * 1024);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (is_alloc, len, idx) in ops {
                if is_alloc || live.is_empty() {
                    if let Some(off) = a.alloc(len) {
                        prop_assert_eq!(off % ALIGN, 0);
                        prop_assert!(off + len <= a.capacity());
                        for &(o, l) in &live {
                            prop_assert!(off + len <= o || o + l <= off, "overlap");
                        }
                        live.push((off, len));
                    } else {
                        prop_assert!(a.largest_free() < aligned(len).unwrap());
                    }
                } else {
                    let (o, l) = live.swap_remove(idx.index(live.len()));
                    prop_assert!(a.free_range(o, l));
                }
                let used: u64 = live.iter().map(|&(_, l)| aligned(l).unwrap()).sum();
                prop_assert_eq!(a.used(), used);
                a.check().map_err(TestCaseError::fail)?;
            }
            for (o, l) in live { prop_assert!(a.free_range(o, l)); }
            prop_assert_eq!(a.free_extents(), 1);
        }
    }
}
