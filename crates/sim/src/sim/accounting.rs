//! Book-keeping for requests in flight and their ends: the slot arena,
//! completion and rejection into the running totals and the observer, and
//! periodic load samples.
//!
//! Invariants: `in_flight` equals the number of occupied slots; a slot is
//! freed exactly once, when its request completes or is rejected late; each
//! request read produces exactly one outcome (completed or rejected).

use super::{Observer, Outcome, OutcomeKind, Req, Simulator};
use crate::policy::RejectReason;

impl Simulator {
    pub(super) fn alloc(&mut self, r: Req) -> usize {
        self.in_flight += 1;
        if let Some(s) = self.free.pop() {
            self.slots[s] = Some(r);
            s
        } else {
            self.slots.push(Some(r));
            self.slots.len() - 1
        }
    }

    pub(super) fn req(&mut self, s: usize) -> &mut Req {
        self.slots[s].as_mut().expect("live slot")
    }

    pub(super) fn reject(
        &mut self,
        id: u64,
        arrival_s: f64,
        reason: RejectReason,
        obs: &mut dyn Observer,
    ) {
        self.totals.last_done = self.totals.last_done.max(self.state.now);
        *self.totals.rejected.entry(reason).or_default() += 1;
        obs.on_outcome(&Outcome {
            id,
            arrival_s,
            kind: OutcomeKind::Rejected(reason),
        });
    }

    pub(super) fn complete(&mut self, s: usize, obs: &mut dyn Observer) {
        let r = self.slots[s].take().expect("live slot");
        self.free.push(s);
        self.in_flight -= 1;
        let ttft = r.first_token - r.arrival;
        let tbt = r.tbt.tbt_s();
        let slo = self.cfg.slo;
        let effective = ttft <= slo.ttft_s && tbt <= slo.tbt_s;
        self.totals.completed += 1;
        self.totals.last_done = self.totals.last_done.max(r.first_token.max(r.last_token));
        self.totals.effective += effective as u64;
        self.totals.ttft.record(ttft);
        if r.output > 1 {
            self.totals.tbt.record(tbt);
        }
        obs.on_outcome(&Outcome {
            id: r.id,
            arrival_s: r.arrival,
            kind: OutcomeKind::Completed {
                ttft_s: ttft,
                tbt_s: tbt,
                effective,
            },
        });
    }

    pub(super) fn sample(&mut self) {
        let now = self.state.now;
        let prefill = self
            .state
            .prefill
            .iter()
            .map(|p| (p.busy_until - now).max(0.0) as f32)
            .collect();
        let decode = self
            .state
            .decode
            .iter()
            .map(|d| d.occupancy() as f32)
            .collect();
        self.load.push(now, prefill, decode);
    }
}
