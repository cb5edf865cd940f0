//! Range reads: bytes `[offset, offset + len)` of objects straight into registered
//! regions, moving only those bytes.
//!
//! A range maps onto the replica's pieces with [`plan::spans`], so a striped object
//! transfers only the stripes (and parts of stripes) the range overlaps. All ranges of
//! one key go to the engine as one batch; the keys of a batch are read concurrently
//! after one `batch_get_replica_list` round trip.
//!
//! Invariants:
//! * a range is checked against the object's size before anything moves; one that
//!   reaches past the end is [`ClientError::InvalidParams`] (the reference's
//!   INVALID_PARAMS, -600) and writes nothing;
//! * the engine writes exactly `[dst.addr, dst.addr + len)` of each range, nothing
//!   around it (the [`Region`] guarantees that memory is registered);
//! * the bytes come from one complete replica per key read under the object's lease
//!   (renewed while the reads run); a batch whose lease lapsed is read again (the space
//!   may have been reused).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::future::join_all;
use mooncake_transfer::{Opcode, TransferError};
use tracing::{debug, Instrument};

use super::io::{check_sizes, requests};
use super::ops::LEASE_RETRIES;
use super::plan;
use super::{Client, ClientError, Region, Result};
use mooncake_store_protocol::{validate_key, ErrorCode, Replica};

/// One range read: `dst.len()` bytes of `key`, starting at byte `offset` of the object.
#[derive(Debug, Clone, Copy)]
pub struct RangeRead<'a> {
    pub key: &'a str,
    pub offset: u64,
    pub dst: Region<'a>,
}

impl Client {
    /// Read `dst.len()` bytes of `key` from `offset` into `dst`, transferring only those
    /// bytes; returns the bytes read (`dst.len()`).
    /// [`ClientError::InvalidParams`] when the range passes the object's end.
    pub async fn get_range_into(&self, key: &str, offset: u64, dst: Region<'_>) -> Result<u64> {
        let read = RangeRead { key, offset, dst };
        self.batch_get_ranges_into(&[read])
            .await?
            .pop()
            .expect("one result per read")
    }

