//! `mooncake bench failover`: what a master failover costs, measured end to end.
//!
//! 1. **HA off**: a lone `mooncake master` process, storage nodes and `--clients` put
//!    loops for `--steady`: put ops/s. Then the same with `--snapshot_dir` (the durable
//!    file op-log of a lone master).
//! 2. **HA on**: a local etcd and `--masters` `mooncake master --enable_ha` processes; the
//!    same put loops through `etcd://` for `--duration`. Put ops/s before the kill is the
//!    steady-state cost of HA. Halfway, the leader is killed with SIGKILL; reported: time
//!    to the new leader, time from the kill to the first successful put, p99 put latency
//!    of puts started from the kill to one second after the first success, and objects
//!    lost — every acknowledged put is read back and checksummed afterwards (must be 0).
//!
//! Values are checksummed per key; each put uses a fresh key, `--replicas` copies.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mooncake_metadata::etcd::{EtcdClient, EtcdOptions};
use mooncake_store::client::{Client, ClientConfig};
use mooncake_store::protocol::leader::find_leader;
use mooncake_store::ReplicateConfig;

use mooncake_config::{parse_duration, parse_size};

use super::up_ha::LocalEtcd;

/// Flags of `mooncake bench failover`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Masters of the HA cluster.
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Concurrent put loops (each its own store client).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Length of the HA run; the leader is killed halfway.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Duration,
    /// Length of each HA-off baseline run.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub steady: Duration,
    /// Value size.
    #[arg(long, default_value = "4KiB", value_name = "SIZE", value_parser = parse_size)]
    pub value_size: u64,
    /// Replicas per put.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Keys per put call (`batch_put` when > 1: one master round trip and one op-log
    /// write for the whole batch).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Storage nodes (in this process).
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// Segment per storage node.
    #[arg(long, default_value = "512MiB", value_name = "SIZE", value_parser = parse_size)]
    pub segment_size: u64,
    /// The leader's etcd lease TTL, seconds.
    #[arg(long, default_value_t = 2)]
    pub lease_ttl: u64,
    /// Skip the HA-off baselines.
    #[arg(long)]
    pub no_baseline: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// A `mooncake master` child with `extra` flags; returns it and its RPC address.
