//! `mooncake bench store`: put / get / is_exist throughput and latency of the
//! store, per value size, with N concurrent clients.
//!
//! Without `--master` it starts its own cluster as a child process (`mooncake
//! up`, which holds the segment), so the bench process has no segment and every
//! byte crosses a transport, like the reference's measurement (holder process
//! mounts, measuring process has segment 0). `--transport tcp` forces tcp for
//! the measuring clients; `auto` lets same-host reads use shared memory.
//!
//! `--json` prints a JSON array, one object per (op, value_size).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use mooncake_config::{format_size, parse_duration, parse_size};
use mooncake_store::client::{Client, ClientConfig, Region};
use mooncake_store::ReplicateConfig;
use mooncake_transfer::ManagedBuffer;
use serde::Serialize;

/// Flags of `mooncake bench store`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Value sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "4KiB,64KiB,1MiB,4MiB", value_name = "SIZE", value_parser = parse_size)]
    pub value_size: Vec<u64>,
    /// Concurrent clients (each its own engine and master connection).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Time per (op, value size).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Duration,
    /// Operations to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "put,get,exist")]
    pub ops: Vec<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Master of a running cluster (default: start one).
    #[arg(long, requires = "metadata")]
    pub master: Option<String>,
    /// Metadata connection string of the running cluster.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Segment of the cluster this bench starts.
    #[arg(long, default_value = "4GiB", value_name = "SIZE", value_parser = parse_size)]
    pub segment_size: u64,
    /// Copies per object.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// `tcp`: measuring clients never use shared memory; `auto`: same-host
    /// replicas are read through shared memory.
    #[arg(long, default_value = "auto")]
    pub transport: String,
    /// Put from and get into registered buffers (put_from / get_into) instead
    /// of plain memory (put / get).
    #[arg(long)]
    pub zero_copy: bool,
    /// Address of the measuring clients' engines.
    #[arg(long, default_value = "127.0.0.1")]
    pub local_hostname: String,
    /// Instead of the throughput phases, store this many 64-byte objects and
    /// report the master's memory per million objects (needs the bench's own
    /// cluster: it reads the `mooncake up` child's RSS).
    #[arg(long, conflicts_with = "master")]
    pub master_memory: Option<u64>,
    /// `--cluster-token` / `--insecure` (default for the bench's own
    /// cluster: a fresh credential, shared with its `mooncake up` child).
    #[command(flatten)]
    pub auth: super::auth::AuthArgs,
}

/// One result row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub op: String,
    pub value_size: u64,
    pub clients: usize,
    pub transport: String,
    pub zero_copy: bool,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub throughput_gbps: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    Exist,
}

