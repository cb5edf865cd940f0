//! The event queue and the main loop: trace arrivals interleaved with
//! simulated events in time order.
//!
//! Owns the ordering of the simulation. Invariants: events pop in `(t, seq)`
//! order, so events at the same instant run in the order they were pushed
//! (deterministic runs); a trace record is handled before any event at a
//! later time and before events at the same time (arrivals first); simulated
//! time never goes backwards; the load sampler reschedules itself only while
//! something is in flight or still to be read, so the loop ends.

use super::{report, Observer, SimError, SimReport, Simulator};
use crate::trace::TraceRecord;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy)]
pub(super) enum Ev {
    PrefillDone(usize),
    DecodeArrive(usize),
    DecodeTimeout(usize, u64),
    DecodeStep(usize),
    Sample,
}

#[derive(Debug)]
pub(super) struct Event {
    t: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    // Min-heap on (t, seq) inside std's max-heap.
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

impl Simulator {
    /// Simulates the whole trace, streaming it, and reports.
    pub fn run<I, E>(mut self, trace: I, obs: &mut dyn Observer) -> Result<SimReport, SimError>
    where
        I: IntoIterator<Item = Result<TraceRecord, E>>,
        E: std::fmt::Display,
    {
        let started = std::time::Instant::now();
        let mut trace = trace.into_iter();
        let mut next = self.pull(&mut trace)?;
        if let Some((t, _)) = &next {
            self.push(*t, Ev::Sample);
        }
        let mut read = 0u64;
        loop {
            let t_ev = self.events.peek().map(|e| e.t);
            match (&next, t_ev) {
                (Some((t, _)), Some(te)) if *t <= te => {}
                (Some(_), None) => {}
                (_, Some(_)) => {
                    let e = self.events.pop().expect("peeked");
                    self.state.now = self.state.now.max(e.t);
                    self.handle(e.ev, &next, obs);
                    continue;
                }
                (None, None) => break,
            }
            let (t, rec) = next.take().expect("matched Some");
            self.state.now = self.state.now.max(t);
            read += 1;
            self.arrive(rec, obs)?;
            if read.is_multiple_of(256) {
                obs.on_progress(read);
            }
            next = self.pull(&mut trace)?;
        }
        obs.on_progress(read);
        debug_assert_eq!(self.in_flight, 0);
        Ok(report::build(self, started.elapsed().as_secs_f64()))
    }

    fn pull<I, E>(&mut self, trace: &mut I) -> Result<Option<(f64, TraceRecord)>, SimError>
    where
        I: Iterator<Item = Result<TraceRecord, E>>,
        E: std::fmt::Display,
    {
        match trace.next() {
            None => Ok(None),
            Some(Err(e)) => Err(SimError::Trace(e.to_string())),
            Some(Ok(r)) => Ok(Some((r.timestamp as f64 / 1000.0 / self.cfg.speedup, r))),
        }
    }

    pub(super) fn push(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.events.push(Event {
            t,
            seq: self.seq,
            ev,
        });
    }

    fn handle(&mut self, ev: Ev, next: &Option<(f64, TraceRecord)>, obs: &mut dyn Observer) {
        match ev {
            Ev::PrefillDone(s) => self.prefill_done(s, obs),
            Ev::DecodeArrive(s) => self.decode_arrive(s),
            Ev::DecodeTimeout(s, id) => self.decode_timeout(s, id, obs),
            Ev::DecodeStep(j) => self.decode_step(j, obs),
            Ev::Sample => {
                self.sample();
                if self.in_flight > 0 || next.is_some() {
                    let t = self.state.now + self.load.interval_s;
                    self.push(t, Ev::Sample);
                }
            }
        }
    }
}
