//! The dummy's staging area (`local_buffer_size` bytes after the pool):
//! plain values of [`STAGE_MIN`] bytes and more are copied into shared memory
//! and stored with a zero-copy `PutFrom`, and values too large for a frame
//! come back through it, instead of through the socket.
//!
//! Invariant: a staging range is reused only after the request that named
//! it was answered. A call abandoned mid-way, or one whose connection failed
//! (the real client may still be reading), leaks its ranges rather than let
//! a later value overwrite bytes an unfinished put may still store.

use super::dummy::{check_len, copy_into, gathered, key_results, unexpected, DummyClient};
use super::wire::{PoolRange, ServiceReply, ServiceRequest};
use crate::client::{ClientError, Region, Result};
use mooncake_store_protocol::{ErrorCode, ReplicateConfig};

/// Plain values at least this large go through the staging area when it has room.
pub const STAGE_MIN: usize = 256 << 10;
/// Tries of a staged get whose object grew between its size and its read.
const GET_TRIES: usize = 3;

/// Staging ranges held by one call; freed by [`Lease::release`] only.
struct Lease<'a> {
    dummy: &'a DummyClient,
    /// Offsets in the staging allocator.
    held: Vec<u64>,
}

impl<'a> Lease<'a> {
    fn new(dummy: &'a DummyClient) -> Self {
        Lease {
            dummy,
            held: Vec::new(),
        }
    }

    /// A staging range of `len` bytes, as a range of the pool.
    fn alloc(&mut self, len: usize) -> Option<PoolRange> {
        let off = self.dummy.staging.lock().alloc(len)? as u64;
        self.held.push(off);
        Some(PoolRange {
            offset: self.dummy.stage_base + off,
            len: len as u64,
        })
    }

    /// The bytes of `r` in this process.
    fn region(&self, r: PoolRange) -> Region<'a> {
        // SAFETY: `r` was allocated from the staging area, inside the pool,
        // which lives as long as the dummy this lease borrows.
        unsafe { Region::from_raw(self.dummy.pool.addr() + r.offset as usize, r.len as usize) }
    }

    /// Free the ranges, unless `outcome` says the request may still be in flight.
    fn release<T>(mut self, outcome: &Result<T>) {
        let in_flight = matches!(outcome, Err(e) if e.master_code() == Some(ErrorCode::RpcFail));
        if !in_flight {
            let mut s = self.dummy.staging.lock();
            for off in self.held.drain(..) {
                s.free(off as usize);
            }
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.held.is_empty() {
            tracing::debug!(
                ranges = self.held.len(),
                "staging ranges of an unfinished request leaked"
            );
        }
    }
}

impl DummyClient {
    /// put/upsert of plain values: staged when large and there is room,
    /// else carried in frames. One result per key.
    pub(super) async fn put_values(
        &self,
        keys: &[String],
        values: &[&[u8]],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<Vec<Result<()>>> {
        check_len(keys.len(), values.len())?;
        let mut out: Vec<Option<Result<()>>> = (0..keys.len()).map(|_| None).collect();
        let mut lease = Lease::new(self);
        let (mut idx, mut ranges) = (Vec::new(), Vec::new());
        for (i, v) in values.iter().enumerate() {
            if v.len() >= STAGE_MIN {
                if let Some(r) = lease.alloc(v.len()) {
                    copy_into(lease.region(r), v);
                    idx.push(i);
                    ranges.push(r);
                }
            }
        }
        if !idx.is_empty() {
            let req = ServiceRequest::PutFrom {
                keys: idx.iter().map(|&i| keys[i].clone()).collect(),
                ranges,
                config: config.clone(),
                upsert,
            };
            let done = self.done(req, idx.len()).await;
            lease.release(&done);
            for (&i, r) in idx.iter().zip(done?) {
                out[i] = Some(r);
            }
        } else {
            lease.release(&Ok(()));
        }
        let rest: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
        if !rest.is_empty() {
            let ks: Vec<String> = rest.iter().map(|&i| keys[i].clone()).collect();
            let vs: Vec<&[u8]> = rest.iter().map(|&i| values[i]).collect();
            for (&i, r) in rest
                .iter()
                .zip(self.put_inline(&ks, &vs, config, upsert).await?)
            {
                out[i] = Some(r);
            }
        }
        Ok(gathered(out))
    }

    /// The value of `key` read through the staging area (for objects too
    /// large for a frame).
    pub(super) async fn get_staged(&self, key: &str) -> Result<Vec<u8>> {
        for _ in 0..GET_TRIES {
            let size = self.get_size(key).await?;
            let mut lease = Lease::new(self);
            let Some(range) = lease.alloc(size as usize) else {
                lease.release(&Ok(()));
                return Err(ClientError::InvalidParams(format!(
                    "object of {size} bytes is larger than a frame and than the free \
                     staging area (local_buffer_size); get_into a pool buffer instead"
                )));
            };
            let req = ServiceRequest::GetInto {
                keys: vec![key.to_string()],
                ranges: vec![range],
            };
            let got: Result<u64> = match self.call(req).await {
                Ok(ServiceReply::Sizes(v)) if v.len() == 1 => {
                    key_results(v).pop().unwrap_or_else(|| Err(unexpected()))
                }
                Ok(_) => Err(unexpected()),
                Err(e) => Err(e),
            };
            let out = match &got {
                Ok(n) => {
                    let r = lease.region(range);
                    // SAFETY: the real client wrote `n` (<= size) bytes into
                    // this staging range and answered; nothing else uses it.
                    Ok(
                        unsafe { std::slice::from_raw_parts(r.addr() as *const u8, *n as usize) }
                            .to_vec(),
                    )
                }
                Err(_) => Err(()),
            };
            lease.release(&got);
            match (got, out) {
                (Ok(_), Ok(v)) => return Ok(v),
                // Replaced by a larger value since get_size: ask again.
                (Err(ClientError::BufferTooSmall { .. }), _) => continue,
                (Err(e), _) => return Err(e),
                (Ok(_), Err(())) => return Err(unexpected()),
            }
        }
        Err(ClientError::InconsistentRead {
            key: key.to_string(),
            reason: "the object kept growing while it was read".into(),
        })
    }
}
