//! [`P2pStore`]: the I/O shell around the pure [`layout`](crate::layout) and
//! [`scheduler`](crate::scheduler) cores. It owns this node's served objects,
//! their holder records (announced on every new verified shard, renewed by a
//! heartbeat), and the fetch loop of `get_replica`.
//!
//! Memory: objects live in caller-provided regions that must lie inside
//! memory registered with the node's [`TransferEngine`] (checked); the
//! engine's registration contract keeps them valid until unregistered, and
//! the engine refuses remote reads outside registered memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use mooncake_transfer::TransferEngine;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::P2pError;
use crate::layout::{cut, locate, Manifest, Part, Region, Shard, ShardSet};
use crate::meta::{
    check_name, holder_key, holders_prefix, list_objects, now_ms, object_key, read_holders,
    read_manifest, HolderRecord, LiveHolder, Meta, ObjectInfo,
};
use crate::scheduler::Failure;

mod fetch;

/// Tunables of a node. Defaults suit a LAN; tests shorten the times.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Lifetime of a holder record without renewal (crashed holders vanish
    /// after at most this long).
    pub ttl: Duration,
    /// How often a reader re-reads the holder records.
    pub refresh: Duration,
    /// Concurrent shard transfers of one reader.
    pub parallel: usize,
    /// Concurrent shard transfers of one reader from one holder.
    pub per_holder: usize,
    /// How long a holder that failed a transfer is avoided.
    pub ban: Duration,
    /// A reader gives up after this long without any shard fetched, naming
    /// the shards no live holder could provide.
    pub stall_timeout: Duration,
    /// Fetch from the registering node only, never from peers (the naive
    /// baseline the benchmark compares against).
    pub origin_only: bool,
    /// Announce fetched shards so other readers can use this node.
    pub announce: bool,
    /// Test hooks (never set in production).
    pub hooks: TestHooks,
}

/// Fault injection for the multi-process tests.
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// Flip a byte of every shard after verifying it, before announcing it:
    /// this node then serves corrupt data (env `MOONCAKE_P2P_TEST_CORRUPT=1`).
    pub corrupt_served: bool,
    /// Sleep this long before each shard transfer
    /// (env `MOONCAKE_P2P_TEST_SHARD_DELAY_MS`).
    pub shard_delay: Duration,
}

impl TestHooks {
    /// Hooks from the environment variables named above.
    pub fn from_env() -> Self {
        Self {
            corrupt_served: std::env::var("MOONCAKE_P2P_TEST_CORRUPT").is_ok_and(|v| v == "1"),
            shard_delay: std::env::var("MOONCAKE_P2P_TEST_SHARD_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or_default(),
        }
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            refresh: Duration::from_millis(100),
            parallel: 8,
            per_holder: 2,
            ban: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(30),
            origin_only: false,
            announce: true,
            hooks: TestHooks::default(),
        }
    }
}

/// What a finished `get_replica` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GetReport {
    pub name: String,
    pub bytes: u64,
    pub shards: usize,
    pub secs: f64,
    /// Verified bytes fetched from each holder (segment name).
    pub sources: BTreeMap<String, u64>,
    /// Holders that served data failing its checksum (avoided afterwards).
    pub corrupt_holders: Vec<String>,
    /// Transfers that failed and were retried elsewhere.
    pub failed_transfers: usize,
    pub parts: Vec<Part>,
}

/// Progress of a `get_replica`, for progress bars.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// Distinct holders that delivered at least one shard.
    pub sources: usize,
    pub live_holders: usize,
}

#[derive(Debug)]
struct Served {
    manifest: Arc<Manifest>,
    record: HolderRecord,
    have: ShardSet,
    fetching: ShardSet,
}

type ServedRef = Arc<tokio::sync::Mutex<Served>>;

/// Outcome of one shard transfer: the failure kind and its message.
pub(super) type FetchResult = Result<(), (Failure, String)>;

