//! `mooncake bench router`: what the live router costs.
//!
//! 1. Overhead: latency of `POST /v1/completions` through the router in
//!    front of two in-process fake engines at `time_scale 0` (no modelled
//!    latency, so only HTTP, JSON and routing remain), against the same
//!    requests sent directly — one call to one engine (the floor of any
//!    proxy) and the two calls of the disaggregated flow done by the client
//!    itself (prefill with `max_tokens: 1`, then decode): the router adds one
//!    hop and its routing on top of the latter.
//! 2. Decisions per second: the policy routing on a [`LiveCluster`] alone
//!    (no sockets), requests cycling through shared prefixes, each finished
//!    once 256 are in flight.

use anyhow::Context;
use mooncake_conductor::policy::{PolicyName, RequestInfo};
use mooncake_router::cluster::LiveCluster;
use mooncake_router::config::RouterConfig;
use mooncake_router::fake_engine::{EngineRole, FakeEngine, FakeEngineConfig};
use mooncake_router::prompt::{block_hashes, estimate_tokens};
use mooncake_router::server::{decode_body, prefill_body, RouterService, Server};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Flags of `mooncake bench router`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Requests per measured path.
    #[arg(long, default_value_t = 2000)]
    pub(crate) requests: usize,
    /// Concurrent clients per measured path.
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: usize,
    /// Prompt length in characters.
    #[arg(long, default_value_t = 8192)]
    pub(crate) prompt_chars: usize,
    /// Output tokens per request.
    #[arg(long, default_value_t = 8)]
    pub(crate) max_tokens: u32,
    /// Policy for both measurements.
    #[arg(long, default_value = "mooncake")]
    pub(crate) policy: PolicyName,
    /// Routing decisions timed on the pure LiveCluster.
    #[arg(long, default_value_t = 200_000)]
    decisions: usize,
    /// Prefill instances of the pure LiveCluster.
    #[arg(long, default_value_t = 8)]
    prefill: usize,
    /// Decode instances of the pure LiveCluster.
    #[arg(long, default_value_t = 4)]
    decode: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
    /// KV events instead: ingestion rate, trace replay with real events vs
    /// believed caches, added latency with events on.
    #[arg(long)]
    pub(crate) events: bool,
    /// --events: trace file (default: the published conversation trace).
    #[arg(long)]
    pub(crate) trace: Option<std::path::PathBuf>,
    /// --events: trace records replayed.
    #[arg(long, default_value_t = 1000)]
    pub(crate) trace_requests: usize,
    /// --events: multiplier on trace arrival times and engine latencies.
    #[arg(long, default_value_t = 0.02)]
    pub(crate) time_scale: f64,
    /// --events: prefill engines.
    #[arg(long, default_value_t = 8)]
    pub(crate) engines: usize,
    /// --events: tokens each engine's prefix cache holds.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) engine_cache_tokens: u64,
    /// --events: batches (64 block events each) timed for ingestion.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) ingest_batches: usize,
}

/// Latency summary of one path, microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Lat {
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) mean_us: f64,
    pub(crate) rps: f64,
}

pub(crate) fn summarize(mut v: Vec<Duration>, wall: Duration) -> Lat {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pick = |q: f64| us(v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]);
    Lat {
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        mean_us: v.iter().map(|&d| us(d)).sum::<f64>() / v.len() as f64,
        rps: v.len() as f64 / wall.as_secs_f64(),
    }
}

/// Prompt `k`: one of 64 shared prefixes, then a unique tail.
fn prompt(k: usize, chars: usize) -> String {
    let prefix = format!("conversation {} ", k % 64).repeat(chars / 32 + 1);
    let mut p: String = prefix.chars().take(chars * 3 / 4).collect();
    p.push_str(&format!("question {k} ").repeat(chars / 48 + 1));
    p.chars().take(chars).collect()
}

#[derive(Clone, Copy)]
pub(crate) enum Path {
    Direct,
    DirectPd,
    Router,
}

async fn one(
    client: &reqwest::Client,
    path: Path,
    urls: &(String, String, String),
    body: &Value,
) -> anyhow::Result<()> {
    let (p, d, r) = urls;
    let post = |url: String, b: &Value| {
        let req = client.post(url).json(b);
        async move {
            let resp = req.send().await?.error_for_status()?;
            resp.json::<Value>().await
        }
    };
    match path {
        Path::Direct => {
            post(format!("{d}/v1/completions"), body).await?;
        }
        Path::DirectPd => {
            let ans = post(format!("{p}/v1/completions"), &prefill_body(body)).await?;
            post(format!("{d}/v1/completions"), &decode_body(body, &ans)).await?;
        }
        Path::Router => {
            post(format!("{r}/v1/completions"), body).await?;
        }
    }
    Ok(())
}

