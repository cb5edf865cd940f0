//! The cache engine shared by every policy: a hash map from block hash to a
//! slab slot, and an indexed binary min-heap of the *unpinned* slots ordered by
//! the policy's key. Pinned blocks leave the heap, so they can never be chosen
//! for eviction; each slot remembers its heap position so a key change is one
//! sift (O(log n)). Heap entries carry their key inline so sifting touches
//! one contiguous array.
//!
//! Within one `insert`/`access` call the request's own prefix must not be
//! evicted (that would punch a hole in it). Rather than pin and unpin every
//! block, each call opens an epoch and stamps its blocks with it (`guard`);
//! newly inserted blocks stay out of the heap until the call ends, and a
//! stamped block found at the top of the heap is set aside and put back
//! afterwards (rare: the call's blocks were just made most recent).

use super::policy::{stamp, BlockMeta, EvictionPolicy};
use super::{BlockCache, BlockHash, CacheStats, InsertOutcome};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Marks a slot that is not in the heap (pinned).
const NOT_IN_HEAP: u32 = u32::MAX;

/// Block hashes are already well-mixed ids (or small integers in the traces);
/// a multiply-xorshift is enough and much faster than SipHash. The keys come
/// from traces and the scheduler, not from untrusted peers.
#[derive(Default)]
struct BlockHasher(u64);

impl Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        let x = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^ (x >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x100_0000_01B3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type BlockMap = HashMap<BlockHash, u32, BuildHasherDefault<BlockHasher>>;

#[derive(Debug, Clone)]
struct Slot {
    hash: BlockHash,
    meta: BlockMeta,
    heap_pos: u32,
    pins: u32,
    /// Epoch of the last call whose prefix contains this block.
    guard: u64,
}

/// A bounded block cache evicting by policy `P`. See the module docs of
/// [`crate::cache`] for the contract.
#[derive(Debug)]
pub struct PolicyCache<P: EvictionPolicy> {
    capacity: usize,
    map: BlockMap,
    slots: Vec<Slot>,
    free: Vec<u32>,
    heap: Vec<(P::Key, u32)>,
    epoch: u64,
    stats: CacheStats,
    /// Scratch: blocks inserted by the current call, not yet in the heap.
    pending: Vec<u32>,
    /// Scratch: guarded blocks lifted off the heap top during this call.
    stash: Vec<u32>,
}

impl<P: EvictionPolicy> PolicyCache<P> {
    /// An empty cache holding at most `capacity_blocks` blocks.
    pub fn new(capacity_blocks: usize) -> Self {
        let capacity = capacity_blocks.min(u32::MAX as usize - 1);
        PolicyCache {
            capacity,
            map: BlockMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            heap: Vec::new(),
            epoch: 0,
            stats: CacheStats::default(),
            pending: Vec::new(),
            stash: Vec::new(),
        }
    }

    /// Number of resident blocks that are pinned.
    pub fn pinned_len(&self) -> usize {
        self.map.len() - self.heap.len()
    }

    /// Bookkeeping of a resident block (for tests and diagnostics).
    pub fn meta(&self, hash: BlockHash) -> Option<BlockMeta> {
        self.map.get(&hash).map(|&s| self.slots[s as usize].meta)
    }

    /// The block that would be evicted next, if any.
    pub fn next_victim(&self) -> Option<BlockHash> {
        self.heap.first().map(|&(_, s)| self.slots[s as usize].hash)
    }

    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    // ---- heap maintenance -------------------------------------------------

    fn place(&mut self, i: usize, entry: (P::Key, u32)) {
        self.slots[entry.1 as usize].heap_pos = i as u32;
        self.heap[i] = entry;
    }

    fn sift_up(&mut self, mut i: usize) {
        let entry = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].0 <= entry.0 {
                break;
            }
            let p = self.heap[parent];
            self.place(i, p);
            i = parent;
        }
        self.place(i, entry);
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        let entry = self.heap[i];
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && self.heap[r].0 < self.heap[l].0 {
                r
            } else {
                l
            };
            if self.heap[c].0 >= entry.0 {
                break;
            }
            let ce = self.heap[c];
            self.place(i, ce);
            i = c;
        }
        self.place(i, entry);
    }

    fn heap_push(&mut self, slot: u32) {
        let key = P::key(&self.slots[slot as usize].meta);
        self.heap.push((key, slot));
        let i = self.heap.len() - 1;
        self.sift_up(i);
    }

    fn heap_remove(&mut self, slot: u32) {
        let i = self.slots[slot as usize].heap_pos as usize;
        debug_assert!(i < self.heap.len() && self.heap[i].1 == slot);
        let last = self.heap.pop().expect("slot is in the heap");
        self.slots[slot as usize].heap_pos = NOT_IN_HEAP;
        if last.1 != slot {
            let old = self.heap[i].0;
            self.place(i, last);
            if last.0 < old {
                self.sift_up(i);
            } else {
                self.sift_down(i);
            }
        }
    }

    /// Recomputes a slot's key after its meta changed.
    fn rekey(&mut self, slot: u32) {
        let s = &self.slots[slot as usize];
        let pos = s.heap_pos;
        if pos == NOT_IN_HEAP {
            return;
        }
        let key = P::key(&s.meta);
        let i = pos as usize;
        let old = std::mem::replace(&mut self.heap[i].0, key);
        if key < old {
            self.sift_up(i);
        } else {
            self.sift_down(i);
        }
    }

    // ---- slots --------------------------------------------------------------

    fn pin_slot(&mut self, slot: u32) {
        if self.slots[slot as usize].pins == 0 {
            self.heap_remove(slot);
        }
        self.slots[slot as usize].pins += 1;
    }

    fn unpin_slot(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if s.pins == 0 {
            return;
        }
        s.pins -= 1;
        if s.pins == 0 {
            self.heap_push(slot);
        }
    }

    fn free_slot(&mut self, slot: u32) {
        let hash = self.slots[slot as usize].hash;
        self.map.remove(&hash);
        self.free.push(slot);
    }

    /// Evicts the smallest-key unpinned block not guarded by `epoch`;
    /// `None` when there is none.
    fn evict_one(&mut self, epoch: u64) -> Option<BlockHash> {
        loop {
            let &(_, slot) = self.heap.first()?;
            self.heap_remove(slot);
            if self.slots[slot as usize].guard == epoch {
                self.stash.push(slot);
                continue;
            }
            self.free_slot(slot);
            self.stats.evicted_blocks += 1;
            return Some(self.slots[slot as usize].hash);
        }
    }

    /// Makes a new slot for `hash`, outside the heap.
    fn new_slot(&mut self, hash: BlockHash, depth: usize, epoch: u64) -> u32 {
        let meta = BlockMeta {
            position: depth.min(u32::MAX as usize) as u32,
            uses: 1,
            last_use: stamp(epoch, depth),
        };
        let slot = Slot {
            hash,
            meta,
            heap_pos: NOT_IN_HEAP,
            pins: 0,
            guard: epoch,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert(hash, idx);
        idx
    }

    /// Touches the resident leading run of `hashes` in call `epoch`
    /// (use count +1, fresh stamp, guarded) and counts the lookup.
    fn touch_run(&mut self, hashes: &[BlockHash], epoch: u64) -> usize {
        let mut hit = 0;
        for (depth, h) in hashes.iter().enumerate() {
            let Some(&slot) = self.map.get(h) else { break };
            let s = &mut self.slots[slot as usize];
            s.meta.uses += 1;
            s.meta.last_use = stamp(epoch, depth);
            s.guard = epoch;
            self.rekey(slot);
            hit += 1;
        }
        self.stats.lookups += 1;
        self.stats.queried_blocks += hashes.len() as u64;
        self.stats.hit_blocks += hit as u64;
        hit
    }

    /// Makes `hashes[from..]` resident in call `epoch` (see `insert`).
    fn fill(&mut self, hashes: &[BlockHash], from: usize, epoch: u64) -> InsertOutcome {
        let mut out = InsertOutcome {
            resident_prefix: from,
            ..InsertOutcome::default()
        };
        for (depth, &h) in hashes.iter().enumerate().skip(from) {
            if let Some(&slot) = self.map.get(&h) {
                let s = &mut self.slots[slot as usize];
                if s.guard != epoch {
                    s.guard = epoch;
                    s.meta.last_use = stamp(epoch, depth);
                    self.rekey(slot);
                }
                out.resident_prefix = depth + 1;
                continue;
            }
            if self.map.len() >= self.capacity {
                match self.evict_one(epoch) {
                    Some(victim) => out.evicted.push(victim),
                    None => {
                        self.stats.rejected_blocks += (hashes.len() - depth) as u64;
                        break;
                    }
                }
            }
            let slot = self.new_slot(h, depth, epoch);
            self.pending.push(slot);
            out.inserted += 1;
            out.resident_prefix = depth + 1;
        }
        while let Some(slot) = self.pending.pop() {
            self.heap_push(slot);
        }
        while let Some(slot) = self.stash.pop() {
            self.heap_push(slot);
        }
        self.stats.inserted_blocks += out.inserted as u64;
        out
    }
}

