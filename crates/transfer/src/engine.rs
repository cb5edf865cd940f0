//! The [`TransferEngine`]: owns the local segment (registry + published
//! descriptor), the RPC port, the transports, the peer-descriptor cache and
//! the batch table. Slice execution and routing live in `exec`.
//!
//! Invariants:
//! - The published descriptor always lists exactly the registered buffers
//!   (republished, serialised by a lock, after every change).
//! - Background tasks hold no strong reference to the engine: dropping the
//!   last `Arc<TransferEngine>` stops the server and the watcher. Call
//!   [`TransferEngine::shutdown`] to also remove the published descriptor.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use mooncake_metadata::{
    rpc_meta_key, segment_key, SharedMetadata, P2P_HANDSHAKE, SEGMENT_KEY_PREFIX,
};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::batch::{Batch, BatchId, TransferStatus};
use crate::buffer::ManagedBuffer;
use crate::descriptor::{local_host_id, BufferDesc, SegmentDescriptor};
use crate::memfd::{self, Memfd};
use crate::memory::{MemoryRegistry, RegionInfo, ShmExport};
use crate::segment::{split_host_port, SegmentCache, SegmentHandle, Source};
use crate::transport::file::FileTransport;
use crate::transport::tcp;
use crate::transport::tcp::server::{self, ServerContext, ServerState};
use crate::transport::{self, SharedTransport, TransportContext, PREFERENCE};
use crate::{Opcode, Protocol, TransferEngineConfig, TransferError, TransferRequest};

/// State shared by the engine, its buffers and its slice tasks.
#[derive(Debug)]
pub(crate) struct EngineShared {
    pub config: Arc<TransferEngineConfig>,
    pub segment_name: String,
    pub rpc_host: String,
    pub rpc_port: u16,
    pub host_id: String,
    pub epoch: u64,
    version: AtomicU64,
    pub metadata: SharedMetadata,
    pub registry: Arc<MemoryRegistry>,
    /// Enabled transports in routing preference order.
    pub transports: Vec<SharedTransport>,
    /// The file transport, if enabled (for file-segment registration).
    file: Option<Arc<FileTransport>>,
    /// File segments this engine published (unpublished on shutdown).
    published_files: Mutex<HashSet<String>>,
    pub segments: SegmentCache,
    pub runtime: tokio::runtime::Handle,
    publish_lock: tokio::sync::Mutex<()>,
    pub stopped: AtomicBool,
    stop_tx: watch::Sender<bool>,
    batches: Mutex<HashMap<BatchId, Arc<Batch>>>,
    next_batch: AtomicU64,
    /// The RPC listener's bounds and counters (handshakes, caps, timeouts).
    rpc_state: Arc<ServerState>,
}

impl EngineShared {
    /// The descriptor of the local segment as it is now.
    pub fn descriptor(&self) -> SegmentDescriptor {
        let protocols: Vec<&str> = self.config.protocols.iter().map(|p| p.as_str()).collect();
        SegmentDescriptor {
            name: self.segment_name.clone(),
            protocol: protocols.join(","),
            rpc_host: self.rpc_host.clone(),
            rpc_port: self.rpc_port,
            host_id: self.host_id.clone(),
            pid: std::process::id(),
            epoch: self.epoch,
            version: self.version.fetch_add(1, Ordering::Relaxed),
            buffers: self
                .registry
                .snapshot()
                .iter()
                .map(BufferDesc::from)
                .collect(),
            transports: self
                .transports
                .iter()
                .filter_map(|t| {
                    t.descriptor_extension()
                        .map(|v| (t.protocol().to_string(), v))
                })
                .collect(),
        }
    }

    pub async fn publish(&self) -> Result<(), TransferError> {
        let _g = self.publish_lock.lock().await;
        if self.stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        let d = self.descriptor();
        self.metadata
            .put(&segment_key(&self.segment_name), &d.to_json())
            .await?;
        Ok(())
    }

