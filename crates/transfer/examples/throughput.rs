//! Loopback throughput sanity check: two engines in one process, one target
//! buffer, `threads` tasks each submitting batches of `batch` blocks.
//!
//! ```text
//! cargo run --release -p mooncake-transfer --example throughput -- [tcp|shm] [write|read] [block KiB] [batch] [threads] [seconds]
//! cargo run --release -p mooncake-transfer --example throughput -- memcpy
//! ```
//! Prints GB/s (10^9 bytes per second). Not a benchmark of record: see
//! `mooncake bench transfer` for that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mooncake_transfer::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), TransferError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let protocol: Protocol = match arg(0, "tcp").as_str() {
        "memcpy" => Protocol::Tcp,
        p => p.parse()?,
    };
    let opcode: Opcode = arg(1, "write").parse()?;
    let block: usize = arg(2, "1024").parse::<usize>().expect("block KiB") << 10;
    let batch: usize = arg(3, "16").parse().expect("batch");
    let threads: usize = arg(4, "1").parse().expect("threads");
    let seconds: f64 = arg(5, "3").parse().expect("seconds");

    let mut config = TransferEngineConfig {
        protocols: vec![protocol],
        ..Default::default()
    };
    // MC_SLICE_SIZE, MC_CONNECTIONS_PER_PEER, ... for experiments.
    config.apply_env()?;
    if std::env::args().nth(1).as_deref() == Some("memcpy") {
        memcpy_baseline();
        return Ok(());
    }
    let target = TransferEngine::start(config.clone()).await?;
    let initiator = TransferEngine::start(config).await?;
    let span = block * batch;
    let remote = target.allocate_managed_buffer(span * threads).await?;
    let local = initiator.allocate_managed_buffer(span * threads).await?;
    let handle = initiator.open_segment(target.segment_name()).await?;
    let bytes = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..threads {
        let (initiator, handle, bytes) =
            (Arc::clone(&initiator), handle.clone(), Arc::clone(&bytes));
        let (src, dst) = (
            local.addr() + t * span,
            remote.addr() as u64 + (t * span) as u64,
        );
        tasks.push(tokio::spawn(async move {
            let requests: Vec<TransferRequest> = (0..batch)
                .map(|i| TransferRequest {
                    opcode,
                    source: src + i * block,
                    target: handle.clone(),
                    target_offset: dst + (i * block) as u64,
                    length: block,
                })
                .collect();
            while Instant::now() < stop_at {
                initiator.transfer(&requests).await?;
                bytes.fetch_add(span as u64, Ordering::Relaxed);
            }
            Ok::<_, TransferError>(())
        }));
    }
    for t in tasks {
        t.await.expect("task panicked")?;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = bytes.load(Ordering::Relaxed) as f64;
    println!(
        "{protocol} {opcode:?} block={}KiB batch={batch} threads={threads}: {:.2} GB/s ({:.0} MB in {secs:.2}s)",
        block >> 10,
        total / secs / 1e9,
        total / 1e6
    );
    initiator.shutdown().await;
    target.shutdown().await;
    Ok(())
}

/// Single-threaded memcpy bandwidth over 1 GiB (pages touched first).
fn memcpy_baseline() {
    let len = 1 << 30;
    let src: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let mut dst = vec![0u8; len];
    dst.copy_from_slice(&src);
    let start = Instant::now();
    let rounds = 4;
    for _ in 0..rounds {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("memcpy: {:.2} GB/s", (len * rounds) as f64 / secs / 1e9);
}
