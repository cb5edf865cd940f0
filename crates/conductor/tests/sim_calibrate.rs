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
            admission: mooncake_conductor::policy::admission::Admission { mode: std::env::var("ADM").unwrap_or("none".into()).parse().unwrap(), threshold: 1.0 },
            ..SimConfig::default() };
        let only = std::env::var("POL").ok();
        for pol in PolicyName::ALL {
            if only.as_ref().is_some_and(|o| !o.split(',').any(|x| x == pol.as_str())) { continue; }
            let s = if std::env::var("NOCHECK").is_ok() {
                let recs = common::trace().iter().cloned().map(Ok::<_, std::convert::Infallible>);
                mooncake_conductor::sim::simulate(cfg.clone(), mooncake_conductor::sim::sweep::admission_policy(pol, 1), recs, &mut mooncake_conductor::sim::NoObserver).unwrap().summary
            } else { common::run(pol, &cfg) };
            println!("sp={sp} {:15} done={} rej={} eff={} good={:.3} ttft={:.2}/{:.2}/{:.2} tbt50={:.3} tbt99={:.3} hit={:.3} fetch={} pgpu={:.3} dl={:.2} dstd={:.3} pstd={:.2} rejby={:?} wall={:.3}",
                s.policy, s.completed, s.rejected, s.effective, s.goodput_rps, s.ttft_mean_s, s.ttft_p50_s, s.ttft_p99_s, s.tbt_p50_s, s.tbt_p99_s, s.cache_hit_ratio, s.fetched_blocks, s.prefill_gpu_s_per_request,
                s.decode_load.iter().sum::<f64>()/s.decode_load.len() as f64, s.decode_load_std, s.prefill_queue_std_s, s.rejected_by, s.sim_wall_s);
        }
    }
}
