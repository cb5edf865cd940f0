//! GPU memory on the data path: what a registered pointer is, and how bytes
//! get in and out of device memory without the CPU ever dereferencing it.
//!
//! This module owns the **memory-kind decision**. Registration calls
//! [`resolve_location`] once; the answer is the region's location string
//! (`cpu:0`, `cuda:0`, ... as the reference spells them), and transports ask
//! [`device_of_location`] (through `RegionInfo::device` / `Lease::device`)
//! whether a range is device memory. A later GPUDirect RDMA path asks the
//! same question.
//!
//! CUDA is optional at build and run time: [`engine`] loads `libcuda.so.1`
//! on first use ([`driver`]); without it there is no copy engine, host
//! memory works as before, and a registration that says `cuda:*` is refused.
//!
//! The [`CopyEngine`] trait is the only way device bytes move: the CUDA
//! driver implements it, and so does [`standin::HostStandIn`], a test double
//! whose "device memory" is host memory. Tests install the stand-in with
//! [`install_host_standin`] to drive the very same staging, shm and local
//! code paths on machines without a GPU (this proves the plumbing, not the
//! GPU).

pub mod driver;
pub mod staging;
pub mod standin;

use std::sync::OnceLock;

use crate::TransferError;

/// What a pointer is, as the driver classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerKind {
    /// Pageable host memory (unknown to CUDA).
    Host,
    /// Page-locked host memory (cuMemHostAlloc / cudaHostRegister).
    PinnedHost,
    /// Device memory of this ordinal.
    Device(i32),
    /// Managed (unified) memory, preferred on this ordinal; CPU-accessible.
    Managed(i32),
    /// The copy engine cannot tell (the host stand-in): trust the caller.
    Unknown,
}

/// A CUDA IPC export of (the allocation around) a device buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcHandle {
    /// The 64-byte `CUipcMemHandle` of the allocation.
    pub handle: Vec<u8>,
    /// Offset of the registered buffer inside the allocation.
    pub offset: u64,
    pub alloc_len: u64,
    pub device: i32,
}

/// Page-locked host memory for staging; freed on drop.
pub struct PinnedBuf {
    ptr: *mut u8,
    len: usize,
    free: Box<dyn Fn(*mut u8) + Send + Sync>,
}

// SAFETY: plain host memory owned by this value.
unsafe impl Send for PinnedBuf {}
// SAFETY: shared access only through &self methods returning raw pointers.
unsafe impl Sync for PinnedBuf {}

impl PinnedBuf {
    pub fn new(ptr: *mut u8, len: usize, free: impl Fn(*mut u8) + Send + Sync + 'static) -> Self {
        PinnedBuf {
            ptr,
            len,
            free: Box::new(free),
        }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        (self.free)(self.ptr)
    }
}

impl std::fmt::Debug for PinnedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedBuf({:p}+{})", self.ptr, self.len)
    }
}

/// Device memory (tests, benchmarks, `mooncake bench --location cuda:N`);
/// freed on drop.
pub struct DeviceBuf {
    addr: usize,
    len: usize,
    device: i32,
    free: Box<dyn Fn(usize) + Send + Sync>,
}

impl DeviceBuf {
    pub fn new(
        addr: usize,
        len: usize,
        device: i32,
        free: impl Fn(usize) + Send + Sync + 'static,
    ) -> Self {
        DeviceBuf {
            addr,
            len,
            device,
            free: Box::new(free),
        }
    }

    pub fn addr(&self) -> usize {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn device(&self) -> i32 {
        self.device
    }

    /// The reference's location string of this buffer.
    pub fn location(&self) -> String {
        format!("cuda:{}", self.device)
    }
}

impl Drop for DeviceBuf {
    fn drop(&mut self) {
        (self.free)(self.addr)
    }
}

impl std::fmt::Debug for DeviceBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuf(cuda:{} {:#x}+{})",
            self.device, self.addr, self.len
        )
    }
}

/// One ordered queue of asynchronous copies (a CUDA stream).
pub trait CopyStream: Send {
    /// Enqueue device `src` → host `dst` (pinned, owned by the caller until
    /// [`query`](Self::query) says done).
    fn d2h(&mut self, dst: *mut u8, src: usize, len: usize) -> Result<(), TransferError>;
    /// Enqueue host `src` → device `dst`.
    fn h2d(&mut self, dst: usize, src: *const u8, len: usize) -> Result<(), TransferError>;
    /// Whether every enqueued copy has finished.
    fn query(&mut self) -> Result<bool, TransferError>;
}

