//! Shared memory between a dummy client and the real client: the dummy owns
//! a sealed memfd ([`SharedPool`]); the real client maps it through
//! `/proc/<pid>/fd/<fd>` ([`PeerMapping`]), the way the Transfer Engine's shm
//! transport maps same-host segments (same host, same user).
//!
//! Invariant: the memfd is sealed against shrinking before anyone maps it,
//! and the server refuses a pool whose memfd is unsealed or shorter than
//! declared, so a mapping can never fault because the file shrank.
//!
//! Trust: any local process that can reach the service may attach. The
//! server only maps memfds named [`POOL_NAME`] (so a request naming some
//! other file or memory of another process is refused), and `/proc` only
//! opens fds of processes the real client's user may inspect.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::wire::PoolDesc;

/// The name every dummy pool's memfd carries (`/proc/<pid>/fd/<fd>` links
/// to `/memfd:<name> (deleted)`).
pub const POOL_NAME: &str = "mooncake-dummy-pool";
const POOL_NAME_C: &std::ffi::CStr = c"mooncake-dummy-pool";

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// A shared read-write mapping of a whole memfd, unmapped (and the fd
/// closed) on drop. Both sides' types deref to it.
#[derive(Debug)]
pub struct Mapped {
    ptr: *mut u8,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: plain shared memory, not tied to a thread; who writes where is the
// business of the owners' users (buffers handed out by the dummy, ranges the
// server checked).
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// `mmap(NULL, len, RW, MAP_SHARED, fd, 0)`.
    fn new(fd: OwnedFd, len: usize) -> std::io::Result<Mapped> {
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
        Ok(Mapped {
            ptr: ptr as *mut u8,
            len,
            fd,
        })
    }
}

