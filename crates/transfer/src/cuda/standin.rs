//! The host stand-in copy engine: a test double whose "device memory" is
//! ordinary host memory. Installed by tests ([`super::install_host_standin`])
//! so the staging pipeline, the shm and local paths and the registration
//! rules run through the same code as with CUDA on machines without a GPU.
//! It claims one device, trusts declared locations, copies with memmove
//! immediately (every stream is always done) and has no IPC, so same-host
//! device transfers take the staging fallback.

use super::{CopyEngine, CopyStream, DeviceBuf, IpcHandle, PinnedBuf, PointerKind};
use crate::TransferError;

/// See the module docs.
#[derive(Debug)]
pub struct HostStandIn;

struct Immediate;

impl CopyStream for Immediate {
    fn d2h(&mut self, dst: *mut u8, src: usize, len: usize) -> Result<(), TransferError> {
        // SAFETY: the staging pipeline passes a pinned buffer of >= len bytes
        // and a leased source range; the two never overlap.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst, len) };
        Ok(())
    }

    fn h2d(&mut self, dst: usize, src: *const u8, len: usize) -> Result<(), TransferError> {
        // SAFETY: as for d2h, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(src, dst as *mut u8, len) };
        Ok(())
    }

    fn query(&mut self) -> Result<bool, TransferError> {
        Ok(true)
    }
}

fn host_alloc(len: usize) -> *mut u8 {
    Box::into_raw(vec![0u8; len.max(1)].into_boxed_slice()).cast::<u8>()
}

fn host_free(ptr: *mut u8, len: usize) {
    // SAFETY: ptr came from host_alloc(len): a leaked boxed slice of max(len,1).
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len.max(1))) });
}

impl CopyEngine for HostStandIn {
    fn describe(&self) -> String {
        "host stand-in copy engine (tests; no GPU)".into()
    }

    fn device_count(&self) -> i32 {
        1
    }

    fn is_standin(&self) -> bool {
        true
    }

    fn classify(&self, _addr: usize) -> PointerKind {
        PointerKind::Unknown
    }

    fn allocation_range(&self, addr: usize, _device: i32) -> Result<(usize, usize), TransferError> {
        Ok((addr, usize::MAX - addr))
    }

    fn copy(&self, dst: usize, src: usize, len: usize, _device: i32) -> Result<(), TransferError> {
        // SAFETY: callers pass two leased ranges; memmove tolerates overlap.
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, len) };
        Ok(())
    }

    fn stream(&'static self, _device: i32) -> Result<Box<dyn CopyStream>, TransferError> {
        Ok(Box::new(Immediate))
    }

    fn alloc_pinned(&'static self, len: usize, _device: i32) -> Result<PinnedBuf, TransferError> {
        Ok(PinnedBuf::new(host_alloc(len), len, move |p| {
            host_free(p, len)
        }))
    }

    fn alloc_device(&'static self, len: usize, device: i32) -> Result<DeviceBuf, TransferError> {
        let p = host_alloc(len) as usize;
        Ok(DeviceBuf::new(p, len, device, move |a| {
            host_free(a as *mut u8, len)
        }))
    }

    fn synchronize(&self, _device: i32) -> Result<(), TransferError> {
        Ok(())
    }

    fn synchronize_stream(&self, _stream: usize, _device: i32) -> Result<(), TransferError> {
        Ok(())
    }

    fn ipc_handle(&self, _addr: usize, _device: i32) -> Result<IpcHandle, TransferError> {
        Err(TransferError::Cuda("the host stand-in has no IPC".into()))
    }

    fn ipc_open(&self, _handle: &[u8], _device: i32) -> Result<usize, TransferError> {
        Err(TransferError::Cuda("the host stand-in has no IPC".into()))
    }

    fn ipc_close(&self, _base: usize, _device: i32) {}
}
