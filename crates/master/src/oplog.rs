//! The master's op-log: the durable record of every change to the state that must survive
//! the master — segments mounted and unmounted, objects made visible, objects removed —
//! and how a fresh [`MasterState`] is rebuilt from it.
//!
//! The log records *effects*, not requests: a put carries the placement the leader chose
//! and an eviction carries the victims, so replay needs neither the RNG nor the clock of
//! the master that wrote it. The state machine stays pure: with journaling on
//! ([`MasterState::start_journal`]) each mutating method appends its effects to an
//! in-memory buffer that the I/O shell drains ([`MasterState::take_journal`]) under the
//! same lock, so the log order is the order the changes happened in.
//!
//! What is deliberately not logged: pending puts (a put in flight when the master dies
//! fails at put_end and the client retries or reports the error — never half-visible),
//! leases and deferred frees (replay grants every object a fresh lease of
//! `default_kv_lease_ttl` instead, so a reader mid-transfer across a failover keeps its
//! bytes), heartbeat times (every recovered client gets a full `client_ttl` to come back).
//!
//! A snapshot is the same language: [`MasterState::snapshot_ops`] lists one `Mount` per
//! segment and one `Put` per object; replaying it and then the log written after it gives
//! the state back (the property [`tests`](self) check on random histories).
//!
//! Invariant of replay: an op that does not fit the state (a piece over an unknown
//! segment or over bytes already allocated) is skipped and counted in
//! [`ReplayReport::skipped`], never half-applied.

use super::state::{MasterState, Object, PieceMeta, HARD_PIN};
use mooncake_store_protocol::{ClientId, SegmentDesc};
use serde::{Deserialize, Serialize};

/// One durable change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogOp {
    /// A segment joined the pool (replacing any segment of the same name).
    Mount {
        client: ClientId,
        segment: SegmentDesc,
    },
    /// A segment left the pool (unmount, its owner expired, or replaced): replicas with a
    /// piece in it are dropped.
    Unmount { name: String },
    /// An object became visible (put_end), replacing any object of the same key.
    Put {
        key: String,
        size: u64,
        pin: LogPin,
        pieces: Vec<LogPiece>,
    },
    /// An object was removed or evicted.
    Remove { key: String },
    /// The CRC32C of the object just made visible by the `Put` before it (appended
    /// variant: logs written before checksums existed still decode).
    Checksum { key: String, crc32c: u32 },
}

/// Pin of a logged object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogPin {
    None,
    Hard,
    /// Soft pin with this many ms left when it was logged.
    Soft(u64),
}

/// One piece of a logged object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPiece {
    pub segment: String,
    pub off: u64,
    pub len: u64,
    pub replica: u8,
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub applied: u64,
    pub skipped: u64,
}

impl MasterState {
    /// Start recording effects for [`MasterState::take_journal`].
    pub fn start_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// Whether effects are being recorded.
    pub fn journaling(&self) -> bool {
        self.journal.is_some()
    }

    /// The effects recorded since the last call (empty when journaling is off).
    pub fn take_journal(&mut self) -> Vec<LogOp> {
        match &mut self.journal {
            Some(j) => std::mem::take(j),
            None => Vec::new(),
        }
    }

    pub(crate) fn record(&mut self, op: impl FnOnce(&Self) -> LogOp) {
        if self.journal.is_none() {
            return;
        }
        let op = op(self);
        if let Some(j) = &mut self.journal {
            j.push(op);
        }
    }

    pub(crate) fn log_put(&self, key: &str, o: &Object, now: u64) -> LogOp {
        let pin = if o.pin_until == HARD_PIN {
            LogPin::Hard
        } else if o.pin_until > now {
            LogPin::Soft(o.pin_until - now)
        } else {
            LogPin::None
        };
        LogOp::Put {
            key: key.to_string(),
            size: o.size,
            pin,
            pieces: o
                .pieces
                .iter()
                .map(|p| LogPiece {
                    segment: self
                        .segments
                        .get(p.seg)
                        .map(|s| s.name.clone())
                        .unwrap_or_default(),
                    off: p.off,
                    len: p.len,
                    replica: p.replica,
                })
                .collect(),
        }
    }