/// Moves bytes to and from device memory. See the module docs.
pub trait CopyEngine: Send + Sync + std::fmt::Debug {
    /// One line for `mooncake info`.
    fn describe(&self) -> String;
    fn device_count(&self) -> i32;
    /// True for the host stand-in (tests).
    fn is_standin(&self) -> bool;
    fn classify(&self, addr: usize) -> PointerKind;
    /// `(base, len)` of the allocation holding device address `addr`.
    fn allocation_range(&self, addr: usize, device: i32) -> Result<(usize, usize), TransferError>;
    /// Synchronous copy where either side may be device memory.
    fn copy(&self, dst: usize, src: usize, len: usize, device: i32) -> Result<(), TransferError>;
    fn stream(&'static self, device: i32) -> Result<Box<dyn CopyStream>, TransferError>;
    /// Page-locked host memory, allocated in `device`'s context (usable by all).
    fn alloc_pinned(&'static self, len: usize, device: i32) -> Result<PinnedBuf, TransferError>;
    /// Zero-filled device memory.
    fn alloc_device(&'static self, len: usize, device: i32) -> Result<DeviceBuf, TransferError>;
    /// Wait for all work on `device`.
    fn synchronize(&self, device: i32) -> Result<(), TransferError>;
    /// Wait for the work queued so far on a caller's stream (a raw
    /// `CUstream`/`cudaStream_t`, e.g. torch's `stream.cuda_stream`; 0 is the
    /// default stream).
    fn synchronize_stream(&self, stream: usize, device: i32) -> Result<(), TransferError>;
    fn ipc_handle(&self, addr: usize, device: i32) -> Result<IpcHandle, TransferError>;
    /// Map a peer's allocation; returns its base address in this process.
    fn ipc_open(&self, handle: &[u8], device: i32) -> Result<usize, TransferError>;
    fn ipc_close(&self, base: usize, device: i32);
}

static ENGINE: OnceLock<Result<&'static dyn CopyEngine, String>> = OnceLock::new();

/// The process's copy engine: the CUDA driver if it loads (and nobody
/// installed the stand-in first), else `Err(why not)`.
pub fn engine() -> Result<&'static dyn CopyEngine, &'static str> {
    ENGINE
        .get_or_init(|| match driver::load_once() {
            Ok(e) => Ok(e as &'static dyn CopyEngine),
            Err(why) => Err(why.clone()),
        })
        .as_ref()
        .map(|e| *e)
        .map_err(|s| s.as_str())
}

/// Tests only: make the host stand-in this process's copy engine (device
/// memory is then plain host memory declared `cuda:N`). Returns false if the
/// engine was already chosen (by an earlier call or a registration).
#[doc(hidden)]
pub fn install_host_standin() -> bool {
    ENGINE.set(Ok(&standin::HostStandIn)).is_ok() || engine().is_ok_and(|e| e.is_standin())
}

/// Whether CUDA is usable here, and a line saying what was found.
pub fn status() -> (bool, String) {
    match engine() {
        Ok(e) => (true, e.describe()),
        Err(why) => (false, format!("CUDA not available: {why}")),
    }
}

/// The device ordinal a location string names (`cuda:3` → 3, `cuda` → 0),
/// or `None` for host locations (`cpu:0`, `*`, anything else).
pub fn device_of_location(location: &str) -> Option<i32> {
    let rest = location.trim().strip_prefix("cuda")?;
    if rest.is_empty() {
        return Some(0);
    }
    rest.strip_prefix(':')?
        .parse::<i32>()
        .ok()
        .filter(|d| *d >= 0)
}

/// Decide what `[addr, addr+len)` declared as `declared` really is, and
/// return the location to record. The one place that makes this decision.
///
/// - No CUDA: host locations pass unchanged; `cuda:*` is refused.
/// - CUDA: the driver classifies the pointer. Device memory is recorded as
///   `cuda:<its ordinal>` whatever was declared (so a CPU memcpy never
///   touches it) and must lie inside one allocation; host, pinned and
///   managed memory declared `cuda:*` is refused.
/// - Stand-in: the declaration is trusted (tests).
pub fn resolve_location(declared: &str, addr: usize, len: usize) -> Result<String, TransferError> {
    let want = device_of_location(declared);
    if declared.trim().starts_with("cuda") && want.is_none() {
        return Err(TransferError::InvalidConfig(format!(
            "bad location {declared:?} (expected cuda:<ordinal>)"
        )));
    }
    let e = match engine() {
        Ok(e) => e,
        Err(why) => {
            return match want {
                Some(_) => Err(TransferError::InvalidConfig(format!(
                    "cannot register {addr:#x}+{len} as {declared}: {why}"
                ))),
                None => Ok(declared.to_string()),
            }
        }
    };
    match e.classify(addr) {
        PointerKind::Device(d) => {
            let (base, size) = e.allocation_range(addr, d)?;
            if addr + len > base + size {
                return Err(TransferError::InvalidConfig(format!(
                    "device buffer {addr:#x}+{len} runs past its allocation {base:#x}+{size}"
                )));
            }
            if want.is_some_and(|w| w != d) {
                tracing::warn!(declared, actual = d, "registration names another device; using the pointer's");
            }
            Ok(format!("cuda:{d}"))
        }
        PointerKind::Unknown => {
            if want.is_some_and(|d| d >= e.device_count()) {
                return Err(TransferError::InvalidConfig(format!(
                    "no device {declared} (have {})",
                    e.device_count()
                )));
            }
            Ok(declared.to_string())
        }
        kind @ (PointerKind::Host | PointerKind::PinnedHost | PointerKind::Managed(_)) => {
            match want {
                Some(_) => Err(TransferError::InvalidConfig(format!(
                    "cannot register {addr:#x}+{len} as {declared}: it is {kind:?} memory, not device memory"
                ))),
                None => Ok(declared.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_strings() {
        assert_eq!(device_of_location("cuda:0"), Some(0));
        assert_eq!(device_of_location("cuda:7"), Some(7));
        assert_eq!(device_of_location("cuda"), Some(0));
        assert_eq!(device_of_location("cpu:0"), None);
        assert_eq!(device_of_location("*"), None);
        assert_eq!(device_of_location("cuda:x"), None);
        assert_eq!(device_of_location("cuda:-1"), None);
        assert!(resolve_location("cuda:zz", 0x1000, 1).is_err());
    }
}
