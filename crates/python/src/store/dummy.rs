//! Dummy-client mode (`setup_dummy`): the store forwards every operation to
//! a local real client (`mooncake real-client`, port 50052 by default)
//! instead of running its own engine.
//!
//! [`Backend`] is what the rest of the binding calls: the same method names
//! whether the store was `setup` (a [`Client`]) or `setup_dummy` (a
//! [`DummyClient`]), so every operation works in both modes unchanged.
//!
//! In dummy mode `register_buffer` only records the range (there is no local
//! engine); `put_from`/`get_into` on memory from `alloc_from_mem_pool` (the
//! shared pool) are zero-copy, on any other registered memory they copy
//! through the local socket (at most ~16 MiB per value); plain values of
//! 256 KiB and more move through the `local_buffer_size` staging area of
//! shared memory when it has room (which also lifts that limit).

use std::sync::Arc;

use mooncake_store::client::{Client, ClientError, RangeRead, Region, Result};
use mooncake_store::client_service::DummyClient;
use mooncake_store::{Replica, ReplicateConfig};
use pyo3::prelude::*;

use super::{code, PyStore};
use crate::log;
use crate::runtime::{block_on, runtime};

/// The client behind a `MooncakeDistributedStore`.
#[derive(Clone, Debug)]
pub enum Backend {
    Real(Client),
    Dummy(Arc<DummyClient>),
}

/// Run the same call on either client.
macro_rules! both {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            Backend::Real($c) => $e,
            Backend::Dummy($c) => $e,
        }
    };
}

impl Backend {
    pub async fn put(&self, key: &str, value: &[u8], rc: &ReplicateConfig) -> Result<()> {
        both!(self, c => c.put(key, value, rc).await)
    }

    pub async fn upsert(&self, key: &str, value: &[u8], rc: &ReplicateConfig) -> Result<()> {
        both!(self, c => c.upsert(key, value, rc).await)
    }

    pub async fn batch_put(
        &self,
        keys: &[String],
        values: &[&[u8]],
        rc: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        both!(self, c => c.batch_put(keys, values, rc).await)
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        both!(self, c => c.get(key).await)
    }

    pub async fn batch_get(&self, keys: &[String]) -> Result<Vec<Result<Vec<u8>>>> {
        both!(self, c => c.batch_get(keys).await)
    }