    /// A managed buffer was dropped: unregister it now and republish later.
    pub fn forget_managed(self: &Arc<Self>, addr: usize) {
        if let Some(info) = self.registry.remove_now(addr) {
            for t in &self.transports {
                let _ = t.unregister_memory(&info);
            }
            let me = Arc::clone(self);
            self.runtime.spawn(async move {
                if let Err(e) = me.publish().await {
                    tracing::warn!(error = %e, "republishing after buffer drop failed");
                }
            });
        }
    }

    fn batch(&self, id: BatchId) -> Result<Arc<Batch>, TransferError> {
        self.batches
            .lock()
            .get(&id)
            .cloned()
            .ok_or(TransferError::UnknownBatch(id))
    }
}

mod file_segment;

/// The Transfer Engine. Used as `Arc<TransferEngine>`; all methods take `&self`.
#[derive(Debug)]
pub struct TransferEngine {
    shared: Arc<EngineShared>,
}

fn parse_local_hostname(s: &str) -> Result<(String, u16), TransferError> {
    if let Some((h, p)) = split_host_port(s) {
        return Ok((h, p));
    }
    if s.is_empty() || s.contains(':') && !s.starts_with('[') {
        return Err(TransferError::InvalidConfig(format!(
            "bad local_hostname {s:?}"
        )));
    }
    Ok((s.trim_matches(|c| c == '[' || c == ']').to_string(), 0))
}