impl Op {
    fn parse(s: &str) -> anyhow::Result<Op> {
        Ok(match s.trim() {
            "put" => Op::Put,
            "get" => Op::Get,
            "exist" | "is_exist" => Op::Exist,
            o => bail!("unknown op {o:?} (put, get, exist)"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Exist => "exist",
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let ops: Vec<Op> = args
        .ops
        .iter()
        .map(|o| Op::parse(o))
        .collect::<Result<_, _>>()?;
    if args.clients == 0 || args.value_size.is_empty() || ops.is_empty() {
        bail!("need at least one client, value size and op");
    }
    let own = match &args.master {
        Some(_) => {
            args.auth.install()?;
            None
        }
        None => {
            // The child inherits the credential through the environment.
            let (mode, _) = args.auth.install_or_generate()?;
            let insecure = matches!(mode, mooncake_security::AuthMode::Insecure);
            Some(OwnCluster::start(args.segment_size, insecure).await?)
        }
    };
    let (master, metadata) = match (&args.master, &args.metadata, &own) {
        (Some(m), Some(d), _) => (m.clone(), d.clone()),
        (_, _, Some(c)) => (c.master.clone(), c.metadata.clone()),
        _ => bail!("--master needs --metadata"),
    };
    let max_value = *args.value_size.iter().max().unwrap_or(&0);
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let cfg = ClientConfig {
            local_hostname: args.local_hostname.clone(),
            metadata_server: metadata.clone(),
            master_server_addr: master.clone(),
            global_segment_size: 0,
            local_buffer_size: (max_value * 4).max(16 << 20),
            same_host_shm: args.transport != "tcp",
            ..ClientConfig::default()
        };
        clients.push(
            Client::connect(cfg)
                .await
                .context("connecting a bench client")?,
        );
    }
    let mut buffers = Vec::new();
    if args.zero_copy {
        for c in &clients {
            let b = c.allocate_buffer(max_value as usize).await?;
            b.write_at(0, &pattern(max_value as usize));
            buffers.push(Arc::new(b));
        }
    }
    let rcfg = ReplicateConfig {
        replica_num: args.replicas,
        ..ReplicateConfig::default()
    };
    if let Some(n) = args.master_memory {
        let pid = own
            .as_ref()
            .map(|c| c.proc.pid())
            .context("--master-memory needs the bench's own cluster")?;
        let r = master_memory(&clients[0], pid, n, args.json).await;
        for c in &clients {
            c.close().await.ok();
        }
        if let Some(c) = own {
            c.stop().await;
        }
        return r;
    }
    let phases = (args.value_size.len() * ops.len()) as u64;
    let pb = ProgressBar::new(phases * args.duration.as_millis() as u64);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let run_id: u32 = rand::random();
    let mut rows = Vec::new();
    let mut phase_no = 0u64;
    for &size in &args.value_size {
        clients[0].remove_all(true).await.ok();
        let keys: Vec<Vec<String>> = vec![Vec::new(); clients.len()];
        let keys = Arc::new(parking_lot::Mutex::new(keys));
        let value = Arc::new(pattern(size as usize));
        for &op in &ops {
            if op != Op::Put && keys.lock().iter().all(|k| k.is_empty()) {
                prefill(&clients, &keys, &value, &rcfg, run_id, size).await?;
            }
            pb.set_message(format!("{} {}", op.name(), format_size(size)));
            let base = phase_no * args.duration.as_millis() as u64;
            let ticker = {
                let pb = pb.clone();
                let t0 = Instant::now();
                let d = args.duration;
                tokio::spawn(async move {
                    loop {
                        let e = t0.elapsed().min(d);
                        pb.set_position(base + e.as_millis() as u64);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            };
            let ctx = PhaseCtx {
                keys: &keys,
                value: &value,
                buffers: &buffers,
                rcfg: &rcfg,
                run: run_id,
            };
            let row = phase(&clients, op, size, args.duration, &ctx).await;
            ticker.abort();
            phase_no += 1;
            let mut row = row;
            row.transport = args.transport.clone();
            row.zero_copy = args.zero_copy;
            rows.push(row);
        }
    }
    pb.finish_and_clear();
    clients[0].remove_all(true).await.ok();
    for c in &clients {
        c.close().await.ok();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    if let Some(c) = own {
        c.stop().await;
    }
    Ok(())
}

/// Resident memory of process `pid`, bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc/<pid>/status")?;
    Ok(kb * 1024)
}

/// Store `n` 64-byte objects (batches of 8192) and report how much the
/// cluster process grew: the master's metadata (its segment is prefaulted, so
/// the objects' bytes do not move RSS).
async fn master_memory(client: &Client, pid: u32, n: u64, json: bool) -> anyhow::Result<()> {
    let before = rss(pid)?;
    let value = [0x5au8; 64];
    let rcfg = ReplicateConfig::default();
    let pb = ProgressBar::new(n);
    let start = Instant::now();
    let mut stored = 0u64;
    let mut i = 0u64;
    while i < n {
        let m = (n - i).min(8192);
        let keys: Vec<String> = (i..i + m).map(|k| format!("mem-{k:010}")).collect();
        let values: Vec<&[u8]> = keys.iter().map(|_| &value[..]).collect();
        let r = client.batch_put(&keys, &values, &rcfg).await?;
        stored += r.iter().filter(|x| x.is_ok()).count() as u64;
        i += m;
        pb.set_position(i);
    }
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let after = rss(pid)?;
    let per_object = after.saturating_sub(before) as f64 / stored.max(1) as f64;
    let per_million_mib = per_object * 1e6 / (1u64 << 20) as f64;
    if json {
        println!(
            "{}",
            serde_json::json!({"op": "master_memory", "objects": stored, "rss_before": before,
                "rss_after": after, "bytes_per_object": per_object,
                "mib_per_million_objects": per_million_mib, "put_ops_per_s": stored as f64 / secs})
        );
    } else {
        println!(
            "stored {stored} objects of 64 B in {secs:.1} s ({:.0} ops/s, batches of 8192); \
             cluster RSS {} -> {} MiB: {per_object:.0} B per object, {per_million_mib:.0} MiB per million objects",
            stored as f64 / secs,
            before >> 20,
            after >> 20
        );
    }
    client.remove_all(true).await.ok();
    Ok(())
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn key(run: u32, size: u64, client: usize, i: u64) -> String {
    format!("bench-{run:08x}-{size}-{client}-{i}")
}

/// Keep the most recent keys each client wrote (for get/exist phases).
const KEEP_KEYS: usize = 64;

async fn prefill(
    clients: &[Client],
    keys: &parking_lot::Mutex<Vec<Vec<String>>>,
    value: &[u8],
    rcfg: &ReplicateConfig,
    run: u32,
    size: u64,
) -> anyhow::Result<()> {
    for (c, client) in clients.iter().enumerate() {
        for i in 0..8u64 {
            let k = key(run, size, c, u64::MAX - i);
            client.put(&k, value, rcfg).await.context("prefill")?;
            keys.lock()[c].push(k);
        }
    }
    Ok(())
}

/// What every client task of a phase shares.
struct PhaseCtx<'a> {
    keys: &'a Arc<parking_lot::Mutex<Vec<Vec<String>>>>,
    value: &'a Arc<Vec<u8>>,
    /// One registered buffer per client with `--zero-copy`, else empty.
    buffers: &'a [Arc<ManagedBuffer>],
    rcfg: &'a ReplicateConfig,
    run: u32,
}

async fn phase(
    clients: &[Client],
    op: Op,
    size: u64,
    duration: Duration,
    ctx: &PhaseCtx<'_>,
) -> Row {
    let run = ctx.run;
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let client = client.clone();
            let keys = Arc::clone(ctx.keys);
            let value = Arc::clone(ctx.value);
            let rcfg = ctx.rcfg.clone();
            let buf = ctx.buffers.get(c).cloned();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mine: Vec<String> = keys.lock()[c].clone();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let ok = match op {
                        Op::Put => {
                            let k = key(run, size, c, i);
                            let r = match &buf {
                                Some(b) => match Region::of(b, 0, size as usize) {
                                    Ok(region) => client.put_from(&k, region, &rcfg).await,
                                    Err(e) => Err(e),
                                },
                                None => client.put(&k, &value, &rcfg).await,
                            };
                            if r.is_ok() {
                                let mut ks = keys.lock();
                                ks[c].push(k);
                                if ks[c].len() > KEEP_KEYS {
                                    ks[c].remove(0);
                                }
                            }
                            r.is_ok()
                        }
                        Op::Get => {
                            let k = &mine[i as usize % mine.len().max(1)];
                            match &buf {
                                Some(b) => {
                                    matches!(client.get_into(k, Region::whole(b)).await, Ok(n) if n == size)
                                }
                                None => matches!(client.get(k).await, Ok(v) if v.len() as u64 == size),
                            }
                        }
                        Op::Exist => {
                            let k = &mine[i as usize % mine.len().max(1)];
                            matches!(client.is_exist(k).await, Ok(true))
                        }
                    };
                    if ok {
                        lat.push(t.elapsed().as_nanos() as u64);
                    } else {
                        errors += 1;
                    }
                    i += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            errors += e;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    summarize(op, size, clients.len(), lat, errors, secs)
}

fn summarize(op: Op, size: u64, clients: usize, mut lat: Vec<u64>, errors: u64, secs: f64) -> Row {
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1000.0
    };
    let n = lat.len() as u64;
    let ops_per_s = n as f64 / secs;
    let bytes = if op == Op::Exist {
        0.0
    } else {
        (n * size) as f64
    };
    Row {
        op: op.name().into(),
        value_size: size,
        clients,
        transport: String::new(),
        zero_copy: false,
        ops: n,
        errors,
        seconds: secs,
        ops_per_s,
        throughput_gbps: bytes / secs / 1e9,
        latency_p50_us: pct(0.50),
        latency_p99_us: pct(0.99),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<6} {:>8} {:>7} {:>10} {:>9} {:>10} {:>10} {:>7}",
        "op", "value", "clients", "ops/s", "GB/s", "p50 µs", "p99 µs", "errors"
    );
    for r in rows {
        println!(
            "{:<6} {:>8} {:>7} {:>10.0} {:>9.3} {:>10.1} {:>10.1} {:>7}",
            r.op,
            format_size(r.value_size),
            r.clients,
            r.ops_per_s,
            r.throughput_gbps,
            r.latency_p50_us,
            r.latency_p99_us,
            r.errors
        );
    }
}

/// A cluster this bench started: a `mooncake up` child holding the segment
/// (its process group is killed if the bench fails before [`OwnCluster::stop`]).
pub(crate) struct OwnCluster {
    proc: mooncake_testkit::Proc,
    pub(crate) master: String,
    pub(crate) metadata: String,
}

impl OwnCluster {
    /// Start `mooncake up`; it takes this process's credential from the
    /// environment, or runs `--insecure` when this bench does.
    pub(crate) async fn start(segment: u64, insecure: bool) -> anyhow::Result<OwnCluster> {
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.args(["up", "--rpc-port", "0", "--metadata-port", "0"])
            .args([
                "--metrics-port",
                "0",
                "--segment-size",
                &segment.to_string(),
            ])
            .arg("--quiet")
            .args(insecure.then_some("--insecure"));
        // Spawning and awaiting READY block (bounded: 60 s); panics carry the
        // child's stderr and come back here as an error.
        tokio::task::spawn_blocking(move || {
            let mut proc = mooncake_testkit::Proc::spawn(cmd);
            let ready = proc.ready(Duration::from_secs(60));
            OwnCluster {
                master: ready.str("master").to_string(),
                metadata: ready.str("metadata").to_string(),
                proc,
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("starting `mooncake up`: {e}"))
    }

    /// SIGTERM (a clean unmount), SIGKILL after 10 s.
    pub(crate) async fn stop(mut self) {
        tokio::task::spawn_blocking(move || self.proc.terminate(Duration::from_secs(10)))
            .await
            .ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let lat: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        let r = summarize(Op::Get, 1000, 1, lat, 0, 1.0);
        assert_eq!(r.latency_p50_us, 50.0);
        assert_eq!(r.latency_p99_us, 99.0);
        assert_eq!(r.ops_per_s, 100.0);
        assert!((r.throughput_gbps - 100_000.0 / 1e9).abs() < 1e-12);
    }
}
