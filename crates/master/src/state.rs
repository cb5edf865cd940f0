//! [`MasterState`]: the master's pure state machine — objects, in-flight puts, leases,
//! soft pins, and the clients that own segments. No I/O, no async; time comes from the
//! injected [`Clock`].
//!
//! Invariants:
//! * every piece of every visible object, pending put and deferred free is a live
//!   allocation in its segment's allocator, and nothing else is (so
//!   `segments.used() == Σ aligned(piece.len)`; see [`MasterState::check_invariants`]);
//! * a visible object's replicas are all complete (a replica that lost a piece is dropped
//!   whole), and it has at least one;
//! * a key is in at most one of `objects` (visible) and `pending` — except during an upsert,
//!   where the old value stays visible in `objects` until put_end replaces it;
//! * an object whose lease has not expired is never evicted, and never removed without
//!   `force`; its space is never reused before the lease ends (upsert defers the free);
//! * a hard-pinned object (`pin_until == HARD_PIN`) is never evicted; only remove,
//!   remove_by_regex, remove_all, an upsert or the loss of its segments end it. A soft pin
//!   is a deadline fixed at put_end (`< HARD_PIN`), not extended by reads.

use super::clock::Clock;
use super::segments::{SegId, Segments};
use crate::config::MasterConfig;
use mooncake_store_protocol::{
    validate_key, ClientId, ErrorCode, Piece, Replica, ReplicateConfig, MAX_REPLICAS,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Where one contiguous run of an object's bytes lives. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PieceMeta {
    pub off: u64,
    pub len: u64,
    pub seg: SegId,
    /// Which replica the piece belongs to; pieces are stored grouped by replica, in order.
    pub replica: u8,
}

/// `Object::pin_until` of a hard-pinned object: a deadline no clock reaches.
pub(crate) const HARD_PIN: u64 = u64::MAX;

/// A visible object. Times are milliseconds since the state's epoch; 0 = never.
#[derive(Debug)]
pub(crate) struct Object {
    pub pieces: Box<[PieceMeta]>,
    pub size: u64,
    pub last_access: u64,
    pub lease_until: u64,
    /// Soft-pin deadline, or [`HARD_PIN`]; 0 = not pinned.
    pub pin_until: u64,
    /// CRC32C of the value, as its writer declared at put_end.
    pub crc32c: Option<u32>,
}

impl Object {
    pub(crate) fn hard_pinned(&self) -> bool {
        self.pin_until == HARD_PIN
    }

    pub(crate) fn soft_pinned(&self, now: u64) -> bool {
        self.pin_until > now && !self.hard_pinned()
    }
}

/// What put_end does to the object's pin, decided at put_start from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PinRequest {
    /// Not pinned.
    None,
    /// Keep the soft-pin deadline of the object an upsert replaces.
    Preserve,
    /// Soft-pin for this many ms from put_end.
    Soft(u64),
    /// Never evict.
    Hard,
}

impl PinRequest {
    fn of(config: &ReplicateConfig, default_ttl_ms: u64) -> Self {
        if config.with_hard_pin {
            PinRequest::Hard
        } else if config.with_soft_pin {
            let ttl = match config.soft_pin_ttl_ms {
                0 => default_ttl_ms,
                t => t,
            };
            PinRequest::Soft(ttl)
        } else if config.preserve_soft_pin {
            PinRequest::Preserve
        } else {
            PinRequest::None
        }
    }

    /// The new object's `pin_until` at `now`; `old` is the replaced object's.
    fn deadline(self, now: u64, old: Option<u64>) -> u64 {
        match self {
            PinRequest::None => 0,
            PinRequest::Hard => HARD_PIN,
            // A soft pin never becomes a hard one, however long its TTL.
            PinRequest::Soft(ttl) => now.saturating_add(ttl).min(HARD_PIN - 1),
            PinRequest::Preserve => old.filter(|&p| p > now && p != HARD_PIN).unwrap_or(0),
        }
    }
}

