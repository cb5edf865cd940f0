//! `mooncake bench router --events`: what routing on real KV-cache events
//! buys and costs.
//!
//! 1. Ingestion: vLLM-format batches (32 stored + 32 removed blocks each)
//!    decoded and applied to the prefix index on one core, and the same
//!    through real ZMQ sockets (publisher → subscriber task).
//! 2. The conversation trace (first `--trace-requests` records, arrivals
//!    time-scaled) replayed against fake prefill engines with small real
//!    caches that publish events, through a router that routes on those
//!    events versus one that routes on its beliefs. The prefix-hit ratio is
//!    the engines' own (blocks found in their caches / blocks queried);
//!    TTFT is the time to the first streamed chunk.
//! 3. The router's added latency with events on (same paths as the plain
//!    bench: through the router vs the client's own prefill + decode calls).

use super::bench_router::{measure, summarize, Args, Lat, Path};
use anyhow::Context;
use mooncake_router::config::RouterConfig;
use mooncake_router::fake_engine::{EngineRole, FakeEngine, FakeEngineConfig, KvEventsConfig};
use mooncake_router::indexer::PrefixIndex;
use mooncake_router::kv_events::hash::{HashAlgo, DEFAULT_SEED};
use mooncake_router::kv_events::wire::{decode_batch, encode_batch, KvEvent, KvEventBatch};
use mooncake_router::kv_events::zmq::{subscribe, Publisher, StreamSource};
use mooncake_router::server::{RouterService, Server};
use mooncake_sim::trace::{published_trace, read_trace};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: u32 = 16;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn batches(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|b| {
            let stored: Vec<u64> = (0..32).map(|i| splitmix((b * 32 + i) as u64)).collect();
            let removed: Vec<u64> = if b >= 4 {
                (0..32)
                    .map(|i| splitmix(((b - 4) * 32 + i) as u64))
                    .collect()
            } else {
                Vec::new()
            };
            encode_batch(&KvEventBatch {
                ts: b as f64,
                events: vec![
                    KvEvent::BlockRemoved {
                        block_hashes: removed,
                        medium: Some("GPU".into()),
                    },
                    KvEvent::BlockStored {
                        block_hashes: stored,
                        parent_block_hash: Some(splitmix(b as u64 ^ 0xabc)),
                        token_ids: (0..32 * BS).collect(),
                        block_size: BS,
                        lora_id: None,
                        medium: Some("GPU".into()),
                        lora_name: None,
                    },
                ],
                data_parallel_rank: Some(0),
            })
        })
        .collect()
}

/// Block events per second: decode + apply on this thread, and through ZMQ.
async fn ingest(n: usize) -> anyhow::Result<(f64, f64)> {
    let payloads = batches(n);
    let blocks: usize = n * 64 - 4 * 32;
    let mut ix = PrefixIndex::default();
    let t0 = Instant::now();
    for (seq, p) in payloads.iter().enumerate() {
        let b = decode_batch(p)?;
        ix.apply("engine", 0, seq as u64, &b);
    }
    let local = blocks as f64 / t0.elapsed().as_secs_f64();

    let (pe, re) = (free_port()?, free_port()?);
    let (pub_ep, rep_ep) = (
        format!("tcp://127.0.0.1:{pe}"),
        format!("tcp://127.0.0.1:{re}"),
    );
    let publisher = Publisher::bind(&pub_ep, Some(&rep_ep), "")
        .await
        .map_err(anyhow::Error::msg)?;
    let index = Arc::new(Mutex::new(PrefixIndex::default()));
    let sub = tokio::spawn(subscribe(
        StreamSource {
            instance: "engine".into(),
            dp_rank: 0,
            endpoint: pub_ep,
            replay: Some(rep_ep),
        },
        index.clone(),
    ));
    // Wait for the subscription: a probe batch must arrive.
    let probe = |seq| KvEventBatch {
        ts: seq as f64,
        events: vec![KvEvent::AllBlocksCleared],
        data_parallel_rank: Some(0),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0u64;
    loop {
        publisher.publish(probe(sent));
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let got = index
            .lock()
            .stream_stats("engine")
            .get(&0)
            .map_or(0, |s| s.batches);
        if got > 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "subscriber never connected");
    }
    let decoded: Vec<KvEventBatch> = payloads
        .iter()
        .map(|p| decode_batch(p))
        .collect::<Result<_, _>>()?;
    let t0 = Instant::now();
    for b in decoded {
        publisher.publish(b);
    }
    let want = sent + n as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = index
            .lock()
            .stream_stats("engine")
            .get(&0)
            .cloned()
            .unwrap_or_default();
        if s.last_seq.is_some_and(|l| l + 1 >= want) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "ingestion stalled: {s:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let zmq = blocks as f64 / t0.elapsed().as_secs_f64();
    sub.abort();
    publisher.close().await;
    Ok((local, zmq))
}

