//! Prints policy tables for calibration (ignored; run with --ignored --nocapture).
mod common;
use mooncake_conductor::policy::PolicyName;
use mooncake_conductor::sim::SimConfig;

#[test]
#[ignore]
fn calibrate() {
    let p: usize = std::env::var("P").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let d: usize = std::env::var("D").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let tbt: f64 = std::env::var("TBT").ok().and_then(|v| v.parse().ok()).unwrap_or(0.1);
    for sp in std::env::var("SP").unwrap_or("1".into()).split(',') {
        let cfg = SimConfig { prefill: p, decode: d, speedup: sp.parse().unwrap(),
            slo: mooncake_conductor::policy::Slo { ttft_s: 30.0, tbt_s: tbt },
            chunked_prefill: std::env::var("CPP").ok().map(|g| mooncake_conductor::sim::ChunkedPrefill { group_size: g.parse().unwrap(), ..Default::default() }),
            ..SimConfig::default() };
        for pol in PolicyName::ALL {
            let s = common::run(pol, &cfg);
            println!("sp={sp} {:15} done={} rej={} eff={} good={:.3} ttft={:.2}/{:.2}/{:.2} tbt50={:.3} tbt99={:.3} hit={:.3} fetch={} pgpu={:.3} dl={:.2} wall={:.3}",
                s.policy, s.completed, s.rejected, s.effective, s.goodput_rps, s.ttft_mean_s, s.ttft_p50_s, s.ttft_p99_s, s.tbt_p50_s, s.tbt_p99_s, s.cache_hit_ratio, s.fetched_blocks, s.prefill_gpu_s_per_request,
                s.decode_load.iter().sum::<f64>()/s.decode_load.len() as f64, s.sim_wall_s);
        }
    }
}
