//! KV-cache block bookkeeping with pluggable eviction.
//!
//! A cache holds *prefix blocks* identified by their hash (the traces'
//! `hash_ids`, 512 tokens each). Because a block's hash covers the whole
//! prefix up to and including it, a request can only reuse the **leading run**
//! of its blocks that are resident: [`BlockCache::lookup_prefix`] returns the
//! length of that run.
//!
//! This module owns the bookkeeping only (which blocks are resident, in which
//! eviction order); it never stores KV bytes. The simulator uses one cache per
//! instance GPU / DRAM share and one for the global pool.
//!
//! Invariants (checked by property tests):
//! - `len() <= capacity_blocks()` after every call;
//! - pinned blocks are never evicted;
//! - `lookup_prefix` is side-effect free; only [`BlockCache::touch`] /
//!   [`BlockCache::access`] count hits in [`CacheStats`].
//!
//! Policies: [`LruCache`], [`LfuCache`] and [`LengthAwareCache`] (see
//! [`policy`] for the paper's LengthAwareCache and our reading of it). All
//! share one engine ([`PolicyCache`]): a hash map from block hash to a slab
//! slot plus an indexed binary min-heap over the policy's eviction key, so
//! every operation is O(log n) per block.

mod heap;
pub mod policy;

pub use heap::PolicyCache;
pub use policy::{EvictionPolicy, LengthAwarePolicy, LfuPolicy, LruPolicy};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A prefix block's hash (a trace `hash_ids` entry).
pub type BlockHash = u64;

/// LRU eviction: the least recently used block goes first.
pub type LruCache = PolicyCache<LruPolicy>;
/// LFU eviction: the least frequently used block goes first (ties: LRU).
pub type LfuCache = PolicyCache<LfuPolicy>;
/// The paper's LengthAwareCache (see [`LengthAwarePolicy`]).
pub type LengthAwareCache = PolicyCache<LengthAwarePolicy>;

/// Counters every cache keeps. Lookups are counted by [`BlockCache::touch`]
/// (and so by [`BlockCache::access`]), not by the pure
/// [`BlockCache::lookup_prefix`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Calls to `touch` / `access`.
    pub lookups: u64,
    /// Blocks asked for in those calls.
    pub queried_blocks: u64,
    /// Blocks of those calls found resident as a leading run.
    pub hit_blocks: u64,
    /// Blocks newly inserted.
    pub inserted_blocks: u64,
    /// Blocks evicted to make room.
    pub evicted_blocks: u64,
    /// Blocks not inserted because everything left was pinned.
    pub rejected_blocks: u64,
}

impl CacheStats {
    /// `hit_blocks / queried_blocks` (0 when nothing was queried).
    pub fn hit_ratio(&self) -> f64 {
        if self.queried_blocks == 0 {
            0.0
        } else {
            self.hit_blocks as f64 / self.queried_blocks as f64
        }
    }
}

/// The outcome of [`BlockCache::insert`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Blocks newly made resident (already-resident ones are not counted).
    pub inserted: usize,
    /// Blocks evicted to make room, in eviction order.
    pub evicted: Vec<BlockHash>,
    /// Length of the leading run of the input now resident. Shorter than the
    /// input when the cache is smaller than the prefix or the rest is pinned;
    /// insertion stops at the first block that cannot fit, so no holes are made.
    pub resident_prefix: usize,
}

/// A bounded set of prefix blocks with an eviction policy.
///
/// Object safe: the simulator may hold `Box<dyn BlockCache>`s built by
/// [`new_cache`].
pub trait BlockCache: fmt::Debug + Send {
    /// The policy's name (`lru`, `lfu`, `length-aware`).
    fn policy_name(&self) -> &'static str;
    /// Maximum number of resident blocks.
    fn capacity_blocks(&self) -> usize;
    /// Number of resident blocks.
    fn len(&self) -> usize;
    /// Whether no block is resident.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether `hash` is resident.
    fn contains(&self, hash: BlockHash) -> bool;
    /// Length of the leading run of `hashes` that is resident. No side effects.
    fn lookup_prefix(&self, hashes: &[BlockHash]) -> usize;
    /// Records a use of the resident leading run of `hashes` (a request's
    /// prefix): bumps recency / frequency, counts a lookup and its hits in the
    /// stats, and returns the run's length. Deeper blocks of the run are made
    /// "older" than shallower ones, so a prefix is evicted from its tail.
    fn touch(&mut self, hashes: &[BlockHash]) -> usize;
    /// Makes the blocks of the prefix `hashes` resident, in order, evicting
    /// unpinned blocks (never blocks of `hashes` itself) as needed. Blocks
    /// already resident get a fresh recency stamp; their use count and the
    /// hit statistics are left alone (that is `touch`'s job).
    fn insert(&mut self, hashes: &[BlockHash]) -> InsertOutcome;
    /// A request arrives: `touch` its prefix, then `insert` the rest. Returns
    /// the number of blocks that were hits.
    fn access(&mut self, hashes: &[BlockHash]) -> usize {
        let hit = self.touch(hashes);
        if hit < hashes.len() {
            self.insert(hashes);
        }
        hit
    }
    /// Pins the resident leading run of `hashes` (e.g. while a prefill reads
    /// it) so it cannot be evicted; pins nest. Returns how many were pinned.
    fn pin(&mut self, hashes: &[BlockHash]) -> usize;
    /// Undoes one `pin` of each resident block in `hashes`.
    fn unpin(&mut self, hashes: &[BlockHash]);
    /// Removes a block (pinned or not). Returns whether it was resident.
    fn remove(&mut self, hash: BlockHash) -> bool;
    /// Counters since creation or the last [`BlockCache::reset_stats`].
    fn stats(&self) -> CacheStats;
    /// Zeroes the counters (residency is kept).
    fn reset_stats(&mut self);
}

/// The eviction policies, by name (for flags and configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// [`LruCache`].
    Lru,
    /// [`LfuCache`].
    Lfu,
    /// [`LengthAwareCache`].
    LengthAware,
}

impl PolicyKind {
    /// Every policy, in a stable order.
    pub const ALL: [PolicyKind; 3] = [PolicyKind::Lru, PolicyKind::Lfu, PolicyKind::LengthAware];

    /// The flag / config name.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::Lfu => "lfu",
            PolicyKind::LengthAware => "length-aware",
        }
    }

    /// The name the paper's Figure 9 legend uses.
    pub fn paper_name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "LRUCache",
            PolicyKind::Lfu => "LFUCache",
            PolicyKind::LengthAware => "LengthAwareCache",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cache policy `{0}` (expected lru, lfu or length-aware)")]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "lru" | "lrucache" => Ok(PolicyKind::Lru),
            "lfu" | "lfucache" => Ok(PolicyKind::Lfu),
            "length-aware" | "lengthaware" | "lengthawarecache" => Ok(PolicyKind::LengthAware),
            _ => Err(UnknownPolicy(s.to_string())),
        }
    }
}

/// Builds a boxed cache of the given policy and capacity (in blocks).
pub fn new_cache(kind: PolicyKind, capacity_blocks: usize) -> Box<dyn BlockCache> {
    match kind {
        PolicyKind::Lru => Box::new(LruCache::new(capacity_blocks)),
        PolicyKind::Lfu => Box::new(LfuCache::new(capacity_blocks)),
        PolicyKind::LengthAware => Box::new(LengthAwareCache::new(capacity_blocks)),
    }
}

#[cfg(test)]
mod tests;
