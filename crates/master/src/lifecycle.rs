//! Time-driven and membership parts of [`MasterState`]: client heartbeats and expiry,
//! segment mount/unmount, put-reservation timeouts, deferred frees, and eviction.
//!
//! Eviction order: objects whose lease has expired, unpinned before soft-pinned (pinned only
//! when `allow_evict_soft_pinned_objects`), least recently used first. Leased and
//! hard-pinned objects are never evicted.

use super::segments::SegId;
use super::state::{ClientInfo, MasterState, PieceMeta};
use mooncake_store_protocol::{
    ClientId, ClientStatus, ErrorCode, HeartbeatReply, SegmentDesc, MAX_KEY_LEN,
};
use serde::Serialize;

/// What one [`MasterState::tick`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct TickReport {
    pub expired_puts: usize,
    pub released_deferred: usize,
    pub dead_clients: Vec<ClientId>,
    pub evicted: usize,
}

impl MasterState {
    /// A client says it is alive. Unknown clients are registered and told to remount.
    pub fn heartbeat(&mut self, client: ClientId) -> HeartbeatReply {
        let now = self.now_ms();
        let status = match self.clients.get_mut(&client) {
            Some(c) => {
                c.last_seen = now;
                ClientStatus::Ok
            }
            None => {
                self.clients.insert(
                    client,
                    ClientInfo {
                        last_seen: now,
                        segments: Vec::new(),
                    },
                );
                ClientStatus::NeedRemount
            }
        };
        HeartbeatReply {
            status,
            client_ttl_ms: self.cfg.client_ttl * 1000,
        }
    }

    /// Add a client's memory region to the pool. Mounting the same name again with the same
    /// owner and range is a no-op (a remount after reconnecting).
    pub fn mount_segment(&mut self, client: ClientId, desc: &SegmentDesc) -> Result<(), ErrorCode> {
        if desc.name.is_empty()
            || desc.name.len() > MAX_KEY_LEN
            || desc.size == 0
            || desc.base_addr.checked_add(desc.size).is_none()
            || desc.protocol.len() > MAX_KEY_LEN
            || desc.location.len() > MAX_KEY_LEN
        {
            return Err(ErrorCode::InvalidParams);
        }
        let now = self.now_ms();
        if let Some(id) = self.segments.id_of(&desc.name) {
            let s = self.segments.get(id).expect("indexed");
            if s.owner == client && s.base_addr == desc.base_addr && s.size == desc.size {
                self.touch_client(client, now);
                return Ok(());
            }
            if s.owner == client {
                return Err(ErrorCode::SegmentAlreadyExists);
            }
            // Another client claims the name. Only the owner (who knows its id, which
            // is never shown) may replace its segment while it is alive; once it has
            // been silent for `client_ttl` (a restarted node on the same `host:port`:
            // its bytes died with it), the name is free.
            let owner = s.owner;
            if self.client_alive(owner, now) {
                self.stats.mounts_refused += 1;
                tracing::warn!(segment = %desc.name, owner = %self.client_label(owner), claimant = %self.client_label(client), "refused: segment is owned by another live client");
                return Err(ErrorCode::SegmentAlreadyExists);
            }
            tracing::warn!(segment = %desc.name, old = %self.client_label(owner), new = %self.client_label(client), "segment re-registered after its owner went silent; dropping the old registration");
            self.forget_segment(id);
        }
        self.insert_segment(client, desc, now);
        tracing::info!(segment = %desc.name, size = desc.size, client = %self.client_label(client), "segment mounted");
        Ok(())
    }

    /// Whether `client` is registered and heard from within `client_ttl`.
    pub(crate) fn client_alive(&self, client: ClientId, now: u64) -> bool {
        let ttl = self.cfg.client_ttl * 1000;
        self.clients
            .get(&client)
            .is_some_and(|c| c.last_seen + ttl >= now)
    }

    /// Mount `desc` for `client` (name known to be free) and log it.
    pub(crate) fn insert_segment(&mut self, client: ClientId, desc: &SegmentDesc, now: u64) {
        let id = self.segments.insert(client, desc);
        self.touch_client(client, now);
        self.clients
            .get_mut(&client)
            .expect("touched")
            .segments
            .push(id);
        self.record(|_| super::oplog::LogOp::Mount {
            client,
            segment: desc.clone(),
        });
    }