struct Cluster {
    _engines: Vec<(FakeEngine, Server)>,
    prefill: Vec<(FakeEngine, String, String, String)>,
    decode: String,
}

async fn cluster(n: usize, time_scale: f64, cache_tokens: u64) -> anyhow::Result<Cluster> {
    let mut engines = Vec::new();
    let mut prefill = Vec::new();
    let mut decode = String::new();
    for k in 0..=n {
        let (pe, re) = (free_port()?, free_port()?);
        let (pub_ep, rep_ep) = (
            format!("tcp://127.0.0.1:{pe}"),
            format!("tcp://127.0.0.1:{re}"),
        );
        let role = if k < n {
            EngineRole::Prefill
        } else {
            EngineRole::Decode
        };
        let e = FakeEngine::new(FakeEngineConfig {
            role,
            time_scale,
            cache_tokens,
            default_max_tokens: 8,
            kv_events: Some(KvEventsConfig {
                endpoint: pub_ep.clone(),
                replay_endpoint: Some(rep_ep.clone()),
                block_size: BS,
                hash_algo: HashAlgo::Sha256,
                hash_seed: DEFAULT_SEED.into(),
                dp_rank: 0,
            }),
            ..FakeEngineConfig::default()
        })?;
        e.start_events().await.map_err(anyhow::Error::msg)?;
        let s = Server::spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await?, e.app())?;
        if k < n {
            prefill.push((e.clone(), s.url(), pub_ep, rep_ep));
        } else {
            decode = s.url();
        }
        engines.push((e, s));
    }
    Ok(Cluster {
        _engines: engines,
        prefill,
        decode,
    })
}

/// Token ids of a trace record: 512 per hash id, truncated to its length.
fn trace_tokens(hash_ids: &[u64], len: u32) -> Vec<u32> {
    let mut t = Vec::with_capacity(len as usize);
    'outer: for &h in hash_ids {
        for j in 0..512u64 {
            if t.len() == len as usize {
                break 'outer;
            }
            t.push((splitmix(h.wrapping_mul(1 << 20) ^ j) % 100_000) as u32);
        }
    }
    t
}

#[derive(Debug, serde::Serialize)]
struct Replay {
    ok: usize,
    failed: usize,
    hit_ratio: f64,
    ttft_p50_ms: f64,
    ttft_p99_ms: f64,
    ttft_mean_ms: f64,
}

async fn replay(args: &Args, events: bool) -> anyhow::Result<Replay> {
    let path = match &args.trace {
        Some(p) => p.clone(),
        None => published_trace("conversation_trace.jsonl")?,
    };
    let records = read_trace(&path).with_context(|| format!("reading {}", path.display()))?;
    let records: Vec<_> = records.into_iter().take(args.trace_requests).collect();
    let c = cluster(args.engines, args.time_scale, args.engine_cache_tokens).await?;
    let mut cfg = RouterConfig {
        prefill: c.prefill.iter().map(|p| p.1.clone()).collect(),
        decode: vec![c.decode.clone()],
        policy: args.policy,
        port: 0,
        ..RouterConfig::default()
    };
    if events {
        cfg.kv_events = c.prefill.iter().map(|p| p.2.clone()).collect();
        cfg.kv_replay = c.prefill.iter().map(|p| p.3.clone()).collect();
        cfg.block_size = BS;
    } else {
        // Beliefs at the engines' granularity: 16 tokens of JSON digits.
        cfg.block_chars = 16 * 6;
    }
    let router = RouterService::new(cfg)?;
    let r = Server::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        router.app(),
    )?;
    tokio::time::sleep(Duration::from_millis(300)).await; // subscriptions
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let url = format!("{}/v1/completions", r.url());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for rec in records {
        let at = Duration::from_secs_f64(rec.timestamp as f64 / 1000.0 * args.time_scale);
        let body = json!({"model": "m", "prompt": trace_tokens(&rec.hash_ids, rec.input_length),
                          "max_tokens": rec.output_length.clamp(1, 16), "stream": true});
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + at)).await;
            let t = Instant::now();
            let mut resp = client.post(url).json(&body).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            resp.chunk().await.ok()??;
            let ttft = t.elapsed();
            while let Ok(Some(_)) = resp.chunk().await {}
            Some(ttft)
        }));
    }
    let mut ttfts = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Some(d) => ttfts.push(d),
            None => failed += 1,
        }
    }
    let (mut q, mut h) = (0u64, 0u64);
    for p in &c.prefill {
        let s = p.0.stats();
        q += s.blocks_queried;
        h += s.blocks_hit;
    }
    let ok = ttfts.len();
    anyhow::ensure!(ok > 0, "no request succeeded");
    let lat: Lat = summarize(ttfts, t0.elapsed());
    r.shutdown().await?;
    Ok(Replay {
        ok,
        failed,
        hit_ratio: h as f64 / q.max(1) as f64,
        ttft_p50_ms: lat.p50_us / 1e3,
        ttft_p99_ms: lat.p99_us / 1e3,
        ttft_mean_ms: lat.mean_us / 1e3,
    })
}

