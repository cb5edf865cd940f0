//! The reader's scheduling core: which shard to fetch next, and from which
//! holder. Pure: the I/O shell feeds it holder views, completions and
//! failures with the current time, and asks for the next assignment.
//!
//! Policy:
//! - holders are tried peers before the origin (the seeder's uplink is kept
//!   for shards no peer has), then least outstanding transfers (this
//!   reader's own count), then at random;
//! - the chosen holder serves the *rarest* missing shard it has: fewest
//!   copies that exist or are being fetched (holders list their in-flight
//!   shards), ties at random; so readers started together pull different
//!   shards from the seeder and soon have something to give each other;
//! - a holder that failed a transfer is banned for a while; one that served
//!   a shard whose checksum did not match is banned for good;
//! - at most `per_holder` transfers to one holder and `total` overall.
//!
//! Invariants: a shard is in flight at most once; `done` is final; a banned
//! or vanished holder gets no new assignment.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;

use crate::layout::ShardSet;

/// A live holder as seen in metadata.
#[derive(Debug, Clone)]
pub struct HolderView {
    pub id: String,
    pub origin: bool,
    pub have: ShardSet,
    /// Shards that holder is fetching now (it will have them soon).
    pub fetching: ShardSet,
}

/// Fetch `shard` from `holder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub shard: usize,
    pub holder: String,
}

/// Why a fetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Transport error or timeout: the holder may be down.
    Io,
    /// The bytes did not match the shard's checksum.
    Corrupt,
}

/// Limits of one reader.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub total: usize,
    pub per_holder: usize,
    /// How long an I/O failure keeps a holder out.
    pub ban: Duration,
    /// Only fetch from origin holders (the naive baseline).
    pub origin_only: bool,
}

impl Limits {
    /// Concurrent transfers allowed from one holder: one from the origin
    /// (its uplink is shared by every reader: one shard at a time each gets
    /// shards out, and relayed, sooner), `per_holder` from a peer.
    fn cap(&self, origin: bool) -> usize {
        if origin && !self.origin_only {
            1
        } else {
            self.per_holder
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardState {
    Missing,
    InFlight,
    Done,
}

#[derive(Debug)]
struct Holder {
    origin: bool,
    have: ShardSet,
    fetching: ShardSet,
    alive: bool,
    outstanding: usize,
    banned_until: Option<Instant>,
    corrupt: bool,
}

impl Holder {
    fn usable(&self, now: Instant, limits: &Limits) -> bool {
        self.alive
            && !self.corrupt
            && !matches!(self.banned_until, Some(t) if t > now)
            && (self.origin || !limits.origin_only)
    }
}

/// Scheduling state of one `get_replica`.
#[derive(Debug)]
pub struct Scheduler {
    shards: Vec<ShardState>,
    holders: HashMap<String, Holder>,
    limits: Limits,
    in_flight: usize,
    done: usize,
}

impl Scheduler {
    pub fn new(n: usize, limits: Limits) -> Self {
        Self {
            shards: vec![ShardState::Missing; n],
            holders: HashMap::new(),
            limits: Limits {
                total: limits.total.max(1),
                per_holder: limits.per_holder.max(1),
                ..limits
            },
            in_flight: 0,
            done: 0,
        }
    }

    /// Replace the set of live holders (from a fresh metadata read). Holders
    /// missing from `views` are considered gone; their bans are remembered.
    pub fn set_holders(&mut self, views: Vec<HolderView>) {
        for h in self.holders.values_mut() {
            h.alive = false;
        }
        for v in views {
            if v.have.capacity() != self.shards.len() {
                continue;
            }
            let h = self.holders.entry(v.id).or_insert(Holder {
                origin: v.origin,
                have: ShardSet::empty(0),
                fetching: ShardSet::empty(0),
                alive: true,
                outstanding: 0,
                banned_until: None,
                corrupt: false,
            });
            h.origin = v.origin;
            h.have = v.have;
            h.fetching = v.fetching;
            h.alive = true;
        }
    }

    /// The next transfer to start, if any is possible now.
    pub fn next(&mut self, now: Instant, rng: &mut impl Rng) -> Option<Assignment> {
        if self.in_flight >= self.limits.total {
            return None;
        }
        let limits = self.limits;
        let mut candidates: Vec<(&String, &Holder)> = self
            .holders
            .iter()
            .filter(|(_, h)| h.usable(now, &limits) && h.outstanding < limits.cap(h.origin))
            .collect();
        candidates.shuffle(rng);
        candidates.sort_by_key(|(_, h)| (h.origin, h.outstanding));
        // Copies that exist or are on their way (other readers' fetches).
        let rarity = |i: usize| {
            self.holders
                .values()
                .filter(|h| h.alive && !h.corrupt && (h.have.contains(i) || h.fetching.contains(i)))
                .count()
        };
        for (id, h) in candidates {
            let mut best: Vec<usize> = Vec::new();
            let mut best_count = usize::MAX;
            for i in h.have.iter() {
                if self.shards[i] != ShardState::Missing {
                    continue;
                }
                let c = rarity(i);
                if c < best_count {
                    best_count = c;
                    best.clear();
                }
                if c == best_count {
                    best.push(i);
                }
            }
            if let Some(&shard) = best.choose(rng) {
                let holder = id.clone();
                self.shards[shard] = ShardState::InFlight;
                self.in_flight += 1;
                if let Some(h) = self.holders.get_mut(&holder) {
                    h.outstanding += 1;
                }
                return Some(Assignment { shard, holder });
            }
        }
        None
    }

    fn finish(&mut self, a: &Assignment) {
        if self.shards[a.shard] == ShardState::InFlight {
            self.in_flight -= 1;
        }
        if let Some(h) = self.holders.get_mut(&a.holder) {
            h.outstanding = h.outstanding.saturating_sub(1);
        }
    }

    /// `a` succeeded and was verified.
    pub fn completed(&mut self, a: &Assignment) {
        self.finish(a);
        if self.shards[a.shard] != ShardState::Done {
            self.shards[a.shard] = ShardState::Done;
            self.done += 1;
        }
    }

    /// `a` failed; the shard goes back to missing, the holder is banned.
    pub fn failed(&mut self, a: &Assignment, why: Failure, now: Instant) {
        self.finish(a);
        if self.shards[a.shard] == ShardState::InFlight {
            self.shards[a.shard] = ShardState::Missing;
        }
        if let Some(h) = self.holders.get_mut(&a.holder) {
            match why {
                Failure::Io => h.banned_until = Some(now + self.limits.ban),
                Failure::Corrupt => h.corrupt = true,
            }
        }
    }

    pub fn is_complete(&self) -> bool {
        self.done == self.shards.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn done_count(&self) -> usize {
        self.done
    }

    /// Shards being fetched now.
    pub fn in_flight_shards(&self) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&i| self.shards[i] == ShardState::InFlight)
            .collect()
    }

    /// Shards not fetched yet.
    pub fn missing(&self) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&i| self.shards[i] != ShardState::Done)
            .collect()
    }