/// A reservation made by put_start, not yet ended.
#[derive(Debug)]
pub(crate) struct Pending {
    pub pieces: Box<[PieceMeta]>,
    pub size: u64,
    pub deadline: u64,
    pub pin: PinRequest,
}

/// Space to free once a lease ends (the old value of an upserted, leased object).
#[derive(Debug)]
pub(crate) struct Deferred {
    pub until: u64,
    pub pieces: Box<[PieceMeta]>,
}

/// A client known to the master.
#[derive(Debug)]
pub(crate) struct ClientInfo {
    pub last_seen: u64,
    pub segments: Vec<SegId>,
}

/// Counters the state machine keeps (monotonic).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub evicted_objects: u64,
    pub evicted_bytes: u64,
    pub eviction_rounds: u64,
    pub expired_puts: u64,
    pub dead_clients: u64,
    pub leases_granted: u64,
    pub objects_lost: u64,
    pub put_no_space: u64,
    /// Mounts refused because another live client owns the segment name.
    pub mounts_refused: u64,
    /// Requests refused for lack of the admin credential (`remove_all`, ...).
    pub admin_refused: u64,
}

/// The master's state machine.
pub struct MasterState {
    pub(crate) cfg: MasterConfig,
    clock: Arc<dyn Clock>,
    epoch: Instant,
    pub(crate) segments: Segments,
    pub(crate) objects: HashMap<Box<str>, Object>,
    pub(crate) pending: HashMap<Box<str>, Pending>,
    pub(crate) deferred: Vec<Deferred>,
    pub(crate) clients: HashMap<ClientId, ClientInfo>,
    pub(crate) rng: StdRng,
    pub(crate) stats: Stats,
    /// Effects not yet drained by the shell (`Some` when journaling; see [`super::oplog`]).
    pub(crate) journal: Option<Vec<super::oplog::LogOp>>,
    /// Fencing term and process incarnation the shell serves under (reported only).
    pub(crate) term: u64,
    pub(crate) incarnation: u64,
    /// Random per state: keys the public labels of client ids ([`MasterState::client_label`]).
    label_key: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for MasterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterState")
            .field("objects", &self.objects.len())
            .field("pending", &self.pending.len())
            .field("segments", &self.segments.len())
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl MasterState {
    /// A fresh state with no segments.
    pub fn new(cfg: MasterConfig, clock: Arc<dyn Clock>) -> Self {
        let epoch = clock.now();
        MasterState {
            cfg,
            clock,
            epoch,
            segments: Segments::default(),
            objects: HashMap::new(),
            pending: HashMap::new(),
            deferred: Vec::new(),
            clients: HashMap::new(),
            rng: StdRng::from_entropy(),
            stats: Stats::default(),
            journal: None,
            term: 1,
            incarnation: 0,
            label_key: std::collections::hash_map::RandomState::new(),
        }
    }

    /// What admin pages and logs show for a client: a keyed hash of its id. The id
    /// itself is the client's proof of ownership of its segments (128 random bits
    /// the client chose at registration), so it is never shown.
    pub fn client_label(&self, id: ClientId) -> String {
        use std::hash::BuildHasher;
        format!("client-{:016x}", self.label_key.hash_one(id.0))
    }

    /// Seed the placement RNG (deterministic tests).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    /// Set the term and incarnation this state is served under (the shell's business:
    /// reported in [`mooncake_store_protocol::SyncReply`] and [`mooncake_store_protocol::RoleInfo`]).
    pub fn set_term(&mut self, term: u64, incarnation: u64) {
        self.term = term;
        self.incarnation = incarnation;
    }

    /// The term set by [`MasterState::set_term`].
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The configuration in force.
    pub fn config(&self) -> &MasterConfig {
        &self.cfg
    }

    /// Milliseconds since this state was created, +1 so that 0 can mean "never".
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock
            .now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
            + 1
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    // ---------------------------------------------------------------- put

    /// Reserve space for `key`; with `upsert`, an existing object is replaced at put_end.
    pub fn put_start(
        &mut self,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<Vec<Replica>, ErrorCode> {
        validate_key(key)?;
        if size == 0 || config.replica_num == 0 || config.replica_num > MAX_REPLICAS {
            return Err(ErrorCode::InvalidParams);
        }
        if self.pending.contains_key(key) || (!upsert && self.objects.contains_key(key)) {
            return Err(ErrorCode::ObjectAlreadyExists);
        }
        if self.segments.is_empty() || size > self.segments.total() {
            self.stats.put_no_space += 1;
            return Err(ErrorCode::NoSpace);
        }
        let preferred: Vec<SegId> = config
            .preferred_segments
            .iter()
            .filter_map(|n| self.segments.id_of(n))
            .collect();
        let now = self.now_ms();
        let pieces = loop {
            if let Some(p) = self.allocate(size, config.replica_num, &preferred) {
                break p;
            }
            // Full: evict a batch of LRU objects and try again, until nothing is evictable.
            let batch = self.eviction_batch();
            if self.evict_lru(now, batch, Some(key)) == 0 {
                self.stats.put_no_space += 1;
                return Err(ErrorCode::NoSpace);
            }
        };
        let replicas = self.to_replicas(&pieces);
        self.pending.insert(
            key.into(),
            Pending {
                pieces,
                size,
                deadline: now + self.cfg.put_start_discard_timeout_sec * 1000,
                pin: PinRequest::of(config, self.cfg.default_kv_soft_pin_ttl),
            },
        );
        Ok(replicas)
    }

    /// Split `size` into pieces of at most `max_slice_size`, of near-equal length.
    fn chunks(&self, size: u64) -> Vec<u64> {
        let max = self.cfg.max_slice_size.max(1);
        let n = size.div_ceil(max);
        let (q, r) = (size / n, size % n);
        (0..n).map(|i| q + u64::from(i < r)).collect()
    }

    /// Place `replica_num` copies (at least one, best effort for the rest). Replicas go on
    /// disjoint segment sets when possible, else at least chunk-wise disjoint.
    fn allocate(
        &mut self,
        size: u64,
        replica_num: u32,
        preferred: &[SegId],
    ) -> Option<Box<[PieceMeta]>> {
        let chunks = self.chunks(size);
        let strategy = self.cfg.allocation_strategy;
        let mut all: Vec<PieceMeta> = Vec::with_capacity(chunks.len() * replica_num as usize);
        for r in 0..replica_num {
            let mut placed = None;
            for strict in [true, false] {
                let mut this: Vec<PieceMeta> = Vec::with_capacity(chunks.len());
                let mut ok = true;
                for (i, &len) in chunks.iter().enumerate() {
                    let exclude: Vec<SegId> = all
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| strict || j % chunks.len() == i)
                        .map(|(_, p)| p.seg)
                        .collect();
                    let pref = if r == 0 { preferred } else { &[] };
                    match self
                        .segments
                        .place(len, &exclude, pref, strategy, &mut self.rng)
                    {
                        Some((seg, off)) => this.push(PieceMeta {
                            off,
                            len,
                            seg,
                            replica: r as u8,
                        }),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if ok {
                    placed = Some(this);
                    break;
                }
                self.free_pieces(&this);
                if chunks.len() == 1 {
                    break; // both passes are the same for a single chunk
                }
            }
            match placed {
                Some(p) => all.extend(p),
                None if r == 0 => return None,
                None => break,
            }
        }
        Some(all.into_boxed_slice())
    }

    pub(crate) fn free_pieces(&mut self, pieces: &[PieceMeta]) {
        for p in pieces {
            self.segments.free(p.seg, p.off, p.len);
        }
    }

    /// Convert stored pieces into the wire form, grouped by replica.
    pub(crate) fn to_replicas(&self, pieces: &[PieceMeta]) -> Vec<Replica> {
        let mut out: Vec<Replica> = Vec::new();
        let mut cur: Option<u8> = None;
        for p in pieces {
            let Some(seg) = self.segments.get(p.seg) else {
                continue;
            };
            if cur != Some(p.replica) {
                out.push(Replica {
                    pieces: Vec::new(),
                    crc32c: None,
                });
                cur = Some(p.replica);
            }
            out.last_mut().expect("pushed").pieces.push(Piece {
                segment: seg.name.clone(),
                addr: seg.base_addr + p.off,
                len: p.len,
            });
        }
        out
    }

    /// Make a reserved object visible.
    pub fn put_end(&mut self, key: &str) -> Result<(), ErrorCode> {
        self.put_end_checked(key, None)
    }

    /// Make a reserved object visible, recording the CRC32C of its value (handed to
    /// every reader with the replicas).
    pub fn put_end_checked(&mut self, key: &str, crc32c: Option<u32>) -> Result<(), ErrorCode> {
        validate_key(key)?;
        let p = self.pending.remove(key).ok_or(ErrorCode::InvalidWrite)?;
        let now = self.now_ms();
        let old_pin = self.objects.get(key).map(|o| o.pin_until);
        let obj = Object {
            pieces: p.pieces,
            size: p.size,
            last_access: now,
            lease_until: 0,
            pin_until: p.pin.deadline(now, old_pin),
            crc32c,
        };
        self.record(|st| st.log_put(key, &obj, now));
        if let Some(crc32c) = crc32c {
            self.record(|_| super::oplog::LogOp::Checksum {
                key: key.into(),
                crc32c,
            });
        }
        if let Some(old) = self.objects.insert(key.into(), obj) {
            // Upsert: readers holding a lease on the old value keep its bytes until it ends.
            if old.lease_until > now {
                self.deferred.push(Deferred {
                    until: old.lease_until,
                    pieces: old.pieces,
                });
            } else {
                self.free_pieces(&old.pieces);
            }
        }
        Ok(())
    }

    /// Abandon a reservation.
    pub fn put_revoke(&mut self, key: &str) -> Result<(), ErrorCode> {
        validate_key(key)?;
        let p = self.pending.remove(key).ok_or(ErrorCode::InvalidWrite)?;
        self.free_pieces(&p.pieces);
        Ok(())
    }

    // ---------------------------------------------------------------- get

    /// Replicas of a visible object; grants (extends) its lease and refreshes LRU (not
    /// the pin: a soft-pin deadline is fixed at put_end).
    pub fn get_replica_list(&mut self, key: &str) -> Result<Vec<Replica>, ErrorCode> {
        validate_key(key)?;
        let now = self.now_ms();
        let lease = self.cfg.default_kv_lease_ttl;
        // A key whose put has not ended is invisible: not found, like the reference.
        let o = self.objects.get_mut(key).ok_or(ErrorCode::ObjectNotFound)?;
        o.lease_until = o.lease_until.max(now + lease);
        o.last_access = now;
        self.stats.leases_granted += 1;
        let pieces = o.pieces.clone();
        let crc32c = o.crc32c;
        let mut replicas = self.to_replicas(&pieces);
        for r in &mut replicas {
            r.crc32c = crc32c;
        }
        Ok(replicas)
    }

    /// Whether `key` is visible.
    pub fn exists(&self, key: &str) -> Result<bool, ErrorCode> {
        validate_key(key)?;
        Ok(self.objects.contains_key(key))
    }

    /// Size of a visible object.
    pub fn get_size(&self, key: &str) -> Result<u64, ErrorCode> {
        validate_key(key)?;
        self.objects
            .get(key)
            .map(|o| o.size)
            .ok_or(ErrorCode::ObjectNotFound)
    }

    // ---------------------------------------------------------------- remove

    /// Remove a visible object; a leased one only with `force`.
    pub fn remove(&mut self, key: &str, force: bool) -> Result<(), ErrorCode> {
        validate_key(key)?;
        let now = self.now_ms();
        match self.objects.get(key) {
            None if self.pending.contains_key(key) => Err(ErrorCode::ReplicaNotReady),
            None => Err(ErrorCode::ObjectNotFound),
            Some(o) if !force && o.lease_until > now => Err(ErrorCode::ObjectHasLease),
            Some(_) => {
                let o = self.objects.remove(key).expect("present");
                self.free_pieces(&o.pieces);
                self.record(|_| super::oplog::LogOp::Remove { key: key.into() });
                Ok(())
            }
        }
    }

    /// Remove every visible object whose key matches `pattern` (leased ones only with
    /// `force`); returns how many were removed.
    pub fn remove_by_regex(&mut self, pattern: &str, force: bool) -> Result<u64, ErrorCode> {
        if pattern.len() > mooncake_store_protocol::MAX_KEY_LEN {
            return Err(ErrorCode::InvalidParams);
        }
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|_| ErrorCode::InvalidParams)?;
        Ok(self.remove_where(force, |k| re.is_match(k)))
    }

    /// Remove every visible object (leased ones only with `force`); returns the count.
    pub fn remove_all(&mut self, force: bool) -> u64 {
        self.remove_where(force, |_| true)
    }

    fn remove_where(&mut self, force: bool, pred: impl Fn(&str) -> bool) -> u64 {
        let now = self.now_ms();
        let segs = &mut self.segments;
        let mut n = 0;
        let mut removed = self.journal.as_ref().map(|_| Vec::new());
        self.objects.retain(|k, o| {
            if !pred(k) || (!force && o.lease_until > now) {
                return true;
            }
            for p in o.pieces.iter() {
                segs.free(p.seg, p.off, p.len);
            }
            if let Some(r) = &mut removed {
                r.push(super::oplog::LogOp::Remove { key: k.to_string() });
            }
            n += 1;
            false
        });
        if let (Some(j), Some(r)) = (&mut self.journal, removed) {
            j.extend(r);
        }
        n
    }

    /// Verify the accounting invariants (tests; O(objects)).
    pub fn check_invariants(&self) -> Result<(), String> {
        use super::allocator::aligned;
        let mut per_seg: HashMap<SegId, Vec<(u64, u64)>> = HashMap::new();
        let all = self
            .objects
            .values()
            .map(|o| &o.pieces)
            .chain(self.pending.values().map(|p| &p.pieces))
            .chain(self.deferred.iter().map(|d| &d.pieces));
        for pieces in all {
            for p in pieces.iter() {
                if self.segments.get(p.seg).is_none() {
                    return Err(format!("piece in unmounted segment {}", p.seg));
                }
                per_seg
                    .entry(p.seg)
                    .or_default()
                    .push((p.off, aligned(p.len).unwrap()));
            }
        }
        for (id, seg) in self.segments.iter() {
            seg.alloc.check()?;
            let mut v = per_seg.remove(&id).unwrap_or_default();
            let sum: u64 = v.iter().map(|x| x.1).sum();
            if sum != seg.alloc.used() {
                return Err(format!(
                    "segment {}: pieces {sum} != used {}",
                    seg.name,
                    seg.alloc.used()
                ));
            }
            v.sort_unstable();
            for w in v.windows(2) {
                if w[0].0 + w[0].1 > w[1].0 {
                    return Err(format!("overlapping pieces in {}", seg.name));
                }
            }
        }
        for o in self.objects.values() {
            if o.pieces.is_empty() {
                return Err("object without replicas".into());
            }
            let mut by_rep: HashMap<u8, u64> = HashMap::new();
            for p in o.pieces.iter() {
                *by_rep.entry(p.replica).or_default() += p.len;
            }
            if by_rep.values().any(|&s| s != o.size) {
                return Err("incomplete replica".into());
            }
        }
        Ok(())
    }
}
