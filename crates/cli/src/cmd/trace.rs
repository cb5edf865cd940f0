//! `mooncake trace ...`: inspect published Mooncake traces.
//!
//! `mooncake trace stats FILE [--json] [--plots DIR] [--capacities 3M,10M,50M]`
//! streams the trace once and prints request count, duration, arrival rate,
//! input / output length distributions, and the prefix-cache hit ratio with an
//! unbounded cache and with bounded caches (LRU, LFU, LengthAware) at each
//! capacity; `--plots` writes SVG charts.
//!
//! `mooncake trace synth --preset NAME [--requests N --rate R --burstiness
//! CV ...] [--out FILE]` writes a synthetic trace in the same format
//! (`mooncake_sim::trace::synth`).

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use mooncake_conductor::cache::PolicyKind;
use mooncake_sim::trace::hitrate::parse_token_counts;
use mooncake_sim::trace::plots::write_plots;
use mooncake_sim::trace::stats::{StatsBuilder, StatsConfig, TraceStats};
use mooncake_sim::trace::synth::Preset;
use mooncake_sim::trace::{TraceReader, TRACE_BLOCK_TOKENS};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `mooncake trace`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: TraceCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TraceCommand {
    /// Statistics of a trace: arrivals, lengths, prefix-cache hit ratios.
    Stats(StatsArgs),
    /// Generate a synthetic trace with chosen prefix sharing, lengths and
    /// burstiness.
    Synth(SynthArgs),
}

/// Flags of `mooncake trace synth` (unset ones keep the preset's values).
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Starting point: chat, agent, documents, bursty or hot-prompt.
    #[arg(long, default_value = "chat")]
    preset: Preset,
    /// Output file (JSONL); standard output if not given.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Requests to generate.
    #[arg(long)]
    requests: Option<usize>,
    /// Mean arrival rate (requests per second).
    #[arg(long)]
    rate: Option<f64>,
    /// Coefficient of variation of inter-arrival gaps (1 = Poisson).
    #[arg(long)]
    burstiness: Option<f64>,
    /// Distinct shared system prompts (0 = none).
    #[arg(long)]
    system_prompts: Option<usize>,
    /// Tokens per system prompt.
    #[arg(long)]
    system_prompt_tokens: Option<u32>,
    /// Probability that a request continues an earlier conversation.
    #[arg(long)]
    continue_share: Option<f64>,
    /// Mean fresh prompt tokens per request (log-normal).
    #[arg(long)]
    new_tokens: Option<f64>,
    /// Mean output tokens (log-normal).
    #[arg(long)]
    output_tokens: Option<f64>,
    /// Longest prompt in tokens.
    #[arg(long)]
    max_input_tokens: Option<u32>,
    /// Random seed.
    #[arg(long)]
    seed: Option<u64>,
}

/// Flags of `mooncake trace stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Trace file (JSONL: timestamp, input_length, output_length, hash_ids).
    file: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Write SVG plots into this directory (created if needed).
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// Cache capacities in tokens for the bounded hit ratios (k/M/G suffixes).
    #[arg(long, default_value = "3M,10M,50M")]
    capacities: String,
    /// Eviction policies to replay (comma-separated: lru, lfu, length-aware).
    #[arg(long, value_delimiter = ',', default_value = "lru,lfu,length-aware")]
    policies: Vec<PolicyKind>,
    /// Width of the arrivals-over-time buckets, in seconds.
    #[arg(long, default_value_t = 60.0)]
    bucket_secs: f64,
    /// Skip malformed lines (reporting how many) instead of failing.
    #[arg(long)]
    skip_bad_lines: bool,
}

/// Counts bytes read so the progress bar can follow the file.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        TraceCommand::Stats(a) => stats(a),
        TraceCommand::Synth(a) => synth(a),
    }
}

