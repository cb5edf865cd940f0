//! Memory of `TransferEngine`: caller-memory registration, managed buffers
//! from the pool (or dedicated ones), segment lookup and the raw byte
//! accessors, which only reach memory registered through this engine.

use mooncake_transfer::cuda::staging;
use mooncake_transfer::TransferError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::PyTransferEngine;
use crate::log;
use crate::pybuf::PyBuf;
use crate::runtime::block_on;

#[pymethods]
impl PyTransferEngine {
    /// Register caller memory `[buffer_addr, buffer_addr + capacity)` so peers
    /// can read and write it. The memory must stay valid until
    /// `unregister_memory` (the reference's contract).
    #[pyo3(signature = (buffer_addr, capacity, location = "*"))]
    fn register_memory(
        &self,
        py: Python<'_>,
        buffer_addr: usize,
        capacity: usize,
        location: &str,
    ) -> i32 {
        let Some(a) = self.active() else { return -1 };
        if buffer_addr == 0 || capacity == 0 {
            log::error(py, "register_memory: null address or zero capacity");
            return -1;
        }
        let loc = if location == "*" { "cpu:0" } else { location };
        // SAFETY: the Python caller promises (as with the reference) that the
        // range is valid, writable memory that lives until unregister_memory.
        let r = block_on(py, async {
            unsafe { a.engine.register_memory(buffer_addr, capacity, loc).await }
        });
        match r {
            Ok(()) => {
                a.regions.lock().insert(buffer_addr, capacity);
                0
            }
            Err(e) => {
                log::error(
                    py,
                    &format!("register_memory({buffer_addr:#x}, {capacity}): {e}"),
                );
                -1
            }
        }
    }

    fn unregister_memory(&self, py: Python<'_>, buffer_addr: usize) -> i32 {
        let Some(a) = self.active() else { return -1 };
        match block_on(py, a.engine.unregister_memory(buffer_addr)) {
            Ok(()) => {
                a.regions.lock().remove(&buffer_addr);
                0
            }
            Err(e) => {
                log::error(py, &format!("unregister_memory({buffer_addr:#x}): {e}"));
                -1
            }
        }
    }

    /// Register several ranges; 0 if all succeeded, else -1 (those that
    /// succeeded stay registered, as the reference).
    fn batch_register_memory(
        &self,
        py: Python<'_>,
        buffer_addresses: Vec<usize>,
        capacities: Vec<usize>,
    ) -> i32 {
        if buffer_addresses.len() != capacities.len() {
            log::error(
                py,
                "batch_register_memory: addresses and capacities differ in length",
            );
            return -1;
        }
        let mut rc = 0;
        for (addr, cap) in buffer_addresses.into_iter().zip(capacities) {
            if self.register_memory(py, addr, cap, "*") != 0 {
                rc = -1;
            }
        }
        rc
    }

    fn batch_unregister_memory(&self, py: Python<'_>, buffer_addresses: Vec<usize>) -> i32 {
        let mut rc = 0;
        for addr in buffer_addresses {
            if self.unregister_memory(py, addr) != 0 {
                rc = -1;
            }
        }
        rc
    }

    /// A registered buffer of `length` bytes from the managed pool (or a
    /// dedicated one when the pool cannot hold it); 0 on failure.
    fn allocate_managed_buffer(&self, py: Python<'_>, length: usize) -> usize {
        let Some(a) = self.active() else { return 0 };
        if length == 0 {
            return 0;
        }
        if let Some(pool) = &a.pool {
            if let Some(off) = a.alloc.lock().alloc(length) {
                return pool.addr() + off;
            }
        }
        match block_on(py, a.engine.allocate_managed_buffer(length)) {
            Ok(buf) => {
                let addr = buf.addr();
                a.regions.lock().insert(addr, buf.len());
                a.dedicated.lock().insert(addr, buf);
                addr
            }
            Err(e) => {
                log::error(py, &format!("allocate_managed_buffer({length}): {e}"));
                0
            }
        }
    }