impl<P: EvictionPolicy> BlockCache for PolicyCache<P> {
    fn policy_name(&self) -> &'static str {
        P::NAME
    }

    fn capacity_blocks(&self) -> usize {
        self.capacity
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn contains(&self, hash: BlockHash) -> bool {
        self.map.contains_key(&hash)
    }

    fn lookup_prefix(&self, hashes: &[BlockHash]) -> usize {
        hashes
            .iter()
            .take_while(|h| self.map.contains_key(h))
            .count()
    }

    fn touch(&mut self, hashes: &[BlockHash]) -> usize {
        let epoch = self.next_epoch();
        self.touch_run(hashes, epoch)
    }

    fn insert(&mut self, hashes: &[BlockHash]) -> InsertOutcome {
        let epoch = self.next_epoch();
        self.fill(hashes, 0, epoch)
    }

    fn access(&mut self, hashes: &[BlockHash]) -> usize {
        let epoch = self.next_epoch();
        let hit = self.touch_run(hashes, epoch);
        if hit < hashes.len() {
            self.fill(hashes, hit, epoch);
        }
        hit
    }

    fn pin(&mut self, hashes: &[BlockHash]) -> usize {
        let mut n = 0;
        for h in hashes {
            let Some(&slot) = self.map.get(h) else { break };
            self.pin_slot(slot);
            n += 1;
        }
        n
    }

    fn unpin(&mut self, hashes: &[BlockHash]) {
        for h in hashes {
            if let Some(&slot) = self.map.get(h) {
                self.unpin_slot(slot);
            }
        }
    }

    fn remove(&mut self, hash: BlockHash) -> bool {
        let Some(&slot) = self.map.get(&hash) else {
            return false;
        };
        if self.slots[slot as usize].heap_pos != NOT_IN_HEAP {
            self.heap_remove(slot);
        }
        self.slots[slot as usize].pins = 0;
        self.free_slot(slot);
        true
    }

    fn stats(&self) -> CacheStats {
        self.stats
    }

    fn reset_stats(&mut self) {
        self.stats = CacheStats::default();
    }
}