fn synth(a: SynthArgs) -> anyhow::Result<()> {
    let mut cfg = a.preset.config();
    macro_rules! set {
        ($($flag:ident => $field:ident),*) => {
            $(if let Some(v) = a.$flag { cfg.$field = v; })*
        };
    }
    set!(requests => requests, rate => rate_rps, burstiness => burstiness,
        system_prompts => system_prompts, system_prompt_tokens => system_prompt_tokens,
        continue_share => continue_share, new_tokens => new_tokens_mean,
        output_tokens => output_tokens_mean, max_input_tokens => max_input_tokens,
        seed => seed);
    let records = cfg.generate()?;
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    for r in records {
        serde_json::to_writer(&mut out, &r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn stats(args: StatsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.bucket_secs.is_finite() && args.bucket_secs > 0.0,
        "--bucket-secs must be positive"
    );
    let capacities =
        parse_token_counts(&args.capacities).map_err(|e| anyhow::anyhow!("--capacities: {e}"))?;
    let cfg = StatsConfig {
        capacities_tokens: capacities,
        policies: args.policies.clone(),
        arrival_bucket_ms: (args.bucket_secs * 1000.0).round().max(1.0) as u64,
    };
    let file = File::open(&args.file)
        .with_context(|| format!("cannot open trace {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("reading trace");
    let reader = BufReader::with_capacity(
        1 << 16,
        Counting {
            inner: file,
            bar: bar.clone(),
        },
    );
    let started = Instant::now();
    let mut builder = StatsBuilder::new(&cfg);
    let mut skipped = 0u64;
    for rec in TraceReader::new(reader) {
        match rec {
            Ok(r) => builder.push(&r),
            Err(e) if args.skip_bad_lines && e.line().is_some() => {
                skipped += 1;
                tracing::warn!("{}: {e}", args.file.display());
            }
            Err(e) => {
                bar.finish_and_clear();
                return Err(e).with_context(|| format!("in trace {}", args.file.display()));
            }
        }
    }
    let stats = builder.finish();
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();

    if let Some(dir) = &args.plots {
        let files = write_plots(&stats, dir)
            .with_context(|| format!("cannot write plots to {}", dir.display()))?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    if args.json {
        let mut v = serde_json::to_value(&stats)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("file".into(), args.file.display().to_string().into());
            o.insert("skipped_lines".into(), skipped.into());
            o.insert("wall_s".into(), elapsed.into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_table(&args, &stats, skipped, elapsed);
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn print_table(args: &StatsArgs, s: &TraceStats, skipped: u64, elapsed: f64) {
    let l = |name: &str, v: String| println!("{name:<22}{v}");
    println!("trace {}", args.file.display());
    l("requests", s.requests.to_string());
    if skipped > 0 {
        l("skipped bad lines", skipped.to_string());
    }
    l(
        "duration",
        format!("{:.1} s ({:.1} min)", s.duration_s, s.duration_s / 60.0),
    );
    l("arrival rate", format!("{:.3} req/s", s.arrival_rate_rps));
    if s.out_of_order > 0 {
        l("out-of-order arrivals", s.out_of_order.to_string());
    }
    for (name, d) in [
        ("input length", &s.input_length),
        ("output length", &s.output_length),
    ] {
        l(
            name,
            format!(
                "mean {:.1}  p50 {}  p90 {}  p99 {}  min {}  max {}",
                d.mean, d.p50, d.p90, d.p99, d.min, d.max
            ),
        );
    }
    let h = &s.hit;
    l(
        "blocks per request",
        format!("{:.2} ({TRACE_BLOCK_TOKENS} tokens each)", s.mean_blocks),
    );
    l(
        "distinct blocks",
        format!(
            "{} ({:.1}M tokens)",
            h.unique_blocks,
            h.unique_blocks as f64 * TRACE_BLOCK_TOKENS as f64 / 1e6
        ),
    );
    println!("prefix-cache hit ratio, request order (blocks; tokens in parentheses):");
    println!(
        "  {:<30}{} ({})",
        "unbounded (maximum)",
        pct(h.ideal_hit_ratio),
        pct(h.ideal_token_hit_ratio)
    );
    let mut caps: Vec<u64> = h.points.iter().map(|p| p.capacity_tokens).collect();
    caps.sort_unstable();
    caps.dedup();
    for cap in caps {
        for policy in &args.policies {
            if let Some(p) = h.at(*policy, cap) {
                println!(
                    "  {:<30}{} ({})  {:.0}% of max",
                    format!(
                        "{} tokens {}",
                        mooncake_sim::plot::format_tick(cap as f64),
                        policy.paper_name()
                    ),
                    pct(p.hit_ratio),
                    pct(p.token_hit_ratio),
                    p.fraction_of_ideal * 100.0
                );
            }
        }
    }
    eprintln!("computed in {elapsed:.3} s");
}
