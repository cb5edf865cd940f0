//! The CUDA driver API, loaded at run time from `libcuda.so.1` with
//! `dlopen`/`dlsym` (libc, already a dependency): no CUDA toolkit at build
//! time, no new crate, and a process without the driver simply has no CUDA.
//!
//! Only the handful of entry points the data path needs are resolved (a
//! hand-written table: pointer attributes, primary contexts, async copies on
//! streams, pinned host memory, IPC handles, and device allocation for tests
//! and benchmarks). Every call goes through [`Driver::check`], which turns a
//! `CUresult` into a typed error with the driver's own message.
//!
//! Invariant: every call that needs a context first makes the primary context
//! of the right device current on the calling thread ([`Driver::bind`]); tokio
//! moves tasks between threads, so this is done per operation, not per thread.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

use super::{CopyEngine, CopyStream, DeviceBuf, IpcHandle, PinnedBuf, PointerKind};
use crate::TransferError;

type CuResult = c_int;
type CuDevice = c_int;
type CuDevicePtr = u64;
type CuContext = *mut c_void;
type CuStream = *mut c_void;

/// `CUipcMemHandle`: 64 opaque bytes, passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct CuIpcMemHandle {
    reserved: [u8; 64],
}

const CUDA_SUCCESS: CuResult = 0;
const CUDA_ERROR_NOT_READY: CuResult = 600;
const ATTR_MEMORY_TYPE: c_int = 2;
const ATTR_IS_MANAGED: c_int = 8;
const ATTR_DEVICE_ORDINAL: c_int = 9;
const MEMORYTYPE_HOST: c_uint = 1;
const MEMORYTYPE_DEVICE: c_uint = 2;
const MEMORYTYPE_UNIFIED: c_uint = 4;
const STREAM_NON_BLOCKING: c_uint = 1;
const IPC_LAZY_ENABLE_PEER_ACCESS: c_uint = 1;

/// The resolved entry points (C ABI function pointers).
#[allow(non_snake_case)]
struct Table {
    cuInit: unsafe extern "C" fn(c_uint) -> CuResult,
    cuDriverGetVersion: unsafe extern "C" fn(*mut c_int) -> CuResult,
    cuDeviceGetCount: unsafe extern "C" fn(*mut c_int) -> CuResult,
    cuDeviceGet: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    cuDeviceGetName: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult,
    cuDevicePrimaryCtxRetain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    cuCtxSetCurrent: unsafe extern "C" fn(CuContext) -> CuResult,
    cuCtxGetCurrent: unsafe extern "C" fn(*mut CuContext) -> CuResult,
    cuCtxSynchronize: unsafe extern "C" fn() -> CuResult,
    cuGetErrorString: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    cuPointerGetAttribute: unsafe extern "C" fn(*mut c_void, c_int, CuDevicePtr) -> CuResult,
    cuMemGetAddressRange:
        unsafe extern "C" fn(*mut CuDevicePtr, *mut usize, CuDevicePtr) -> CuResult,
    cuMemcpy: unsafe extern "C" fn(CuDevicePtr, CuDevicePtr, usize) -> CuResult,
    cuMemcpyDtoHAsync: unsafe extern "C" fn(*mut c_void, CuDevicePtr, usize, CuStream) -> CuResult,
    cuMemcpyHtoDAsync:
        unsafe extern "C" fn(CuDevicePtr, *const c_void, usize, CuStream) -> CuResult,
    cuStreamCreate: unsafe extern "C" fn(*mut CuStream, c_uint) -> CuResult,
    cuStreamQuery: unsafe extern "C" fn(CuStream) -> CuResult,
    cuStreamSynchronize: unsafe extern "C" fn(CuStream) -> CuResult,
    cuStreamDestroy: unsafe extern "C" fn(CuStream) -> CuResult,
    cuMemHostAlloc: unsafe extern "C" fn(*mut *mut c_void, usize, c_uint) -> CuResult,
    cuMemFreeHost: unsafe extern "C" fn(*mut c_void) -> CuResult,
    cuMemAlloc: unsafe extern "C" fn(*mut CuDevicePtr, usize) -> CuResult,
    cuMemFree: unsafe extern "C" fn(CuDevicePtr) -> CuResult,
    cuMemsetD8: unsafe extern "C" fn(CuDevicePtr, u8, usize) -> CuResult,
    cuIpcGetMemHandle: unsafe extern "C" fn(*mut CuIpcMemHandle, CuDevicePtr) -> CuResult,
    cuIpcOpenMemHandle: unsafe extern "C" fn(*mut CuDevicePtr, CuIpcMemHandle, c_uint) -> CuResult,
    cuIpcCloseMemHandle: unsafe extern "C" fn(CuDevicePtr) -> CuResult,
}

