//! `mooncake bench transfer`: throughput and per-batch latency of the Transfer
//! Engine, comparable with the reference's `transfer_engine_bench`.
//!
//! Modes: `both` (default) starts a target and an initiator engine in this process;
//! `target` serves a buffer until interrupted; `initiator` drives a target started
//! elsewhere (`--segment-id`, `--metadata`). Each initiator thread owns a disjoint
//! `batch_size × block_size` window of the local and the remote buffer and submits
//! whole batches back to back until the duration ends; a batch's latency is from
//! submission to its last completion. `--protocol memcpy` measures plain memory
//! copies with the same loop (the machine limit shm is compared against).
//!
//! Throughput is GB/s = 10^9 bytes per second over the measured interval.

mod gpu;
mod stats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mooncake_transfer::transport::file::FileTransport;
use mooncake_transfer::{
    Opcode, Protocol, SegmentHandle, TransferEngine, TransferEngineConfig, TransferRequest,
};

use mooncake_config::{format_size, parse_duration, parse_size_usize};
use stats::{gbps, merge, percentile, Report, ThreadStats};

/// What to measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchProtocol {
    Tcp,
    Shm,
    File,
    /// RDMA verbs (a `mooncake` built with `--features rdma`, and an RDMA device).
    Rdma,
    /// Plain memcpy between two buffers (machine limit; no engine).
    Memcpy,
}

