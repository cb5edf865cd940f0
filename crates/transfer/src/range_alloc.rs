//! The first-fit range allocator with coalescing: hands out aligned pieces
//! of one region by offset. The one owner of carving registered memory into
//! buffers: the store client's staging buffer, the dummy client's shared
//! pool (`alloc_from_mem_pool`) and the Python engine's managed pool use it.
//!
//! Pure bookkeeping over `[0, capacity)`; it never touches memory.
//!
//! Invariants (checked against a model by the property test below):
//! - free ranges never overlap or touch (touching ones are merged on free);
//! - every live allocation is one aligned range, inside `[0, capacity)`,
//!   overlapping no free range and no other allocation;
//! - free ranges and live allocations cover `[0, capacity)` exactly;
//! - the lowest free range that fits is the one used (first fit).

use std::collections::{BTreeMap, HashMap};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    capacity: usize,
    align: usize,
    /// offset -> length of each free range.
    free: BTreeMap<usize, usize>,
    /// offset -> (rounded) length of each live allocation.
    used: HashMap<usize, usize>,
}

impl RangeAllocator {
    /// An allocator over `len` bytes rounded down to `align`.
    ///
    /// # Panics
    /// If `align` is not a power of two.
    pub fn new(len: usize, align: usize) -> Self {
        assert!(align.is_power_of_two(), "alignment {align}");
        let capacity = len / align * align;
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        RangeAllocator {
            capacity,
            align,
            free,
            used: HashMap::new(),
        }
    }

    /// Bytes managed (the length given to [`new`](Self::new), rounded down).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Offset of a fresh range of `size` bytes (rounded up to the
    /// alignment), or `None` for 0 bytes or when no free range fits now.
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

    /// Give back the allocation starting at `offset`; false (and nothing
    /// changes) if no allocation starts there.
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
    pub fn free_bytes(&self) -> usize {
        self.free.values().sum()
    }

    /// Number of free ranges (1 when everything is free).
    pub fn free_ranges(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_fit_with_merging() {
        let mut a = RangeAllocator::new(1024 + 10, 64);
        assert_eq!(a.capacity(), 1024);
        let x = a.alloc(100).unwrap();
        let y = a.alloc(64).unwrap();
        let z = a.alloc(64).unwrap();
        assert_eq!((x, y, z), (0, 128, 192));
        assert!(a.alloc(1024).is_none());
        assert!(a.free(y));
        assert!(!a.free(y), "double free refused");
        assert!(!a.free(5), "unknown offset refused");
        assert_eq!(a.alloc(10), Some(128), "hole reused");
        assert!(a.free(128) && a.free(x) && a.free(z));
        assert_eq!(a.free_bytes(), 1024);
        assert_eq!(a.free_ranges(), 1);
        assert_eq!(a.alloc(1024), Some(0), "everything merged back");
        assert!(a.alloc(0).is_none());
        assert!(a.alloc(usize::MAX).is_none());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize),
        /// Free the live allocation with this index (mod the number live),
        /// or, when nothing is live, this offset (refused).
        Free(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1usize..3000).prop_map(Op::Alloc),
            2 => any::<usize>().prop_map(Op::Free),
        ]
    }

    /// The model: one flag per aligned unit, first fit by linear scan.
    struct Model {
        units: Vec<bool>,
        align: usize,
    }

    impl Model {
        fn alloc(&mut self, size: usize) -> Option<usize> {
            let n = size.div_ceil(self.align);
            let mut run = 0;
            for i in 0..self.units.len() {
                run = if self.units[i] { 0 } else { run + 1 };
                if run == n {
                    let start = i + 1 - n;
                    self.units[start..=i].iter_mut().for_each(|u| *u = true);
                    return Some(start * self.align);
                }
            }
            None
        }

        fn free(&mut self, off: usize, size: usize) {
            let (s, n) = (off / self.align, size.div_ceil(self.align));
            self.units[s..s + n].iter_mut().for_each(|u| *u = false);
        }
    }

    proptest! {
        #[test]
        fn matches_the_first_fit_model(
            units in 1usize..64,
            align_log in 0u32..7,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let align = 1usize << align_log;
            let cap = units * 64;
            let mut a = RangeAllocator::new(cap + align / 2, align);
            prop_assert_eq!(a.capacity(), (cap + align / 2) / align * align);
            let mut m = Model { units: vec![false; a.capacity() / align], align };
            let mut live: Vec<(usize, usize)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(size) => {
                        let got = a.alloc(size);
                        prop_assert_eq!(got, m.alloc(size), "first fit of {}", size);
                        if let Some(off) = got {
                            prop_assert_eq!(off % align, 0);
                            live.push((off, size));
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (off, size) = live.swap_remove(i % live.len());
                        prop_assert!(a.free(off));
                        prop_assert!(!a.free(off), "double free");
                        m.free(off, size);
                    }
                    Op::Free(i) => prop_assert!(!a.free(i), "nothing is live"),
                }
                let used: usize = live.iter().map(|&(_, s)| s.div_ceil(align) * align).sum();
                prop_assert_eq!(a.free_bytes() + used, a.capacity());
                let mut prev_end = None;
                for (&o, &l) in &a.free {
                    prop_assert!(l > 0 && o + l <= a.capacity());
                    prop_assert!(prev_end.is_none_or(|e| e < o), "free ranges touch");
                    prev_end = Some(o + l);
                }
            }
            for (off, _) in live {
                prop_assert!(a.free(off));
            }
            prop_assert_eq!(a.free_ranges(), usize::from(a.capacity() > 0));
        }
    }
}