/// A loaded, initialised driver with at least one device.
pub struct Driver {
    t: Table,
    version: i32,
    devices: Vec<CuDevice>,
    /// Primary contexts, retained on first use of each device (retaining one
    /// costs device memory, so devices a process never touches get none).
    contexts: Vec<OnceLock<Result<usize, String>>>,
    names: Vec<String>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("version", &self.version)
            .field("devices", &self.names)
            .finish()
    }
}

/// Look up `names` (first found wins) in `lib`.
///
/// # Safety
/// `T` must be the function-pointer type of the symbol's C signature.
unsafe fn sym<T: Copy>(lib: *mut c_void, names: &[&str]) -> Result<T, String> {
    for n in names {
        let c = std::ffi::CString::new(*n).map_err(|e| e.to_string())?;
        // SAFETY: lib is a live dlopen handle; c is NUL-terminated.
        let p = unsafe { libc::dlsym(lib, c.as_ptr()) };
        if !p.is_null() {
            // SAFETY: the caller names the right signature; a data pointer and
            // a function pointer have the same size on supported platforms.
            return Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) });
        }
    }
    Err(format!("libcuda.so.1 lacks {}", names[0]))
}

impl Driver {
    /// Load and initialise the driver; `Err` says why CUDA is unavailable.
    pub fn load() -> Result<Driver, String> {
        let lib = ["libcuda.so.1", "libcuda.so"]
            .iter()
            .find_map(|name| {
                let c = std::ffi::CString::new(*name).ok()?;
                // SAFETY: dlopen with a NUL-terminated name; the handle is never
                // closed (the driver stays loaded for the life of the process).
                let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
                (!h.is_null()).then_some(h)
            })
            .ok_or_else(|| "libcuda.so.1 not found (no NVIDIA driver)".to_string())?;
        // SAFETY: every signature below is the driver API's C signature for
        // the named symbol (the `_v2` names are the current ABI).
        let t = unsafe {
            Table {
                cuInit: sym(lib, &["cuInit"])?,
                cuDriverGetVersion: sym(lib, &["cuDriverGetVersion"])?,
                cuDeviceGetCount: sym(lib, &["cuDeviceGetCount"])?,
                cuDeviceGet: sym(lib, &["cuDeviceGet"])?,
                cuDeviceGetName: sym(lib, &["cuDeviceGetName"])?,
                cuDevicePrimaryCtxRetain: sym(lib, &["cuDevicePrimaryCtxRetain"])?,
                cuCtxSetCurrent: sym(lib, &["cuCtxSetCurrent"])?,
                cuCtxGetCurrent: sym(lib, &["cuCtxGetCurrent"])?,
                cuCtxSynchronize: sym(lib, &["cuCtxSynchronize"])?,
                cuGetErrorString: sym(lib, &["cuGetErrorString"])?,
                cuPointerGetAttribute: sym(lib, &["cuPointerGetAttribute"])?,
                cuMemGetAddressRange: sym(lib, &["cuMemGetAddressRange_v2"])?,
                cuMemcpy: sym(lib, &["cuMemcpy"])?,
                cuMemcpyDtoHAsync: sym(lib, &["cuMemcpyDtoHAsync_v2"])?,
                cuMemcpyHtoDAsync: sym(lib, &["cuMemcpyHtoDAsync_v2"])?,
                cuStreamCreate: sym(lib, &["cuStreamCreate"])?,
                cuStreamQuery: sym(lib, &["cuStreamQuery"])?,
                cuStreamSynchronize: sym(lib, &["cuStreamSynchronize"])?,
                cuStreamDestroy: sym(lib, &["cuStreamDestroy_v2"])?,
                cuMemHostAlloc: sym(lib, &["cuMemHostAlloc"])?,
                cuMemFreeHost: sym(lib, &["cuMemFreeHost"])?,
                cuMemAlloc: sym(lib, &["cuMemAlloc_v2"])?,
                cuMemFree: sym(lib, &["cuMemFree_v2"])?,
                cuMemsetD8: sym(lib, &["cuMemsetD8_v2"])?,
                cuIpcGetMemHandle: sym(lib, &["cuIpcGetMemHandle"])?,
                cuIpcOpenMemHandle: sym(lib, &["cuIpcOpenMemHandle_v2", "cuIpcOpenMemHandle"])?,
                cuIpcCloseMemHandle: sym(lib, &["cuIpcCloseMemHandle"])?,
            }
        };
        let mut d = Driver {
            t,
            version: 0,
            devices: Vec::new(),
            contexts: Vec::new(),
            names: Vec::new(),
        };
        // SAFETY: plain driver calls with valid out-pointers.
        unsafe {
            d.check((d.t.cuInit)(0)).map_err(|e| e.to_string())?;
            let mut version = 0;
            d.check((d.t.cuDriverGetVersion)(&mut version))
                .map_err(|e| e.to_string())?;
            d.version = version;
            let mut n = 0;
            d.check((d.t.cuDeviceGetCount)(&mut n))
                .map_err(|e| e.to_string())?;
            if n <= 0 {
                return Err("the NVIDIA driver reports no CUDA device".into());
            }
            for i in 0..n {
                let mut dev = 0;
                d.check((d.t.cuDeviceGet)(&mut dev, i))
                    .map_err(|e| e.to_string())?;
                d.devices.push(dev);
                d.contexts.push(OnceLock::new());
                let mut name = [0 as c_char; 128];
                let _ = (d.t.cuDeviceGetName)(name.as_mut_ptr(), 128, dev);
                d.names
                    .push(CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned());
            }
        }
        Ok(d)
    }