#[derive(Debug)]
struct Inner {
    engine: Arc<TransferEngine>,
    meta: Meta,
    config: P2pConfig,
    node: String,
    served: parking_lot::Mutex<HashMap<String, ServedRef>>,
}

/// A P2P store node on top of a Transfer Engine.
#[derive(Debug)]
pub struct P2pStore {
    inner: Arc<Inner>,
    heartbeat: JoinHandle<()>,
}

impl Drop for P2pStore {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// The bytes of a checked region of registered local memory.
///
/// # Safety
/// `[addr, addr+len)` lies inside memory registered with this process's
/// transfer engine (checked by [`Inner::check_local`]); the registration
/// contract keeps it valid and mapped until it is unregistered.
unsafe fn local_bytes<'a>(addr: u64, len: u64) -> &'a [u8] {
    std::slice::from_raw_parts(addr as usize as *const u8, len as usize)
}

fn crc_of(runs: &[(u64, u64)]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for &(addr, len) in runs {
        // SAFETY: runs come from `locate` over regions checked to be inside
        // registered memory (see `local_bytes`).
        h.update(unsafe { local_bytes(addr, len) });
    }
    h.finalize()
}

impl P2pStore {
    /// Start a node on `engine`, using the engine's metadata service.
    pub async fn start(engine: Arc<TransferEngine>, config: P2pConfig) -> Result<Self, P2pError> {
        let meta = Meta::connect(&engine.config().metadata_server, config.ttl).await?;
        let inner = Arc::new(Inner {
            node: engine.segment_name().to_string(),
            engine,
            meta,
            config,
            served: parking_lot::Mutex::new(HashMap::new()),
        });
        let heartbeat = tokio::spawn(heartbeat(Arc::downgrade(&inner)));
        Ok(Self { inner, heartbeat })
    }

    /// This node's id (its transfer engine segment).
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    pub fn engine(&self) -> &Arc<TransferEngine> {
        &self.inner.engine
    }

    /// Publish `regions` (registered memory, in order) as object `name`, cut
    /// into shards of at most `max_shard_size` bytes.
    pub async fn register(
        &self,
        name: &str,
        regions: &[Region],
        max_shard_size: u64,
    ) -> Result<Manifest, P2pError> {
        let parts: Vec<(String, Region)> = regions.iter().map(|r| (String::new(), *r)).collect();
        self.register_parts(name, &parts, max_shard_size).await
    }