    /// Holders found serving corrupt data.
    pub fn corrupt_holders(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .holders
            .iter()
            .filter(|(_, h)| h.corrupt)
            .map(|(id, _)| id.clone())
            .collect();
        v.sort();
        v
    }

    /// Number of live holders (for progress display).
    pub fn live_holders(&self) -> usize {
        self.holders.values().filter(|h| h.alive).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn limits() -> Limits {
        Limits {
            total: 8,
            per_holder: 2,
            ban: Duration::from_secs(1),
            origin_only: false,
        }
    }

    fn view(id: &str, origin: bool, n: usize, have: &[usize]) -> HolderView {
        let mut s = ShardSet::empty(n);
        for &i in have {
            s.insert(i);
        }
        HolderView {
            id: id.into(),
            origin,
            fetching: ShardSet::empty(n),
            have: s,
        }
    }

    #[test]
    fn peers_before_origin_then_least_loaded() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut s = Scheduler::new(4, limits());
        s.set_holders(vec![
            view("seed", true, 4, &[0, 1, 2, 3]),
            view("peer", false, 4, &[0, 1, 2, 3]),
        ]);
        // Peers first (up to per_holder), then the seeder (one at a time).
        let a = s.next(now, &mut rng).unwrap();
        assert_eq!(a.holder, "peer");
        let b = s.next(now, &mut rng).unwrap();
        assert_eq!(b.holder, "peer");
        let c = s.next(now, &mut rng).unwrap();
        assert_eq!(c.holder, "seed");
        assert!(s.next(now, &mut rng).is_none());
        // A completion frees the peer's slot: it is preferred again.
        s.completed(&a);
        let d = s.next(now, &mut rng).unwrap();
        assert_eq!(d.holder, "peer");
        // All four shards were handed out once each.
        let mut shards = vec![a.shard, b.shard, c.shard, d.shard];
        shards.sort();
        assert_eq!(shards, vec![0, 1, 2, 3]);
    }

    #[test]
    fn one_transfer_at_a_time_from_the_origin() {
        let mut rng = StdRng::seed_from_u64(8);
        let now = Instant::now();
        let mut s = Scheduler::new(4, limits());
        s.set_holders(vec![view("seed", true, 4, &[0, 1, 2, 3])]);
        let a = s.next(now, &mut rng).unwrap();
        assert!(s.next(now, &mut rng).is_none());
        s.completed(&a);
        assert!(s.next(now, &mut rng).is_some());
    }