impl BenchProtocol {
    fn name(self) -> &'static str {
        match self {
            BenchProtocol::Tcp => "tcp",
            BenchProtocol::Shm => "shm",
            BenchProtocol::File => "file",
            BenchProtocol::Rdma => "rdma",
            BenchProtocol::Memcpy => "memcpy",
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchOp {
    Read,
    Write,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Both,
    Target,
    Initiator,
}

/// Flags of `mooncake bench transfer`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Transport to measure.
    #[arg(long, value_enum, default_value = "tcp")]
    pub protocol: BenchProtocol,
    /// `write`: local → target; `read`: target → local.
    #[arg(long, value_enum, default_value = "write")]
    pub op: BenchOp,
    /// Bytes per request ("1MiB", "64KiB", "1048576").
    #[arg(long, default_value = "1MiB", value_name = "SIZE", value_parser = parse_size_usize)]
    pub block_size: usize,
    /// Requests per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Initiator threads, each with its own batch.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// How long to measure ("10s", "500ms").
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Duration,
    /// Print one JSON object instead of the table (no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Run target and initiator here (`both`), or one side of a two-process run.
    #[arg(long, value_enum, default_value = "both")]
    pub mode: Mode,
    /// Metadata connection string (`embedded` only works with `--mode both`).
    #[arg(long, default_value = "embedded")]
    pub metadata: String,
    /// Segment name of the target (initiator mode).
    #[arg(long)]
    pub segment_id: Option<String>,
    /// This engine's segment name, `host` or `host:port` (port 0/absent: any free port).
    #[arg(long, default_value = "127.0.0.1")]
    pub local_hostname: String,
    /// Size of the target's (and the initiator's) buffer; default: just enough for
    /// every thread's window.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_usize)]
    pub buffer_size: Option<usize>,
    /// File protocol: the file (or block device) to register as the target segment;
    /// default a fresh file under /var/tmp (a real disk: /tmp may be tmpfs, where
    /// O_DIRECT is unavailable), removed afterwards.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Where both sides' buffers live: `cpu` (managed host buffers) or `cuda:N`
    /// (device memory; the report adds the device's D2H/H2D/D2D copy bandwidth
    /// measured in the same run).
    #[arg(long, default_value = "cpu", value_parser = gpu::parse_location)]
    pub location: gpu::Location,
    /// `--cluster-token` / `--insecure` (default with `--mode both`: a fresh
    /// credential for this run, so the measurement includes the handshake).
    #[command(flatten)]
    pub auth: super::auth::AuthArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    validate(&args)?;
    if args.mode == Mode::Both {
        args.auth.install_or_generate()?;
    } else {
        args.auth.install()?;
    }
    let mut report = match (args.protocol, args.mode) {
        (BenchProtocol::Memcpy, _) => run_memcpy(&args).await?,
        (_, Mode::Target) => return run_target(&args).await,
        (_, Mode::Both) => run_both(&args).await?,
        (_, Mode::Initiator) => run_initiator_only(&args).await?,
    };
    if let gpu::Location::Cuda(d) = args.location {
        let bytes = buffer_size(&args)?.clamp(1 << 20, 256 << 20);
        report.cuda = Some(tokio::task::spawn_blocking(move || gpu::baseline(d, bytes)).await??);
    }
    print_report(&args, &report)
}

fn validate(args: &Args) -> anyhow::Result<()> {
    if args.block_size == 0 || args.batch_size == 0 || args.threads == 0 {
        bail!("--block-size, --batch-size and --threads must be positive");
    }
    if args.protocol == BenchProtocol::File && args.mode != Mode::Both {
        bail!("--protocol file runs in one process (--mode both): the file segment is local");
    }
    if args.location != gpu::Location::Cpu
        && matches!(args.protocol, BenchProtocol::File | BenchProtocol::Memcpy)
    {
        bail!("--location cuda:N applies to --protocol tcp and shm");
    }
    if args.mode != Mode::Both && args.metadata == "embedded" {
        bail!("--mode target/initiator need a shared --metadata (e.g. http://127.0.0.1:8080/metadata)");
    }
    Ok(())
}

/// Bytes one thread's window spans.
fn window(args: &Args) -> anyhow::Result<usize> {
    args.block_size
        .checked_mul(args.batch_size)
        .context("block size × batch size overflows")
}

fn buffer_size(args: &Args) -> anyhow::Result<usize> {
    let need = window(args)?
        .checked_mul(args.threads)
        .context("buffer size overflows")?;
    Ok(args.buffer_size.unwrap_or(need))
}

fn protocols(p: BenchProtocol) -> Vec<Protocol> {
    match p {
        BenchProtocol::Tcp => vec![Protocol::Tcp],
        BenchProtocol::Shm => vec![Protocol::Shm, Protocol::Tcp],
        BenchProtocol::File => vec![Protocol::File],
        BenchProtocol::Rdma => vec![Protocol::Rdma],
        BenchProtocol::Memcpy => vec![],
    }
}

async fn start_engine(args: &Args, hostname: &str) -> anyhow::Result<Arc<TransferEngine>> {
    // Tuning knobs come from the reference's environment variables
    // (MC_SLICE_SIZE, MC_CONNECTIONS_PER_PEER, ...); the flags decide the rest.
    let mut config = TransferEngineConfig::default();
    config
        .apply_env()
        .context("reading MC_* environment variables")?;
    config.local_hostname = hostname.to_string();
    config.metadata_server = args.metadata.clone();
    config.protocols = protocols(args.protocol);
    args.auth.apply_to_engine(&mut config);
    TransferEngine::start(config)
        .await
        .with_context(|| format!("starting a transfer engine as {hostname}"))
}

/// The target: an engine with one buffer, serving until Ctrl-C.
async fn run_target(args: &Args) -> anyhow::Result<()> {
    let engine = start_engine(args, &args.local_hostname).await?;
    let len = buffer_size(args)?;
    let buffer = gpu::alloc(&engine, len, args.location).await?;
    eprintln!(
        "target segment {} serving a {} buffer at {:#x}; Ctrl-C or SIGTERM to stop",
        engine.segment_name(),
        format_size(len as u64),
        buffer.addr()
    );
    // Scripts read this line to learn the segment name.
    println!("{}", engine.segment_name());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    gpu::release(&engine, buffer).await;
    engine.shutdown().await;
    Ok(())
}

/// Initiator against a target in another process.
async fn run_initiator_only(args: &Args) -> anyhow::Result<Report> {
    let segment = args
        .segment_id
        .clone()
        .context("--mode initiator needs --segment-id (the target's segment name)")?;
    let engine = start_engine(args, &args.local_hostname).await?;
    let target = engine
        .open_segment(&segment)
        .await
        .with_context(|| format!("opening segment {segment}"))?;
    let remote_base = target
        .descriptor()
        .buffers
        .first()
        .map(|b| b.addr)
        .with_context(|| format!("segment {segment} has no registered buffer"))?;
    let local = gpu::alloc(&engine, buffer_size(args)?, args.location).await?;
    let report = drive(args, &engine, &local, &target, remote_base, None).await;
    gpu::release(&engine, local).await;
    engine.shutdown().await;
    report
}

/// Target and initiator in this process.
async fn run_both(args: &Args) -> anyhow::Result<Report> {
    let len = buffer_size(args)?;
    let target_engine = start_engine(args, &args.local_hostname).await?;
    let initiator = if args.protocol == BenchProtocol::File {
        // A file segment is reached from the engine that knows the host; one engine suffices.
        target_engine.clone()
    } else {
        start_engine(args, &args.local_hostname).await?
    };
    let local = if args.protocol == BenchProtocol::File {
        gpu::Buf::Host(initiator.allocate_managed_buffer(len).await?)
    } else {
        gpu::alloc(&initiator, len, args.location).await?
    };
    let mut temp_file = None;
    let (target, remote_base, target_buffer, direct) = if args.protocol == BenchProtocol::File {
        let path = match &args.file {
            Some(p) => p.clone(),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("mooncake-bench-")
                    .tempdir_in("/var/tmp")
                    .context("creating a temporary directory under /var/tmp")?;
                let p = dir.path().join("segment");
                temp_file = Some(dir);
                p
            }
        };
        let name = format!("{}-file-bench", target_engine.segment_name());
        let file = target_engine
            .register_file_segment(&name, &path, Some(len as u64), true)
            .await
            .with_context(|| format!("registering {} as a file segment", path.display()))?;
        let direct = target_engine.transport(Protocol::File).and_then(|t| {
            t.as_any()
                .downcast_ref::<FileTransport>()
                .and_then(|f| f.direct_io(&name))
        });
        // Reads need data on the file: fill it once (not measured).
        if args.op == BenchOp::Read {
            fill_file(&initiator, &local, &file, len).await?;
        }
        (file, 0u64, None, direct)
    } else {
        let buffer = gpu::alloc(&target_engine, len, args.location).await?;
        let handle = initiator.open_segment(target_engine.segment_name()).await?;
        (handle, buffer.addr() as u64, Some(buffer), None)
    };
    let report = drive(args, &initiator, &local, &target, remote_base, direct).await;
    gpu::release(&initiator, local).await;
    if let Some(b) = target_buffer {
        gpu::release(&target_engine, b).await;
    }
    initiator.shutdown().await;
    target_engine.shutdown().await;
    drop(temp_file);
    report
}

