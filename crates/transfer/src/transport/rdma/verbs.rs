//! Safe handles over `shim.c` (the only code that talks to libibverbs).
//!
//! Ownership: a [`Device`] owns the verbs context, its protection domain, its
//! one completion queue and channel. [`MemoryRegion`]s and [`QueuePair`]s hold
//! an `Arc<Device>`, so the device is closed only after every MR and QP on it
//! is gone. Each handle is released exactly once, by its `Drop`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Arc;

use crate::{Protocol, TransferError};

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PortAttr {
    pub state: u32,
    pub active_mtu: u32,
    pub link_layer: u32,
    pub gid_tbl_len: u32,
    pub lid: u16,
    pad: u16,
    pub max_qp_wr: u32,
    pub max_cqe: u32,
    pub max_qp: u32,
}

/// `IBV_PORT_ACTIVE`.
pub const PORT_ACTIVE: u32 = 4;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RemoteQp {
    pub gid: [u8; 16],
    pub qpn: u32,
    pub psn: u32,
    pub lid: u16,
    pub sgid_index: u8,
    pub mtu: u8,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub max_rd_atomic: u8,
    pub local_psn: u32,
}

#[repr(C)]
struct RawDev {
    _opaque: [u8; 0],
}
#[repr(C)]
struct RawMr {
    _opaque: [u8; 0],
}
#[repr(C)]
struct RawQp {
    _opaque: [u8; 0],
}

#[link(name = "ibverbs")]
extern "C" {}

extern "C" {
    fn mc_device_count() -> c_int;
    fn mc_device_name(i: c_int, buf: *mut c_char, len: usize) -> c_int;
    fn mc_dev_open(
        name: *const c_char,
        port: u8,
        cqe: c_int,
        out: *mut PortAttr,
        err: *mut c_int,
    ) -> *mut RawDev;
    fn mc_dev_close(d: *mut RawDev);
    fn mc_dev_query_port(d: *mut RawDev, out: *mut PortAttr) -> c_int;
    fn mc_dev_gid(d: *mut RawDev, index: u32, gid: *mut u8, gid_type: *mut u32) -> c_int;
    fn mc_reg_mr(
        d: *mut RawDev,
        addr: *mut c_void,
        len: usize,
        lkey: *mut u32,
        rkey: *mut u32,
        err: *mut c_int,
    ) -> *mut RawMr;
    fn mc_dereg_mr(mr: *mut RawMr) -> c_int;
    fn mc_qp_create(d: *mut RawDev, max_wr: u32, qpn: *mut u32, err: *mut c_int) -> *mut RawQp;
    fn mc_qp_connect(qp: *mut RawQp, port: u8, r: *const RemoteQp) -> c_int;
    fn mc_qp_error(qp: *mut RawQp) -> c_int;
    fn mc_qp_destroy(qp: *mut RawQp) -> c_int;
    fn mc_post_rw(
        qp: *mut RawQp,
        write: c_int,
        wr_id: u64,
        laddr: u64,
        len: u32,
        lkey: u32,
        raddr: u64,
        rkey: u32,
    ) -> c_int;
    fn mc_poll(
        d: *mut RawDev,
        max: c_int,
        wr_ids: *mut u64,
        statuses: *mut u32,
        timeout_ms: c_int,
    ) -> c_int;
}

fn verbs_error(what: &str, errno: c_int) -> TransferError {
    TransferError::TransportUnavailable {
        protocol: Protocol::Rdma,
        reason: format!("{what}: {}", std::io::Error::from_raw_os_error(errno)),
    }
}

/// Names of the RDMA devices libibverbs sees (empty without devices).
pub fn device_names() -> Vec<String> {
    // SAFETY: plain calls; the buffer outlives the call and is NUL-terminated
    // by the shim.
    unsafe {
        let n = mc_device_count();
        let mut out = Vec::new();
        for i in 0..n {
            let mut buf = [0 as c_char; 64];
            if mc_device_name(i, buf.as_mut_ptr(), buf.len()) == 0 {
                out.push(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned());
            }
        }
        out
    }
}

/// An open device port with its PD and CQ.
#[derive(Debug)]
pub struct Device {
    raw: *mut RawDev,
    pub name: String,
    pub port: u8,
    pub attr: PortAttr,
}

