//! The dummy's side: [`DummyClient`], the store API of a light process that
//! owns no engine and no segment, forwarding every operation to a real
//! client's service.
//!
//! At connect time the dummy creates its shared pool (`mem_pool_size`
//! bytes) and attaches it; [`DummyClient::alloc`] hands out buffers from it.
//! `put_from`/`get_into` on a region inside the pool are zero-copy: only
//! offsets cross the socket and the real client's engine reads or writes the
//! pool directly. Plain values of 256 KiB and more go through the staging
//! area after the pool (`staging.rs`) when it has room; regions outside the
//! pool, and other plain values, are copied through the socket, so any
//! registered buffer works; a single value that way is limited to
//! [`MAX_INLINE_VALUE`] bytes.
//!
//! The dummy keeps [`CONNECTIONS`] connections, each with the pool
//! attached, so calls from several threads run concurrently in the real
//! client; one connection carries one call at a time. A transport failure
//! (real client gone, timeout, a call abandoned mid-way) breaks that
//! connection for good: calls on it fail with `RPC_FAIL` until the store is
//! set up again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::shm::SharedPool;
use super::wire::{Blob, KeyResult, PoolRange, ServiceReply, ServiceRequest, ServiceResponse};
use crate::client::{ClientError, RangeRead, Region, Result};
use mooncake_store_protocol::frame::{decode_payload, encode_frame, read_frame};
use mooncake_store_protocol::{ErrorCode, ReplicateConfig, MAX_FRAME_LEN};
use mooncake_transfer::range_alloc::RangeAllocator;

/// Largest value copied through the socket in one piece (the frame limit
/// less room for keys and framing).
pub const MAX_INLINE_VALUE: usize = MAX_FRAME_LEN - (64 << 10);
/// Values of one put request together stay under this; bigger batches are split.
const BATCH_BYTES: usize = 8 << 20;
/// Connections per dummy (concurrent calls in flight).
pub const CONNECTIONS: usize = 4;
/// Alignment of pool buffers (a cache line; tensors need no more on CPU).
const ALIGN: u64 = 64;
/// How long one call may take before the connection is given up.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    buf: Vec<u8>,
    out: BytesMut,
    broken: bool,
}

/// A store client that forwards to a real client over local RPC.
pub struct DummyClient {
    conns: Vec<tokio::sync::Mutex<Conn>>,
    next_id: AtomicU64,
    /// Where the search for an idle connection starts (spreads the calls).
    next_conn: AtomicU64,
    pub(super) pool: SharedPool,
    alloc: Mutex<RangeAllocator>,
    /// Offsets `[stage_base, pool end)` of the pool: the staging area
    /// (`local_buffer_size`) for plain values, see `staging.rs`.
    pub(super) staging: Mutex<RangeAllocator>,
    pub(super) stage_base: u64,
    segment: String,
    server: String,
}

impl std::fmt::Debug for DummyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DummyClient")
            .field("server", &self.server)
            .field("segment", &self.segment)
            .field("pool", &self.pool.len())
            .finish()
    }
}

/// A connection to the real client at `server`.
async fn open(server: &str) -> Result<Conn> {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(server))
        .await
        .map_err(|_| rpc_fail())?
        .map_err(|e| {
            tracing::debug!(server, error = %e, "real client unreachable");
            rpc_fail()
        })?;
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    Ok(Conn {
        rd: BufReader::with_capacity(256 << 10, rd),
        wr,
        buf: Vec::new(),
        out: BytesMut::new(),
        broken: false,
    })
}

fn rpc_fail() -> ClientError {
    ClientError::Master(ErrorCode::RpcFail)
}

pub(super) fn unexpected() -> ClientError {
    ClientError::Master(ErrorCode::MalformedFrame)
}

/// A batch's per-key results, filled in parts by index; a slot no part
/// filled means the real client answered for fewer keys than asked.
pub(super) fn gathered<T>(out: Vec<Option<Result<T>>>) -> Vec<Result<T>> {
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err(unexpected())))
        .collect()
}

pub(super) fn key_results<T>(list: Vec<KeyResult<T>>) -> Vec<Result<T>> {
    list.into_iter()
        .map(|r| r.map_err(ClientError::from))
        .collect()
}

fn blobs(list: Vec<KeyResult<Blob>>) -> Vec<Result<Vec<u8>>> {
    list.into_iter()
        .map(|r| r.map(|b| b.0).map_err(ClientError::from))
        .collect()
}

