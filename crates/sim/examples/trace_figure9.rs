//! Prints the paper's Figure 9 (prefix-cache hit ratio vs capacity, request
//! order) for a trace and writes the SVG plot.
//!
//! `cargo run --release -p mooncake-sim --example trace_figure9 [TRACE] [OUT.svg]`
//! (default: the published conversation trace, `figure9.svg`).

use mooncake_conductor::cache::PolicyKind;
use mooncake_sim::trace::hitrate::{figure9, FIGURE9_CAPACITIES_TOKENS};
use mooncake_sim::trace::{published_trace, TraceReader};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let trace = match args.next() {
        Some(p) => PathBuf::from(p),
        None => published_trace("conversation_trace.jsonl")?,
    };
    let out = PathBuf::from(args.next().unwrap_or_else(|| "figure9.svg".into()));
    let started = Instant::now();
    let report = figure9(TraceReader::open(&trace)?)?;
    let elapsed = started.elapsed();
    println!(
        "{}: {} requests, unbounded hit ratio {:.1}%",
        trace.display(),
        report.requests,
        report.ideal_hit_ratio * 100.0
    );
    println!("capacity   LRUCache         LFUCache         LengthAwareCache");
    for cap in FIGURE9_CAPACITIES_TOKENS {
        let mut line = format!("{:>6}M ", cap / 1_000_000);
        for policy in PolicyKind::ALL {
            if let Some(p) = report.at(policy, cap) {
                line += &format!(
                    "  {:>5.1}% ({:>3.0}%)",
                    p.hit_ratio * 100.0,
                    p.fraction_of_ideal * 100.0
                );
            }
        }
        println!("{line}");
    }
    report
        .chart("Figure 9: hit ratio vs cache capacity (request order)")
        .save(&out)?;
    println!("wrote {} ({:.2} s)", out.display(), elapsed.as_secs_f64());
    Ok(())
}