    pub async fn batch_put_from(
        &self,
        keys: &[String],
        regions: &[Region<'_>],
        rc: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        both!(self, c => c.batch_put_from(keys, regions, rc).await)
    }

    /// Upsert registered regions: zero-copy from a dummy's pool; a real
    /// client upserts each region's bytes (through its staging buffer).
    pub async fn batch_upsert_from(
        &self,
        keys: &[String],
        regions: &[Region<'_>],
        rc: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        match self {
            Backend::Real(c) => {
                let futs = keys.iter().zip(regions).map(|(k, r)| {
                    // SAFETY: a Region names readable memory for its length
                    // (its constructor's contract: registered caller memory).
                    let data =
                        unsafe { std::slice::from_raw_parts(r.addr() as *const u8, r.len()) };
                    c.upsert(k, data, rc)
                });
                Ok(futures::future::join_all(futs).await)
            }
            Backend::Dummy(d) => d.batch_upsert_from(keys, regions, rc).await,
        }
    }

    pub async fn batch_get_into(
        &self,
        keys: &[String],
        regions: &[Region<'_>],
    ) -> Result<Vec<Result<u64>>> {
        both!(self, c => c.batch_get_into(keys, regions).await)
    }

    /// Values gathered from registered regions (each key's regions back to
    /// back): zero-copy on a real client; a dummy sends each value's bytes
    /// joined into one copy.
    pub async fn batch_put_from_parts(
        &self,
        keys: &[String],
        parts: &[Vec<Region<'_>>],
        rc: &ReplicateConfig,
        upsert: bool,
    ) -> Result<Vec<Result<()>>> {
        match self {
            Backend::Real(c) if small_parts(parts) => {
                // Many small buffers: one staged copy beats one engine request
                // per buffer (see SMALL_PART); zero-copy when nothing can stage.
                let joined: Vec<Vec<u8>> = parts.iter().map(|p| join_parts(p)).collect();
                let staged = if upsert {
                    let futs = keys.iter().zip(&joined).map(|(k, v)| c.upsert(k, v, rc));
                    Ok(futures::future::join_all(futs).await)
                } else {
                    let values: Vec<&[u8]> = joined.iter().map(Vec::as_slice).collect();
                    c.batch_put(keys, &values, rc).await
                };
                match staged {
                    Err(ClientError::NoStagingBuffer) if upsert => {
                        c.batch_upsert_from_parts(keys, parts, rc).await
                    }
                    Err(ClientError::NoStagingBuffer) => {
                        c.batch_put_from_parts(keys, parts, rc).await
                    }
                    other => other,
                }
            }
            Backend::Real(c) if upsert => c.batch_upsert_from_parts(keys, parts, rc).await,
            Backend::Real(c) => c.batch_put_from_parts(keys, parts, rc).await,
            Backend::Dummy(d) => {
                let joined: Vec<Vec<u8>> = parts.iter().map(|p| join_parts(p)).collect();
                if upsert {
                    let futs = keys.iter().zip(&joined).map(|(k, v)| d.upsert(k, v, rc));
                    Ok(futures::future::join_all(futs).await)
                } else {
                    let values: Vec<&[u8]> = joined.iter().map(Vec::as_slice).collect();
                    d.batch_put(keys, &values, rc).await
                }
            }
        }
    }

    /// Values scattered over registered regions (filled in order); one size
    /// per key. Zero-copy on a real client; a dummy copies each value once.
    pub async fn batch_get_into_parts(
        &self,
        keys: &[String],
        parts: &[Vec<Region<'_>>],
    ) -> Result<Vec<Result<u64>>> {
        match self {
            Backend::Real(c) if small_parts(parts) => match c.batch_get(keys).await {
                Err(ClientError::NoStagingBuffer) => c.batch_get_into_parts(keys, parts).await,
                got => Ok(got?
                    .into_iter()
                    .zip(parts)
                    .map(|(r, p)| r.and_then(|v| scatter_parts(&v, p)))
                    .collect()),
            },
            Backend::Real(c) => c.batch_get_into_parts(keys, parts).await,
            Backend::Dummy(d) => {
                let got = d.batch_get(keys).await?;
                Ok(got
                    .into_iter()
                    .zip(parts)
                    .map(|(r, p)| r.and_then(|v| scatter_parts(&v, p)))
                    .collect())
            }
        }
    }

    pub async fn batch_get_ranges_into(&self, reads: &[RangeRead<'_>]) -> Result<Vec<Result<u64>>> {
        both!(self, c => c.batch_get_ranges_into(reads).await)
    }

    /// The complete replicas of each key (a read lease, as a get).
    pub async fn replica_lists(&self, keys: &[String]) -> Result<Vec<Result<Vec<Replica>>>> {
        let master = match self {
            Backend::Real(c) => c.master(),
            Backend::Dummy(_) => {
                return Err(ClientError::InvalidParams(
                    "replica descriptors are not available through a dummy client".into(),
                ))
            }
        };
        let lists = master.batch_get_replica_list(keys).await?;
        Ok(lists
            .into_iter()
            .map(|r| r.map_err(ClientError::Master))
            .collect())
    }

    pub async fn batch_is_exist(&self, keys: &[String]) -> Result<Vec<Result<bool>>> {
        both!(self, c => c.batch_is_exist(keys).await)
    }

    pub async fn get_size(&self, key: &str) -> Result<u64> {
        both!(self, c => c.get_size(key).await)
    }

    pub async fn remove(&self, key: &str, force: bool) -> Result<()> {
        both!(self, c => c.remove(key, force).await)
    }

    pub async fn batch_remove(&self, keys: &[String], force: bool) -> Result<Vec<Result<()>>> {
        both!(self, c => c.batch_remove(keys, force).await)
    }

    pub async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64> {
        both!(self, c => c.remove_by_regex(pattern, force).await)
    }

    pub async fn remove_all(&self, force: bool) -> Result<u64> {
        both!(self, c => c.remove_all(force).await)
    }

    /// Register caller memory with the engine (a dummy has none: it only
    /// needs the binding's own record of the range).
    ///
    /// # Safety
    /// As [`Client::register_buffer`].
    pub async unsafe fn register_buffer(&self, addr: usize, len: usize) -> Result<()> {
        match self {
            // SAFETY: forwarded caller contract.
            Backend::Real(c) => unsafe { c.register_buffer(addr, len).await },
            Backend::Dummy(_) => Ok(()),
        }
    }

    pub async fn unregister_buffer(&self, addr: usize) -> Result<()> {
        match self {
            Backend::Real(c) => c.unregister_buffer(addr).await,
            Backend::Dummy(_) => Ok(()),
        }
    }

    /// The segment that holds this client's data: its own, or the real client's.
    pub fn segment_name(&self) -> &str {
        both!(self, c => c.segment_name())
    }

    pub async fn health_check(&self) -> i32 {
        both!(self, c => c.health_check().await)
    }

    pub async fn close(&self) -> Result<()> {
        match self {
            Backend::Real(c) => c.close().await,
            Backend::Dummy(d) => {
                d.close().await;
                Ok(())
            }
        }
    }

    fn dummy(&self) -> Option<&Arc<DummyClient>> {
        match self {
            Backend::Dummy(d) => Some(d),
            Backend::Real(_) => None,
        }
    }
}

/// Below this average buffer size a multi-buffer call on a real client copies
/// through the staging buffer instead of sending one engine request per buffer
/// and replica piece: measured on tcp loopback (dev build, 32 keys x 32 buffers of
/// 16 KiB), the per-request cost made the zero-copy scatter 2-4x slower than one
/// contiguous read plus memcpy (`crates/python/tools/bench_multi_buffers.py`).
const SMALL_PART: usize = 64 << 10;

/// Whether `parts` are many buffers small enough to move through staging.
fn small_parts(parts: &[Vec<Region<'_>>]) -> bool {
    let n: usize = parts.iter().map(Vec::len).sum();
    let bytes: usize = parts.iter().flatten().map(Region::len).sum();
    n > parts.len() && bytes < n.saturating_mul(SMALL_PART)
}

/// The bytes of `parts`, back to back.
fn join_parts(parts: &[Region<'_>]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parts.iter().map(Region::len).sum());
    for r in parts {
        // SAFETY: a Region names readable memory for its length (its
        // constructor's contract: registered caller memory).
        v.extend_from_slice(unsafe { std::slice::from_raw_parts(r.addr() as *const u8, r.len()) });
    }
    v
}

/// Lay `data` over `parts` in order; its size, or BufferTooSmall.
fn scatter_parts(data: &[u8], parts: &[Region<'_>]) -> Result<u64> {
    let have: usize = parts.iter().map(Region::len).sum();
    if have < data.len() {
        return Err(ClientError::BufferTooSmall {
            need: data.len() as u64,
            have: have as u64,
        });
    }
    let mut rest = data;
    for r in parts {
        let n = rest.len().min(r.len());
        // SAFETY: a Region names writable memory for its length (registered
        // caller memory lent for this call); `rest` is a distinct Rust slice.
        unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), r.addr() as *mut u8, n) };
        rest = &rest[n..];
    }
    Ok(data.len() as u64)
}

/// Run a connect on the shared runtime (its background tasks must outlive
/// this call), without the GIL.
pub(super) fn on_runtime<T: Send + 'static>(
    py: Python<'_>,
    fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    block_on(py, async move {
        match runtime().spawn(fut).await {
            Ok(r) => r,
            Err(e) => Err(ClientError::Setup(e.to_string())),
        }
    })
}

impl PyStore {
    /// `setup_dummy`: attach to the real client at `server_address` with a
    /// shared pool of `mem_pool_size` bytes.
    pub(super) fn setup_dummy_impl(
        &self,
        py: Python<'_>,
        mem_pool_size: u64,
        local_buffer_size: u64,
        server_address: &str,
    ) -> i64 {
        let server = server_address.trim().to_string();
        let r = on_runtime(py, async move {
            DummyClient::connect_with_staging(&server, mem_pool_size, local_buffer_size).await
        });
        match r {
            Ok(d) => {
                // Plain values go through the staging area or the socket
                // (the real client stages them), so a dummy can always put
                // bytes whatever its own local_buffer_size.
                self.install(py, Backend::Dummy(Arc::new(d)), u64::MAX);
                0
            }
            Err(e) => {
                log::error(
                    py,
                    &format!("setup_dummy({server_address}): {e} (is `mooncake real-client` running there?)"),
                );
                code(&e)
            }
        }
    }
}

#[pymethods]
impl PyStore {
    /// A buffer of `size` bytes from the shared pool of a dummy client
    /// (`setup_dummy`), already registered: `put_from`/`get_into` on it are
    /// zero-copy. 0 when the pool is full or the store is not a dummy.
    fn alloc_from_mem_pool(&self, py: Python<'_>, size: usize) -> usize {
        let Some(d) = self.client().and_then(|b| b.dummy().cloned()) else {
            log::error(
                py,
                "alloc_from_mem_pool: only a dummy client (setup_dummy) has a shared pool",
            );
            return 0;
        };
        match d.alloc(size) {
            Some(addr) => {
                self.buffers.lock().insert(addr, size);
                addr
            }
            None => {
                log::error(
                    py,
                    &format!("alloc_from_mem_pool({size}): the shared pool is full"),
                );
                0
            }
        }
    }

    /// Give back a buffer from `alloc_from_mem_pool`. 0, or INVALID_PARAMS
    /// when `ptr` is not one.
    fn free_to_mem_pool(&self, py: Python<'_>, ptr: usize) -> i64 {
        let freed = self
            .client()
            .and_then(|b| b.dummy().cloned())
            .is_some_and(|d| d.free(ptr));
        if freed {
            self.buffers.lock().remove(&ptr);
            0
        } else {
            log::error(
                py,
                &format!("free_to_mem_pool({ptr:#x}): not a pool buffer"),
            );
            i64::from(mooncake_store::client::CODE_INVALID_PARAMS)
        }
    }
}
