//! The cache engine shared by every policy: a hash map from block hash to a
//! slab slot, and an indexed binary min-heap of the *unpinned* slots ordered by
//! the policy's key. Pinned blocks leave the heap, so they can never be chosen
//! for eviction; each slot remembers its heap position so a key change is one
//! sift (O(log n)).

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
struct Slot<K> {
    hash: BlockHash,
    meta: BlockMeta,
    key: K,
    heap_pos: u32,
    pins: u32,
}

/// A bounded block cache evicting by policy `P`. See the module docs of
/// [`crate::cache`] for the contract.
#[derive(Debug)]
pub struct PolicyCache<P: EvictionPolicy> {
    capacity: usize,
    map: BlockMap,
    slots: Vec<Slot<P::Key>>,
    free: Vec<u32>,
    heap: Vec<u32>,
    epoch: u64,
    stats: CacheStats,
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
        }
    }

    /// Number of resident blocks that are pinned.
    pub fn pinned_len(&self) -> usize {
        self.map.len() - self.heap.len()
    }

    /// Use count of a resident block (for tests and diagnostics).
    pub fn meta(&self, hash: BlockHash) -> Option<BlockMeta> {
        self.map.get(&hash).map(|&s| self.slots[s as usize].meta)
    }

    /// The block that would be evicted next, if any.
    pub fn next_victim(&self) -> Option<BlockHash> {
        self.heap.first().map(|&s| self.slots[s as usize].hash)
    }

    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    // ---- heap maintenance -------------------------------------------------

    fn key_at(&self, heap_idx: usize) -> P::Key {
        self.slots[self.heap[heap_idx] as usize].key
    }

    fn set_heap(&mut self, heap_idx: usize, slot: u32) {
        self.heap[heap_idx] = slot;
        self.slots[slot as usize].heap_pos = heap_idx as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        let slot = self.heap[i];
        let key = self.slots[slot as usize].key;
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.key_at(parent) <= key {
                break;
            }
            let p = self.heap[parent];
            self.set_heap(i, p);
            i = parent;
        }
        self.set_heap(i, slot);
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        let slot = self.heap[i];
        let key = self.slots[slot as usize].key;
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && self.key_at(r) < self.key_at(l) {
                r
            } else {
                l
            };
            if self.key_at(c) >= key {
                break;
            }
            let cs = self.heap[c];
            self.set_heap(i, cs);
            i = c;
        }
        self.set_heap(i, slot);
    }

    fn heap_push(&mut self, slot: u32) {
        self.heap.push(slot);
        let i = self.heap.len() - 1;
        self.sift_up(i);
    }

    fn heap_remove(&mut self, slot: u32) {
        let i = self.slots[slot as usize].heap_pos as usize;
        debug_assert_ne!(i as u32, NOT_IN_HEAP);
        let last = self.heap.pop().expect("slot is in the heap");
        self.slots[slot as usize].heap_pos = NOT_IN_HEAP;
        if last != slot {
            self.set_heap(i, last);
            self.sift_down(i);
            let j = self.slots[last as usize].heap_pos as usize;
            self.sift_up(j);
        }
    }

    /// Recomputes a slot's key after its meta changed.
    fn rekey(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.key = P::key(&s.meta);
        let pos = s.heap_pos;
        if pos != NOT_IN_HEAP {
            self.sift_down(pos as usize);
            let j = self.slots[slot as usize].heap_pos as usize;
            self.sift_up(j);
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
            s.key = P::key(&s.meta);
            self.heap_push(slot);
        }
    }

    fn free_slot(&mut self, slot: u32) {
        let hash = self.slots[slot as usize].hash;
        self.map.remove(&hash);
        self.free.push(slot);
    }

    /// Evicts the smallest-key unpinned block; `None` when all are pinned.
    fn evict_one(&mut self) -> Option<BlockHash> {
        let slot = *self.heap.first()?;
        self.heap_remove(slot);
        self.free_slot(slot);
        self.stats.evicted_blocks += 1;
        Some(self.slots[slot as usize].hash)
    }

    /// Makes a new, pinned slot for `hash`.
    fn new_pinned(&mut self, hash: BlockHash, position: usize, last_use: u64) -> u32 {
        let meta = BlockMeta {
            position: position.min(u32::MAX as usize) as u32,
            uses: 1,
            last_use,
        };
        let slot = Slot {
            hash,
            meta,
            key: P::key(&meta),
            heap_pos: NOT_IN_HEAP,
            pins: 1,
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
        let mut hit = 0;
        for (depth, h) in hashes.iter().enumerate() {
            let Some(&slot) = self.map.get(h) else { break };
            let m = &mut self.slots[slot as usize].meta;
            m.uses += 1;
            m.last_use = stamp(epoch, depth);
            self.rekey(slot);
            hit += 1;
        }
        self.stats.lookups += 1;
        self.stats.queried_blocks += hashes.len() as u64;
        self.stats.hit_blocks += hit as u64;
        hit
    }

    fn insert(&mut self, hashes: &[BlockHash]) -> InsertOutcome {
        let epoch = self.next_epoch();
        let mut out = InsertOutcome::default();
        // Pin the prefix as we go so that making room never evicts a block of
        // this very prefix (which would leave a hole); unpin at the end with
        // fresh recency stamps.
        let mut held: Vec<u32> = Vec::with_capacity(hashes.len());
        for (depth, &h) in hashes.iter().enumerate() {
            if let Some(&slot) = self.map.get(&h) {
                self.pin_slot(slot);
                self.slots[slot as usize].meta.last_use = stamp(epoch, depth);
                held.push(slot);
                continue;
            }
            if self.map.len() >= self.capacity {
                match self.evict_one() {
                    Some(victim) => out.evicted.push(victim),
                    None => {
                        self.stats.rejected_blocks += (hashes.len() - depth) as u64;
                        break;
                    }
                }
            }
            let slot = self.new_pinned(h, depth, stamp(epoch, depth));
            held.push(slot);
            out.inserted += 1;
        }
        out.resident_prefix = held.len();
        for slot in held {
            self.unpin_slot(slot);
        }
        self.stats.inserted_blocks += out.inserted as u64;
        out
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
        if self.slots[slot as usize].pins == 0 {
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
