//! Shared memory between a dummy client and the real client: the dummy owns
//! a sealed memfd ([`SharedPool`]); the real client maps it through
//! `/proc/<pid>/fd/<fd>` ([`PeerMapping`]). Both are the Transfer Engine's
//! [`Memfd`] (`mooncake_transfer::memfd`, the one owner of creating,
//! sealing and checking memfds), named [`POOL_NAME`].
//!
//! Invariant: the memfd is sealed against shrinking before anyone maps it,
//! and the server refuses a pool whose memfd is unsealed or shorter than
//! declared, so a mapping can never fault because the file shrank.
//!
//! Trust: any local process that can reach the service may attach. The
//! server only maps memfds named [`POOL_NAME`] (so a request naming some
//! other file or memory of another process is refused), and `/proc` only
//! opens fds of processes the real client's user may inspect.

use mooncake_transfer::memfd::Memfd;

use super::wire::PoolDesc;

/// Why a pool could not be mapped.
pub use mooncake_transfer::memfd::MapPeerError as AttachError;

/// The name every dummy pool's memfd carries (`/proc/<pid>/fd/<fd>` links
/// to `/memfd:<name> (deleted)`).
pub const POOL_NAME: &str = "mooncake-dummy-pool";
const POOL_NAME_C: &std::ffi::CStr = c"mooncake-dummy-pool";

impl std::ops::Deref for SharedPool {
    type Target = Memfd;
    fn deref(&self) -> &Memfd {
        &self.0
    }
}

impl std::ops::Deref for PeerMapping {
    type Target = Memfd;
    fn deref(&self) -> &Memfd {
        &self.0
    }
}

/// The dummy's pool: a sealed memfd mapped into this process.
#[derive(Debug)]
pub struct SharedPool(Memfd);

impl SharedPool {
    /// A zero-filled pool of `len` bytes (rounded up to a page).
    pub fn create(len: usize) -> std::io::Result<SharedPool> {
        Memfd::create(POOL_NAME_C, len).map(SharedPool)
    }

    /// What the server needs to map it.
    pub fn desc(&self) -> PoolDesc {
        PoolDesc {
            pid: std::process::id(),
            fd: self.0.raw_fd(),
            len: self.0.len() as u64,
        }
    }

    /// The offset of `[addr, addr + len)` in the pool, if it lies inside.
    pub fn offset_of(&self, addr: usize, len: usize) -> Option<u64> {
        let off = addr.checked_sub(self.addr())?;
        let end = off.checked_add(len)?;
        (end <= self.0.len()).then_some(off as u64)
    }
}

/// A dummy's pool mapped into the real client. Unmapped on drop: the owner
/// must make sure no transfer uses it any more (unregister it first).
#[derive(Debug)]
pub struct PeerMapping(Memfd);

impl PeerMapping {
    /// Open and map the pool `desc` names, after checking its name, size and seals.
    pub fn open(desc: &PoolDesc) -> Result<PeerMapping, AttachError> {
        Memfd::map_peer(desc.pid, desc.fd, POOL_NAME_C, desc.len).map(PeerMapping)
    }

    /// The address of `[offset, offset + len)` if it lies inside the pool.
    pub fn resolve(&self, offset: u64, len: u64) -> Option<usize> {
        let end = offset.checked_add(len)?;
        (end <= self.0.len() as u64).then(|| self.addr() + offset as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_sees_the_pool_and_ranges_are_checked() {
        let pool = SharedPool::create(10_000).unwrap();
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
    fn only_pool_memfds_are_mapped() {
        assert_eq!(POOL_NAME_C.to_str().unwrap(), POOL_NAME);
        // A Transfer Engine segment memfd is not a pool (the checks
        // themselves are tested with `mooncake_transfer::memfd`).
        let seg = Memfd::create(mooncake_transfer::memfd::SEGMENT_NAME, 4096).unwrap();
        let d = PoolDesc {
            pid: std::process::id(),
            fd: seg.raw_fd(),
            len: 4096,
        };
        assert!(matches!(
            PeerMapping::open(&d),
            Err(AttachError::WrongFile { .. })
        ));
    }
}
