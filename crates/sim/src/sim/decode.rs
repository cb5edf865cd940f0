//! The decode side: KV arrival at a decode instance, the wait for batch
//! memory, optional late rejection, and continuous batching step by step.
//!
//! Invariants: a request joins a batch only if its full reservation (prompt
//! plus output) fits under the instance's capacity, so nothing is preempted;
//! waiting requests join in FIFO order (head-of-line blocking is modelled);
//! at most one step event per instance is pending (`stepping`); every
//! counter added when a request waits or joins is removed when it leaves,
//! completed or timed out.

use super::events::Ev;
use super::{Observer, Simulator};
use crate::policy::RejectReason;

impl Simulator {
    pub(super) fn decode_arrive(&mut self, s: usize) {
        let (j, need, id) = {
            let r = self.req(s);
            (r.decode, r.need, r.id)
        };
        // `id` also guards the timeout below against slot reuse.
        let d = &mut self.state.decode[j];
        d.arrivals.clear_request(id);
        d.waiting.push_back(s);
        d.waiting_tokens += need;
        d.load.waiting_tokens += need;
        self.admit_waiting(j);
        self.maybe_step(j);
        if let Some(limit) = self.wait_limit_s(s) {
            if self.state.decode[j].waiting.contains(&s) {
                let t = self.state.now + limit;
                self.push(t, Ev::DecodeTimeout(s, id));
            }
        }
    }

    /// How long request `s` may wait for decode memory before it is
    /// rejected late: the configured limit, or under admission modes that
    /// reject late, the wait that alone breaks its TBT SLO (it stretches
    /// one of its `k` longest intervals: `k · SLO`).
    fn wait_limit_s(&mut self, s: usize) -> Option<f64> {
        if let Some(l) = self.cfg.decode_wait_limit_s {
            return Some(l);
        }
        if !self.cfg.admission.mode.rejects_late() {
            return None;
        }
        let k = (self.req(s).output.saturating_sub(1) as f64 / 10.0)
            .ceil()
            .max(1.0);
        Some(k * self.cfg.slo.tbt_s)
    }

    /// Rejects request `id` in slot `s` if it still waits for decode memory
    /// (the slot may have been reused since: the id guards against that).
    pub(super) fn decode_timeout(&mut self, s: usize, id: u64, obs: &mut dyn Observer) {
        let Some(r) = self.slots[s].as_ref().filter(|r| r.id == id) else {
            return;
        };
        let (j, need, arrival) = (r.decode, r.need, r.arrival);
        let d = &mut self.state.decode[j];
        let Some(pos) = d.waiting.iter().position(|&w| w == s) else {
            return;
        };
        d.account(self.state.now);
        d.waiting.remove(pos);
        d.waiting_tokens -= need;
        d.load.waiting_tokens -= need;
        d.load.inbound -= 1;
        d.load.inbound_tokens -= need;
        self.slots[s] = None;
        self.free.push(s);
        self.in_flight -= 1;
        self.reject(id, arrival, RejectReason::DecodeTimeout, obs);
        // Head-of-line blocking may have ended.
        self.admit_waiting(j);
        self.maybe_step(j);
    }

    fn admit_waiting(&mut self, j: usize) {
        let now = self.state.now;
        let d = &mut self.state.decode[j];
        d.account(now);
        while let Some(&s) = d.waiting.front() {
            let r = self.slots[s].as_mut().expect("live slot");
            if d.load.reserved_tokens + r.need > d.load.capacity_tokens {
                break;
            }
            d.waiting.pop_front();
            d.waiting_tokens -= r.need;
            d.load.waiting_tokens -= r.need;
            d.batch.push(s);
            d.batch_joined.insert(s, (now, r.need));
            d.load.reserved_tokens += r.need;
            d.load.context_tokens += r.context;
            d.load.inbound -= 1;
            d.load.inbound_tokens -= r.need;
            d.load.batch += 1;
            r.joined = now;
        }
    }

    fn maybe_step(&mut self, j: usize) {
        let d = &self.state.decode[j];
        if d.stepping || d.batch.is_empty() {
            return;
        }
        let dt = self
            .state
            .cost
            .decode_step_s(d.batch.len() as u64, d.load.context_tokens);
        self.state.decode[j].stepping = true;
        let t = self.state.now + dt;
        self.push(t, Ev::DecodeStep(j));
    }

    pub(super) fn decode_step(&mut self, j: usize, obs: &mut dyn Observer) {
        let now = self.state.now;
        self.state.decode[j].stepping = false;
        self.state.decode[j].account(now);
        let batch = std::mem::take(&mut self.state.decode[j].batch);
        let mut keep = Vec::with_capacity(batch.len());
        for s in batch {
            let r = self.slots[s].as_mut().expect("live slot");
            r.tbt.push(now - r.last_token);
            r.last_token = now;
            r.generated += 1;
            r.context += 1;
            let d = &mut self.state.decode[j];
            d.load.context_tokens += 1;
            if r.generated >= r.output {
                d.batch_joined.remove(&s);
                d.load.reserved_tokens -= r.need;
                d.load.context_tokens -= r.context;
                d.load.batch -= 1;
                let took = now - r.joined;
                let m = &mut self.totals.mean_decode_s[j];
                // Exponential average: recent behaviour matters for prediction.
                *m = if *m == 0.0 {
                    took
                } else {
                    0.9 * *m + 0.1 * took
                };
                d.load.mean_decode_s = *m;
                self.complete(s, obs);
            } else {
                keep.push(s);
            }
        }
        self.state.decode[j].batch = keep;
        self.admit_waiting(j);
        self.maybe_step(j);
    }
}
