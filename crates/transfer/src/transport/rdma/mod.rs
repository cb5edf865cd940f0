//! The rdma transport: one-sided RDMA READ/WRITE over RC queue pairs
//! (libibverbs; RoCE v2 or InfiniBand), behind the `rdma` cargo feature.
//!
//! What it owns:
//! - **Devices** (`MC_RDMA_DEVICES`, default every device with an active
//!   port): per NIC one verbs context, protection domain, completion queue
//!   (`MC_MAX_CQE`) and a poller thread that reaps signalled completions.
//! - **Memory registration**: every buffer the engine registers gets one MR
//!   per NIC covering exactly that buffer; the keys are published in the
//!   descriptor's `buffers[].lkey/rkey` arrays, index = NIC index in
//!   `transports.rdma.devices` (as the reference's descriptor). Unregistering
//!   deregisters the MRs before returning, so the NIC refuses the old rkeys.
//! - **Endpoints**: per (peer segment, local NIC, peer NIC) a set of
//!   `MC_NUM_QP_PER_EP` RC QPs, connected by a handshake over the peer's RPC
//!   port (the same port and cluster-token check as tcp: a peer that has not
//!   presented the token gets no QPs), state machine in [`core`].
//! - **Data path**: a slice picks a NIC pair ([`core::pick_nic`], skipping
//!   NICs out of rotation), a QP of the endpoint (bounded by `MC_MAX_WR`
//!   credits per QP and `MC_MAX_CQE` per device), posts one signalled WR and
//!   awaits its completion.
//!
//! Invariants:
//! - A posted work request holds a [`Lease`] on its local range and an
//!   `Arc` of its QP until its completion is polled: the local buffer cannot
//!   finish unregistering, and the QP cannot be destroyed, while the NIC may
//!   still touch it — even when the slice's future was dropped (timeout).
//! - Remote safety is the NIC's: an rkey covers exactly one registered
//!   buffer; an access outside it completes with a remote access error,
//!   reported as a permanent `OutOfRange` refusal (never retried).
//! - A failed endpoint's QPs are moved to the error state (their outstanding
//!   WRs flush) and replaced on next use; a local NIC whose port is not
//!   active is taken out of rotation for a while and its slices retried on
//!   another NIC (or transport, by the engine's retry).

pub mod core;
mod endpoint;
mod handshake;
mod verbs;

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use self::core::{
    choose_gid_index, classify, gid_from_string, gid_to_string, mtu_enum, pair_remote, pick_nic,
    CompletionClass, EndpointAction, NicHealth, RdmaConfig,
};
use self::endpoint::{Endpoint, QpSlot, ResetOnDrop};
use self::handshake::CONNECT_KIND;
pub use self::handshake::{ConnectReply, ConnectRequest, NicDesc, QpInfo, RdmaExtension};
use self::verbs::{Device, MemoryRegion, QueuePair, RemoteQp, PORT_ACTIVE};
use super::{MemoryKey, SharedTransport, Slice, Transport, TransportContext};
use crate::descriptor::SegmentDescriptor;
use crate::memory::{Lease, RegionInfo};
use crate::transport::tcp::client::Conn;
use crate::{Opcode, Protocol, TransferError};

/// How long a NIC whose port went down stays out of rotation before a probe.
const NIC_OUT_FOR: Duration = Duration::from_secs(1);
/// Most server-side endpoints kept (bounds what peers can make us allocate).
const MAX_SERVED_ENDPOINTS: usize = 4096;
/// Most QPs one handshake may ask for.
const MAX_QPS_PER_HANDSHAKE: usize = 64;

/// Names of the RDMA devices present (for `mooncake` diagnostics and tests).
pub fn device_names() -> Vec<String> {
    verbs::device_names()
}

/// A posted work request, kept until its completion is polled.
struct PendingWr {
    tx: oneshot::Sender<u32>,
    _lease: Lease,
    _qp: Arc<QueuePair>,
    _credits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

type PendingTable = Mutex<HashMap<u64, PendingWr>>;

#[derive(Debug)]
struct Nic {
    dev: Arc<Device>,
    gid: [u8; 16],
    gid_index: u8,
    mtu_bytes: u32,
    health: Mutex<NicHealth>,
    /// Work requests this device's CQ may still take.
    cq_credits: Arc<Semaphore>,
    pending: Arc<PendingTable>,
    /// Work requests posted / completed with an error on this NIC.
    posted: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for PendingWr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingWr")
    }
}

