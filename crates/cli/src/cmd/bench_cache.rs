//! `mooncake bench cache`: speed of the conductor's KV block cache on a trace.
//!
//! Replays the trace's `hash_ids` in request order through one cache per
//! (policy, capacity) and reports the time of a full-trace pass, block
//! operations per second, and the ratio to a floor measured in the same run:
//! the same replay against a bare `HashSet` (lookups of the leading run plus
//! inserts, no eviction bookkeeping), which no hash-based cache can beat.

use anyhow::Context;
use mooncake_conductor::cache::{new_cache, PolicyKind};
use mooncake_sim::trace::hitrate::{parse_token_counts, tokens_to_blocks};
use mooncake_sim::trace::{published_trace, TraceReader};
use std::collections::HashSet;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `mooncake bench cache`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace file (default: the published conversation trace).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Cache capacities in tokens (k/M/G suffixes).
    #[arg(long, default_value = "3M,50M")]
    capacities: String,
    /// Policies (comma-separated: lru, lfu, length-aware).
    #[arg(long, value_delimiter = ',', default_value = "lru,lfu,length-aware")]
    policies: Vec<PolicyKind>,
    /// Passes per measurement; the fastest is reported.
    #[arg(long, default_value_t = 5)]
    repeat: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Fastest of `repeat` runs of `f`, in seconds, and its last result.
fn fastest<T>(repeat: u32, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let r = black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("at least one run"))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let path = match &args.trace {
        Some(p) => p.clone(),
        None => published_trace("conversation_trace.jsonl")?,
    };
    let capacities =
        parse_token_counts(&args.capacities).map_err(|e| anyhow::anyhow!("--capacities: {e}"))?;
    let requests: Vec<Vec<u64>> = TraceReader::open(&path)?
        .map(|r| r.map(|r| r.hash_ids))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", path.display()))?;
    let blocks: u64 = requests.iter().map(|r| r.len() as u64).sum();

    let (floor_s, floor_hits) = fastest(args.repeat, || {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut hits = 0u64;
        for ids in &requests {
            let hit = ids.iter().take_while(|h| seen.contains(h)).count();
            hits += hit as u64;
            seen.extend(ids.iter().skip(hit));
        }
        hits
    });
    let mut rows = Vec::new();
    for &policy in &args.policies {
        for &cap in &capacities {
            let (secs, hits) = fastest(args.repeat, || {
                let mut c = new_cache(policy, tokens_to_blocks(cap));
                requests.iter().map(|ids| c.access(ids) as u64).sum::<u64>()
            });
            rows.push(serde_json::json!({
                "policy": policy.name(),
                "capacity_tokens": cap,
                "pass_s": secs,
                "block_ops_per_s": blocks as f64 / secs,
                "hit_ratio": hits as f64 / blocks.max(1) as f64,
                "vs_hashset_floor": secs / floor_s,
            }));
        }
    }
    if args.json {
        let v = serde_json::json!({
            "trace": path.display().to_string(),
            "requests": requests.len(),
            "blocks": blocks,
            "hashset_floor_s": floor_s,
            "hashset_floor_hit_ratio": floor_hits as f64 / blocks.max(1) as f64,
            "caches": rows,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: {} requests, {} block lookups per pass",
        path.display(),
        requests.len(),
        blocks
    );
    println!(
        "floor (bare HashSet replay, unbounded): {:.1} ms",
        floor_s * 1e3
    );
    println!("policy        capacity   pass ms   Mops/s   × floor   hit ratio");
    for r in &rows {
        println!(
            "{:<13} {:>8}M {:>9.1} {:>8.2} {:>9.2} {:>10.4}",
            r["policy"].as_str().unwrap_or(""),
            r["capacity_tokens"].as_u64().unwrap_or(0) / 1_000_000,
            r["pass_s"].as_f64().unwrap_or(0.0) * 1e3,
            r["block_ops_per_s"].as_f64().unwrap_or(0.0) / 1e6,
            r["vs_hashset_floor"].as_f64().unwrap_or(0.0),
            r["hit_ratio"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}
