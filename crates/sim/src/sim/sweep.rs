//! `mooncake sim sweep`: policies × load levels × admission rules over one
//! trace (placement only with `none`, placement + the same admission rule
//! for every policy with the others), plus the rejection experiment
//! (baseline vs early vs prediction-based early rejection on a
//! decode-bound cluster), and the SVG plots of the results.
//!
//! Each run streams the trace afresh (memory stays bounded); results are
//! summaries, two latency CDFs per policy at one load level, and the load
//! series of the early-vs-predictive comparison.

use super::{simulate, NoObserver, Observer, SimConfig, SimError, SimReport, SimSummary};
use crate::plot::{LineChart, Scale};
use crate::policy::admission::{Admission, AdmissionMode};
use crate::policy::mooncake::Mooncake;
use crate::policy::{Policy, PolicyName};
use crate::trace::TraceRecord;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A fresh pass over the trace.
pub type TraceIter = Box<dyn Iterator<Item = Result<TraceRecord, String>>>;

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Cluster, SLOs and cost model shared by every run.
    pub base: SimConfig,
    /// Policies compared.
    pub policies: Vec<PolicyName>,
    /// Load levels (arrival compression factors).
    pub speedups: Vec<f64>,
    /// Admission rules every policy runs under (`none` = placement only).
    pub admissions: Vec<AdmissionMode>,
    /// Load level whose TTFT / TBT CDFs are plotted.
    pub cdf_speedup: f64,
    /// Rejection experiment: this policy at this load under
    /// [`REJECTION_MODES`].
    pub admission_policy: PolicyName,
    /// Load level of the admission comparison.
    pub admission_speedup: f64,
    /// Prefill instances in the admission comparison (enough that prefill
    /// is not the bottleneck).
    pub admission_prefill: usize,
    /// Decode instances in the admission comparison (decode-bound on purpose).
    pub admission_decode: usize,
    /// Decode wait limit in the admission comparison: over-admitted
    /// requests are rejected after prefill, as in the report's setting.
    pub admission_wait_limit_s: Option<f64>,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            base: SimConfig::default(),
            policies: PolicyName::ALL.to_vec(),
            speedups: vec![0.5, 1.0, 1.5, 2.0, 3.0],
            admissions: vec![AdmissionMode::None, AdmissionMode::Slo],
            cdf_speedup: 1.5,
            admission_policy: PolicyName::Mooncake,
            admission_speedup: 2.0,
            admission_prefill: 8,
            admission_decode: 2,
            admission_wait_limit_s: None,
        }
    }
}

/// The rejection experiment's rules (arXiv report: baseline, early
/// rejection, prediction-based early rejection).
pub const REJECTION_MODES: [AdmissionMode; 3] = [
    AdmissionMode::Baseline,
    AdmissionMode::Early,
    AdmissionMode::Predictive,
];

/// One CDF per policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyCdf {
    /// Policy name.
    pub policy: String,
    /// `(seconds, share ≤)` points of the TTFT CDF.
    pub ttft: Vec<(f64, f64)>,
    /// `(seconds, share ≤)` points of the TBT CDF.
    pub tbt: Vec<(f64, f64)>,
}

/// Everything a sweep produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepResult {
    /// One summary per (policy, speedup, admission): speedups outermost,
    /// then admission rules, then policies.
    pub rows: Vec<SimSummary>,
    /// CDFs at `cdf_speedup`, placement only (the first admission rule).
    pub cdfs: Vec<PolicyCdf>,
    /// Rejection experiment: one summary per [`REJECTION_MODES`] entry.
    pub admission: Vec<SimSummary>,
    /// Decode pool load over time, `(t, load)`, same runs.
    pub admission_load: Vec<(String, Vec<(f64, f64)>)>,
    /// Prefill pool's mean queue over time, `(t, seconds)`, same runs.
    #[serde(default)]
    pub admission_prefill_queue: Vec<(String, Vec<(f64, f64)>)>,
}

impl SweepResult {
    /// The row of `policy` at `speedup` (the first admission rule swept).
    pub fn row(&self, policy: &str, speedup: f64) -> Option<&SimSummary> {
        self.rows
            .iter()
            .find(|r| r.policy == policy && r.speedup == speedup)
    }

    /// The row of `policy` at `speedup` under `admission`.
    pub fn row_with(
        &self,
        policy: &str,
        speedup: f64,
        admission: AdmissionMode,
    ) -> Option<&SimSummary> {
        self.rows.iter().find(|r| {
            r.policy == policy && r.speedup == speedup && r.admission == admission.as_str()
        })
    }
}