async fn fill_file(
    engine: &Arc<TransferEngine>,
    local: &gpu::Buf,
    file: &SegmentHandle,
    len: usize,
) -> anyhow::Result<()> {
    let chunk = local.len().clamp(1, 64 << 20);
    let mut off = 0usize;
    while off < len {
        let n = chunk.min(len - off);
        engine
            .transfer(&[TransferRequest {
                opcode: Opcode::Write,
                source: local.addr(),
                target: file.clone(),
                target_offset: off as u64,
                length: n,
            }])
            .await
            .context("filling the file segment before the read bench")?;
        off += n;
    }
    Ok(())
}

/// Run `threads` initiator loops for the duration and summarise them.
async fn drive(
    args: &Args,
    engine: &Arc<TransferEngine>,
    local: &gpu::Buf,
    target: &SegmentHandle,
    remote_base: u64,
    direct_io: Option<bool>,
) -> anyhow::Result<Report> {
    let win = window(args)?;
    let local_len = local.len();
    let remote_len = buffer_size(args)?;
    if win > local_len.min(remote_len) {
        bail!(
            "one batch needs {} but the buffer holds {}",
            format_size(win as u64),
            format_size(local_len.min(remote_len) as u64)
        );
    }
    let opcode = match args.op {
        BenchOp::Read => Opcode::Read,
        BenchOp::Write => Opcode::Write,
    };
    let progress = Progress::start(args);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = Vec::new();
    let slots = local_len.min(remote_len) / win;
    let args_threads = args.threads;
    // Files are read and written the way a sequential reader would: every batch
    // takes the next window, so the device sees the whole file rather than the
    // same few blocks again. Memory keeps one window per thread (as the reference's
    // bench does).
    let walk = args.protocol == BenchProtocol::File;
    for t in 0..args.threads {
        let local_base = local.addr();
        let (target, block, batch) = (target.clone(), args.block_size, args.batch_size);
        let make = move |slot: usize| -> Vec<TransferRequest> {
            (0..batch)
                .map(|i| TransferRequest {
                    opcode,
                    source: local_base + slot * win + i * block,
                    target: target.clone(),
                    target_offset: remote_base + (slot * win + i * block) as u64,
                    length: block,
                })
                .collect()
        };
        let engine = engine.clone();
        let bytes_done = progress.bytes.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = ThreadStats::default();
            let batch_bytes = (batch * block) as u64;
            // Windows wrap when the buffers are smaller than threads × window.
            let mut slot = t % slots;
            let mut requests = make(slot);
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                if walk {
                    requests = make(slot);
                    slot = (slot + args_threads) % slots;
                }
                let t0 = Instant::now();
                match engine.transfer(&requests).await {
                    Ok(()) => {
                        stats.record(batch_bytes, t0.elapsed());
                        bytes_done.fetch_add(batch_bytes, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.failed_batches += 1;
                        stop.store(true, Ordering::Relaxed);
                        return Err(anyhow::Error::from(e).context("transfer batch failed"));
                    }
                }
            }
            Ok(stats)
        }));
    }
    let mut results = Vec::new();
    let mut first_err = None;
    for t in tasks {
        match t.await.context("bench thread panicked")? {
            Ok(s) => results.push(s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(summarise(args, results, seconds, direct_io))
}

fn summarise(
    args: &Args,
    results: Vec<ThreadStats>,
    seconds: f64,
    direct_io: Option<bool>,
) -> Report {
    let (bytes, batches, failed, lat) = merge(results);
    Report {
        protocol: args.protocol.name().to_string(),
        op: match args.op {
            BenchOp::Read => "read",
            BenchOp::Write => "write",
        }
        .to_string(),
        mode: format!("{:?}", args.mode).to_lowercase(),
        block_size: args.block_size,
        batch_size: args.batch_size,
        threads: args.threads,
        bytes,
        seconds,
        throughput_gbps: gbps(bytes, seconds),
        batches,
        failed_batches: failed,
        latency_p50_us: percentile(&lat, 50.0),
        latency_p99_us: percentile(&lat, 99.0),
        latency_max_us: lat.last().copied().unwrap_or(0),
        direct_io,
        location: match args.location {
            gpu::Location::Cpu => "cpu".into(),
            gpu::Location::Cuda(d) => format!("cuda:{d}"),
        },
        cuda: None,
    }
}

/// `--protocol memcpy`: the same loop over plain copies between two buffers, one
/// OS thread per bench thread (the machine limit shm is measured against).
async fn run_memcpy(args: &Args) -> anyhow::Result<Report> {
    let win = window(args)?;
    let progress = Progress::start(args);
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..args.threads {
        let (block, batch) = (args.block_size, args.batch_size);
        let bytes_done = progress.bytes.clone();
        handles.push(std::thread::spawn(move || {
            // Touch every page first so page faults are not measured.
            let src = vec![0x5au8; win];
            let mut dst = vec![0u8; win];
            let mut stats = ThreadStats::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                for i in 0..batch {
                    let r = i * block..(i + 1) * block;
                    dst[r.clone()].copy_from_slice(&src[r]);
                }
                std::hint::black_box(&mut dst);
                stats.record(win as u64, t0.elapsed());
                bytes_done.fetch_add(win as u64, Ordering::Relaxed);
            }
            stats
        }));
    }
    let results = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .map(|h| h.join().expect("memcpy thread panicked"))
            .collect::<Vec<_>>()
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();
    Ok(summarise(args, results, seconds, None))
}

fn print_report(args: &Args, r: &Report) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    println!(
        "protocol {} op {} block {} batch {} threads {} mode {}{}",
        r.protocol,
        r.op,
        format_size(r.block_size as u64),
        r.batch_size,
        r.threads,
        r.mode,
        match r.direct_io {
            Some(true) => " (O_DIRECT)",
            Some(false) => " (buffered: O_DIRECT unavailable)",
            None => "",
        }
    );
    println!(
        "  {:.3} GB/s  ({} bytes in {:.2} s, {} batches)",
        r.throughput_gbps, r.bytes, r.seconds, r.batches
    );
    println!(
        "  batch latency p50 {} us  p99 {} us  max {} us",
        r.latency_p50_us, r.latency_p99_us, r.latency_max_us
    );
    if let Some(c) = &r.cuda {
        println!(
            "  buffers on {}; same-run device copies: D2H {:.2} GB/s  H2D {:.2} GB/s  D2D {:.2} GB/s ({})",
            r.location, c.d2h_gbps, c.h2d_gbps, c.d2d_gbps, c.device
        );
    }
    Ok(())
}

/// Progress bar on stderr, ticking with the bytes moved so far (hidden with --json).
struct Progress {
    bytes: Arc<AtomicU64>,
    bar: indicatif::ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(args: &Args) -> Self {
        let bytes = Arc::new(AtomicU64::new(0));
        let total_ms = args.duration.as_millis() as u64;
        let bar = if args.json {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total_ms),
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        };
        let ticker = (!args.json).then(|| {
            let bar = bar.clone();
            let bytes = bytes.clone();
            let started = Instant::now();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let el = started.elapsed();
                    bar.set_position((el.as_millis() as u64).min(total_ms));
                    let b = bytes.load(Ordering::Relaxed);
                    bar.set_message(format!(
                        "{:.2} GB/s, {:.1} s",
                        gbps(b, el.as_secs_f64()),
                        el.as_secs_f64()
                    ));
                }
            })
        });
        Self { bytes, bar, ticker }
    }

    fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