    fn check(&self, r: CuResult) -> Result<(), TransferError> {
        if r == CUDA_SUCCESS {
            return Ok(());
        }
        let mut s: *const c_char = std::ptr::null();
        // SAFETY: cuGetErrorString writes a pointer to a static string or
        // leaves it null for an unknown code.
        let msg = unsafe {
            (self.t.cuGetErrorString)(r, &mut s);
            if s.is_null() {
                format!("CUDA error {r}")
            } else {
                format!("CUDA error {r}: {}", CStr::from_ptr(s).to_string_lossy())
            }
        };
        Err(TransferError::Cuda(msg))
    }

    /// Make `device`'s primary context current on this thread.
    fn bind(&self, device: i32) -> Result<(), TransferError> {
        let i = usize::try_from(device).unwrap_or(usize::MAX);
        let (slot, dev) = self
            .contexts
            .get(i)
            .zip(self.devices.get(i))
            .ok_or_else(|| TransferError::Cuda(format!("no CUDA device {device}")))?;
        let ctx = slot
            .get_or_init(|| {
                let mut ctx: CuContext = std::ptr::null_mut();
                // SAFETY: out-pointer valid; the context is never released
                // (it lives as long as the process, like the driver).
                self.check(unsafe { (self.t.cuDevicePrimaryCtxRetain)(&mut ctx, *dev) })
                    .map(|_| ctx as usize)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(TransferError::Cuda)?;
        // SAFETY: ctx is a retained primary context (never released).
        self.check(unsafe { (self.t.cuCtxSetCurrent)(ctx as CuContext) })
    }
}

/// The real copy engine: the CUDA driver.
#[derive(Debug)]
pub struct CudaEngine {
    d: Driver,
}

impl CudaEngine {
    pub fn new(d: Driver) -> Self {
        CudaEngine { d }
    }
}

/// Load once per process.
pub fn load_once() -> &'static Result<CudaEngine, String> {
    static D: OnceLock<Result<CudaEngine, String>> = OnceLock::new();
    D.get_or_init(|| Driver::load().map(CudaEngine::new))
}

struct Stream {
    d: &'static CudaEngine,
    s: CuStream,
    device: i32,
}

// SAFETY: a CUDA stream handle may be used from any thread (the context is
// bound per call).
unsafe impl Send for Stream {}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.d.d.bind(self.device).is_ok() {
            // SAFETY: s was created by cuStreamCreate and is destroyed once.
            unsafe {
                (self.d.d.t.cuStreamSynchronize)(self.s);
                (self.d.d.t.cuStreamDestroy)(self.s);
            }
        }
    }
}