/// Runs the sweep; `open` yields a fresh pass over the trace per run and
/// `progress(done, total)` follows the runs.
pub fn run_sweep(
    cfg: &SweepConfig,
    open: &mut dyn FnMut() -> Result<TraceIter, SimError>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SweepResult, SimError> {
    let total = sweep_runs(cfg);
    let mut done = 0;
    let mut one = |c: SimConfig,
                   policy: Box<dyn Policy>,
                   obs: &mut dyn Observer|
     -> Result<SimReport, SimError> {
        let r = simulate(c, policy, open()?, obs)?;
        done += 1;
        progress(done, total);
        Ok(r)
    };
    let mut rows = Vec::new();
    let mut cdfs = Vec::new();
    for &sp in &cfg.speedups {
        for (a, &mode) in cfg.admissions.iter().enumerate() {
            for &p in &cfg.policies {
                let c = SimConfig {
                    speedup: sp,
                    admission: Admission {
                        mode,
                        ..cfg.base.admission
                    },
                    ..cfg.base.clone()
                };
                let policy = p.build(c.seed);
                let rep = one(c, policy, &mut NoObserver)?;
                if sp == cfg.cdf_speedup && a == 0 {
                    cdfs.push(PolicyCdf {
                        policy: p.to_string(),
                        ttft: rep.ttft.cdf(),
                        tbt: rep.tbt.cdf(),
                    });
                }
                rows.push(rep.summary);
            }
        }
    }
    let mut admission = Vec::new();
    let mut admission_load = Vec::new();
    let mut admission_prefill_queue = Vec::new();
    for mode in REJECTION_MODES {
        let c = SimConfig {
            speedup: cfg.admission_speedup,
            prefill: cfg.admission_prefill,
            decode: cfg.admission_decode,
            decode_wait_limit_s: cfg.admission_wait_limit_s.or(cfg.base.decode_wait_limit_s),
            admission: Admission {
                mode,
                ..cfg.base.admission
            },
            ..cfg.base.clone()
        };
        let policy = admission_policy(cfg.admission_policy, c.seed);
        let rep = one(c, policy, &mut NoObserver)?;
        let pool = rep.load.decode_pool();
        admission_load.push((
            mode.to_string(),
            rep.load.t_s.iter().copied().zip(pool).collect(),
        ));
        admission_prefill_queue.push((
            mode.to_string(),
            rep.load
                .t_s
                .iter()
                .copied()
                .zip(rep.load.prefill_pool())
                .collect(),
        ));
        admission.push(rep.summary);
    }
    Ok(SweepResult {
        rows,
        cdfs,
        admission,
        admission_load,
        admission_prefill_queue,
    })
}

/// Simulations a sweep runs.
pub fn sweep_runs(cfg: &SweepConfig) -> usize {
    cfg.policies.len() * cfg.speedups.len() * cfg.admissions.len() + REJECTION_MODES.len()
}

/// The policy of the admission comparison: Mooncake's own decode-memory
/// check is turned off so the admission rule alone decides.
pub fn admission_policy(name: PolicyName, seed: u64) -> Box<dyn Policy> {
    match name {
        PolicyName::Mooncake => Box::new(Mooncake {
            decode_memory_check: false,
            ..Mooncake::default()
        }),
        other => other.build(seed),
    }
}

/// Writes `sweep.json` and the SVG plots into `dir`; returns the paths.
pub fn write_sweep(
    result: &SweepResult,
    cfg: &SweepConfig,
    dir: &Path,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let mut save = |name: &str, svg: String| -> std::io::Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, svg)?;
        out.push(p);
        Ok(())
    };
    let json = serde_json::to_string_pretty(result).map_err(std::io::Error::other)?;
    save("sweep.json", json)?;

    let mut goodput = LineChart::new(format!(
        "Goodput vs load ({}P+{}D, TTFT ≤ {} s, TBT ≤ {} ms)",
        cfg.base.prefill,
        cfg.base.decode,
        cfg.base.slo.ttft_s,
        cfg.base.slo.tbt_s * 1000.0
    ))
    .x_label("offered load (× trace arrival rate)")
    .y_label("goodput (effective requests / s)")
    .markers(true);
    for &a in &cfg.admissions {
        for &p in &cfg.policies {
            let pts = cfg
                .speedups
                .iter()
                .filter_map(|&sp| {
                    result
                        .row_with(p.as_str(), sp, a)
                        .map(|r| (sp, r.goodput_rps))
                })
                .collect();
            let name = if a == AdmissionMode::None {
                p.to_string()
            } else {
                format!("{p} + {a}")
            };
            goodput = goodput.series(name, pts);
        }
    }
    save("goodput_vs_load.svg", goodput.to_svg())?;

    for (name, title, pick) in [
        ("ttft_cdf.svg", "TTFT", 0usize),
        ("tbt_cdf.svg", "TBT (mean of longest 10% intervals)", 1),
    ] {
        let mut chart = LineChart::new(format!("{title} CDF at {}× load", cfg.cdf_speedup))
            .x_label("seconds")
            .y_label("fraction ≤ x")
            .x_scale(Scale::Log10)
            .y_range(0.0, 1.0);
        for c in &result.cdfs {
            let pts = if pick == 0 { &c.ttft } else { &c.tbt };
            chart = chart.series(c.policy.clone(), pts.clone());
        }
        save(name, chart.to_svg())?;
    }

    let mut load = LineChart::new(format!(
        "Decode load over time: {} at {}× load, {}P+{}D",
        cfg.admission_policy, cfg.admission_speedup, cfg.admission_prefill, cfg.admission_decode
    ))
    .x_label("time (s)")
    .y_label("decode memory committed (incl. waiting)");
    for (mode, pts) in &result.admission_load {
        load = load.series(format!("admission {mode}"), pts.clone());
    }
    save("load_over_time.svg", load.to_svg())?;

    // The other half of the report's picture: early rejection empties the
    // prefill queues when decode is full and refills them when it frees.
    let mut queue = LineChart::new(format!(
        "Prefill queue over time: {} at {}× load, {}P+{}D",
        cfg.admission_policy, cfg.admission_speedup, cfg.admission_prefill, cfg.admission_decode
    ))
    .x_label("time (s)")
    .y_label("mean prefill queue (s)");
    for (mode, pts) in &result.admission_prefill_queue {
        queue = queue.series(format!("admission {mode}"), pts.clone());
    }
    save("prefill_queue_over_time.svg", queue.to_svg())?;
    Ok(out)
}
