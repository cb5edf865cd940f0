//! The real client's side: a TCP service that runs dummy clients' requests on
//! one [`Client`].
//!
//! One task per connection; requests on a connection run one at a time, in
//! order (a dummy keeps one connection and serialises its calls). A
//! connection may attach one shared pool; it is registered with the real
//! client's Transfer Engine while the connection lives, and unregistered
//! (waiting for transfers that use it) then unmapped when the connection
//! ends, however it ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use futures::future::join_all;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use super::shm::PeerMapping;
use super::wire::{
    Blob, KeyResult, PoolRange, ServiceReply, ServiceRequest, ServiceResponse, WireError,
};
use crate::client::{Client, ClientError, RangeRead, Region};
use mooncake_store_protocol::frame::{decode_payload, encode_frame, read_frame, ReadError};
use mooncake_store_protocol::{ErrorCode, MAX_FRAME_LEN};

/// Counters a test or an operator can read.
#[derive(Debug, Default)]
struct Counters {
    sessions: AtomicUsize,
    pools: AtomicUsize,
}

/// A running client service. Dropping it stops accepting and ends every
/// session (their pools are released in the background).
#[derive(Debug)]
pub struct ServiceHandle {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl ServiceHandle {
    /// Where dummies connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connected dummies.
    pub fn sessions(&self) -> usize {
        self.counters.sessions.load(Ordering::Acquire)
    }

    /// Shared pools currently mapped and registered.
    pub fn attached_pools(&self) -> usize {
        self.counters.pools.load(Ordering::Acquire)
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve dummy clients on `addr` (`host:port`; port 0 picks one) with `client`.
pub async fn serve(client: Client, addr: &str) -> std::io::Result<ServiceHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let c = Arc::clone(&counters);
    let task = tokio::spawn(async move {
        let mut sessions = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let span = tracing::info_span!("client_service.session", %peer);
                        sessions.spawn(session(client.clone(), stream, Arc::clone(&c)).instrument(span));
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        }
    });
    info!(%local, "client service listening");
    Ok(ServiceHandle {
        addr: local,
        counters,
        task,
    })
}

/// A pool mapped into this process and registered with the engine.
struct Attached {
    mapping: Option<PeerMapping>,
    client: Client,
    counters: Arc<Counters>,
}

impl Attached {
    fn mapping(&self) -> &PeerMapping {
        self.mapping.as_ref().expect("present until release")
    }

    /// Unregister (waiting out transfers that use it), then unmap.
    async fn release(mut self) {
        if let Some(m) = self.mapping.take() {
            if let Err(e) = self.client.unregister_buffer(m.addr()).await {
                // Closed engine: nothing can touch it any more either way.
                debug!(error = %e, "unregistering a dummy pool");
            }
            drop(m);
            self.counters.pools.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Reached only when the session was aborted mid-flight: finish the
        // release in the background, or leak the mapping rather than unmap
        // memory the engine may still name.
        if let Some(m) = self.mapping.take() {
            let client = self.client.clone();
            let counters = Arc::clone(&self.counters);
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move {
                        let _ = client.unregister_buffer(m.addr()).await;
                        drop(m);
                        counters.pools.fetch_sub(1, Ordering::AcqRel);
                    });
                }
                Err(_) => std::mem::forget(m),
            }
        }
    }
}

async fn session(client: Client, stream: TcpStream, counters: Arc<Counters>) {
    counters.sessions.fetch_add(1, Ordering::AcqRel);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(256 << 10, rd);
    let mut buf = Vec::new();
    let mut out = BytesMut::new();
    let mut pool: Option<Attached> = None;
    loop {
        let (id, resp, close) = match read_frame(&mut rd, &mut buf).await {
            Ok(id) => {
                let resp = match decode_payload::<ServiceRequest>(&buf) {
                    Ok(req) => {
                        let span = tracing::info_span!("client_service.rpc", op = op_name(&req));
                        handle(&client, &counters, &mut pool, req)
                            .instrument(span)
                            .await
                    }
                    Err(code) => Err(WireError::Master(code)),
                };
                (id, resp, false)
            }
            Err(ReadError::TooLarge { id, len }) => {
                debug!(len, "frame too large; closing");
                (id, Err(WireError::Master(ErrorCode::FrameTooLarge)), true)
            }
            Err(ReadError::Io(_)) => break,
        };
        out.clear();
        encode_frame(&mut out, id, &resp);
        if out.len() - 4 > MAX_FRAME_LEN {
            out.clear();
            let e: ServiceResponse = Err(WireError::Master(ErrorCode::BufferOverflow));
            encode_frame(&mut out, id, &e);
        }
        if wr.write_all(&out).await.is_err() || close {
            break;
        }
    }
    if let Some(p) = pool.take() {
        p.release().await;
    }
    counters.sessions.fetch_sub(1, Ordering::AcqRel);
    debug!("dummy session ended");
}