impl CopyStream for Stream {
    fn d2h(&mut self, dst: *mut u8, src: usize, len: usize) -> Result<(), TransferError> {
        self.d.d.bind(self.device)?;
        // SAFETY: dst is pinned host memory of >= len bytes owned by the caller
        // until the stream is drained; src is device memory the caller leased.
        self.d.d.check(unsafe {
            (self.d.d.t.cuMemcpyDtoHAsync)(dst.cast(), src as CuDevicePtr, len, self.s)
        })
    }

    fn h2d(&mut self, dst: usize, src: *const u8, len: usize) -> Result<(), TransferError> {
        self.d.d.bind(self.device)?;
        // SAFETY: as for d2h, in the other direction.
        self.d.d.check(unsafe {
            (self.d.d.t.cuMemcpyHtoDAsync)(dst as CuDevicePtr, src.cast(), len, self.s)
        })
    }

    fn query(&mut self) -> Result<bool, TransferError> {
        self.d.d.bind(self.device)?;
        // SAFETY: s is a live stream.
        match unsafe { (self.d.d.t.cuStreamQuery)(self.s) } {
            CUDA_ERROR_NOT_READY => Ok(false),
            r => self.d.d.check(r).map(|_| true),
        }
    }
}

impl CopyEngine for CudaEngine {
    fn describe(&self) -> String {
        format!(
            "CUDA driver {}.{}, {} device(s): {}",
            self.d.version / 1000,
            self.d.version % 1000 / 10,
            self.d.names.len(),
            self.d.names.join(", ")
        )
    }

    fn device_count(&self) -> i32 {
        self.d.names.len() as i32
    }

    fn is_standin(&self) -> bool {
        false
    }

    fn classify(&self, addr: usize) -> PointerKind {
        // Attribute queries need no particular context; bind one only if the
        // thread has none at all (some drivers then refuse the query).
        let mut cur: CuContext = std::ptr::null_mut();
        // SAFETY: out-pointer valid.
        if unsafe { (self.d.t.cuCtxGetCurrent)(&mut cur) } != CUDA_SUCCESS || cur.is_null() {
            let _ = self.d.bind(0);
        }
        let p = addr as CuDevicePtr;
        let mut managed: c_uint = 0;
        let mut mtype: c_uint = 0;
        let mut ordinal: c_int = 0;
        // SAFETY: attribute queries write one c_uint/c_int each; an unknown
        // (pageable host) pointer makes them fail without writing.
        unsafe {
            let t = &self.d.t;
            if (t.cuPointerGetAttribute)((&mut mtype as *mut c_uint).cast(), ATTR_MEMORY_TYPE, p)
                != CUDA_SUCCESS
            {
                return PointerKind::Host;
            }
            let _ =
                (t.cuPointerGetAttribute)((&mut managed as *mut c_uint).cast(), ATTR_IS_MANAGED, p);
            let _ = (t.cuPointerGetAttribute)(
                (&mut ordinal as *mut c_int).cast(),
                ATTR_DEVICE_ORDINAL,
                p,
            );
        }
        match mtype {
            _ if managed != 0 => PointerKind::Managed(ordinal),
            MEMORYTYPE_DEVICE | MEMORYTYPE_UNIFIED => PointerKind::Device(ordinal),
            MEMORYTYPE_HOST => PointerKind::PinnedHost,
            _ => PointerKind::Host,
        }
    }

    fn allocation_range(&self, addr: usize, device: i32) -> Result<(usize, usize), TransferError> {
        self.d.bind(device)?;
        let (mut base, mut size) = (0u64, 0usize);
        // SAFETY: out-pointers are valid.
        self.d.check(unsafe {
            (self.d.t.cuMemGetAddressRange)(&mut base, &mut size, addr as CuDevicePtr)
        })?;
        Ok((base as usize, size))
    }

    fn copy(&self, dst: usize, src: usize, len: usize, device: i32) -> Result<(), TransferError> {
        self.d.bind(device)?;
        // SAFETY: the caller leased both ranges; with unified addressing the
        // driver infers each side's kind. cuMemcpy is synchronous for the host.
        self.d
            .check(unsafe { (self.d.t.cuMemcpy)(dst as u64, src as u64, len) })
    }

