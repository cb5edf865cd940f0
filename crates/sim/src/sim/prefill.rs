//! The prefill side: a request's arrival, routing, admission, prefix cache
//! reuse (local and fetched from a peer), booking of prefill time on an
//! instance or its pipeline group, and the hand-off to decode.
//!
//! Invariants: a request is routed and admitted before anything is booked
//! for it, so a rejection changes no instance's load; prefill load counters
//! added on arrival are removed exactly once when its prefill ends; the
//! decode instance's expected arrival and inbound counters are booked on
//! arrival, and a request with a single output token settles them itself
//! when its prefill completes it (it never reaches decode).

use super::events::Ev;
use super::metrics::TbtTracker;
use super::{Observer, Req, SimError, Simulator};
use crate::policy::{cached_tokens, decide, Refusal, RejectReason, RequestInfo};
use crate::trace::TraceRecord;

impl Simulator {
    pub(super) fn arrive(
        &mut self,
        rec: TraceRecord,
        obs: &mut dyn Observer,
    ) -> Result<(), SimError> {
        let now = self.state.now;
        let id = self.totals.requests;
        self.totals.requests += 1;
        self.totals.first_arrival.get_or_insert(now);
        self.totals.last_arrival = now;
        let input = rec.input_length.max(1);
        let output = self
            .cfg
            .output_tokens_override
            .unwrap_or(rec.output_length)
            .max(1);
        let info = RequestInfo {
            id,
            input_tokens: input,
            output_tokens: output,
            blocks: &rec.hash_ids,
        };
        let need = input as u64 + output as u64;
        let max_cap = self
            .state
            .decode
            .iter()
            .map(|d| d.load.capacity_tokens)
            .max()
            .unwrap_or(0);
        if output > 1 && need > max_cap {
            self.reject(id, now, RejectReason::TooLarge, obs);
            return Ok(());
        }
        self.state.refresh();
        let placement = match decide(
            self.policy.as_mut(),
            &self.cfg.admission,
            &info,
            &self.state,
        ) {
            Ok(p) => p,
            Err(Refusal::Rejected(r)) => {
                self.reject(id, now, r, obs);
                return Ok(());
            }
            Err(Refusal::BadPlacement(bad)) => return Err(SimError::BadPlacement { id, bad }),
        };
        let bt = self.cfg.block_tokens;
        let p = placement.prefill;
        let local = self.state.prefill[p].cache.lookup_prefix(&rec.hash_ids);
        let mut prefix = local;
        if let Some(f) = placement.fetch {
            // `decide` checked that `f.from` exists; only what the source
            // really holds can be fetched.
            let src = &mut self.state.prefill[f.from];
            let avail = src
                .cache
                .touch(&rec.hash_ids[..f.prefix_blocks.min(rec.hash_ids.len())]);
            prefix = prefix.max(avail);
        }
        self.state.prefill[p].cache.touch(&rec.hash_ids[..local]);
        // A policy may reuse less than it could (to hide the KV transfer
        // behind compute); the blocks are still touched, as a real cache
        // lookup would.
        if let Some(limit) = placement.reuse_limit_blocks {
            prefix = prefix.min(limit);
        }
        let local = local.min(prefix);
        let cached = cached_tokens(&info, prefix, bt);
        let local_cached = cached_tokens(&info, local, bt);
        let uncached = input as u64 - cached;
        let cost = &self.state.cost;
        let h2d_s = cost.h2d_load_s(cached);
        let compute_s = cost.prefill_compute_s(uncached, cached);
        // The fetch runs while the request waits in the prefill queue, on
        // both nodes' NICs.
        let mut ready = now;
        if let Some(f) = placement.fetch.filter(|_| cached > local_cached) {
            let dur = cost.transfer_tokens_s(cached - local_cached);
            ready = self.state.fetch_end(f.from, p, now, dur);
            if f.from != p && self.state.nic_queues {
                self.state.prefill[f.from]
                    .nic
                    .egress
                    .add(now, ready, dur, now);
                self.state.prefill[p].nic.ingress.add(now, ready, dur, now);
            }
        }
        self.totals.fetched_blocks += (prefix - local) as u64;
        self.totals.input_tokens += input as u64;
        self.totals.cached_tokens += cached;
        let (start, finish) = self.schedule_prefill(p, uncached, ready, h2d_s, compute_s);
        let inst = &mut self.state.prefill[p];
        inst.load.requests += 1;
        inst.load.prefill_tokens += uncached;
        inst.load.active_tokens += input as u64;
        // KV streams to decode layer by layer: it ends one layer's share
        // after prefill at the earliest, and takes at least the whole
        // transfer from the start of prefill; it is placed as late as that
        // allows, sharing the prefill node's egress and the decode node's
        // ingress with the transfers on them.
        let arrive_at = if output > 1 {
            let cost = &self.state.cost;
            let kv_s = cost.transfer_tokens_s(input as u64);
            let layer = kv_s / self.state.cost.config().model.layers as f64;
            let t0 = start.max(finish + layer - kv_s);
            let end = self.state.stream_end(p, placement.decode, t0, kv_s);
            if self.state.nic_queues {
                self.state.prefill[p].nic.egress.add(t0, end, kv_s, now);
                let d = &mut self.state.decode[placement.decode];
                d.nic.ingress.add(t0, end, kv_s, now);
            }
            end.max(finish + layer)
        } else {
            finish
        };
        let d = &mut self.state.decode[placement.decode];
        d.load.inbound += 1;
        d.load.inbound_tokens += need;
        d.arrivals.insert((arrive_at.to_bits(), id), need);
        let slot = self.alloc(Req {
            id,
            arrival: now,
            input,
            output,
            blocks: rec.hash_ids,
            prefill: p,
            decode: placement.decode,
            need,
            uncached,
            kv_arrive: arrive_at,
            first_token: 0.0,
            last_token: 0.0,
            generated: 0,
            context: 0,
            joined: 0.0,
            tbt: TbtTracker::new(output - 1),
        });
        self.push(finish, Ev::PrefillDone(slot));
        Ok(())
    }