    /// Many range reads (any keys, any number of ranges per key); one result per read,
    /// in order. A missing key fails only its own ranges.
    pub async fn batch_get_ranges_into(&self, reads: &[RangeRead<'_>]) -> Result<Vec<Result<u64>>> {
        let span = tracing::info_span!("store.batch_get_ranges_into", n = reads.len());
        self.ranges_impl(reads).instrument(span).await
    }

    async fn ranges_impl(&self, reads: &[RangeRead<'_>]) -> Result<Vec<Result<u64>>> {
        self.check_open()?;
        let mut out: Vec<Option<Result<u64>>> = (0..reads.len()).map(|_| None).collect();
        // Group the reads by key, in first-seen order.
        let mut keys: Vec<String> = Vec::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, r) in reads.iter().enumerate() {
            if let Err(e) = validate_key(r.key) {
                out[i] = Some(Err(e.into()));
                continue;
            }
            let g = *index.entry(r.key).or_insert_with(|| {
                keys.push(r.key.to_string());
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(i);
        }
        if !keys.is_empty() {
            let ttl = self.inner.config.lease_ttl;
            let mut done = false;
            for _ in 0..LEASE_RETRIES {
                let t0 = Instant::now();
                let lists = self.inner.master.batch_get_replica_list(&keys).await?;
                // Long reads keep the leases alive (as `get` does): re-ask every third
                // of the TTL; an answer naming the same replicas that came back before
                // the previous lease ended extends it from when it was asked.
                let renewed = parking_lot::Mutex::new(t0);
                let listed = lists.clone();
                let keepalive = async {
                    loop {
                        tokio::time::sleep(ttl / 3).await;
                        let asked = Instant::now();
                        match self.inner.master.batch_get_replica_list(&keys).await {
                            Ok(l) if l == listed && renewed.lock().elapsed() < ttl => {
                                *renewed.lock() = asked
                            }
                            _ => std::future::pending::<()>().await,
                        }
                    }
                };
                let jobs = groups.iter().zip(lists).zip(&keys).map(|((g, list), key)| {
                    let ranges: Vec<RangeRead<'_>> = g.iter().map(|&i| reads[i]).collect();
                    async move {
                        match list {
                            Ok(replicas) => self.read_ranges(key, &replicas, &ranges).await,
                            Err(e) => fan_out(ClientError::Master(e), ranges.len()),
                        }
                    }
                });
                let results = tokio::select! {
                    r = join_all(jobs) => r,
                    () = keepalive => unreachable!("keepalive never completes"),
                };
                if renewed.lock().elapsed() < ttl {
                    for (g, res) in groups.iter().zip(results) {
                        for (&i, r) in g.iter().zip(res) {
                            out[i] = Some(r);
                        }
                    }
                    done = true;
                    break;
                }
                debug!(
                    keys = keys.len(),
                    "range reads outlasted the lease; reading again"
                );
            }
            if !done {
                for &i in groups.iter().flatten() {
                    out[i] = Some(Err(ClientError::InconsistentRead {
                        key: reads[i].key.to_string(),
                        reason: "every read outlasted the object's lease".into(),
                    }));
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every read answered"))
            .collect())
    }

    /// The ranges of one key from one complete replica (nearest first, the next on a
    /// failed transfer); one result per range.
    async fn read_ranges(
        &self,
        key: &str,
        replicas: &[Replica],
        ranges: &[RangeRead<'_>],
    ) -> Vec<Result<u64>> {
        let Some(size) = replicas.first().map(Replica::size) else {
            return fan_out(ErrorCode::ObjectNotFound.into(), ranges.len());
        };
        if let Err(e) = check_sizes(replicas, size) {
            return fan_out(e, ranges.len());
        }
        let mut out: Vec<Result<u64>> = ranges
            .iter()
            .map(|r| {
                let len = r.dst.len() as u64;
                match r.offset.checked_add(len) {
                    Some(end) if end <= size => Ok(len),
                    _ => Err(out_of_bounds(r.offset, len, size)),
                }
            })
            .collect();
        let wanted: Vec<&RangeRead<'_>> = ranges
            .iter()
            .zip(&out)
            .filter(|(_, ok)| matches!(ok, Ok(n) if *n > 0))
            .map(|(r, _)| r)
            .collect();
        if wanted.is_empty() {
            return out;
        }
        let spread = self.inner.spread.fetch_add(1, Ordering::Relaxed);
        let order = plan::read_order(replicas, &self.inner.segment_name, &self.inner.host, spread);
        let mut last = None;
        for i in order {
            match self.read_replica_ranges(&replicas[i], &wanted).await {
                Ok(()) => return out,
                Err(e) => {
                    debug!(key, replica = i, error = %e, "range read failed; trying the next replica");
                    last = Some(e);
                }
            }
        }
        let err = last.unwrap_or(ClientError::Master(ErrorCode::ObjectNotFound));
        let mut errs = fan_out(err, out.len()).into_iter();
        for r in out.iter_mut() {
            let e = errs.next().expect("one per range");
            if r.is_ok() {
                *r = e;
            }
        }
        out
    }

    /// Transfer `ranges` (each inside the object) of `replica` into their regions, as
    /// one engine batch of only the overlapping spans.
    async fn read_replica_ranges(
        &self,
        replica: &Replica,
        ranges: &[&RangeRead<'_>],
    ) -> Result<()> {
        let mut spans = Vec::new();
        // Where each span lands: its range's region, shifted by the span's place in it.
        let mut locals = Vec::new();
        for r in ranges {
            for s in plan::spans(replica, r.offset..r.offset + r.dst.len() as u64) {
                locals.push(r.dst.addr() + (s.obj_off - r.offset) as usize);
                spans.push(s);
            }
        }
        let mut cache = HashMap::new();
        self.handles(spans.iter(), &mut cache).await?;
        let mut reqs = requests(&spans, &cache, Opcode::Read, |_| 0);
        for (req, local) in reqs.iter_mut().zip(locals) {
            req.source = local;
        }
        self.inner.engine.transfer(&reqs).await?;
        Ok(())
    }
}

/// The error of a range that reaches past the object's end.
fn out_of_bounds(offset: u64, len: u64, size: u64) -> ClientError {
    ClientError::InvalidParams(format!(
        "range {offset}+{len} outside object of {size} bytes"
    ))
}

/// `err` for each of `n` ranges that failed together (the first keeps the original).
fn fan_out(err: ClientError, n: usize) -> Vec<Result<u64>> {
    let mut v = Vec::with_capacity(n);
    if n == 0 {
        return v;
    }
    for _ in 1..n {
        v.push(Err(sibling(&err)));
    }
    v.insert(0, Err(err));
    v
}

/// An equivalent error (same return code and message) for another range.
fn sibling(e: &ClientError) -> ClientError {
    match e {
        ClientError::Master(c) => ClientError::Master(*c),
        ClientError::Transfer(t) => ClientError::Transfer(TransferError::Protocol(t.to_string())),
        ClientError::InvalidParams(s) => ClientError::InvalidParams(s.clone()),
        ClientError::BufferTooSmall { need, have } => ClientError::BufferTooSmall {
            need: *need,
            have: *have,
        },
        ClientError::NoStagingBuffer => ClientError::NoStagingBuffer,
        ClientError::InconsistentRead { key, reason } => ClientError::InconsistentRead {
            key: key.clone(),
            reason: reason.clone(),
        },
        ClientError::Closed => ClientError::Closed,
        ClientError::Setup(s) => ClientError::Setup(s.clone()),
        ClientError::ChecksumMismatch { key } => ClientError::ChecksumMismatch { key: key.clone() },
    }
}