#[derive(Debug)]
struct MrSet {
    len: usize,
    /// One per NIC, in NIC order.
    mrs: Vec<MemoryRegion>,
}

/// See the module docs.
#[derive(Debug)]
pub struct RdmaTransport {
    ctx: TransportContext,
    cfg: RdmaConfig,
    nics: Vec<Nic>,
    regions: RwLock<BTreeMap<usize, MrSet>>,
    /// Initiator side: (peer segment, local NIC, peer NIC) → endpoint.
    endpoints: Mutex<HashMap<(String, usize, usize), Arc<Endpoint>>>,
    /// Target side: (initiator segment, its NIC index, our NIC) → QPs it connected.
    served: Mutex<HashMap<(String, usize, usize), Vec<QueuePair>>>,
    seq: AtomicU64,
    next_wr: AtomicU64,
    instance: u64,
    stop: Arc<AtomicBool>,
}

/// Build the rdma transport: open the configured (or every active) device.
/// Without a usable device this is a typed `TransportUnavailable`.
pub fn build(ctx: &TransportContext) -> Result<SharedTransport, TransferError> {
    let mut cfg = RdmaConfig::from_vars(|k| std::env::var(k).ok())?;
    if !ctx.config.rdma_devices.is_empty() {
        cfg.devices = ctx.config.rdma_devices.clone();
    }
    Ok(Arc::new(RdmaTransport::open(ctx, cfg)?))
}

fn unavailable(reason: String) -> TransferError {
    TransferError::TransportUnavailable {
        protocol: Protocol::Rdma,
        reason,
    }
}

fn open_nic(name: &str, cfg: &RdmaConfig) -> Result<Nic, TransferError> {
    let dev = Device::open(name, cfg.port, cfg.max_cqe)?;
    if dev.attr.state != PORT_ACTIVE {
        return Err(unavailable(format!(
            "{name} port {} is not active",
            cfg.port
        )));
    }
    let gid_index = match cfg.gid_index {
        Some(i) => i,
        None => {
            let entries: Vec<_> = (0..dev.attr.gid_tbl_len.min(256))
                .filter_map(|i| dev.gid(i).map(|(g, t)| (i, g, t)))
                .collect();
            choose_gid_index(&entries)
                .ok_or_else(|| unavailable(format!("{name} has no usable GID")))?
        }
    };
    let (gid, _) = dev
        .gid(gid_index)
        .ok_or_else(|| unavailable(format!("{name} has no GID at index {gid_index}")))?;
    let active_mtu = 128u32 << dev.attr.active_mtu.clamp(1, 5);
    let cqe = cfg.max_cqe.min(dev.attr.max_cqe.max(1));
    Ok(Nic {
        gid,
        gid_index: u8::try_from(gid_index)
            .map_err(|_| unavailable(format!("GID index {gid_index} too large")))?,
        mtu_bytes: cfg.mtu.min(active_mtu),
        health: Mutex::new(NicHealth::Up),
        cq_credits: Arc::new(Semaphore::new(cqe as usize)),
        pending: Arc::new(Mutex::new(HashMap::new())),
        posted: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        dev,
    })
}

/// Reap completions of one device until `stop`.
fn poller(dev: Arc<Device>, pending: Arc<PendingTable>, stop: Arc<AtomicBool>) {
    let mut ids = [0u64; 64];
    let mut statuses = [0u32; 64];
    while !stop.load(Ordering::Acquire) {
        let n = dev.poll(&mut ids, &mut statuses, 100);
        for i in 0..n {
            let entry = pending.lock().remove(&ids[i]);
            if let Some(wr) = entry {
                // The receiver may be gone (slice timed out): fine, the
                // lease and QP are released right here.
                let _ = wr.tx.send(statuses[i]);
            }
        }
    }
}

