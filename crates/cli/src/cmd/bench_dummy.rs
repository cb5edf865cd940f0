//! `mooncake bench dummy`: what dummy-client mode (`setup_dummy`) costs. One
//! real client in this process holds the segment and serves dummies; the same
//! objects are read with `get_into` by
//!
//! * `real`: the real client itself (its own segment: the floor),
//! * `separate`: an independent client with no segment (what a worker runs
//!   without dummy mode: its own engine, reads over shm/tcp),
//! * `dummy-pool`: a dummy into its shared pool (zero-copy; offsets on the socket),
//! * `dummy-copy`: a dummy into memory outside its pool (bytes through the socket).
//!
//! One read in flight per mode, then the same with four readers at once
//! (`x4`: four buffers; the dummy's calls spread over its connections); the
//! ratio column is against `real`. Without
//! `--master` it starts its own master (`mooncake up --segment-size 0`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mooncake_store::client::{Client, ClientConfig, Region};
use mooncake_store::client_service::{serve, DummyClient};
use mooncake_store::ReplicateConfig;
use serde::Serialize;

use mooncake_config::{parse_duration, parse_size};

use super::bench_store::OwnCluster;

/// Readers in the parallel rows.
const PARALLEL: usize = 4;

/// Flags of `mooncake bench dummy`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Size of each object read.
    #[arg(long, default_value = "1MiB", value_name = "SIZE", value_parser = parse_size)]
    pub value_size: u64,
    /// Objects read round-robin.
    #[arg(long, default_value_t = 64)]
    pub keys: u64,
    /// Time per mode.
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Duration,
    /// Master of a running cluster (default: start one).
    #[arg(long, requires = "metadata")]
    pub master: Option<String>,
    /// Metadata connection string of the running cluster.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One result row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub mode: String,
    pub value_size: u64,
    pub ops: u64,
    pub errors: u64,
    pub gbps: f64,
    pub p50_us: f64,
    pub vs_real: f64,
}

