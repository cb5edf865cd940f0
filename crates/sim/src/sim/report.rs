//! What a run produces: per-request outcomes (streamed to an observer) and
//! the aggregate [`SimReport`] with its serialisable [`SimSummary`].

use super::metrics::{lagged_correlation, std_dev, Histogram, LoadSeries};
use super::Simulator;
use crate::policy::RejectReason;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutcomeKind {
    /// Served to the last token.
    Completed {
        /// Time to first token, seconds.
        ttft_s: f64,
        /// The paper's TBT (mean of the longest 10% intervals), seconds.
        tbt_s: f64,
        /// Met both SLOs.
        effective: bool,
    },
    /// Turned away.
    Rejected(RejectReason),
}

/// One request's end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Request id (trace line order, from 0).
    pub id: u64,
    /// Arrival time (after speedup), seconds.
    pub arrival_s: f64,
    /// How it ended.
    pub kind: OutcomeKind,
}

/// The numbers of a run (the `--json` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimSummary {
    /// Policy name.
    pub policy: String,
    /// Admission mode.
    pub admission: String,
    /// Prefill instances.
    pub prefill: usize,
    /// Decode instances.
    pub decode: usize,
    /// Arrival compression factor.
    pub speedup: f64,
    /// TTFT SLO, seconds.
    pub slo_ttft_s: f64,
    /// TBT SLO, seconds.
    pub slo_tbt_s: f64,
    /// Requests read.
    pub requests: u64,
    /// Requests served to the end.
    pub completed: u64,
    /// Requests rejected.
    pub rejected: u64,
    /// Rejections by reason.
    pub rejected_by: BTreeMap<String, u64>,
    /// Completed requests meeting both SLOs.
    pub effective: u64,
    /// `effective / requests`.
    pub effective_ratio: f64,
    /// Effective requests per second of (compressed) arrival span.
    pub goodput_rps: f64,
    /// Arrival span, seconds (first to last arrival).
    pub duration_s: f64,
    /// Time the last request finished, seconds.
    pub makespan_s: f64,
    /// Mean TTFT of completed requests.
    pub ttft_mean_s: f64,
    /// TTFT median.
    pub ttft_p50_s: f64,
    /// TTFT 90th percentile.
    pub ttft_p90_s: f64,
    /// TTFT 99th percentile.
    pub ttft_p99_s: f64,
    /// Mean per-request TBT.
    pub tbt_mean_s: f64,
    /// TBT median.
    pub tbt_p50_s: f64,
    /// TBT 90th percentile.
    pub tbt_p90_s: f64,
    /// TBT 99th percentile.
    pub tbt_p99_s: f64,
    /// Reused prompt tokens / prompt tokens of admitted requests.
    pub cache_hit_ratio: f64,
    /// Prefix blocks fetched from peer instances (hot-block replication).
    pub fetched_blocks: u64,
    /// Prefill compute seconds, all instances.
    pub prefill_gpu_s: f64,
    /// Prefill compute seconds per admitted request.
    pub prefill_gpu_s_per_request: f64,
    /// Busy share of each prefill instance over the makespan.
    pub prefill_utilization: Vec<f64>,
    /// Time-averaged reserved memory share of each decode instance.
    pub decode_load: Vec<f64>,
    /// Standard deviation of the decode pool's load samples (oscillation),
    /// over the middle 80% of the run (ramp-up and drain excluded).
    pub decode_load_std: f64,
    /// Standard deviation of the prefill pool's mean queue seconds, same window.
    pub prefill_queue_std_s: f64,
    /// Correlation of the decode pool's load with the prefill pool's queue
    /// [`COUPLING_LAG_S`] later, same window: strongly negative when
    /// admission swings prefill and decode load out of phase (the report's
    /// observation about early rejection).
    pub decode_prefill_coupling: f64,
    /// Wall-clock seconds the simulation took.
    pub sim_wall_s: f64,
}

/// A run's full result: the summary plus distributions and load over time.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The numbers.
    pub summary: SimSummary,
    /// TTFT distribution of completed requests.
    pub ttft: Histogram,
    /// Per-request TBT distribution (requests with more than one token).
    pub tbt: Histogram,
    /// Per-instance load samples.
    pub load: LoadSeries,
}

/// The middle 80% of a series: the steady state between ramp-up and drain.
/// The lag of [`SimSummary::decode_prefill_coupling`]: about the time a
/// request admitted now takes to reach decode in the admission experiments.
pub const COUPLING_LAG_S: f64 = 5.0;

fn steady(xs: &[f64]) -> &[f64] {
    let cut = xs.len() / 10;
    &xs[cut..xs.len() - cut]
}

pub(super) fn build(mut sim: Simulator, wall_s: f64) -> SimReport {
    let now = sim.totals.last_done.max(sim.totals.last_arrival);
    for d in &mut sim.state.decode {
        d.account(now);
    }
    let t = &sim.totals;
    let first = t.first_arrival.unwrap_or(0.0);
    let duration = t.last_arrival - first;
    let makespan = now - first;
    let span = if duration > 0.0 {
        duration
    } else {
        makespan.max(1e-9)
    };
    let rejected: u64 = t.rejected.values().sum();
    let admitted = t.requests - rejected;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let decode_pool = sim.load.decode_pool();
    let prefill_pool = sim.load.prefill_pool();
    let summary = SimSummary {
        policy: sim.policy.name().to_string(),
        admission: sim.cfg.admission.mode.to_string(),
        prefill: sim.cfg.prefill,
        decode: sim.cfg.decode,
        speedup: sim.cfg.speedup,
        slo_ttft_s: sim.cfg.slo.ttft_s,
        slo_tbt_s: sim.cfg.slo.tbt_s,
        requests: t.requests,
        completed: t.completed,
        rejected,
        rejected_by: t
            .rejected
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), *v))
            .collect(),
        effective: t.effective,
        effective_ratio: ratio(t.effective as f64, t.requests as f64),
        goodput_rps: t.effective as f64 / span,
        duration_s: duration,
        makespan_s: makespan,
        ttft_mean_s: t.ttft.mean(),
        ttft_p50_s: t.ttft.quantile(0.5),
        ttft_p90_s: t.ttft.quantile(0.9),
        ttft_p99_s: t.ttft.quantile(0.99),
        tbt_mean_s: t.tbt.mean(),
        tbt_p50_s: t.tbt.quantile(0.5),
        tbt_p90_s: t.tbt.quantile(0.9),
        tbt_p99_s: t.tbt.quantile(0.99),
        cache_hit_ratio: ratio(t.cached_tokens as f64, t.input_tokens as f64),
        fetched_blocks: t.fetched_blocks,
        prefill_gpu_s: t.prefill_compute_s,
        prefill_gpu_s_per_request: ratio(t.prefill_compute_s, admitted as f64),
        prefill_utilization: sim
            .state
            .prefill
            .iter()
            .map(|p| ratio(p.busy_s, makespan))
            .collect(),
        decode_load: sim
            .state
            .decode
            .iter()
            .map(|d| ratio(d.load_integral, now))
            .collect(),
        decode_load_std: std_dev(steady(&decode_pool)),
        prefill_queue_std_s: std_dev(steady(&prefill_pool)),
        decode_prefill_coupling: lagged_correlation(
            steady(&decode_pool),
            steady(&prefill_pool),
            (COUPLING_LAG_S / sim.load.interval_s).round() as usize,
        ),
        sim_wall_s: wall_s,
    };
    SimReport {
        summary,
        ttft: sim.totals.ttft,
        tbt: sim.totals.tbt,
        load: sim.load,
    }
}
