//! The object operations of [`Client`]: put/get/remove and friends, one key
//! at a time. Batch forms are in `batch.rs`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, Instrument};

use super::io::{check_sizes, Dst, Src};
use super::plan;
use super::{Client, ClientError, Region, Result};
use mooncake_store_protocol::{validate_key, ErrorCode, Replica, ReplicateConfig};

/// How many times a get re-asks the master when a read outlasted its lease.
pub(crate) const LEASE_RETRIES: usize = 3;
/// Placements a put tries before giving up (a target that fails mid-write).
const PUT_ATTEMPTS: usize = 5;
/// How long a put may keep retrying (re-placement, failover).
const PUT_RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutMode {
    /// Fails with `ObjectAlreadyExists` if the key exists.
    Insert,
    /// Replaces an existing object.
    Upsert,
}

impl Client {
    /// Store `value` under `key` (fails if the key exists; see [`Client::upsert`]).
    pub async fn put(&self, key: &str, value: &[u8], config: &ReplicateConfig) -> Result<()> {
        let span = tracing::info_span!("store.put", key, size = value.len());
        self.put_impl(
            key,
            value.len() as u64,
            Src::Bytes(value),
            config,
            PutMode::Insert,
        )
        .instrument(span)
        .await
    }

    /// Store `value` under `key`, replacing any existing object. Readers see
    /// the old value until the new one is complete.
    pub async fn upsert(&self, key: &str, value: &[u8], config: &ReplicateConfig) -> Result<()> {
        let span = tracing::info_span!("store.upsert", key, size = value.len());
        self.put_impl(
            key,
            value.len() as u64,
            Src::Bytes(value),
            config,
            PutMode::Upsert,
        )
        .instrument(span)
        .await
    }

    /// Store the bytes of a registered region under `key`, zero-copy.
    pub async fn put_from(
        &self,
        key: &str,
        region: Region<'_>,
        config: &ReplicateConfig,
    ) -> Result<()> {
        let span = tracing::info_span!("store.put_from", key, size = region.len());
        self.put_impl(
            key,
            region.len() as u64,
            Src::Registered(region.addr()),
            config,
            PutMode::Insert,
        )
        .instrument(span)
        .await
    }

