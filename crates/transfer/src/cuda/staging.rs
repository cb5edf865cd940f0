//! Staging device memory through pinned host buffers, double-buffered so the
//! device copy of one chunk overlaps the socket I/O of the previous one.
//!
//! A [`Stager`] is one copy stream plus two pinned chunks; stagers are pooled
//! per device and checked out for one slice at a time (so every concurrent
//! slice — every tcp connection — has its own stream).
//!
//! Invariants:
//! - A device byte is only ever touched by the copy engine, never by the CPU:
//!   the socket reads and writes the pinned chunks.
//! - A stager returns to the pool (or is freed) only after its stream is idle,
//!   even when the slice's future is dropped mid-way (timeout): no DMA
//!   outlives the lease on the memory it reads or writes.

use std::sync::OnceLock;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{engine, CopyEngine, CopyStream, PinnedBuf};
use crate::TransferError;

/// Bytes per staging chunk (two per stager).
pub const CHUNK: usize = 512 << 10;

/// Idle stagers kept per process; more may exist while busy.
const MAX_IDLE: usize = 64;

/// One stream and its two pinned chunks.
pub struct Stager {
    device: i32,
    stream: Box<dyn CopyStream>,
    bufs: [PinnedBuf; 2],
    /// False after an error: the stager is dropped, not pooled.
    healthy: bool,
}

impl Stager {
    fn new(e: &'static dyn CopyEngine, device: i32) -> Result<Stager, TransferError> {
        Ok(Stager {
            device,
            stream: e.stream(device)?,
            bufs: [
                e.alloc_pinned(CHUNK, device)?,
                e.alloc_pinned(CHUNK, device)?,
            ],
            healthy: true,
        })
    }

    /// Block this thread until the stream is idle (drop paths only).
    fn drain_blocking(&mut self) {
        while let Ok(false) = self.stream.query() {
            std::hint::spin_loop();
        }
    }

    /// Wait, yielding to other tasks, until every enqueued copy finished.
    async fn idle(&mut self) -> Result<(), TransferError> {
        loop {
            match self.stream.query() {
                Ok(true) => return Ok(()),
                Ok(false) => tokio::task::yield_now().await,
                Err(e) => {
                    self.healthy = false;
                    return Err(e);
                }
            }
        }
    }
}

fn pool() -> &'static Mutex<Vec<Stager>> {
    static POOL: OnceLock<Mutex<Vec<Stager>>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(Vec::new()))
}

/// A checked-out stager; back to the pool on drop, once its stream is idle.
pub struct StagerGuard(Option<Stager>);

impl Drop for StagerGuard {
    fn drop(&mut self) {
        if let Some(mut s) = self.0.take() {
            s.drain_blocking();
            let mut p = pool().lock();
            if s.healthy && p.len() < MAX_IDLE {
                p.push(s);
            }
        }
    }
}

impl std::ops::Deref for StagerGuard {
    type Target = Stager;
    fn deref(&self) -> &Stager {
        self.0.as_ref().expect("stager present until drop")
    }
}

impl std::ops::DerefMut for StagerGuard {
    fn deref_mut(&mut self) -> &mut Stager {
        self.0.as_mut().expect("stager present until drop")
    }
}

/// A stager for `device` (pooled, or new).
pub fn checkout(device: i32) -> Result<StagerGuard, TransferError> {
    let e = engine().map_err(|why| TransferError::Cuda(why.to_string()))?;
    let found = {
        let mut p = pool().lock();
        p.iter()
            .position(|s| s.device == device)
            .map(|i| p.swap_remove(i))
    };
    Ok(StagerGuard(Some(match found {
        Some(s) => s,
        None => Stager::new(e, device)?,
    })))
}

fn chunk(len: usize, k: usize) -> (usize, usize) {
    let off = k * CHUNK;
    (off, CHUNK.min(len - off))
}

/// Send `len` bytes of device memory at `src` (on `device`) to `w`.
pub async fn device_to_writer<W: AsyncWrite + Unpin>(
    w: &mut W,
    src: usize,
    len: usize,
    device: i32,
) -> Result<(), TransferError> {
    if len == 0 {
        return Ok(());
    }
    let mut g = checkout(device)?;
    let n = len.div_ceil(CHUNK);
    let first = chunk(len, 0).1;
    let p0 = g.bufs[0].ptr();
    g.stream.d2h(p0, src, first)?;
    // (Raw pointers are not held across awaits: the future must be Send.)
    for k in 0..n {
        g.idle().await?;
        if k + 1 < n {
            let (off, c) = chunk(len, k + 1);
            let p = g.bufs[(k + 1) % 2].ptr();
            g.stream.d2h(p, src + off, c)?;
        }
        let c = chunk(len, k).1;
        // SAFETY: chunk k has landed in bufs[k % 2] (the stream was idle after
        // it was enqueued) and nothing writes that buffer until chunk k + 2,
        // which is enqueued only after this write finished.
        let data = unsafe { std::slice::from_raw_parts(g.bufs[k % 2].ptr(), c) };
        w.write_all(data).await?;
    }
    Ok(())
}

/// Receive exactly `len` bytes from `r` into device memory at `dst`.
pub async fn reader_to_device<R: AsyncRead + Unpin>(
    r: &mut R,
    dst: usize,
    len: usize,
    device: i32,
) -> Result<(), TransferError> {
    if len == 0 {
        return Ok(());
    }
    let mut g = checkout(device)?;
    let n = len.div_ceil(CHUNK);
    for k in 0..n {
        let (off, c) = chunk(len, k);
        // SAFETY: bufs[k % 2] last fed chunk k - 2, whose copy finished before
        // chunk k - 1 was enqueued (we wait for an idle stream each time).
        let buf = unsafe { std::slice::from_raw_parts_mut(g.bufs[k % 2].ptr(), c) };
        r.read_exact(buf).await?;
        g.idle().await?;
        let p = g.bufs[k % 2].ptr();
        g.stream.h2d(dst + off, p, c)?;
    }
    g.idle().await
}

/// Synchronous copy of `len` bytes where either side may be device memory
/// (`None` = host). Host-to-host is a plain memmove.
///
/// # Safety
/// Both ranges are valid (leased) for `len` bytes.
pub unsafe fn copy(
    dst: usize,
    dst_device: Option<i32>,
    src: usize,
    src_device: Option<i32>,
    len: usize,
) -> Result<(), TransferError> {
    match dst_device.or(src_device) {
        None => {
            // SAFETY: caller contract; memmove tolerates overlap.
            unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, len) };
            Ok(())
        }
        Some(d) => engine()
            .map_err(|why| TransferError::Cuda(why.to_string()))?
            .copy(dst, src, len, d),
    }
}
