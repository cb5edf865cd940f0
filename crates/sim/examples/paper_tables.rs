//! The README's comparison tables from the conversation trace (or any
//! trace), one table per argument.
//!
//! `cargo run --release -p mooncake-sim --example paper_tables -- \
//!     TABLE [TRACE]` with `TABLE` one of `fig5` (average TTFT, 16P),
//! `fig10` (global vs local cache, 10P, output 1), `goodput` (every policy
//! × load, placement only and with the `slo` rule, 12P+4D), `util`
//! (per-instance prefill utilisation of `cache-aware` at 12 and 16P),
//! `synth` (generalisation: every policy on each synthetic preset at
//! several loads, placement only and with `slo`; `TRACE` is then the
//! number of requests per preset).

use mooncake_conductor::policy::admission::{Admission, AdmissionMode};
use mooncake_conductor::policy::PolicyName;
use mooncake_sim::sim::{simulate, NoObserver, SimConfig, SimSummary};
use mooncake_sim::trace::synth::{Preset, SynthConfig};
use mooncake_sim::trace::{published_trace, read_trace, TraceRecord};
use std::path::PathBuf;

fn run(trace: &[TraceRecord], p: PolicyName, cfg: &SimConfig) -> SimSummary {
    let recs = trace.iter().cloned().map(Ok::<_, std::convert::Infallible>);
    simulate(cfg.clone(), p.build(cfg.seed), recs, &mut NoObserver)
        .expect("simulation runs")
        .summary
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let table = args.first().map(String::as_str).unwrap_or("goodput");
    if table == "synth" {
        let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
        let speedups: Vec<f64> = args
            .get(2)
            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| vec![1.0, 2.0, 3.0]);
        synth(n, &speedups);
        return Ok(());
    }
    let path = match args.get(1) {
        Some(p) => PathBuf::from(p),
        None => published_trace("conversation_trace.jsonl")?,
    };
    let trace = read_trace(&path)?;
    let base = SimConfig::default();
    match table {
        "fig5" => {
            let cfg = SimConfig {
                prefill: 16,
                decode: 4,
                ..base
            };
            for p in [
                PolicyName::Random,
                PolicyName::LoadOnly,
                PolicyName::LocalCacheAware,
                PolicyName::CacheAware,
                PolicyName::MooncakeLocal,
                PolicyName::Mooncake,
            ] {
                let s = run(&trace, p, &cfg);
                println!(
                    "{:<18} ttft_mean {:.3} s  hit {:.1}%",
                    p,
                    s.ttft_mean_s,
                    s.cache_hit_ratio * 100.0
                );
            }
        }
        "fig10" => {
            let cfg = SimConfig {
                prefill: 10,
                decode: 1,
                output_tokens_override: Some(1),
                ..base
            };
            for p in [
                PolicyName::LoadOnly,
                PolicyName::LocalCacheAware,
                PolicyName::CacheAware,
                PolicyName::MooncakeLocal,
                PolicyName::Mooncake,
            ] {
                let s = run(&trace, p, &cfg);
                println!(
                    "{:<15} hit {:.1}%  prefill GPU s/request {:.3}  ttft_mean {:.3}  fetched {}",
                    p,
                    s.cache_hit_ratio * 100.0,
                    s.prefill_gpu_s_per_request,
                    s.ttft_mean_s,
                    s.fetched_blocks
                );
            }
        }
        "util" => {
            for n in [12, 16] {
                let cfg = SimConfig {
                    prefill: n,
                    ..base.clone()
                };
                for p in [PolicyName::LocalCacheAware, PolicyName::CacheAware] {
                    let s = run(&trace, p, &cfg);
                    let u: Vec<String> = s
                        .prefill_utilization
                        .iter()
                        .map(|x| format!("{:.0}", x * 100.0))
                        .collect();
                    println!("{p} {n}P: effective {} util% {}", s.effective, u.join(" "));
                }
            }
        }
        _ => {
            let speedups: Vec<f64> = args
                .get(2)
                .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
                .unwrap_or_else(|| vec![0.5, 1.0, 1.5, 2.0, 3.0]);
            for mode in [AdmissionMode::None, AdmissionMode::Slo] {
                println!("admission {mode}: effective requests (goodput req/s)");
                for &sp in &speedups {
                    let cfg = SimConfig {
                        speedup: sp,
                        admission: Admission {
                            mode,
                            threshold: 1.0,
                        },
                        ..base.clone()
                    };
                    let mut line = format!("{sp:>4}");
                    for p in PolicyName::ALL {
                        let s = run(&trace, p, &cfg);
                        line += &format!(" | {p} {} ({:.3})", s.effective, s.goodput_rps);
                    }
                    println!("{line}");
                }
            }
        }
    }
    Ok(())
}

/// Generalisation: Mooncake against the best other policy on each preset.
fn synth(n: usize, speedups: &[f64]) {
    for preset in Preset::ALL {
        let trace: Vec<TraceRecord> = SynthConfig {
            requests: n,
            ..preset.config()
        }
        .generate()
        .expect("preset is valid")
        .collect();
        for mode in [AdmissionMode::None, AdmissionMode::Slo] {
            for &sp in speedups {
                let cfg = SimConfig {
                    speedup: sp,
                    admission: Admission {
                        mode,
                        threshold: 1.0,
                    },
                    ..SimConfig::default()
                };
                let all: Vec<SimSummary> = PolicyName::ALL
                    .iter()
                    .map(|&p| run(&trace, p, &cfg))
                    .collect();
                let mc = all.iter().find(|s| s.policy == "mooncake").expect("ran");
                let best = all
                    .iter()
                    .filter(|s| s.policy != "mooncake")
                    .max_by_key(|s| s.effective)
                    .expect("ran");
                let peers: Vec<String> = all
                    .iter()
                    .map(|s| format!("{}={}", s.policy, s.effective))
                    .collect();
                println!(
                    "{:<10} {:<4} {:>4} mooncake {} best other {} {} ({:+.2}%) ttft mooncake {:.2} best {:.2} | {}",
                    preset.as_str(),
                    mode,
                    sp,
                    mc.effective,
                    best.policy,
                    best.effective,
                    (mc.effective as f64 / best.effective.max(1) as f64 - 1.0) * 100.0,
                    mc.ttft_mean_s,
                    best.ttft_mean_s,
                    peers.join(" ")
                );
            }
        }
    }
}