    #[test]
    fn rarest_shard_first() {
        let mut rng = StdRng::seed_from_u64(2);
        let now = Instant::now();
        let mut s = Scheduler::new(3, limits());
        s.set_holders(vec![
            view("seed", true, 3, &[0, 1, 2]),
            view("p1", false, 3, &[0, 1]),
            view("p2", false, 3, &[0]),
        ]);
        // p2 only has shard 0; p1 has 0 and 1, 1 is rarer; seed gets 2 (rarest).
        let mut got: Vec<Assignment> = (0..3).filter_map(|_| s.next(now, &mut rng)).collect();
        got.sort_by_key(|a| a.shard);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[2],
            Assignment {
                shard: 2,
                holder: "seed".into()
            }
        );
    }

    #[test]
    fn shards_others_are_fetching_count_as_copies() {
        let mut rng = StdRng::seed_from_u64(7);
        let now = Instant::now();
        let mut s = Scheduler::new(2, limits());
        let mut busy = view("p1", false, 2, &[]);
        busy.fetching.insert(0);
        s.set_holders(vec![view("seed", true, 2, &[0, 1]), busy]);
        // Shard 0 is on its way to p1: take shard 1 from the seeder.
        assert_eq!(s.next(now, &mut rng).unwrap().shard, 1);
        assert_eq!(s.in_flight_shards(), vec![1]);
    }

    #[test]
    fn io_failure_bans_for_a_while_and_retries_elsewhere() {
        let mut rng = StdRng::seed_from_u64(3);
        let t0 = Instant::now();
        let mut l = limits();
        l.per_holder = 1;
        let mut s = Scheduler::new(1, l);
        s.set_holders(vec![view("a", false, 1, &[0]), view("b", false, 1, &[0])]);
        let a = s.next(t0, &mut rng).unwrap();
        s.failed(&a, Failure::Io, t0);
        let b = s.next(t0, &mut rng).unwrap();
        assert_eq!(b.shard, 0);
        assert_ne!(b.holder, a.holder);
        s.failed(&b, Failure::Io, t0);
        // Both banned now; after the ban they are tried again.
        assert!(s.next(t0, &mut rng).is_none());
        assert!(s.next(t0 + Duration::from_secs(2), &mut rng).is_some());
    }

    #[test]
    fn corrupt_holder_is_never_used_again() {
        let mut rng = StdRng::seed_from_u64(4);
        let t0 = Instant::now();
        let mut s = Scheduler::new(2, limits());
        s.set_holders(vec![view("bad", false, 2, &[0, 1])]);
        let a = s.next(t0, &mut rng).unwrap();
        s.failed(&a, Failure::Corrupt, t0);
        assert!(s.next(t0 + Duration::from_secs(3600), &mut rng).is_none());
        assert_eq!(s.corrupt_holders(), vec!["bad".to_string()]);
        // A fresh metadata view does not rehabilitate it.
        s.set_holders(vec![
            view("bad", false, 2, &[0, 1]),
            view("good", true, 2, &[0, 1]),
        ]);
        let b = s.next(t0, &mut rng).unwrap();
        assert_eq!(b.holder, "good");
    }

    #[test]
    fn vanished_holder_gets_nothing_and_completion_is_tracked() {
        let mut rng = StdRng::seed_from_u64(5);
        let t0 = Instant::now();
        let mut s = Scheduler::new(2, limits());
        s.set_holders(vec![view("a", true, 2, &[0, 1])]);
        let a = s.next(t0, &mut rng).unwrap();
        s.set_holders(vec![]);
        assert!(s.next(t0, &mut rng).is_none());
        s.completed(&a);
        assert_eq!(s.done_count(), 1);
        assert_eq!(s.missing(), vec![1 - a.shard]);
        assert!(!s.is_complete());
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn origin_only_ignores_peers() {
        let mut rng = StdRng::seed_from_u64(6);
        let t0 = Instant::now();
        let mut l = limits();
        l.origin_only = true;
        let mut s = Scheduler::new(4, l);
        s.set_holders(vec![
            view("seed", true, 4, &[0, 1, 2, 3]),
            view("p", false, 4, &[0, 1, 2, 3]),
        ]);
        while let Some(a) = s.next(t0, &mut rng) {
            assert_eq!(a.holder, "seed");
        }
    }

    #[test]
    fn readers_started_together_spread_over_shards() {
        // Eight readers, one seeder: their first picks are mostly distinct.
        let t0 = Instant::now();
        let mut firsts = std::collections::HashSet::new();
        for r in 0..8 {
            let mut rng = StdRng::seed_from_u64(100 + r);
            let mut s = Scheduler::new(64, limits());
            s.set_holders(vec![view("seed", true, 64, &(0..64).collect::<Vec<_>>())]);
            firsts.insert(s.next(t0, &mut rng).unwrap().shard);
        }
        assert!(firsts.len() >= 6, "{firsts:?}");
    }
}