    fn stream(&'static self, device: i32) -> Result<Box<dyn CopyStream>, TransferError> {
        self.d.bind(device)?;
        let mut s: CuStream = std::ptr::null_mut();
        // SAFETY: out-pointer valid.
        self.d
            .check(unsafe { (self.d.t.cuStreamCreate)(&mut s, STREAM_NON_BLOCKING) })?;
        Ok(Box::new(Stream { d: self, s, device }))
    }

    fn alloc_pinned(&'static self, len: usize, device: i32) -> Result<PinnedBuf, TransferError> {
        self.d.bind(device)?;
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: out-pointer valid; flag 1 = CU_MEMHOSTALLOC_PORTABLE (pinned for every context).
        self.d
            .check(unsafe { (self.d.t.cuMemHostAlloc)(&mut p, len.max(1), 1) })?;
        Ok(PinnedBuf::new(p.cast(), len, move |ptr| {
            // SAFETY: ptr came from cuMemHostAlloc and is freed once.
            unsafe {
                (self.d.t.cuMemFreeHost)(ptr.cast());
            }
        }))
    }

    fn alloc_device(&'static self, len: usize, device: i32) -> Result<DeviceBuf, TransferError> {
        self.d.bind(device)?;
        let mut p: CuDevicePtr = 0;
        // SAFETY: out-pointer valid.
        self.d
            .check(unsafe { (self.d.t.cuMemAlloc)(&mut p, len.max(1)) })?;
        // SAFETY: fresh allocation of len bytes.
        self.d
            .check(unsafe { (self.d.t.cuMemsetD8)(p, 0, len.max(1)) })?;
        Ok(DeviceBuf::new(p as usize, len, device, move |ptr| {
            if self.d.bind(device).is_ok() {
                // SAFETY: ptr came from cuMemAlloc and is freed once.
                unsafe {
                    (self.d.t.cuCtxSynchronize)();
                    (self.d.t.cuMemFree)(ptr as CuDevicePtr);
                }
            }
        }))
    }

    fn synchronize(&self, device: i32) -> Result<(), TransferError> {
        self.d.bind(device)?;
        // SAFETY: no arguments.
        self.d.check(unsafe { (self.d.t.cuCtxSynchronize)() })
    }

    fn synchronize_stream(&self, stream: usize, device: i32) -> Result<(), TransferError> {
        self.d.bind(device)?;
        // SAFETY: the caller passes a live stream of this process (or 0).
        self.d
            .check(unsafe { (self.d.t.cuStreamSynchronize)(stream as CuStream) })
    }

    fn ipc_handle(&self, addr: usize, device: i32) -> Result<IpcHandle, TransferError> {
        let (base, size) = self.allocation_range(addr, device)?;
        let mut h = CuIpcMemHandle { reserved: [0; 64] };
        // SAFETY: out-pointer valid; base is an allocation start.
        self.d
            .check(unsafe { (self.d.t.cuIpcGetMemHandle)(&mut h, base as CuDevicePtr) })?;
        Ok(IpcHandle {
            handle: h.reserved.to_vec(),
            offset: (addr - base) as u64,
            alloc_len: size as u64,
            device,
        })
    }

    fn ipc_open(&self, handle: &[u8], device: i32) -> Result<usize, TransferError> {
        let mut h = CuIpcMemHandle { reserved: [0; 64] };
        if handle.len() != 64 {
            return Err(TransferError::Cuda(
                "CUDA IPC handle is not 64 bytes".into(),
            ));
        }
        h.reserved.copy_from_slice(handle);
        self.d.bind(device)?;
        let mut p: CuDevicePtr = 0;
        // SAFETY: out-pointer valid; the handle is passed by value.
        self.d.check(unsafe {
            (self.d.t.cuIpcOpenMemHandle)(&mut p, h, IPC_LAZY_ENABLE_PEER_ACCESS)
        })?;
        Ok(p as usize)
    }

    fn ipc_close(&self, base: usize, device: i32) {
        if self.d.bind(device).is_ok() {
            // SAFETY: base came from cuIpcOpenMemHandle and is closed once.
            unsafe {
                (self.d.t.cuIpcCloseMemHandle)(base as CuDevicePtr);
            }
        }
    }
}
