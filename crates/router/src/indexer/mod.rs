//! The global prefix index: which instance holds which KV blocks, on which
//! medium (GPU, CPU, ...) and data-parallel rank, built from the engines'
//! KV-cache events ([`crate::kv_events`]).
//!
//! Owns [`PrefixIndex`], a pure structure (no I/O, no clock): a map from
//! block hash to the *streams* holding it, a stream being one engine
//! instance's publisher for one data-parallel rank. Events are applied per
//! stream in sequence order by the subscriber shell
//! ([`crate::kv_events::zmq`]), which also tells the index when a stream
//! restarted (its cache is gone) or lost events it could not replay.
//! [`service`] serves the index over HTTP in the shape of the Mooncake
//! Conductor indexer API, standalone (`mooncake indexer`) or inside the
//! router, which reads it for the prefill instances whose events flow.
//!
//! Invariants: `blocks[h]` lists stream `s` with medium mask `m` exactly when
//! `streams[s].blocks[h] == m` (`m != 0`); applying an event never panics on
//! any input; a cleared or removed stream holds nothing.

use crate::kv_events::hash::BlockHasher;
use crate::kv_events::wire::{BlockHash, KvEvent, KvEventBatch};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

pub mod service;

/// Most distinct media an index tracks (bits of a mask).
const MAX_MEDIA: usize = 8;

/// Medium assumed when an event names none (vLLM's `MEDIUM_GPU`).
pub const DEFAULT_MEDIUM: &str = "GPU";

/// Counters of one event stream (served in `/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// Batches applied.
    pub batches: u64,
    /// `BlockStored` blocks applied.
    pub blocks_stored: u64,
    /// `BlockRemoved` blocks applied.
    pub blocks_removed: u64,
    /// `AllBlocksCleared` events applied.
    pub cleared: u64,
    /// Sequence gaps closed by replay.
    pub gaps_replayed: u64,
    /// Batches lost (gap not replayable): the index may be stale.
    pub batches_lost: u64,
    /// Publisher restarts seen (sequence reset): the stream was cleared.
    pub restarts: u64,
    /// Payloads that did not decode.
    pub decode_errors: u64,
    /// Root blocks whose published hash differs from the one computed from
    /// their tokens (engine hash algorithm / seed not matched: no hits).
    pub hash_mismatches: u64,
    /// Last sequence number applied.
    pub last_seq: Option<u64>,
}

#[derive(Debug)]
struct Stream {
    instance: String,
    dp_rank: u32,
    /// Block → medium mask.
    blocks: HashMap<BlockHash, u8>,
    stats: StreamStats,
}

/// How much of a prefix one instance holds (blocks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstanceMatch {
    /// Longest prefix held on any medium by any rank.
    pub longest: usize,
    /// Longest prefix per medium.
    pub media: BTreeMap<String, usize>,
    /// Longest prefix per data-parallel rank.
    pub dp: BTreeMap<u32, usize>,
}

/// The index (see the module docs).
#[derive(Debug)]
pub struct PrefixIndex {
    streams: Vec<Option<Stream>>,
    by_key: HashMap<(String, u32), u32>,
    by_instance: HashMap<String, Vec<u32>>,
    blocks: HashMap<BlockHash, Vec<(u32, u8)>>,
    media: Vec<String>,
    /// Checks root blocks' published hashes against their tokens.
    check: Option<BlockHasher>,
}

impl Default for PrefixIndex {
    fn default() -> Self {
        Self::new(None)
    }
}

impl PrefixIndex {
    /// An empty index; `check` (if any) verifies the engines' hashes.
    pub fn new(check: Option<BlockHasher>) -> Self {
        Self {
            streams: Vec::new(),
            by_key: HashMap::new(),
            by_instance: HashMap::new(),
            blocks: HashMap::new(),
            media: Vec::new(),
            check,
        }
    }

    fn stream_id(&mut self, instance: &str, dp: u32) -> u32 {
        if let Some(&s) = self.by_key.get(&(instance.to_string(), dp)) {
            return s;
        }
        let s = match self.streams.iter().position(Option::is_none) {
            Some(free) => free as u32,
            None => {
                self.streams.push(None);
                (self.streams.len() - 1) as u32
            }
        };
        self.streams[s as usize] = Some(Stream {
            instance: instance.to_string(),
            dp_rank: dp,
            blocks: HashMap::new(),
            stats: StreamStats::default(),
        });
        self.by_key.insert((instance.to_string(), dp), s);
        self.by_instance
            .entry(instance.to_string())
            .or_default()
            .push(s);
        s
    }