    /// [`register`](Self::register) with a name per part (files keep their
    /// base names inside the object).
    pub async fn register_parts(
        &self,
        name: &str,
        parts: &[(String, Region)],
        max_shard_size: u64,
    ) -> Result<Manifest, P2pError> {
        check_name(name)?;
        if max_shard_size == 0 {
            return Err(P2pError::InvalidArgument(
                "max_shard_size must be > 0".into(),
            ));
        }
        let regions: Vec<Region> = parts.iter().map(|p| p.1).collect();
        let size = self.inner.check_local(&regions)?;
        if size == 0 {
            return Err(P2pError::InvalidArgument("object of 0 bytes".into()));
        }
        if self.inner.served.lock().contains_key(name) {
            return Err(P2pError::AlreadyServing(name.into()));
        }
        if let Some(old) = self.inner.manifest_if_any(name).await? {
            if !self.inner.live_holders(&old).await?.is_empty() {
                return Err(P2pError::AlreadyRegistered(name.into()));
            }
        }
        let lens: Vec<u64> = regions.iter().map(|r| r.len).collect();
        let cuts = cut(&lens, max_shard_size);
        let regions_for_crc = regions.clone();
        let shards = tokio::task::spawn_blocking(move || {
            cuts.into_iter()
                .map(|(offset, len)| {
                    let runs = locate(&regions_for_crc, offset, len).expect("cut within regions");
                    Shard {
                        offset,
                        len,
                        crc32: crc_of(&runs),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| P2pError::InvalidArgument(format!("checksum task failed: {e}")))?;
        let manifest = Manifest {
            name: name.into(),
            id: rand::random::<u64>() | 1,
            size,
            shard_size: max_shard_size,
            parts: parts
                .iter()
                .map(|(n, r)| Part {
                    name: n.clone(),
                    len: r.len,
                })
                .collect(),
            shards,
        };
        let n = manifest.shards.len();
        self.inner
            .meta
            .store
            .put(
                &object_key(name),
                &serde_json::to_vec(&manifest).expect("manifest serialises"),
            )
            .await?;
        let served = self
            .inner
            .serve(&manifest, regions, ShardSet::full(n), true);
        if let Err(e) = self.inner.announce(&served).await {
            self.inner.served.lock().remove(name);
            let _ = self.inner.meta.store.delete(&object_key(name)).await;
            return Err(e);
        }
        tracing::info!(name, size, shards = n, "registered P2P object");
        Ok(manifest)
    }

    /// The manifest of `name` ([`P2pError::NotFound`] when absent).
    pub async fn manifest(&self, name: &str) -> Result<Manifest, P2pError> {
        check_name(name)?;
        self.inner
            .manifest_if_any(name)
            .await?
            .ok_or_else(|| P2pError::NotFound(name.into()))
    }

    /// Fetch object `name` into `regions` (registered memory, in order, at
    /// least the object's size); this node then serves it too.
    pub async fn get_replica(&self, name: &str, regions: &[Region]) -> Result<GetReport, P2pError> {
        self.get_replica_with(name, regions, None).await
    }

    /// [`get_replica`](Self::get_replica) reporting progress on `progress`.
    pub async fn get_replica_with(
        &self,
        name: &str,
        regions: &[Region],
        progress: Option<&watch::Sender<Progress>>,
    ) -> Result<GetReport, P2pError> {
        let manifest = self.manifest(name).await?;
        let have = self.inner.check_local(regions)?;
        if have < manifest.size {
            return Err(P2pError::BuffersTooSmall {
                name: name.into(),
                need: manifest.size,
                have,
            });
        }
        if self.inner.served.lock().contains_key(name) {
            return Err(P2pError::AlreadyServing(name.into()));
        }
        let n = manifest.shards.len();
        let served = self
            .inner
            .serve(&manifest, regions.to_vec(), ShardSet::empty(n), false);
        let result = self
            .inner
            .fetch(&manifest, regions, &served, progress)
            .await;
        if result.is_err() {
            self.inner.served.lock().remove(name);
            let _ = self
                .inner
                .meta
                .store
                .delete(&holder_key(name, &self.inner.node))
                .await;
        }
        result
    }

    /// Stop serving `name` (this node's copy); other holders are unaffected.
    pub async fn delete_replica(&self, name: &str) -> Result<(), P2pError> {
        check_name(name)?;
        let served = self.inner.served.lock().remove(name);
        let Some(served) = served else {
            return Err(P2pError::NotServing(name.into()));
        };
        // Hold the entry's lock so no announce is in flight while deleting.
        let _g = served.lock().await;
        self.inner
            .meta
            .store
            .delete(&holder_key(name, &self.inner.node))
            .await?;
        Ok(())
    }

    /// Withdraw object `name`: its manifest and every holder record.
    pub async fn unregister(&self, name: &str) -> Result<(), P2pError> {
        check_name(name)?;
        if self.inner.manifest_if_any(name).await?.is_none() {
            return Err(P2pError::NotFound(name.into()));
        }
        let served = self.inner.served.lock().remove(name);
        let _g = match &served {
            Some(s) => Some(s.lock().await),
            None => None,
        };
        let store = &self.inner.meta.store;
        store.delete(&object_key(name)).await?;
        let prefix = holders_prefix(name);
        for key in store.list(&prefix).await? {
            if !key[prefix.len()..].contains('/') {
                store.delete(&key).await?;
            }
        }
        tracing::info!(name, "unregistered P2P object");
        Ok(())
    }

    /// Objects whose names start with `prefix`, with their live holders.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, P2pError> {
        list_objects(&self.inner.meta.store, prefix).await
    }

    /// Names of the objects this node serves now.
    pub fn serving(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.served.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Withdraw every holder record of this node (the manifests stay).
    pub async fn shutdown(&self) {
        let names: Vec<String> = self.inner.served.lock().drain().map(|(k, _)| k).collect();
        for name in names {
            let _ = self
                .inner
                .meta
                .store
                .delete(&holder_key(&name, &self.inner.node))
                .await;
        }
        self.inner.meta.revoke().await;
    }
}

async fn heartbeat(inner: Weak<Inner>) {
    loop {
        let period = match inner.upgrade() {
            Some(i) => (i.meta.ttl / 3).max(Duration::from_millis(100)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let entries: Vec<ServedRef> = inner.served.lock().values().cloned().collect();
        for e in entries {
            if let Err(err) = inner.announce(&e).await {
                tracing::warn!(error = %err, "renewing a holder record failed");
            }
        }
    }
}

impl Inner {
    /// Every region lies in registered memory and none overlap; the total.
    fn check_local(&self, regions: &[Region]) -> Result<u64, P2pError> {
        let desc = self.engine.local_descriptor();
        let mut total = 0u64;
        for r in regions {
            if r.len == 0 || desc.find_buffer(r.addr, r.len).is_err() {
                return Err(P2pError::NotRegistered {
                    addr: r.addr,
                    len: r.len,
                });
            }
            total += r.len;
        }
        let mut sorted = regions.to_vec();
        sorted.sort_by_key(|r| r.addr);
        if sorted.windows(2).any(|w| w[0].addr + w[0].len > w[1].addr) {
            return Err(P2pError::InvalidArgument("buffers overlap".into()));
        }
        Ok(total)
    }

    async fn manifest_if_any(&self, name: &str) -> Result<Option<Manifest>, P2pError> {
        read_manifest(&self.meta.store, name).await
    }

    async fn live_holders(&self, m: &Manifest) -> Result<Vec<(String, LiveHolder)>, P2pError> {
        read_holders(&self.meta.store, m).await
    }

    fn serve(
        &self,
        manifest: &Manifest,
        regions: Vec<Region>,
        have: ShardSet,
        origin: bool,
    ) -> ServedRef {
        let entry = Arc::new(tokio::sync::Mutex::new(Served {
            manifest: Arc::new(manifest.clone()),
            record: HolderRecord {
                segment: self.node.clone(),
                object_id: manifest.id,
                origin,
                regions,
                have: have.to_ranges(),
                fetching: Vec::new(),
                expires_at_ms: 0,
            },
            fetching: ShardSet::empty(have.capacity()),
            have,
        }));
        self.served
            .lock()
            .insert(manifest.name.clone(), Arc::clone(&entry));
        entry
    }

    /// Write this node's current record for `entry` (serialised per entry, so
    /// an older shard set never overwrites a newer one).
    async fn announce(&self, entry: &ServedRef) -> Result<(), P2pError> {
        let mut s = entry.lock().await;
        if s.have.is_empty() && s.fetching.is_empty() {
            return Ok(());
        }
        let name = s.manifest.name.clone();
        let still_served = self
            .served
            .lock()
            .get(&name)
            .is_some_and(|e| Arc::ptr_eq(e, entry));
        if !still_served {
            return Ok(());
        }
        s.record.have = s.have.to_ranges();
        s.record.fetching = s.fetching.to_ranges();
        s.record.expires_at_ms = now_ms() + self.meta.ttl.as_millis() as u64;
        self.meta
            .put_holder(&holder_key(&name, &self.node), &s.record)
            .await
    }
}