fn op_name(r: &ServiceRequest) -> &'static str {
    match r {
        ServiceRequest::Attach(_) => "attach",
        ServiceRequest::Put { .. } => "put",
        ServiceRequest::Get { .. } => "get",
        ServiceRequest::PutFrom { .. } => "put_from",
        ServiceRequest::GetInto { .. } => "get_into",
        ServiceRequest::IsExist { .. } => "is_exist",
        ServiceRequest::GetSize { .. } => "get_size",
        ServiceRequest::Remove { .. } => "remove",
        ServiceRequest::RemoveByRegex { .. } => "remove_by_regex",
        ServiceRequest::RemoveAll { .. } => "remove_all",
        ServiceRequest::Health => "health",
        ServiceRequest::GetRangesInto { .. } => "get_ranges_into",
    }
}

fn wire<T>(r: Result<T, ClientError>) -> KeyResult<T> {
    r.map_err(|e| WireError::from(&e))
}

fn same_len(a: usize, b: usize, what: &str) -> Result<(), WireError> {
    if a == b {
        Ok(())
    } else {
        Err(WireError::InvalidParams(format!("{a} keys but {b} {what}")))
    }
}

/// Regions of the attached pool for `ranges`; a per-key error for a range
/// outside it (nothing moves for that key).
fn regions(
    pool: &Option<Attached>,
    ranges: &[PoolRange],
) -> Result<Vec<KeyResult<Region<'static>>>, WireError> {
    let pool = pool.as_ref().ok_or_else(|| {
        WireError::InvalidParams("no shared pool attached to this connection".into())
    })?;
    let m = pool.mapping();
    Ok(ranges
        .iter()
        .map(|r| match m.resolve(r.offset, r.len) {
            // SAFETY: the range lies inside the mapped pool, registered with
            // this client's engine until the session ends, which is after
            // this request completes.
            Some(addr) => Ok(unsafe { Region::from_raw(addr, r.len as usize) }),
            None => Err(WireError::InvalidParams(format!(
                "range {}+{} outside the shared pool of {} bytes",
                r.offset,
                r.len,
                m.len()
            ))),
        })
        .collect())
}

