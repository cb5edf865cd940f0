//! Managed buffers: memfd-backed, page-aligned, zero-filled memory that the
//! engine registers and that same-host peers can map (shm transport).
//!
//! Invariants:
//! - The memfd is sealed against shrinking and growing, so a peer's mapping
//!   can never fault (SIGBUS) because the file changed size.
//! - A [`ManagedBuffer`] is unregistered on drop; its mapping lives on in the
//!   registry region until every in-flight lease is gone, then is unmapped.
//! - `read_at`/`write_at` are bounds-checked copies; raw access goes through
//!   `as_ptr` and is the caller's responsibility.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Weak};

use crate::engine::EngineShared;
use crate::TransferError;

/// An mmap'ed memfd. Unmapped (and the fd closed) on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; it is not tied to a thread and
// all accesses go through raw pointers whose aliasing is governed by leases.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl Mapping {
    /// Create a sealed memfd of at least `len` bytes (rounded up to a page) and map it.
    pub fn create(len: usize) -> Result<Self, TransferError> {
        let page = page_size();
        let rounded = len
            .max(1)
            .checked_add(page - 1)
            .map(|l| l / page * page)
            .ok_or_else(|| TransferError::InvalidConfig(format!("buffer size {len} too large")))?;
        let name = c"mooncake-segment";
        // SAFETY: name is a valid NUL-terminated string; flags are valid.
        let raw = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: fd is a valid memfd; size fits off_t after the checks above.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), rounded as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS on a memfd created with MFD_ALLOW_SEALING.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let ptr = map_shared(fd.as_raw_fd(), rounded)?;
        Ok(Mapping {
            ptr,
            len: rounded,
            fd,
        })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// `mmap(NULL, len, RW, MAP_SHARED, fd, 0)`.
pub(crate) fn map_shared(fd: i32, len: usize) -> Result<*mut u8, TransferError> {
    // SAFETY: a fresh mapping chosen by the kernel; no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(ptr as *mut u8)
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nobody holds a lease
        // (the region holding this Arc is gone).
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// Memory owned by the engine and registered in the local segment.
/// Same-host peers map it; remote peers reach it over tcp.
#[derive(Debug)]
pub struct ManagedBuffer {
    mapping: Arc<Mapping>,
    len: usize,
    engine: Weak<EngineShared>,
}

impl ManagedBuffer {
    pub(crate) fn new(mapping: Arc<Mapping>, len: usize, engine: Weak<EngineShared>) -> Self {
        ManagedBuffer {
            mapping,
            len,
            engine,
        }
    }

    /// Start address (the remote address peers use for offset 0).
    pub fn addr(&self) -> usize {
        self.mapping.ptr() as usize
    }

    /// Usable length (as requested; the mapping may be page-rounded).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.mapping.ptr()
    }

    fn check(&self, offset: usize, n: usize) {
        let end = offset.checked_add(n).expect("offset overflow");
        assert!(
            end <= self.len,
            "range {offset}+{n} outside managed buffer of {} bytes",
            self.len
        );
    }

    /// Copy `out.len()` bytes starting at `offset` into `out`.
    ///
    /// # Panics
    /// If the range is outside the buffer (a caller bug, not network input).
    pub fn read_at(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len());
        // SAFETY: the range is inside the mapping (checked); `out` is a distinct
        // Rust slice so the regions cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), out.as_mut_ptr(), out.len())
        }
    }

    /// Copy `data` into the buffer at `offset`.
    ///
    /// # Panics
    /// If the range is outside the buffer.
    pub fn write_at(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len());
        // SAFETY: as for read_at.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len())
        }
    }

    /// Fill `[offset, offset+n)` with `byte`.
    pub fn fill(&self, offset: usize, n: usize, byte: u8) {
        self.check(offset, n);
        // SAFETY: range checked above.
        unsafe { std::ptr::write_bytes(self.as_ptr().add(offset), byte, n) }
    }
}

impl Drop for ManagedBuffer {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            engine.forget_managed(self.addr());
        }
    }
}