    fn medium_bit(&mut self, medium: Option<&str>) -> u8 {
        let m = medium.unwrap_or(DEFAULT_MEDIUM);
        let i = match self.media.iter().position(|x| x.eq_ignore_ascii_case(m)) {
            Some(i) => i,
            None if self.media.len() < MAX_MEDIA => {
                self.media.push(m.to_ascii_uppercase());
                self.media.len() - 1
            }
            // More media than bits: fold the rest into the last one.
            None => MAX_MEDIA - 1,
        };
        1 << i
    }

    /// Registers `instance`'s stream for `dp_rank` (queries see it, empty,
    /// before its first event).
    pub fn add_stream(&mut self, instance: &str, dp_rank: u32) {
        self.stream_id(instance, dp_rank);
    }

    /// Whether any stream of `instance` is registered (its cache is known
    /// from events rather than believed).
    pub fn has_instance(&self, instance: &str) -> bool {
        self.by_instance.contains_key(instance)
    }

    /// Registered instances.
    pub fn instances(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_instance.keys().cloned().collect();
        v.sort();
        v
    }

    /// Blocks held by `instance` (all ranks and media).
    pub fn instance_blocks(&self, instance: &str) -> usize {
        self.streams_of(instance)
            .map(|s| self.stream(s).map_or(0, |st| st.blocks.len()))
            .sum()
    }

