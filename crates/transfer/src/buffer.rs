//! Managed buffers: memfd-backed ([`crate::memfd`]), page-aligned,
//! zero-filled memory that the engine registers and that same-host peers can
//! map (shm transport).
//!
//! Invariants:
//! - A [`ManagedBuffer`] is unregistered on drop; its mapping lives on in the
//!   registry region until every in-flight lease is gone, then is unmapped.
//! - `read_at`/`write_at` are bounds-checked copies; raw access goes through
//!   `as_ptr` and is the caller's responsibility.

use std::sync::{Arc, Weak};

use crate::engine::EngineShared;
use crate::memfd::Memfd;

/// Memory owned by the engine and registered in the local segment.
/// Same-host peers map it; remote peers reach it over tcp.
#[derive(Debug)]
pub struct ManagedBuffer {
    mapping: Arc<Memfd>,
    len: usize,
    engine: Weak<EngineShared>,
}

impl ManagedBuffer {
    pub(crate) fn new(mapping: Arc<Memfd>, len: usize, engine: Weak<EngineShared>) -> Self {
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