    pub(crate) async fn put_impl(
        &self,
        key: &str,
        size: u64,
        src: Src<'_>,
        config: &ReplicateConfig,
        mode: PutMode,
    ) -> Result<()> {
        self.check_open()?;
        validate_key(key)?;
        if size == 0 {
            return Err(ClientError::InvalidParams("value must not be empty".into()));
        }
        if matches!(src, Src::Bytes(_)) && self.inner.staging.is_none() && self.mounted().is_none()
        {
            return Err(ClientError::NoStagingBuffer);
        }
        let crc = config
            .with_checksum
            .then(|| super::checksum::of_source(src, size));
        let master = &self.inner.master;
        // A put whose target fails is placed again, and one whose reservation a master
        // failover forgot starts over on the new leader, within PUT_RETRY_WINDOW: a put
        // either completes or fails, never half-visible.
        let deadline = Instant::now() + PUT_RETRY_WINDOW;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let term = master.term();
            let started = match mode {
                PutMode::Insert => master.put_start(key, size, config).await,
                PutMode::Upsert => master.upsert_start(key, size, config).await,
            };
            let replicas = match started {
                Ok(r) => r,
                Err(e) => return Err(e.into()),
            };
            let r = self.finish_put(key, &replicas, size, src, crc).await;
            let again = match &r {
                Err(ClientError::Transfer(_)) => true,
                Err(ClientError::Master(ErrorCode::InvalidWrite)) => master.term() != term,
                _ => false,
            };
            if !again || attempts >= PUT_ATTEMPTS || Instant::now() >= deadline {
                return r;
            }
            debug!(key, attempts, "put failed; placing it again");
        }
    }

    /// Write the replicas of a started put, then end it (recording `crc`, the
    /// value's CRC32C), or revoke it on any failure so nothing half-written
    /// becomes visible.
    pub(crate) async fn finish_put(
        &self,
        key: &str,
        replicas: &[Replica],
        size: u64,
        src: Src<'_>,
        crc: Option<u32>,
    ) -> Result<()> {
        let master = &self.inner.master;
        let written = self.write_replicas(replicas, size, src).await;
        let result = match written {
            Ok(()) => master
                .put_end_checked(key, crc)
                .await
                .map_err(ClientError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            debug!(key, error = %e, "put failed; revoking");
            if let Err(re) = master.put_revoke(key).await {
                debug!(key, error = %re, "put_revoke after failure");
            }
        }
        result
    }

    /// The value of `key`. [`ErrorCode::ObjectNotFound`] when absent.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let span = tracing::info_span!("store.get", key);
        let (_, v) = self.get_impl(key, ReadTarget::Vec).instrument(span).await?;
        Ok(v.unwrap_or_default())
    }

    /// Read `key` into a registered region, zero-copy; returns the object's size.
    /// [`ClientError::BufferTooSmall`] if the region is smaller than the object.
    pub async fn get_into(&self, key: &str, region: Region<'_>) -> Result<u64> {
        let span = tracing::info_span!("store.get_into", key, cap = region.len());
        let (n, _) = self
            .get_impl(key, ReadTarget::Region(region))
            .instrument(span)
            .await?;
        Ok(n)
    }

    pub(super) async fn get_impl(
        &self,
        key: &str,
        target: ReadTarget<'_>,
    ) -> Result<(u64, Option<Vec<u8>>)> {
        self.check_open()?;
        validate_key(key)?;
        let ttl = self.inner.config.lease_ttl;
        for _ in 0..LEASE_RETRIES {
            let t0 = Instant::now();
            let replicas = self.inner.master.get_replica_list(key).await?;
            // Long reads keep the lease alive: re-ask every third of the TTL.
            // An answer extends the lease from when it was asked, provided it
            // came back before the previous lease ended (so the lease never
            // lapsed) and names the same replicas (an upserted value has its
            // own lease, not ours).
            let renewed = parking_lot::Mutex::new(t0);
            let keepalive = async {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let asked = Instant::now();
                    match self.inner.master.get_replica_list(key).await {
                        Ok(r) if r == replicas && renewed.lock().elapsed() < ttl => {
                            *renewed.lock() = asked
                        }
                        _ => std::future::pending::<()>().await,
                    }
                }
            };
            let out = tokio::select! {
                out = self.read_object(key, &replicas, &target) => out?,
                () = keepalive => unreachable!("keepalive never completes"),
            };
            if renewed.lock().elapsed() < ttl {
                return Ok(out);
            }
            debug!(key, "read outlasted the lease; asking again");
        }
        Err(ClientError::InconsistentRead {
            key: key.to_string(),
            reason: "every read outlasted the object's lease".into(),
        })
    }

    /// Read one complete replica of `key` (nearest first, falling back to the
    /// next on failure). Replicas must all have the same size.
    pub(crate) async fn read_object(
        &self,
        key: &str,
        replicas: &[Replica],
        target: &ReadTarget<'_>,
    ) -> Result<(u64, Option<Vec<u8>>)> {
        let size = replicas.first().ok_or(ErrorCode::ObjectNotFound)?.size();
        check_sizes(replicas, size).map_err(|e| match e {
            ClientError::InconsistentRead { reason, .. } => ClientError::InconsistentRead {
                key: key.to_string(),
                reason,
            },
            other => other,
        })?;
        let room = match target {
            ReadTarget::Vec => None,
            ReadTarget::Region(r) => Some(r.len() as u64),
            ReadTarget::Parts(p) => Some(p.iter().map(|r| r.len() as u64).sum()),
        };
        if let Some(have) = room.filter(|&have| size > have) {
            return Err(ClientError::BufferTooSmall { need: size, have });
        }
        let spread = self.inner.spread.fetch_add(1, Ordering::Relaxed);
        let order = plan::read_order(replicas, &self.inner.segment_name, &self.inner.host, spread);
        let mut last = None;
        for i in order {
            let res = match target {
                ReadTarget::Vec => {
                    // Not zero-filled: the read writes every byte (the spans of a
                    // replica whose sizes check_sizes verified cover [0, size)).
                    let mut v = Vec::<u8>::with_capacity(size as usize);
                    let dst = &mut v.spare_capacity_mut()[..size as usize];
                    self.read_replica(&replicas[i], Dst::Bytes(dst))
                        .await
                        .map(|()| {
                            // SAFETY: read_replica succeeded, so all `size` bytes of
                            // the spare capacity were written (see above).
                            unsafe { v.set_len(size as usize) };
                            Some(v)
                        })
                }
                ReadTarget::Region(r) => self
                    .read_replica(&replicas[i], Dst::Registered(r.addr()))
                    .await
                    .map(|()| None),
                ReadTarget::Parts(p) => self
                    .read_replica(&replicas[i], Dst::Scatter(p))
                    .await
                    .map(|()| None),
            };
            let res = res.and_then(|v| {
                let crc = replicas[i].crc32c;
                super::checksum::verify(key, i, crc, target, v.as_deref(), size)?;
                Ok(v)
            });
            match res {
                Ok(v) => return Ok((size, v)),
                Err(e) => {
                    debug!(key, replica = i, error = %e, "replica read failed; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ClientError::Master(ErrorCode::ObjectNotFound)))
    }

    /// Whether `key` exists (complete objects only).
    pub async fn is_exist(&self, key: &str) -> Result<bool> {
        let span = tracing::debug_span!("store.is_exist", key);
        async {
            self.check_open()?;
            Ok(self.inner.master.exists(key).await?)
        }
        .instrument(span)
        .await
    }

    /// Size of `key` in bytes.
    pub async fn get_size(&self, key: &str) -> Result<u64> {
        let span = tracing::debug_span!("store.get_size", key);
        async {
            self.check_open()?;
            Ok(self.inner.master.get_size(key).await?)
        }
        .instrument(span)
        .await
    }

    /// Remove `key`. A leased object is refused ([`ErrorCode::ObjectHasLease`])
    /// unless `force`.
    pub async fn remove(&self, key: &str, force: bool) -> Result<()> {
        let span = tracing::info_span!("store.remove", key, force);
        async {
            self.check_open()?;
            Ok(self.inner.master.remove(key, force).await?)
        }
        .instrument(span)
        .await
    }

    /// Remove every key matching `pattern` (a regular expression); returns how many.
    pub async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64> {
        let span = tracing::info_span!("store.remove_by_regex", pattern, force);
        async {
            self.check_open()?;
            Ok(self.inner.master.remove_by_regex(pattern, force).await?)
        }
        .instrument(span)
        .await
    }

    /// Remove every object; returns how many.
    pub async fn remove_all(&self, force: bool) -> Result<u64> {
        let span = tracing::info_span!("store.remove_all", force);
        async {
            self.check_open()?;
            Ok(self.inner.master.remove_all(force).await?)
        }
        .instrument(span)
        .await
    }
}

/// Where a read lands.
#[derive(Clone, Copy)]
pub(crate) enum ReadTarget<'a> {
    /// A fresh `Vec` of the object's size.
    Vec,
    /// Caller's registered memory.
    Region(Region<'a>),
    /// Caller's registered regions, filled back to back.
    Parts(&'a [Region<'a>]),
}