/// One reader: a client and the registered buffer it reads into.
#[derive(Clone)]
enum Reader {
    Client(Client, Region<'static>),
    Dummy(Arc<DummyClient>, Region<'static>),
}

impl Reader {
    async fn read(&self, key: &str) -> bool {
        match self {
            Reader::Client(c, r) => c.get_into(key, *r).await.is_ok(),
            Reader::Dummy(d, r) => d.get_into(key, *r).await.is_ok(),
        }
    }
}

/// Reads by every reader at once (one in flight each) for `d`.
async fn measure(
    mode: &str,
    readers: Vec<Reader>,
    keys: &Arc<Vec<String>>,
    size: u64,
    d: Duration,
) -> anyhow::Result<Row> {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (n, reader) in readers.into_iter().enumerate() {
        let keys = Arc::clone(keys);
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            let mut i = n * 7;
            while t0.elapsed() < d {
                let t = Instant::now();
                if reader.read(&keys[i % keys.len()]).await {
                    lat.push(t.elapsed().as_nanos() as u64);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    let p50 = lat.get(lat.len() / 2).copied().unwrap_or(0) as f64 / 1000.0;
    Ok(Row {
        mode: mode.into(),
        value_size: size,
        ops: lat.len() as u64,
        errors,
        gbps: (lat.len() as u64 * size) as f64 / secs / 1e9,
        p50_us: p50,
        vs_real: 0.0,
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let own = match &args.master {
        Some(_) => None,
        None => {
            // A fresh credential for the bench's own cluster, passed on to
            // the `mooncake up` child (and this process's clients) through
            // the environment, unless one is set there already.
            let (mode, _) = super::auth::AuthArgs::default().install_or_generate()?;
            let insecure = matches!(mode, mooncake_security::AuthMode::Insecure);
            Some(OwnCluster::start(0, insecure).await?)
        }
    };
    let (master, metadata) = match (&args.master, &args.metadata, &own) {
        (Some(m), Some(d), _) => (m.clone(), d.clone()),
        (_, _, Some(c)) => (c.master.clone(), c.metadata.clone()),
        _ => anyhow::bail!("--master needs --metadata"),
    };
    let size = args.value_size;
    let cfg = |segment: u64| ClientConfig {
        local_hostname: "127.0.0.1".into(),
        metadata_server: metadata.clone(),
        master_server_addr: master.clone(),
        global_segment_size: segment,
        local_buffer_size: (size * 2).max(16 << 20),
        ..ClientConfig::default()
    };
    let real = Client::connect(cfg(size * args.keys * 2 + (64 << 20)))
        .await
        .context("starting the real client")?;
    let service = serve(real.clone(), "127.0.0.1:0").await?;
    let addr = service.local_addr().to_string();
    let separate = Client::connect(cfg(0)).await.context("separate client")?;
    let dummy = Arc::new(
        DummyClient::connect(&addr, size * (PARALLEL as u64 + 1))
            .await
            .context("dummy client")?,
    );

    let run: u32 = rand::random();
    let keys: Vec<String> = (0..args.keys)
        .map(|i| format!("bench-dummy-{run}-{i}"))
        .collect();
    let keys = Arc::new(keys);
    let value: Vec<u8> = (0..size as usize).map(|i| (i % 251) as u8).collect();
    for k in keys.iter() {
        real.put(k, &value, &ReplicateConfig::default()).await?;
    }

    let len = size as usize;
    // Buffers stay alive (in these vectors) until every read is done.
    let mut managed = Vec::new();
    for _ in 0..PARALLEL {
        managed.push(real.allocate_buffer(len).await?);
    }
    let sep_buf = separate.allocate_buffer(len).await?;
    let pool: Vec<usize> = (0..PARALLEL)
        .map(|_| dummy.alloc(len).context("pool buffer"))
        .collect::<anyhow::Result<_>>()?;
    let mut heap = vec![0u8; len];
    // SAFETY (all regions below): each names a live buffer of `len` bytes —
    // managed buffers and the heap vector outlive the measurement, pool
    // buffers live as long as `dummy` — registered with the client (or in
    // the dummy's pool / copied into by the dummy) that reads into it.
    let region = |addr: usize| unsafe { Region::from_raw(addr, len) };
    let real_readers: Vec<Reader> = managed
        .iter()
        .map(|b| Reader::Client(real.clone(), region(b.addr())))
        .collect();
    let dummy_readers: Vec<Reader> = pool
        .iter()
        .map(|&p| Reader::Dummy(Arc::clone(&dummy), region(p)))
        .collect();
    let d = args.duration;
    let par = format!("x{PARALLEL}");
    let mut rows = vec![
        measure("real", real_readers[..1].to_vec(), &keys, size, d).await?,
        measure(
            "separate",
            vec![Reader::Client(separate.clone(), region(sep_buf.addr()))],
            &keys,
            size,
            d,
        )
        .await?,
        measure("dummy-pool", dummy_readers[..1].to_vec(), &keys, size, d).await?,
        measure(
            "dummy-copy",
            vec![Reader::Dummy(
                Arc::clone(&dummy),
                region(heap.as_mut_ptr() as usize),
            )],
            &keys,
            size,
            d,
        )
        .await?,
        measure(&format!("real {par}"), real_readers, &keys, size, d).await?,
        measure(&format!("dummy-pool {par}"), dummy_readers, &keys, size, d).await?,
    ];
    // The last reads must have landed whole.
    for &p in &pool {
        // SAFETY: a pool buffer of `len` bytes; no read is in flight now.
        let got = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
        anyhow::ensure!(got == value.as_slice(), "dummy-pool read back wrong bytes");
    }
    anyhow::ensure!(heap == value, "dummy-copy read back wrong bytes");
    let base = rows[0].gbps;
    for r in &mut rows {
        r.vs_real = if base > 0.0 { r.gbps / base } else { 0.0 };
    }

    for k in keys.iter() {
        real.remove(k, true).await.ok();
    }
    dummy.close().await;
    separate.close().await.ok();
    drop(service);
    real.close().await.ok();
    if let Some(c) = own {
        c.stop().await;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<11} {:>9} {:>8} {:>8} {:>9} {:>9} {:>7}",
            "mode", "value", "ops", "GB/s", "p50 µs", "vs real", "errors"
        );
        for r in &rows {
            println!(
                "{:<11} {:>9} {:>8} {:>8.3} {:>9.1} {:>9.2} {:>7}",
                r.mode, r.value_size, r.ops, r.gbps, r.p50_us, r.vs_real, r.errors
            );
        }
    }
    Ok(())
}