    /// Books prefill time on instance `p` (or its pipeline group), no
    /// earlier than `ready` (its prefix fetch landed), and returns the
    /// start and finish times. The prefix loads from DRAM layer-wise,
    /// overlapped with compute.
    fn schedule_prefill(
        &mut self,
        p: usize,
        uncached: u64,
        ready: f64,
        h2d_s: f64,
        compute_s: f64,
    ) -> (f64, f64) {
        let now = self.state.now.max(ready);
        let n = self.state.prefill.len();
        let group = self.cfg.chunked_prefill.and_then(|c| {
            let members = c.group(p, n)?;
            let busy = c.pipelined_s(compute_s, uncached, members.len())?;
            Some((members, busy))
        });
        let (members, busy) = group.unwrap_or((p..p + 1, compute_s));
        let start = members
            .clone()
            .map(|i| self.state.prefill[i].busy_until)
            .fold(now, f64::max);
        let finish = start + self.state.cost.layerwise_s(h2d_s, busy);
        for i in members {
            let inst = &mut self.state.prefill[i];
            inst.busy_until = finish;
            inst.busy_s += busy;
            self.totals.prefill_compute_s += busy;
        }
        (start, finish)
    }

    pub(super) fn prefill_done(&mut self, s: usize, obs: &mut dyn Observer) {
        let now = self.state.now;
        let r = self.slots[s].as_mut().expect("live slot");
        r.first_token = now;
        r.last_token = now;
        r.generated = 1;
        r.context = r.input as u64 + 1;
        let inst = &mut self.state.prefill[r.prefill];
        inst.load.requests -= 1;
        inst.load.prefill_tokens -= r.uncached;
        inst.load.active_tokens -= r.input as u64;
        inst.cache.insert(&r.blocks);
        r.blocks = Vec::new();
        if r.output <= 1 {
            let d = &mut self.state.decode[r.decode];
            d.arrivals.clear_request(r.id);
            let d = &mut d.load;
            d.inbound -= 1;
            d.inbound_tokens -= r.need;
            self.complete(s, obs);
            return;
        }
        let at = r.kv_arrive.max(now);
        self.push(at, Ev::DecodeArrive(s));
    }
}
