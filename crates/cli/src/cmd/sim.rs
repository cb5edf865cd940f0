//! `mooncake sim ...`: the Conductor simulator over a request trace.
//!
//! `mooncake sim --trace FILE --policy NAME [--prefill N --decode M
//! --slo-ttft S --slo-tbt S --speedup X --config FILE --admission MODE]
//! [--json]` runs one policy; `mooncake sim sweep [--trace FILE] [--out DIR]`
//! runs every policy at several load levels and the admission comparison,
//! writing `sweep.json` and SVG plots. The simulation core is
//! `mooncake_sim::sim`; this module only parses flags, streams the
//! trace, shows progress and prints.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use mooncake_conductor::cache::PolicyKind;
use mooncake_conductor::cost::CostConfig;
use mooncake_conductor::policy::admission::{Admission, AdmissionMode};
use mooncake_conductor::policy::{PolicyName, Slo};
use mooncake_sim::sim::sweep::{run_sweep, sweep_runs, write_sweep, SweepConfig, TraceIter};
use mooncake_sim::sim::{simulate, ChunkedPrefill, Observer, SimConfig, SimError, SimSummary};
use mooncake_sim::trace::{published_trace, TraceReader};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// Flags of `mooncake sim`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<SimCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand, Debug)]
enum SimCommand {
    /// Every policy at several load levels, placement only and with the same
    /// admission rule, plus the rejection experiment (baseline / early /
    /// predictive).
    Sweep(SweepArgs),
}

/// Cluster and workload flags shared by a run and a sweep.
#[derive(clap::Args, Debug, Clone)]
struct ClusterArgs {
    /// Trace file (JSONL); defaults to the published conversation trace.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Prefill instances.
    #[arg(long, default_value_t = 12)]
    prefill: usize,
    /// Decode instances.
    #[arg(long, default_value_t = 4)]
    decode: usize,
    /// TTFT SLO in seconds.
    #[arg(long, default_value_t = 30.0)]
    slo_ttft: f64,
    /// TBT SLO in seconds (mean of a request's longest 10% intervals).
    #[arg(long, default_value_t = 0.1)]
    slo_tbt: f64,
    /// Model and hardware config (TOML, or JSON by extension).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Admission control, the same rule for every policy: none (placement
    /// only), baseline, slo, early or predictive.
    #[arg(long, default_value = "none")]
    admission: AdmissionMode,
    /// Reject when the decode memory share would exceed this.
    #[arg(long, default_value_t = 1.0)]
    admission_threshold: f64,
    /// KV cache per prefill instance in tokens.
    #[arg(long, default_value_t = 3_000_000)]
    cache_tokens: u64,
    /// Eviction policy of the prefill caches: lru, lfu, length-aware.
    #[arg(long, default_value = "lru")]
    cache_policy: PolicyKind,
    /// Run prompts with more than this many uncached tokens as a chunked
    /// pipeline over groups of `--cpp-group` instances.
    #[arg(long, value_name = "TOKENS")]
    chunked_prefill: Option<u64>,
    /// Instances per chunked-prefill pipeline group.
    #[arg(long, default_value_t = 2)]
    cpp_group: usize,
    /// Replace every request's output length (Figure 10 uses 1).
    #[arg(long)]
    output_tokens: Option<u32>,
    /// Reject prefilled requests that wait longer than this for decode
    /// memory (seconds); by default they wait.
    #[arg(long, value_name = "S")]
    decode_wait_limit: Option<f64>,
    /// Seed of randomised policies.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Flags of a single run.
#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Scheduling policy.
    #[arg(long, default_value = "mooncake")]
    policy: PolicyName,
    /// Divide arrival times by this (2 = twice the load).
    #[arg(long, default_value_t = 1.0)]
    speedup: f64,
    /// Print one JSON object instead of a table (no progress bar).
    #[arg(long)]
    json: bool,
}

