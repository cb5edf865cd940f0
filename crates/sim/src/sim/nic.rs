//! Per-node NIC queues: prefix fetches between prefill nodes and the
//! prefill → decode KV streams share each node's links.
//!
//! Each node has an egress and an ingress [`Link`] (a full-duplex NIC). A
//! link is shared by the transfers on it (processor sharing: the Transfer
//! Engine slices every transfer and interleaves the slices over the NICs).
//! A new transfer of `d` seconds (at full bandwidth) that starts at `t0`
//! beside transfers with `w_i` seconds of work left ends, under processor
//! sharing with no later arrivals, at `t0 + d + Σ min(d, w_i)`; a transfer
//! crossing two links ends when the slower of the two finishes it.
//!
//! Simplification: the transfers already in flight keep their predicted end
//! (their events are scheduled), so a newcomer is slowed by them but does
//! not slow them down; contention is charged to the later transfer only.
//!
//! Invariants: a link holds only transfers that end after the last booking
//! time (ended ones are dropped), and every end is at least its start plus
//! its own work.

/// One direction of one NIC.
#[derive(Debug, Default, Clone)]
pub struct Link {
    /// `(start, end, work seconds at full bandwidth)` of the transfers on it.
    jobs: Vec<(f64, f64, f64)>,
}

impl Link {
    /// When a transfer of `d` seconds starting at `t0` would end here.
    /// Each transfer on the link that overlaps `[t0, t0 + d)` takes at
    /// most `d`, its own work, or the overlap of its span with the
    /// newcomer's, whichever is least.
    pub fn finish(&self, t0: f64, d: f64) -> f64 {
        let shared: f64 = self
            .jobs
            .iter()
            .filter(|&&(start, _, _)| start < t0 + d)
            .map(|&(start, end, work)| d.min(work).min((end - start.max(t0)).max(0.0)))
            .sum();
        t0 + d + shared
    }

    /// Adds a transfer of `work` seconds spanning `[start, end)`, dropping
    /// those that ended by `now`.
    pub fn add(&mut self, start: f64, end: f64, work: f64, now: f64) {
        self.jobs.retain(|&(_, e, _)| e > now);
        if work > 0.0 {
            self.jobs.push((start, end, work));
        }
    }
}

/// One node's NIC.
#[derive(Debug, Default, Clone)]
pub struct Nic {
    /// Bytes leaving the node.
    pub egress: Link,
    /// Bytes arriving at the node.
    pub ingress: Link,
}

/// When a transfer of `d` seconds from `a` to `b`, starting at `t0`, ends.
pub fn finish_both(a: &Link, b: &Link, t0: f64, d: f64) -> f64 {
    a.finish(t0, d).max(b.finish(t0, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_link_slows_the_newcomer() {
        let mut l = Link::default();
        assert_eq!(l.finish(1.0, 2.0), 3.0, "alone: full bandwidth");
        l.add(1.0, 3.0, 2.0, 0.0);
        // At 2.0 the first has 1 s left: the newcomer ends after its 2 s
        // plus the 1 s it gave away.
        assert_eq!(l.finish(2.0, 2.0), 5.0);
        // A short transfer beside a long one shares for its own length.
        assert_eq!(l.finish(1.0, 0.5), 1.5 + 0.5);
        // One that ends before the other starts is not slowed.
        assert_eq!(l.finish(0.0, 0.5), 0.5);
        // Ended transfers are forgotten.
        l.add(9.0, 10.0, 1.0, 5.0);
        assert_eq!(l.jobs.len(), 1);
        assert_eq!(l.finish(20.0, 1.0), 21.0);
    }

    #[test]
    fn the_slower_end_decides() {
        let mut a = Link::default();
        let b = Link::default();
        a.add(0.0, 4.0, 4.0, 0.0);
        assert_eq!(finish_both(&a, &b, 0.0, 1.0), 2.0);
        assert_eq!(finish_both(&b, &b, 0.0, 1.0), 1.0);
    }

    #[test]
    fn more_transfers_never_finish_earlier() {
        let mut l = Link::default();
        let mut last = l.finish(0.0, 1.0);
        for k in 1..20 {
            l.add(0.0, k as f64, 1.0, 0.0);
            let f = l.finish(0.0, 1.0);
            assert!(f >= last);
            last = f;
        }
    }
}