fn spawn_master(extra: &[String]) -> anyhow::Result<(Kid, String)> {
    let rpc = free_port()?;
    let http = free_port()?;
    let child = Command::new(std::env::current_exe()?)
        .arg("master")
        .args([
            "--rpc_address=127.0.0.1".to_string(),
            format!("--rpc_port={rpc}"),
            "--metrics_host=127.0.0.1".to_string(),
            format!("--metrics_port={http}"),
        ])
        .args(extra)
        .env("MOONCAKE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("spawning mooncake master")?;
    Ok((Kid(child), format!("127.0.0.1:{rpc}")))
}

async fn store_client(master: &str, metadata: &str, segment: u64) -> anyhow::Result<Client> {
    let cfg = ClientConfig {
        local_hostname: "127.0.0.1".into(),
        metadata_server: metadata.into(),
        master_server_addr: master.into(),
        global_segment_size: segment,
        local_buffer_size: if segment == 0 { 64 << 20 } else { 0 },
        ..ClientConfig::default()
    };
    let t0 = Instant::now();
    loop {
        match Client::connect(cfg.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if t0.elapsed() > Duration::from_secs(30) => {
                return Err(e).context("store client");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One put: when it started (since the run's start), how long it took, its key and
/// version when it succeeded.
struct PutRec {
    start: Duration,
    latency: Duration,
    ok: bool,
}

struct RunOut {
    recs: Vec<PutRec>,
    acked: Vec<String>,
}

fn value(key: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = fnv(key.as_bytes()) | 1;
    for b in v.iter_mut().skip(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sum = fnv(&v[8..]);
    v[..8].copy_from_slice(&sum.to_le_bytes());
    v
}

fn intact(key: &str, v: &[u8], len: usize) -> bool {
    v.len() == len && v == value(key, len).as_slice()
}

fn fnv(d: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in d {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Run `clients` put loops until `stop`; `t0` is the run's time origin.
async fn put_loops(
    clients: &[Client],
    tag: &str,
    len: usize,
    replicas: u32,
    batch: usize,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<RunOut> {
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        let stop = stop.clone();
        let tag = format!("{tag}-{i}");
        tasks.push(tokio::spawn(async move {
            let cfg = ReplicateConfig {
                replica_num: replicas,
                ..ReplicateConfig::default()
            };
            let mut out = RunOut {
                recs: Vec::new(),
                acked: Vec::new(),
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                let keys: Vec<String> = (0..batch.max(1))
                    .map(|j| format!("{tag}-{}", n + j as u64))
                    .collect();
                n += keys.len() as u64;
                let vals: Vec<Vec<u8>> = keys.iter().map(|k| value(k, len)).collect();
                let s = Instant::now();
                let oks: Vec<bool> = if keys.len() == 1 {
                    vec![c.put(&keys[0], &vals[0], &cfg).await.is_ok()]
                } else {
                    let refs: Vec<&[u8]> = vals.iter().map(|v| v.as_slice()).collect();
                    match c.batch_put(&keys, &refs, &cfg).await {
                        Ok(rs) => rs.iter().map(|r| r.is_ok()).collect(),
                        Err(_) => vec![false; keys.len()],
                    }
                };
                let latency = s.elapsed();
                let mut any_failed = false;
                for (k, ok) in keys.into_iter().zip(oks) {
                    out.recs.push(PutRec {
                        start: s - t0,
                        latency,
                        ok,
                    });
                    if ok {
                        out.acked.push(k);
                    } else {
                        any_failed = true;
                    }
                }
                if any_failed {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            out
        }));
    }
    let mut outs = Vec::new();
    for t in tasks {
        if let Ok(o) = t.await {
            outs.push(o);
        }
    }
    outs
}

/// Put ops/s of a lone master (`extra` flags), `args.steady` long.
async fn baseline(args: &Args, metadata: &str, extra: &[String]) -> anyhow::Result<f64> {
    let (_m, rpc) = spawn_master(extra)?;
    let mut nodes = Vec::new();
    for _ in 0..args.nodes {
        nodes.push(store_client(&rpc, metadata, args.segment_size).await?);
    }
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(store_client(&rpc, metadata, 0).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let run = put_loops(
        &clients,
        "base",
        args.value_size as usize,
        args.replicas,
        args.batch,
        t0,
        stop.clone(),
    );
    let timer = async {
        tokio::time::sleep(args.steady).await;
        stop.store(true, Ordering::Release);
    };
    let (outs, ()) = tokio::join!(run, timer);
    let el = t0.elapsed().as_secs_f64();
    let ok: usize = outs.iter().map(|o| o.acked.len()).sum();
    for c in clients.iter().chain(nodes.iter()) {
        c.close().await.ok();
    }
    Ok(ok as f64 / el)
}

fn p99(mut v: Vec<Duration>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1].as_secs_f64() * 1e3
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.masters < 2 {
        bail!("--masters must be at least 2 to fail over");
    }
    let etcd = LocalEtcd::start("127.0.0.1").await?;
    let metadata = format!("etcd://{}", etcd.endpoint);
    let say = |s: String| {
        if !args.json {
            eprintln!("{s}");
        }
    };

    let (mut off, mut durable) = (None, None);
    if !args.no_baseline {
        off = Some(baseline(&args, &metadata, &[]).await?);
        say(format!("HA off: {:.0} puts/s", off.unwrap()));
        let dir = tempfile::tempdir()?;
        durable = Some(
            baseline(
                &args,
                &metadata,
                &[format!("--snapshot_dir={}", dir.path().display())],
            )
            .await?,
        );
        say(format!(
            "lone master with --snapshot_dir: {:.0} puts/s",
            durable.unwrap()
        ));
    }

    let cluster = format!("bench{}", std::process::id());
    let mut masters = Vec::new();
    for _ in 0..args.masters {
        masters.push(spawn_master(&[
            "--enable_ha".into(),
            format!("--etcd_endpoints={}", etcd.endpoint),
            format!("--cluster_id={cluster}"),
            format!("--ha_lease_ttl_sec={}", args.lease_ttl),
        ])?);
    }
    let locator = format!("etcd://{}/{cluster}", etcd.endpoint);
    let ec = EtcdClient::new(std::slice::from_ref(&etcd.endpoint), EtcdOptions::default())?;
    let mut nodes = Vec::new();
    for _ in 0..args.nodes {
        nodes.push(store_client(&locator, &metadata, args.segment_size).await?);
    }
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(store_client(&locator, &metadata, 0).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let len = args.value_size as usize;
    let run = put_loops(
        &clients,
        "ha",
        len,
        args.replicas,
        args.batch,
        t0,
        stop.clone(),
    );
    let half = args.duration / 2;
    let chaos = async {
        tokio::time::sleep(half).await;
        let (l, _) = find_leader(&ec, &cluster)
            .await?
            .context("no leader to kill")?;
        let i = masters
            .iter()
            .position(|(_, rpc)| *rpc == l.rpc)
            .context("leader is not one of ours")?;
        let _ = masters[i].0 .0.kill();
        let _ = masters[i].0 .0.wait();
        let killed = t0.elapsed();
        let mut elected = None;
        while t0.elapsed() < args.duration {
            if elected.is_none() {
                if let Ok(Some((l2, _))) = find_leader(&ec, &cluster).await {
                    if l2.rpc != l.rpc {
                        elected = Some(t0.elapsed() - killed);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::Release);
        anyhow::Ok((killed, elected))
    };
    let (outs, chaos) = tokio::join!(run, chaos);
    let (killed, elected) = chaos?;
    let recs: Vec<&PutRec> = outs.iter().flat_map(|o| o.recs.iter()).collect();
    let before = recs
        .iter()
        .filter(|r| r.ok && r.start + r.latency < killed)
        .count();
    let ha_ops = before as f64 / killed.as_secs_f64();
    let first_ok = recs
        .iter()
        .filter(|r| r.ok && r.start + r.latency >= killed)
        .map(|r| r.start + r.latency)
        .min();
    let to_first = first_ok.map(|t| t - killed);
    let window_end = first_ok.map_or(args.duration, |t| t + Duration::from_secs(1));
    let window: Vec<Duration> = recs
        .iter()
        .filter(|r| r.start + r.latency >= killed && r.start < window_end)
        .map(|r| r.latency)
        .collect();
    let failed = recs.iter().filter(|r| !r.ok).count();
    // Read back every acknowledged put.
    let reader = &clients[0];
    let mut acked = 0usize;
    let mut lost = 0usize;
    for o in &outs {
        for k in &o.acked {
            acked += 1;
            match reader.get(k).await {
                Ok(v) if intact(k, &v, len) => {}
                _ => lost += 1,
            }
        }
    }
    let ratio = off.map(|o| ha_ops / o);
    let report = serde_json::json!({
        "masters": args.masters,
        "clients": args.clients,
        "value_size": args.value_size,
        "replicas": args.replicas,
        "batch": args.batch,
        "lease_ttl_s": args.lease_ttl,
        "ha_off_put_ops": off,
        "durable_file_put_ops": durable,
        "ha_on_put_ops": ha_ops,
        "ha_on_vs_off": ratio,
        "new_leader_ms": elected.map(|d| d.as_millis() as u64),
        "kill_to_first_put_ms": to_first.map(|d| d.as_millis() as u64),
        "p99_put_ms_failover_window": p99(window),
        "puts_acknowledged": acked,
        "puts_failed": failed,
        "objects_lost": lost,
    });
    for c in clients.iter().chain(nodes.iter()) {
        c.close().await.ok();
    }
    drop(masters);
    drop(etcd);
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if lost > 0 {
        bail!("{lost} acknowledged objects lost");
    }
    Ok(())
}
