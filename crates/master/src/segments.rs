//! The segment table: mounted memory regions, their owners and offset allocators, and the
//! placement of pieces on them (`random` / `free_ratio_first`).
//!
//! Invariants: `by_name` maps exactly the mounted segments to their slot; a slot id is only
//! reused after every piece that referenced it has been dropped (the state machine drops
//! them when it unmounts); `used`/`total` are the sums over mounted segments.

use super::allocator::OffsetAllocator;
use crate::config::AllocationStrategy;
use mooncake_store_protocol::{ClientId, SegmentDesc};
use rand::Rng;
use std::collections::HashMap;

/// Index of a mounted segment in the table.
pub type SegId = u32;

/// One mounted segment.
#[derive(Debug)]
pub struct Segment {
    pub name: String,
    pub owner: ClientId,
    pub base_addr: u64,
    pub size: u64,
    pub protocol: String,
    pub location: String,
    pub alloc: OffsetAllocator,
}

impl Segment {
    /// Fraction of the segment that is free.
    pub fn free_ratio(&self) -> f64 {
        if self.alloc.capacity() == 0 {
            0.0
        } else {
            self.alloc.free() as f64 / self.alloc.capacity() as f64
        }
    }
}

/// All mounted segments.
#[derive(Debug, Default)]
pub struct Segments {
    slots: Vec<Option<Segment>>,
    free_ids: Vec<SegId>,
    by_name: HashMap<String, SegId>,
}

impl Segments {
    /// Mount `desc` for `owner`; returns the new id.
    pub fn insert(&mut self, owner: ClientId, desc: &SegmentDesc) -> SegId {
        let seg = Segment {
            name: desc.name.clone(),
            owner,
            base_addr: desc.base_addr,
            size: desc.size,
            protocol: desc.protocol.clone(),
            location: desc.location.clone(),
            alloc: OffsetAllocator::new(desc.size),
        };
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(seg);
                id
            }
            None => {
                self.slots.push(Some(seg));
                (self.slots.len() - 1) as SegId
            }
        };
        self.by_name.insert(desc.name.clone(), id);
        id
    }

    /// Unmount; the caller must already have dropped every piece in it.
    pub fn remove(&mut self, id: SegId) -> Option<Segment> {
        let seg = self.slots.get_mut(id as usize)?.take()?;
        self.by_name.remove(&seg.name);
        self.free_ids.push(id);
        Some(seg)
    }

    pub fn id_of(&self, name: &str) -> Option<SegId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: SegId) -> Option<&Segment> {
        self.slots.get(id as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, id: SegId) -> Option<&mut Segment> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    /// Mounted segments with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (SegId, &Segment)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i as SegId, s)))
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Total usable bytes.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, s)| s.alloc.capacity()).sum()
    }

    /// Allocated bytes.
    pub fn used(&self) -> u64 {
        self.iter().map(|(_, s)| s.alloc.used()).sum()
    }

    /// Return a piece's space to its segment (no-op if the segment is gone).
    pub fn free(&mut self, id: SegId, off: u64, len: u64) {
        if let Some(s) = self.get_mut(id) {
            let ok = s.alloc.free_range(off, len);
            debug_assert!(ok, "freeing an unallocated range {off}+{len} in {}", s.name);
        }
    }

    /// Allocate `len` bytes in a segment not in `exclude`, trying `preferred` first, then
    /// choosing by `strategy`. Returns (segment, offset).
    pub fn place(
        &mut self,
        len: u64,
        exclude: &[SegId],
        preferred: &[SegId],
        strategy: AllocationStrategy,
        rng: &mut impl Rng,
    ) -> Option<(SegId, u64)> {
        for &p in preferred {
            if exclude.contains(&p) {
                continue;
            }
            if let Some(off) = self.get_mut(p).and_then(|s| s.alloc.alloc(len)) {
                return Some((p, off));
            }
        }
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        match strategy {
            AllocationStrategy::Random => {
                // Scan circularly from a random start: O(1) expected when space is plentiful.
                let start = rng.gen_range(0..n);
                for i in 0..n {
                    let id = ((start + i) % n) as SegId;
                    if exclude.contains(&id) {
                        continue;
                    }
                    if let Some(off) = self.get_mut(id).and_then(|s| s.alloc.alloc(len)) {
                        return Some((id, off));
                    }
                }
                None
            }
            AllocationStrategy::FreeRatioFirst => {
                let best = self
                    .iter()
                    .filter(|(id, s)| !exclude.contains(id) && s.alloc.largest_free() >= len)
                    .max_by(|a, b| a.1.free_ratio().total_cmp(&b.1.free_ratio()))
                    .map(|(id, _)| id)?;
                let off = self.get_mut(best)?.alloc.alloc(len)?;
                Some((best, off))
            }
        }
    }
}