/// The router's added latency with events on.
async fn overhead(args: &Args) -> anyhow::Result<(Lat, Lat)> {
    let c = cluster(1, 0.0, 1_000_000).await?;
    let p = &c.prefill[0];
    let router = RouterService::new(RouterConfig {
        prefill: vec![p.1.clone()],
        decode: vec![c.decode.clone()],
        kv_events: vec![p.2.clone()],
        kv_replay: vec![p.3.clone()],
        block_size: BS,
        policy: args.policy,
        port: 0,
        ..RouterConfig::default()
    })?;
    let r = Server::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        router.app(),
    )?;
    let urls = (p.1.clone(), c.decode.clone(), r.url());
    let direct_pd = measure(args, Path::DirectPd, &urls).await?;
    let routed = measure(args, Path::Router, &urls).await?;
    Ok((direct_pd, routed))
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (local, zmq) = ingest(args.ingest_batches).await?;
    let believed = replay(args, false).await?;
    let exact = replay(args, true).await?;
    let (direct_pd, routed) = overhead(args).await?;
    let out: Value = json!({
        "ingest_block_events_per_s_one_core": local,
        "ingest_block_events_per_s_zmq": zmq,
        "trace_requests": args.trace_requests, "time_scale": args.time_scale,
        "prefill_engines": args.engines, "engine_cache_tokens": args.engine_cache_tokens,
        "policy": args.policy.as_str(),
        "believed": believed, "events": exact,
        "hit_ratio_events_vs_believed": exact.hit_ratio / believed.hit_ratio.max(1e-9),
        "ttft_p50_events_vs_believed": exact.ttft_p50_ms / believed.ttft_p50_ms.max(1e-9),
        "overhead": {"direct_pd": direct_pd, "router_events": routed,
                     "added_p50_us": routed.p50_us - direct_pd.p50_us,
                     "added_p99_us": routed.p99_us - direct_pd.p99_us},
    });
    if args.json {
        println!("{out}");
        return Ok(());
    }
    println!("KV-event ingestion: {local:.0} block events/s on one core (decode + index), {zmq:.0}/s through ZMQ");
    println!(
        "conversation trace, first {} requests, time scale {}, {} prefill engines × {} cached tokens, policy {}:",
        args.trace_requests, args.time_scale, args.engines, args.engine_cache_tokens, args.policy
    );
    for (name, r) in [("believed caches", &believed), ("real KV events", &exact)] {
        println!(
            "  {name:16} prefix-hit ratio {:.3}  TTFT p50 {:.1} ms  p99 {:.1} ms  ({} ok, {} failed)",
            r.hit_ratio, r.ttft_p50_ms, r.ttft_p99_ms, r.ok, r.failed
        );
    }
    println!(
        "router added latency with events (vs the client's own prefill + decode calls): p50 {:.0} µs, p99 {:.0} µs at {:.0} req/s",
        routed.p50_us - direct_pd.p50_us,
        routed.p99_us - direct_pd.p99_us,
        routed.rps
    );
    Ok(())
}