    /// Unmount segment `id` whoever owns it (replicas in it dropped) and log it.
    pub(crate) fn forget_segment(&mut self, id: SegId) {
        let owner = self.segments.get(id).map(|s| s.owner);
        self.drop_segment(id);
        if let Some(c) = owner.and_then(|o| self.clients.get_mut(&o)) {
            c.segments.retain(|&s| s != id);
        }
    }

    /// A heartbeat that lists the segments `client` believes it has mounted: mount those
    /// the master lacks (replacing a stale registration of the same name), unmount those
    /// it holds for this client that the list no longer names. Returns (mounted,
    /// unmounted). Descriptors that are invalid are skipped.
    pub fn sync_client(&mut self, client: ClientId, segments: &[SegmentDesc]) -> (u32, u32) {
        self.heartbeat(client);
        let mut mounted = 0;
        for d in segments {
            let known = self
                .segments
                .id_of(&d.name)
                .and_then(|id| self.segments.get(id))
                .is_some_and(|s| {
                    s.owner == client && s.base_addr == d.base_addr && s.size == d.size
                });
            if known {
                continue;
            }
            if let Some(id) = self.segments.id_of(&d.name) {
                // Ours with another range (remapped): replace it. Someone else's:
                // mount_segment decides (only once its owner went silent).
                if self.segments.get(id).is_some_and(|s| s.owner == client) {
                    self.forget_segment(id);
                }
            }
            if self.mount_segment(client, d).is_ok() {
                mounted += 1;
            }
        }
        let stale: Vec<SegId> = self
            .clients
            .get(&client)
            .map(|c| {
                c.segments
                    .iter()
                    .copied()
                    .filter(|&id| {
                        self.segments
                            .get(id)
                            .is_some_and(|s| !segments.iter().any(|d| d.name == s.name))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for id in &stale {
            self.forget_segment(*id);
        }
        (mounted, stale.len() as u32)
    }

    fn touch_client(&mut self, client: ClientId, now: u64) {
        self.clients
            .entry(client)
            .or_insert_with(|| ClientInfo {
                last_seen: now,
                segments: Vec::new(),
            })
            .last_seen = now;
    }

    /// Withdraw a segment (only its owner may); replicas with a piece in it are dropped.
    pub fn unmount_segment(&mut self, client: ClientId, name: &str) -> Result<(), ErrorCode> {
        let id = self
            .segments
            .id_of(name)
            .ok_or(ErrorCode::SegmentNotFound)?;
        if self.segments.get(id).expect("indexed").owner != client {
            return Err(ErrorCode::InvalidParams);
        }
        self.drop_segment(id);
        if let Some(c) = self.clients.get_mut(&client) {
            c.segments.retain(|&s| s != id);
        }
        Ok(())
    }

    /// Drop every replica with a piece in `seg`, revoke pending puts touching it, then
    /// unmount it. Objects left without a replica are gone.
    fn drop_segment(&mut self, seg: SegId) {
        let segs = &mut self.segments;
        let mut lost = 0u64;
        self.objects.retain(|_, o| {
            let dead: u32 = o
                .pieces
                .iter()
                .filter(|p| p.seg == seg)
                .fold(0, |m, p| m | (1 << p.replica));
            if dead == 0 {
                return true;
            }
            let (gone, keep): (Vec<PieceMeta>, Vec<PieceMeta>) =
                o.pieces.iter().partition(|p| dead & (1 << p.replica) != 0);
            for p in gone {
                segs.free(p.seg, p.off, p.len);
            }
            if keep.is_empty() {
                lost += 1;
                return false;
            }
            o.pieces = keep.into_boxed_slice();
            true
        });
        self.pending.retain(|_, p| {
            if p.pieces.iter().any(|x| x.seg == seg) {
                for x in p.pieces.iter() {
                    segs.free(x.seg, x.off, x.len);
                }
                false
            } else {
                true
            }
        });
        for d in &mut self.deferred {
            if d.pieces.iter().any(|x| x.seg == seg) {
                for x in d.pieces.iter() {
                    segs.free(x.seg, x.off, x.len);
                }
                d.pieces = Box::new([]);
            }
        }
        self.deferred.retain(|d| !d.pieces.is_empty());
        self.stats.objects_lost += lost;
        if let Some(s) = self.segments.remove(seg) {
            let name = s.name.clone();
            self.record(|_| super::oplog::LogOp::Unmount { name });
            tracing::info!(segment = %s.name, objects_lost = lost, "segment unmounted");
        }
    }

    /// Advance time-driven state: release expired reservations and deferred frees, declare
    /// silent clients dead, evict above the high watermark.
    pub fn tick(&mut self) -> TickReport {
        let now = self.now_ms();
        let mut report = TickReport::default();

        let segs = &mut self.segments;
        self.pending.retain(|_, p| {
            if p.deadline > now {
                return true;
            }
            for x in p.pieces.iter() {
                segs.free(x.seg, x.off, x.len);
            }
            report.expired_puts += 1;
            false
        });
        self.deferred.retain(|d| {
            if d.until > now {
                return true;
            }
            for x in d.pieces.iter() {
                segs.free(x.seg, x.off, x.len);
            }
            report.released_deferred += 1;
            false
        });
        self.stats.expired_puts += report.expired_puts as u64;

        let ttl = self.cfg.client_ttl * 1000;
        let dead: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| c.last_seen + ttl < now)
            .map(|(&id, _)| id)
            .collect();
        for id in &dead {
            let c = self.clients.remove(id).expect("listed");
            tracing::warn!(client = %self.client_label(*id), segments = c.segments.len(), "client expired");
            for seg in c.segments {
                self.drop_segment(seg);
            }
        }
        self.stats.dead_clients += dead.len() as u64;
        report.dead_clients = dead;

        report.evicted = self.evict_above_watermark(now);
        report
    }

    /// Objects per eviction round: `eviction_ratio` of all objects, at least one.
    pub(crate) fn eviction_batch(&self) -> usize {
        ((self.objects.len() as f64 * self.cfg.eviction_ratio).ceil() as usize).max(1)
    }

    fn over_watermark(&self) -> bool {
        let total = self.segments.total();
        total > 0
            && self.segments.used() as f64 > self.cfg.eviction_high_watermark_ratio * total as f64
    }

    fn evict_above_watermark(&mut self, now: u64) -> usize {
        let mut evicted = 0;
        if !self.over_watermark() {
            return 0;
        }
        self.stats.eviction_rounds += 1;
        let batch = self.eviction_batch();
        evicted += self.evict_lru(now, batch, None);
        // One round is `eviction_ratio` of the objects; keep going only while still above
        // the watermark (objects of very different sizes) and progress is made.
        while self.over_watermark() {
            let n = self.evict_lru(now, batch, None);
            if n == 0 {
                break;
            }
            evicted += n;
        }
        evicted
    }

    /// Evict up to `n` evictable objects, oldest first (unpinned before pinned); never
    /// `spare`. Returns how many were evicted.
    pub(crate) fn evict_lru(&mut self, now: u64, n: usize, spare: Option<&str>) -> usize {
        let allow_pinned = self.cfg.allow_evict_soft_pinned_objects;
        let rank = |o: &super::state::Object| -> Option<(bool, u64)> {
            if o.lease_until > now || o.hard_pinned() {
                return None;
            }
            let pinned = o.soft_pinned(now);
            if pinned && !allow_pinned {
                return None;
            }
            Some((pinned, o.last_access))
        };
        let mut ranks: Vec<(bool, u64)> = self
            .objects
            .iter()
            .filter(|(k, _)| Some(&***k) != spare)
            .filter_map(|(_, o)| rank(o))
            .collect();
        if ranks.is_empty() || n == 0 {
            return 0;
        }
        let k = n.min(ranks.len());
        let (_, &mut threshold, _) = ranks.select_nth_unstable(k - 1);
        let below = ranks.iter().filter(|r| **r < threshold).count();
        let mut at_threshold = k - below;
        drop(ranks);
        let mut victims: Vec<Box<str>> = Vec::with_capacity(k);
        for (key, o) in &self.objects {
            if Some(&**key) == spare {
                continue;
            }
            let Some(r) = rank(o) else { continue };
            if r < threshold {
                victims.push(key.clone());
            } else if r == threshold && at_threshold > 0 {
                at_threshold -= 1;
                victims.push(key.clone());
            }
        }
        for key in &victims {
            let o = self.objects.remove(key).expect("victim present");
            self.stats.evicted_bytes += o.size;
            self.free_pieces(&o.pieces);
            self.record(|_| super::oplog::LogOp::Remove {
                key: key.to_string(),
            });
        }
        self.stats.evicted_objects += victims.len() as u64;
        victims.len()
    }
}