impl TransferEngine {
    /// Bind the RPC port, build the transports, publish the (empty) segment.
    /// Must be called inside a tokio runtime; the engine's tasks run on it.
    pub async fn start(config: TransferEngineConfig) -> Result<Arc<Self>, TransferError> {
        config.validate()?;
        let auth = config.auth_mode()?;
        let (host, port) = parse_local_hostname(&config.local_hostname)?;
        let listener = TcpListener::bind((host.as_str(), port)).await?;
        let rpc_port = listener.local_addr()?.port();
        let segment_name = if host.contains(':') {
            format!("[{host}]:{rpc_port}")
        } else {
            format!("{host}:{rpc_port}")
        };
        let p2p = config.metadata_server.trim() == P2P_HANDSHAKE;
        let metadata = mooncake_metadata::connect(&config.metadata_server).await?;
        let config = Arc::new(config);
        let registry = Arc::new(MemoryRegistry::new());
        let host_id = local_host_id();
        let tctx = TransportContext {
            segment_name: segment_name.clone(),
            config: Arc::clone(&config),
            registry: Arc::clone(&registry),
            host_id: host_id.clone(),
            auth: auth.clone(),
        };
        let mut transports = Vec::new();
        let mut file = None;
        for p in PREFERENCE {
            if config.protocols.contains(&p) {
                let built = if p == Protocol::File {
                    transport::file::build_typed(&tctx).map(|f| {
                        file = Some(Arc::clone(&f));
                        f as SharedTransport
                    })
                } else {
                    transport::build(p, &tctx)
                };
                match built {
                    Ok(t) => transports.push(t),
                    // "rdma,tcp": rdma preferred, tcp allowed as the fallback.
                    Err(e @ TransferError::TransportUnavailable { .. })
                        if p == Protocol::Rdma && config.protocols.contains(&Protocol::Tcp) =>
                    {
                        tracing::warn!(error = %e, "rdma unavailable; falling back to tcp");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let source = if p2p {
            let (auth, timeout) = (auth.clone(), config.connect_timeout);
            Source::P2p(Arc::new(move |name, host, port| {
                let auth = auth.clone();
                Box::pin(async move {
                    tcp::client::fetch_descriptor(&name, &host, port, &auth, timeout).await
                })
            }))
        } else {
            Source::Metadata(Arc::clone(&metadata))
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let rpc_limits = server::ServerLimits::default();
        let rpc_state = ServerState::new(&rpc_limits);
        let shared = Arc::new(EngineShared {
            config: Arc::clone(&config),
            segment_name,
            rpc_host: host,
            rpc_port,
            host_id,
            epoch: rand::random::<u64>() | 1,
            version: AtomicU64::new(1),
            metadata: Arc::clone(&metadata),
            registry: Arc::clone(&registry),
            transports,
            file,
            published_files: Mutex::new(HashSet::new()),
            segments: SegmentCache::new(source),
            runtime: tokio::runtime::Handle::current(),
            publish_lock: tokio::sync::Mutex::new(()),
            stopped: AtomicBool::new(false),
            stop_tx,
            batches: Mutex::new(HashMap::new()),
            next_batch: AtomicU64::new(1),
            rpc_state: Arc::clone(&rpc_state),
        });

        let transport_rpc = shared
            .transports
            .iter()
            .find(|t| t.protocol() == Protocol::Rdma)
            .cloned();
        let weak: Weak<EngineShared> = Arc::downgrade(&shared);
        let sctx = ServerContext {
            registry,
            auth,
            limits: rpc_limits,
            state: rpc_state,
            descriptor: Arc::new(move || {
                weak.upgrade()
                    .map(|s| s.descriptor().to_json())
                    .unwrap_or_default()
            }),
            serve_data: config.protocols.contains(&Protocol::Tcp),
            transport_rpc,
            frame_timeout: config
                .transfer_timeout
                .max(std::time::Duration::from_secs(10)),
        };
        tokio::spawn(server::serve(listener, sctx, stop_rx.clone()));
        if !p2p {
            Self::spawn_watcher(&shared, stop_rx).await?;
        }
        shared.publish().await?;
        let rpc =
            serde_json::json!({"ip_or_host_name": shared.rpc_host, "rpc_port": shared.rpc_port});
        metadata
            .put(
                &rpc_meta_key(&shared.segment_name),
                rpc.to_string().as_bytes(),
            )
            .await?;
        tracing::info!(segment = %shared.segment_name, metadata = metadata.backend(), p2p, "transfer engine started");
        Ok(Arc::new(TransferEngine { shared }))
    }

    async fn spawn_watcher(
        shared: &Arc<EngineShared>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), TransferError> {
        let mut rx = match shared.metadata.watch(SEGMENT_KEY_PREFIX).await {
            Ok(rx) => rx,
            // A metadata server that cannot list or watch (the reference's HTTP
            // server) still works: cached descriptors are then refreshed on
            // demand, when a peer refuses or is unreachable.
            Err(mooncake_metadata::MetadataError::Unsupported(what)) => {
                tracing::warn!(%what, "metadata backend cannot watch; descriptors refresh on demand");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let weak = Arc::downgrade(shared);
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    ev = rx.recv() => ev,
                    _ = stop.changed() => return,
                };
                let (Some(ev), Some(shared)) = (ev, weak.upgrade()) else {
                    return;
                };
                if let Some(name) = shared.segments.apply(&ev) {
                    tracing::debug!(segment = %name, "peer segment changed");
                    for t in &shared.transports {
                        t.forget_peer(&name);
                    }
                }
            }
        });
        Ok(())
    }

    /// `host:port` as published in metadata (the reference's local_hostname).
    pub fn segment_name(&self) -> &str {
        &self.shared.segment_name
    }

    pub fn rpc_port(&self) -> u16 {
        self.shared.rpc_port
    }

    /// The RPC listener's counters: handshakes accepted / refused / failed,
    /// connections closed over a cap or for idling, the buffer budget.
    pub fn rpc_server_state(&self) -> &Arc<ServerState> {
        &self.shared.rpc_state
    }

    pub fn config(&self) -> &TransferEngineConfig {
        &self.shared.config
    }

    /// The metadata store this engine publishes to (an isolated in-process
    /// store in P2P handshake mode).
    pub fn metadata(&self) -> SharedMetadata {
        Arc::clone(&self.shared.metadata)
    }

    /// The local segment's descriptor as it is now.
    pub fn local_descriptor(&self) -> SegmentDescriptor {
        self.shared.descriptor()
    }

    /// The enabled transport for `protocol`, if any (for transport-specific APIs).
    pub fn transport(&self, protocol: Protocol) -> Option<SharedTransport> {
        self.shared
            .transports
            .iter()
            .find(|t| t.protocol() == protocol)
            .cloned()
    }

    /// Republish the local descriptor (after a transport changed its extension).
    pub async fn republish(&self) -> Result<(), TransferError> {
        self.shared.publish().await
    }

    /// Add `[addr, addr+len)` to the local segment and publish it.
    ///
    /// # Safety
    /// `[addr, addr+len)` is valid, writable memory that stays alive until
    /// `unregister_memory(addr)` has returned. Peers may read and write it at
    /// any time in between.
    pub async unsafe fn register_memory(
        &self,
        addr: usize,
        len: usize,
        location: &str,
    ) -> Result<(), TransferError> {
        self.register(addr, len, location, None, None).await
    }

    async fn register(
        &self,
        addr: usize,
        len: usize,
        location: &str,
        shm: Option<ShmExport>,
        mapping: Option<Arc<Memfd>>,
    ) -> Result<(), TransferError> {
        let location = if mapping.is_some() {
            location.to_string()
        } else {
            crate::cuda::resolve_location(location, addr, len)?
        };
        let mut info = RegionInfo {
            addr,
            len,
            location,
            shm,
            keys: Vec::new(),
        };
        for t in &self.shared.transports {
            let keys = t.register_memory_keys(&info)?;
            info.keys.extend(keys);
        }
        self.shared.registry.insert(info, mapping)?;
        if let Err(e) = self.shared.publish().await {
            self.shared.registry.remove_and_drain(addr).await;
            return Err(e);
        }
        Ok(())
    }

    /// Remove the buffer starting at `addr`; returns once no transfer touches it.
    pub async fn unregister_memory(&self, addr: usize) -> Result<(), TransferError> {
        let info = self.shared.registry.remove_and_drain(addr).await.ok_or(
            TransferError::NotRegistered {
                addr: addr as u64,
                len: 0,
            },
        )?;
        for t in &self.shared.transports {
            t.unregister_memory(&info)?;
        }
        self.shared.publish().await
    }

    /// memfd-backed, page-aligned, zero-filled, registered memory that
    /// same-host peers can map. Unregistered and (once idle) unmapped on drop.
    pub async fn allocate_managed_buffer(
        &self,
        len: usize,
    ) -> Result<ManagedBuffer, TransferError> {
        if len == 0 {
            return Err(TransferError::InvalidConfig(
                "managed buffer of 0 bytes".into(),
            ));
        }
        let mapping = Arc::new(Memfd::create(memfd::SEGMENT_NAME, len)?);
        let shm = ShmExport {
            pid: std::process::id(),
            fd: mapping.raw_fd(),
        };
        let addr = mapping.ptr() as usize;
        self.register(addr, len, "cpu:0", Some(shm), Some(Arc::clone(&mapping)))
            .await?;
        Ok(ManagedBuffer::new(
            mapping,
            len,
            Arc::downgrade(&self.shared),
        ))
    }

    /// Resolve a peer (or this engine's own) segment; cached, refreshed on change.
    pub async fn open_segment(&self, name: &str) -> Result<SegmentHandle, TransferError> {
        self.shared.segments.open(name).await
    }

    /// A new batch holding up to `capacity` requests.
    pub fn allocate_batch(&self, capacity: usize) -> Result<BatchId, TransferError> {
        let id = self.shared.next_batch.fetch_add(1, Ordering::Relaxed);
        self.shared
            .batches
            .lock()
            .insert(id, Arc::new(Batch::new(id, capacity)));
        Ok(id)
    }

    /// Start `requests` (appended to the batch). Returns at once; poll
    /// [`status`](Self::status) or await [`wait`](Self::wait).
    pub fn submit(
        &self,
        batch: BatchId,
        requests: &[TransferRequest],
    ) -> Result<(), TransferError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(TransferError::ShutDown);
        }
        let b = self.shared.batch(batch)?;
        crate::exec::submit(&self.shared, &b, requests)
    }

    pub fn status(&self, batch: BatchId, index: usize) -> Result<TransferStatus, TransferError> {
        self.shared.batch(batch)?.status(index)
    }

    /// Statuses of every request of the batch.
    pub fn batch_status(&self, batch: BatchId) -> Result<Vec<TransferStatus>, TransferError> {
        Ok(self.shared.batch(batch)?.statuses())
    }

    /// Wait until no request of the batch is in flight; returns all statuses.
    pub async fn wait(&self, batch: BatchId) -> Result<Vec<TransferStatus>, TransferError> {
        let b = self.shared.batch(batch)?;
        b.wait_idle().await;
        Ok(b.statuses())
    }

    /// Free a batch; refused while requests are in flight.
    pub fn free_batch(&self, batch: BatchId) -> Result<(), TransferError> {
        let mut batches = self.shared.batches.lock();
        let b = batches
            .get(&batch)
            .ok_or(TransferError::UnknownBatch(batch))?;
        if !b.is_idle() {
            return Err(TransferError::BatchBusy(batch));
        }
        batches.remove(&batch);
        Ok(())
    }

    /// Run `requests` to completion; the first failure is returned.
    pub async fn transfer(&self, requests: &[TransferRequest]) -> Result<(), TransferError> {
        let batch = self.allocate_batch(requests.len())?;
        let result = async {
            self.submit(batch, requests)?;
            let statuses = self.wait(batch).await?;
            for s in statuses {
                match s {
                    TransferStatus::Completed => {}
                    TransferStatus::Failed(r) => return Err(r.into()),
                    TransferStatus::Timeout => return Err(TransferError::Timeout),
                    other => {
                        return Err(TransferError::Protocol(format!(
                            "unexpected status {other:?}"
                        )))
                    }
                }
            }
            Ok(())
        }
        .await;
        let _ = self.free_batch(batch);
        result
    }

    fn transfer_sync(
        &self,
        opcode: Opcode,
        target: &str,
        local_addr: usize,
        remote_addr: u64,
        len: usize,
    ) -> Result<(), TransferError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(TransferError::InvalidConfig(
                "transfer_sync_* blocks; call it outside the tokio runtime (use transfer() inside)"
                    .into(),
            ));
        }
        self.shared.runtime.block_on(async {
            let target = self.open_segment(target).await?;
            self.transfer(&[TransferRequest {
                opcode,
                source: local_addr,
                target,
                target_offset: remote_addr,
                length: len,
            }])
            .await
        })
    }

    /// Blocking write; not from inside a runtime thread.
    pub fn transfer_sync_write(
        &self,
        target: &str,
        local_addr: usize,
        remote_addr: u64,
        len: usize,
    ) -> Result<(), TransferError> {
        self.transfer_sync(Opcode::Write, target, local_addr, remote_addr, len)
    }

    /// Blocking read; not from inside a runtime thread.
    pub fn transfer_sync_read(
        &self,
        target: &str,
        local_addr: usize,
        remote_addr: u64,
        len: usize,
    ) -> Result<(), TransferError> {
        self.transfer_sync(Opcode::Read, target, local_addr, remote_addr, len)
    }

    /// Unpublish the descriptor and stop serving. Idempotent.
    pub async fn shutdown(&self) {
        let s = &self.shared;
        {
            let _g = s.publish_lock.lock().await;
            if s.stopped.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        let _ = s.stop_tx.send(true);
        let files: Vec<String> = s.published_files.lock().drain().collect();
        let files = files.iter().map(|name| segment_key(name));
        for key in [segment_key(&s.segment_name), rpc_meta_key(&s.segment_name)]
            .into_iter()
            .chain(files)
        {
            if let Err(e) = s.metadata.delete(&key).await {
                tracing::warn!(key, error = %e, "could not unpublish");
            }
        }
        for t in &s.transports {
            t.shutdown().await;
        }
        tracing::info!(segment = %s.segment_name, "transfer engine shut down");
    }
}