// SAFETY: libibverbs objects are thread-safe (the provider locks internally);
// the raw pointer is only freed in Drop, when no other reference exists.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Device {
    pub fn open(name: &str, port: u8, cqe: u32) -> Result<Arc<Device>, TransferError> {
        let cname = CString::new(name).map_err(|_| verbs_error("device name", libc::EINVAL))?;
        let mut attr = PortAttr::default();
        let mut err = 0;
        // SAFETY: valid C string and out-pointers for the duration of the call.
        let raw = unsafe { mc_dev_open(cname.as_ptr(), port, cqe as c_int, &mut attr, &mut err) };
        if raw.is_null() {
            return Err(verbs_error(&format!("opening {name} port {port}"), err));
        }
        Ok(Arc::new(Device {
            raw,
            name: name.to_string(),
            port,
            attr,
        }))
    }

    /// Current port attributes (state changes when the link goes down).
    pub fn query_port(&self) -> Result<PortAttr, TransferError> {
        let mut attr = PortAttr::default();
        // SAFETY: self.raw is live; out-pointer valid.
        let rc = unsafe { mc_dev_query_port(self.raw, &mut attr) };
        if rc != 0 {
            return Err(verbs_error("ibv_query_port", rc));
        }
        Ok(attr)
    }

    /// GID table entry: bytes and type (0 IB, 1 RoCE v1, 2 RoCE v2).
    pub fn gid(&self, index: u32) -> Option<([u8; 16], u32)> {
        let mut gid = [0u8; 16];
        let mut ty = 0u32;
        // SAFETY: self.raw is live; gid has 16 bytes.
        let rc = unsafe { mc_dev_gid(self.raw, index, gid.as_mut_ptr(), &mut ty) };
        (rc == 0).then_some((gid, ty))
    }

    /// Register `[addr, addr+len)` for local write and remote read/write.
    ///
    /// # Safety
    /// The range must be valid memory of this process that stays mapped until
    /// the returned region is dropped.
    pub unsafe fn register(
        self: &Arc<Self>,
        addr: usize,
        len: usize,
    ) -> Result<MemoryRegion, TransferError> {
        let (mut lkey, mut rkey, mut err) = (0, 0, 0);
        let raw = mc_reg_mr(
            self.raw,
            addr as *mut c_void,
            len,
            &mut lkey,
            &mut rkey,
            &mut err,
        );
        if raw.is_null() {
            return Err(verbs_error(&format!("ibv_reg_mr on {}", self.name), err));
        }
        Ok(MemoryRegion {
            raw,
            lkey,
            rkey,
            _dev: Arc::clone(self),
        })
    }

    pub fn create_qp(self: &Arc<Self>, max_wr: u32) -> Result<QueuePair, TransferError> {
        let (mut qpn, mut err) = (0, 0);
        // SAFETY: self.raw is live; out-pointers valid.
        let raw = unsafe { mc_qp_create(self.raw, max_wr, &mut qpn, &mut err) };
        if raw.is_null() {
            return Err(verbs_error(&format!("ibv_create_qp on {}", self.name), err));
        }
        Ok(QueuePair {
            raw,
            qpn,
            dev: Arc::clone(self),
        })
    }

    /// Completions into `ids`/`statuses`; blocks up to `timeout_ms` when none
    /// is ready. Only one thread (the device's poller) may call this.
    pub fn poll(&self, ids: &mut [u64; 64], statuses: &mut [u32; 64], timeout_ms: i32) -> usize {
        // SAFETY: arrays hold 64 entries, the shim writes at most 64.
        let n = unsafe {
            mc_poll(
                self.raw,
                64,
                ids.as_mut_ptr(),
                statuses.as_mut_ptr(),
                timeout_ms,
            )
        };
        n.max(0) as usize
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: last reference; every MR and QP (which hold an Arc) is gone.
        unsafe { mc_dev_close(self.raw) }
    }
}

/// A registered memory region (deregistered on drop: the NIC stops
/// accepting its rkey before `drop` returns).
#[derive(Debug)]
pub struct MemoryRegion {
    raw: *mut RawMr,
    pub lkey: u32,
    pub rkey: u32,
    _dev: Arc<Device>,
}

// SAFETY: see Device.
unsafe impl Send for MemoryRegion {}
unsafe impl Sync for MemoryRegion {}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: registered by us, deregistered once.
        let rc = unsafe { mc_dereg_mr(self.raw) };
        if rc != 0 {
            tracing::warn!(rc, "ibv_dereg_mr failed");
        }
    }
}

/// An RC queue pair on its device's CQ.
#[derive(Debug)]
pub struct QueuePair {
    raw: *mut RawQp,
    pub qpn: u32,
    pub dev: Arc<Device>,
}

// SAFETY: see Device (ibv_post_send is thread-safe per QP).
unsafe impl Send for QueuePair {}
unsafe impl Sync for QueuePair {}

impl QueuePair {
    pub fn connect(&self, remote: &RemoteQp) -> Result<(), TransferError> {
        // SAFETY: live QP; remote points to a valid struct.
        let rc = unsafe { mc_qp_connect(self.raw, self.dev.port, remote) };
        if rc != 0 {
            return Err(verbs_error("connecting a queue pair (RTR/RTS)", rc));
        }
        Ok(())
    }

    /// Move to the error state: outstanding requests flush.
    pub fn set_error(&self) {
        // SAFETY: live QP.
        let _ = unsafe { mc_qp_error(self.raw) };
    }

    /// Post one signalled READ/WRITE.
    ///
    /// # Safety
    /// `[laddr, laddr+len)` must lie in memory registered with `lkey` and stay
    /// valid until the completion with `wr_id` has been polled.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn post(
        &self,
        write: bool,
        wr_id: u64,
        laddr: usize,
        len: u32,
        lkey: u32,
        raddr: u64,
        rkey: u32,
    ) -> Result<(), TransferError> {
        let rc = mc_post_rw(
            self.raw,
            write as c_int,
            wr_id,
            laddr as u64,
            len,
            lkey,
            raddr,
            rkey,
        );
        if rc != 0 {
            return Err(TransferError::PeerUnreachable {
                segment: String::new(),
                message: format!("ibv_post_send: {}", std::io::Error::from_raw_os_error(rc)),
            });
        }
        Ok(())
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once; the transport drops a QP only
        // after all its work requests completed (pending entries hold it).
        let rc = unsafe { mc_qp_destroy(self.raw) };
        if rc != 0 {
            tracing::warn!(rc, "ibv_destroy_qp failed");
        }
    }
}