impl Mapped {
    /// First byte of the mapping in this process.
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for SharedPool {
    type Target = Mapped;
    fn deref(&self) -> &Mapped {
        &self.0
    }
}

impl std::ops::Deref for PeerMapping {
    type Target = Mapped;
    fn deref(&self) -> &Mapped {
        &self.0
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: exactly what mmap returned. The dummy drops its pool last;
        // the server unregisters a peer mapping from the engine (draining
        // transfers) before dropping it, or leaks it.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// The dummy's pool: a sealed memfd mapped into this process.
#[derive(Debug)]
pub struct SharedPool(Mapped);

impl SharedPool {
    /// A zero-filled pool of `len` bytes (rounded up to a page).
    pub fn create(len: usize) -> std::io::Result<SharedPool> {
        let page = page_size();
        let len = len
            .max(1)
            .checked_add(page - 1)
            .map(|l| l / page * page)
            .ok_or_else(|| std::io::Error::other("pool size too large"))?;
        // SAFETY: valid NUL-terminated name, valid flags.
        let raw = unsafe {
            libc::memfd_create(
                POOL_NAME_C.as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: valid memfd; len fits off_t (checked against usize above).
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS on a memfd created with MFD_ALLOW_SEALING.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SharedPool(Mapped::new(fd, len)?))
    }

    /// What the server needs to map it.
    pub fn desc(&self) -> PoolDesc {
        PoolDesc {
            pid: std::process::id(),
            fd: self.0.fd.as_raw_fd(),
            len: self.0.len as u64,
        }
    }

    /// The offset of `[addr, addr + len)` in the pool, if it lies inside.
    pub fn offset_of(&self, addr: usize, len: usize) -> Option<u64> {
        let off = addr.checked_sub(self.addr())?;
        let end = off.checked_add(len)?;
        (end <= self.0.len).then_some(off as u64)
    }
}

/// Why a pool could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("cannot open the pool /proc/{pid}/fd/{fd}: {source}")]
    Open {
        pid: u32,
        fd: i32,
        source: std::io::Error,
    },
    #[error("pool is {actual} bytes, {declared} declared")]
    TooShort { actual: u64, declared: u64 },
    #[error("pool memfd is not sealed against shrinking")]
    NotSealed,
    #[error("/proc/{pid}/fd/{fd} is not a dummy pool ({target})")]
    NotAPool { pid: u32, fd: i32, target: String },
    #[error("pool of {0} bytes refused (0 or larger than the address space)")]
    BadLength(u64),
    #[error("mapping the pool: {0}")]
    Map(std::io::Error),
}

/// A dummy's pool mapped into the real client. Unmapped on drop: the owner
/// must make sure no transfer uses it any more (unregister it first).
#[derive(Debug)]
pub struct PeerMapping(Mapped);

impl PeerMapping {
    /// Open and map the pool `desc` names, after checking its size and seals.
    pub fn open(desc: &PoolDesc) -> Result<PeerMapping, AttachError> {
        let len = usize::try_from(desc.len)
            .ok()
            .filter(|&l| l > 0 && l <= isize::MAX as usize)
            .ok_or(AttachError::BadLength(desc.len))?;
        let path = format!("/proc/{}/fd/{}", desc.pid, desc.fd);
        let target = std::fs::read_link(&path)
            .map_err(|source| AttachError::Open {
                pid: desc.pid,
                fd: desc.fd,
                source,
            })?
            .to_string_lossy()
            .into_owned();
        if !target.starts_with(&format!("/memfd:{POOL_NAME} "))
            && target != format!("/memfd:{POOL_NAME}")
        {
            return Err(AttachError::NotAPool {
                pid: desc.pid,
                fd: desc.fd,
                target,
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| AttachError::Open {
                pid: desc.pid,
                fd: desc.fd,
                source,
            })?;
        let fd = OwnedFd::from(file);
        // SAFETY: F_GET_SEALS on a valid fd; returns -1 for non-memfds.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(AttachError::NotSealed);
        }
        let actual = std::fs::File::from(fd.try_clone().map_err(AttachError::Map)?)
            .metadata()
            .map_err(AttachError::Map)?
            .len();
        if actual < desc.len {
            return Err(AttachError::TooShort {
                actual,
                declared: desc.len,
            });
        }
        Ok(PeerMapping(Mapped::new(fd, len).map_err(AttachError::Map)?))
    }

    /// The address of `[offset, offset + len)` if it lies inside the pool.
    pub fn resolve(&self, offset: u64, len: u64) -> Option<usize> {
        let end = offset.checked_add(len)?;
        (end <= self.0.len as u64).then(|| self.addr() + offset as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_sees_the_pool_and_ranges_are_checked() {
        let pool = SharedPool::create(10_000).unwrap();
        assert_eq!(pool.len() % page_size(), 0);
        let peer = PeerMapping::open(&pool.desc()).unwrap();
        // SAFETY: inside both mappings of the same memfd.
        unsafe { *(pool.addr() as *mut u8).add(17) = 0xab };
        // SAFETY: as above.
        assert_eq!(unsafe { *(peer.addr() as *const u8).add(17) }, 0xab);
        assert_eq!(pool.offset_of(pool.addr() + 5, 10), Some(5));
        assert_eq!(pool.offset_of(pool.addr() + pool.len() - 1, 2), None);
        assert_eq!(pool.offset_of(pool.addr() - 1, 1), None);
        assert!(peer.resolve(0, pool.len() as u64).is_some());
        assert!(peer.resolve(1, pool.len() as u64).is_none());
        assert!(peer.resolve(u64::MAX, 2).is_none());
    }

    #[test]
    fn bad_pools_are_refused() {
        let pool = SharedPool::create(4096).unwrap();
        let mut d = pool.desc();
        d.len = 1 << 30;
        assert!(matches!(
            PeerMapping::open(&d),
            Err(AttachError::TooShort { .. })
        ));
        d.len = 0;
        assert!(matches!(
            PeerMapping::open(&d),
            Err(AttachError::BadLength(0))
        ));
        let mut d = pool.desc();
        d.fd = 999_999;
        assert!(matches!(
            PeerMapping::open(&d),
            Err(AttachError::Open { .. })
        ));
        // Files other than a dummy pool are refused: a regular file, a
        // memfd of another name (a Transfer Engine segment, say).
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        let d = PoolDesc {
            pid: std::process::id(),
            fd: f.as_raw_fd(),
            len: 4096,
        };
        assert!(matches!(
            PeerMapping::open(&d),
            Err(AttachError::NotAPool { .. })
        ));
        // SAFETY: valid NUL-terminated name and flags.
        let raw = unsafe { libc::memfd_create(c"other".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh fd we own.
        let other = unsafe { OwnedFd::from_raw_fd(raw) };
        let d = PoolDesc {
            pid: std::process::id(),
            fd: other.as_raw_fd(),
            len: 4096,
        };
        assert!(matches!(
            PeerMapping::open(&d),
            Err(AttachError::NotAPool { .. })
        ));
        assert_eq!(POOL_NAME_C.to_str().unwrap(), POOL_NAME);
        // A pool-named memfd that could still shrink under the mapping.
        // SAFETY: valid NUL-terminated name and flags.
        let raw = unsafe { libc::memfd_create(POOL_NAME_C.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh fd we own.
        let unsealed = unsafe { OwnedFd::from_raw_fd(raw) };
        let d = PoolDesc {
            pid: std::process::id(),
            fd: unsealed.as_raw_fd(),
            len: 4096,
        };
        assert!(matches!(PeerMapping::open(&d), Err(AttachError::NotSealed)));
    }
}