/// Flags of `mooncake sim sweep`.
#[derive(clap::Args, Debug)]
struct SweepArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Output directory for sweep.json and the SVG plots.
    #[arg(long, default_value = "sim-sweep")]
    out: PathBuf,
    /// Load levels (comma-separated speedups).
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,1.5,2,3")]
    speedups: Vec<f64>,
    /// Policies (comma-separated); default all.
    #[arg(long, value_delimiter = ',')]
    policies: Vec<PolicyName>,
    /// Admission rules every policy runs under (comma-separated; none =
    /// placement only).
    #[arg(long, value_delimiter = ',', default_value = "none,slo")]
    admissions: Vec<AdmissionMode>,
    /// Rejection experiment (baseline / early / predictive): prefill instances.
    #[arg(long, default_value_t = 8)]
    admission_prefill: usize,
    /// Rejection experiment: decode instances (2: decode-bound; the
    /// paper's 8 is not decode-bound under the calibrated model).
    #[arg(long, default_value_t = 2)]
    admission_decode: usize,
    /// Rejection experiment: load level.
    #[arg(long, default_value_t = 2.0)]
    admission_speedup: f64,
    /// Rejection experiment: decode wait limit in seconds (0 = the wait
    /// that alone breaks the request's TBT SLO).
    #[arg(long, default_value_t = 0.0)]
    admission_wait_limit: f64,
}

impl ClusterArgs {
    fn trace_path(&self) -> anyhow::Result<PathBuf> {
        match &self.trace {
            Some(p) => Ok(p.clone()),
            None => published_trace("conversation_trace.jsonl")
                .context("no --trace given and the published trace is not found"),
        }
    }

    fn sim_config(&self, speedup: f64) -> anyhow::Result<SimConfig> {
        let cost = match &self.config {
            Some(p) => CostConfig::from_file(p)?,
            None => CostConfig::default(),
        };
        Ok(SimConfig {
            prefill: self.prefill,
            decode: self.decode,
            slo: Slo {
                ttft_s: self.slo_ttft,
                tbt_s: self.slo_tbt,
            },
            speedup,
            cache_capacity_tokens: self.cache_tokens,
            cache_policy: self.cache_policy,
            chunked_prefill: self.chunked_prefill.map(|t| ChunkedPrefill {
                threshold_tokens: t,
                group_size: self.cpp_group,
                ..ChunkedPrefill::default()
            }),
            admission: Admission {
                mode: self.admission,
                threshold: self.admission_threshold,
            },
            output_tokens_override: self.output_tokens,
            decode_wait_limit_s: self.decode_wait_limit,
            seed: self.seed,
            cost,
            ..SimConfig::default()
        })
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Some(SimCommand::Sweep(s)) => sweep(s),
        None => run_one(args.run),
    }
}

/// Streams `path` as simulator input.
fn open_trace(path: &Path) -> Result<TraceIter, SimError> {
    let r = TraceReader::open(path).map_err(|e| SimError::Trace(e.to_string()))?;
    Ok(Box::new(r.map(|x| x.map_err(|e| e.to_string()))))
}

/// Lines in the file, for the progress bar's length.
fn count_lines(path: &Path) -> u64 {
    std::fs::File::open(path)
        .map(|f| BufReader::new(f).lines().count() as u64)
        .unwrap_or(0)
}

struct Progress(ProgressBar);
impl Observer for Progress {
    fn on_progress(&mut self, read: u64) {
        self.0.set_position(read);
    }
}

fn bar(len: u64, hidden: bool, template: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

fn run_one(args: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.speedup.is_finite() && args.speedup > 0.0,
        "--speedup must be positive"
    );
    let path = args.cluster.trace_path()?;
    let cfg = args.cluster.sim_config(args.speedup)?;
    let pb = bar(
        count_lines(&path),
        args.json,
        "{spinner} simulating [{bar:30}] {pos}/{len} requests",
    );
    let mut obs = Progress(pb.clone());
    let report = simulate(
        cfg.clone(),
        args.policy.build(cfg.seed),
        open_trace(&path)?,
        &mut obs,
    )
    .with_context(|| format!("simulating {}", path.display()))?;
    pb.finish_and_clear();
    let s = &report.summary;
    if args.json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        print_summary(&path, s);
    }
    Ok(())
}

