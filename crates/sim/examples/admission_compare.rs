//! The rejection experiment in one setting: no admission, the baseline
//! (TTFT SLO + late rejection at decode), early and prediction-based early
//! rejection, with Mooncake's own decode check off so the admission rule
//! alone decides (as in `mooncake sim sweep`'s rejection experiment).
//!
//! `cargo run --release -p mooncake-sim --example admission_compare -- \
//!     [PREFILL DECODE SPEEDUP WAIT_LIMIT_S THRESHOLD [COST_CONFIG]]` (default
//!     `8 8 2 0 1.0`, the report's 8P8D at 2×; a wait limit of 0 is the
//!     wait that alone breaks a request's TBT SLO).
//!
//! "fast std" is the standard deviation of the decode pool's committed share
//! around its own 60 s moving average over the middle 80% of the run: the
//! swing at the admission loop's time scale, without the trace's slow
//! changes in arrival rate. "coupling" is `decode_prefill_coupling`: the
//! correlation of decode load with the prefill queue 5 s later (strongly
//! negative = the two swing out of phase).

use mooncake_conductor::cost::CostConfig;
use mooncake_conductor::policy::admission::{Admission, AdmissionMode};
use mooncake_conductor::policy::PolicyName;
use mooncake_sim::sim::sweep::admission_policy;
use mooncake_sim::sim::{simulate, NoObserver, SimConfig};
use mooncake_sim::trace::{published_trace, TraceReader};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<f64> = raw
        .iter()
        .take(5)
        .map(|a| a.parse::<f64>())
        .collect::<Result<_, _>>()?;
    let cost = match raw.get(5) {
        Some(path) => CostConfig::from_file(Path::new(path))?,
        None => CostConfig::default(),
    };
    let arg = |i: usize, default: f64| args.get(i).copied().unwrap_or(default);
    let (prefill, decode) = (arg(0, 8.0) as usize, arg(1, 8.0) as usize);
    let (speedup, wait, threshold) = (arg(2, 2.0), arg(3, 0.0), arg(4, 1.0));
    let trace = published_trace("conversation_trace.jsonl")?;
    println!(
        "{prefill}P+{decode}D at {speedup}x, decode wait limit {wait} s, threshold {threshold}"
    );
    println!("admission   rejected  (late)  effective  goodput  TBT p99  decode mean  fast std  coupling");
    for mode in [
        AdmissionMode::None,
        AdmissionMode::Baseline,
        AdmissionMode::Early,
        AdmissionMode::Predictive,
    ] {
        let cfg = SimConfig {
            prefill,
            decode,
            speedup,
            decode_wait_limit_s: (wait > 0.0).then_some(wait),
            admission: Admission { mode, threshold },
            cost: cost.clone(),
            ..SimConfig::default()
        };
        let policy = admission_policy(PolicyName::Mooncake, cfg.seed);
        let rep = simulate(cfg, policy, TraceReader::open(&trace)?, &mut NoObserver)?;
        let s = &rep.summary;
        let pool = rep.load.decode_pool();
        let (mean, fast) = steady_mean_and_fast_std(&pool, 30);
        let late = s.rejected_by.get("decode-timeout").copied().unwrap_or(0);
        println!(
            "{:<10} {:>9} {:>7} {:>10} {:>8.3} {:>6.0}ms {:>12.3} {:>9.4} {:>+9.2}",
            mode.as_str(),
            s.rejected,
            late,
            s.effective,
            s.goodput_rps,
            s.tbt_p99_s * 1e3,
            mean,
            fast,
            s.decode_prefill_coupling
        );
    }
    Ok(())
}

/// Mean of the middle 80% of `xs`, and the standard deviation of each sample
/// from the mean of the `half` samples either side of it.
fn steady_mean_and_fast_std(xs: &[f64], half: usize) -> (f64, f64) {
    let (lo, hi) = (xs.len() / 10, xs.len() * 9 / 10);
    let mid = &xs[lo..hi];
    let mean = mid.iter().sum::<f64>() / mid.len().max(1) as f64;
    let dev: Vec<f64> = (lo.max(half)..hi.min(xs.len().saturating_sub(half)))
        .map(|i| xs[i] - xs[i - half..i + half].iter().sum::<f64>() / (2 * half) as f64)
        .collect();
    let var = dev.iter().map(|d| d * d).sum::<f64>() / dev.len().max(1) as f64;
    (mean, var.sqrt())
}