impl DummyClient {
    /// Connect to the real client at `server` (`host:port`) and attach a
    /// fresh shared pool of `pool_size` bytes (rounded up to a page; at
    /// least one page).
    pub async fn connect(server: &str, pool_size: u64) -> Result<DummyClient> {
        Self::connect_with_staging(server, pool_size, 0).await
    }

    /// [`DummyClient::connect`] with `staging_size` more bytes of shared
    /// memory through which plain values of 256 KiB and more move instead of
    /// the socket (the reference's `local_buffer_size`); it also lifts the
    /// per-value limit to the staging size.
    #[tracing::instrument(name = "dummy.connect", skip_all, fields(server))]
    pub async fn connect_with_staging(
        server: &str,
        pool_size: u64,
        staging_size: u64,
    ) -> Result<DummyClient> {
        let stage_base = pool_size
            .checked_add(ALIGN - 1)
            .map(|s| s / ALIGN * ALIGN)
            .ok_or_else(|| ClientError::InvalidParams(format!("pool of {pool_size} bytes")))?;
        let size = stage_base
            .checked_add(staging_size)
            .and_then(|t| usize::try_from(t).ok())
            .ok_or_else(|| {
                ClientError::InvalidParams(format!("pool of {pool_size} + {staging_size} bytes"))
            })?;
        let pool = SharedPool::create(size)
            .map_err(|e| ClientError::Setup(format!("creating the shared pool: {e}")))?;
        let mut conns = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            conns.push(tokio::sync::Mutex::new(open(server).await?));
        }
        let mut dummy = DummyClient {
            conns,
            next_id: AtomicU64::new(1),
            next_conn: AtomicU64::new(0),
            alloc: Mutex::new(RangeAllocator::new(pool_size as usize, ALIGN as usize)),
            staging: Mutex::new(RangeAllocator::new(
                pool.len().saturating_sub(stage_base as usize),
                ALIGN as usize,
            )),
            stage_base,
            pool,
            segment: String::new(),
            server: server.to_string(),
        };
        // Every connection maps the pool on its own: the real client
        // serves each independently and releases each mapping with it.
        for conn in &dummy.conns {
            let req = ServiceRequest::Attach(dummy.pool.desc());
            let mut guard = conn.lock().await;
            match dummy.exchange(&mut guard, req).await? {
                ServiceReply::Attached { segment } => dummy.segment = segment,
                _ => return Err(unexpected()),
            }
        }
        Ok(dummy)
    }

    /// The real client's segment name (what `get_hostname` reports).
    pub fn segment_name(&self) -> &str {
        &self.segment
    }

    /// The shared pool: `(address in this process, length)`.
    pub fn pool(&self) -> (usize, usize) {
        (self.pool.addr(), self.pool.len())
    }

    /// A buffer of `len` bytes inside the shared pool (zero-copy for
    /// `put_from`/`get_into`), or `None` when the pool has no room.
    pub fn alloc(&self, len: usize) -> Option<usize> {
        let off = self.alloc.lock().alloc(len)?;
        Some(self.pool.addr() + off)
    }

    /// Give back a buffer from [`DummyClient::alloc`]; false if `addr` is not one.
    pub fn free(&self, addr: usize) -> bool {
        match addr.checked_sub(self.pool.addr()) {
            Some(off) => self.alloc.lock().free(off),
            None => false,
        }
    }

    /// Run `req` on an idle connection (or wait for one).
    pub(super) async fn call(&self, req: ServiceRequest) -> Result<ServiceReply> {
        let n = self.conns.len();
        let start = self.next_conn.fetch_add(1, Ordering::Relaxed) as usize % n;
        for i in 0..n {
            if let Ok(mut guard) = self.conns[(start + i) % n].try_lock() {
                return self.exchange(&mut guard, req).await;
            }
        }
        let mut guard = self.conns[start].lock().await;
        self.exchange(&mut guard, req).await
    }

    async fn exchange(&self, conn: &mut Conn, req: ServiceRequest) -> Result<ServiceReply> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if conn.broken {
            return Err(rpc_fail());
        }
        conn.out.clear();
        encode_frame(&mut conn.out, id, &req);
        if conn.out.len() - 4 > MAX_FRAME_LEN {
            // Nothing was sent: the connection stays usable.
            return Err(ClientError::InvalidParams(format!(
                "request of {} bytes exceeds the service frame limit",
                conn.out.len()
            )));
        }
        // Broken until the answer is in: a call abandoned mid-way (its
        // future dropped) leaves the stream out of step, so later calls
        // must fail rather than read its answer.
        conn.broken = true;
        let exchange = async {
            conn.wr.write_all(&conn.out).await.ok()?;
            let got = read_frame(&mut conn.rd, &mut conn.buf).await.ok()?;
            Some(got)
        };
        let got = match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
            Ok(Some(got)) => got,
            _ => return Err(rpc_fail()),
        };
        if got != id {
            return Err(unexpected());
        }
        let resp: ServiceResponse = decode_payload(&conn.buf).map_err(ClientError::Master)?;
        conn.broken = false;
        resp.map_err(ClientError::from)
    }

    pub(super) async fn done(&self, req: ServiceRequest, n: usize) -> Result<Vec<Result<()>>> {
        match self.call(req).await? {
            ServiceReply::Done(v) if v.len() == n => Ok(key_results(v)),
            _ => Err(unexpected()),
        }
    }

    /// Plain values carried in frames (split to keep each request small).
    pub(super) async fn put_inline(
        &self,
        keys: &[String],
        values: &[&[u8]],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<Vec<Result<()>>> {
        check_len(keys.len(), values.len())?;
        let mut out: Vec<Result<()>> = Vec::with_capacity(keys.len());
        let mut i = 0;
        while i < keys.len() {
            if values[i].len() > MAX_INLINE_VALUE {
                out.push(Err(ClientError::InvalidParams(format!(
                    "value of {} bytes is too large to pass through the client service; \
                     put_from a buffer of the shared pool instead",
                    values[i].len()
                ))));
                i += 1;
                continue;
            }
            let start = i;
            let mut bytes = 0;
            while i < keys.len()
                && values[i].len() <= MAX_INLINE_VALUE
                && (i == start || bytes + values[i].len() <= BATCH_BYTES)
            {
                bytes += values[i].len();
                i += 1;
            }
            let req = ServiceRequest::Put {
                keys: keys[start..i].to_vec(),
                values: values[start..i].iter().map(|v| Blob(v.to_vec())).collect(),
                config: config.clone(),
                upsert,
            };
            out.extend(self.done(req, i - start).await?);
        }
        Ok(out)
    }

    pub async fn put(&self, key: &str, value: &[u8], config: &ReplicateConfig) -> Result<()> {
        one(self
            .put_values(&[key.to_string()], &[value], config, false)
            .await)
    }

    pub async fn upsert(&self, key: &str, value: &[u8], config: &ReplicateConfig) -> Result<()> {
        one(self
            .put_values(&[key.to_string()], &[value], config, true)
            .await)
    }

    pub async fn batch_put(
        &self,
        keys: &[String],
        values: &[&[u8]],
        config: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        self.put_values(keys, values, config, false).await
    }

    /// The value of `key`: carried back in a frame, or through the staging
    /// area when it is too large for one.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let req = ServiceRequest::Get {
            keys: vec![key.to_string()],
        };
        match self.call(req).await {
            Ok(ServiceReply::Values(v)) if v.len() == 1 => one(Ok(blobs(v))),
            Ok(_) => Err(unexpected()),
            Err(ClientError::Master(ErrorCode::BufferOverflow)) => self.get_staged(key).await,
            Err(e) => Err(e),
        }
    }

    /// Values of `keys`. A batch whose answer would not fit one frame is
    /// asked again key by key.
    pub async fn batch_get(&self, keys: &[String]) -> Result<Vec<Result<Vec<u8>>>> {
        let req = ServiceRequest::Get {
            keys: keys.to_vec(),
        };
        match self.call(req).await {
            Ok(ServiceReply::Values(v)) if v.len() == keys.len() => Ok(blobs(v)),
            Ok(_) => Err(unexpected()),
            Err(ClientError::Master(ErrorCode::BufferOverflow)) if keys.len() > 1 => {
                let mut out = Vec::with_capacity(keys.len());
                for k in keys {
                    out.push(self.get(k).await);
                }
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    /// Split `regions` into those inside the pool (by index) and the rest.
    fn split(&self, regions: &[Region<'_>]) -> (Vec<usize>, Vec<PoolRange>, Vec<usize>) {
        let (mut shared, mut ranges, mut other) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in regions.iter().enumerate() {
            match self.pool.offset_of(r.addr(), r.len()) {
                Some(offset) => {
                    shared.push(i);
                    ranges.push(PoolRange {
                        offset,
                        len: r.len() as u64,
                    });
                }
                None => other.push(i),
            }
        }
        (shared, ranges, other)
    }

    async fn put_regions(
        &self,
        keys: &[String],
        regions: &[Region<'_>],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<Vec<Result<()>>> {
        check_len(keys.len(), regions.len())?;
        let (shared, ranges, other) = self.split(regions);
        let mut out: Vec<Option<Result<()>>> = (0..keys.len()).map(|_| None).collect();
        if !shared.is_empty() {
            let req = ServiceRequest::PutFrom {
                keys: shared.iter().map(|&i| keys[i].clone()).collect(),
                ranges,
                config: config.clone(),
                upsert,
            };
            for (&i, r) in shared.iter().zip(self.done(req, shared.len()).await?) {
                out[i] = Some(r);
            }
        }
        if !other.is_empty() {
            let ks: Vec<String> = other.iter().map(|&i| keys[i].clone()).collect();
            let vs: Vec<&[u8]> = other
                .iter()
                .map(|&i| {
                    let r = &regions[i];
                    // SAFETY: a Region names readable memory for its length
                    // (its constructor's contract).
                    unsafe { std::slice::from_raw_parts(r.addr() as *const u8, r.len()) }
                })
                .collect();
            for (&i, r) in other
                .iter()
                .zip(self.put_values(&ks, &vs, config, upsert).await?)
            {
                out[i] = Some(r);
            }
        }
        Ok(gathered(out))
    }

    /// Store registered regions: zero-copy for regions inside the shared pool.
    pub async fn batch_put_from(
        &self,
        keys: &[String],
        regions: &[Region<'_>],
        config: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        self.put_regions(keys, regions, config, false).await
    }

    pub async fn put_from(
        &self,
        key: &str,
        region: Region<'_>,
        config: &ReplicateConfig,
    ) -> Result<()> {
        one(self
            .put_regions(&[key.to_string()], &[region], config, false)
            .await)
    }

    /// Upsert registered regions (zero-copy inside the shared pool).
    pub async fn batch_upsert_from(
        &self,
        keys: &[String],
        regions: &[Region<'_>],
        config: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        self.put_regions(keys, regions, config, true).await
    }

    /// Read into registered regions: zero-copy for regions inside the shared
    /// pool; the object's size per key.
    pub async fn batch_get_into(
        &self,
        keys: &[String],
        regions: &[Region<'_>],
    ) -> Result<Vec<Result<u64>>> {
        check_len(keys.len(), regions.len())?;
        let (shared, ranges, other) = self.split(regions);
        let mut out: Vec<Option<Result<u64>>> = (0..keys.len()).map(|_| None).collect();
        if !shared.is_empty() {
            let req = ServiceRequest::GetInto {
                keys: shared.iter().map(|&i| keys[i].clone()).collect(),
                ranges,
            };
            let sizes = match self.call(req).await? {
                ServiceReply::Sizes(v) if v.len() == shared.len() => key_results(v),
                _ => return Err(unexpected()),
            };
            for (&i, r) in shared.iter().zip(sizes) {
                out[i] = Some(r);
            }
        }
        if !other.is_empty() {
            let ks: Vec<String> = other.iter().map(|&i| keys[i].clone()).collect();
            for (&i, v) in other.iter().zip(self.batch_get(&ks).await?) {
                let r = &regions[i];
                out[i] = Some(v.and_then(|v| {
                    if v.len() > r.len() {
                        return Err(ClientError::BufferTooSmall {
                            need: v.len() as u64,
                            have: r.len() as u64,
                        });
                    }
                    Ok(copy_into(*r, &v))
                }));
            }
        }
        Ok(gathered(out))
    }

    pub async fn get_into(&self, key: &str, region: Region<'_>) -> Result<u64> {
        one(self.batch_get_into(&[key.to_string()], &[region]).await)
    }

    /// Byte ranges of objects into registered regions: zero-copy for
    /// regions inside the shared pool; other regions get the whole value
    /// through the socket and copy their range out of it.
    pub async fn batch_get_ranges_into(&self, reads: &[RangeRead<'_>]) -> Result<Vec<Result<u64>>> {
        let regions: Vec<Region<'_>> = reads.iter().map(|r| r.dst).collect();
        let (shared, ranges, other) = self.split(&regions);
        let mut out: Vec<Option<Result<u64>>> = (0..reads.len()).map(|_| None).collect();
        if !shared.is_empty() {
            let req = ServiceRequest::GetRangesInto {
                reads: shared
                    .iter()
                    .zip(ranges)
                    .map(|(&i, r)| (reads[i].key.to_string(), reads[i].offset, r))
                    .collect(),
            };
            let sizes = match self.call(req).await? {
                ServiceReply::Sizes(v) if v.len() == shared.len() => key_results(v),
                _ => return Err(unexpected()),
            };
            for (&i, r) in shared.iter().zip(sizes) {
                out[i] = Some(r);
            }
        }
        if !other.is_empty() {
            let ks: Vec<String> = other.iter().map(|&i| reads[i].key.to_string()).collect();
            for (&i, v) in other.iter().zip(self.batch_get(&ks).await?) {
                let RangeRead { offset, dst, .. } = reads[i];
                out[i] = Some(v.and_then(|v| {
                    let end = offset.checked_add(dst.len() as u64);
                    if end.is_none_or(|e| e > v.len() as u64) {
                        return Err(ClientError::InvalidParams(format!(
                            "range {offset}+{} passes the end of a {}-byte object",
                            dst.len(),
                            v.len()
                        )));
                    }
                    Ok(copy_into(
                        dst,
                        &v[offset as usize..offset as usize + dst.len()],
                    ))
                }));
            }
        }
        Ok(gathered(out))
    }

    pub async fn batch_is_exist(&self, keys: &[String]) -> Result<Vec<Result<bool>>> {
        match self
            .call(ServiceRequest::IsExist {
                keys: keys.to_vec(),
            })
            .await?
        {
            ServiceReply::Exists(v) if v.len() == keys.len() => Ok(key_results(v)),
            _ => Err(unexpected()),
        }
    }

    pub async fn is_exist(&self, key: &str) -> Result<bool> {
        one(self.batch_is_exist(&[key.to_string()]).await)
    }

    async fn count(&self, req: ServiceRequest) -> Result<u64> {
        match self.call(req).await? {
            ServiceReply::Count(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    pub async fn get_size(&self, key: &str) -> Result<u64> {
        self.count(ServiceRequest::GetSize {
            key: key.to_string(),
        })
        .await
    }

    pub async fn batch_remove(&self, keys: &[String], force: bool) -> Result<Vec<Result<()>>> {
        let req = ServiceRequest::Remove {
            keys: keys.to_vec(),
            force,
        };
        self.done(req, keys.len()).await
    }

    pub async fn remove(&self, key: &str, force: bool) -> Result<()> {
        one(self.batch_remove(&[key.to_string()], force).await)
    }

    pub async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64> {
        self.count(ServiceRequest::RemoveByRegex {
            pattern: pattern.to_string(),
            force,
        })
        .await
    }

    pub async fn remove_all(&self, force: bool) -> Result<u64> {
        self.count(ServiceRequest::RemoveAll { force }).await
    }

    /// The real client's health (0 healthy, 2 master unreachable); 2 when the
    /// real client itself is unreachable.
    pub async fn health_check(&self) -> i32 {
        match self.call(ServiceRequest::Health).await {
            Ok(ServiceReply::Health(h)) => h,
            _ => 2,
        }
    }

    /// End the session: the real client unregisters and unmaps the pool.
    pub async fn close(&self) {
        for conn in &self.conns {
            let mut conn = conn.lock().await;
            conn.broken = true;
            let _ = conn.wr.shutdown().await;
        }
    }
}

/// Copy `src` to the start of `dst` (callers check it fits); its length.
pub(super) fn copy_into(dst: Region<'_>, src: &[u8]) -> u64 {
    debug_assert!(src.len() <= dst.len());
    let n = src.len().min(dst.len());
    // SAFETY: a Region names writable memory for its length (its
    // constructor's contract); n is within it.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.addr() as *mut u8, n) };
    n as u64
}

pub(super) fn check_len(keys: usize, regions: usize) -> Result<()> {
    if keys == regions {
        Ok(())
    } else {
        Err(ClientError::InvalidParams(format!(
            "{keys} keys but {regions} buffers"
        )))
    }
}

/// The only result of a one-key batch.
fn one<T>(r: Result<Vec<Result<T>>>) -> Result<T> {
    r?.into_iter().next().unwrap_or_else(|| Err(unexpected()))
}