    /// Give back a buffer from `allocate_managed_buffer`; 0, or -1 if
    /// `buffer_addr` is not one.
    #[pyo3(signature = (buffer_addr, length = 0))]
    fn free_managed_buffer(&self, py: Python<'_>, buffer_addr: usize, length: usize) -> i32 {
        let _ = length;
        let Some(a) = self.active() else { return -1 };
        if let Some(pool) = &a.pool {
            if buffer_addr >= pool.addr() && buffer_addr < pool.addr() + pool.len() {
                return if a.alloc.lock().free(buffer_addr - pool.addr()) {
                    0
                } else {
                    -1
                };
            }
        }
        let buf = a.dedicated.lock().remove(&buffer_addr);
        match buf {
            Some(buf) => {
                a.regions.lock().remove(&buffer_addr);
                // Dropping unregisters and unmaps once no transfer uses it.
                py.allow_threads(move || drop(buf));
                0
            }
            None => -1,
        }
    }

    /// Address of the first registered buffer of `segment_name` (this
    /// engine's own, or a peer's); 0 if unknown.
    fn get_first_buffer_address(&self, py: Python<'_>, segment_name: &str) -> u64 {
        let Some(a) = self.active() else { return 0 };
        if segment_name == a.engine.segment_name() {
            if let Some(p) = &a.pool {
                return p.addr() as u64;
            }
        }
        let r = block_on(py, async {
            let seg = a.engine.open_segment(segment_name).await?;
            Ok::<_, TransferError>(seg.descriptor().buffers.first().map(|b| b.addr))
        });
        match r {
            Ok(Some(addr)) => addr,
            Ok(None) => 0,
            Err(e) => {
                log::error(
                    py,
                    &format!("get_first_buffer_address({segment_name}): {e}"),
                );
                0
            }
        }
    }

    /// Copy `length` bytes of `src_data` (any bytes-like object) to
    /// `dest_address`, which must lie in memory registered through this
    /// engine. 0, or -1.
    fn write_bytes_to_buffer(
        &self,
        py: Python<'_>,
        dest_address: usize,
        src_data: &Bound<'_, PyAny>,
        length: usize,
    ) -> i32 {
        let Some(a) = self.active() else { return -1 };
        let Ok(src) = PyBuf::get(src_data, false) else {
            log::error(
                py,
                "write_bytes_to_buffer: source is not a bytes-like object",
            );
            return -1;
        };
        if length > src.len() || !a.inside_region(dest_address, length) {
            log::error(py, &format!("write_bytes_to_buffer: {dest_address:#x}+{length} outside registered memory or source"));
            return -1;
        }
        let data = &src.as_slice()[..length];
        let device = device_at(&a.engine, dest_address, length);
        // SAFETY: the destination range lies inside a buffer registered through
        // this engine (checked above), which is valid writable memory; device
        // memory is written by the copy engine, never by the CPU.
        let r =
            unsafe { staging::copy(dest_address, device, data.as_ptr() as usize, None, length) };
        match r {
            Ok(()) => 0,
            Err(e) => {
                log::error(py, &format!("write_bytes_to_buffer: {e}"));
                -1
            }
        }
    }

    /// `length` bytes at `source_address` (inside memory registered through
    /// this engine) as `bytes`.
    fn read_bytes_from_buffer<'py>(
        &self,
        py: Python<'py>,
        source_address: usize,
        length: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let Some(a) = self.active() else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "engine not initialized",
            ));
        };
        if !a.inside_region(source_address, length) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "{source_address:#x}+{length} is outside memory registered through this engine"
            )));
        }
        let device = device_at(&a.engine, source_address, length);
        PyBytes::new_with(py, length, |out| {
            // SAFETY: the source range lies inside registered memory (checked);
            // device memory is read by the copy engine, never by the CPU.
            unsafe {
                staging::copy(
                    out.as_mut_ptr() as usize,
                    None,
                    source_address,
                    device,
                    length,
                )
            }
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
        })
    }
}

/// The CUDA device of the registered buffer holding `[addr, addr+len)`, if
/// it is device memory (decided at registration).
fn device_at(engine: &mooncake_transfer::TransferEngine, addr: usize, len: usize) -> Option<i32> {
    engine
        .local_descriptor()
        .find_buffer(addr as u64, len as u64)
        .ok()
        .and_then(|b| mooncake_transfer::cuda::device_of_location(&b.name))
}
