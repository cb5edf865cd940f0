//! The store client: the Rust API of Mooncake Store.
//!
//! A [`Client`] owns one Transfer Engine (its segment name is the client's
//! identity in data placement), one [`MasterClient`] connection, optionally one
//! *mounted segment* (memory it contributes to the pool, registered with the
//! master and kept alive by a background heartbeat) and optionally one
//! *staging buffer* (`local_buffer_size`) through which operations on plain
//! memory (`put(&[u8])`, `get() -> Vec<u8>`) copy their bytes.
//!
//! Data never passes through the master: `put` asks the master where to write
//! (`put_start`), writes every replica with the Transfer Engine, then makes the
//! object visible (`put_end`), or frees the reservation (`put_revoke`) on any
//! failure, so a failed put leaves nothing visible. `get` asks for the replica
//! list (which grants the object a lease), reads the nearest replica — own
//! segment by memcpy, same host through shared memory, else tcp — and falls
//! back to the next replica when a read fails.
//!
//! Invariants:
//! * a get returns the bytes of exactly one complete object: replicas are only
//!   listed after `put_end`, and the object cannot be removed or evicted while
//!   our lease lasts; a read that outlasts the lease (`lease_ttl`, the master's
//!   `default_kv_lease_ttl`) is discarded and retried;
//! * every replica of one object has the same size, else the read fails with
//!   [`ClientError::InconsistentRead`];
//! * a whole-object read whose bytes do not match the CRC32C recorded at put
//!   ([`ReplicateConfig::with_checksum`](crate::protocol::ReplicateConfig), on by
//!   default) is never returned: the next replica is tried (see `checksum.rs`);
//! * a transfer only ever names memory inside a registered buffer (the staging
//!   buffer, the mounted segment, or a caller's [`Region`]).

mod batch;
mod checksum;
mod config;
mod error;
mod gather;
mod io;
mod ops;
mod plan;
mod range;
mod session;
mod staging;

pub use checksum::checksum_failures;
pub use config::ClientConfig;
pub use error::{
    to_return_code, ClientError, Result, CODE_BUFFER_OVERFLOW, CODE_INTERNAL, CODE_INVALID_PARAMS,
    CODE_INVALID_READ, CODE_TRANSFER_FAIL, CODE_UNAVAILABLE,
};
pub use range::RangeRead;
pub use session::PutSession;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use mooncake_transfer::{ManagedBuffer, TransferEngine};
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use mooncake_store_protocol::{ClientId, ClientOptions, MasterClient, SegmentDesc};
use staging::Staging;

/// A byte range of registered memory a caller lends to `get_into`/`put_from`.
///
/// Built safely from a [`ManagedBuffer`] of this client's engine (see
/// [`Client::allocate_buffer`]), or unsafely from raw memory the caller
/// registered with [`Client::register_buffer`].
#[derive(Debug, Clone, Copy)]
pub struct Region<'a> {
    addr: usize,
    len: usize,
    _buf: PhantomData<&'a ManagedBuffer>,
}

