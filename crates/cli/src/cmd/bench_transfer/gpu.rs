//! `--location cuda:N`: bench buffers in device memory, and the device's own
//! copy bandwidths measured in the same run (the limits the GPU transfers are
//! compared against: D2H/H2D for tcp staging, D2D for same-host CUDA IPC).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use mooncake_transfer::cuda::{self, DeviceBuf};
use mooncake_transfer::{ManagedBuffer, TransferEngine};
use serde::Serialize;

/// Where bench buffers live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Cpu,
    Cuda(i32),
}

pub fn parse_location(s: &str) -> Result<Location, String> {
    if s == "cpu" || s.starts_with("cpu:") {
        return Ok(Location::Cpu);
    }
    cuda::device_of_location(s)
        .map(Location::Cuda)
        .ok_or_else(|| format!("bad location {s:?} (cpu, cpu:N or cuda:N)"))
}

/// A bench buffer: a managed host buffer, or registered device memory.
pub enum Buf {
    Host(ManagedBuffer),
    Device(DeviceBuf),
}

impl Buf {
    pub fn addr(&self) -> usize {
        match self {
            Buf::Host(b) => b.addr(),
            Buf::Device(b) => b.addr(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Buf::Host(b) => b.len(),
            Buf::Device(b) => b.len(),
        }
    }
}

/// Allocate and register `len` bytes at `loc` with `engine`.
pub async fn alloc(engine: &Arc<TransferEngine>, len: usize, loc: Location) -> anyhow::Result<Buf> {
    match loc {
        Location::Cpu => Ok(Buf::Host(engine.allocate_managed_buffer(len).await?)),
        Location::Cuda(d) => {
            let e = cuda::engine().map_err(|why| anyhow::anyhow!("--location cuda:{d}: {why}"))?;
            let b = e
                .alloc_device(len, d)
                .with_context(|| format!("allocating {len} bytes on cuda:{d}"))?;
            // SAFETY: b is a live device allocation of len bytes, unregistered
            // (by `release`) before it is freed.
            unsafe { engine.register_memory(b.addr(), len, &b.location()).await }
                .with_context(|| format!("registering cuda:{d} memory"))?;
            Ok(Buf::Device(b))
        }
    }
}

/// Unregister (device memory) and free.
pub async fn release(engine: &Arc<TransferEngine>, buf: Buf) {
    if let Buf::Device(b) = &buf {
        let _ = engine.unregister_memory(b.addr()).await;
    }
    drop(buf);
}

/// Device copy bandwidths (GB/s = 10^9 bytes/s).
#[derive(Debug, Clone, Serialize)]
pub struct CudaBaseline {
    pub device: String,
    pub d2h_gbps: f64,
    pub h2d_gbps: f64,
    pub d2d_gbps: f64,
}

/// Measure D2H/H2D (pinned host memory) and D2D copies of `bytes` on `device`.
pub fn baseline(device: i32, bytes: usize) -> anyhow::Result<CudaBaseline> {
    let e = cuda::engine().map_err(|why| anyhow::anyhow!("{why}"))?;
    if e.is_standin() {
        bail!("no CUDA baseline with the host stand-in");
    }
    let a = e.alloc_device(bytes, device)?;
    let b = e.alloc_device(bytes, device)?;
    let host = e.alloc_pinned(bytes, device)?;
    let h = host.ptr() as usize;
    let reps = 8;
    let time = |dst: usize, src: usize| -> anyhow::Result<f64> {
        e.copy(dst, src, bytes, device)?; // warm-up
        e.synchronize(device)?;
        let t0 = Instant::now();
        for _ in 0..reps {
            e.copy(dst, src, bytes, device)?;
        }
        e.synchronize(device)?;
        Ok((bytes * reps) as f64 / t0.elapsed().as_secs_f64() / 1e9)
    };
    Ok(CudaBaseline {
        device: e.describe(),
        d2h_gbps: time(h, a.addr())?,
        h2d_gbps: time(a.addr(), h)?,
        d2d_gbps: time(b.addr(), a.addr())?,
    })
}
