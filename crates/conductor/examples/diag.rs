use mooncake_conductor::policy::admission::AdmissionMode;
use mooncake_conductor::policy::PolicyName;
use mooncake_conductor::sim::{simulate, NoObserver, SimConfig};
use mooncake_conductor::trace::synth::{Preset, SynthConfig};
fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let preset: Preset = a[0].parse().unwrap();
    let sp: f64 = a[1].parse().unwrap();
    let mode: AdmissionMode = a[2].parse().unwrap();
    let trace: Vec<_> = SynthConfig {
        requests: 4000,
        ..preset.config()
    }
    .generate()
    .unwrap()
    .collect();
    for p in a[3..].iter() {
        let p: PolicyName = p.parse().unwrap();
        let mut cfg = SimConfig {
            speedup: sp,
            ..SimConfig::default()
        };
        cfg.admission.mode = mode;
        let s = simulate(
            cfg,
            p.build(42),
            trace.iter().cloned().map(Ok::<_, std::convert::Infallible>),
            &mut NoObserver,
        )
        .unwrap()
        .summary;
        println!("{p}: rej {:?} eff {} ttft mean {:.2} p90 {:.2} tbt p50 {:.3} p90 {:.3} p99 {:.3} hit {:.2} fetched {} util {:?} dec {:?}", s.rejected_by, s.effective, s.ttft_mean_s, s.ttft_p90_s, s.tbt_p50_s, s.tbt_p90_s, s.tbt_p99_s, s.cache_hit_ratio, s.fetched_blocks, s.prefill_utilization.iter().map(|x| (x*100.0) as u32).collect::<Vec<_>>(), s.decode_load.iter().map(|x| (x*100.0) as u32).collect::<Vec<_>>());
    }
}
