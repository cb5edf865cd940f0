//! Eviction policies: each maps a block's bookkeeping ([`BlockMeta`]) to an
//! ordered key; the block with the **smallest** key is evicted first.
//!
//! Recency is a per-call epoch plus the block's depth in the prefix of that
//! call (see [`BlockMeta::last_use`]), so within one request the deepest block
//! is the "oldest": prefixes are eaten from the tail, which keeps the shared
//! heads that other requests can still match.
//!
//! ## LengthAwareCache (the paper's Figure 9 policy)
//!
//! The paper evaluates three policies in request order: LRUCache, LFUCache
//! and LengthAwareCache, describing the last as *like LFU, but preferring to
//! evict blocks that sit later (deeper) in requests*. Our reading:
//! frequency-first like LFU, then, among blocks with the same use count,
//! the **deepest prefix position** goes first, then the least recent. Depth
//! matters because a deep block is only reusable by requests that share the
//! whole prefix before it, and evicting it never orphans other cached
//! blocks, whereas evicting a shallow block makes every deeper block of that
//! prefix unreachable.

use std::cmp::Reverse;
use std::fmt::Debug;

/// What the cache records about each resident block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMeta {
    /// Index of the block in the prefix that inserted it (0 = first block).
    /// A block hash determines its whole prefix, so the position is fixed.
    pub position: u32,
    /// Times the block was used: 1 on insertion, +1 per `touch` that hit it.
    pub uses: u64,
    /// Recency stamp: `(epoch << DEPTH_BITS) | (DEPTH_MAX - depth)`; larger is
    /// more recent. Every `touch`/`insert` call opens a new epoch.
    pub last_use: u64,
}

/// Bits of [`BlockMeta::last_use`] that order blocks within one call.
pub const DEPTH_BITS: u32 = 24;
/// Deepest position that still orders correctly within one call.
pub const DEPTH_MAX: u64 = (1 << DEPTH_BITS) - 1;

/// Computes the recency stamp of the block at `depth` in a call at `epoch`.
pub fn stamp(epoch: u64, depth: usize) -> u64 {
    (epoch << DEPTH_BITS) | (DEPTH_MAX - (depth as u64).min(DEPTH_MAX))
}

/// An eviction order. Implementations are stateless: the key is a pure
/// function of the block's [`BlockMeta`].
pub trait EvictionPolicy: Debug + Default + Send + 'static {
    /// Policy name used in flags, stats and plots.
    const NAME: &'static str;
    /// The eviction key; the smallest is evicted first.
    type Key: Ord + Copy + Debug + Send;
    /// The key of a block.
    fn key(meta: &BlockMeta) -> Self::Key;
}

/// Least recently used first.
#[derive(Debug, Default, Clone, Copy)]
pub struct LruPolicy;

impl EvictionPolicy for LruPolicy {
    const NAME: &'static str = "lru";
    type Key = u64;
    fn key(meta: &BlockMeta) -> u64 {
        meta.last_use
    }
}

/// Least frequently used first; ties broken by least recent.
#[derive(Debug, Default, Clone, Copy)]
pub struct LfuPolicy;

impl EvictionPolicy for LfuPolicy {
    const NAME: &'static str = "lfu";
    type Key = (u64, u64);
    fn key(meta: &BlockMeta) -> (u64, u64) {
        (meta.uses, meta.last_use)
    }
}

/// The paper's LengthAwareCache: least frequently used first; among equally
/// used blocks the deepest prefix position first; then least recent.
#[derive(Debug, Default, Clone, Copy)]
pub struct LengthAwarePolicy;

impl EvictionPolicy for LengthAwarePolicy {
    const NAME: &'static str = "length-aware";
    type Key = (u64, Reverse<u32>, u64);
    fn key(meta: &BlockMeta) -> Self::Key {
        (meta.uses, Reverse(meta.position), meta.last_use)
    }
}