    /// The whole state as ops: replaying them on an empty state rebuilds its segments,
    /// owners and objects.
    pub fn snapshot_ops(&self) -> Vec<LogOp> {
        let now = self.now_ms();
        let mut out = Vec::with_capacity(self.segments.len() + self.objects.len());
        for (_, s) in self.segments.iter() {
            out.push(LogOp::Mount {
                client: s.owner,
                segment: SegmentDesc {
                    name: s.name.clone(),
                    base_addr: s.base_addr,
                    size: s.size,
                    protocol: s.protocol.clone(),
                    location: s.location.clone(),
                },
            });
        }
        for (k, o) in &self.objects {
            out.push(self.log_put(k, o, now));
            if let Some(crc32c) = o.crc32c {
                out.push(LogOp::Checksum {
                    key: k.to_string(),
                    crc32c,
                });
            }
        }
        out
    }

    /// Apply logged ops (recovery). Journaling is suspended meanwhile, so replay is not
    /// logged again.
    pub fn replay<'a>(&mut self, ops: impl IntoIterator<Item = &'a LogOp>) -> ReplayReport {
        let journal = self.journal.take();
        let mut r = ReplayReport::default();
        for op in ops {
            if self.apply(op) {
                r.applied += 1;
            } else {
                r.skipped += 1;
            }
        }
        self.journal = journal;
        r
    }

    /// Apply one op; false when it does not fit the state (nothing changed then).
    pub fn apply(&mut self, op: &LogOp) -> bool {
        let now = self.now_ms();
        match op {
            LogOp::Mount { client, segment } => {
                if let Some(id) = self.segments.id_of(&segment.name) {
                    self.forget_segment(id);
                }
                self.insert_segment(*client, segment, now);
                true
            }
            LogOp::Unmount { name } => match self.segments.id_of(name) {
                Some(id) => {
                    self.forget_segment(id);
                    true
                }
                None => false,
            },
            LogOp::Put {
                key,
                size,
                pin,
                pieces,
            } => self.apply_put(key, *size, *pin, pieces, now),
            LogOp::Checksum { key, crc32c } => match self.objects.get_mut(key.as_str()) {
                Some(o) => {
                    o.crc32c = Some(*crc32c);
                    true
                }
                None => false,
            },
            LogOp::Remove { key } => match self.objects.remove(key.as_str()) {
                Some(o) => {
                    self.free_pieces(&o.pieces);
                    true
                }
                None => false,
            },
        }
    }

    fn apply_put(
        &mut self,
        key: &str,
        size: u64,
        pin: LogPin,
        pieces: &[LogPiece],
        now: u64,
    ) -> bool {
        let mut metas = Vec::with_capacity(pieces.len());
        for p in pieces {
            let Some(seg) = self.segments.id_of(&p.segment) else {
                return false;
            };
            metas.push(PieceMeta {
                off: p.off,
                len: p.len,
                seg,
                replica: p.replica,
            });
        }
        if metas.is_empty() {
            return false;
        }
        // The replaced value's space is free again before the new one is placed (an
        // upsert may have reused it once the old lease ended).
        if let Some(old) = self.objects.remove(key) {
            self.free_pieces(&old.pieces);
        }
        let mut placed: Vec<PieceMeta> = Vec::with_capacity(metas.len());
        for m in &metas {
            let ok = self
                .segments
                .get_mut(m.seg)
                .is_some_and(|s| s.alloc.alloc_at(m.off, m.len));
            if !ok {
                self.free_pieces(&placed);
                return false;
            }
            placed.push(*m);
        }
        let pin_until = match pin {
            LogPin::None => 0,
            LogPin::Hard => HARD_PIN,
            LogPin::Soft(left) => now.saturating_add(left).min(HARD_PIN - 1),
        };
        self.objects.insert(
            key.into(),
            Object {
                pieces: metas.into_boxed_slice(),
                size,
                last_access: now,
                // A reader of the old master may still be reading: honour a lease.
                lease_until: now + self.cfg.default_kv_lease_ttl,
                pin_until,
                crc32c: None,
            },
        );
        true
    }

    /// Segment ids referenced by an object (tests).
    #[cfg(test)]
    pub(crate) fn object_segments(&self, key: &str) -> Vec<super::segments::SegId> {
        self.objects
            .get(key)
            .map(|o| o.pieces.iter().map(|p| p.seg).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::config::MasterConfig;
    use mooncake_store_protocol::ReplicateConfig;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn desc(name: &str, size: u64) -> SegmentDesc {
        SegmentDesc {
            name: name.into(),
            base_addr: 1 << 40,
            size,
            protocol: "tcp".into(),
            location: "cpu".into(),
        }
    }

    fn fresh(clock: &Arc<FakeClock>) -> MasterState {
        let cfg = MasterConfig {
            max_slice_size: 64 << 10,
            ..MasterConfig::default()
        };
        MasterState::new(cfg, clock.clone()).with_seed(7)
    }

    /// An object as (key, size, pieces as (segment, offset, len, replica), crc32c).
    type ObjectRow = (String, u64, Vec<(String, u64, u64, u8)>, Option<u32>);

    fn objects(st: &MasterState) -> Vec<ObjectRow> {
        let mut v: Vec<_> = st
            .objects
            .iter()
            .map(|(k, o)| {
                let pieces = o
                    .pieces
                    .iter()
                    .map(|p| {
                        let seg = st.segments.get(p.seg).unwrap().name.clone();
                        (seg, p.off, p.len, p.replica)
                    })
                    .collect();
                (k.to_string(), o.size, pieces, o.crc32c)
            })
            .collect();
        v.sort();
        v
    }

    fn segments(st: &MasterState) -> Vec<(String, u64, u64)> {
        let mut v: Vec<_> = st
            .segments
            .iter()
            .map(|(_, s)| (s.name.clone(), s.size, s.alloc.used()))
            .collect();
        v.sort();
        v
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u64, u32, bool),
        Remove(u8),
        Mount(u8),
        Unmount(u8),
        Tick(u64),
        Get(u8),
        Snapshot,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), 1u64..300_000, 1u32..3, any::<bool>()).prop_map(|(k, s, r, u)| Op::Put(k % 40, s, r, u)),
            2 => any::<u8>().prop_map(|k| Op::Remove(k % 40)),
            1 => any::<u8>().prop_map(|c| Op::Mount(c % 4)),
            1 => any::<u8>().prop_map(|c| Op::Unmount(c % 4)),
            1 => (1u64..3000).prop_map(Op::Tick),
            2 => any::<u8>().prop_map(|k| Op::Get(k % 40)),
            1 => Just(Op::Snapshot),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever happens (puts, upserts, removes, eviction, unmounts, expiry), the
        /// last snapshot plus the log written after it rebuild the same objects at the
        /// same places, with the same segment usage.
        #[test]
        fn snapshot_plus_log_rebuilds_the_state(ops in proptest::collection::vec(op(), 1..120)) {
            let clock = Arc::new(FakeClock::new());
            let mut st = fresh(&clock);
            st.cfg.client_ttl = 2;
            st.start_journal();
            let mut snapshot: Vec<LogOp> = Vec::new();
            let mut log: Vec<LogOp> = Vec::new();
            for c in 0..3u8 {
                st.mount_segment(ClientId(c as u128 + 1), &desc(&format!("n{c}"), 1 << 20)).unwrap();
            }
            for o in ops {
                match o {
                    Op::Put(k, size, r, upsert) => {
                        let key = format!("k{k}");
                        let cfg = ReplicateConfig { replica_num: r, ..ReplicateConfig::default() };
                        if st.put_start(&key, size, &cfg, upsert).is_ok() {
                            if k % 5 == 0 {
                                st.put_revoke(&key).unwrap();
                            } else {
                                let crc = (k % 2 == 0).then_some(u32::from(k) * 7919);
                                st.put_end_checked(&key, crc).unwrap();
                            }
                        }
                    }
                    Op::Remove(k) => { let _ = st.remove(&format!("k{k}"), true); }
                    Op::Mount(c) => {
                        let _ = st.mount_segment(ClientId(c as u128 + 1), &desc(&format!("n{c}"), 1 << 20));
                    }
                    Op::Unmount(c) => { let _ = st.unmount_segment(ClientId(c as u128 + 1), &format!("n{c}")); }
                    Op::Tick(ms) => {
                        clock.advance(Duration::from_millis(ms));
                        for c in 0..4u128 { if ms % 3 != 0 || c != 0 { st.heartbeat(ClientId(c + 1)); } }
                        st.tick();
                    }
                    Op::Get(k) => { let _ = st.get_replica_list(&format!("k{k}")); }
                    Op::Snapshot => {
                        log.extend(st.take_journal());
                        snapshot = st.snapshot_ops();
                        log.clear();
                    }
                }
                log.extend(st.take_journal());
            }
            st.check_invariants().unwrap();
            let mut back = fresh(&clock);
            let r = back.replay(snapshot.iter().chain(log.iter()));
            back.check_invariants().unwrap();
            prop_assert_eq!(objects(&back), objects(&st));
            // Segment usage matches except for space the original still holds for
            // pending puts and leased old values (not logged, not needed).
            let pend: u64 = st.pending.values().chain(std::iter::empty())
                .flat_map(|p| p.pieces.iter())
                .chain(st.deferred.iter().flat_map(|d| d.pieces.iter()))
                .map(|p| super::super::allocator::aligned(p.len).unwrap()).sum();
            let used = |s: &MasterState| segments(s).iter().map(|x| x.2).sum::<u64>();
            prop_assert_eq!(used(&back) + pend, used(&st));
            prop_assert_eq!(segments(&back).len(), segments(&st).len());
            prop_assert_eq!(r.skipped, 0, "ops that did not fit: {:?}", r);
        }
    }

    #[test]
    fn replay_grants_a_lease_and_keeps_pins() {
        let clock = Arc::new(FakeClock::new());
        let mut st = fresh(&clock);
        st.start_journal();
        st.mount_segment(ClientId(1), &desc("a", 1 << 20)).unwrap();
        let hard = ReplicateConfig {
            with_hard_pin: true,
            ..ReplicateConfig::default()
        };
        st.put_start("h", 1000, &hard, false).unwrap();
        st.put_end("h").unwrap();
        st.put_start("x", 1000, &ReplicateConfig::default(), false)
            .unwrap();
        st.put_end("x").unwrap();
        let log = st.take_journal();
        assert_eq!(log.len(), 3);
        let mut back = fresh(&clock);
        back.replay(&log);
        assert!(back.objects["h"].hard_pinned());
        let now = back.now_ms();
        assert!(back.objects["x"].lease_until > now);
        // A leased object is not removed without force.
        assert!(back.remove("x", false).is_err());
        assert_eq!(back.object_segments("x").len(), 1);
        // A put over a segment replay does not know is skipped, not half-applied.
        let bad = LogOp::Put {
            key: "y".into(),
            size: 10,
            pin: LogPin::None,
            pieces: vec![LogPiece {
                segment: "nope".into(),
                off: 0,
                len: 10,
                replica: 0,
            }],
        };
        assert!(!back.apply(&bad));
        // Overlapping an existing allocation: skipped too.
        let LogOp::Put { pieces, .. } = &log[2] else {
            panic!()
        };
        let clash = LogOp::Put {
            key: "z".into(),
            size: 1000,
            pin: LogPin::None,
            pieces: pieces.clone(),
        };
        assert!(!back.apply(&clash));
        back.check_invariants().unwrap();
    }
}