/// Run `op` on the keys whose region resolved (given with their positions in
/// `keys`); merge with the refused ones.
async fn on_regions<T, F, Fut>(
    keys: &[String],
    regions: Vec<KeyResult<Region<'static>>>,
    op: F,
) -> Vec<KeyResult<T>>
where
    F: FnOnce(Vec<usize>, Vec<String>, Vec<Region<'static>>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Result<T, ClientError>>, ClientError>>,
{
    let mut out: Vec<Option<KeyResult<T>>> = Vec::with_capacity(keys.len());
    let (mut ok_keys, mut ok_regions, mut idx) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in regions.into_iter().enumerate() {
        match r {
            Ok(reg) => {
                ok_keys.push(keys[i].clone());
                ok_regions.push(reg);
                idx.push(i);
                out.push(None);
            }
            Err(e) => out.push(Some(Err(e))),
        }
    }
    if !idx.is_empty() {
        match op(idx.clone(), ok_keys, ok_regions).await {
            Ok(list) => {
                for (i, r) in idx.iter().zip(list) {
                    out[*i] = Some(wire(r));
                }
            }
            Err(e) => {
                let e = WireError::from(&e);
                for i in &idx {
                    out[*i] = Some(Err(e.clone()));
                }
            }
        }
    }
    out.into_iter()
        .map(|o| o.unwrap_or(Err(WireError::Master(ErrorCode::Internal))))
        .collect()
}

async fn handle(
    client: &Client,
    counters: &Arc<Counters>,
    pool: &mut Option<Attached>,
    req: ServiceRequest,
) -> ServiceResponse {
    match req {
        ServiceRequest::Attach(desc) => {
            if pool.is_some() {
                return Err(WireError::InvalidParams(
                    "a shared pool is already attached to this connection".into(),
                ));
            }
            let m =
                PeerMapping::open(&desc).map_err(|e| WireError::InvalidParams(e.to_string()))?;
            // SAFETY: the mapping stays alive until `Attached::release`, which
            // unregisters it first (or leaks it).
            unsafe { client.register_buffer(m.addr(), m.len()).await }
                .map_err(|e| WireError::from(&e))?;
            counters.pools.fetch_add(1, Ordering::AcqRel);
            *pool = Some(Attached {
                mapping: Some(m),
                client: client.clone(),
                counters: Arc::clone(counters),
            });
            info!(pid = desc.pid, len = desc.len, "dummy pool attached");
            Ok(ServiceReply::Attached {
                segment: client.segment_name().to_string(),
            })
        }
        ServiceRequest::Put {
            keys,
            values,
            config,
            upsert,
        } => {
            same_len(keys.len(), values.len(), "values")?;
            let done = if upsert {
                let futs = keys
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| client.upsert(k, &v.0, &config));
                join_all(futs).await.into_iter().map(wire).collect()
            } else {
                let slices: Vec<&[u8]> = values.iter().map(|v| v.0.as_slice()).collect();
                wire(client.batch_put(&keys, &slices, &config).await)?
                    .into_iter()
                    .map(wire)
                    .collect()
            };
            Ok(ServiceReply::Done(done))
        }
        ServiceRequest::Get { keys } => {
            let values = if keys.len() == 1 {
                vec![wire(client.get(&keys[0]).await.map(Blob))]
            } else {
                wire(client.batch_get(&keys).await)?
                    .into_iter()
                    .map(|r| wire(r.map(Blob)))
                    .collect()
            };
            Ok(ServiceReply::Values(values))
        }
        ServiceRequest::PutFrom {
            keys,
            ranges,
            config,
            upsert,
        } => {
            same_len(keys.len(), ranges.len(), "ranges")?;
            let regs = regions(pool, &ranges)?;
            let done = on_regions(&keys, regs, |_, ks, rs| async move {
                if upsert {
                    let futs = ks.iter().zip(&rs).map(|(k, r)| {
                        // SAFETY: `r` lies inside the attached pool (checked
                        // by `regions`), mapped for this whole request.
                        let data =
                            unsafe { std::slice::from_raw_parts(r.addr() as *const u8, r.len()) };
                        client.upsert(k, data, &config)
                    });
                    Ok(join_all(futs).await)
                } else {
                    client.batch_put_from(&ks, &rs, &config).await
                }
            })
            .await;
            Ok(ServiceReply::Done(done))
        }
        ServiceRequest::GetInto { keys, ranges } => {
            same_len(keys.len(), ranges.len(), "ranges")?;
            let regs = regions(pool, &ranges)?;
            let sizes = on_regions(&keys, regs, |_, ks, rs| async move {
                client.batch_get_into(&ks, &rs).await
            })
            .await;
            Ok(ServiceReply::Sizes(sizes))
        }
        ServiceRequest::IsExist { keys } => Ok(ServiceReply::Exists(
            wire(client.batch_is_exist(&keys).await)?
                .into_iter()
                .map(wire)
                .collect(),
        )),
        ServiceRequest::GetSize { key } => {
            Ok(ServiceReply::Count(wire(client.get_size(&key).await)?))
        }
        ServiceRequest::Remove { keys, force } => {
            let done = if keys.len() == 1 {
                vec![wire(client.remove(&keys[0], force).await)]
            } else {
                wire(client.batch_remove(&keys, force).await)?
                    .into_iter()
                    .map(wire)
                    .collect()
            };
            Ok(ServiceReply::Done(done))
        }
        ServiceRequest::RemoveByRegex { pattern, force } => Ok(ServiceReply::Count(wire(
            client.remove_by_regex(&pattern, force).await,
        )?)),
        ServiceRequest::RemoveAll { force } => {
            Ok(ServiceReply::Count(wire(client.remove_all(force).await)?))
        }
        ServiceRequest::Health => Ok(ServiceReply::Health(client.health_check().await)),
        ServiceRequest::GetRangesInto { reads } => {
            let ranges: Vec<PoolRange> = reads.iter().map(|r| r.2).collect();
            let keys: Vec<String> = reads.iter().map(|r| r.0.clone()).collect();
            let offsets: Vec<u64> = reads.iter().map(|r| r.1).collect();
            let regs = regions(pool, &ranges)?;
            let sizes = on_regions(&keys, regs, |idx, ks, rs| async move {
                let list: Vec<RangeRead<'_>> = idx
                    .iter()
                    .zip(&ks)
                    .zip(&rs)
                    .map(|((&i, k), r)| RangeRead {
                        key: k,
                        offset: offsets[i],
                        dst: *r,
                    })
                    .collect();
                client.batch_get_ranges_into(&list).await
            })
            .await;
            Ok(ServiceReply::Sizes(sizes))
        }
    }
}