fn print_summary(path: &Path, s: &SimSummary) {
    let l = |k: &str, v: String| println!("{k:<22}{v}");
    println!("trace {}", path.display());
    l(
        "policy",
        format!(
            "{} (admission {}), {}P+{}D, speedup {}",
            s.policy, s.admission, s.prefill, s.decode, s.speedup
        ),
    );
    l(
        "SLOs",
        format!(
            "TTFT ≤ {} s, TBT ≤ {} ms",
            s.slo_ttft_s,
            s.slo_tbt_s * 1000.0
        ),
    );
    l("requests", s.requests.to_string());
    l("completed", s.completed.to_string());
    l("rejected", format!("{} {:?}", s.rejected, s.rejected_by));
    l(
        "effective",
        format!("{} ({:.2}%)", s.effective, s.effective_ratio * 100.0),
    );
    l("goodput", format!("{:.3} req/s", s.goodput_rps));
    l(
        "TTFT",
        format!(
            "mean {:.3} s  p50 {:.3}  p90 {:.3}  p99 {:.3}",
            s.ttft_mean_s, s.ttft_p50_s, s.ttft_p90_s, s.ttft_p99_s
        ),
    );
    l(
        "TBT",
        format!(
            "mean {:.1} ms  p50 {:.1}  p90 {:.1}  p99 {:.1}",
            s.tbt_mean_s * 1e3,
            s.tbt_p50_s * 1e3,
            s.tbt_p90_s * 1e3,
            s.tbt_p99_s * 1e3
        ),
    );
    l(
        "cache hit ratio",
        format!("{:.2}%", s.cache_hit_ratio * 100.0),
    );
    l("fetched blocks", s.fetched_blocks.to_string());
    l(
        "prefill GPU time",
        format!("{:.3} s per request", s.prefill_gpu_s_per_request),
    );
    let pct = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.0}%", x * 100.0))
            .collect::<Vec<_>>()
            .join(" ")
    };
    l("prefill utilization", pct(&s.prefill_utilization));
    l("decode memory load", pct(&s.decode_load));
    l("sim wall time", format!("{:.3} s", s.sim_wall_s));
}

fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    let path = args.cluster.trace_path()?;
    let mut cfg = SweepConfig {
        base: args.cluster.sim_config(1.0)?,
        ..SweepConfig::default()
    };
    if !args.speedups.is_empty() {
        anyhow::ensure!(
            args.speedups.iter().all(|s| s.is_finite() && *s > 0.0),
            "--speedups must be positive"
        );
        cfg.speedups = args.speedups.clone();
        if !cfg.speedups.contains(&cfg.cdf_speedup) {
            cfg.cdf_speedup = cfg.speedups[cfg.speedups.len() / 2];
        }
    }
    if !args.policies.is_empty() {
        cfg.policies = args.policies.clone();
    }
    if !args.admissions.is_empty() {
        cfg.admissions = args.admissions.clone();
    }
    anyhow::ensure!(
        args.admission_speedup.is_finite() && args.admission_speedup > 0.0,
        "--admission-speedup must be positive"
    );
    cfg.admission_prefill = args.admission_prefill;
    cfg.admission_decode = args.admission_decode;
    cfg.admission_speedup = args.admission_speedup;
    cfg.admission_wait_limit_s =
        (args.admission_wait_limit > 0.0).then_some(args.admission_wait_limit);
    let total = sweep_runs(&cfg) as u64;
    let pb = bar(total, false, "{spinner} sweep [{bar:30}] {pos}/{len} runs");
    let result = run_sweep(&cfg, &mut || open_trace(&path), &mut |done, _| {
        pb.set_position(done as u64)
    })
    .with_context(|| format!("sweeping {}", path.display()))?;
    pb.finish_and_clear();
    let files = write_sweep(&result, &cfg, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{:<8} {:<26} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}",
        "speedup", "policy", "rejected", "effective", "goodput", "ttft_mean", "tbt_p99", "hit"
    );
    for r in result.rows.iter().chain(&result.admission) {
        let name = if r.admission == "none" {
            r.policy.clone()
        } else {
            format!("{}+{}", r.policy, r.admission)
        };
        println!(
            "{:<8} {:<26} {:>9} {:>9} {:>9.3} {:>10.3} {:>10.3} {:>8.1}%",
            r.speedup,
            name,
            r.rejected,
            r.effective,
            r.goodput_rps,
            r.ttft_mean_s,
            r.tbt_p99_s,
            r.cache_hit_ratio * 100.0
        );
    }
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
