//! Sealed memfd shared memory: the one owner of creating a memfd, mapping
//! it, and mapping a same-host peer's memfd through `/proc/<pid>/fd/<fd>`.
//!
//! Users: the engine's managed buffers (`buffer.rs`, name [`SEGMENT_NAME`])
//! and the shm transport that maps them in peers (`transport/shm.rs`); the
//! store's dummy-client pools (`mooncake-store` `client_service::shm`).
//!
//! Invariants:
//! - [`Memfd::create`] seals the file against shrinking and growing before
//!   anyone can map it, so no mapping can ever fault (SIGBUS) because the
//!   file changed size.
//! - [`Memfd::map_peer`] maps a peer's fd only after checking, on the fd it
//!   actually opened (no race between check and map), that it is a memfd
//!   carrying the expected name, sealed against shrinking, and at least the
//!   expected size. A descriptor naming any other file (a regular file, a
//!   memfd of another kind, another process's memory) is refused with a
//!   typed [`MapPeerError`] and nothing is mapped.
//! - A [`Memfd`] unmaps (and closes its fd) on drop; whoever hands its
//!   address to others keeps it alive until they are done.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Name of the memfds behind the Transfer Engine's managed buffers.
pub const SEGMENT_NAME: &CStr = c"mooncake-segment";

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Why a peer's memfd was not mapped.
#[derive(Debug, thiserror::Error)]
pub enum MapPeerError {
    #[error("cannot open /proc/{pid}/fd/{fd}: {source}")]
    Open {
        pid: u32,
        fd: i32,
        source: std::io::Error,
    },
    #[error("/proc/{pid}/fd/{fd} is not a memfd named {expected:?} ({target})")]
    WrongFile {
        pid: u32,
        fd: i32,
        expected: String,
        target: String,
    },
    #[error("memfd is not sealed against shrinking")]
    NotSealed,
    #[error("memfd is {actual} bytes, {declared} declared")]
    TooShort { actual: u64, declared: u64 },
    #[error("mapping of {0} bytes refused (0 or larger than the address space)")]
    BadLength(u64),
    #[error("mapping the memfd: {0}")]
    Map(std::io::Error),
}

/// A whole memfd mapped read-write and shared. Unmapped on drop.
#[derive(Debug)]
pub struct Memfd {
    ptr: *mut u8,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: plain shared memory, not tied to a thread; who writes where is
// governed by the owners' users (leases, checked ranges).
unsafe impl Send for Memfd {}
// SAFETY: as above.
unsafe impl Sync for Memfd {}

fn round_to_page(len: usize) -> std::io::Result<usize> {
    let page = page_size();
    len.max(1)
        .checked_add(page - 1)
        .map(|l| l / page * page)
        .filter(|&l| l <= isize::MAX as usize)
        .ok_or_else(|| std::io::Error::other(format!("memfd of {len} bytes is too large")))
}

impl Memfd {
    /// A zero-filled memfd named `name` of `len` bytes rounded up to a page,
    /// sealed against shrinking and growing, mapped into this process.
    pub fn create(name: &CStr, len: usize) -> std::io::Result<Memfd> {
        let len = round_to_page(len)?;
        // SAFETY: name is NUL-terminated; flags are valid.
        let raw = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: valid memfd; len ≤ isize::MAX fits off_t.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS on a memfd created with MFD_ALLOW_SEALING.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Self::map(fd, len)
    }

    /// Map the memfd that process `pid` holds as `fd`, after checking that
    /// it is a memfd named `name`, sealed against shrinking and at least
    /// `len` bytes long. The mapping covers `[0, len)`.
    pub fn map_peer(pid: u32, fd: i32, name: &CStr, len: u64) -> Result<Memfd, MapPeerError> {
        let map_len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && l <= isize::MAX as usize)
            .ok_or(MapPeerError::BadLength(len))?;
        let open_err = |source| MapPeerError::Open { pid, fd, source };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/fd/{fd}"))
            .map_err(open_err)?;
        let own = OwnedFd::from(file);
        // Check what we opened, not what the path named a moment ago.
        let target = std::fs::read_link(format!("/proc/self/fd/{}", own.as_raw_fd()))
            .map_err(open_err)?
            .to_string_lossy()
            .into_owned();
        let expected = format!("/memfd:{}", name.to_string_lossy());
        if target != expected && target != format!("{expected} (deleted)") {
            return Err(MapPeerError::WrongFile {
                pid,
                fd,
                expected: name.to_string_lossy().into_owned(),
                target,
            });
        }
        // SAFETY: F_GET_SEALS on a valid fd; -1 for files without seals.
        let seals = unsafe { libc::fcntl(own.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(MapPeerError::NotSealed);
        }
        let actual = file_len(&own).map_err(MapPeerError::Map)?;
        if actual < len {
            return Err(MapPeerError::TooShort {
                actual,
                declared: len,
            });
        }
        Self::map(own, map_len).map_err(MapPeerError::Map)
    }