impl RdmaTransport {
    /// Open the NICs of `cfg` and start their pollers.
    pub fn open(ctx: &TransportContext, cfg: RdmaConfig) -> Result<Self, TransferError> {
        let present = verbs::device_names();
        if present.is_empty() {
            return Err(unavailable(
                "no RDMA device found (ibv_get_device_list lists none); use tcp".into(),
            ));
        }
        let wanted = if cfg.devices.is_empty() {
            present.clone()
        } else {
            cfg.devices.clone()
        };
        let mut nics = Vec::new();
        for name in &wanted {
            if !present.contains(name) {
                return Err(unavailable(format!(
                    "RDMA device {name} not found (present: {})",
                    present.join(", ")
                )));
            }
            match open_nic(name, &cfg) {
                Ok(n) => nics.push(n),
                // Every device by default: skip the unusable ones.
                Err(e) if cfg.devices.is_empty() => {
                    tracing::warn!(device = %name, error = %e, "skipping RDMA device")
                }
                Err(e) => return Err(e),
            }
        }
        if nics.is_empty() {
            return Err(unavailable(format!(
                "no RDMA device with an active port among {}",
                present.join(", ")
            )));
        }
        let stop = Arc::new(AtomicBool::new(false));
        for nic in &nics {
            let (dev, pending, stop) = (
                Arc::clone(&nic.dev),
                Arc::clone(&nic.pending),
                Arc::clone(&stop),
            );
            std::thread::Builder::new()
                .name(format!("rdma-cq-{}", nic.dev.name))
                .spawn(move || poller(dev, pending, stop))?;
        }
        tracing::info!(
            devices = ?nics.iter().map(|n| n.dev.name.as_str()).collect::<Vec<_>>(),
            "rdma transport ready"
        );
        Ok(RdmaTransport {
            ctx: ctx.clone(),
            cfg,
            nics,
            regions: RwLock::new(BTreeMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            served: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            next_wr: AtomicU64::new(1),
            instance: rand::random::<u64>() | 1,
            stop,
        })
    }

    /// Names of the NICs in use, in descriptor order.
    pub fn nic_names(&self) -> Vec<String> {
        self.nics.iter().map(|n| n.dev.name.clone()).collect()
    }

    /// Per NIC (descriptor order): work requests posted, and those that
    /// completed with an error.
    pub fn nic_counters(&self) -> Vec<(u64, u64)> {
        self.nics
            .iter()
            .map(|n| {
                (
                    n.posted.load(Ordering::Relaxed),
                    n.errors.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Take NIC `index` out of rotation for `for_` (tests and operators).
    pub fn take_nic_out(&self, index: usize, for_: Duration) {
        if let Some(n) = self.nics.get(index) {
            *n.health.lock() = NicHealth::Out(Instant::now() + for_);
        }
    }

    /// NIC `index` failed (its link went down): take it out of rotation for
    /// `for_` and reset every endpoint on it, so its in-flight work requests
    /// fail and the engine retries them on another NIC. What a port-down
    /// detection does; public for operators and tests.
    pub fn fail_nic(&self, index: usize, for_: Duration) {
        self.take_nic_out(index, for_);
        let eps: Vec<_> = self
            .endpoints
            .lock()
            .iter()
            .filter(|(k, _)| k.1 == index)
            .map(|(_, e)| Arc::clone(e))
            .collect();
        for ep in eps {
            ep.fail();
        }
    }

    fn peer_nics(peer: &SegmentDescriptor) -> Option<RdmaExtension> {
        let ext = peer.transports.get("rdma")?;
        serde_json::from_value(ext.clone()).ok()
    }

    fn lkey(&self, addr: usize, len: usize, nic: usize) -> Result<u32, TransferError> {
        let regions = self.regions.read();
        let (start, set) = regions
            .range(..=addr)
            .next_back()
            .ok_or(TransferError::LocalNotRegistered { addr, len })?;
        if addr + len > start + set.len {
            return Err(TransferError::LocalNotRegistered { addr, len });
        }
        set.mrs
            .get(nic)
            .map(|m| m.lkey)
            .ok_or(TransferError::LocalNotRegistered { addr, len })
    }

    /// Whether NIC `index` is in rotation now (checked again after waiting
    /// for a connection or credits: the NIC may have failed meanwhile).
    fn nic_usable(&self, index: usize) -> Result<(), TransferError> {
        match *self.nics[index].health.lock() {
            NicHealth::Out(until) if until > Instant::now() => {
                Err(TransferError::Protocol(format!(
                    "RDMA NIC {} ({index}) is out of rotation",
                    self.nics[index].dev.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// A NIC saw a failure: if its port is not active, take it out of rotation.
    fn check_nic(&self, index: usize) {
        let nic = &self.nics[index];
        let active = nic
            .dev
            .query_port()
            .map(|a| a.state == PORT_ACTIVE)
            .unwrap_or(false);
        if !active {
            tracing::warn!(device = %nic.dev.name, "RDMA port not active; NIC out of rotation");
            *nic.health.lock() = NicHealth::Out(Instant::now() + NIC_OUT_FOR);
        }
    }

    /// The connected endpoint for (peer, local NIC, peer NIC), connecting it
    /// if needed (one handshake at a time per endpoint).
    async fn endpoint(
        &self,
        peer: &SegmentDescriptor,
        ext: &RdmaExtension,
        li: usize,
        ri: usize,
    ) -> Result<Arc<Endpoint>, TransferError> {
        let ep = {
            let mut eps = self.endpoints.lock();
            let key = (peer.name.clone(), li, ri);
            let ep = eps
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Endpoint::new(peer.epoch)));
            if ep.epoch != peer.epoch {
                *ep = Arc::new(Endpoint::new(peer.epoch));
            }
            Arc::clone(ep)
        };
        if ep.state.lock().action(Instant::now()) == EndpointAction::Use {
            return Ok(ep);
        }
        let _g = ep.connect.lock().await;
        self.nic_usable(li)?;
        let action = ep.state.lock().action(Instant::now());
        match action {
            EndpointAction::Use => {}
            EndpointAction::Backoff => {
                return Err(TransferError::PeerUnreachable {
                    segment: peer.name.clone(),
                    message: "rdma endpoint failed recently; backing off".into(),
                })
            }
            EndpointAction::Connect => match self.handshake(peer, ext, ri, li).await {
                Ok(slots) => {
                    *ep.qps.write() = slots;
                    ep.state.lock().connected();
                }
                Err(e) => {
                    ep.state.lock().failed(Instant::now());
                    self.check_nic(li);
                    return Err(e);
                }
            },
        }
        drop(_g);
        Ok(ep)
    }

    async fn handshake(
        &self,
        peer: &SegmentDescriptor,
        ext: &RdmaExtension,
        ri: usize,
        li: usize,
    ) -> Result<Vec<QpSlot>, TransferError> {
        let peer_nic = ext.devices[ri].name.as_str();
        let nic = &self.nics[li];
        let mut qps = Vec::with_capacity(self.cfg.qps_per_peer);
        let mut infos = Vec::new();
        for _ in 0..self.cfg.qps_per_peer {
            let qp = nic.dev.create_qp(self.cfg.max_wr)?;
            infos.push(QpInfo {
                qpn: qp.qpn,
                psn: rand::random::<u32>() & 0xff_ffff,
            });
            qps.push(qp);
        }
        let req = ConnectRequest {
            kind: CONNECT_KIND.into(),
            segment: self.ctx.segment_name.clone(),
            nic: nic.dev.name.clone(),
            nic_index: li,
            peer_nic: peer_nic.to_string(),
            peer_nic_index: Some(ri),
            gid: gid_to_string(&nic.gid),
            lid: nic.dev.attr.lid,
            mtu: nic.mtu_bytes,
            qps: infos.clone(),
        };
        let body = serde_json::to_vec(&req).expect("request serialises");
        let timeout = self.ctx.config.connect_timeout;
        let reply = async {
            let mut conn = Conn::connect(
                &peer.name,
                &peer.rpc_host,
                peer.rpc_port,
                &self.ctx.auth,
                timeout,
            )
            .await?;
            tokio::time::timeout(timeout, conn.transport_rpc(&body))
                .await
                .map_err(|_| TransferError::PeerUnreachable {
                    segment: peer.name.clone(),
                    message: "rdma handshake timed out".into(),
                })?
        }
        .await?;
        let reply: ConnectReply = serde_json::from_slice(&reply).map_err(|e| {
            TransferError::Protocol(format!("bad rdma handshake reply from {}: {e}", peer.name))
        })?;
        if ext.instance != 0 && reply.instance != ext.instance {
            // Our descriptor is stale: its buffers and rkeys are gone. The
            // engine refetches the descriptor on PeerUnreachable.
            return Err(TransferError::PeerUnreachable {
                segment: peer.name.clone(),
                message: "peer restarted (rdma instance changed)".into(),
            });
        }
        if reply.qps.len() != qps.len() {
            return Err(TransferError::Protocol(format!(
                "{} answered {} QPs for {}",
                peer.name,
                reply.qps.len(),
                qps.len()
            )));
        }
        let gid = gid_from_string(&reply.gid)
            .ok_or_else(|| TransferError::Protocol(format!("bad GID {:?}", reply.gid)))?;
        let mtu = mtu_enum(reply.mtu.min(nic.mtu_bytes))
            .ok_or_else(|| TransferError::Protocol(format!("bad MTU {}", reply.mtu)))?;
        let mut slots = Vec::new();
        for ((qp, mine), theirs) in qps.into_iter().zip(&infos).zip(&reply.qps) {
            qp.connect(&self.remote(nic, gid, reply.lid, mtu, *theirs, mine.psn))?;
            slots.push(QpSlot {
                qp: Arc::new(qp),
                credits: Arc::new(Semaphore::new(self.cfg.max_wr as usize)),
            });
        }
        tracing::debug!(peer = %peer.name, nic = %nic.dev.name, %peer_nic, "rdma endpoint connected");
        Ok(slots)
    }

    fn remote(
        &self,
        nic: &Nic,
        gid: [u8; 16],
        lid: u16,
        mtu: u8,
        theirs: QpInfo,
        my_psn: u32,
    ) -> RemoteQp {
        RemoteQp {
            gid,
            qpn: theirs.qpn,
            psn: theirs.psn,
            lid,
            sgid_index: nic.gid_index,
            mtu,
            timeout: self.cfg.timeout,
            retry_cnt: self.cfg.retry_cnt,
            rnr_retry: 7,
            max_rd_atomic: 16,
            local_psn: my_psn,
        }
    }

    /// Target side of the handshake.
    fn serve_connect(&self, req: ConnectRequest) -> Result<ConnectReply, TransferError> {
        let bad = |m: String| TransferError::Protocol(format!("rdma handshake: {m}"));
        if req.qps.is_empty() || req.qps.len() > MAX_QPS_PER_HANDSHAKE {
            return Err(bad(format!("{} QPs asked", req.qps.len())));
        }
        let li = match req.peer_nic_index {
            Some(i) if self.nics.get(i).is_some_and(|n| n.dev.name == req.peer_nic) => i,
            _ => self
                .nics
                .iter()
                .position(|n| n.dev.name == req.peer_nic)
                .ok_or_else(|| bad(format!("no NIC {:?} here", req.peer_nic)))?,
        };
        let nic = &self.nics[li];
        let gid = gid_from_string(&req.gid).ok_or_else(|| bad(format!("bad GID {:?}", req.gid)))?;
        let mtu = mtu_enum(req.mtu.min(nic.mtu_bytes))
            .ok_or_else(|| bad(format!("bad MTU {}", req.mtu)))?;
        let key = (req.segment.clone(), req.nic_index, li);
        {
            let served = self.served.lock();
            if served.len() >= MAX_SERVED_ENDPOINTS && !served.contains_key(&key) {
                return Err(bad("too many rdma endpoints".into()));
            }
        }
        let mut qps = Vec::new();
        let mut infos = Vec::new();
        for theirs in &req.qps {
            let qp = nic.dev.create_qp(self.cfg.max_wr)?;
            let psn = rand::random::<u32>() & 0xff_ffff;
            qp.connect(&self.remote(nic, gid, req.lid, mtu, *theirs, psn))?;
            infos.push(QpInfo { qpn: qp.qpn, psn });
            qps.push(qp);
        }
        // A reconnecting initiator (restarted, or after an error) replaces its
        // old QPs; they only ever answered, so nothing is pending on them.
        self.served.lock().insert(key, qps);
        Ok(ConnectReply {
            instance: self.instance,
            gid: gid_to_string(&nic.gid),
            lid: nic.dev.attr.lid,
            mtu: nic.mtu_bytes,
            qps: infos,
        })
    }

    async fn post_and_wait(
        &self,
        li: usize,
        ep: &Endpoint,
        slice: &Slice,
        lkey: u32,
        rkey: u32,
    ) -> Result<(u32, Arc<QueuePair>), TransferError> {
        let nic = &self.nics[li];
        let (qp, qp_credit) = {
            let slots = ep.qps.read();
            if slots.is_empty() {
                return Err(TransferError::PeerUnreachable {
                    segment: String::new(),
                    message: "rdma endpoint was reset".into(),
                });
            }
            let s = &slots[ep.next.fetch_add(1, Ordering::Relaxed) % slots.len()];
            (Arc::clone(&s.qp), Arc::clone(&s.credits))
        };
        let closed = |_| TransferError::PeerUnreachable {
            segment: String::new(),
            message: "rdma endpoint was reset".into(),
        };
        let qp_permit = qp_credit.acquire_owned().await.map_err(closed)?;
        let cq_permit = Arc::clone(&nic.cq_credits)
            .acquire_owned()
            .await
            .map_err(|_| TransferError::ShutDown)?;
        self.nic_usable(li)?;
        let lease = self.ctx.registry.lease_local(slice.local_addr, slice.len)?;
        let (tx, rx) = oneshot::channel();
        let id = self.next_wr.fetch_add(1, Ordering::Relaxed);
        nic.pending.lock().insert(
            id,
            PendingWr {
                tx,
                _lease: lease,
                _qp: Arc::clone(&qp),
                _credits: (qp_permit, cq_permit),
            },
        );
        // SAFETY: the local range is inside a buffer registered with `lkey`
        // (looked up in our MR table) and the lease stored with the pending
        // entry keeps it registered until the completion is polled.
        let posted = unsafe {
            qp.post(
                slice.opcode == Opcode::Write,
                id,
                slice.local_addr,
                slice.len as u32,
                lkey,
                slice.remote_addr,
                rkey,
            )
        };
        if let Err(e) = posted {
            nic.pending.lock().remove(&id);
            return Err(e);
        }
        // Dropped before the completion (the request's deadline passed): the
        // peer may be gone without the NIC noticing yet. Reset the endpoint so
        // its WRs flush (releasing their leases) and the next slice reconnects.
        nic.posted.fetch_add(1, Ordering::Relaxed);
        let mut guard = ResetOnDrop(Some((ep, &qp)));
        let status = rx.await.map_err(|_| TransferError::ShutDown);
        guard.0 = None;
        drop(guard);
        Ok((status?, qp))
    }
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

#[async_trait::async_trait]
impl Transport for RdmaTransport {
    fn protocol(&self) -> Protocol {
        Protocol::Rdma
    }

    fn register_memory_keys(&self, region: &RegionInfo) -> Result<Vec<MemoryKey>, TransferError> {
        let mut mrs = Vec::with_capacity(self.nics.len());
        for nic in &self.nics {
            // SAFETY: the engine's registration contract keeps the range valid
            // until unregister_memory, which drops these MRs first.
            mrs.push(unsafe { nic.dev.register(region.addr, region.len)? });
        }
        let keys = mrs
            .iter()
            .map(|m| MemoryKey {
                lkey: m.lkey,
                rkey: m.rkey,
            })
            .collect();
        self.regions.write().insert(
            region.addr,
            MrSet {
                len: region.len,
                mrs,
            },
        );
        Ok(keys)
    }

    fn unregister_memory(&self, region: &RegionInfo) -> Result<(), TransferError> {
        // Dropping the MRs deregisters them: the NIC refuses their keys from now.
        self.regions.write().remove(&region.addr);
        Ok(())
    }

    fn descriptor_extension(&self) -> Option<serde_json::Value> {
        let ext = RdmaExtension {
            devices: self
                .nics
                .iter()
                .map(|n| NicDesc {
                    name: n.dev.name.clone(),
                    lid: n.dev.attr.lid,
                    gid: gid_to_string(&n.gid),
                })
                .collect(),
            instance: self.instance,
        };
        serde_json::to_value(ext).ok()
    }

    fn can_reach(&self, peer: &SegmentDescriptor, remote_addr: u64, len: usize) -> bool {
        peer.has_protocol("rdma")
            && peer.rpc_port != 0
            && Self::peer_nics(peer).is_some_and(|e| !e.devices.is_empty())
            && peer
                .find_buffer(remote_addr, len as u64)
                .is_ok_and(|b| !b.rkey.is_empty())
    }

    async fn execute(
        &self,
        peer: &Arc<SegmentDescriptor>,
        slice: &Slice,
    ) -> Result<(), TransferError> {
        let unreachable = |m: String| TransferError::PeerUnreachable {
            segment: peer.name.clone(),
            message: m,
        };
        if slice.len > u32::MAX as usize {
            return Err(TransferError::InvalidConfig(format!(
                "rdma slice of {} bytes exceeds one work request (slice_size too large)",
                slice.len
            )));
        }
        let ext = Self::peer_nics(peer).ok_or_else(|| unreachable("no rdma devices".into()))?;
        let buf = peer.find_buffer(slice.remote_addr, slice.len as u64)?;
        let now = Instant::now();
        let health: Vec<NicHealth> = self.nics.iter().map(|n| *n.health.lock()).collect();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let li = pick_nic(&health, seq, slice.attempt, now)
            .ok_or_else(|| unreachable("every local RDMA NIC is out of rotation".into()))?;
        let ri = pair_remote(li, ext.devices.len(), slice.attempt)
            .ok_or_else(|| unreachable("peer publishes no rdma devices".into()))?;
        let rkey = *buf.rkey.get(ri).ok_or_else(|| {
            unreachable(format!("buffer {:#x} has no rkey for NIC {ri}", buf.addr))
        })?;
        let lkey = self.lkey(slice.local_addr, slice.len, li)?;
        let ep = self.endpoint(peer, &ext, li, ri).await?;
        // Errors before a completion (credits closed, post refused) come from
        // an endpoint already reset: retried without resetting it again.
        let (status, qp) = self.post_and_wait(li, &ep, slice, lkey, rkey).await?;
        if status != 0 {
            self.nics[li].errors.fetch_add(1, Ordering::Relaxed);
        }
        match classify(status) {
            CompletionClass::Ok => Ok(()),
            CompletionClass::Flushed => Err(TransferError::Protocol(format!(
                "work request flushed on {} (endpoint reset)",
                self.nics[li].dev.name
            ))),
            CompletionClass::RemoteAccess => {
                ep.fail_qp(&qp);
                Err(TransferError::OutOfRange {
                    addr: slice.remote_addr,
                    len: slice.len as u64,
                    buffer_addr: buf.addr,
                    buffer_len: buf.length,
                })
            }
            class => {
                ep.fail_qp(&qp);
                self.check_nic(li);
                let m = format!(
                    "work completion status {status} on {} ({class:?})",
                    self.nics[li].dev.name
                );
                // Only a silent peer makes the engine forget it (and every
                // endpoint to it); a flush after our own reset is just retried.
                Err(if class == CompletionClass::PeerLost {
                    unreachable(m)
                } else {
                    TransferError::Protocol(m)
                })
            }
        }
    }

    fn handle_rpc(&self, request: &[u8]) -> Result<Vec<u8>, TransferError> {
        let req: ConnectRequest = serde_json::from_slice(request)
            .map_err(|e| TransferError::Protocol(format!("bad rdma handshake: {e}")))?;
        if req.kind != CONNECT_KIND {
            return Err(TransferError::Protocol(format!(
                "unknown transport rpc {:?}",
                req.kind
            )));
        }
        let reply = self.serve_connect(req)?;
        Ok(serde_json::to_vec(&reply).expect("reply serialises"))
    }

    fn forget_peer(&self, segment: &str) {
        let dropped: Vec<_> = {
            let mut eps = self.endpoints.lock();
            let keys: Vec<_> = eps.keys().filter(|k| k.0 == segment).cloned().collect();
            keys.into_iter().filter_map(|k| eps.remove(&k)).collect()
        };
        for ep in dropped {
            ep.fail();
        }
        self.served.lock().retain(|k, _| k.0 != segment);
    }

    async fn shutdown(&self) {
        let eps: Vec<_> = self.endpoints.lock().drain().map(|(_, e)| e).collect();
        for ep in eps {
            ep.fail();
        }
        self.served.lock().clear();
        for nic in &self.nics {
            nic.cq_credits.close();
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