    fn streams_of<'a>(&'a self, instance: &str) -> impl Iterator<Item = u32> + 'a {
        self.by_instance
            .get(instance)
            .into_iter()
            .flat_map(|v| v.iter().copied())
    }

    fn stream(&self, s: u32) -> Option<&Stream> {
        self.streams.get(s as usize).and_then(Option::as_ref)
    }

    /// Per-stream counters of `instance`, by rank.
    pub fn stream_stats(&self, instance: &str) -> BTreeMap<u32, StreamStats> {
        self.streams_of(instance)
            .filter_map(|s| self.stream(s).map(|st| (st.dp_rank, st.stats.clone())))
            .collect()
    }

    fn set(&mut self, s: u32, h: BlockHash, bit: u8) {
        let holders = self.blocks.entry(h).or_default();
        match holders.iter_mut().find(|(x, _)| *x == s) {
            Some((_, m)) => *m |= bit,
            None => holders.push((s, bit)),
        }
        if let Some(st) = self.streams[s as usize].as_mut() {
            *st.blocks.entry(h).or_insert(0) |= bit;
        }
    }

    fn unset(&mut self, s: u32, h: BlockHash, bits: u8) {
        if let Some(holders) = self.blocks.get_mut(&h) {
            holders.retain_mut(|(x, m)| {
                if *x == s {
                    *m &= !bits;
                    *m != 0
                } else {
                    true
                }
            });
            if holders.is_empty() {
                self.blocks.remove(&h);
            }
        }
        if let Some(st) = self.streams[s as usize].as_mut() {
            if let Some(m) = st.blocks.get_mut(&h) {
                *m &= !bits;
                if *m == 0 {
                    st.blocks.remove(&h);
                }
            }
        }
    }

    fn clear_stream_id(&mut self, s: u32) {
        let Some(st) = self.streams[s as usize].as_mut() else {
            return;
        };
        let held: Vec<BlockHash> = st.blocks.drain().map(|(h, _)| h).collect();
        for h in held {
            self.unset(s, h, u8::MAX);
        }
    }

    /// Applies one batch of `instance`'s stream (`dp_rank` when the batch
    /// names none) with sequence number `seq`.
    pub fn apply(&mut self, instance: &str, dp_rank: u32, seq: u64, batch: &KvEventBatch) {
        let s = self.stream_id(instance, batch.data_parallel_rank.unwrap_or(dp_rank));
        for ev in &batch.events {
            match ev {
                KvEvent::BlockStored {
                    block_hashes,
                    parent_block_hash,
                    token_ids,
                    medium,
                    ..
                } => {
                    if parent_block_hash.is_none() {
                        self.check_root(s, block_hashes, token_ids);
                    }
                    let bit = self.medium_bit(medium.as_deref());
                    for &h in block_hashes {
                        self.set(s, h, bit);
                    }
                    self.stats_mut(s).blocks_stored += block_hashes.len() as u64;
                }
                KvEvent::BlockRemoved {
                    block_hashes,
                    medium,
                } => {
                    let bit = self.medium_bit(medium.as_deref());
                    for &h in block_hashes {
                        self.unset(s, h, bit);
                    }
                    self.stats_mut(s).blocks_removed += block_hashes.len() as u64;
                }
                KvEvent::AllBlocksCleared => {
                    self.clear_stream_id(s);
                    self.stats_mut(s).cleared += 1;
                }
            }
        }
        let st = self.stats_mut(s);
        st.batches += 1;
        st.last_seq = Some(seq);
    }

    fn check_root(&mut self, s: u32, hashes: &[BlockHash], tokens: &[u32]) {
        let Some(h) = &self.check else { return };
        let bs = h.block_size() as usize;
        if let (Some(&first), true) = (hashes.first(), tokens.len() >= bs) {
            let d = h.digest(None, &tokens[..bs]);
            if crate::kv_events::hash::to_int(&d) != first {
                self.stats_mut(s).hash_mismatches += 1;
            }
        }
    }

    fn stats_mut(&mut self, s: u32) -> &mut StreamStats {
        // `s` always names a live stream here (created by `apply`).
        &mut self.streams[s as usize]
            .as_mut()
            .expect("live stream")
            .stats
    }

    /// The publisher of `instance` / `dp_rank` restarted: its cache is gone.
    pub fn restarted(&mut self, instance: &str, dp_rank: u32) {
        let s = self.stream_id(instance, dp_rank);
        self.clear_stream_id(s);
        self.stats_mut(s).restarts += 1;
    }

    /// Bookkeeping from the subscriber shell.
    pub fn note(&mut self, instance: &str, dp_rank: u32, f: impl FnOnce(&mut StreamStats)) {
        let s = self.stream_id(instance, dp_rank);
        f(self.stats_mut(s));
    }

    /// Forgets `instance` (all ranks), or one rank; returns the removed
    /// `(instance, rank)` streams.
    pub fn remove(&mut self, instance: &str, dp_rank: Option<u32>) -> Vec<(String, u32)> {
        let ids: Vec<u32> = self
            .streams_of(instance)
            .filter(|&s| dp_rank.is_none_or(|d| self.stream(s).is_some_and(|st| st.dp_rank == d)))
            .collect();
        let mut out = Vec::new();
        for s in ids {
            self.clear_stream_id(s);
            if let Some(st) = self.streams[s as usize].take() {
                self.by_key.remove(&(st.instance.clone(), st.dp_rank));
                out.push((st.instance, st.dp_rank));
            }
        }
        if let Some(v) = self.by_instance.get_mut(instance) {
            v.retain(|&s| self.streams[s as usize].is_some());
            if v.is_empty() {
                self.by_instance.remove(instance);
            }
        }
        out
    }

    /// Length of the leading run of `hashes` that `instance` holds (any
    /// rank, any medium): the router's hot path.
    pub fn longest_prefix(&self, instance: &str, hashes: &[BlockHash]) -> usize {
        let Some(ids) = self.by_instance.get(instance) else {
            return 0;
        };
        hashes
            .iter()
            .take_while(|h| {
                self.blocks
                    .get(h)
                    .is_some_and(|hs| hs.iter().any(|(s, _)| ids.contains(s)))
            })
            .count()
    }

    /// Full match of `hashes` for `instance`: any / per medium / per rank.
    pub fn query(&self, instance: &str, hashes: &[BlockHash]) -> InstanceMatch {
        let ids: Vec<u32> = self.streams_of(instance).collect();
        let mask_at = |h: &BlockHash, only: Option<u32>| -> u8 {
            self.blocks.get(h).map_or(0, |hs| {
                hs.iter()
                    .filter(|(s, _)| ids.contains(s) && only.is_none_or(|o| o == *s))
                    .fold(0, |acc, (_, m)| acc | m)
            })
        };
        let run = |only: Option<u32>, bits: u8| {
            hashes
                .iter()
                .take_while(|h| mask_at(h, only) & bits != 0)
                .count()
        };
        let mut m = InstanceMatch {
            longest: run(None, u8::MAX),
            ..InstanceMatch::default()
        };
        for (i, name) in self.media.iter().enumerate() {
            m.media.insert(name.clone(), run(None, 1 << i));
        }
        for &s in &ids {
            if let Some(st) = self.stream(s) {
                m.dp.insert(st.dp_rank, run(Some(s), u8::MAX));
            }
        }
        m
    }

    /// Distinct blocks indexed (all instances).
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

#[cfg(test)]
mod tests;