    /// `mmap(NULL, len, RW, MAP_SHARED, fd, 0)`.
    fn map(fd: OwnedFd, len: usize) -> std::io::Result<Memfd> {
        // SAFETY: a fresh mapping placed by the kernel; no existing memory changes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Memfd {
            ptr: ptr as *mut u8,
            len,
            fd,
        })
    }

    /// First byte of the mapping in this process.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// [`ptr`](Self::ptr) as an address.
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd in this process (what a peer names with our pid).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Identity of the file (device, inode), to notice a peer that now
    /// holds another file at the same fd.
    pub fn file_id(&self) -> std::io::Result<(u64, u64)> {
        let st = fstat(&self.fd)?;
        Ok((st.st_dev, st.st_ino))
    }

    /// Fault in writable page-table entries for `[offset, offset+len)` of
    /// the mapping (clamped to it), so later writes there do not page-fault
    /// once per page: `MADV_POPULATE_WRITE` (Linux 5.14), else one atomic
    /// no-op write per page (which cannot change a byte another process
    /// writes at the same time).
    pub fn populate_write(&self, offset: usize, len: usize) {
        let page = page_size();
        let start = offset.min(self.len) / page * page;
        let end = offset.saturating_add(len).min(self.len);
        if start >= end {
            return;
        }
        // SAFETY: the range lies inside our mapping (clamped above, start
        // page-aligned as madvise requires); the advice only populates.
        let rc = unsafe {
            libc::madvise(
                self.ptr.add(start) as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc == 0 {
            return;
        }
        for off in (start..end).step_by(page) {
            // SAFETY: inside the mapping; an atomic add of 0 faults the page in
            // writable without changing any byte.
            unsafe {
                let a = &*(self.ptr.add(off) as *const std::sync::atomic::AtomicU8);
                a.fetch_add(0, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd; st is a writable stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded and filled it.
    Ok(unsafe { st.assume_init() })
}

fn file_len(fd: &OwnedFd) -> std::io::Result<u64> {
    Ok(fstat(fd)?.st_size as u64)
}

impl Drop for Memfd {
    fn drop(&mut self) {
        // SAFETY: exactly what mmap returned; the owner guarantees nobody
        // uses the mapping any more (see the module invariants).
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &CStr = c"mooncake-memfd-test";

    #[test]
    fn peer_mapping_shares_bytes() {
        let own = Memfd::create(NAME, 10_000).unwrap();
        assert_eq!(own.len() % page_size(), 0);
        let peer = Memfd::map_peer(std::process::id(), own.raw_fd(), NAME, 10_000).unwrap();
        assert_eq!(peer.len(), 10_000);
        peer.populate_write(0, usize::MAX);
        peer.populate_write(peer.len(), 1);
        // SAFETY: inside both mappings of the same memfd.
        unsafe { *own.ptr().add(17) = 0xab };
        // SAFETY: as above.
        assert_eq!(unsafe { *peer.ptr().add(17) }, 0xab);
        assert_eq!(own.file_id().unwrap(), peer.file_id().unwrap());
    }

    fn thread_minor_faults() -> i64 {
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
        // SAFETY: valid out pointer.
        assert_eq!(
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) },
            0
        );
        // SAFETY: filled by getrusage.
        unsafe { ru.assume_init() }.ru_minflt
    }

    /// Writes into a populated peer mapping do not fault per page; into an
    /// unpopulated one they do (the control).
    #[test]
    fn populated_mapping_takes_no_faults_on_write() {
        let len = 8 << 20;
        let pages = (len / page_size()) as i64;
        let own = Memfd::create(NAME, len).unwrap();
        let pid = std::process::id();
        let write_all = |m: &Memfd| {
            let before = thread_minor_faults();
            for off in (0..len).step_by(page_size()) {
                // SAFETY: inside the mapping.
                unsafe { m.ptr().add(off).write_volatile(1) };
            }
            thread_minor_faults() - before
        };
        let cold = Memfd::map_peer(pid, own.raw_fd(), NAME, len as u64).unwrap();
        let cold_faults = write_all(&cold);
        let warm = Memfd::map_peer(pid, own.raw_fd(), NAME, len as u64).unwrap();
        warm.populate_write(0, len);
        let warm_faults = write_all(&warm);
        assert!(cold_faults >= pages / 2, "control: {cold_faults} faults");
        assert!(
            warm_faults < pages / 8,
            "{warm_faults} faults after populate"
        );
    }

    #[test]
    fn other_files_are_refused() {
        let pid = std::process::id();
        let own = Memfd::create(NAME, 4096).unwrap();
        let r = Memfd::map_peer(pid, own.raw_fd(), NAME, 1 << 30);
        assert!(matches!(r, Err(MapPeerError::TooShort { .. })), "{r:?}");
        let r = Memfd::map_peer(pid, own.raw_fd(), NAME, 0);
        assert!(matches!(r, Err(MapPeerError::BadLength(0))), "{r:?}");
        let r = Memfd::map_peer(pid, 999_999, NAME, 4096);
        assert!(matches!(r, Err(MapPeerError::Open { .. })), "{r:?}");
        // Another name (a segment memfd is not a store pool, say).
        let r = Memfd::map_peer(pid, own.raw_fd(), SEGMENT_NAME, 4096);
        assert!(matches!(r, Err(MapPeerError::WrongFile { .. })), "{r:?}");
        // A regular file.
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        let r = Memfd::map_peer(pid, f.as_raw_fd(), NAME, 4096);
        assert!(matches!(r, Err(MapPeerError::WrongFile { .. })), "{r:?}");
        // A memfd of the right name that could still shrink under a mapping.
        // SAFETY: valid NUL-terminated name and flags.
        let raw = unsafe { libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh fd we own.
        let unsealed = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: valid fd.
        assert_eq!(unsafe { libc::ftruncate(unsealed.as_raw_fd(), 4096) }, 0);
        let r = Memfd::map_peer(pid, unsealed.as_raw_fd(), NAME, 4096);
        assert!(matches!(r, Err(MapPeerError::NotSealed)), "{r:?}");
    }
}