pub(crate) async fn measure(
    args: &Args,
    path: Path,
    urls: &(String, String, String),
) -> anyhow::Result<Lat> {
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let n = args.requests.max(1);
    let workers = args.concurrency.clamp(1, n);
    // Warm-up: connections, caches.
    for k in 0..workers.max(20) {
        let body = json!({"model": "m", "prompt": prompt(k, args.prompt_chars), "max_tokens": args.max_tokens});
        one(&client, path, urls, &body).await?;
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, urls) = (client.clone(), urls.clone());
        let (chars, max_tokens) = (args.prompt_chars, args.max_tokens);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for k in (w..n).step_by(workers) {
                let body =
                    json!({"model": "m", "prompt": prompt(k, chars), "max_tokens": max_tokens});
                let t = Instant::now();
                one(&client, path, &urls, &body).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(summarize(all, t0.elapsed()))
}

/// Decisions per second of `policy` on a pure LiveCluster; also the
/// acceptance count (a sanity check that it was not rejecting everything).
fn decisions(args: &Args) -> anyhow::Result<(f64, usize)> {
    let cfg = RouterConfig {
        prefill: vec!["http://p".into()],
        decode: vec!["http://d".into()],
        ..RouterConfig::default()
    }
    .cluster_config()?;
    let block_chars = 2048;
    let prompts: Vec<(u32, Vec<u64>)> = (0..512)
        .map(|k| {
            let p = prompt(k, 16 * 1024 + (k % 7) * 2048);
            let chars = p.chars().count();
            (estimate_tokens(chars), block_hashes(&p, block_chars))
        })
        .collect();
    let mut cluster = LiveCluster::new(cfg, args.prefill, args.decode);
    let mut policy = args.policy.build(42);
    let mut in_flight = VecDeque::new();
    let mut accepted = 0;
    let t0 = Instant::now();
    for k in 0..args.decisions {
        let (input, blocks) = &prompts[k % prompts.len()];
        let req = RequestInfo {
            id: k as u64,
            input_tokens: *input,
            output_tokens: 256,
            blocks,
        };
        let now = k as f64 * 1e-3;
        if let Ok(r) = cluster.route(policy.as_mut(), &req, now, &[]) {
            accepted += 1;
            in_flight.push_back(r.ticket);
        }
        if in_flight.len() > 256 {
            let t = in_flight.pop_front().context("non-empty")?;
            cluster.prefill_done(t, now);
            cluster.finish(t, now, true);
        }
    }
    Ok((args.decisions as f64 / t0.elapsed().as_secs_f64(), accepted))
}

async fn engine(role: EngineRole) -> anyhow::Result<Server> {
    let e = FakeEngine::new(FakeEngineConfig {
        role,
        time_scale: 0.0,
        ..FakeEngineConfig::default()
    })?;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(Server::spawn(l, e.app())?)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.requests > 0, "--requests must be > 0");
    if args.events {
        return super::bench_router_events::run(&args).await;
    }
    let p = engine(EngineRole::Prefill).await?;
    let d = engine(EngineRole::Decode).await?;
    let router = RouterService::new(RouterConfig {
        prefill: vec![p.url()],
        decode: vec![d.url()],
        policy: args.policy,
        port: 0,
        ..RouterConfig::default()
    })?;
    let r = Server::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        router.app(),
    )?;
    let urls = (p.url(), d.url(), r.url());
    let direct = measure(&args, Path::Direct, &urls).await?;
    let direct_pd = measure(&args, Path::DirectPd, &urls).await?;
    let routed = measure(&args, Path::Router, &urls).await?;
    let (rate, accepted) = tokio::task::block_in_place(|| decisions(&args))?;
    let overhead_p50 = routed.p50_us - direct_pd.p50_us;
    let overhead_p99 = routed.p99_us - direct_pd.p99_us;
    if args.json {
        let out = json!({
            "requests": args.requests, "concurrency": args.concurrency,
            "prompt_chars": args.prompt_chars, "max_tokens": args.max_tokens,
            "policy": args.policy.as_str(),
            "direct": direct, "direct_pd": direct_pd, "router": routed,
            "router_overhead_p50_us": overhead_p50, "router_overhead_p99_us": overhead_p99,
            "router_vs_direct_pd_p50": routed.p50_us / direct_pd.p50_us,
            "decisions_per_s": rate, "decisions": args.decisions,
            "decisions_accepted": accepted,
            "cluster": {"prefill": args.prefill, "decode": args.decode},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "router overhead ({} requests, {} concurrent, {}-char prompts, {} output tokens, policy {}):",
            args.requests, args.concurrency, args.prompt_chars, args.max_tokens, args.policy
        );
        println!(
            "  {:<34} {:>10} {:>10} {:>10} {:>10}",
            "path", "p50 us", "p99 us", "mean us", "req/s"
        );
        for (name, l) in [
            ("direct, one engine call", &direct),
            ("direct, prefill + decode calls", &direct_pd),
            ("through the router", &routed),
        ] {
            println!(
                "  {:<34} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
                name, l.p50_us, l.p99_us, l.mean_us, l.rps
            );
        }
        println!(
            "  router adds {overhead_p50:.0} us at p50, {overhead_p99:.0} us at p99 over the client's own two calls ({:.2}x)",
            routed.p50_us / direct_pd.p50_us
        );
        println!(
            "routing decisions ({} on a {}P/{}D LiveCluster, 256 in flight): {:.0}/s ({} of {} accepted)",
            args.policy, args.prefill, args.decode, rate, accepted, args.decisions
        );
    }
    r.shutdown().await?;
    p.shutdown().await?;
    d.shutdown().await?;
    Ok(())
}