impl<'a> Region<'a> {
    /// `[offset, offset + len)` of `buf`; fails if the range leaves the buffer.
    pub fn of(buf: &'a ManagedBuffer, offset: usize, len: usize) -> Result<Region<'a>> {
        match offset.checked_add(len) {
            Some(end) if end <= buf.len() => Ok(Region {
                addr: buf.addr() + offset,
                len,
                _buf: PhantomData,
            }),
            _ => Err(ClientError::InvalidParams(format!(
                "region {offset}+{len} outside buffer of {} bytes",
                buf.len()
            ))),
        }
    }

    /// The whole of `buf`.
    pub fn whole(buf: &'a ManagedBuffer) -> Region<'a> {
        Region {
            addr: buf.addr(),
            len: buf.len(),
            _buf: PhantomData,
        }
    }

    /// A region of raw memory.
    ///
    /// # Safety
    /// `[addr, addr + len)` must lie inside memory registered with this client's
    /// engine ([`Client::register_buffer`]) and stay valid, and not be accessed
    /// by anything else in conflicting ways, while the region is used.
    pub unsafe fn from_raw(addr: usize, len: usize) -> Region<'static> {
        Region {
            addr,
            len,
            _buf: PhantomData,
        }
    }

    pub fn addr(&self) -> usize {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The segment this client contributes to the pool.
pub(crate) struct Mounted {
    buffer: ManagedBuffer,
    desc: SegmentDesc,
}

pub(crate) struct Inner {
    config: ClientConfig,
    engine: Arc<TransferEngine>,
    master: MasterClient,
    id: ClientId,
    segment_name: String,
    host: String,
    mounted: Mutex<Option<Arc<Mounted>>>,
    staging: Option<Arc<Staging>>,
    /// Rotates the start replica among equally near ones.
    spread: AtomicUsize,
    closed: AtomicBool,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Incarnation of the master our transfer descriptor was published under (0:
    /// unknown); see the heartbeat loop.
    master_incarnation: std::sync::atomic::AtomicU64,
}

/// Handle to the store. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("segment", &self.inner.segment_name)
            .field("master", &self.inner.config.master_server_addr)
            .field("id", &self.inner.id.to_string())
            .finish()
    }
}

impl Client {
    /// Start the Transfer Engine, connect to the master, allocate the staging
    /// buffer and mount `global_segment_size` bytes (when > 0).
    #[tracing::instrument(name = "store.setup", skip_all, fields(master = %config.master_server_addr))]
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        config.validate()?;
        let engine = TransferEngine::start(config.engine_config()?)
            .await
            .map_err(|e| ClientError::Setup(format!("transfer engine: {e}")))?;
        let opts = ClientOptions {
            rpc_timeout: config.rpc_timeout,
            ..ClientOptions::default()
        };
        let master = MasterClient::connect_with(&config.master_server_addr, opts)
            .await
            .map_err(|e| {
                ClientError::Setup(format!("master at {}: {e}", config.master_server_addr))
            })?;
        let staging = if config.local_buffer_size > 0 {
            let buf = engine
                .allocate_managed_buffer(config.local_buffer_size as usize)
                .await
                .map_err(|e| ClientError::Setup(format!("staging buffer: {e}")))?;
            prefault(&buf);
            Some(Staging::new(buf))
        } else {
            None
        };
        let segment_name = engine.segment_name().to_string();
        let host = plan::host_of(&segment_name).to_string();
        let client = Client {
            inner: Arc::new(Inner {
                config,
                engine,
                master,
                id: ClientId::random(),
                segment_name,
                host,
                mounted: Mutex::new(None),
                staging,
                spread: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                heartbeat: Mutex::new(None),
                master_incarnation: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        let size = client.inner.config.global_segment_size;
        if size > 0 {
            client.mount_segment(size).await?;
        }
        info!(segment = %client.inner.segment_name, id = %client.inner.id, "store client ready");
        Ok(client)
    }

    /// This client's Transfer Engine segment name (`host:port`).
    pub fn segment_name(&self) -> &str {
        &self.inner.segment_name
    }

    /// The host part of [`Client::segment_name`] (the reference's `get_hostname`).
    pub fn hostname(&self) -> &str {
        &self.inner.host
    }

    /// This client's id at the master.
    pub fn id(&self) -> ClientId {
        self.inner.id
    }

    /// The Transfer Engine this client moves bytes with.
    pub fn engine(&self) -> &Arc<TransferEngine> {
        &self.inner.engine
    }

    /// The master connection (for admin tools).
    pub fn master(&self) -> &MasterClient {
        &self.inner.master
    }

    /// Bytes of the mounted segment (0 when none).
    pub fn mounted_size(&self) -> u64 {
        self.inner
            .mounted
            .lock()
            .as_ref()
            .map_or(0, |m| m.desc.size)
    }

    /// Contribute `size` bytes of this process's memory to the pool: a Transfer
    /// Engine managed buffer (shareable with same-host peers) registered with
    /// the master, kept alive by heartbeats. One segment per client.
    #[tracing::instrument(name = "store.mount_segment", skip(self))]
    pub async fn mount_segment(&self, size: u64) -> Result<()> {
        self.check_open()?;
        if size == 0 {
            return Err(ClientError::InvalidParams(
                "segment size must be > 0".into(),
            ));
        }
        if self.inner.mounted.lock().is_some() {
            return Err(mooncake_store_protocol::ErrorCode::SegmentAlreadyExists.into());
        }
        let buffer = self
            .inner
            .engine
            .allocate_managed_buffer(size as usize)
            .await?;
        let desc = SegmentDesc {
            name: self.inner.segment_name.clone(),
            base_addr: buffer.addr() as u64,
            size,
            protocol: self.inner.config.protocol.clone(),
            location: "cpu".into(),
        };
        let mounted = Arc::new(Mounted { buffer, desc });
        if self.inner.config.prefault_segment {
            // Commit the pages now: otherwise every first write into the
            // segment pays a page fault per 4 KiB (half the cost of a put).
            let m = Arc::clone(&mounted);
            tokio::task::spawn_blocking(move || prefault(&m.buffer))
                .await
                .map_err(|e| ClientError::Setup(format!("prefaulting the segment: {e}")))?;
        }
        self.inner
            .master
            .mount_segment(self.inner.id, &mounted.desc)
            .await?;
        *self.inner.mounted.lock() = Some(mounted);
        // The master our descriptor is known to: a later change of it (restart,
        // failover) makes the heartbeat republish the descriptor.
        if let Ok(role) = self.inner.master.hello().await {
            self.inner
                .master_incarnation
                .store(role.incarnation, Ordering::Release);
        }
        self.start_heartbeat();
        info!(segment = %self.inner.segment_name, size, "segment mounted");
        Ok(())
    }

    /// Withdraw the mounted segment from the pool; objects stored only there
    /// are dropped by the master.
    #[tracing::instrument(name = "store.unmount_segment", skip(self))]
    pub async fn unmount_segment(&self) -> Result<()> {
        let Some(m) = self.inner.mounted.lock().clone() else {
            return Err(mooncake_store_protocol::ErrorCode::SegmentNotFound.into());
        };
        self.inner
            .master
            .unmount_segment(self.inner.id, &m.desc.name)
            .await?;
        *self.inner.mounted.lock() = None;
        Ok(())
    }

    /// A registered buffer of `len` bytes for [`Client::get_into`] /
    /// [`Client::put_from`] (zero-copy: the engine moves bytes straight into or
    /// out of it).
    pub async fn allocate_buffer(&self, len: usize) -> Result<ManagedBuffer> {
        Ok(self.inner.engine.allocate_managed_buffer(len).await?)
    }

    /// Register caller memory for zero-copy operations (see [`Region::from_raw`]).
    ///
    /// # Safety
    /// `[addr, addr + len)` must be valid, writable memory that stays alive
    /// until [`Client::unregister_buffer`].
    pub async unsafe fn register_buffer(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded caller contract.
        unsafe { self.inner.engine.register_memory(addr, len, "cpu").await? };
        Ok(())
    }

    /// Undo [`Client::register_buffer`].
    pub async fn unregister_buffer(&self, addr: usize) -> Result<()> {
        Ok(self.inner.engine.unregister_memory(addr).await?)
    }

    /// 0 when the master answers, 1 when closed, 2 when the master is unreachable
    /// (the reference's `health_check`).
    pub async fn health_check(&self) -> i32 {
        if self.inner.closed.load(Ordering::Acquire) {
            return 1;
        }
        match self.inner.master.ping().await {
            Ok(()) => 0,
            Err(_) => 2,
        }
    }

    /// Stop heartbeats, unmount the segment and stop the engine. Idempotent.
    #[tracing::instrument(name = "store.close", skip(self))]
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(h) = self.inner.heartbeat.lock().take() {
            h.abort();
        }
        let mounted = self.inner.mounted.lock().take();
        if let Some(m) = mounted {
            if let Err(e) = self
                .inner
                .master
                .unmount_segment(self.inner.id, &m.desc.name)
                .await
            {
                warn!(error = %e, "unmount on close failed; the master will expire us");
            }
        }
        self.inner.engine.shutdown().await;
        Ok(())
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(ClientError::Closed)
        } else {
            Ok(())
        }
    }

    fn start_heartbeat(&self) {
        let mut slot = self.inner.heartbeat.lock();
        if slot.is_some() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        *slot = Some(tokio::spawn(heartbeat_loop(weak)));
    }
}

/// Touch every page of `buf` (write a zero into each 4 KiB page).
fn prefault(buf: &ManagedBuffer) {
    const PAGE: usize = 4096;
    let mut off = 0;
    while off < buf.len() {
        buf.fill(off, 1, 0);
        off += PAGE;
    }
}

/// Heartbeat every third of the master's `client_ttl`, listing the segment this client
/// has mounted, so the master reconciles every time (remounts it after a restart, a
/// takeover, an expiry or a lost remount; drops what we no longer have). When the
/// master's incarnation changes (restart or failover), republish the Transfer Engine
/// descriptor too: a metadata server embedded in the old master died with it. Stops when
/// the client is dropped or closed.
async fn heartbeat_loop(weak: Weak<Inner>) {
    let mut interval = Duration::from_millis(500);
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let span = tracing::debug_span!("store.heartbeat", id = %inner.id);
        let _g = span.enter();
        let segments: Vec<SegmentDesc> = inner
            .mounted
            .lock()
            .as_ref()
            .map(|m| vec![m.desc.clone()])
            .unwrap_or_default();
        // Following a leader, a beat must not wait on a master that stopped answering (a
        // paused or partitioned old leader) longer than the new leader waits for us:
        // give up after one interval and find the leader again.
        let beat = inner.master.sync_client(inner.id, &segments);
        let answer = if inner.master.follows_leader() {
            match tokio::time::timeout(interval.max(Duration::from_millis(300)), beat).await {
                Ok(r) => r,
                Err(_) => {
                    inner.master.reset_connection();
                    Err(mooncake_store_protocol::ErrorCode::RpcFail)
                }
            }
        } else {
            beat.await
        };
        match answer {
            Ok(reply) => {
                interval = Duration::from_millis((reply.client_ttl_ms / 3).clamp(50, 5_000));
                if reply.mounted > 0 {
                    info!(mounted = reply.mounted, "master remounted our segment");
                }
                let incarnation = inner.master_incarnation.load(Ordering::Acquire);
                if incarnation != 0 && reply.incarnation != incarnation {
                    info!("master restarted or failed over; republishing our transfer descriptor");
                    if let Err(e) = inner.engine.republish().await {
                        warn!(error = %e, "republishing the transfer descriptor failed");
                        // Try again next beat.
                        continue;
                    }
                }
                inner
                    .master_incarnation
                    .store(reply.incarnation, Ordering::Release);
            }
            Err(e) => {
                debug!(error = %e, "heartbeat failed");
                interval = Duration::from_millis(200);
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.lock().take() {
            h.abort();
        }
    }
}
